"""Random command-buffer programs and an executable numpy model of the HAL's semantics.

A *program* is a list of submissions in a global order; each holds one command buffer of fills,
copies, updates, dispatches (of kernels with known semantics, one of which fails) and barriers,
waits on semaphores signalled by earlier submissions or by the host (late), and signals its own
semaphore. Programs are race-free by construction, so their outcome is deterministic:
- inside a command buffer, a barrier separates two commands that touch one buffer (one writing);
- a submission waits for the last earlier submission that touched any buffer it touches.
The model runs the submissions in the global order: a submission whose wait failed, or that
contains a failing dispatch, fails its semaphore; the buffers it writes become undefined (a
failing submission may have run part of its work) and are not compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from compiler.portable import kernel

N = 40  # int32 elements per buffer: partial workgroups of 16 on every driver
BUFFERS = 4
STATUS = 9  # what the failing kernel returns


@kernel(workgroup_size=16, bindings=(np.int32,), constants=(np.int32,))
def add_const(k):
    """buf[i] += c (two's complement wraparound)."""
    i = k.global_id(0)
    with k.b.if_then(k.b.icmp_unsigned("<", i, k.length(0))):
        k.store(0, i, k.b.add(k.load(0, i), k.constant(0)))


@kernel(workgroup_size=16, bindings=(np.int32, np.int32))
def mul_add(k):
    """dst[i] = 3 * dst[i] + src[n - 1 - i]: reads what other workgroups wrote before a barrier."""
    b = k.b
    i = k.global_id(0)
    with b.if_then(b.icmp_unsigned("<", i, k.length(1))):
        j = b.sub(b.sub(k.length(0), k.i32(1)), i)
        k.store(1, i, b.add(b.mul(k.load(1, i), k.i32(3)), k.load(0, j)))


@kernel(workgroup_size=16, bindings=(np.int32,), constants=(np.uint32,))
def fail_in(k):
    """Fails with STATUS in workgroup `at`; elsewhere adds 1 to its elements."""
    b = k.b
    here = b.icmp_unsigned("==", k.workgroup_id(0), k.constant(0))
    k.fail_if(here, STATUS)
    i = k.global_id(0)
    with b.if_then(b.and_(b.not_(here), b.icmp_unsigned("<", i, k.length(0)))):
        k.store(0, i, b.add(k.load(0, i), k.i32(1)))


@dataclass(frozen=True)
class Command:
    op: str  # fill | copy | update | add | mul_add | fail | barrier
    dst: int = -1
    src: int = -1
    value: int = 0
    data: tuple[int, ...] = ()
    start: int = 0  # update: first element

    def writes(self) -> set[int]:
        return set() if self.op == "barrier" else {self.dst}

    def reads(self) -> set[int]:
        return {self.src} if self.op in ("copy", "mul_add") else set()


@dataclass
class Submission:
    commands: list[Command]
    waits: list[tuple[int, int]]  # (submission index, or -1 for the host gate; value)
    value: int  # what it signals its own semaphore to
    thread: int
    touched: set[int] = field(default_factory=set)


@dataclass
class Program:
    submissions: list[Submission]
    initial: np.ndarray  # [BUFFERS, N] int32
    gate_used: bool


@st.composite
def commands(draw) -> Command:
    op = draw(st.sampled_from(["fill", "copy", "update", "add", "add", "mul_add", "mul_add", "fail", "barrier"]))
    dst = draw(st.integers(0, BUFFERS - 1))
    if op in ("copy", "mul_add"):
        src = draw(st.integers(0, BUFFERS - 1).filter(lambda s: s != dst))
        return Command(op, dst, src)
    if op == "update":
        start = draw(st.integers(0, N - 1))
        data = tuple(draw(st.lists(st.integers(-2**31, 2**31 - 1), min_size=1, max_size=N - start)))
        return Command(op, dst, data=data, start=start)
    if op == "fill":
        return Command(op, dst, value=draw(st.integers(-2**31, 2**31 - 1)))
    if op == "add":
        return Command(op, dst, value=draw(st.integers(-1000, 1000)))
    if op == "fail":
        return Command(op, dst, value=draw(st.integers(0, (N + 15) // 16 - 1)))
    return Command(op)


def _with_barriers(commands: list[Command]) -> list[Command]:
    """Inserts a barrier before a command that conflicts with one since the last barrier."""
    out: list[Command] = []
    written: set[int] = set()
    read: set[int] = set()
    for c in commands:
        if c.op == "barrier":
            written, read = set(), set()
        elif c.writes() & (written | read) or c.reads() & written:
            out.append(Command("barrier"))
            written, read = set(), set()
        out.append(c)
        written |= c.writes()
        read |= c.reads()
    return out


@st.composite
def programs(draw, max_submissions: int = 6, threads: int = 3) -> Program:
    subs: list[Submission] = []
    last_toucher: dict[int, int] = {}
    gate_used = False
    for k in range(draw(st.integers(1, max_submissions))):
        cmds = _with_barriers(draw(st.lists(commands(), min_size=0, max_size=6)))
        touched = set().union(*(c.writes() | c.reads() for c in cmds)) if cmds else set()
        deps = {last_toucher[b] for b in touched if b in last_toucher}
        # Extra ordering edges, and the host gate, at random.
        if subs and draw(st.booleans()):
            deps.add(draw(st.integers(0, len(subs) - 1)))
        waits = [(d, draw(st.integers(1, subs[d].value))) for d in sorted(deps)]
        if draw(st.integers(0, 4)) == 0:
            waits.append((-1, 1))
            gate_used = True
        for b in touched:
            last_toucher[b] = k
        subs.append(Submission(cmds, waits, draw(st.integers(1, 5)), draw(st.integers(0, threads - 1)), touched))
    initial = np.array(draw(st.lists(st.integers(-2**31, 2**31 - 1), min_size=BUFFERS * N, max_size=BUFFERS * N)), np.int32).reshape(BUFFERS, N)
    return Program(subs, initial, gate_used)


def model(program: Program) -> tuple[np.ndarray, np.ndarray, list[bool]]:
    """(buffers, defined mask per buffer, failed per submission) after the program."""
    bufs = program.initial.astype(np.int64).copy()
    defined = np.ones(BUFFERS, bool)
    failed: list[bool] = []
    for sub in program.submissions:
        if any(failed[d] for d, _ in sub.waits if d >= 0) or any(c.op == "fail" for c in sub.commands):
            failed.append(True)
            for c in sub.commands:
                if c.writes():
                    defined[c.dst] = False
            continue
        failed.append(False)
        for c in sub.commands:
            if c.op == "fill":
                bufs[c.dst] = c.value
            elif c.op == "copy":
                bufs[c.dst] = bufs[c.src]
            elif c.op == "update":
                bufs[c.dst, c.start : c.start + len(c.data)] = c.data
            elif c.op == "add":
                bufs[c.dst] = bufs[c.dst] + c.value
            elif c.op == "mul_add":
                bufs[c.dst] = 3 * bufs[c.dst] + bufs[c.src][::-1]
            bufs = ((bufs + 2**31) % 2**32) - 2**31  # int32 wraparound
    return bufs.astype(np.int32), defined, failed
