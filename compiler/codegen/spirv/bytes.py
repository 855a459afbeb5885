"""8-bit integers (bool, int8, uint8 tensors) carried in 32-bit words, in the LLVM IR of a SPIR-V
module, before LLVM's SPIR-V backend sees it.

Why: WebGPU has no 8-bit type (naga, wgpu's translator, refuses SPIR-V's Int8 capability), and on
Vulkan 8-bit storage is an optional feature (storageBuffer8BitAccess, shaderInt8) that some
devices lack, while LLVM's SPIR-V backend has no i8 legalisation of its own (it cannot even select
an i8 ctlz). So one module, taken by both drivers, holds no 8-bit value at all:

- An i8 value lives in an i32 register, always zero-extended (the canonical form: the backend
  declares every integer unsigned anyway). Instructions closed under that form (and, or, xor,
  udiv, urem, lshr, unsigned compares, select, phi, loads and stores of private memory) just
  take i32; add, sub, mul and shl mask their result to the low byte; signed operations (sdiv,
  srem, ashr, sext, sitofp) work on the sign-extended value ((v ^ 0x80) - 0x80), and signed
  compares compare v ^ 0x80 unsigned; truncations to i8 mask; i8 constants become their
  unsigned byte.
- A storage binding of bytes is an array of 32-bit words (module.py's handle type for "i8"):
  byte i is bits 8 * (i % 4) of word i / 4. A load reads the word and extracts the byte. A store
  clears the byte with an atomic AND and sets it with an atomic OR on the word: invocations that
  store neighbouring bytes of one word at the same time (every grid-stride kernel does, one
  element per invocation) each change only their own byte, so none is lost, which a plain
  read-modify-write of the word could not promise. The atomics are relaxed (monotonic): the
  kernel needs their atomicity, not ordering, and a release one was wrong on lavapipe (an
  insertion sort's stores inside its loops were lost).
- Workgroup and private arrays of i8 become arrays of i32 (more memory, no packing needed: they
  belong to one workgroup or one invocation, whose own ordering rules already apply per element).

An 8-bit instruction of a form not listed here is a CompileError naming it, never wrong code.
"""

from __future__ import annotations

import itertools
import re

from compiler.errors import CompileError

_NAME = r'%"[^"]*"'
_VALUE = rf'(?:{_NAME}|-?\d+|undef|poison|zeroinitializer|true|false)'
_PTR = r'(?:i8|i32)(?: addrspace\((\d+)\))?\*'  # a typed pointer as llvmlite prints it

_PLACEHOLDER = re.compile(rf'^(\s*)({_NAME}) = call i8 addrspace\(11\)\* @"(fg\.spv\.ptr\.\d+\.i8)"\(i32 ({_VALUE})\)$')
_BINOP = re.compile(rf'^(\s*)({_NAME}) = (add|sub|mul|shl|udiv|urem|lshr|and|or|xor|sdiv|srem|ashr)((?: (?:nsw|nuw|exact))*) i8 ({_VALUE}), ({_VALUE})$')
_ICMP = re.compile(rf'^(\s*)({_NAME}) = icmp (\w+) i8 ({_VALUE}), ({_VALUE})$')
_SELECT = re.compile(rf'^(\s*)({_NAME}) = select\s+i1 ({_VALUE}), i8 ({_VALUE}), i8 ({_VALUE})$')
_PHI = re.compile(rf'^(\s*)({_NAME}) = phi i8 (.*)$')
_CAST = re.compile(rf'^(\s*)({_NAME}) = (zext|sext|trunc|sitofp|uitofp|fptosi|fptoui) (\w+) ({_VALUE}) to (\w+)$')
_ALLOCA = re.compile(rf'^(\s*)({_NAME}) = alloca i8(.*)$')
_LOAD = re.compile(rf'^(\s*)({_NAME}) = load i8, {_PTR} ({_NAME})(, align \d+)?$')
_STORE = re.compile(rf'^(\s*)store i8 ({_VALUE}), {_PTR} ({_NAME})(, align \d+)?$')
_CALL = re.compile(rf'^(\s*)({_NAME}) = call i8 @"llvm\.ctpop\.i8"\((.*)\)$')
_I8 = re.compile(r"\bi8\b")
_I8_ARRAY = re.compile(r"\[(\d+) x i8\]")
_INTRINSIC_DECLARE = re.compile(r'^declare i8 @"llvm\.')
_INT_WIDTH = {"i1": 1, "i8": 8, "i16": 16, "i32": 32, "i64": 64}


class _Widener:
    """Rewrites one module's text (see the module docstring)."""

    def __init__(self) -> None:
        self.byte_pointers: dict[str, str] = {}  # storage pointer name -> name of its bit shift in the word
        self.declares: set[str] = set()
        self.fresh = itertools.count()

    def temp(self, base: str | None, tag: str) -> str:
        stem = base[2:-1] if base else f"fg.b8.{next(self.fresh)}"
        return f'%"{stem}.{tag}"'

    @staticmethod
    def byte(v: str) -> str:
        """An i8 operand in its i32 form (constants as their unsigned byte)."""
        return str(int(v) & 0xFF) if re.fullmatch(r"-?\d+", v) else v

    def signed(self, out: list, ind: str, base: str, v: str, tag: str) -> str:
        """The i32 sign extension of canonical byte `v`."""
        if re.fullmatch(r"-?\d+", v):
            return str((int(v) & 0xFF) - ((int(v) & 0x80) << 1))
        t, s = self.temp(base, f"{tag}x"), self.temp(base, f"{tag}s")
        out += [f"{ind}{t} = xor i32 {v}, 128", f"{ind}{s} = sub i32 {t}, 128"]
        return s

    def flipped(self, out: list, ind: str, base: str, v: str, tag: str) -> str:
        """v ^ 0x80: signed byte order as unsigned order."""
        if re.fullmatch(r"-?\d+", v):
            return str((int(v) & 0xFF) ^ 0x80)
        t = self.temp(base, tag)
        out.append(f"{ind}{t} = xor i32 {v}, 128")
        return t

    def line(self, line: str) -> list[str]:
        if not _I8.search(line):
            return [line]
        if "<" in line and re.search(r"<\d+ x i8>", line):
            raise CompileError(f"SPIR-V: no 32-bit form for a vector of 8-bit integers: {line.strip()}")
        out: list[str] = []
        if m := _PLACEHOLDER.match(line):
            ind, r, fn, index = m.groups()
            word, low, shift = self.temp(r, "word"), self.temp(r, "low"), self.temp(r, "shift")
            out += [f"{ind}{word} = lshr i32 {index}, 2", f"{ind}{low} = and i32 {index}, 3", f"{ind}{shift} = shl i32 {low}, 3",
                    f'{ind}{r} = call i32 addrspace(11)* @"{fn}"(i32 {word})']
            self.byte_pointers[r] = shift
        elif m := _LOAD.match(line):
            ind, r, space, p, _ = m.groups()
            if p in self.byte_pointers:
                w, s = self.temp(r, "w"), self.temp(r, "s")
                out += [f"{ind}{w} = load i32, ptr addrspace(11) {p}, align 4", f"{ind}{s} = lshr i32 {w}, {self.byte_pointers[p]}",
                        f"{ind}{r} = and i32 {s}, 255"]
            elif space == "11":
                raise CompileError(f"SPIR-V: a byte load through a derived storage pointer: {line.strip()}")
            else:
                out.append(f"{ind}{r} = load i32, ptr{f' addrspace({space})' if space else ''} {p}")
        elif m := _STORE.match(line):
            ind, v, space, p, _ = m.groups()
            v = self.byte(v)
            if p in self.byte_pointers:
                shift = self.byte_pointers[p]
                mask, keep, bits = self.temp(None, "mask"), self.temp(None, "keep"), self.temp(None, "bits")
                out += [f"{ind}{mask} = shl i32 255, {shift}", f"{ind}{keep} = xor i32 {mask}, -1", f"{ind}{bits} = shl i32 {v}, {shift}",
                        f'{ind}{self.temp(None, "and")} = atomicrmw and ptr addrspace(11) {p}, i32 {keep} syncscope("device") monotonic',
                        f'{ind}{self.temp(None, "or")} = atomicrmw or ptr addrspace(11) {p}, i32 {bits} syncscope("device") monotonic']
            elif space == "11":
                raise CompileError(f"SPIR-V: a byte store through a derived storage pointer: {line.strip()}")
            else:
                out.append(f"{ind}store i32 {v}, ptr{f' addrspace({space})' if space else ''} {p}")
        elif m := _BINOP.match(line):
            ind, r, op, _, a, b = m.groups()
            a, b = self.byte(a), self.byte(b)
            if op in ("sdiv", "srem", "ashr"):
                a, b = self.signed(out, ind, r, a, "a"), self.signed(out, ind, r, b, "b")
            if op in ("and", "or", "xor", "udiv", "urem", "lshr"):
                out.append(f"{ind}{r} = {op} i32 {a}, {b}")
            else:
                w = self.temp(r, "w")
                out += [f"{ind}{w} = {op} i32 {a}, {b}", f"{ind}{r} = and i32 {w}, 255"]
        elif m := _ICMP.match(line):
            ind, r, pred, a, b = m.groups()
            a, b = self.byte(a), self.byte(b)
            if pred.startswith("s"):
                a, b, pred = self.flipped(out, ind, r, a, "a"), self.flipped(out, ind, r, b, "b"), "u" + pred[1:]
            out.append(f"{ind}{r} = icmp {pred} i32 {a}, {b}")
        elif m := _SELECT.match(line):
            ind, r, c, a, b = m.groups()
            out.append(f"{ind}{r} = select i1 {c}, i32 {self.byte(a)}, i32 {self.byte(b)}")
        elif m := _PHI.match(line):
            ind, r, rest = m.groups()
            rest = re.sub(rf"\[\s*({_VALUE})\s*,", lambda p: f"[{self.byte(p.group(1))},", rest)
            out.append(f"{ind}{r} = phi i32 {rest}")
        elif m := _CAST.match(line):
            out += self.cast(*m.groups(), line)
        elif m := _ALLOCA.match(line):
            out.append(f"{m.group(1)}{m.group(2)} = alloca i32{m.group(3)}")
        elif m := _CALL.match(line):
            out += self.intrinsic(*m.groups())
        elif re.match(rf"^\s*{_NAME} = getelementptr ", line) or line.startswith("@"):
            out.append(_I8.sub("i32", line))  # local arrays of bytes: arrays of words
        else:
            raise CompileError(f"SPIR-V: no 32-bit form for the 8-bit instruction: {line.strip()}")
        return out

    def cast(self, ind: str, r: str, op: str, src: str, v: str, dst: str, line: str) -> list[str]:
        out: list[str] = []
        if src == "i8":
            v = self.byte(v)
            if op in ("sext", "sitofp"):
                v = self.signed(out, ind, r, v, "v")
            if op in ("sitofp", "uitofp"):
                return out + [f"{ind}{r} = {op} i32 {v} to {dst}"]
            width = _INT_WIDTH.get(dst)
            if width is None or op not in ("zext", "sext", "trunc"):
                raise CompileError(f"SPIR-V: no 32-bit form for the 8-bit instruction: {line.strip()}")
            if width == 32:  # the value is already the i32 (an identity the backend keeps)
                return out + [f"{ind}{r} = or i32 {v}, 0"]
            return out + [f"{ind}{r} = {'trunc' if width < 32 else op} i32 {v} to {dst}"]
        if dst != "i8":
            raise CompileError(f"SPIR-V: no 32-bit form for the 8-bit instruction: {line.strip()}")
        if op in ("fptosi", "fptoui"):
            w = self.temp(r, "w")
            return [f"{ind}{w} = {op} {src} {v} to i32", f"{ind}{r} = and i32 {w}, 255"]
        width = _INT_WIDTH.get(src)
        if width is None:
            raise CompileError(f"SPIR-V: no 32-bit form for the 8-bit instruction: {line.strip()}")
        if width == 32:
            return [f"{ind}{r} = and i32 {v}, 255"]
        w = self.temp(r, "w")
        widen = "trunc" if width > 32 else "zext" if op in ("zext", "trunc") else "sext"
        return [f"{ind}{w} = {widen} {src} {v} to i32", f"{ind}{r} = and i32 {w}, 255"]

    def intrinsic(self, ind: str, r: str, args: str) -> list[str]:
        """llvm.ctpop.i8: the popcount of the canonical i32 is the byte's."""
        self.declares.add('declare i32 @"llvm.ctpop.i32"(i32)')
        return [f'{ind}{r} = call i32 @"llvm.ctpop.i32"(i32 {self.byte(args.split()[1])})']


def widen_bytes(text: str) -> str:
    """`text` (LLVM IR of a SPIR-V module, storage placeholders unresolved) with every 8-bit
    integer carried in 32 bits; CompileError for an 8-bit instruction it has no form for."""
    if not _I8.search(text):
        return text
    w = _Widener()
    out: list[str] = []
    for line in text.splitlines():
        if _INTRINSIC_DECLARE.match(line) or re.match(r'declare i8 addrspace\(11\)\* @"fg\.spv\.ptr\.', line):
            continue  # replaced by the 32-bit intrinsics' declarations / resolved by module.py
        if line.startswith("@"):
            out.append(_I8_ARRAY.sub(r"[\1 x i32]", line))
        elif line.startswith(("define", "declare", "target", ";", "attributes", "source_filename")) or not line.strip():
            out.append(line)
        else:
            out += w.line(line)
    declared = set(re.findall(r'^declare [^@]*@"?([\w.]+)"?\(', "\n".join(out), re.M))
    new = [d for d in sorted(w.declares) if re.search(r'@"([\w.]+)"', d).group(1) not in declared]
    return "\n".join(out + new) + "\n"
