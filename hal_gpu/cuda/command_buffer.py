"""Command buffers recorded as CUDA graphs at `end()` and replayed whole (IREE's CUDA graph
command buffer): one graph launch per submission of a command buffer, however many commands.

- dispatch: a kernel node (the bindings' base addresses and this dispatch's region of the
  command buffer's state buffer as parameters; offsets, lengths, constants and the workgroup
  count in the state words, hal/ptx_abi.py).
- dispatch_indirect: a kernel node whose grid is set when its step is launched, from the count
  the host reads then (every earlier region has completed: a step boundary precedes it); a zero
  count disables the node, one over the device limit fails the submission naming it.
- fill: a memset node; update: a copy from pinned memory holding the data (written at record
  time); copy: a memcpy node.
- host-visible buffers (buffer.py): copies of their mirrors into device memory before the
  first region, and of the ranges the commands may write back after the last.
- execution_barrier: graph edges (through an empty node) from every node of a region to every
  node of the next, so commands of one region still overlap, as the model allows.

Steps: a new graph starts after every region with a dispatch that may fail (a kernel that writes
its status, executable.py `written`; compiled models' kernels mostly cannot) and before every
region with an indirect dispatch. A graph with a dispatch that may fail ends by copying the
state words to pinned memory, and the device launches what follows only once the host saw those
words clear (device.py), so a failure skips every later command, as on the CPU drivers.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np

from hal import spirv_abi as abi
from hal.buffer import BufferUsage
from hal.command_buffer import Barrier, CommandBuffer, Copy, Dispatch, Fill, Update
from hal_gpu.cuda.driver import check, cu, make_current

DEVICE_ONLY = BufferUsage.TRANSFER | BufferUsage.DISPATCH_STORAGE


@dataclass
class Indirect:
    """An indirect dispatch's kernel node, set up at launch (`prepare`)."""

    node: object
    dispatch: Dispatch
    number: int  # dispatch number in the command buffer
    base: int  # its state region, in words
    params: object  # CUDA_KERNEL_NODE_PARAMS, grid updated per launch


@dataclass
class Part:
    """One graph of a command buffer: the regions between two step boundaries."""

    graph: object
    exec: object  # None when the part has nothing to run
    may_fail: bool
    dispatches: list[int]  # dispatch numbers whose status this part reports
    indirect: list[Indirect]


@dataclass
class LoweredCommandBuffer:
    parts: list[Part]
    state: object  # device buffer of state words
    mirror: np.ndarray  # uint32 words in pinned memory: written at record time, read after failures
    bases: list[int]  # per dispatch: its state region, in words
    dispatches: list[tuple[int, str]]  # per dispatch: (command index, entry name)
    keep: list = field(default_factory=list)
    steps: list = field(default_factory=list)  # a submission of this command buffer alone, in steps (device.py)

    def failures(self, part: Part) -> list[tuple[int, int, tuple[int, int, int]]]:
        """(dispatch number, status, failing workgroup) of every dispatch of `part` that failed
        (read from the mirror the part's graph copied the state into)."""
        out = []
        for n in part.dispatches:
            base = self.bases[n]
            status = int(self.mirror[base + abi.STATUS: base + abi.STATUS + 1].view(np.int32)[0])
            if status:
                at = base + abi.FAILED_WORKGROUP
                out.append((n, status, tuple(int(w) for w in self.mirror[at: at + 3])))
        return out

    def clear(self, device) -> None:
        """Zeroes the status words after a failure, so the command buffer can run again."""
        for base in self.bases:
            self.mirror[base + abi.STATUS] = 0
        check(cu().cuMemcpyHtoD(self.state.device_address, self.mirror.ctypes.data, self.mirror.nbytes), "clearing kernel status")


def _release(device, parts: list[Part]) -> None:
    d = cu()
    try:
        make_current(device.context)
        for p in parts:
            if p.exec is not None:
                d.cuGraphExecDestroy(p.exec)
            d.cuGraphDestroy(p.graph)
    except Exception:  # noqa: BLE001 - a finalizer never raises
        pass


def _parts(cb: CommandBuffer) -> list[tuple[list[list], bool]]:
    """The command buffer's regions grouped into parts (module docstring), with whether each
    part may fail."""
    parts: list[tuple[list[list], bool]] = []
    current: list[list] = []
    for region in cb.regions():
        if current and any(isinstance(c, Dispatch) and c.indirect is not None for c in region):
            parts.append((current, False))
            current = []
        current.append(region)
        if any(isinstance(c, Dispatch) and _may_fail(c) for c in region):
            parts.append((current, True))
            current = []
    if current or not parts:
        parts.append((current, False))
    return parts


def _written(d: Dispatch) -> tuple[bool, ...]:
    """Per binding, then the dispatch state: whether the kernel may write it (executable.py)."""
    flags = getattr(d.executable, "written", None)
    return (True,) * (d.entry.binding_count + 1) if flags is None else flags[d.entry.function]


def _may_fail(d: Dispatch) -> bool:
    return _written(d)[-1]


def lower(device, cb: CommandBuffer) -> LoweredCommandBuffer:
    d = cu()
    device.enter()
    dispatches = [c for c in cb.commands if isinstance(c, Dispatch)]
    bases, words = [], 0
    for disp in dispatches:
        bases.append(words)
        words += -(-abi.state_words(disp.entry.binding_count, disp.entry.constant_count) // 4) * 4  # 16-byte regions
    state = device.allocator.allocate_buffer(4 * max(words, 1), DEVICE_ONLY)
    mirror_buffer = device.allocator.pinned(4 * max(words, 1))
    mirror = mirror_buffer.view(np.uint32)
    lowered = LoweredCommandBuffer([], state, mirror, bases, [], [state, mirror_buffer])
    numbers = {id(c): i for i, c in enumerate(dispatches)}
    index = 0
    for c in cb.commands:
        if isinstance(c, Dispatch):
            lowered.dispatches.append((index, c.entry.name))
        if not isinstance(c, Barrier):
            index += 1
    for disp, base in zip(dispatches, bases):
        abi.write_dispatch_state(mirror, base, disp)
    check(d.cuMemcpyHtoD(state.device_address, mirror.ctypes.data, mirror.nbytes), "uploading dispatch state")
    for regions, may_fail in _parts(cb):
        graph = check(d.cuGraphCreate(0), "cuGraphCreate")
        part = Part(graph, None, may_fail, [], [])
        mirrored = _mirrored_ranges(regions)
        # Host-visible buffers: their mirrors in first, the ranges the part may write back last.
        deps = [_copy_node(device, graph, [], b.address + lo, b.device_address + lo, hi - lo) for b, lo, hi, _, _ in mirrored]
        deps = _join(graph, deps)
        for r, region in enumerate(regions):
            nodes = [n for c in region if (n := _add(device, graph, deps, c, lowered, part, numbers, r == 0)) is not None]
            if nodes:
                deps = _join(graph, nodes)
        tail = [_copy_node(device, graph, deps, b.device_address + lo, b.address + lo, hi - lo)
                for b, _, _, lo, hi in mirrored if hi is not None]
        if may_fail:
            tail.append(_copy_node(device, graph, deps, state.device_address, mirror_buffer.address, mirror.nbytes))
        if deps or tail:  # else nothing to run (empty command buffer, empty ranges): no graph
            part.exec = check(d.cuGraphInstantiate(graph, 0), "cuGraphInstantiate")
        lowered.parts.append(part)
    weakref.finalize(lowered, _release, device, lowered.parts).atexit = False
    return lowered


def _join(graph, nodes: list) -> list:
    """What the next region depends on: the node, or an empty node after all of them (a
    barrier: one edge per node instead of one per pair)."""
    return nodes if len(nodes) <= 1 else [check(cu().cuGraphAddEmptyNode(graph, nodes, len(nodes)), "barrier")]


def _mirrored_ranges(regions: list[list]) -> list[list]:
    """Per host-visible buffer the part uses: [buffer, lo, hi, written lo, written hi] (byte
    ranges; written None when nothing in the part writes it)."""
    found: dict[int, list] = {}

    def use(buffer, offset: int, length: int, writes: bool) -> None:
        if not buffer.mirrored or not length:
            return
        u = found.setdefault(id(buffer), [buffer, offset, offset + length, None, None])
        u[1], u[2] = min(u[1], offset), max(u[2], offset + length)
        if writes:
            u[3] = offset if u[3] is None else min(u[3], offset)
            u[4] = offset + length if u[4] is None else max(u[4], offset + length)

    for region in regions:
        for c in region:
            if isinstance(c, Dispatch):
                for b, writes in zip(c.bindings, _written(c)):
                    use(b.buffer, b.offset, b.length, writes)
            elif isinstance(c, Copy):
                use(c.source.buffer, c.source.offset, c.source.length, False)
                use(c.target.buffer, c.target.offset, c.target.length, True)
            else:
                use(c.target.buffer, c.target.offset, c.target.length, True)
    return list(found.values())


def _add(device, graph, deps: list, c, lowered: LoweredCommandBuffer, part: Part, numbers: dict, first_region: bool):
    """The graph node of command `c` (None for an empty range)."""
    d = cu()
    if isinstance(c, Dispatch):
        n = numbers[id(c)]
        base = lowered.bases[n]
        ep = c.entry
        args = np.array([b.buffer.device_address for b in c.bindings] + [lowered.state.device_address + 4 * base], dtype=np.uint64)
        pointers = np.array([args.ctypes.data + 8 * i for i in range(len(args))], dtype=np.uint64)
        lowered.keep += [args, pointers, c.executable, [b.buffer for b in c.bindings]]
        params = d.CUDA_KERNEL_NODE_PARAMS()
        params.func = c.executable.functions[ep.function]
        params.gridDimX, params.gridDimY, params.gridDimZ = (c.workgroup_count if c.indirect is None else (1, 1, 1))
        params.blockDimX, params.blockDimY, params.blockDimZ = ep.workgroup_size
        params.sharedMemBytes = 0
        params.kernelParams = int(pointers.ctypes.data)
        node = check(d.cuGraphAddKernelNode(graph, deps, len(deps), params), f"dispatch '{ep.name}'")
        if part.may_fail:
            part.dispatches.append(n)
        if c.indirect is not None:
            assert first_region  # _parts starts a part at every region with an indirect dispatch
            part.indirect.append(Indirect(node, c, n, base, params))
            lowered.keep.append(c.indirect.buffer)
        return node
    if isinstance(c, Copy):
        lowered.keep += [c.source.buffer, c.target.buffer]
        if not c.target.length:
            return None
        return _copy_node(device, graph, deps, c.source.buffer.device_address + c.source.offset,
                          c.target.buffer.device_address + c.target.offset, c.target.length)
    if isinstance(c, Update):
        return _from_staging(device, graph, deps, c.data, c.target, lowered)
    if isinstance(c, Fill):
        t = c.target
        lowered.keep.append(t.buffer)
        if not t.length:
            return None
        params = d.CUDA_MEMSET_NODE_PARAMS()
        params.dst = t.buffer.device_address + t.offset
        params.elementSize = c.pattern_length
        params.width = t.length // c.pattern_length
        params.height = 1
        params.pitch = t.length
        params.value = c.pattern
        return check(d.cuGraphAddMemsetNode(graph, deps, len(deps), params, device.context), "fill")
    raise AssertionError(f"unknown command {c!r}")


def _from_staging(device, graph, deps: list, data: bytes, target, lowered: LoweredCommandBuffer):
    if not target.length:
        return None
    staging = device.allocator.pinned(len(data))
    staging.map()[:] = np.frombuffer(data, dtype=np.uint8)
    lowered.keep += [staging, target.buffer]
    return _copy_node(device, graph, deps, staging.address, target.buffer.device_address + target.offset, target.length)


def _copy_node(device, graph, deps: list, source: int, target: int, length: int):
    d = cu()
    params = d.CUDA_MEMCPY3D()
    params.srcMemoryType = d.CUmemorytype.CU_MEMORYTYPE_UNIFIED
    params.srcDevice = source
    params.dstMemoryType = d.CUmemorytype.CU_MEMORYTYPE_UNIFIED
    params.dstDevice = target
    params.WidthInBytes = length
    params.Height = 1
    params.Depth = 1
    return check(d.cuGraphAddMemcpyNode(graph, deps, len(deps), params, device.context), "copy")


def prepare(device, cb: CommandBuffer, part: Part) -> str | None:
    """Sets the grids of `part`'s indirect dispatches from the counts in their buffers, read now
    (every earlier region has completed); the error of a count over the device limit, or None."""
    d = cu()
    lowered: LoweredCommandBuffer = cb.lowered
    for ind in part.indirect:
        source = ind.dispatch.indirect
        count = np.zeros(3, np.uint32)
        if source.buffer.address is not None:
            count[:] = source.buffer.view(np.uint32, 3, source.offset)
        else:
            check(d.cuMemcpyDtoH(count.ctypes.data, source.buffer.device_address + source.offset, 12), "reading an indirect count")
        index, name = lowered.dispatches[ind.number]
        if int(count.max()) > device.limits.max_workgroup_count:
            return (f"dispatch_indirect '{name}' (command {index} of command buffer #{cb.id}): workgroup count "
                    f"{tuple(int(c) for c in count)} read from its buffer is out of range (limit {device.limits.max_workgroup_count})")
        check(d.cuGraphNodeSetEnabled(part.exec, ind.node, int(bool(count.all()))), "dispatch_indirect")
        if count.all():
            ind.params.gridDimX, ind.params.gridDimY, ind.params.gridDimZ = (int(c) for c in count)
            check(d.cuGraphExecKernelNodeSetParams(part.exec, ind.node, ind.params), "dispatch_indirect")
            lowered.mirror[ind.base + abi.WORKGROUP_COUNT: ind.base + 3] = count
            check(d.cuMemcpyHtoDAsync(lowered.state.device_address + 4 * ind.base, lowered.mirror.ctypes.data + 4 * ind.base, 12,
                                      device.stream), "dispatch_indirect")
    return None
