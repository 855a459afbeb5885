"""Command buffers translated to a VkCommandBuffer once, at `end()`.

- dispatch: bind the entry's pipeline and a descriptor set (the bindings as whole buffers, and
  this dispatch's region of the command buffer's dispatch-state buffer: workgroup count, binding
  offsets and lengths, constants; hal/spirv_abi.py), then vkCmdDispatch.
- dispatch_indirect: a built-in kernel (builtins.py) copies the three count words from the
  indirect buffer into the dispatch's state, zeroed and flagged when over the device limit; the
  kernel reads its workgroup count there and vkCmdDispatchIndirect reads it from there too.
- fill: vkCmdFillBuffer where offset and length are 4-byte multiples (the pattern repeated to 32
  bits); anything else, and every `update`, copies from a host-visible staging buffer written
  at record time (the data is known then, and a reusable command buffer replays it).
- copy: vkCmdCopyBuffer.
- execution_barrier: a global memory barrier, compute and transfer writes -> compute, transfer
  and indirect reads: the commands of one region still overlap, as the model allows.
- the end: a barrier that makes the device's writes visible to the host, so a host that waited
  on the submission's semaphore reads results from mapped memory with no further step.
- with the device's timestamps on, a timestamp query before and after every dispatch
  (timestamps.py), for the profiler.

Segments: a command buffer is recorded as one VkCommandBuffer per *segment*; a new segment starts
at every execution barrier that follows a dispatch of the current segment that may fail (an
indirect one, or a kernel that can store a status: executable.py `may_fail`; the compiler's
region kernels cannot, so a compiled module's command buffer stays one segment). A kernel fails by
storing a status word, which only the host reads, and Vulkan cannot skip a fill or a copy on a
condition the GPU computes; so the device (device.py) hands segment k+1 to the GPU only once
segment k is known to have succeeded, and a failure skips everything after the failing region,
as on the CPU drivers. Commands of one region never wait for the host.

Why not an early-out word checked in every kernel's prologue (a per-submission "failed" word in
device memory, as IREE could do): it would skip later dispatches but not fills, copies and
updates, which Vulkan runs unconditionally; the word is read per invocation, so a workgroup
could split on it around a workgroup barrier (undefined behaviour) unless the prologue added a
barrier of its own; and kernels compiled before would need recompiling. The host round trip it
saves only happens after a region whose kernel can fail at all.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np

from hal import spirv_abi
from hal.buffer import BufferUsage
from hal.command_buffer import Barrier, CommandBuffer, Copy, Dispatch, Fill, Update
from hal_gpu.vulkan import timestamps

WHOLE_SIZE = (1 << 64) - 1  # VK_WHOLE_SIZE (the binding exposes it as -1, which cffi refuses)


@dataclass
class LoweredCommandBuffer:
    handles: list  # one VkCommandBuffer per segment
    pool: object
    status: "_StatusView"  # one status word per dispatch, in the state buffer
    dispatches: list[tuple[int, str]]  # (command index, entry name), as `status`
    keepalive: list = field(default_factory=list)
    may_fail: list = field(default_factory=list)  # per segment: whether a dispatch in it may fail
    queries: timestamps.QuerySlots | None = None  # with the device's timestamps on


def _may_fail(d: Dispatch) -> bool:
    """Whether the dispatch may fail: an indirect one (its count may be out of range), or a
    kernel that writes its status word (executable.py `may_fail`)."""
    flags = getattr(d.executable, "may_fail", None)
    return d.indirect is not None or flags is None or bool(flags[d.entry.function])


def _release(device, handles, pool, queries) -> None:
    if device.closed or device.handle is None:
        return
    with device._lock:
        device.vk.vkFreeCommandBuffers(device.handle, device.command_pool, len(handles), handles)
        if pool is not None:
            device.vk.vkDestroyDescriptorPool(device.handle, pool, None)
        if queries is not None:
            device.vk.vkDestroyQueryPool(device.handle, queries.pool, None)


def _barrier(v, cb, src_stage, src_access, dst_stage, dst_access) -> None:
    barrier = v.VkMemoryBarrier(sType=v.VK_STRUCTURE_TYPE_MEMORY_BARRIER, srcAccessMask=src_access, dstAccessMask=dst_access)
    v.vkCmdPipelineBarrier(cb, src_stage, dst_stage, 0, 1, [barrier], 0, None, 0, None)


def lower(device, cb: CommandBuffer) -> LoweredCommandBuffer:
    v, h = device.vk, device.handle
    dispatches = [c for c in cb.commands if isinstance(c, Dispatch)]
    align = max(4, device.properties.limits.minStorageBufferOffsetAlignment)
    regions, checks, offset = [], [], 0
    for d in dispatches:
        regions.append(offset)
        words = spirv_abi.state_words(d.entry.binding_count, d.entry.constant_count)
        offset += -(-4 * words // align) * align
        if d.indirect is not None:  # the built-in count check's own state
            checks.append(offset)
            offset += -(-4 * spirv_abi.state_words(2, 1) // align) * align
    keep: list = []
    state = device.allocator.allocate_buffer(max(offset, 4), BufferUsage.DEFAULT)
    words = state.view(np.uint32)
    keep.append(state)
    pool = None
    if dispatches:
        count = sum(d.entry.binding_count + 1 for d in dispatches) + 3 * len(checks)
        pool = v.vkCreateDescriptorPool(h, v.VkDescriptorPoolCreateInfo(
            sType=v.VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO, maxSets=len(dispatches) + len(checks), poolSizeCount=1,
            pPoolSizes=[v.VkDescriptorPoolSize(type=v.VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, descriptorCount=count)]), None)
    # Segments: split at a barrier after a dispatch of the current segment that may fail
    # (module docstring).
    splits, may_fail, failing = [], [], False
    for i, cmd in enumerate(cb.commands):
        if isinstance(cmd, Barrier) and failing:
            splits.append(i)
            may_fail.append(True)
            failing = False
        elif isinstance(cmd, Dispatch) and _may_fail(cmd):
            failing = True
    may_fail.append(failing)
    split_at = set(splits)
    with device._lock:
        handles = list(v.vkAllocateCommandBuffers(h, v.VkCommandBufferAllocateInfo(
            sType=v.VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, commandPool=device.command_pool,
            level=v.VK_COMMAND_BUFFER_LEVEL_PRIMARY, commandBufferCount=len(splits) + 1)))
    lowered = LoweredCommandBuffer(handles, pool, _StatusView(words, [r // 4 + spirv_abi.STATUS for r in regions]), [], keep)
    lowered.may_fail = may_fail
    if device.timestamps is not None and dispatches:
        lowered.queries = _query_slots(device, cb.commands, split_at, len(splits) + 1)
    weakref.finalize(lowered, _release, device, handles, pool, lowered.queries).atexit = False  # the device goes at exit

    all_stages = v.VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | v.VK_PIPELINE_STAGE_TRANSFER_BIT
    writes = v.VK_ACCESS_SHADER_WRITE_BIT | v.VK_ACCESS_TRANSFER_WRITE_BIT
    reads = v.VK_ACCESS_SHADER_READ_BIT | v.VK_ACCESS_SHADER_WRITE_BIT | v.VK_ACCESS_TRANSFER_READ_BIT | v.VK_ACCESS_TRANSFER_WRITE_BIT | v.VK_ACCESS_INDIRECT_COMMAND_READ_BIT
    begin = v.VkCommandBufferBeginInfo(sType=v.VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO, flags=v.VK_COMMAND_BUFFER_USAGE_SIMULTANEOUS_USE_BIT)
    segment = 0
    handle = handles[0]
    v.vkBeginCommandBuffer(handle, begin)
    queries = lowered.queries
    _reset_queries(v, handle, queries, 0)
    index = 0
    di = 0
    check_regions = iter(checks)
    for i, cmd in enumerate(cb.commands):
        if i in split_at:
            _barrier(v, handle, all_stages, writes, v.VK_PIPELINE_STAGE_HOST_BIT, v.VK_ACCESS_HOST_READ_BIT)
            v.vkEndCommandBuffer(handle)
            segment += 1
            handle = handles[segment]
            v.vkBeginCommandBuffer(handle, begin)
            _reset_queries(v, handle, queries, segment)
        if isinstance(cmd, Barrier):
            _barrier(v, handle, all_stages, writes, all_stages | v.VK_PIPELINE_STAGE_DRAW_INDIRECT_BIT, reads)
            continue
        if isinstance(cmd, Dispatch):
            if cmd.indirect is not None:
                _record_indirect_check(device, handle, cmd, state, words, regions[di], next(check_regions), pool)
            if queries is not None:
                v.vkCmdWriteTimestamp(handle, v.VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, queries.pool, 2 * di)
            _record_dispatch(device, handle, cmd, state, words, regions[di], pool, keep)
            if queries is not None:
                v.vkCmdWriteTimestamp(handle, v.VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, queries.pool, 2 * di + 1)
            lowered.dispatches.append((index, cmd.entry.name))
            di += 1
        elif isinstance(cmd, Fill):
            _record_fill(device, handle, cmd, keep)
        elif isinstance(cmd, Copy):
            if cmd.target.length:
                v.vkCmdCopyBuffer(handle, cmd.source.buffer.handle, cmd.target.buffer.handle, 1,
                                  [v.VkBufferCopy(srcOffset=cmd.source.offset, dstOffset=cmd.target.offset, size=cmd.target.length)])
            keep += [cmd.source.buffer, cmd.target.buffer]
        elif isinstance(cmd, Update):
            _copy_from_staging(device, handle, cmd.data, cmd.target, keep)
        index += 1
    _barrier(v, handle, all_stages, writes, v.VK_PIPELINE_STAGE_HOST_BIT, v.VK_ACCESS_HOST_READ_BIT)
    v.vkEndCommandBuffer(handle)
    return lowered


def _query_slots(device, commands: list, split_at: set[int], segments: int) -> timestamps.QuerySlots:
    """Two timestamp queries per dispatch, and the dispatches of each segment."""
    bounds, workgroups = [0], []
    for i, cmd in enumerate(commands):
        if i in split_at:
            bounds.append(len(workgroups))
        if isinstance(cmd, Dispatch):
            workgroups.append(timestamps.workgroups_of(cmd))
    bounds.append(len(workgroups))
    ranges = [range(bounds[j], bounds[j + 1]) for j in range(segments)]
    return timestamps.QuerySlots(timestamps.create_pool(device, 2 * len(workgroups)), ranges, workgroups)


def _reset_queries(v, handle, queries: timestamps.QuerySlots | None, segment: int) -> None:
    if queries is not None and len(queries.segments[segment]):
        numbers = queries.segments[segment]
        v.vkCmdResetQueryPool(handle, queries.pool, 2 * numbers.start, 2 * len(numbers))


class _StatusView:
    """The dispatches' status words inside the state buffer (reset before every submission)."""

    def __init__(self, words: np.ndarray, indices: list[int]) -> None:
        self.words, self.indices = words, np.array(indices, dtype=np.int64)

    def reset(self) -> None:
        if len(self.indices):
            self.words[self.indices] = 0
            self.words[self.indices - spirv_abi.STATUS + spirv_abi.INDIRECT_RANGE] = 0

    def failed(self) -> list[tuple[int, int, tuple[int, int, int]]]:
        """(dispatch number, status, failing workgroup) of every dispatch that failed."""
        if not len(self.indices):
            return []
        values = self.words[self.indices].view(np.int32)
        ranges = self.words[self.indices - spirv_abi.STATUS + spirv_abi.INDIRECT_RANGE]
        out = []
        for i in np.flatnonzero(values | ranges.view(np.int32)):
            at = self.indices[i] - spirv_abi.STATUS + spirv_abi.FAILED_WORKGROUP
            status = None if ranges[i] else int(values[i])  # None: the indirect count was out of range
            out.append((int(i), status, tuple(int(w) for w in self.words[at: at + 3])))
        return out


def _record_dispatch(device, handle, d: Dispatch, state, words: np.ndarray, region: int, pool, keep: list) -> None:
    v, h = device.vk, device.handle
    ep = d.entry
    pipe = d.executable.pipelines[ep.function]
    base = region // 4
    spirv_abi.write_dispatch_state(words, base, d)
    words[base + spirv_abi.STATUS] = 0
    nwords = spirv_abi.state_words(ep.binding_count, ep.constant_count)
    dset = v.vkAllocateDescriptorSets(h, v.VkDescriptorSetAllocateInfo(
        sType=v.VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO, descriptorPool=pool, descriptorSetCount=1, pSetLayouts=[pipe.set_layout]))[0]
    infos = [v.VkDescriptorBufferInfo(buffer=b.buffer.handle, offset=0, range=WHOLE_SIZE) for b in d.bindings]
    infos.append(v.VkDescriptorBufferInfo(buffer=state.handle, offset=region, range=4 * nwords))
    writes = [v.VkWriteDescriptorSet(sType=v.VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, dstSet=dset, dstBinding=i, descriptorCount=1,
                                     descriptorType=v.VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, pBufferInfo=[info]) for i, info in enumerate(infos)]
    v.vkUpdateDescriptorSets(h, len(writes), writes, 0, None)
    v.vkCmdBindPipeline(handle, v.VK_PIPELINE_BIND_POINT_COMPUTE, pipe.pipeline)
    v.vkCmdBindDescriptorSets(handle, v.VK_PIPELINE_BIND_POINT_COMPUTE, pipe.layout, 0, 1, [dset], 0, None)
    if d.indirect is not None:
        # The count the check copied into this dispatch's state (zeros if it was out of range).
        v.vkCmdDispatchIndirect(handle, state.handle, region + 4 * spirv_abi.WORKGROUP_COUNT)
        keep.append(d.indirect.buffer)
    else:
        v.vkCmdDispatch(handle, *d.workgroup_count)
    keep += [d.executable, [b.buffer for b in d.bindings]]


def _record_indirect_check(device, handle, d: Dispatch, state, words: np.ndarray, target: int, region: int, pool) -> None:
    """The built-in check (builtins.py) that moves an indirect count into the dispatch's state."""
    v, h = device.vk, device.handle
    exe = device.builtin_executable()
    pipe = exe.pipelines[0]
    base = region // 4
    words[base + spirv_abi.WORKGROUP_COUNT: base + 3] = 1
    words[base + spirv_abi.binding_offset_word(0)] = d.indirect.offset // 4
    words[base + spirv_abi.binding_length_word(0)] = 3
    nwords = spirv_abi.state_words(d.entry.binding_count, d.entry.constant_count)
    words[base + spirv_abi.binding_offset_word(1)] = 0
    words[base + spirv_abi.binding_length_word(1)] = nwords
    words[base + spirv_abi.constant_word(2, 0)] = device.limits.max_workgroup_count
    dset = v.vkAllocateDescriptorSets(h, v.VkDescriptorSetAllocateInfo(
        sType=v.VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO, descriptorPool=pool, descriptorSetCount=1, pSetLayouts=[pipe.set_layout]))[0]
    infos = [v.VkDescriptorBufferInfo(buffer=d.indirect.buffer.handle, offset=0, range=WHOLE_SIZE),
             v.VkDescriptorBufferInfo(buffer=state.handle, offset=target, range=4 * nwords),
             v.VkDescriptorBufferInfo(buffer=state.handle, offset=region, range=4 * spirv_abi.state_words(2, 1))]
    writes = [v.VkWriteDescriptorSet(sType=v.VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, dstSet=dset, dstBinding=i, descriptorCount=1,
                                     descriptorType=v.VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, pBufferInfo=[info]) for i, info in enumerate(infos)]
    v.vkUpdateDescriptorSets(h, len(writes), writes, 0, None)
    v.vkCmdBindPipeline(handle, v.VK_PIPELINE_BIND_POINT_COMPUTE, pipe.pipeline)
    v.vkCmdBindDescriptorSets(handle, v.VK_PIPELINE_BIND_POINT_COMPUTE, pipe.layout, 0, 1, [dset], 0, None)
    v.vkCmdDispatch(handle, 1, 1, 1)
    _barrier(v, handle, v.VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, v.VK_ACCESS_SHADER_WRITE_BIT,
             v.VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | v.VK_PIPELINE_STAGE_DRAW_INDIRECT_BIT,
             v.VK_ACCESS_SHADER_READ_BIT | v.VK_ACCESS_INDIRECT_COMMAND_READ_BIT)


def _copy_from_staging(device, handle, data: bytes, target, keep: list) -> None:
    if not target.length:
        return
    v = device.vk
    staging = device.allocator.allocate_buffer(len(data), BufferUsage.DEFAULT)
    staging.write(np.frombuffer(data, dtype=np.uint8))
    v.vkCmdCopyBuffer(handle, staging.handle, target.buffer.handle, 1, [v.VkBufferCopy(srcOffset=0, dstOffset=target.offset, size=target.length)])
    keep += [staging, target.buffer]


def _record_fill(device, handle, cmd: Fill, keep: list) -> None:
    v = device.vk
    t = cmd.target
    pattern = int(cmd.pattern)
    if cmd.pattern_length == 1:
        pattern *= 0x01010101
    elif cmd.pattern_length == 2:
        pattern |= pattern << 16
    if t.offset % 4 == 0 and t.length % 4 == 0:
        if t.length:
            v.vkCmdFillBuffer(handle, t.buffer.handle, t.offset, t.length, pattern)
        keep.append(t.buffer)
        return
    # Unaligned ranges (1- and 2-byte patterns): the bytes are known now; copy them in.
    data = np.frombuffer(np.array([cmd.pattern], dtype=f"<u{cmd.pattern_length}").tobytes() * (t.length // cmd.pattern_length), dtype=np.uint8)
    _copy_from_staging(device, handle, data.tobytes(), t, keep)
