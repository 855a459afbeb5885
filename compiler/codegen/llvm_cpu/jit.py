"""Host JIT for generated kernels: LLVM IR text -> optimised native code in this process.

Why MCJIT and not LLJIT: both work in llvmlite 0.50, but MCJIT takes the optimised
`ModuleRef` directly (LLJIT's `add_ir` wants text, so the module would be printed and parsed
twice) and it links object files back in (`ExecutionEngine.add_object_file`), which is what an
AOT executable needs. Measured on the project's Zen 3 VM for the 1024^3 matmul kernel module:
see `bench.matmul_kernels` (`compile_ms`: ~120 ms for 1024^3). LLJIT was not timed against it.

LLVM's C++ objects are not safe to build concurrently from several Python threads through
llvmlite's shared context, so every call that touches LLVM holds one module-level lock. Code
compiled here stays mapped for as long as its `JitModule` is referenced.
"""

from __future__ import annotations

import functools
import hashlib
import threading

import llvmlite.binding as llvm

_LOCK = threading.RLock()


@functools.cache
def _initialise() -> None:
    """Register the host target once. `llvm.initialize()` raises in llvmlite 0.50: never call it."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    # Kernels may carry inline asm (e.g. pause/prefetch); parsing it needs the asm parser.
    llvm.initialize_native_asmparser()


@functools.cache
def host_features() -> str:
    """The host's feature string (`+avx2,+fma,-avx512f,...`), as `-mcpu=native` would pick."""
    _initialise()
    return llvm.get_host_cpu_features().flatten()


@functools.cache
def host_cpu() -> str:
    """The host CPU name LLVM detects (e.g. `znver3`): it selects the scheduling model."""
    _initialise()
    return llvm.get_host_cpu_name()


@functools.cache
def host_triple() -> str:
    _initialise()
    return llvm.get_process_triple()


def has_feature(name: str) -> bool:
    """True when the host has the LLVM feature `name` (e.g. "avx512f", "avx2", "fma")."""
    return f"+{name}" in host_features().split(",")


def vector_width_f32() -> int:
    """f32 lanes of the widest vector register worth using: 16 with AVX-512, 8 with AVX, else 4."""
    if has_feature("avx512f"):
        return 16
    if has_feature("avx"):
        return 8
    return 4


def format_tag() -> str:
    """Executable format tag for code compiled here, e.g. `cpu-x86_64-znver3`.

    The CPU name stands for its feature set: a loader accepts an executable only when the tag
    matches the host's, so AOT code never runs on a CPU missing its instructions.
    """
    return f"cpu-{host_triple().split('-')[0]}-{host_cpu()}"


def _new_target_machine() -> llvm.TargetMachine:
    """A TargetMachine for the host: host CPU and features, O3 codegen, JIT code model."""
    _initialise()
    target = llvm.Target.from_triple(host_triple())
    return target.create_target_machine(
        cpu=host_cpu(), features=host_features(), opt=3, reloc="pic", codemodel="jitdefault"
    )


@functools.cache
def target_machine() -> llvm.TargetMachine:
    """The shared host TargetMachine used for optimisation and object emission."""
    return _new_target_machine()


def _optimised(ir_text: str) -> llvm.ModuleRef:
    """Parse, verify and run LLVM's O3 pipeline (vectorisers and unrolling on) over `ir_text`."""
    module = llvm.parse_assembly(ir_text)
    module.triple = host_triple()
    module.data_layout = str(target_machine().target_data)
    module.verify()
    tuning = llvm.PipelineTuningOptions(speed_level=3)
    tuning.loop_vectorization = True
    tuning.slp_vectorization = True
    tuning.loop_unrolling = True
    builder = llvm.create_pass_builder(target_machine(), tuning)
    builder.getModulePassManager().run(module, builder)
    return module


class JitModule:
    """Native code in this process; function addresses stay valid while this object lives."""

    def __init__(self, engine: llvm.ExecutionEngine) -> None:
        self._engine = engine

    def address(self, name: str) -> int:
        """Address of function `name`; raises KeyError when the module does not define it."""
        with _LOCK:
            addr = self._engine.get_function_address(name)
        if not addr:
            raise KeyError(f"JitModule: no function named {name!r}")
        return addr


def _engine() -> llvm.ExecutionEngine:
    """A new MCJIT engine. It takes ownership of (and frees) its TargetMachine, so it gets its
    own rather than the shared one."""
    module = llvm.parse_assembly("")
    module.triple = host_triple()
    return llvm.create_mcjit_compiler(module, _new_target_machine())


def link_ir(ir_texts: list[str]) -> str:
    """One LLVM module from several (kernel generators each build their own); the lock is held
    because llvmlite's LLVM context is not safe to use from several threads at once."""
    with _LOCK:
        linked = llvm.parse_assembly("")
        for text in ir_texts:
            linked.link_in(llvm.parse_assembly(text))
        return str(linked)


def compile_ir(ir_text: str) -> JitModule:
    """Optimise `ir_text` at O3 for the host and JIT it; safe to call from several threads."""
    with _LOCK:
        module = _optimised(ir_text)
        engine = _engine()
        engine.add_module(module)
        engine.finalize_object()
        return JitModule(engine)


def emit_object(ir_text: str) -> bytes:
    """Optimise `ir_text` and return a relocatable host object file (for AOT executables)."""
    with _LOCK:
        return target_machine().emit_object(_optimised(ir_text))


def emit_assembly(ir_text: str) -> str:
    """The optimised module as host assembly: for checking what the vectorisers produced."""
    with _LOCK:
        return target_machine().emit_assembly(_optimised(ir_text))


_LOADED: dict[bytes, JitModule] = {}  # sha256 of an object -> its module, linked once


def load_object(data: bytes) -> JitModule:
    """Link an object file from `emit_object` into memory (the AOT load path). An object already
    linked is not linked again: the process-wide engine never unlinks, so loading one model
    repeatedly (fg.load from the compile cache) grew memory by the object's size every time."""
    key = hashlib.sha256(data).digest()
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
        engine = _engine()
        # MCJIT takes the object's buffer over (llvmlite moves the OwningBinary in).
        engine.add_object_file(llvm.ObjectFileRef.from_data(data))
        engine.finalize_object()
        module = _LOADED[key] = JitModule(engine)
        return module
