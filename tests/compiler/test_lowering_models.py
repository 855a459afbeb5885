"""Small models end to end through fg.load on local-task and every GPU driver present, compared with JAX: a CNN
(conv/relu/max-pool/mean), a transformer block (layernorm, softmax attention, gelu), and a
classifier head (argmax, top-k by argsort, cumsum, embedding take)."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from tests.compiler.conftest import run_against_jax

jax = pytest.importorskip("jax")
jnp, lax = jax.numpy, jax.lax
RNG = np.random.default_rng(5)


def _f32(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


@pytest.fixture(scope="module", params=["local-task"] + [d for d in ("vulkan", "cuda", "webgpu") if d in fg.available_drivers()])
def device(request):
    """Every model runs on local-task and on each GPU driver present (vulkan, cuda, webgpu)."""
    dev = fg.create_device(request.param, **({"workers": 2} if request.param == "local-task" else {}))
    yield dev
    dev.close()


def test_cnn(device) -> None:
    def cnn(x, w1, b1, w2, dense):
        y = jax.nn.relu(lax.conv_general_dilated(x, w1, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + b1)
        y = lax.reduce_window(y, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        y = jax.nn.relu(lax.conv(jnp.transpose(y, (0, 3, 1, 2)), w2, (1, 1), "VALID"))  # NCHW
        return jnp.mean(y, axis=(2, 3)) @ dense

    run_against_jax(device, cnn, _f32(2, 12, 12, 3), _f32(3, 3, 3, 8, scale=0.3), _f32(8), _f32(6, 8, 3, 3, scale=0.2),
         _f32(6, 4))


def test_transformer_block(device) -> None:
    heads, dim = 2, 16

    def layernorm(x, g, b):
        mean = x.mean(-1, keepdims=True)
        return (x - mean) * lax.rsqrt(((x - mean) ** 2).mean(-1, keepdims=True) + 1e-5) * g + b

    def block(x, wqkv, wo, w1, w2, g, b):
        t = x.shape[1]
        h = layernorm(x, g, b)
        q, k, v = jnp.split(h @ wqkv, 3, axis=-1)
        q, k, v = (a.reshape(x.shape[0], t, heads, dim // heads) for a in (q, k, v))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(dim // heads)
        mask = jnp.tril(jnp.ones((t, t), bool))
        attn = jax.nn.softmax(jnp.where(mask, scores, -1e9), axis=-1)
        x = x + jnp.einsum("bhqk,bkhd->bqhd", attn, v).reshape(x.shape) @ wo
        return x + jax.nn.gelu(layernorm(x, g, b) @ w1) @ w2

    run_against_jax(device, block, _f32(2, 6, dim), _f32(dim, 3 * dim, scale=0.3), _f32(dim, dim, scale=0.3),
         _f32(dim, 4 * dim, scale=0.3), _f32(4 * dim, dim, scale=0.3), _f32(dim), _f32(dim))


def test_classifier_head(device) -> None:
    def head(table, tokens, w):
        logits = jnp.take(table, tokens, axis=0).sum(1) @ w
        probs = jax.nn.softmax(logits)
        top3 = jnp.argsort(-probs, axis=-1)[:, :3]
        return jnp.argmax(logits, -1), top3, jnp.cumsum(jnp.sort(probs, axis=-1), axis=-1)

    run_against_jax(device, head, _f32(20, 8), RNG.integers(0, 20, (3, 4)).astype(np.int32), _f32(8, 10))
