"""fibergrid: compiled compute kernels on CPUs with GPU semantics.

    import fibergrid as fg
    device = fg.create_device("local-task", workers=2)
"""

import threading as _threading

import hal_cpu  # noqa: F401  (registers local-sync and local-task)
import hal_gpu  # noqa: F401  (registers vulkan, listed where a Vulkan device exists)
from fibergrid.kernel import Workgroup, kernel
from fibergrid.module import load
from hal import *  # noqa: F401,F403
from hal import __all__ as _hal_all
from hal.driver import create_device as _create_device
from scheduler import detect as _detect


def default_driver() -> str:
    """local-task where more than one core is available, else local-sync."""
    return "local-task" if _detect().default_workers > 1 else "local-sync"


def create_device(name: str | None = None, **options):
    """`create_device("local-task", workers=2)`; no name: the default driver."""
    return _create_device(name or default_driver(), **options)


_default_devices: dict = {}
_default_lock = _threading.Lock()


def default_device(name: str | None = None):
    """The process's shared device for a driver (no name: the default driver), created on first
    use with the driver's default options. `fg.load` runs modules on it, so loading a model does
    not start worker threads of its own: a service that loads many models keeps one pool."""
    name = name or default_driver()
    with _default_lock:
        device = _default_devices.get(name)
        if device is None or device.closed:
            device = _default_devices[name] = _create_device(name)
        return device


__all__ = list(_hal_all) + ["Workgroup", "create_device", "default_device", "default_driver", "kernel", "load"]
__version__ = "0.1.0"

import os as _os

if _os.environ.get("FIBERGRID_PROFILE"):  # `fibergrid profile -- python app.py`: trace every device
    from fibergrid.profile import session as _profile_session

    _profile_session.install()
