"""Models and data sets for the batch tests: real JAX models, small data sets on disk."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy

W = np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(4, 3)


def mlp(x):
    """Per-row: a dict result, so the results are named `probs` and `total`."""
    h = jnp.tanh(x @ W + 0.5)
    return {"probs": jax.nn.softmax(h, axis=-1), "total": x.sum(axis=1)}


def two_inputs(a, b):
    return a * 2.0 + b, jnp.argmax(a, axis=1).astype(jnp.int32)


@pytest.fixture(scope="session")
def dynamic_mlir(tmp_path_factory) -> str:
    """The MLP exported with a symbolic batch dim (names: input `x`; results probs, total)."""
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, 4"), jnp.float32)
    path = tmp_path_factory.mktemp("models") / "mlp_dynamic.mlir"
    path.write_text(jax.export.export(jax.jit(mlp))(spec).mlir_module())
    return str(path)


@pytest.fixture(scope="session")
def static_fgx(tmp_path_factory) -> str:
    """Two inputs with a static batch of 8, compiled to an .fgx (which keeps no names)."""
    from compiler import executable

    text = jax.jit(two_inputs).lower(np.zeros((8, 4), np.float32), np.zeros((8, 4), np.float32)).as_text()
    path = tmp_path_factory.mktemp("models") / "two_static.fgx"
    executable.save(executable.build(text), str(path))
    return str(path)


def rows(n: int, seed: int = 0, start: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"id": np.arange(start, start + n, dtype=np.int64), "x": rng.standard_normal((n, 4)).astype(np.float32)}


@pytest.fixture(scope="session")
def dataset_1000(tmp_path_factory) -> str:
    """1,000 rows in four .npz files of uneven sizes (batches of 64 fill up except the last)."""
    directory = tmp_path_factory.mktemp("data1000")
    start = 0
    for i, n in enumerate((320, 256, 320, 104)):
        np.savez(directory / f"part{i}.npz", **rows(n, seed=i, start=start))
        start += n
    return str(directory)
