"""Streaming (non-temporal) stores (compiler/codegen/llvm_cpu/streaming.py): an elementwise chain
and a softmax whose outputs pass NONTEMPORAL_BYTES, written into the caller's arrays 0, 4 and 16
bytes past a 64-byte boundary (the streaming loop after a peel of plain stores: a misaligned
streaming store would fault), two outputs at different offsets (the plain loop), against numpy;
and the generated code has the streaming stores."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from compiler import kernel_ir as kir
from compiler.codegen.llvm_cpu import jit, streaming
from compiler.codegen.llvm_cpu.elementwise import generate_elementwise

jax = pytest.importorskip("jax")
RNG = np.random.default_rng(21)
COLUMNS = 1024
ROWS = streaming.NONTEMPORAL_BYTES // (4 * COLUMNS)


def _softmax_np(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


CASES = {
    "elementwise": (lambda x: jax.numpy.maximum(x * 0.5 - 1.0, 0.0) * x, lambda x: np.maximum(x * 0.5 - 1.0, 0.0) * x),
    "softmax": (lambda x: jax.nn.softmax(x, axis=-1), _softmax_np),
}


def _output(shape: tuple[int, ...], offset: int) -> np.ndarray:
    """An array `offset` floats past a 64-byte boundary, NaN-filled around it."""
    raw = np.full(int(np.prod(shape)) + 32, np.nan, np.float32)
    first = (-raw.ctypes.data % 64) // 4 + offset
    return raw[first:first + int(np.prod(shape))].reshape(shape)


@pytest.mark.parametrize("offset", [0, 1, 4])
@pytest.mark.parametrize("case", list(CASES))
def test_outputs_at_any_alignment(case, offset) -> None:
    f, reference = CASES[case]
    x = RNG.standard_normal((ROWS, COLUMNS)).astype(np.float32)
    module = fg.load(jax.jit(f).lower(x).as_text(), device="local-sync")
    out = _output(x.shape, offset)
    module(x, out=out)
    np.testing.assert_allclose(out, reference(x), rtol=2e-6, atol=1e-30)


def test_outputs_at_different_offsets() -> None:
    """One row kernel writing two outputs whose offsets differ: no peel aligns both."""
    def f(x):
        e = jax.numpy.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True), e * 2.0

    x = RNG.standard_normal((ROWS // 2, COLUMNS)).astype(np.float32)
    module = fg.load(jax.jit(f).lower(x).as_text(), device="local-sync")
    assert len(module.compiled.kernels) == 1
    a, b = _output(x.shape, 0), _output(x.shape, 3)
    module(x, out=(a, b))
    e = np.exp(x - x.max(-1, keepdims=True))
    np.testing.assert_allclose(a, _softmax_np(x), rtol=2e-6, atol=1e-30)
    np.testing.assert_allclose(b, e * 2.0, rtol=2e-6, atol=1e-30)


def test_large_outputs_get_streaming_stores() -> None:
    shape = (ROWS, COLUMNS)
    load = kir.Load(0, (kir.Coord(0), kir.Coord(1)), np.dtype(np.float32))
    body = kir.ElementwiseBody(shape, (kir.Compute("multiply", (load, load), load.dtype),), (1,), kir.tile_elementwise(shape))
    bindings = (kir.BindingDecl(shape, load.dtype), kir.BindingDecl(shape, load.dtype, output=True))
    big = jit.emit_assembly(generate_elementwise(kir.KernelRegion("big", bindings, body)).ir)
    small_shape = (ROWS // 64, COLUMNS)
    small_body = kir.ElementwiseBody(small_shape, body.outputs, (1,), kir.tile_elementwise(small_shape))
    small_bindings = (kir.BindingDecl(small_shape, load.dtype), kir.BindingDecl(small_shape, load.dtype, output=True))
    small = jit.emit_assembly(generate_elementwise(kir.KernelRegion("small", small_bindings, small_body)).ir)
    assert "movntps" in big and "movntps" not in small
