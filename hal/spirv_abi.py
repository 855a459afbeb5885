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

import numpy as np

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


def write_dispatch_state(words: np.ndarray, base: int, dispatch) -> None:
    """A dispatch's state (from word `base` of `words`, uint32): its workgroup count, its
    bindings' offsets and lengths in elements of their dtypes, its constants. The status
    words are the driver's to reset before each run."""
    ep = dispatch.entry
    words[base + WORKGROUP_COUNT: base + WORKGROUP_COUNT + 3] = dispatch.workgroup_count
    for i, b in enumerate(dispatch.bindings):
        size = ep.binding_dtypes[i].itemsize if i < len(ep.binding_dtypes) and ep.binding_dtypes[i] is not None else 1
        words[base + binding_offset_word(i)] = b.offset // size
        words[base + binding_length_word(i)] = b.length // size
    if ep.constant_count:
        start = base + constant_word(ep.binding_count, 0)
        words[start: start + ep.constant_count] = dispatch.constants


_OP_ENTRY_POINT, _OP_DECORATE, _OP_FUNCTION, _OP_FUNCTION_END, _OP_FUNCTION_CALL = 15, 71, 54, 56, 57
_BINDING = 33
_DERIVE = {65, 66, 67, 70, 83, 124}  # OpAccessChain, OpInBoundsAccessChain, OpPtrAccessChain,
#                                      OpInBoundsPtrAccessChain, OpCopyObject, OpBitcast: (type, result, base, ...)
_WRITES = {62: 0, 63: 0, 228: 0} | {op: 2 for op in range(229, 243)}  # OpStore, OpCopyMemory, OpAtomicStore (pointer first);
#                                      atomic read-modify-writes (type, result, pointer)


def stored_bindings(spirv: bytes, names) -> tuple[frozenset[int] | None, ...]:
    """Per entry point named in `names`: the bindings its kernel stores to, or None where the
    scan cannot tell (a function call, a module it cannot parse): it may store to any.

    Drivers use it to learn which kernels can fail (those that store to their dispatch state,
    binding n) and which buffers a dispatch may write (the WebGPU driver copies only those back
    to the host)."""
    try:
        words = np.frombuffer(spirv, dtype="<u4")
        functions_by_name, binding, root, functions = {}, {}, {}, {}
        current, i = None, 5
        while i < len(words):
            count, op = int(words[i]) >> 16, int(words[i]) & 0xFFFF
            if count == 0:
                raise ValueError("bad instruction")
            ops = words[i + 1: i + count]
            if op == _OP_ENTRY_POINT:
                raw = ops[2:].tobytes()
                functions_by_name[raw[: raw.index(0)].decode()] = int(ops[1])
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
        stored = [functions[functions_by_name[name]] for name in names]
        return tuple(None if None in s else frozenset(s) for s in stored)
    except Exception:  # noqa: BLE001 - unknown shape: every entry may store anywhere
        return tuple(None for _ in names)
