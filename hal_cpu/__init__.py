"""CPU drivers: `local-sync` and `local-task`, registered with hal on import."""

from hal.driver import register_driver
from hal_cpu.device import CpuDevice


def _local_task(workers: int | None = None, **options) -> CpuDevice:
    return CpuDevice("local-task", workers, **options)


def _local_sync(**options) -> CpuDevice:
    return CpuDevice("local-sync", 0, **options)


register_driver("local-sync", _local_sync)
register_driver("local-task", _local_task)

__all__ = ["CpuDevice"]
