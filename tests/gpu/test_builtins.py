"""The Vulkan driver's embedded built-in kernels match their portable sources."""

from __future__ import annotations

import llvmlite
import pytest

from hal_gpu.vulkan import builtins
from tests.gpu import builtin_kernels


def test_embedded_builtins_are_current() -> None:
    if llvmlite.__version__ != builtins.LLVMLITE:
        pytest.skip(f"blobs were generated with llvmlite {builtins.LLVMLITE}; this is {llvmlite.__version__}")
    assert builtin_kernels.blob() == builtins.INDIRECT_CHECK, "regenerate: python -m tests.gpu.builtin_kernels"
