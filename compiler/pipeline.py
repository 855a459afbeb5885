"""The model compiler's driver: StableHLO text -> native object code + a host program.

    parse -> specialize (static shapes) -> fusion (kernel IR regions) -> llvm_cpu codegen
          -> one LLVM module -> object code (AOT) -> hal Executable (one entry point per region)

Every compile emits a relocatable object file (`jit.emit_object`) rather than JIT-ing in place,
so the same bytes can be written to an .fgx file or the on-disk cache (compiler/executable.py,
compiler/cache.py) and linked back in later without running LLVM's optimiser again.

The host program is data, not code: the function's buffers (`Tensor`s: inputs, constants,
temporaries) and an ordered list of steps (compiler/host_program.py): dispatch records saying
which entry point runs on how many workgroups with which buffers in which binding slots, and
whether a barrier must come before it; buffer copies; and jumps, which control flow (while, case,
if) lowers to. A runtime (fibergrid/module.py) records it into reusable command buffers; nothing
here touches a device.
"""

from __future__ import annotations

import functools
import hashlib
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from compiler import dynamic
from compiler import kernel_ir as kir
from compiler import targets as targets_
from compiler.codegen.llvm_cpu import generate, jit, prepare
from compiler.dynamic import DynamicDims
from compiler.errors import CompileError, NeedsInputValues
from compiler.frontends.stablehlo import parse_stablehlo
from compiler.ir import Dim, Module
from compiler.host_program import DispatchRecord, Lowered, Step, assemble, lower
from compiler.passes.fusion import Tensor
from compiler.passes.shape_inference import specialize
from common.errors import Error
from hal.executable import CPU_NATIVE_FORMAT, EntryPoint, Executable, Variant

Shapes = tuple[tuple[int, ...], ...]  # one concrete shape per function input


@functools.cache
def compiler_version() -> str:
    """A digest of the compiler's own source files.

    Cached code must be rebuilt whenever the compiler changes; a hand-bumped version string is
    forgotten, a digest of the sources is not (it costs ~1 ms once per process)."""
    digest = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


class Progress:
    """Reports compile stages as lines on stderr (or to `report`).

    A large model spends seconds in parsing and LLVM; a user waiting on `fg.load` or
    `fibergrid compile` should see where the time goes. By default only stages that took longer
    than `threshold` seconds are reported, so small models stay quiet."""

    def __init__(self, threshold: float = 1.0, report: Callable[[str], None] | None = None) -> None:
        self.threshold = threshold
        self.report = report or (lambda line: print(line, file=sys.stderr, flush=True))

    @contextmanager
    def stage(self, what: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        elapsed = time.perf_counter() - start
        if elapsed >= self.threshold:
            self.report(f"fibergrid: {what}: {elapsed:.1f} s")


@dataclass(frozen=True)
class KernelInfo:
    """What a runtime needs to know of one kernel in the object code besides its address."""

    name: str
    binding_dtypes: tuple[np.dtype, ...]
    local_memory_size: int
    constant_count: int = 0  # 1: it reads the dynamic dim D (compiler/dynamic.py)


@dataclass(frozen=True)
class CompiledFunction:
    """A function compiled for one input-shape signature: object code, its kernels, and the host
    program that drives them. Plain data (it serialises to an .fgx); `executable` links the
    object code into this process on first use."""

    name: str
    inputs: tuple[tuple[tuple[int, ...], np.dtype], ...]  # (shape, dtype) per argument
    tensors: tuple[Tensor, ...]
    program: tuple[Step, ...]  # dispatches, copies and jumps (compiler/host_program.py)
    results: tuple[tuple[int, tuple[int, ...]], ...]  # (tensor id, shape) per result
    kernels: tuple[KernelInfo, ...]
    object_code: bytes  # empty when the function needs no dispatch (e.g. it returns an input)
    # The same kernels for other targets (an .fgx compiled with --target vulkan carries them).
    variants: tuple[targets_.TargetCode, ...] = ()
    # The kernel IR, kept in memory (not in an .fgx) so a device of another format can have the
    # kernels compiled for it on first use.
    regions: tuple[kir.KernelRegion, ...] = field(default=(), compare=False, repr=False)
    # The StableHLO (or ONNX bytes) it came from, where a loader knows it (the compile cache): the
    # kernel IR is rebuilt from it when a device needs a format the function was not compiled for.
    source: str | bytes | None = field(default=None, compare=False, repr=False)
    # The contents of the value inputs it was compiled for (executable.FunctionEntry.value_inputs),
    # which rebuilding the kernel IR from `source` needs too.
    values: Mapping[str, np.ndarray] | None = field(default=None, compare=False, repr=False)
    # Compiled once for every size of a dynamic leading dim (compiler/dynamic.py): its shapes
    # are those of one compile-time size; `at(d)` gives the program for the size d.
    dynamic: DynamicDims | None = None
    dim: int = 0  # in `at(d)`'s result: d, passed to the dynamic kernels as push constant 0

    @property
    def shapes(self) -> Shapes:
        return tuple(shape for shape, _ in self.inputs)

    def at(self, dim: int) -> "CompiledFunction":
        """A dynamic function's program for the dynamic dim `dim` (>= 1): buffer, input and result
        shapes and the dynamic kernels' workgroup counts computed from it; the code (one linked
        executable) and the constants are shared with this one."""
        dyn = self.dynamic
        if dyn is None or dim < 1:
            raise CompileError(f"@{self.name}: at({dim}) needs a dynamic function and a dim >= 1")

        tensors = tuple(replace(t, shape=dynamic.resize(t.shape, scale, dim)) for t, scale in zip(self.tensors, dyn.tensors))
        by_input = {t.input_index: t.shape for t in tensors if t.kind == "input"}
        inputs = tuple((by_input.get(i, s), dtype) for i, (s, dtype) in enumerate(self.inputs))
        grids = dict(dyn.grids)
        program = tuple(replace(s, workgroup_count=tuple(-(-scale * dim // tile) if scale else n for n, (scale, tile)
                                                         in zip(s.workgroup_count, grids[s.entry])))
                        if isinstance(s, DispatchRecord) and s.entry in grids else s for s in self.program)
        results = tuple((t, dynamic.resize(s, scale, dim)) for (t, s), scale in zip(self.results, dyn.results))
        instance = replace(self, inputs=inputs, tensors=tensors,
                           program=program, results=results, dynamic=None, dim=dim)
        instance.__dict__["executable"] = self.executable  # one link for every size (cached_property's slot)
        return instance

    def constants_for(self, entry: str) -> tuple[int, ...]:
        """The push constants of a dispatch of `entry`: D for a dynamic kernel, else none."""
        return (self.dim,) if self._dynamic_entries.get(entry) else ()

    @functools.cached_property
    def _dynamic_entries(self) -> dict[str, bool]:
        return {k.name: k.constant_count > 0 for k in self.kernels}

    @functools.cached_property
    def executable(self) -> Executable:
        """The kernels as a hal Executable in the CPU format (linked once; the code lives as long
        as this does), with every other format as a variant: those compiled ahead of time, and
        every GPU target's code from the kernel IR, compiled when such a device first loads it. A device picks
        its format itself (`Device.executable_for`), so a runtime dispatches this on any."""
        module = jit.load_object(self.object_code) if self.kernels else None
        entries = tuple(EntryPoint(k.name, module.address(k.name), (1, 1, 1), len(k.binding_dtypes), k.constant_count,
                                   k.binding_dtypes, (np.dtype(np.uint32),) * k.constant_count, k.local_memory_size)
                        for k in self.kernels)
        variants = {code.format: Variant(code.blob, _entry_points(code)) for code in self.variants}
        for target in targets_.gpu_targets():
            # (no GPU form of a dynamic function's kernels: GPU devices compile it per shape)
            if target.format not in variants and (self.regions or self.source is not None) and self.kernels \
                    and self.dynamic is None and not self.dim:
                def build(target=target) -> bytes:
                    return target.build(self._kernel_regions()).blob

                variants[target.format] = Variant(build, tuple(
                    EntryPoint(r.name, 0, target.workgroup_size(r), len(r.bindings), 0, tuple(d.dtype for d in r.bindings))
                    for r in self._kernel_regions()))
        return Executable(entries, CPU_NATIVE_FORMAT, keepalive=module, variants=variants)

    @functools.cached_property
    def _rebuilt_regions(self) -> tuple[kir.KernelRegion, ...]:
        return self._kernel_regions(cached=False)

    def _kernel_regions(self, cached: bool = True) -> tuple[kir.KernelRegion, ...]:
        """The kernel IR of this function's kernels (rebuilt from `source` if not in memory)."""
        if cached and not self.regions:
            return self._rebuilt_regions
        regions = self.regions
        if not regions:
            static = static_module(parse(self.source), self.name, self.shapes, self.values)
            regions = tuple(d.region for d in lower(static, self.name, prepare).dispatches)
        names = [k.name for k in self.kernels]
        by_name = {r.name: r for r in regions}
        if sorted(by_name) != sorted(names):
            raise CompileError(f"@{self.name}: its source no longer gives the kernels it was compiled with")
        return tuple(by_name[n] for n in names)

    def program_for(self, formats: Sequence[str]) -> tuple[Step, ...]:
        """The host program with the workgroup counts of the first of `formats` compiled ahead
        of time (a GPU target lays kernels out on its own grid); the CPU program otherwise.
        Every kernel is correct with either grid (GPU kernels stride over their points)."""
        for fmt in formats:
            for code in self.variants:
                if code.format == fmt:
                    return tuple(replace(r, workgroup_count=code.kernel(r.entry).workgroup_count)
                                 if isinstance(r, DispatchRecord) else r for r in self.program)
            target = next((t for t in targets_.gpu_targets() if t.format == fmt), None)
            if target is not None and (self.regions or self.source is not None) and self.program:
                grids = {r.name: target.grid(r) for r in self._kernel_regions()}
                return tuple(replace(r, workgroup_count=grids[r.entry]) if isinstance(r, DispatchRecord) else r
                             for r in self.program)
        return self.program


def _entry_points(code: targets_.TargetCode) -> tuple[EntryPoint, ...]:
    return tuple(EntryPoint(k.name, 0, k.workgroup_size, len(k.binding_dtypes), 0, k.binding_dtypes, (), k.local_memory_size)
                 for k in code.kernels)


def public_functions(module: Module) -> list[str]:
    """The entry points of a module (its public functions), in source order."""
    return [name for name, fn in module.functions.items() if fn.public]


def signature(module: Module, function: str) -> tuple[tuple[tuple[Dim | None, ...], np.dtype], ...]:
    """Declared (shape, dtype) per input of `function`; dynamic dims (None or symbolic) are None."""
    return tuple((tuple(d if isinstance(d, int) else None for d in a.type.shape), a.type.dtype)
                 for a in module.function(function).args)


def static_module(module: Module, function: str, shapes: Shapes, values: Mapping[str, np.ndarray] | None = None) -> Module:
    """`module` specialised to `shapes`. A frontend that resolves shapes itself (ONNX: its graph
    is converted per input-shape signature, folding the shape subgraphs) instantiates it first,
    with `values`: the contents of the inputs its conversion needs (errors.NeedsInputValues)."""
    instantiate = getattr(module, "instantiate", None)
    if instantiate is not None:
        module = instantiate(function, shapes, values) if values else instantiate(function, shapes)
    return specialize(module, function, shapes)


def io_info(module: Module, function: str) -> tuple[tuple, tuple]:
    """Per input and per result of `function`: (name, declared shape with symbolic dims by name,
    dtype), for frontends whose inputs and results have names (ONNX); () for StableHLO, whose
    are positional."""
    if not hasattr(module, "instantiate"):
        return (), ()
    fn = module.function(function)
    return (tuple((a.name, a.type.shape, a.type.dtype) for a in fn.args),
            tuple((r.name, r.type.shape, r.type.dtype) for r in fn.results))


def compile_function(module: Module, function: str, input_shapes: Sequence[Sequence[int]] | None = None,
                     progress: Progress | None = None, targets: Sequence[str] = (),
                     values: Mapping[str, np.ndarray] | None = None) -> CompiledFunction:
    """Compile `function` of a parsed module for `input_shapes` (default: its declared shapes,
    which must then be static), for the host CPU and the extra `targets` ("vulkan"), with
    `values` (input name -> contents) for inputs whose contents the code is specialised on.
    Raises CompileError for ops without a lowering and ShapeAssertionError (JAX's message) when
    the shapes break a jax.export assertion."""
    progress = progress or Progress()
    fn = module.function(function)
    if input_shapes is None:
        for i, arg in enumerate(fn.args):
            if not arg.type.is_static:
                raise CompileError(f"@{function} input {i} has dynamic type {arg.type}: give concrete input shapes")
        input_shapes = [a.type.shape for a in fn.args]
    shapes = tuple(tuple(int(d) for d in s) for s in input_shapes)
    with progress.stage(f"@{function}: shapes and fusion"):
        static = static_module(module, function, shapes, values)
        lowered = lower(static, function, prepare)
    return _generate(fn, function, shapes, lowered, progress, targets, values)


def _generate(fn, function: str, shapes: Shapes, lowered: Lowered, progress: Progress, targets: Sequence[str] = (),
              values: Mapping[str, np.ndarray] | None = None, dims: DynamicDims | None = None) -> CompiledFunction:
    """Code generation, LLVM and the host program of a lowered function (`dims`: the dynamic
    dim's tables, when `dynamic.generalize` made it)."""
    dispatches = lowered.dispatches
    with progress.stage(f"@{function}: code generation"):
        kernels = [generate(d.region) for d in dispatches]
    with progress.stage(f"@{function}: LLVM ({len(kernels)} kernels)"):
        object_code = jit.emit_object(jit.link_ir([k.ir for k in kernels])) if kernels else b""
    regions = tuple(d.region for d in dispatches)
    variants = []
    for name in dict.fromkeys(t for t in targets if t != "cpu"):
        with progress.stage(f"@{function}: {name} ({len(regions)} kernels)"):
            variants.append(targets_.get(name).build(regions))
    return CompiledFunction(
        function, tuple((s, a.type.dtype) for s, a in zip(shapes, fn.args)), tuple(lowered.tensors),
        assemble(lowered, kernels), tuple(lowered.results),
        tuple(KernelInfo(k.name, tuple(b.dtype for b in d.region.bindings), k.local_memory_size, k.constant_count)
              for k, d in zip(kernels, dispatches)),
        object_code, tuple(variants), regions, values={n: np.array(v) for n, v in values.items()} if values else None,
        dynamic=None if dims is None else replace(dims, grids=tuple((k.name, k.dynamic_grid) for k in kernels if k.dynamic_grid)))


def compile_dynamic(module: Module, function: str, progress: Progress | None = None) -> CompiledFunction:
    """`function`, whose inputs have dynamic leading dims, compiled once for every size of them
    (compiler/dynamic.py). Raises dynamic.NotDynamic (with the reason) when its code depends on
    the dim in a way kernels cannot take at run time: it is then compiled per shape signature."""
    sig = signature(module, function)
    dynamic.check_leading(sig)

    def static_at(size: int) -> Module:
        try:
            return static_module(module, function, dynamic.sentinel_shapes(sig, size))
        except (Error, NeedsInputValues) as e:
            raise dynamic.NotDynamic(f"it does not compile with every dynamic dim equal ({type(e).__name__}: "
                                     f"{str(e).splitlines()[0][:200]})") from None

    return compile_generalized(static_at, function, progress)


def compile_generalized(static_at: Callable[[int], Module], function: str, progress: Progress | None = None) -> CompiledFunction:
    """`function` compiled once for every size of its dynamic dim from static modules of it at
    the sizes dynamic.SENTINELS (`static_at(size)`: specialised here, or exported so by a
    frontend that only exports static shapes: TensorFlow's bridge), the third asked for only
    where constants move with the dim (dynamic.generalize); NotDynamic when the lowerings
    differ in a way kernels cannot take at run time."""
    progress = progress or Progress()
    with progress.stage(f"@{function}: shapes and fusion (dynamic dims)"):
        statics = [static_at(size) for size in dynamic.SENTINELS[:2]]
        prepare_dynamic = functools.partial(prepare, attention=False)
        lowered = [lower(m, function, prepare_dynamic) for m in statics]
        try:
            general, dims = dynamic.generalize(lowered)
        except dynamic.NeedsThirdSize:
            lowered.append(lower(static_at(dynamic.SENTINELS[2]), function, prepare_dynamic))
            general, dims = dynamic.generalize(lowered)
    fn = statics[0].function(function)
    return _generate(fn, function, tuple(tuple(a.type.shape) for a in fn.args), general, progress, dims=dims)


def parse(text: str | bytes, progress: Progress | None = None) -> Module:
    """StableHLO text (str) or a serialized ONNX model (bytes) -> tensor IR, reported as a stage
    (15 MB of weights take seconds)."""
    if isinstance(text, (bytes, bytearray)):
        from compiler.frontends.onnx import parse_onnx  # imported late: it needs the onnx package
        with (progress or Progress()).stage("read ONNX"):
            return parse_onnx(bytes(text))
    with (progress or Progress()).stage("parse StableHLO"):
        return parse_stablehlo(text)


def compile_module(text: str, function: str = "main", input_shapes: Sequence[Sequence[int]] | None = None,
                   progress: Progress | None = None) -> CompiledFunction:
    """Compile `function` of a StableHLO module (as `jax.jit(f).lower(x).as_text()` prints it)."""
    return compile_function(parse(text, progress), function, input_shapes, progress)
