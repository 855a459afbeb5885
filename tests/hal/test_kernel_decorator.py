"""`@fg.kernel` errors: a bad declaration or a function numba cannot compile fails at decoration
with InvalidArgument naming the kernel, never later at dispatch. (The kernels the suite runs
live in tests/hal/kernels.py; these are only the ones meant not to compile.)"""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from tests.hal import kernels as K


def test_entry_point_metadata():
    ep = K.saxpy.entry_points[0]
    assert isinstance(K.saxpy, fg.Executable) and K.saxpy.format == fg.CPU_NATIVE_FORMAT
    assert (ep.name, ep.workgroup_size, ep.binding_count, ep.constant_count) == ("saxpy", (64, 1, 1), 2, 1)
    assert K.matmul.entry("matmul").workgroup_size == (K.TILE, K.TILE, 1)
    assert K.use_local.entry_points[0].local_memory_size == 256


def test_constant_type_must_be_32_bit():
    with pytest.raises(fg.InvalidArgument, match="float64"):
        fg.kernel(constants=(np.float64,))


def test_kernel_returning_a_float():
    def returns_float(wg, x):
        return 1.5

    with pytest.raises(fg.InvalidArgument, match="returns_float"):
        fg.kernel(bindings=(np.float32,))(returns_float)


def test_kernel_that_does_not_compile():
    def not_numba(wg, x):
        x[0] = {"a": object()}

    with pytest.raises(fg.InvalidArgument, match="not_numba"):
        fg.kernel(bindings=(np.float32,))(not_numba)
