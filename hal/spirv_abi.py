"""The Vulkan kernel ABI: the contract between SPIR-V kernels (compiler/codegen/spirv) and the
Vulkan driver (hal_gpu/vulkan), as `hal.abi` is for CPU kernels.

A kernel with n bindings sees, in descriptor set 0:

    binding 0..n-1   storage buffers: each a whole VkBuffer (the driver binds offset 0)
    binding n        the dispatch state, a storage buffer of uint32 words:
        [0..2]       workgroup_count x, y, z (copied from the indirect buffer for
                     dispatch_indirect before the dispatch runs)
        [3]          status: 0; a kernel that fails stores a non-zero status here
        [4..6]       the failing workgroup's id (stored with the status); for dispatch_indirect,
                     the count read from the indirect buffer
        [7]          1 when that count was over the device limit (the dispatch then runs none)
        [8 + 2i]     binding i's offset in its buffer, in elements of the binding's type
        [9 + 2i]     binding i's length, in elements
        [8 + 2n + j] constant j (a 32-bit word, as on the CPU)

A kernel writes the dispatch state only to report a failure (words 3..6): the Vulkan driver
scans a module's SPIR-V for stores to binding n to learn which entry points can fail, and ends
a GPU submission after their regions so that a failure skips the rest (hal_gpu/vulkan/
command_buffer.py); a kernel that stored anything else there would only cost that round trip.

Why the binding ranges travel as data and not as descriptor offsets: Vulkan requires descriptor
offsets aligned to minStorageBufferOffsetAlignment (16 to 256 bytes), the model allows any
element-aligned offset, and kernels need the lengths anyway (the CPU ABI gives them too).
Why constants are not push constants: LLVM 22's SPIR-V backend, which writes our kernels, has no
way to declare a push-constant block from LLVM IR; one storage-buffer read per constant per
invocation is cached and costs nothing next to a dispatch.
"""

from __future__ import annotations

FORMAT = "vulkan-spirv1.6"  # executable format tag: SPIR-V 1.6 for Vulkan 1.3, this ABI

WORKGROUP_COUNT = 0
STATUS = 3
FAILED_WORKGROUP = 4
INDIRECT_RANGE = 7
HEADER_WORDS = 8


def binding_offset_word(i: int) -> int:
    return HEADER_WORDS + 2 * i


def binding_length_word(i: int) -> int:
    return HEADER_WORDS + 2 * i + 1


def constant_word(binding_count: int, j: int) -> int:
    return HEADER_WORDS + 2 * binding_count + j


def state_words(binding_count: int, constant_count: int) -> int:
    return HEADER_WORDS + 2 * binding_count + constant_count
