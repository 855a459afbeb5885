"""Executables from SPIR-V: a shader module and, per entry point, its descriptor-set layout
(bindings 0..n-1 plus the dispatch state, hal/spirv_abi.py), pipeline layout and compute
pipeline, all created at load time so recording a dispatch creates nothing."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace

from common.errors import InvalidArgument
from hal.executable import EntryPoint, Executable
from hal.spirv_abi import stored_bindings

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
    entries = tuple(replace(ep, function=i) for i, ep in enumerate(entry_points))
    exe = Executable(entries, format, keepalive=(module, pipelines))
    exe.pipelines = pipelines  # type: ignore[attr-defined]
    exe.may_fail = may_fail(bytes(data), entry_points)  # type: ignore[attr-defined]
    weakref.finalize(exe, _release, device, module, pipelines).atexit = False  # the device goes at exit
    return exe


def may_fail(spirv: bytes, entry_points) -> tuple[bool, ...]:
    """Per entry point: whether its kernel can fail, i.e. writes its dispatch-state binding (a
    kernel reports a failure only by storing its status there, hal/spirv_abi.py). The command
    buffer ends a segment only after a region with such a dispatch (command_buffer.py), so the
    compiler's kernels, which never fail, cost no host round trip. Anything this scan does not
    follow (a function call, a module it cannot parse) counts as "can fail"."""
    stores = stored_bindings(spirv, [ep.name for ep in entry_points])
    return tuple(written is None or ep.binding_count in written for written, ep in zip(stores, entry_points))
