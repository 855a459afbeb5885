"""The sources of the Vulkan driver's built-in kernels (hal_gpu/vulkan/builtins.py embeds their
SPIR-V: a driver may not import the compiler). Regenerate the embedded blobs with

    python -m tests.gpu.builtin_kernels

and tests/gpu/test_builtins.py checks that they are current."""

from __future__ import annotations

import base64
import sys

import numpy as np

from compiler.codegen.spirv.invocations import build_spirv
from compiler.portable import PortableKernel
from hal import spirv_abi


def indirect_check(k) -> None:
    """Copies an indirect workgroup count (binding 0, uint32[3]) into a dispatch's state (binding
    1) — zeroed, with the out-of-range flag and the count recorded, when a dimension is over the
    device limit (constant 0), so vkCmdDispatchIndirect reading the state never sees it."""
    b = k.b
    limit = k.constant(0)
    counts = [k.load(0, k.i32(d)) for d in range(3)]
    over = b.or_(b.or_(b.icmp_unsigned(">", counts[0], limit), b.icmp_unsigned(">", counts[1], limit)),
                 b.icmp_unsigned(">", counts[2], limit))
    for d in range(3):
        k.store(1, k.i32(spirv_abi.WORKGROUP_COUNT + d), b.select(over, k.i32(0), counts[d]))
        k.store(1, k.i32(spirv_abi.FAILED_WORKGROUP + d), counts[d])
    k.store(1, k.i32(spirv_abi.INDIRECT_RANGE), b.zext(over, k.i32(0).type))


KERNELS = [PortableKernel(indirect_check, 1, (np.uint32, np.uint32), (np.uint32,), 0, False, "fg_indirect_check")]


def blob() -> bytes:
    return build_spirv(KERNELS).compile()


if __name__ == "__main__":
    import llvmlite

    encoded = base64.b64encode(blob()).decode()
    lines = [encoded[i:i + 96] for i in range(0, len(encoded), 96)]
    sys.stdout.write(f'LLVMLITE = "{llvmlite.__version__}"\nINDIRECT_CHECK = base64.b64decode(\n' +
                     "".join(f'    "{line}"\n' for line in lines) + ")\n")
