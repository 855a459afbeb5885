"""Attention fusion (compiler/passes/attention_fusion.py, llvm_cpu/attention.py): Q K^T -> softmax
-> @ V as one region, checked against JAX on local-sync and local-task (and Vulkan where present):
one head and several (batch dims in dot_general), with and without the 1/sqrt(d) scale and a
causal mask, sequence lengths and head sizes that are not a multiple of the vector width, heads
read and written in place in (batch, seq, heads * dim) projections as torch lays them out
(attention_layout.py), and a chain whose probabilities are also a result, which must not fuse."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from tests.compiler.conftest import run_against_jax

jax = pytest.importorskip("jax")
jnp = jax.numpy
RNG = np.random.default_rng(7)


def _scores(q, k, scale: bool, causal: bool):
    s = jnp.einsum("...qd,...kd->...qk", q, k)
    if scale:
        s = s / np.float32(np.sqrt(q.shape[-1]))
    if causal:
        keep = jnp.tril(jnp.ones(s.shape[-2:], bool))
        s = jnp.where(keep, s, -jnp.inf)
    return s


def _attention(scale: bool, causal: bool):
    def f(q, k, v):
        p = jax.nn.softmax(_scores(q, k, scale, causal), axis=-1)
        return jnp.einsum("...qk,...kd->...qd", p, v)
    return f


@pytest.fixture(scope="module", params=["local-sync", "local-task"])
def device(request):
    """Each CPU driver, local-task on two workers (CI's cores)."""
    dev = fg.create_device(request.param, workers=2) if request.param == "local-task" else fg.create_device(request.param)
    request.addfinalizer(dev.close)
    return dev


def _kernels(module) -> int:
    """Kernels of the module (regions are not kept when it comes from the compile cache)."""
    return len(module.compiled.kernels)


def _qkv(lead: tuple[int, ...], s: int, d: int, dv: int, keys: int | None = None) -> list[np.ndarray]:
    keys = s if keys is None else keys
    return [RNG.standard_normal(lead + shape).astype(np.float32) for shape in ((s, d), (keys, d), (keys, dv))]


@pytest.mark.parametrize("scale", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lead, s, d, dv", [((), 64, 32, 32), ((), 37, 16, 20), ((2, 3), 29, 8, 12), ((4,), 100, 24, 40)])
def test_attention_is_one_region_and_matches_jax(device, lead, s, d, dv, scale, causal) -> None:
    module = run_against_jax(device, _attention(scale, causal), *_qkv(lead, s, d, dv))
    assert _kernels(module) == 1  # K^T read from K in place


@pytest.mark.parametrize("s, d, causal", [(24, 16, False), (37, 20, True), (130, 64, False)])
def test_heads_in_the_inner_dims_as_transformers_lay_them_out(device, s, d, causal) -> None:
    """(batch, seq, heads, dim) tensors: JAX computes out^T = V^T @ P^T, then transposes."""
    def f(q, k, v):
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.float32(np.sqrt(d))
        if causal:
            scores = jnp.where(jnp.tril(jnp.ones((s, s), bool)), scores, -jnp.inf)
        return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)

    module = run_against_jax(device, f, *(RNG.standard_normal((2, s, 3, d)).astype(np.float32) for _ in range(3)))
    assert _kernels(module) == 5  # Q, K and V laid out per head, attention, the output back


def _torch_attention(heads: int, d: int, fused_qkv: bool, causal: bool = False):
    """Attention as torch's exports of transformers write it: projections (batch, seq, heads *
    d) (one (batch, seq, 3 * heads * d) for GPT-2's fused QKV) split into heads by a reshape
    and a transpose (K straight to K^T), Q and K each scaled by d ** -0.25, the output
    transposed back into (batch, seq, heads * d)."""
    def heads_of(x, perm):
        b, s, _ = x.shape
        return jnp.transpose(x.reshape(b, s, heads, d), perm)

    def f(*xs):
        q, k, v = jnp.split(xs[0], 3, axis=-1) if fused_qkv else xs
        scale = np.float32(d ** -0.25)
        scores = (heads_of(q, (0, 2, 1, 3)) * scale) @ (heads_of(k, (0, 2, 3, 1)) * scale)
        if causal:
            scores = jnp.where(jnp.tril(jnp.ones(scores.shape[-2:], bool)), scores, -jnp.inf)
        out = jax.nn.softmax(scores, axis=-1) @ heads_of(v, (0, 2, 1, 3))
        b, _, s, _ = out.shape
        return jnp.transpose(out, (0, 2, 1, 3)).reshape(b, s, heads * d)
    return f


def _projections(batch: int, s: int, heads: int, d: int, fused_qkv: bool) -> list[np.ndarray]:
    shapes = [(batch, s, 3 * heads * d)] if fused_qkv else [(batch, s, heads * d)] * 3
    return [RNG.standard_normal(shape).astype(np.float32) for shape in shapes]


@pytest.mark.parametrize("batch, s, heads, d, fused_qkv, causal", [
    (1, 32, 4, 64, False, False), (2, 19, 3, 8, False, True), (3, 40, 2, 20, True, False), (1, 65, 4, 48, True, True)])
def test_heads_read_and_written_in_place_as_torch_lays_them_out(device, batch, s, heads, d, fused_qkv, causal) -> None:
    """The head-splitting copies, the scales of Q and K and the copy back fold into the region."""
    module = run_against_jax(device, _torch_attention(heads, d, fused_qkv, causal), *_projections(batch, s, heads, d, fused_qkv))
    assert _kernels(module) == 1


def test_more_keys_than_queries_and_long_rows(device) -> None:
    q, k, v = _qkv((2,), 21, 16, 16, keys=515)
    module = run_against_jax(device, _attention(True, False), q, k, v)
    assert _kernels(module) == 1


def test_a_fully_masked_row_and_huge_scores(device) -> None:
    """A row masked everywhere gives NaN as in JAX; scores near f32's limit stay finite."""
    def f(q, k, v):
        s = jnp.einsum("qd,kd->qk", q, k)
        s = jnp.where(jnp.arange(s.shape[0])[:, None] == 3, -jnp.inf, s)
        return jax.nn.softmax(s, axis=-1) @ v

    q, k, v = _qkv((), 40, 8, 8)
    q[5] *= 1e18
    module = run_against_jax(device, f, q, k, v)
    assert _kernels(module) == 1


def test_long_rows_fill_local_memory_and_longer_ones_stay_unfused(device) -> None:
    """12000 keys: a workgroup holds as many 48 KB score rows as its local memory takes; 40000
    keys: not even a register tile's rows fit, so the three dispatches stay."""
    module = run_against_jax(device, _attention(True, True), *_qkv((), 20, 8, 8, keys=12000))
    assert _kernels(module) == 1
    module = run_against_jax(device, _attention(True, False), *_qkv((), 8, 4, 4, keys=40000))
    assert _kernels(module) >= 4


def test_transformer_block_from_the_benchmark(device) -> None:
    from bench.models import _cases

    f, _, inputs = _cases()["attention"]
    module = run_against_jax(device, f, *inputs)
    # layernorm, Q/K/V projections, attention, output projection, residual add
    assert _kernels(module) == 7


def test_probabilities_read_elsewhere_stay_unfused(device) -> None:
    def f(q, k, v):
        p = jax.nn.softmax(_scores(q, k, True, False), axis=-1)
        return p @ v, p

    module = run_against_jax(device, f, *_qkv((), 33, 16, 16))
    assert _kernels(module) >= 4  # K transposed, scores, softmax, @ V


def test_scores_read_elsewhere_stay_unfused(device) -> None:
    def f(q, k, v):
        s = _scores(q, k, True, False)
        return jax.nn.softmax(s, axis=-1) @ v, s.sum()

    module = run_against_jax(device, f, *_qkv((), 33, 16, 16))
    assert _kernels(module) >= 4  # K transposed, scores, softmax, @ V


@pytest.mark.skipif("vulkan" not in fg.available_drivers(), reason="no Vulkan device here")
def test_vulkan_runs_the_fused_region() -> None:
    dev = fg.create_device("vulkan")
    try:
        module = run_against_jax(dev, _attention(True, True), *_qkv((2,), 19, 8, 12))
        assert _kernels(module) == 1
        module = run_against_jax(dev, _torch_attention(3, 8, fused_qkv=True), *_projections(2, 19, 3, 8, True))
        assert _kernels(module) == 1
        transposed = run_against_jax(dev, lambda q, k, v: jnp.einsum(
            "bhqk,bkhd->bqhd", jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k), axis=-1), v),
            *(RNG.standard_normal((2, 19, 3, 8)).astype(np.float32) for _ in range(3)))
        assert _kernels(transposed) == 5
    finally:
        dev.close()
