"""Per-signature state of a function with a symbolic batch dim is bounded: a server seeing ever
new batch sizes keeps at most `MAX_SIGNATURES` of them prepared, and one dropped comes back
(from the compile cache) with the right results."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from fibergrid import module as module_

jax = pytest.importorskip("jax")
jnp = jax.numpy
from jax import export  # noqa: E402

W = np.random.default_rng(3).standard_normal((4, 3)).astype(np.float32)


def test_prepared_signatures_are_bounded(monkeypatch):
    monkeypatch.setattr(module_, "MAX_SIGNATURES", 2)
    b = export.symbolic_shape("b")[0]
    f = lambda x: jnp.tanh(x @ W).sum(1)  # noqa: E731
    text = export.export(jax.jit(f))(jax.ShapeDtypeStruct((b, 4), jnp.float32)).mlir_module()
    main = fg.load(text, device="local-task")["main"]
    for n in (1, 2, 3, 1, 5):
        x = np.arange(4 * n, dtype=np.float32).reshape(n, 4) / 10
        np.testing.assert_allclose(main(x), np.asarray(f(x)), rtol=1e-5, atol=1e-6)
        assert len(main._prepared) <= 2
    assert sorted(s[0][0] for s in main._prepared) == [1, 5]
