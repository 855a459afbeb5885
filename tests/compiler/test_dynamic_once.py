"""Dynamic dims compiled once (compiler/dynamic.py): jax.export models with a symbolic batch run
at many batch sizes from ONE compile, matching JAX; what cannot be compiled that way falls back
to one compile per shape, still correct, and says why; bad inputs are fibergrid errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import fibergrid as fg
from compiler import executable
from bench.dynamic import models
from compiler.cache import CACHE
from fibergrid.module import MAX_SIGNATURES
from tests.compiler.conftest import assert_matches

jax = pytest.importorskip("jax")
jnp = jax.numpy
from jax import export  # noqa: E402

RNG = np.random.default_rng(7)
# 50 batch sizes: every size to 40 (every remainder of the row tiles), then larger ones that
# cross workgroup and matmul tile edges.
BATCHES = list(range(1, 41)) + [47, 64, 97, 128, 191, 192, 193, 256, 300, 517]


def _export(f, *specs: str) -> export.Exported:
    scope = export.SymbolicScope()
    shapes = [jax.ShapeDtypeStruct(export.symbolic_shape(s, scope=scope), jnp.float32) for s in specs]
    return export.export(jax.jit(f))(*shapes)


def _weights(*shapes: tuple[int, ...]) -> list[np.ndarray]:
    return [(RNG.standard_normal(s) / np.sqrt(s[0])).astype(np.float32) for s in shapes]


W1, B1, W2, B2, W3 = _weights((48, 96), (96,), (96, 64), (64,), (64, 10))


def mlp(x):
    h = jax.nn.relu(x @ W1 + B1)
    h = jnp.tanh(h @ W2 + B2)
    return jax.nn.softmax(h @ W3, axis=-1)


def _run_batches(model: fg.Module, exported: export.Exported, row: tuple[int, ...]) -> None:
    """Calls at every size of BATCHES, each checked against JAX on the same rows (one JAX call on
    the largest batch: rows are independent in these models)."""
    x = RNG.standard_normal((max(BATCHES), *row)).astype(np.float32)
    want = np.asarray(exported.call(x))
    for batch in BATCHES:
        assert_matches([model(x[:batch])], [want[:batch]])


@pytest.mark.parametrize("driver", ["local-task", "local-sync"])
def test_mlp_at_50_batch_sizes_compiles_once(compiles, driver) -> None:
    exported = _export(mlp, "b, 48")
    builds = CACHE.builds
    model = fg.load(exported.mlir_module(), fg.default_device(driver))
    assert model.main.dynamic and model.main.dynamic_fallback == ""
    assert (compiles[0], CACHE.builds) == (1, builds + 1)
    _run_batches(model, exported, (48,))
    assert compiles[0] == 1 and CACHE.builds == builds + 1
    assert len(model.main._prepared) <= MAX_SIGNATURES  # per-size state stays bounded


def test_transformer_block_at_50_batch_sizes_compiles_once(compiles) -> None:
    """bench.dynamic's block: pre-norm attention (4 heads) and a GELU MLP over (batch, 16, 64)."""
    _, cases = models()
    block, spec, row = cases["transformer_block"]
    exported = _export(block, spec)
    model = fg.load(exported.mlir_module(), "local-task")
    assert model.main.dynamic
    assert compiles[0] == 1
    _run_batches(model, exported, row)
    assert compiles[0] == 1


K1, K2, WD = _weights((3, 3, 3, 8), (3, 3, 8, 12), (12, 4))


def cnn(x):
    """Convolutions (their batch is the grid's z), max pooling, a global mean, a dense layer."""
    dims = ("NHWC", "HWIO", "NHWC")
    h = jax.nn.relu(jax.lax.conv_general_dilated(x, K1, (1, 1), "SAME", dimension_numbers=dims))
    h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    h = jax.nn.relu(jax.lax.conv_general_dilated(h, K2, (2, 2), "VALID", dimension_numbers=dims))
    return h.mean((1, 2)) @ WD


def test_cnn_compiles_once(compiles) -> None:
    exported = _export(cnn, "b, 16, 16, 3")
    model = fg.load(exported.mlir_module(), "local-task")
    assert model.main.dynamic and compiles[0] == 1
    x = RNG.standard_normal((40, 16, 16, 3)).astype(np.float32)
    want = np.asarray(exported.call(x))
    for batch in (1, 2, 3, 7, 16, 40):
        assert_matches([model(x[:batch])], [want[:batch]])
    assert compiles[0] == 1


def test_submitted_calls_of_many_sizes_pipeline(compiles) -> None:
    exported = _export(mlp, "b, 48")
    model = fg.load(exported.mlir_module(), "local-task")
    xs = [RNG.standard_normal((b, 48)).astype(np.float32) for b in (3, 70, 3, 9, 70)]
    futures = [model.main.submit(x) for x in xs]
    for x, f in zip(xs, futures):
        assert_matches([f.result(timeout=30)], [np.asarray(exported.call(x))])
    assert compiles[0] == 1


@pytest.mark.parametrize("f", [
    lambda x: jnp.concatenate([x, x[::-1]]) * 2.0,
    lambda x: x[-1] * 2.0 + x,
    lambda x: x / x.shape[0] + jnp.arange(x.shape[0], dtype=jnp.float32)[:, None],
    lambda x: jax.lax.fori_loop(0, 3, lambda i, h: jnp.tanh(h * 1.5), x),
], ids=["concatenate-reversed", "last-row", "divide-by-batch", "fori-loop"])
def test_constants_from_the_dim_are_run_time_values(compiles, f) -> None:
    """Clamp bounds, offsets and the dim's value as data (a loop's carried dims, a division by
    it): integer constants affine in the dim become expressions of the run-time value."""
    exported = _export(f, "b, 4")
    model = fg.load(exported.mlir_module(), "local-task")
    assert model.main.dynamic and compiles[0] == 1
    for n in (1, 2, 3, 8, 31):
        x = RNG.standard_normal((n, 4)).astype(np.float32)
        assert_matches([model(x)], [np.asarray(exported.call(x))])
    assert compiles[0] == 1


@pytest.mark.parametrize("f, spec, reason", [
    (lambda x: x - x.sum(0), "b, 4", "reduces over the dynamic dim"),
    (lambda x: jnp.sort(x, axis=1), "b, 4", "SortBody) has no form with a run-time size"),
    (lambda x: jnp.tanh(x), "4, b", "inner position"),
], ids=["sum-over-batch", "sort", "inner-dim"])
def test_fallback_compiles_per_shape_and_stays_correct(compiles, f, spec, reason) -> None:
    exported = _export(f, spec)
    model = fg.load(exported.mlir_module(), "local-task")
    assert not model.main.dynamic and reason in model.main.dynamic_fallback
    assert compiles[0] == 0  # the attempt stops before code generation
    sizes = (1, 3, 3, 6)
    for n in sizes:
        shape = (n, 4) if spec.startswith("b") else (4, n)
        x = RNG.standard_normal(shape).astype(np.float32)
        assert_matches([model(x)], [np.asarray(exported.call(x))])
    assert compiles[0] == len(set(sizes))


def test_bad_inputs_are_fibergrid_errors(compiles) -> None:
    exported = _export(lambda x, y: jnp.tanh(x) * y, "b, 16", "b, 16")
    model = fg.load(exported.mlir_module(), "local-task")
    assert model.main.dynamic
    x = np.ones((3, 16), np.float32)
    with pytest.raises(fg.InvalidArgument, match=r"argument 0: expected \(\?, 16\) float32, got \(3, 16, 1\)"):
        model(x[..., None], x)
    with pytest.raises(fg.InvalidArgument, match=r"argument 1: expected \(\?, 16\) float32, got \(3, 15\)"):
        model(x, x[:, :15])
    with pytest.raises(fg.InvalidArgument, match=r"got \(3, 16\) float64"):
        model(x, x.astype(np.float64))
    # dims that must be equal and are not: jax.export's own check, as a fibergrid error
    with pytest.raises(fg.InvalidArgument, match=r"inconsistency between dimension size args\[1\].shape\[0\] \(= 4\)"):
        model(x, np.ones((4, 16), np.float32))
    with pytest.raises(fg.InvalidArgument, match="Expected value >= 1 for dimension variable 'b'"):
        model(x[:0], x[:0])
    assert_matches([model(x, 2 * x)], [np.asarray(exported.call(x, 2 * x))])


def test_fgx_carries_the_dynamic_function(compiles, tmp_path) -> None:
    exported = _export(mlp, "b, 48")
    program = executable.build(exported.mlir_module())
    path = tmp_path / "mlp.fgx"
    executable.save(program, path)
    assert compiles[0] == 1
    model = fg.load(path, "local-sync")
    assert model.main.dynamic
    x = RNG.standard_normal((33, 48)).astype(np.float32)
    want = np.asarray(exported.call(x))
    for batch in (1, 5, 33):
        assert_matches([model(x[:batch])], [want[:batch]])
    assert compiles[0] == 1  # nothing compiled at run time

    data = bytearray(path.read_bytes())
    data[8:12] = (2).to_bytes(4, "little")  # written by the previous format
    with pytest.raises(fg.InvalidArgument, match="format version 2; .*recompile the model"):
        executable.from_bytes(bytes(data), "old.fgx")


def test_damaged_dynamic_tables_are_refused(compiles) -> None:
    program = executable.build(_export(mlp, "b, 48").mlir_module())
    entry = program.functions["main"]
    dims = entry.dynamic.dynamic
    static_tensor = dims.tensors.index(0)
    bad_tables = [
        dataclasses.replace(dims, tensors=tuple(1 if i == static_tensor else s for i, s in enumerate(dims.tensors))),
        dataclasses.replace(dims, results=(2,) * len(dims.results)),
        dataclasses.replace(dims, grids=((dims.grids[0][0], ((0, 0), (1, 1), (0, 1))),)),
        dataclasses.replace(dims, tensors=dims.tensors[:-1]),
    ]
    for bad in bad_tables:
        entry.dynamic = dataclasses.replace(entry.dynamic, dynamic=bad)
        with pytest.raises(fg.InvalidArgument, match="dynamic"):
            executable.from_bytes(executable.to_bytes(program), "bad.fgx")


@pytest.mark.skipif("vulkan" not in fg.available_drivers(), reason="no Vulkan device here")
def test_gpu_driver_compiles_per_shape(compiles) -> None:
    """The code for every size is CPU code: on a GPU driver the function says so and is compiled
    per input shape, still correct."""
    exported = _export(mlp, "b, 48")
    device = fg.create_device("vulkan")
    try:
        model = fg.load(exported.mlir_module(), device)
        assert not model.main.dynamic and "vulkan driver" in model.main.dynamic_fallback
        for batch in (2, 5):
            x = RNG.standard_normal((batch, 48)).astype(np.float32)
            assert_matches([model(x)], [np.asarray(exported.call(x))])
        assert compiles[0] == 3  # once for every size (for CPU drivers), then 2 and 5
        model.close()
    finally:
        device.close()


def test_compile_cli_says_which_path(compiles, tmp_path, monkeypatch, capsys) -> None:
    from fibergrid import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "once.mlir").write_text(_export(mlp, "b, 48").mlir_module())
    (tmp_path / "per_shape.mlir").write_text(_export(lambda x: x - x.sum(0), "b, 4").mlir_module())
    assert cli.main(["compile", "once.mlir", "-o", "once.fgx"]) == 0
    assert "fibergrid: @main: dynamic dims compiled once, for every size" in capsys.readouterr().err
    assert cli.main(["compile", "per_shape.mlir", "-o", "per_shape.fgx"]) == 0
    assert "fibergrid: @main: compiled per input shape: kernel main_dispatch_0_reduction reduces over the dynamic dim" \
        in capsys.readouterr().err


def test_a_recurring_shape_gets_code_of_its_own(compiles) -> None:
    """fg.load(..., specialize_after=3): the fourth call at a shape compiles it (the fast path);
    other shapes keep the code for every size; results stay JAX's."""
    exported = _export(mlp, "b, 48")
    model = fg.load(exported.mlir_module(), "local-task", specialize_after=3)
    x = RNG.standard_normal((9, 48)).astype(np.float32)
    want = np.asarray(exported.call(x))
    for _ in range(3):
        assert_matches([model(x)], [want])
    assert compiles[0] == 1
    assert_matches([model(x)], [want])
    assert_matches([model.main.submit(x).result(timeout=30)], [want])
    assert compiles[0] == 2
    assert_matches([model(x[:4])], [want[:4]])
    assert compiles[0] == 2
    with pytest.raises(fg.InvalidArgument, match="specialize_after must be a positive number"):
        fg.load(exported.mlir_module(), "local-task", specialize_after=0)
