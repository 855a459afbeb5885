"""8-bit bindings (int8, uint8, bool) on every driver, checked against numpy: wrapping and signed
arithmetic on bytes, neighbouring bytes stored by different invocations at once, ranges that
start and end inside a 32-bit word, and the bytes around a range left as they were (WebGPU has
no 8-bit type: its kernels keep bytes in words, compiler/codegen/spirv/bytes.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.hal import kernels as K
from tests.hal.helpers import run


def _expected(src: np.ndarray) -> list[np.ndarray]:
    v = src[::-1].astype(np.int32)
    quotient = np.abs(v) // 5 * -np.sign(v)  # C division: towards zero
    return [(3 * v - 7).astype(np.int8), quotient.astype(np.int8), ((v & 0xFF) >> 1 ^ 0x5A).astype(np.uint8), v < 0]


@pytest.mark.parametrize("n, offset", [(256, 0), (61, 3), (5, 1)])
def test_byte_bindings_match_numpy(device, n, offset) -> None:
    src = np.arange(-128, 128, dtype=np.int8)[np.random.default_rng(n).permutation(256)[:n]]
    src[:2] = (-128, 127)
    inputs = device.allocator.import_array(src)
    fill = np.full(n + 2 * offset + 4, 0xA5, np.uint8)  # around each range: bytes that must survive
    outputs = [device.allocator.import_array(fill.copy()) for _ in range(4)]
    cb = device.create_command_buffer()
    cb.dispatch(K.byte_ops, "byte_ops", -(-n // 16), [], [inputs] + [(o.buffer, offset, n) for o in outputs])
    cb.end()
    run(device, cb)
    for out, want in zip(outputs, _expected(src)):
        got = out.to_numpy()
        np.testing.assert_array_equal(got[offset: offset + n], want.view(np.uint8))
        np.testing.assert_array_equal(np.delete(got, np.s_[offset: offset + n]), 0xA5)
