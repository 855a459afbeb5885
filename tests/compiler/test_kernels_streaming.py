"""Streaming (non-temporal) stores (compiler/codegen/llvm_cpu/streaming.py): an elementwise chain
and a softmax whose outputs pass NONTEMPORAL_BYTES, written into the caller's arrays aligned to
64 bytes (the streaming loop) and 4 bytes past that (the plain loop: a streaming store there
would fault), against numpy; and the generated code has the streaming stores."""

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


@pytest.mark.parametrize("misaligned", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_outputs_at_any_alignment(case, misaligned) -> None:
    f, reference = CASES[case]
    x = RNG.standard_normal((ROWS, COLUMNS)).astype(np.float32)
    module = fg.load(jax.jit(f).lower(x).as_text(), device="local-sync")
    raw = np.full(x.size + 32, np.nan, np.float32)
    first = (-raw.ctypes.data % 64) // 4 + misaligned  # 64-byte aligned, or 4 bytes past it
    out = raw[first:first + x.size].reshape(x.shape)
    module(x, out=out)
    np.testing.assert_allclose(out, reference(x), rtol=2e-6, atol=1e-30)


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
