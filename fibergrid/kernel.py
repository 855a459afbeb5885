"""`@fibergrid.kernel`: a Python function compiled by numba to the CPU kernel ABI (hal/abi.py).

    @fg.kernel(workgroup_size=(64, 1, 1), bindings=(np.float32, np.float32), constants=(np.float32,))
    def saxpy(wg, x, y, a):
        first = wg.id[0] * wg.size[0]
        for i in range(first, min(first + wg.size[0], y.shape[0])):
            y[i] += a * x[i]

Inside, `wg` has `id`, `count`, `size` (3-tuples), `worker_id` and `local` (this worker's
scratch, uint8); each binding is a 1-D array of its declared dtype over the bound range; each
constant arrives as its declared 32-bit type. Return nothing or 0 for success; a non-zero return
or an exception (an out-of-bounds index, with the default boundscheck=True) fails the
submission, and the error names the kernel and the workgroup.

A thin generated `cfunc` (nopython, nogil) reads the ABI structs and calls the user function,
which numba inlines into it, so there is one native call per workgroup and no Python.
"""

from __future__ import annotations

import collections
import hashlib
import inspect
import textwrap
from typing import Callable, Sequence

import numba
import numpy as np
from numba import types

from hal import abi
from common.errors import InvalidArgument
from hal.executable import CPU_NATIVE_FORMAT, EntryPoint, Executable, ExecutableCache
from scheduler.native import address_of, f32_from_bits, load_i64, load_u32, voidptr

Workgroup = collections.namedtuple("Workgroup", ["id", "count", "size", "worker_id", "local"])

KERNEL_RAISED = -1  # status of a kernel that raised (e.g. IndexError from boundscheck)
_CONSTANT_TYPES = {np.dtype(np.float32): "f32", np.dtype(np.int32): "i32", np.dtype(np.uint32): "u32"}
_cache = ExecutableCache()


def _constant_expr(i: int, dtype: np.dtype) -> str:
    bits = f"load_u32(consts + {4 * i})"
    return {"f32": f"f32_from_bits({bits})", "i32": f"np.int32(({bits} ^ 0x80000000) - 0x80000000)", "u32": f"np.uint32({bits})"}[_CONSTANT_TYPES[dtype]]


def _wrapper_source(binding_dtypes: Sequence[np.dtype], constant_types: Sequence[np.dtype], returns_status: bool) -> str:
    bind = "".join(
        f"    b{i} = numba.carray(voidptr(load_i64(ptrs + {8 * i})), load_i64(lens + {8 * i}) // {dt.itemsize}, dt{i})\n"
        for i, dt in enumerate(binding_dtypes)
    )
    consts = "".join(f"    c{i} = {_constant_expr(i, dt)}\n" for i, dt in enumerate(constant_types))
    args = ", ".join(["g"] + [f"b{i}" for i in range(len(binding_dtypes))] + [f"c{i}" for i in range(len(constant_types))])
    call = f"        return np.int32(user({args}))" if returns_status else f"        user({args})\n        return np.int32(0)"
    return f"""
def wrapper(dispatch_state, workgroup_state):
    d = address_of(dispatch_state)
    w = address_of(workgroup_state)
    ptrs = load_i64(d + {abi.DS_BINDING_PTRS})
    lens = load_i64(d + {abi.DS_BINDING_LENGTHS})
    consts = load_i64(d + {abi.DS_CONSTANTS})
{bind}{consts}    g = Workgroup(
        (load_u32(w + {abi.WS_WORKGROUP_ID}), load_u32(w + {abi.WS_WORKGROUP_ID + 4}), load_u32(w + {abi.WS_WORKGROUP_ID + 8})),
        (load_u32(d + {abi.DS_WORKGROUP_COUNT}), load_u32(d + {abi.DS_WORKGROUP_COUNT + 4}), load_u32(d + {abi.DS_WORKGROUP_COUNT + 8})),
        (load_u32(d + {abi.DS_WORKGROUP_SIZE}), load_u32(d + {abi.DS_WORKGROUP_SIZE + 4}), load_u32(d + {abi.DS_WORKGROUP_SIZE + 8})),
        load_u32(w + {abi.WS_WORKER_ID}),
        numba.carray(voidptr(load_i64(w + {abi.WS_LOCAL_MEMORY})), load_u32(w + {abi.WS_LOCAL_MEMORY_SIZE}), np.uint8),
    )
    try:
{call}
    except Exception:
        return np.int32({KERNEL_RAISED})
"""


def _numba_signature(binding_dtypes, constant_types) -> tuple:
    sample = Workgroup((0, 0, 0), (0, 0, 0), (0, 0, 0), 0, np.zeros(1, np.uint8))
    return (numba.typeof(sample),) + tuple(types.Array(numba.from_dtype(dt), 1, "C") for dt in binding_dtypes) + tuple(numba.from_dtype(dt) for dt in constant_types)


def _compile(fn: Callable, workgroup_size: tuple[int, int, int], binding_dtypes: tuple[np.dtype, ...], constant_types: tuple[np.dtype, ...], local_memory: int, boundscheck: bool) -> Executable:
    name = fn.__name__
    try:
        user = numba.njit(nogil=True, boundscheck=boundscheck)(fn)
        sig = _numba_signature(binding_dtypes, constant_types)
        user.compile(sig)
        ret = user.overloads[sig].signature.return_type
        if ret is not types.none and not isinstance(ret, types.Integer):
            raise InvalidArgument(f"kernel '{name}' returns {ret}; return nothing or an int status")
        namespace = {"numba": numba, "np": np, "Workgroup": Workgroup, "user": user, "address_of": address_of, "load_i64": load_i64, "load_u32": load_u32, "voidptr": voidptr, "f32_from_bits": f32_from_bits}
        namespace.update({f"dt{i}": numba.from_dtype(dt) for i, dt in enumerate(binding_dtypes)})
        exec(_wrapper_source(binding_dtypes, constant_types, ret is not types.none), namespace)
        native = numba.cfunc(types.int32(types.voidptr, types.voidptr), nopython=True, nogil=True)(namespace["wrapper"])
    except numba.core.errors.NumbaError as e:
        first = str(e).strip().splitlines()
        raise InvalidArgument(f"kernel '{name}' does not compile with numba: {' '.join(first[:3])}") from None
    entry = EntryPoint(name, native.address, workgroup_size, len(binding_dtypes), len(constant_types), binding_dtypes, constant_types, local_memory)
    return Executable((entry,), CPU_NATIVE_FORMAT, keepalive=(native, user))


def kernel(workgroup_size: Sequence[int] | int = (1, 1, 1), bindings: Sequence = (), constants: Sequence | int = (), local_memory: int = 0, boundscheck: bool = True) -> Callable[[Callable], Executable]:
    """Compiles the decorated function into an Executable with one entry point of its name.

    bindings: one numpy dtype per binding. constants: one of float32/int32/uint32 per constant
    (or a count of uint32 constants). local_memory: bytes of per-workgroup scratch it needs.
    boundscheck: index checks on bindings (an out-of-range access fails the submission instead of
    corrupting memory); pass False in hot kernels you trust."""
    size = (workgroup_size,) if isinstance(workgroup_size, int) else tuple(workgroup_size)
    size = tuple(int(s) for s in size) + (1,) * (3 - len(size))
    binding_dtypes = tuple(np.dtype(b) for b in bindings)
    constant_types = (np.dtype(np.uint32),) * constants if isinstance(constants, int) else tuple(np.dtype(c) for c in constants)
    for dt in constant_types:
        if dt not in _CONSTANT_TYPES:
            raise InvalidArgument(f"kernel constant type {dt} must be float32, int32 or uint32 (constants are 32-bit words)")

    def decorate(fn: Callable) -> Executable:
        key = hashlib.sha256(repr((textwrap.dedent(inspect.getsource(fn)), fn.__name__, size, binding_dtypes, constant_types, local_memory, boundscheck)).encode()).hexdigest()
        return _cache.get_or_create(key, lambda: _compile(fn, size, binding_dtypes, constant_types, local_memory, boundscheck))

    return decorate
