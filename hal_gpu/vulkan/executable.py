"""Executables from SPIR-V: a shader module and, per entry point, its descriptor-set layout
(bindings 0..n-1 plus the dispatch state, hal/spirv_abi.py), pipeline layout and compute
pipeline, all created at load time so recording a dispatch creates nothing."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from common.errors import InvalidArgument
from hal.executable import EntryPoint, Executable

SPIRV_MAGIC = bytes.fromhex("03022307")


@dataclass
class Pipeline:
    set_layout: object
    layout: object
    pipeline: object


def _release(device, module, pipelines) -> None:
    if device.closed or device.handle is None:
        return
    v, h = device.vk, device.handle
    for p in pipelines:
        v.vkDestroyPipeline(h, p.pipeline, None)
        v.vkDestroyPipelineLayout(h, p.layout, None)
        v.vkDestroyDescriptorSetLayout(h, p.set_layout, None)
    v.vkDestroyShaderModule(h, module, None)


def load(device, format: str, data: bytes, entry_points: tuple[EntryPoint, ...]) -> Executable:
    v, h = device.vk, device.handle
    if not isinstance(data, (bytes, bytearray)) or len(data) % 4 or not bytes(data[:4]) == SPIRV_MAGIC:
        raise InvalidArgument(f"vulkan: executable data for '{format}' is not a SPIR-V module (magic {bytes(data[:4]).hex() if isinstance(data, (bytes, bytearray)) else type(data).__name__})")
    try:
        module = v.vkCreateShaderModule(h, v.VkShaderModuleCreateInfo(sType=v.VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO, codeSize=len(data), pCode=bytes(data)), None)
    except v.VkException as e:
        raise InvalidArgument(f"vulkan: vkCreateShaderModule rejected the SPIR-V: {type(e).__name__}") from None
    pipelines = []
    try:
        for ep in entry_points:
            bindings = [v.VkDescriptorSetLayoutBinding(binding=i, descriptorType=v.VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, descriptorCount=1,
                                                       stageFlags=v.VK_SHADER_STAGE_COMPUTE_BIT) for i in range(ep.binding_count + 1)]
            set_layout = v.vkCreateDescriptorSetLayout(h, v.VkDescriptorSetLayoutCreateInfo(
                sType=v.VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO, bindingCount=len(bindings), pBindings=bindings), None)
            layout = v.vkCreatePipelineLayout(h, v.VkPipelineLayoutCreateInfo(
                sType=v.VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO, setLayoutCount=1, pSetLayouts=[set_layout]), None)
            stage = v.VkPipelineShaderStageCreateInfo(sType=v.VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                                                      stage=v.VK_SHADER_STAGE_COMPUTE_BIT, module=module, pName=ep.name)
            try:
                pipeline = v.vkCreateComputePipelines(h, v.VK_NULL_HANDLE, 1, [v.VkComputePipelineCreateInfo(
                    sType=v.VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO, stage=stage, layout=layout)], None)[0]
            except v.VkException as e:
                v.vkDestroyPipelineLayout(h, layout, None)
                v.vkDestroyDescriptorSetLayout(h, set_layout, None)
                raise InvalidArgument(f"vulkan: no compute pipeline for entry point '{ep.name}': {type(e).__name__}") from None
            pipelines.append(Pipeline(set_layout, layout, pipeline))
    except BaseException:
        _release(device, module, pipelines)
        raise
    entries = tuple(EntryPoint(ep.name, i, ep.workgroup_size, ep.binding_count, ep.constant_count, ep.binding_dtypes,
                               ep.constant_types, ep.local_memory_size) for i, ep in enumerate(entry_points))
    exe = Executable(entries, format, keepalive=(module, pipelines))
    exe.pipelines = pipelines  # type: ignore[attr-defined]
    exe.may_fail = may_fail(bytes(data), entry_points)  # type: ignore[attr-defined]
    weakref.finalize(exe, _release, device, module, pipelines).atexit = False  # the device goes at exit
    return exe


_OP_ENTRY_POINT, _OP_DECORATE, _OP_FUNCTION, _OP_FUNCTION_END, _OP_FUNCTION_CALL = 15, 71, 54, 56, 57
_BINDING = 33
_DERIVE = {65, 66, 67, 70, 83, 124}  # OpAccessChain, OpInBoundsAccessChain, OpPtrAccessChain,
#                                      OpInBoundsPtrAccessChain, OpCopyObject, OpBitcast: (type, result, base, ...)
_WRITES = {62: 0, 63: 0, 228: 0} | {op: 2 for op in range(229, 243)}  # OpStore, OpCopyMemory, OpAtomicStore (pointer first);
#                                      atomic read-modify-writes (type, result, pointer)


def may_fail(spirv: bytes, entry_points) -> tuple[bool, ...]:
    """Per entry point: whether its kernel can fail, i.e. writes its dispatch-state binding (a
    kernel reports a failure only by storing its status there, hal/spirv_abi.py). The command
    buffer ends a segment only after a region with such a dispatch (command_buffer.py), so the
    compiler's kernels, which never fail, cost no host round trip. Anything this scan does not
    follow (a function call, a module it cannot parse) counts as "can fail"."""
    try:
        words = np.frombuffer(spirv, dtype="<u4")
        names, binding, root, functions = {}, {}, {}, {}
        current, i = None, 5
        while i < len(words):
            count, op = int(words[i]) >> 16, int(words[i]) & 0xFFFF
            if count == 0:
                raise ValueError("bad instruction")
            ops = words[i + 1: i + count]
            if op == _OP_ENTRY_POINT:
                raw = ops[2:].tobytes()
                names[raw[: raw.index(0)].decode()] = int(ops[1])
            elif op == _OP_DECORATE and len(ops) >= 3 and ops[1] == _BINDING:
                binding[int(ops[0])] = int(ops[2])
            elif op == _OP_FUNCTION:
                current = int(ops[1])
                functions[current] = set()
            elif op == _OP_FUNCTION_END:
                current = None
            elif op in _DERIVE and len(ops) >= 3:
                base = int(ops[2])
                root[int(ops[1])] = root.get(base, base)
            elif current is not None and op == _OP_FUNCTION_CALL:
                functions[current].add(None)  # unknown: assume it writes anything
            elif current is not None and op in _WRITES and len(ops) > _WRITES[op]:
                pointer = int(ops[_WRITES[op]])
                functions[current].add(binding.get(root.get(pointer, pointer), -1))
            i += count
        out = []
        for ep in entry_points:
            written = functions[names[ep.name]]
            out.append(None in written or ep.binding_count in written)
        return tuple(out)
    except Exception:  # noqa: BLE001 - unknown shape: every entry may fail
        return tuple(True for _ in entry_points)
