"""The marl-inspired native scheduler: workers, deques, stealing, parking, semaphores, tracing.

It knows nothing of the HAL or the compiler: it runs *grid programs* (scheduler.layout) whose
dispatch tiles call native functions with the workgroup-state convention of hal/abi.py.
"""

from scheduler.scheduler import GridProgram, Scheduler, SemaphoreFailure
from scheduler.topology import Topology, detect

__all__ = ["GridProgram", "Scheduler", "SemaphoreFailure", "Topology", "detect"]
