"""Executables from the Vulkan target's SPIR-V: a shader module (naga translates it) and, per
entry point, a bind-group layout (bindings 0..n-1 and the dispatch state, hal/spirv_abi.py) and
a compute pipeline, all made at load time so recording a dispatch creates only bind groups.

naga's SPIR-V frontend takes a subset of what LLVM's SPIR-V backend writes; `for_naga` removes
the two things it refuses that carry no meaning for a kernel: the resource-name strings LLVM
materialises as unused function-local i8 arrays (naga has no 8-bit type), and the memory
operands (`Aligned 4`) on loads and stores (naga takes none; alignment is implied by the types
in Vulkan's logical addressing). The module is otherwise the Vulkan driver's, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from common.errors import InvalidArgument, ResourceExhausted, Unimplemented
from hal.executable import EntryPoint, Executable
from hal.spirv_abi import stored_bindings

SPIRV_MAGIC = bytes.fromhex("03022307")
_OP_NAME, _OP_DECORATE, _OP_CAPABILITY, _OP_TYPE_INT, _OP_TYPE_ARRAY, _OP_TYPE_POINTER = 5, 71, 17, 21, 28, 32
_OP_CONSTANT, _OP_CONSTANT_COMPOSITE, _OP_VARIABLE, _OP_LOAD, _OP_STORE = 43, 44, 59, 61, 62
_OP_FUNCTION, _OP_FUNCTION_END = 54, 56
# Types built on other types -> the ids of those: OpTypeVector, Matrix, Array, RuntimeArray (the
# element), OpTypeStruct (every member), OpTypePointer (the pointee; its storage class is a literal).
_TYPES = {23: lambda i: i[2:3], 24: lambda i: i[2:3], 28: lambda i: i[2:3], 29: lambda i: i[2:3], 30: lambda i: i[2:], 32: lambda i: i[3:4]}
_CAPABILITY_INT8, _FUNCTION_STORAGE = 39, 7


@dataclass
class Pipeline:
    layout: object  # GPUBindGroupLayout
    pipeline: object  # GPUComputePipeline


def _instructions(words: np.ndarray) -> list[list[int]]:
    out, i = [], 5
    while i < len(words):
        count = int(words[i]) >> 16
        if count == 0:
            raise InvalidArgument("webgpu: malformed SPIR-V (an instruction of zero words)")
        out.append([int(w) for w in words[i: i + count]])
        i += count
    return out


def for_naga(spirv: bytes) -> bytes:
    """The module without its 8-bit name strings and memory operands (module docstring);
    Unimplemented when a kernel really computes on 8-bit integers (the SPIR-V target's never do:
    bool and int8 tensors live in 32-bit words, compiler/codegen/spirv/bytes.py)."""
    words = np.frombuffer(spirv, dtype="<u4")
    body = _instructions(words)
    dead: set[int] = set()  # the i8 type, arrays of it, Function pointers to those, their constants and variables
    for ins in body:
        op = ins[0] & 0xFFFF
        if op == _OP_TYPE_INT and ins[2] == 8 or op == _OP_TYPE_ARRAY and ins[2] in dead or \
                op == _OP_TYPE_POINTER and ins[2] == _FUNCTION_STORAGE and ins[3] in dead:
            dead.add(ins[1])
        elif op in (_OP_CONSTANT, _OP_CONSTANT_COMPOSITE, _OP_VARIABLE) and ins[1] in dead:
            dead.add(ins[2])
    out, in_function = [], False
    for ins in body:
        op = ins[0] & 0xFFFF
        if op in (_OP_TYPE_INT, _OP_TYPE_ARRAY, _OP_TYPE_POINTER, _OP_NAME, _OP_DECORATE) and ins[1] in dead or \
                op in (_OP_CONSTANT, _OP_CONSTANT_COMPOSITE, _OP_VARIABLE) and ins[2] in dead or \
                op == _OP_CAPABILITY and ins[1] == _CAPABILITY_INT8:
            continue
        in_function = (in_function or op == _OP_FUNCTION) and op != _OP_FUNCTION_END
        # What is left may not mention the 8-bit type: a value (result type, stored object) in a
        # function, or a type built on it (a storage buffer of bytes).
        uses = ins[1:3] if in_function else _TYPES[op](ins) if op in _TYPES else ()
        if any(w in dead for w in uses):
            raise Unimplemented("webgpu: the kernels use 8-bit integers (bool or int8 tensors); WebGPU has no 8-bit type")
        if op in (_OP_LOAD, _OP_STORE) and len(ins) > 4 - (op == _OP_STORE):
            keep = 4 if op == _OP_LOAD else 3  # (result type, result, pointer) / (pointer, object)
            ins = [(keep << 16) | op] + ins[1:keep]
        out.append(ins)
    return np.array([int(w) for w in words[:5]] + [w for ins in out for w in ins], dtype="<u4").tobytes()


def load(device, format: str, data: bytes, entry_points: tuple[EntryPoint, ...]) -> Executable:
    if not isinstance(data, (bytes, bytearray)) or len(data) % 4 or not bytes(data[:4]) == SPIRV_MAGIC:
        raise InvalidArgument(f"webgpu: executable data for '{format}' is not a SPIR-V module (magic {bytes(data[:4]).hex() if isinstance(data, (bytes, bytearray)) else type(data).__name__})")
    for ep in entry_points:
        if ep.binding_count + 1 > device.max_bindings:
            raise ResourceExhausted(f"webgpu: entry point '{ep.name}' needs {ep.binding_count + 1} storage buffers (its bindings and "
                                    f"the dispatch state); {device.name} allows {device.max_bindings} per shader")
    spirv = for_naga(bytes(data))
    w = device.wgpu
    with device._lock:
        try:
            module = device.handle.create_shader_module(code=spirv)
        except Exception as e:  # noqa: BLE001 - wgpu's validation errors carry naga's message
            raise Unimplemented(f"webgpu: naga refused the SPIR-V module: {reason(e)}") from None
        pipelines = []
        for ep in entry_points:
            layout = device.handle.create_bind_group_layout(entries=[
                {"binding": i, "visibility": w.ShaderStage.COMPUTE, "buffer": {"type": "storage"}} for i in range(ep.binding_count + 1)])
            try:
                pipeline = device.handle.create_compute_pipeline(
                    layout=device.handle.create_pipeline_layout(bind_group_layouts=[layout]), compute={"module": module, "entry_point": ep.name})
            except Exception as e:  # noqa: BLE001
                raise InvalidArgument(f"webgpu: no compute pipeline for entry point '{ep.name}': {reason(e)}") from None
            pipelines.append(Pipeline(layout, pipeline))
    entries = tuple(replace(ep, function=i) for i, ep in enumerate(entry_points))
    exe = Executable(entries, format, keepalive=(module, pipelines))
    exe.pipelines = pipelines  # type: ignore[attr-defined]
    exe.stores = stored_bindings(bytes(data), [ep.name for ep in entry_points])  # type: ignore[attr-defined]
    return exe


def reason(error: Exception) -> str:
    """The informative lines of a wgpu error (it starts with boilerplate)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip() and not line.strip().startswith(("│", "┌", "=", "Caused by"))]
    return " | ".join(lines[-3:]) or type(error).__name__
