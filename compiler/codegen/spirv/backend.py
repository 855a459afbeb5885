"""LLVM IR text -> SPIR-V bytes, in a child process, then `spirv-val` where it is installed.

Why a child process: llvmlite 0.50's LLVM has assertions compiled in, and its SPIR-V backend
aborts the whole process on some IR it cannot select (a GEP whose first index is not 0, a null
resource name). A compile must never take the interpreter down, so LLVM runs in a short-lived
`python -c` that reads IR on stdin and writes SPIR-V on stdout; an abort there becomes a
`SpirvCompileError` naming the LLVM message. The cost, ~0.3 s per module, is paid once per
program (compiled programs are cached on disk).

Why no LLVM optimisation: instcombine rewrites `getelementptr [N x T], p, 0, i` into
`getelementptr T, p, i`, which the SPIR-V backend cannot lower in Vulkan's logical addressing
(see above), and at -O1 and up its instruction selection combines a trunc of an i64 `urem` into
an OpBitwiseAnd of mismatched widths that spirv-val rejects (seen on LLVM 22). Codegen runs at
-O0; the Vulkan driver optimises the SPIR-V itself when it builds the pipeline.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from compiler.codegen.spirv import TRIPLE
from compiler.errors import CompileError


class SpirvCompileError(CompileError):
    """LLVM's SPIR-V backend failed on a module, or spirv-val rejected its output."""


_CHILD = r"""
import sys
import llvmlite.binding as llvm
llvm.initialize_all_targets()
llvm.initialize_all_asmprinters()
text = sys.stdin.buffer.read().decode()
mod = llvm.parse_assembly(text)
mod.verify()
tm = llvm.Target.from_triple(sys.argv[1]).create_target_machine(opt=int(sys.argv[2]) if len(sys.argv) > 2 else 2)
sys.stdout.buffer.write(tm.emit_object(mod))
"""

_MAGIC = bytes.fromhex("03022307")


def _last_lines(text: str, n: int = 4) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:])


@functools.lru_cache(maxsize=256)
def _compile_cached(digest: str, ir_text: str, validate: bool) -> bytes:
    try:
        done = subprocess.run([sys.executable, "-c", _CHILD, TRIPLE, "0"], input=ir_text.encode(), capture_output=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise SpirvCompileError("LLVM's SPIR-V backend took over 600 s on one module") from None
    if done.returncode != 0 or not done.stdout.startswith(_MAGIC):
        why = _last_lines(done.stderr.decode(errors="replace")) or f"exit status {done.returncode}"
        raise SpirvCompileError(f"LLVM's SPIR-V backend failed (exit {done.returncode}): {why}")
    spirv = integer_nulls_as_constants(fix_barrier_semantics(done.stdout))
    if validate:
        check(spirv)
    return spirv


_OP_CONSTANT, _OP_CONTROL_BARRIER = 43, 224
_ACQUIRE_RELEASE_WORKGROUP_MEMORY = 0x8 | 0x100


def fix_barrier_semantics(spirv: bytes) -> bytes:
    """Makes every OpControlBarrier order workgroup memory.

    LLVM 22 lowers `llvm.spv.group.memory.barrier.with.group.sync` (HLSL's
    GroupMemoryBarrierWithGroupSync) to OpControlBarrier with memory semantics 0x10
    (SequentiallyConsistent) and no storage class, which orders no memory at all: stores to
    workgroup memory before the barrier need not be visible after it (seen as wrong results
    on lavapipe). The barrier's semantics operand is pointed at a new constant,
    AcquireRelease | WorkgroupMemory, as GLSL's barrier() has."""
    words = list(np.frombuffer(spirv, dtype="<u4"))
    bound = words[3]
    out, i, new_id, insert_at, uint_type = words[:5], 5, None, None, None
    constants: dict[int, tuple[int, int]] = {}  # id -> (type, value)
    body: list[int] = []
    while i < len(words):
        count, opcode = words[i] >> 16, words[i] & 0xFFFF
        inst = words[i: i + count]
        if opcode == _OP_CONSTANT and count == 4:
            constants[inst[2]] = (inst[1], inst[3])
            insert_at = len(body) + count
        if opcode == _OP_CONTROL_BARRIER:
            semantics = constants.get(inst[3])
            if semantics is not None and not semantics[1] & 0x100:
                uint_type = semantics[0]
                new_id = new_id or bound
                inst = inst[:3] + [new_id]
        body += inst
        i += count
    if new_id is None:
        return spirv
    body[insert_at:insert_at] = [(4 << 16) | _OP_CONSTANT, uint_type, new_id, _ACQUIRE_RELEASE_WORKGROUP_MEMORY]
    out[3] = bound + 1
    return np.array(out + body, dtype="<u4").tobytes()


_OP_TYPE_INT, _OP_CONSTANT_NULL = 21, 46


def integer_nulls_as_constants(spirv: bytes) -> bytes:
    """Every integer OpConstantNull becomes the OpConstant 0 of the same id.

    Why: for a relaxed atomic (bytes.py's byte stores) LLVM 22 writes the zero memory
    semantics as an OpConstantNull, then reuses that id wherever the module needs an integer
    0, including as the struct index of a storage buffer's OpAccessChain, which must be an
    OpConstant (spirv-val refuses the module). The two mean the same value."""
    words = np.frombuffer(spirv, dtype="<u4")
    ints, out, i = set(), [words[:5]], 5
    while i < len(words):
        count, opcode = int(words[i]) >> 16, int(words[i]) & 0xFFFF
        if count == 0:
            return spirv
        inst = words[i: i + count]
        if opcode == _OP_TYPE_INT:
            ints.add(int(inst[1]))
        elif opcode == _OP_CONSTANT_NULL and int(inst[1]) in ints:
            inst = np.array([(4 << 16) | _OP_CONSTANT, inst[1], inst[2], 0], dtype="<u4")
        out.append(inst)
        i += count
    return np.concatenate(out).astype("<u4").tobytes()


def compile_spirv(ir_text: str, validate: bool = True) -> bytes:
    """SPIR-V for Vulkan 1.3 from LLVM IR text (triple `TRIPLE`); SpirvCompileError on failure."""
    return _compile_cached(hashlib.sha256(ir_text.encode()).hexdigest(), ir_text, validate)


def spirv_val() -> str | None:
    """Path of `spirv-val` (Debian's spirv-tools), or None."""
    return shutil.which("spirv-val")


def check(spirv: bytes) -> None:
    """Runs `spirv-val --target-env vulkan1.3` when installed; SpirvCompileError if it rejects."""
    tool = spirv_val()
    if tool is None:
        return
    fd, path = tempfile.mkstemp(suffix=".spv")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(spirv)
        done = subprocess.run([tool, "--target-env", "vulkan1.3", path], capture_output=True, timeout=120)
    finally:
        os.unlink(path)
    if done.returncode != 0:
        raise SpirvCompileError(f"spirv-val rejected the module: {_last_lines(done.stderr.decode(errors='replace') + done.stdout.decode(errors='replace'))}")
