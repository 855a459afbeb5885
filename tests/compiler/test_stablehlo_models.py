"""End-to-end models: JAX -> StableHLO text -> IR -> reference evaluator == JAX."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.frontends.stablehlo import parse_stablehlo
from compiler.passes.shape_inference import specialize
from compiler.reference import evaluate
from tests.compiler.conftest import assert_matches

jax = pytest.importorskip("jax")
jnp, lax = jax.numpy, jax.lax
from jax import export  # noqa: E402

RNG = np.random.default_rng(2)


def _params(*shapes):
    return [(RNG.standard_normal(s) * 0.3).astype(np.float32) for s in shapes]


def mlp(params, x):
    w1, b1, w2, b2 = params
    h = jax.nn.relu(x @ w1 + b1)
    return jax.nn.softmax(h @ w2 + b2, axis=-1)


def test_mlp(check):
    check(mlp, _params((16, 32), (32,), (32, 10), (10,)), RNG.standard_normal((4, 16)).astype(np.float32))


def test_cnn(check):
    def cnn(params, x):
        k1, k2, w = params
        dn = ("NHWC", "HWIO", "NHWC")
        h = jax.nn.relu(lax.conv_general_dilated(x, k1, (1, 1), "SAME", dimension_numbers=dn))
        h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        h = jax.nn.relu(lax.conv_general_dilated(h, k2, (2, 2), "SAME", dimension_numbers=dn))
        return h.mean(axis=(1, 2)) @ w

    check(cnn, _params((3, 3, 3, 8), (3, 3, 8, 8), (8, 5)), RNG.standard_normal((2, 12, 12, 3)).astype(np.float32))


def test_transformer_block(check):
    def layernorm(x, g, b):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) * lax.rsqrt(var + 1e-5) * g + b

    def block(params, x):
        wq, wk, wv, wo, w1, w2, g1, b1, g2, b2 = params
        h = layernorm(x, g1, b1)
        q, k, v = [(h @ w).reshape(x.shape[0], x.shape[1], 2, 8).transpose(0, 2, 1, 3) for w in (wq, wk, wv)]
        mask = jnp.tril(jnp.ones((x.shape[1], x.shape[1]), bool))
        scores = jnp.where(mask, q @ k.transpose(0, 1, 3, 2) / jnp.sqrt(8.0), -1e9)
        att = jax.nn.softmax(scores, axis=-1) @ v
        x = x + att.transpose(0, 2, 1, 3).reshape(x.shape) @ wo
        return x + jax.nn.gelu(layernorm(x, g2, b2) @ w1) @ w2

    params = _params((16, 16), (16, 16), (16, 16), (16, 16), (16, 32), (32, 16), (16,), (16,), (16,), (16,))
    check(block, params, RNG.standard_normal((2, 6, 16)).astype(np.float32))


def test_dynamic_batch_mlp():
    params = _params((16, 32), (32,), (32, 10), (10,))
    b = export.symbolic_shape("batch")[0]
    exp = export.export(jax.jit(lambda x: mlp(params, x)))(jax.ShapeDtypeStruct((b, 16), jnp.float32))
    module = parse_stablehlo(exp.mlir_module())
    assert module.function("main").args[0].type.shape == (None, 16)
    for batch in (1, 5):
        x = RNG.standard_normal((batch, 16)).astype(np.float32)
        want = [np.asarray(exp.call(x))]
        assert_matches(evaluate(module, "main", [x]), want)
        assert_matches(evaluate(specialize(module, "main", [x.shape]), "main", [x]), want)
