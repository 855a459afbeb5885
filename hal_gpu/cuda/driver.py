"""Registration as `cuda` where a CUDA device of compute capability 9.0 or newer exists (the
executables are PTX for sm_90), and the process-wide driver state.

The probe runs once per process and never raises: no `cuda-bindings` package, no driver library
(libcuda.so), no device, or only older devices all mean "not available", and
`fg.create_device("cuda")` then raises Unavailable. Every device uses its GPU's primary context,
retained once for the process: creating one per HAL device would cost a context start (a
fraction of a second) per device, and the primary context is what the CUDA runtime, CuPy and
JAX share.
"""

from __future__ import annotations

import functools
import threading

from common.errors import Aborted, InvalidArgument, ResourceExhausted, Unavailable
from hal_gpu.registry import GpuDriver

NAME = "cuda"
MIN_COMPUTE_CAPABILITY = (9, 0)
_lock = threading.Lock()
_current = threading.local()


@functools.cache
def cu():
    """`cuda.bindings.driver`; Unavailable when it is not installed."""
    try:
        from cuda.bindings import driver  # noqa: PLC0415 - optional dependency, imported on first use
    except ImportError as e:
        raise Unavailable(f"cuda: the 'cuda-bindings' package is not installed ({e}); pip install 'fibergrid[cuda]'") from None
    return driver


def check(result, what: str):
    """The values of a cuda.bindings call's (CUresult, values...) tuple; a fibergrid error
    naming `what` and CUDA's error when the call failed."""
    err, rest = result[0], result[1:]
    if err:  # CUDA_SUCCESS is 0
        d = cu()
        name = d.cuGetErrorName(err)[1]
        name = name.decode() if isinstance(name, bytes) else str(err)
        if err == d.CUresult.CUDA_ERROR_OUT_OF_MEMORY:
            raise ResourceExhausted(f"cuda: {what}: {name}")
        if err in (d.CUresult.CUDA_ERROR_INVALID_VALUE, d.CUresult.CUDA_ERROR_INVALID_PTX, d.CUresult.CUDA_ERROR_INVALID_IMAGE,
                   d.CUresult.CUDA_ERROR_NOT_FOUND, d.CUresult.CUDA_ERROR_NO_BINARY_FOR_GPU):
            raise InvalidArgument(f"cuda: {what}: {name}")
        raise Aborted(f"cuda: {what}: {name}")
    return rest[0] if len(rest) == 1 else rest


@functools.cache
def devices() -> list:
    """CUdevices of compute capability >= 9.0."""
    d = cu()
    check(d.cuInit(0), "cuInit")
    found = []
    for i in range(check(d.cuDeviceGetCount(), "cuDeviceGetCount")):
        dev = check(d.cuDeviceGet(i), "cuDeviceGet")
        major = check(d.cuDeviceGetAttribute(d.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev), "attribute")
        minor = check(d.cuDeviceGetAttribute(d.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev), "attribute")
        if (major, minor) >= MIN_COMPUTE_CAPABILITY:
            found.append(dev)
    return found


def device_name(dev) -> str:
    return check(cu().cuDeviceGetName(256, dev), "cuDeviceGetName").split(b"\0")[0].decode()


_contexts: dict[int, object] = {}


def context(dev):
    """The primary context of `dev`, retained once for the process."""
    with _lock:
        key = int(dev)
        if key not in _contexts:
            _contexts[key] = check(cu().cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
        return _contexts[key]


def make_current(ctx) -> None:
    """Makes `ctx` current on the calling thread (CUDA contexts are per thread), once per thread."""
    if getattr(_current, "ctx", None) is not ctx:
        check(cu().cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
        _current.ctx = ctx



def _device_class() -> type:
    from hal_gpu.cuda.device import CudaDevice  # noqa: PLC0415 - device code loads with the driver

    return CudaDevice


DRIVER = GpuDriver(NAME, devices, device_name, _device_class, "no CUDA device of compute capability 9.0 or newer on this machine")
available, register = DRIVER.available, DRIVER.register
register()
