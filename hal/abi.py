"""The CPU kernel ABI: the one contract between every kernel producer and every CPU driver.

Every CPU kernel, whether numba compiled it from a `@kernel` function or the model compiler
emitted it as LLVM IR, is a native function

    int32_t kernel(const DispatchState *d, const WorkgroupState *w);

modelled on IREE's `iree_hal_executable_dispatch_state_v0_t` / `workgroup_state_v0_t`. A driver
fills one DispatchState per dispatch (read-only while it runs, one cache line) and one
WorkgroupState per workgroup it runs, then calls the kernel. Returning 0 means success; any
other value fails the submission, and the value is reported in the error.

C layout (x86-64 / AArch64 LP64; offsets in bytes):

    struct DispatchState {                 // 56 bytes
        uint32_t workgroup_size[3];        //  0
        uint32_t workgroup_count[3];       // 12
        uint32_t constant_count;           // 24
        uint32_t binding_count;            // 28
        const uint32_t *constants;         // 32  constant_count words
        void **binding_ptrs;               // 40  binding_count base pointers (64-byte aligned
                                           //     buffers plus the binding's offset)
        const uint64_t *binding_lengths;   // 48  bytes visible through each binding
    };
    struct WorkgroupState {                // 32 bytes
        uint32_t workgroup_id[3];          //  0
        uint32_t worker_id;                // 12  0 .. workers-1, stable for the worker's life
        void *local_memory;                // 16  per-worker scratch, 64-byte aligned
        uint32_t local_memory_size;        // 24
        uint32_t reserved;                 // 28
    };

Constants are 32-bit words; a kernel bitcasts them to the type it declared (f32, i32, u32).
"""

from __future__ import annotations

import ctypes

import numpy as np

KERNEL_OK = 0

DISPATCH_STATE_DTYPE = np.dtype(
    [
        ("workgroup_size", "<u4", (3,)),
        ("workgroup_count", "<u4", (3,)),
        ("constant_count", "<u4"),
        ("binding_count", "<u4"),
        ("constants", "<u8"),
        ("binding_ptrs", "<u8"),
        ("binding_lengths", "<u8"),
    ],
    align=True,
)
WORKGROUP_STATE_DTYPE = np.dtype(
    [
        ("workgroup_id", "<u4", (3,)),
        ("worker_id", "<u4"),
        ("local_memory", "<u8"),
        ("local_memory_size", "<u4"),
        ("reserved", "<u4"),
    ],
    align=True,
)
assert DISPATCH_STATE_DTYPE.itemsize == 56 and WORKGROUP_STATE_DTYPE.itemsize == 32

# Byte offsets, for code that reads the structs through raw pointers (numba wrappers, codegen).
DS_WORKGROUP_SIZE = DISPATCH_STATE_DTYPE.fields["workgroup_size"][1]
DS_WORKGROUP_COUNT = DISPATCH_STATE_DTYPE.fields["workgroup_count"][1]
DS_CONSTANT_COUNT = DISPATCH_STATE_DTYPE.fields["constant_count"][1]
DS_BINDING_COUNT = DISPATCH_STATE_DTYPE.fields["binding_count"][1]
DS_CONSTANTS = DISPATCH_STATE_DTYPE.fields["constants"][1]
DS_BINDING_PTRS = DISPATCH_STATE_DTYPE.fields["binding_ptrs"][1]
DS_BINDING_LENGTHS = DISPATCH_STATE_DTYPE.fields["binding_lengths"][1]
WS_WORKGROUP_ID = WORKGROUP_STATE_DTYPE.fields["workgroup_id"][1]
WS_WORKER_ID = WORKGROUP_STATE_DTYPE.fields["worker_id"][1]
WS_LOCAL_MEMORY = WORKGROUP_STATE_DTYPE.fields["local_memory"][1]
WS_LOCAL_MEMORY_SIZE = WORKGROUP_STATE_DTYPE.fields["local_memory_size"][1]

# The same structs as LLVM IR types, for backends that emit kernels with llvmlite.
LLVM_DISPATCH_STATE = "{ [3 x i32], [3 x i32], i32, i32, i32*, i8**, i64* }"
LLVM_WORKGROUP_STATE = "{ [3 x i32], i32, i8*, i32, i32 }"
LLVM_KERNEL_SIGNATURE = "i32 (i8*, i8*)"  # (const DispatchState*, const WorkgroupState*)

KERNEL_CFUNCTYPE = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p)
