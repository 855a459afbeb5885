"""Command buffers translated at `end()` into steps that each submission encodes.

A GPUCommandBuffer runs once, so what `end()` keeps is a list of encoder steps, replayed into a
fresh GPUCommandEncoder by every submission; everything they use is made here, once: bind
groups, the dispatch states (hal/spirv_abi.py: one region of one storage buffer per dispatch),
staging buffers for updates.

- dispatch: set the entry's pipeline and a bind group (the bindings as whole buffers, and the
  dispatch's state region), then dispatchWorkgroups. Consecutive dispatches share a compute
  pass; WebGPU orders the dispatches of a pass itself, so barriers need no command.
- dispatch_indirect: the built-in check (builtins.py) copies the count into the dispatch's state
  and its indirect arguments (their own buffer: WebGPU refuses a buffer bound for writing and
  read as indirect arguments by the same dispatch), then dispatchWorkgroupsIndirect.
- fill: clearBuffer for zeros over whole words, the built-in fg_fill otherwise; update: a
  staging buffer written now, copied in; copy: copyBufferToBuffer over whole words, the
  built-in fg_copy otherwise; within one buffer, from a word-aligned copy of the source range
  (WebGPU copies only between two buffers, and a dispatch cannot bind one buffer both for
  reading and for writing).

Segments: as on the Vulkan driver (hal_gpu/vulkan/command_buffer.py says why), a new segment
starts at every barrier after a dispatch that may fail, and a segment goes to the GPU only once
the one before it is known to have succeeded, so a failure skips the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hal import spirv_abi
from common.errors import ResourceExhausted
from hal.command_buffer import Barrier, Binding, CommandBuffer, Copy, Dispatch, Fill, Update
from hal_gpu.webgpu import builtins

_ARGS_WORDS = 5  # indirect arguments x, y, z, then the count's word in its buffer and the limit


@dataclass
class LoweredCommandBuffer:
    segments: list[list[tuple]] = field(default_factory=lambda: [[]])  # encoder steps per segment
    may_fail: list[bool] = field(default_factory=list)  # per segment
    mapped: list[dict] = field(default_factory=lambda: [{}])  # per segment: MAPPING buffers it uses (id -> buffer)
    written: list[dict] = field(default_factory=lambda: [{}])  # per segment: MAPPING buffers it may write
    state: object = None  # GPUBuffer of the dispatch states
    state_words: np.ndarray | None = None  # their contents before a submission
    reset: bool = False  # rewrite the states before every submission (a kernel may store its status)
    checks: list[tuple[int, int, int, str]] = field(default_factory=list)  # (segment, base word, command index, entry)
    keepalive: list = field(default_factory=list)

    def encode(self, encoder, segment: int) -> None:
        """Records segment `segment` into a GPUCommandEncoder."""
        for step in self.segments[segment]:
            if step[0] == "pass":
                compute = encoder.begin_compute_pass()
                for pipeline, group, count, indirect in step[1]:
                    compute.set_pipeline(pipeline)
                    compute.set_bind_group(0, group)
                    if indirect is None:
                        compute.dispatch_workgroups(*count)
                    else:
                        compute.dispatch_workgroups_indirect(*indirect)
                compute.end()
            elif step[0] == "copy":
                encoder.copy_buffer_to_buffer(*step[1:])
            else:
                encoder.clear_buffer(*step[1:])

    def failures(self, segment: int, words: np.ndarray) -> list[tuple[int, str, int | None, tuple[int, int, int]]]:
        """(command index, entry, status or None for an out-of-range indirect count, workgroup)
        of every dispatch of `segment` that failed, from the states read back."""
        out = []
        for seg, base, index, name in self.checks:
            if seg != segment or not (words[base + spirv_abi.STATUS] or words[base + spirv_abi.INDIRECT_RANGE]):
                continue
            at = base + spirv_abi.FAILED_WORKGROUP
            status = None if words[base + spirv_abi.INDIRECT_RANGE] else int(words[base + spirv_abi.STATUS].view(np.int32))
            out.append((index, name, status, tuple(int(w) for w in words[at: at + 3])))
        return out


def _may_fail(d: Dispatch) -> bool:
    """An indirect dispatch (its count may be out of range), or a kernel that may store to its
    dispatch state (executable.py `stores`)."""
    stores = d.executable.stores[d.entry.function]
    return d.indirect is not None or stores is None or d.entry.binding_count in stores


def _aligned(*values: int) -> bool:
    return all(v % 4 == 0 for v in values)


class _Regions:
    """Word offsets of aligned regions in one buffer (storage bindings need aligned offsets)."""

    def __init__(self, align_bytes: int) -> None:
        self.align, self.words = max(1, align_bytes // 4), 0

    def take(self, words: int) -> int:
        at = self.words
        self.words += -(-words // self.align) * self.align
        return at


def lower(device, cb: CommandBuffer) -> LoweredCommandBuffer:
    out = LoweredCommandBuffer()
    states, args = _Regions(device.storage_alignment), _Regions(device.storage_alignment)
    plans = []  # (command, state region, args region): regions first, so the buffers exist before bind groups
    for cmd in cb.commands:
        state_at = args_at = None
        if isinstance(cmd, Dispatch):
            state_at = states.take(spirv_abi.state_words(cmd.entry.binding_count, cmd.entry.constant_count))
            args_at = args.take(_ARGS_WORDS) if cmd.indirect is not None else None
        elif isinstance(cmd, (Fill, Copy, Update)) and not _word_command(cmd):
            state_at = states.take(4)
        plans.append((cmd, state_at, args_at))
    words = np.zeros(max(states.words, 1), np.uint32)
    flags = device.wgpu.BufferUsage
    with device._lock:
        out.state = device.handle.create_buffer(size=4 * len(words), usage=flags.STORAGE | flags.COPY_DST | flags.COPY_SRC)
        args_buffer = device.handle.create_buffer(size=4 * max(args.words, 1), usage=flags.STORAGE | flags.INDIRECT | flags.COPY_DST)
    args_words = np.zeros(max(args.words, 1), np.uint32)
    failing, segment, index = False, 0, 0
    for cmd, state_at, args_at in plans:
        if isinstance(cmd, Barrier):
            if failing:  # a new segment: what follows waits until this one is known to have succeeded
                out.may_fail.append(True)
                out.segments.append([])
                out.mapped.append({})
                out.written.append({})
                segment, failing = segment + 1, False
            continue
        steps, mapped, written = out.segments[segment], out.mapped[segment], out.written[segment]
        if isinstance(cmd, Dispatch):
            failing = failing or _may_fail(cmd)
            _dispatch(device, out, steps, cmd, words, state_at, args_buffer, args_words, args_at)
            out.checks.append((segment, state_at, index, cmd.entry.name))
            stores = cmd.executable.stores[cmd.entry.function]
            for i, b in enumerate(cmd.bindings):
                _use(b.buffer, mapped, written if stores is None or i in stores else None)
            if cmd.indirect is not None:
                _use(cmd.indirect.buffer, mapped, None)
        elif isinstance(cmd, Fill):
            _fill(device, out, steps, cmd, words, state_at)
            _use(cmd.target.buffer, mapped, written)
        elif isinstance(cmd, Copy):
            _copy(device, out, steps, cmd, words, state_at)
            _use(cmd.source.buffer, mapped, None)
            _use(cmd.target.buffer, mapped, written)
        elif isinstance(cmd, Update):
            _update(device, out, steps, cmd, words, state_at)
            _use(cmd.target.buffer, mapped, written)
        index += 1
    out.may_fail.append(failing)
    out.state_words = words
    out.reset = any(out.may_fail)
    with device._lock:
        device.queue.write_buffer(out.state, 0, words)
        device.queue.write_buffer(args_buffer, 0, args_words)
    out.keepalive.append(args_buffer)
    return out


def _word_command(cmd) -> bool:
    """Whether WebGPU's own copy or clear does the command (whole words; clears only zero)."""
    if isinstance(cmd, Fill):
        return cmd.pattern == 0 and _aligned(cmd.target.offset, cmd.target.length)
    if isinstance(cmd, Copy):
        return _aligned(cmd.source.offset, cmd.target.offset, cmd.target.length)
    return _aligned(cmd.target.offset, cmd.target.length)


def _use(buffer, mapped: dict, written: dict | None) -> None:
    if buffer.host is not None:
        mapped[id(buffer)] = buffer
        if written is not None:
            written[id(buffer)] = buffer


def _group(device, layout, entries: list[tuple[int, object, int, int]]):
    with device._lock:
        return device.handle.create_bind_group(layout=layout, entries=[
            {"binding": i, "resource": {"buffer": buffer, "offset": offset, "size": size}} for i, buffer, offset, size in entries])


def _pass(steps: list, dispatch: tuple) -> None:
    """Appends a dispatch to the compute pass at the end of `steps` (a new one if needed)."""
    if not steps or steps[-1][0] != "pass":
        steps.append(("pass", []))
    steps[-1][1].append(dispatch)


def _span(device, end: int, what: str) -> None:
    """ResourceExhausted where a kernel would address bytes past what one binding may span
    (kernels bind whole buffers and add the range's offset themselves)."""
    if end > device.max_binding_size:
        raise ResourceExhausted(f"webgpu: {what}: its range ends at byte {end}, past the {device.max_binding_size} bytes "
                                f"one storage binding spans on {device.name}")


def _whole(device, binding: Binding, what: str) -> tuple[object, int, int]:
    """A bind-group entry for all of `binding`'s buffer."""
    _span(device, binding.offset + binding.length, what)
    return binding.buffer.handle, 0, min(binding.buffer.padded, device.max_binding_size)


def _dispatch(device, out, steps, d: Dispatch, words, state_at, args_buffer, args_words, args_at) -> None:
    ep = d.entry
    spirv_abi.write_dispatch_state(words, state_at, d)
    nwords = spirv_abi.state_words(ep.binding_count, ep.constant_count)
    state = (out.state, 4 * state_at, 4 * nwords)
    group = _group(device, d.executable.pipelines[ep.function].layout,
                   [(i, *_whole(device, b, f"dispatch '{ep.name}': binding {i}")) for i, b in enumerate(d.bindings)] + [(ep.binding_count, *state)])
    indirect = None
    if d.indirect is not None:
        args_words[args_at + 3: args_at + 5] = (d.indirect.offset // 4, device.limits.max_workgroup_count)
        check = device.builtin("fg_indirect_check")
        check_group = _group(device, check.get_bind_group_layout(0), [(0, *_whole(device, d.indirect, f"dispatch_indirect '{ep.name}'")), (1, *state),
                                                                      (2, args_buffer, 4 * args_at, 4 * _ARGS_WORDS)])
        _pass(steps, (check, check_group, (1, 1, 1), None))
        indirect = (args_buffer, 4 * args_at)
    _pass(steps, (d.executable.pipelines[ep.function].pipeline, group, d.workgroup_count, indirect))
    out.keepalive += [d.executable, d.bindings, d.indirect]


def _bytes_kernel(device, out, steps, name: str, source, source_offset: int, target, words, state_at) -> None:
    """fg_copy (from `source`) or fg_fill over `target`'s range (builtins.py)."""
    words[state_at: state_at + 3] = (source_offset, target.offset, target.length)
    pipeline = device.builtin(name)
    entries = [(1, *_whole(device, target, name)), (2, out.state, 4 * state_at, 16)]
    if source is not None:
        _span(device, source_offset + target.length, name)
        entries.append((0, source, 0, min(source.size, device.max_binding_size)))
    count = -(-(target.offset + target.length) // 4) - target.offset // 4
    _pass(steps, (pipeline, _group(device, pipeline.get_bind_group_layout(0), entries),
                  (max(1, min(-(-count // builtins.WORKGROUP), builtins.MAX_GROUPS)), 1, 1), None))


def _fill(device, out, steps, cmd: Fill, words, state_at) -> None:
    t = cmd.target
    if not t.length:
        return
    if state_at is None:
        steps.append(("clear", t.buffer.handle, t.offset, t.length))
        return
    pattern = int(cmd.pattern) * {1: 0x01010101, 2: 0x00010001, 4: 1}[cmd.pattern_length]
    words[state_at + 3] = pattern
    _bytes_kernel(device, out, steps, "fg_fill", None, 0, t, words, state_at)


def _copy(device, out, steps, cmd: Copy, words, state_at) -> None:
    s, t = cmd.source, cmd.target
    if not t.length:
        return
    source, offset = s.buffer.handle, s.offset
    if s.buffer is t.buffer:  # WebGPU copies between two buffers: the words around the source range go aside first
        first, end = s.offset // 4 * 4, -(-(s.offset + s.length) // 4) * 4
        source = _staging(device, out, end - first)
        steps.append(("copy", s.buffer.handle, first, source, 0, end - first))
        offset = s.offset - first
    if state_at is None:
        steps.append(("copy", source, offset, t.buffer.handle, t.offset, t.length))
    else:
        _bytes_kernel(device, out, steps, "fg_copy", source, offset, t, words, state_at)


def _update(device, out, steps, cmd: Update, words, state_at) -> None:
    t = cmd.target
    if not t.length:
        return
    data = np.zeros(-(-len(cmd.data) // 4) * 4, np.uint8)
    data[: len(cmd.data)] = np.frombuffer(cmd.data, np.uint8)
    staging = _staging(device, out, len(data))
    with device._lock:
        device.queue.write_buffer(staging, 0, data)
    if state_at is None:
        steps.append(("copy", staging, 0, t.buffer.handle, t.offset, t.length))
    else:
        _bytes_kernel(device, out, steps, "fg_copy", staging, 0, t, words, state_at)


def _staging(device, out, size: int):
    flags = device.wgpu.BufferUsage
    with device._lock:
        buffer = device.handle.create_buffer(size=max(4, size), usage=flags.STORAGE | flags.COPY_SRC | flags.COPY_DST)
    out.keepalive.append(buffer)
    return buffer
