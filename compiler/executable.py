"""The .fgx executable file: every public function of a module, compiled, in one checked file.

Layout (little-endian):

    header    56 bytes  magic b"\\x89FGX\\r\\n\\x1a\\n" | u32 format version | u32 flags (0)
                        | u64 metadata length | 32-byte sha256 of the metadata
    metadata  JSON      format version, compiler version, target (triple, CPU, features),
                        the functions (below), and the blob table: name, offset, length, sha256
    blobs               raw bytes, back to back: object code, constants, the StableHLO source

A function has its declared input signature (None for a dynamic dim) and its specializations,
one per concrete input-shape signature: the host program (tensors with constants as blob
names, steps: dispatches, copies and jumps (compiler/host_program.py), results), the kernels' metadata (name, binding dtypes, local memory;
workgroup counts are in the dispatch records) and the object code blob. A function with dynamic
dims has, where it compiles so, one `dynamic_code` compiled for every size of its leading dims (its
shapes recorded at one size, with the tables that size buffers and grids per call:
compiler/dynamic.py), else the reason (`dynamic_fallback`); it keeps the StableHLO source in the
file, so a runtime can compile a specialization for any shapes it is called with (through the disk
cache), next to those compiled ahead of time.

The PNG-style magic catches text-mode transfers; the checksums catch truncation and bit rot
before any byte reaches LLVM's object loader, which must never see a damaged object. Object
code is refused on a host whose CPU lacks a feature it was compiled with (`Unavailable`), as
IREE's executable loaders refuse foreign formats. Every other defect is `InvalidArgument`
naming the file and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from compiler import kernel_ir as kir
from compiler import pipeline
from compiler.dynamic import DynamicDims, NotDynamic
from compiler.codegen.llvm_cpu import jit
from compiler.errors import CompileError, NeedsInputValues
from compiler.host_program import CopyRecord, DispatchRecord, JumpRecord, check_program
from compiler.ir import ELEMENT_TYPES
from compiler.passes.fusion import Tensor
from compiler.targets import KernelCode, TargetCode
from common.errors import InvalidArgument, Unavailable

MAGIC = b"\x89FGX\r\n\x1a\n"
FORMAT_VERSION = 3  # 2: the host program's steps include copies and jumps; 3: dynamic functions compiled once
_HEADER = struct.Struct("<8sIIQ32s")

_TYPE_NAMES = {dtype: name for name, dtype in ELEMENT_TYPES.items() if name != "index"}

Signature = tuple[tuple[tuple[int | None, ...], np.dtype], ...]


def dtype_name(dtype: np.dtype) -> str:
    """MLIR/IREE element type name of a numpy dtype (f32, i32, i1, bf16...)."""
    return _TYPE_NAMES.get(np.dtype(dtype), str(dtype))


def dtype_from_name(name: str) -> np.dtype:
    """numpy dtype of an MLIR/IREE element type name; InvalidArgument for unknown names."""
    try:
        return ELEMENT_TYPES[name]
    except KeyError:
        raise InvalidArgument(f"unknown element type '{name}' (known: {', '.join(sorted(_TYPE_NAMES.values()))})") from None


def format_shape(shape: Sequence[int | None], dtype: np.dtype) -> str:
    """'(3, ?) float32': how messages show a declared or actual argument type."""
    dims = ", ".join("?" if d is None else str(d) for d in shape)
    return f"({dims}{',' if len(shape) == 1 else ''}) {np.dtype(dtype)}"


@dataclass(frozen=True)
class Target:
    """The CPU object code was compiled for. Features are LLVM's `+name` entries."""

    triple: str
    cpu: str
    features: frozenset[str]

    @classmethod
    def host(cls) -> "Target":
        return cls(jit.host_triple(), jit.host_cpu(),
                   frozenset(f for f in jit.host_features().split(",") if f.startswith("+")))

    def check_runs_here(self, origin: str) -> None:
        """Raises Unavailable unless this process's CPU can run code built for this target."""
        host = Target.host()
        if self.triple.split("-")[0] != host.triple.split("-")[0]:
            raise Unavailable(f"{origin}: compiled for {self.triple}; this host is {host.triple}")
        missing = sorted(self.features - host.features)
        if missing:
            raise Unavailable(f"{origin}: compiled for CPU '{self.cpu}' with features this host "
                              f"('{host.cpu}') lacks: {','.join(missing)}; recompile it here")


IOInfo = tuple[str, tuple[int | str | None, ...], np.dtype]
"""(name, declared shape with symbolic dims by name, dtype) of a named input or result."""


@dataclass
class FunctionEntry:
    """One public function: its declared signature and its compiled specializations. `inputs` and
    `outputs` name the arguments and results where the source names them (ONNX); empty for
    StableHLO, whose arguments are positional."""

    name: str
    signature: Signature
    specializations: dict[pipeline.Shapes, pipeline.CompiledFunction] = field(default_factory=dict)
    inputs: tuple[IOInfo, ...] = ()
    outputs: tuple[IOInfo, ...] = ()
    # Inputs whose contents, not only their shapes, the code is compiled for (an ONNX Reshape's
    # shape given as a graph input: errors.NeedsInputValues): compiled per call signature and
    # contents, from the source, like dynamic dims.
    value_inputs: tuple[str, ...] = ()
    # A function with dynamic dims compiled once for every size of them (CompiledFunction.at),
    # or why it is compiled per input-shape signature instead (compiler/dynamic.py).
    dynamic: pipeline.CompiledFunction | None = None
    dynamic_fallback: str = ""

    @property
    def is_dynamic(self) -> bool:
        return bool(self.value_inputs) or any(d is None for shape, _ in self.signature for d in shape)


@dataclass
class Program:
    """The contents of an .fgx: functions by name, the source when a function needs it later."""

    functions: dict[str, FunctionEntry]
    source: str | bytes | None = None  # StableHLO text, or a serialized ONNX model
    target: Target = field(default_factory=Target.host)
    compiler_version: str = field(default_factory=pipeline.compiler_version)


def build(text: str | bytes, functions: Sequence[str] | None = None,
          shapes: Mapping[str, Sequence[pipeline.Shapes]] | None = None,
          progress: pipeline.Progress | None = None, module=None, targets: Sequence[str] = (),
          values: Mapping[str, np.ndarray] | None = None, dynamic: bool = True) -> Program:
    """Compile `functions` (default: every public one) of StableHLO `text` (or ONNX bytes): static functions
    fully, dynamic ones for each signature in `shapes[name]` (ahead of time) plus the source.
    `module` is `text` already parsed, when the caller has it (parsing a big model takes seconds).
    `values`: contents of value inputs, for a runtime's compile of one call's signature. Ahead of
    time (no `values`), a function whose conversion needs input contents gets `value_inputs`
    and no code: it compiles per call, from the source. With `dynamic`, a function with dynamic
    dims is also compiled once for every size of them where it can be (`pipeline.compile_dynamic`;
    else `dynamic_fallback` says why); a runtime compiling one signature passes False."""
    module = module or pipeline.parse(text, progress)
    names = list(functions) if functions else pipeline.public_functions(module)
    entries = {}
    for name in names:
        entry = FunctionEntry(name, pipeline.signature(module, name), {}, *pipeline.io_info(module, name))
        wanted = list((shapes or {}).get(name, ()))
        if not entry.is_dynamic:
            wanted.append(None)  # the declared shapes
        for s in wanted:
            try:
                compiled = pipeline.compile_function(module, name, s, progress, targets, values)
            except NeedsInputValues as e:
                if values is not None:
                    raise  # the runtime adds the inputs it names and compiles again
                entry.value_inputs = e.inputs
                break
            entry.specializations[compiled.shapes] = compiled
        if dynamic and values is None and entry.is_dynamic and not entry.value_inputs:
            try:
                entry.dynamic = pipeline.compile_dynamic(module, name, progress)
            except NotDynamic as e:
                entry.dynamic_fallback = str(e)
        entries[name] = entry
    dynamic = any(e.is_dynamic for e in entries.values())
    return Program(entries, text if dynamic else None)


# --------------------------------------------------------------------------------------------
# Writing


class _Blobs:
    """Collects named blobs and the table describing them."""

    def __init__(self) -> None:
        self.table: list[dict[str, Any]] = []
        self.parts: list[bytes] = []
        self.offset = 0

    def add(self, name: str, data: bytes) -> str:
        self.table.append({"name": name, "offset": self.offset, "length": len(data),
                           "sha256": hashlib.sha256(data).hexdigest()})
        self.parts.append(data)
        self.offset += len(data)
        return name


def _encode_specialization(c: pipeline.CompiledFunction, prefix: str, blobs: _Blobs) -> dict[str, Any]:
    def tensor(t: Tensor) -> dict[str, Any]:
        value = None
        if t.value is not None:
            value = blobs.add(f"{prefix}/constant{t.id}", np.ascontiguousarray(t.value).tobytes())
        return {"id": t.id, "shape": list(t.shape), "dtype": dtype_name(t.dtype), "kind": t.kind,
                "input_index": t.input_index, "value": value}

    return {
        "inputs": [{"shape": list(s), "dtype": dtype_name(d)} for s, d in c.inputs],
        "object": blobs.add(f"{prefix}/object", c.object_code),
        "kernels": [{"name": k.name, "bindings": [dtype_name(d) for d in k.binding_dtypes],
                     "local_memory_size": k.local_memory_size, "constant_count": k.constant_count} for k in c.kernels],
        **({"dynamic": _encode_dynamic(c.dynamic)} if c.dynamic is not None else {}),
        "tensors": [tensor(t) for t in c.tensors],
        "steps": [_encode_step(r) for r in c.program],
        "results": [{"tensor": t, "shape": list(s)} for t, s in c.results],
        # One blob per further format (SPIR-V for vulkan...), with its kernels' grids.
        "variants": [{"format": v.format, "blob": blobs.add(f"{prefix}/{v.format}", v.blob),
                      "kernels": [{"name": k.name, "workgroup_size": list(k.workgroup_size),
                                   "workgroup_count": list(k.workgroup_count),
                                   "bindings": [dtype_name(d) for d in k.binding_dtypes],
                                   "local_memory_size": k.local_memory_size} for k in v.kernels]}
                     for v in c.variants],
    }


def _encode_dynamic(d: DynamicDims) -> dict[str, Any]:
    return {"tensor_scales": list(d.tensors), "result_scales": list(d.results), "sentinel": d.sentinel,
            "grids": [{"entry": e, "scales": [s for s, _ in g], "tiles": [t for _, t in g]} for e, g in d.grids]}


def _decode_dynamic(d: dict[str, Any]) -> DynamicDims:
    grids = []
    for g in d["grids"]:
        if len(g["scales"]) != 3 or len(g["tiles"]) != 3:
            raise ValueError(f"dynamic grid of '{g['entry']}' is not 3 (scale, tile) pairs")
        grids.append((g["entry"], tuple(zip(g["scales"], g["tiles"]))))
    return DynamicDims(tuple(d["tensor_scales"]), tuple(d["result_scales"]), tuple(grids), d["sentinel"])


def _encode_step(r: pipeline.Step) -> dict[str, Any]:
    if isinstance(r, DispatchRecord):
        return {"op": "dispatch", "entry": r.entry, "workgroup_count": list(r.workgroup_count),
                "tensors": list(r.tensors), "barrier_before": r.barrier_before}
    if isinstance(r, CopyRecord):
        return {"op": "copy", "copy_from": r.source, "copy_to": r.target, "barrier_before": r.barrier_before}
    return {"op": "jump", "jump_to": r.target, "predicate": r.predicate, "equals": r.equals}


def _decode_step(d: dict[str, Any]) -> pipeline.Step:
    """One step from its JSON (its fields' types were checked by _check_types)."""
    op = d["op"]
    if op == "dispatch":
        count = tuple(d["workgroup_count"])
        if len(count) != 3:
            raise ValueError(f"workgroup_count {list(count)} is not 3 ints")
        return DispatchRecord(d["entry"], count, tuple(d["tensors"]), d["barrier_before"])
    if op == "copy":
        return CopyRecord(d["copy_from"], d["copy_to"], d["barrier_before"])
    if op == "jump":
        return JumpRecord(d["jump_to"], d["predicate"], d["equals"])
    raise ValueError(f"unknown step op {op!r}")


def _encode_io(infos: tuple[IOInfo, ...]) -> list[dict[str, Any]]:
    return [{"name": n, "shape": list(s), "dtype": dtype_name(d)} for n, s, d in infos]


def _decode_io(items: list[dict[str, Any]]) -> tuple[IOInfo, ...]:
    return tuple((str(i["name"]), tuple(d if d is None or isinstance(d, str) else int(d) for d in i["shape"]),
                  dtype_from_name(i["dtype"])) for i in items)


def to_bytes(program: Program) -> bytes:
    """The .fgx encoding of `program`."""
    blobs = _Blobs()
    functions = []
    for name, entry in program.functions.items():
        functions.append({
            "name": name,
            "inputs": [{"shape": list(s), "dtype": dtype_name(d)} for s, d in entry.signature],
            "specializations": [_encode_specialization(c, f"{name}/{i}", blobs)
                                for i, c in enumerate(entry.specializations.values())],
            **({"dynamic_code": _encode_specialization(entry.dynamic, f"{name}/dynamic", blobs)} if entry.dynamic else {}),
            **({"dynamic_fallback": entry.dynamic_fallback} if entry.dynamic_fallback else {}),
            **({"input_info": _encode_io(entry.inputs), "output_info": _encode_io(entry.outputs)} if entry.inputs else {}),
            **({"value_inputs": list(entry.value_inputs)} if entry.value_inputs else {}),
        })
    source = program.source
    if isinstance(source, str):
        source_blob = blobs.add("source.mlir", source.encode())
    else:
        source_blob = None if source is None else blobs.add("source.onnx", bytes(source))
    meta = {
        "format_version": FORMAT_VERSION,
        "compiler_version": program.compiler_version,
        "target": {"triple": program.target.triple, "cpu": program.target.cpu,
                   "features": sorted(program.target.features)},
        "source": source_blob,
        "source_format": "onnx" if isinstance(source, (bytes, bytearray)) else "stablehlo",
        "functions": functions,
        "blobs": blobs.table,
    }
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(meta_bytes), hashlib.sha256(meta_bytes).digest())
    return b"".join([header, meta_bytes, *blobs.parts])


def write_atomic(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """Write `data` to `path` through a temporary file and a rename, so that a reader (another
    process, a cache lookup) sees the old file or the new one, never half of one. `mode`: the
    file's permissions (default: an ordinary file's, by the umask)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".fgx-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask  # mkstemp makes it private; a written .fgx is an ordinary file
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save(program: Program, path: str | os.PathLike) -> None:
    try:
        write_atomic(path, to_bytes(program))
    except OSError as e:
        raise InvalidArgument(f"cannot write '{os.fspath(path)}': {e.strerror or e}") from None


# --------------------------------------------------------------------------------------------
# Reading


def from_bytes(data: bytes, origin: str) -> Program:
    """Decode an .fgx; `origin` (a path) names the file in every error."""
    if len(data) < _HEADER.size:
        if not MAGIC.startswith(data[:len(MAGIC)]):
            raise InvalidArgument(f"{origin}: not a fibergrid executable (.fgx): bad magic")
        raise InvalidArgument(f"{origin}: truncated: {len(data)} bytes, the header alone is {_HEADER.size}")
    magic, version, flags, meta_length, meta_sha = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise InvalidArgument(f"{origin}: not a fibergrid executable (.fgx): bad magic")
    if version != FORMAT_VERSION:
        raise InvalidArgument(f"{origin}: .fgx format version {version}; this fibergrid reads version "
                              f"{FORMAT_VERSION}: recompile the model with this fibergrid")
    if flags:
        raise InvalidArgument(f"{origin}: unknown header flags {flags:#x} (this fibergrid sets none)")
    meta_end = _HEADER.size + meta_length
    if meta_end > len(data):
        raise InvalidArgument(f"{origin}: truncated: the metadata ends at byte {meta_end}, the file has {len(data)}")
    meta_bytes = data[_HEADER.size:meta_end]
    if hashlib.sha256(meta_bytes).digest() != meta_sha:
        raise InvalidArgument(f"{origin}: corrupted: metadata checksum mismatch")
    try:
        meta = json.loads(meta_bytes, parse_float=_no_floats, parse_constant=_no_floats)
        _check_types(meta, origin)
        target = Target(meta["target"]["triple"], meta["target"]["cpu"], frozenset(meta["target"]["features"]))
        target.check_runs_here(origin)
        blobs = _read_blobs(meta["blobs"], memoryview(data)[meta_end:], origin)
        functions = {f["name"]: _decode_function(f, blobs) for f in meta["functions"]}
        source: str | bytes | None = None if meta["source"] is None else bytes(blobs[meta["source"]])
        if source is not None and meta.get("source_format", "stablehlo") != "onnx":
            source = source.decode()
        program = Program(functions, source, target, meta["compiler_version"])
        for entry in functions.values():
            for compiled in [*entry.specializations.values(), *([entry.dynamic] if entry.dynamic else [])]:
                _check_specialization(compiled, origin)
        return program
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RecursionError) as e:
        if isinstance(e, InvalidArgument):
            raise
        raise InvalidArgument(f"{origin}: malformed metadata ({type(e).__name__}: {e})") from None


def _no_floats(text: str) -> None:
    raise ValueError(f"a number that is not an integer ({text[:40]})")


# The JSON type of every metadata key, wherever it appears: a field of the wrong type is an
# error here rather than something int() or str() quietly turns into another program. Keys not
# listed (added by later formats) are left to the decoders.
_INTS = {"offset", "length", "local_memory_size", "input_index", "id", "tensor", "format_version",
         "copy_from", "copy_to", "jump_to", "predicate", "equals", "constant_count", "sentinel"}
_INT_LISTS = {"workgroup_count", "workgroup_size", "tensor_scales", "result_scales", "scales", "tiles"}
_STRS = {"name", "sha256", "dtype", "kind", "entry", "format", "object", "blob", "triple", "cpu", "compiler_version",
         "source_format", "op", "dynamic_fallback"}
_OPTIONAL_STRS = {"value", "source"}


def _well_typed(k: str, v: Any) -> bool:
    if k in _INTS:
        return type(v) is int
    if k in _STRS:
        return type(v) is str
    if k in _OPTIONAL_STRS:
        return v is None or type(v) is str
    if k in _INT_LISTS:
        return type(v) is list and all(type(x) is int for x in v)
    if k == "tensors":  # a specialization's tensor records, or a dispatch's tensor ids
        return type(v) is list and (all(type(x) is int for x in v) or all(type(x) is dict for x in v))
    if k == "shape":  # dims: sizes, None (dynamic) or a symbolic name (never a number in a string)
        return type(v) is list and all(type(x) is int or x is None or type(x) is str and not x.lstrip("+-").isdigit() for x in v)
    if k == "value_inputs":
        return type(v) is list and all(type(x) is str for x in v)
    if k == "barrier_before":
        return type(v) is bool
    return True


def _check_types(value: Any, origin: str) -> None:
    """Raises InvalidArgument naming the key whose value has the wrong JSON type."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not _well_typed(k, v):
                raise InvalidArgument(f"{origin}: malformed metadata: '{k}' is {json.dumps(v)[:60]}")
            _check_types(v, origin)
    elif isinstance(value, list):
        for v in value:
            _check_types(v, origin)


def _check_specialization(c: pipeline.CompiledFunction, origin: str) -> None:
    """The host program refers only to what the file defines: tensor ids, kernel entries with
    their binding dtypes, input indices and shapes, non-negative dims and workgroup counts, so a
    call never indexes past the program or binds a buffer of the wrong type."""
    where = f"{origin}: @{c.name} {c.shapes}"
    tensors = {t.id: t for t in c.tensors}
    kernels = {k.name: k for k in c.kernels}
    if len(tensors) != len(c.tensors):
        raise InvalidArgument(f"{where}: duplicate tensor ids")
    for t in c.tensors:
        if any(d < 0 for d in t.shape) or t.kind not in ("input", "constant", "temp"):
            raise InvalidArgument(f"{where}: tensor {t.id}: bad shape {t.shape} or kind '{t.kind}'")
        if (t.kind == "input") != (0 <= t.input_index < len(c.inputs)) or (t.kind == "input" and t.shape != c.inputs[t.input_index][0]):
            raise InvalidArgument(f"{where}: tensor {t.id}: input index {t.input_index} does not match the inputs")
        if (t.kind == "constant") != (t.value is not None):
            raise InvalidArgument(f"{where}: tensor {t.id}: a constant needs a value and only a constant has one")
    try:
        check_program(c.program, c.tensors, where)  # tensor ids, jump targets, copy sizes, predicates
    except CompileError as e:
        raise InvalidArgument(str(e)) from None
    for d in c.program:
        if not isinstance(d, DispatchRecord):
            continue
        kernel = kernels.get(d.entry)
        if kernel is None or len(d.tensors) != len(kernel.binding_dtypes) or any(n < 0 for n in d.workgroup_count):
            raise InvalidArgument(f"{where}: dispatch of '{d.entry}': unknown kernel, wrong binding count or negative grid")
        for t, dtype in zip(d.tensors, kernel.binding_dtypes):
            if t not in tensors or tensors[t].dtype != dtype:
                raise InvalidArgument(f"{where}: dispatch of '{d.entry}': binding tensor {t} is missing or not {dtype}")
    for t, shape in c.results:
        if t not in tensors or any(n < 0 for n in shape) or int(np.prod(shape)) != int(np.prod(tensors[t].shape)):
            raise InvalidArgument(f"{where}: result tensor {t} is missing or has {shape} elements of another count")
    if any(k.constant_count not in ((0, 1) if c.dynamic is not None else (0,)) for k in c.kernels):
        raise InvalidArgument(f"{where}: a kernel takes push constants the host program does not give")
    if c.dynamic is not None:
        _check_dynamic(c, c.dynamic, where)


def _check_dynamic(c: pipeline.CompiledFunction, d: DynamicDims, where: str) -> None:
    """A dynamic function's tables match its program: a scale per tensor and result, each scaled
    dim recorded at `scale * sentinel`, results of as many elements per unit of the dim as their
    buffers, and a (scale, tile) grid only for kernels that read the dim."""
    if d.sentinel < 1 or len(d.tensors) != len(c.tensors) or len(d.results) != len(c.results) \
            or any(x < 0 for x in (*d.tensors, *d.results)):
        raise InvalidArgument(f"{where}: its dynamic-dim tables do not match its tensors and results")

    def per_dim(shape: tuple[int, ...], scale: int) -> int:
        if not scale:
            return 0
        lead = kir.leading_dim(shape)
        if not shape or shape[lead] != scale * d.sentinel:
            raise InvalidArgument(f"{where}: a dynamic dim recorded as {shape} is not {scale} x {d.sentinel}")
        return scale * int(np.prod(shape[lead + 1:]))

    scaled = [per_dim(t.shape, scale) for t, scale in zip(c.tensors, d.tensors)]
    for (t, shape), scale in zip(c.results, d.results):
        if per_dim(shape, scale) != scaled[t]:
            raise InvalidArgument(f"{where}: result tensor {t} does not grow with the dynamic dim as its buffer does")
    dynamic_kernels = {k.name for k in c.kernels if k.constant_count}
    for entry, grid in d.grids:
        if entry not in dynamic_kernels or any(s < 0 or t < 1 for s, t in grid):
            raise InvalidArgument(f"{where}: dynamic grid of '{entry}': not a dynamic kernel, or a bad scale or tile")


def _read_blobs(table: list[dict[str, Any]], area: memoryview, origin: str) -> dict[str, memoryview]:
    blobs = {}
    end = 0
    for b in table:
        offset, length = int(b["offset"]), int(b["length"])
        if offset < 0 or length < 0 or offset + length > len(area):
            raise InvalidArgument(f"{origin}: truncated: blob '{b['name']}' needs bytes "
                                  f"[{offset}, {offset + length}) of {len(area)} after the metadata")
        blob = area[offset:offset + length]
        if hashlib.sha256(blob).hexdigest() != b["sha256"]:
            raise InvalidArgument(f"{origin}: corrupted: checksum mismatch in blob '{b['name']}'")
        blobs[b["name"]] = blob
        end = max(end, offset + length)
    if end != len(area):
        raise InvalidArgument(f"{origin}: {len(area) - end} unexpected bytes after the last blob")
    return blobs


def _decode_function(f: dict[str, Any], blobs: dict[str, memoryview]) -> FunctionEntry:
    signature = tuple((tuple(None if d is None else int(d) for d in i["shape"]), dtype_from_name(i["dtype"]))
                      for i in f["inputs"])
    entry = FunctionEntry(f["name"], signature, {}, _decode_io(f.get("input_info", [])), _decode_io(f.get("output_info", [])),
                          tuple(f.get("value_inputs", ())))
    unknown = set(entry.value_inputs) - {n for n, _, _ in entry.inputs}
    if unknown:
        raise ValueError(f"value_inputs {sorted(unknown)} of @{entry.name} are not among its inputs")
    for s in f["specializations"]:
        compiled = _decode_specialization(f["name"], s, blobs)
        entry.specializations[compiled.shapes] = compiled
    if "dynamic_code" in f:
        entry.dynamic = _decode_specialization(f["name"], f["dynamic_code"], blobs)
        if entry.dynamic.dynamic is None:
            raise ValueError(f"the dynamic code of @{entry.name} has no dynamic tables")
    entry.dynamic_fallback = f.get("dynamic_fallback", "")
    return entry


def _decode_specialization(name: str, s: dict[str, Any], blobs: dict[str, memoryview]) -> pipeline.CompiledFunction:
    def tensor(t: dict[str, Any]) -> Tensor:
        shape, dtype = tuple(int(d) for d in t["shape"]), dtype_from_name(t["dtype"])
        value = None
        if t["value"] is not None:
            value = np.frombuffer(blobs[t["value"]], dtype=dtype).reshape(shape)
        return Tensor(int(t["id"]), shape, dtype, str(t["kind"]), int(t["input_index"]), value)

    return pipeline.CompiledFunction(
        name,
        tuple((tuple(int(d) for d in i["shape"]), dtype_from_name(i["dtype"])) for i in s["inputs"]),
        tuple(tensor(t) for t in s["tensors"]),
        tuple(_decode_step(d) for d in s["steps"]),
        tuple((int(r["tensor"]), tuple(int(d) for d in r["shape"])) for r in s["results"]),
        tuple(pipeline.KernelInfo(str(k["name"]), tuple(dtype_from_name(d) for d in k["bindings"]),
                                  int(k["local_memory_size"]), k.get("constant_count", 0)) for k in s["kernels"]),
        bytes(blobs[s["object"]]),
        tuple(TargetCode(str(v["format"]), bytes(blobs[v["blob"]]), tuple(
            KernelCode(str(k["name"]), tuple(int(x) for x in k["workgroup_size"]), tuple(int(x) for x in k["workgroup_count"]),
                       tuple(dtype_from_name(d) for d in k["bindings"]), int(k["local_memory_size"])) for k in v["kernels"]))
              for v in s.get("variants", ())),
        dynamic=_decode_dynamic(s["dynamic"]) if "dynamic" in s else None)


def load(path: str | os.PathLike) -> Program:
    """Read and check an .fgx file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InvalidArgument(f"cannot read '{os.fspath(path)}': {e.strerror or e}") from None
    return from_bytes(data, os.fspath(path))
