"""The marl-inspired native scheduler: workers, deques, stealing, parking, semaphores, tracing.

It knows nothing of the HAL or the compiler: it runs *grid programs* (scheduler.layout) whose
dispatch tiles call native functions with the workgroup-state convention of hal/abi.py.
"""

from scheduler.numba_cache import keep_in_step

keep_in_step()  # before anything compiled is loaded

from scheduler.scheduler import GridProgram, Scheduler, SemaphoreFailure  # noqa: E402
from scheduler.topology import Topology, detect  # noqa: E402

__all__ = ["GridProgram", "Scheduler", "SemaphoreFailure", "Topology", "detect"]
