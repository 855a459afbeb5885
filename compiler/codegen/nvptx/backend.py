"""LLVM IR text -> PTX with LLVM's NVPTX target, math through NVIDIA's libdevice.

Math: the kernel IR generators emit LLVM math intrinsics (llvm.exp.f32, ...) and C library calls
(erff, ...) as on the CPU; the NVPTX backend selects only the few with a PTX instruction (sqrt,
fabs, floor, min/max...). The rest are renamed to libdevice's `__nv_*` functions (what nvcc and
numba-cuda link), and libdevice's bitcode, from the CUDA toolkit or its pip wheel, is linked in
and optimised with the kernels; a module that needs it where it is not installed is a
CompileError naming the functions. Kernels run with denormals flushed (`nvvm-reflect-ftz`, the
f32 denormal mode), as the CPU target and XLA's CPU runtime do.

Unlike the SPIR-V target, LLVM runs in this process: the NVPTX backend is LLVM's oldest GPU
target and selects everything the generators emit, and `verify()` turns malformed IR into an
exception before any pass sees it.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import re
import sys

from compiler.codegen.nvptx import CPU, FEATURES, TRIPLE
from compiler.errors import CompileError

# LLVM intrinsics and C library functions the NVPTX backend cannot select, and libdevice has.
_LIBDEVICE_MATH = ("exp", "exp2", "exp10", "log", "log2", "log10", "pow", "sin", "cos", "tan", "tanh", "atan", "asin",
                   "acos", "sinh", "cosh", "atan2", "erf", "erfc", "expm1", "log1p", "cbrt", "asinh", "acosh", "atanh",
                   "lgamma", "erfinv")
_INTRINSIC = re.compile(r'@"?llvm\.(' + "|".join(_LIBDEVICE_MATH) + r')\.(f32|f64)"?(?=\()')
_LIBM = re.compile(r'@"?(' + "|".join(_LIBDEVICE_MATH) + r')(f?)"?(?=\()')


class PtxCompileError(CompileError):
    """LLVM's NVPTX backend failed on a module, or its math needs a missing libdevice."""


def _to_libdevice(text: str) -> str:
    text = _INTRINSIC.sub(lambda m: f"@__nv_{m.group(1)}{'f' if m.group(2) == 'f32' else ''}", text)
    return _LIBM.sub(lambda m: f"@__nv_{m.group(1)}{m.group(2)}", text)


@functools.cache
def libdevice_path() -> str | None:
    """libdevice.10.bc from $CUDA_HOME, /usr/local/cuda or an NVIDIA pip wheel; None if absent."""
    roots = [os.environ.get("CUDA_HOME", ""), os.environ.get("CUDA_PATH", ""), "/usr/local/cuda"]
    roots += [os.path.join(p, "nvidia", "*") for p in sys.path if p]
    roots += [os.path.join(p, "nvidia", "*", "*") for p in sys.path if p]
    for root in roots:
        if root:
            found = sorted(glob.glob(os.path.join(root, "nvvm", "libdevice", "libdevice*.bc")))
            if found:
                return found[-1]
    return None


@functools.cache
def _llvm():
    import llvmlite.binding as llvm

    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    return llvm


@functools.cache
def _target_machine():
    return _llvm().Target.from_triple(TRIPLE).create_target_machine(cpu=CPU, features=FEATURES, opt=3)


@functools.lru_cache(maxsize=256)
def _compile_cached(digest: str, ir_text: str) -> bytes:
    llvm = _llvm()
    text = _to_libdevice(ir_text)
    try:
        mod = llvm.parse_assembly(text)
        mod.verify()
    except RuntimeError as e:
        raise PtxCompileError(f"NVPTX: the kernels' LLVM IR is malformed: {str(e).strip().splitlines()[0]}") from None
    kernels = {f.name for f in mod.functions if not f.is_declaration}
    needed = sorted(f.name for f in mod.functions if f.is_declaration and f.name.startswith("__nv_"))
    if needed:
        path = libdevice_path()
        if path is None:
            raise PtxCompileError(f"NVPTX: {', '.join(needed)} need NVIDIA's libdevice, which is not installed "
                                  "(pip install nvidia-cuda-nvcc, or set CUDA_HOME)")
        with open(path, "rb") as f:
            mod.link_in(llvm.parse_bitcode(f.read()))
        for fn in mod.functions:
            if not fn.is_declaration and fn.name not in kernels:
                fn.linkage = "internal"  # libdevice: only what the kernels call survives
    unknown = sorted(f.name for f in mod.functions if f.is_declaration and not f.name.startswith(("llvm.", "__nvvm_reflect")))
    if unknown:
        raise PtxCompileError(f"NVPTX: no lowering for {', '.join(unknown)}")
    tm = _target_machine()
    pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=3))
    pb.getModulePassManager().run(mod, pb)
    try:
        return tm.emit_assembly(mod).encode() + b"\0"
    except RuntimeError as e:
        raise PtxCompileError(f"NVPTX: LLVM's backend failed: {str(e).strip().splitlines()[-1]}") from None


_FTZ = '\n!llvm.module.flags = !{!9000}\n!9000 = !{i32 4, !"nvvm-reflect-ftz", i32 1}\n'


def compile_ptx(ir_text: str) -> bytes:
    """PTX for sm_90 from LLVM IR text (triple `TRIPLE`); PtxCompileError on failure."""
    text = re.sub(r"^(define ptx_kernel [^\n]*\))", r'\1 "denormal-fp-math-f32"="preserve-sign,preserve-sign"', ir_text, flags=re.M)
    text += _FTZ
    return _compile_cached(hashlib.sha256(text.encode()).hexdigest(), text)
