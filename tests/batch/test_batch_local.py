"""Batch scoring without Ray: data sets, names, the BatchModel, the local runner, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

import fibergrid as fg
from fibergrid import cli
from fibergrid.batch import data
from fibergrid.batch.local import score_local
from fibergrid.batch.model import BatchModel
from fibergrid.batch.names import function_names
from tests.batch.conftest import jax, mlp, rows, two_inputs


@pytest.fixture(scope="module")
def device():
    with fg.create_device("local-task", workers=2) as dev:
        yield dev


def reference(x: np.ndarray) -> dict[str, np.ndarray]:
    """The MLP on JAX (a different compiler: equal to rounding, not bit for bit)."""
    return {k: np.asarray(v) for k, v in jax.jit(mlp)(x).items()}


def test_names_from_jax_text(dynamic_mlir) -> None:
    text = open(dynamic_mlir).read()
    assert function_names(text, "main", 1, 2) == (["x"], ["probs", "total"], True)
    lowered = jax.jit(two_inputs).lower(np.zeros((2, 4), np.float32), np.zeros((2, 4), np.float32))
    assert function_names(lowered.as_text(debug_info=True), "main", 2, 2) == (["a", "b"], ["result0", "result1"], True)
    assert function_names(lowered.as_text(), "main", 2, 2) == (["arg0", "arg1"], ["result0", "result1"], False)
    assert function_names(None, "main", 1, 1) == (["arg0"], ["result"], False)


def test_dynamic_model_sees_a_last_partial_batch(device, dynamic_mlir, dataset_1000, tmp_path) -> None:
    model = BatchModel(dynamic_mlir, device=device)
    out = data.Writer(str(tmp_path / "out"), rows_per_file=400)
    assert score_local(model, data.list_files(dataset_1000), out, batch_size=96) == 1000
    shapes = sorted(s[0][0] for s in model.function._prepared)
    assert shapes == [1000 % 96, 96]  # full batches across file boundaries, one partial last batch
    got = data.read_dataset(out.directory)
    src = data.read_dataset(dataset_1000)
    assert [len(data.read_file(p)["id"]) for p in out.files] == [400, 400, 200]
    np.testing.assert_array_equal(got["id"], np.arange(1000))
    want = reference(src["x"])
    np.testing.assert_allclose(got["probs"], want["probs"], rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(got["total"], want["total"], rtol=2e-6, atol=1e-6)
    # Batching never changes a row's bits: one big call gives the same numbers.
    whole = model({"x": src["x"]})
    np.testing.assert_array_equal(whole["probs"], got["probs"])


def test_static_model_pads_the_last_chunk(device, static_fgx) -> None:
    model = BatchModel(static_fgx, device=device, inputs=["a", "b"], outputs=["y", "argmax"])
    assert model.static_batch == 8 and model.input_names == ["a", "b"]
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((21, 4)).astype(np.float32), rng.standard_normal((21, 4)).astype(np.float32)
    out = model({"id": np.arange(21), "a": a, "b": b})
    assert list(out) == ["id", "y", "argmax"]
    np.testing.assert_array_equal(out["y"], a * np.float32(2.0) + b)
    np.testing.assert_array_equal(out["argmax"], np.argmax(a, axis=1).astype(np.int32))
    # Without names, columns map by position when there is one column per input.
    positional = BatchModel(static_fgx, device=device)
    assert positional.input_names == ["arg0", "arg1"] and not positional.named
    np.testing.assert_array_equal(positional({"p": a, "q": b})["result0"], out["y"])


def test_one_line_errors(device, dynamic_mlir, static_fgx, tmp_path) -> None:
    model = BatchModel(dynamic_mlir, device=device)
    x = rows(5)["x"]
    with pytest.raises(fg.InvalidArgument, match=r"^no column 'x' for input 0 of @main \(columns: id, y\)$"):
        model({"id": np.arange(5), "y": x})
    with pytest.raises(fg.InvalidArgument, match=r"^column 'x': dtype float64, but input 0 of @main takes float32"):
        model({"x": x.astype(np.float64)})
    with pytest.raises(fg.InvalidArgument, match=r"^column 'x': rows of shape \(3,\), but input 0 of @main takes rows of \(4,\)"):
        model({"x": x[:, :3]})
    with pytest.raises(fg.InvalidArgument, match="has no input names: pass inputs="):
        BatchModel(static_fgx, device=device)({"id": np.arange(8), "a": x, "b": x})
    with pytest.raises(fg.InvalidArgument, match=r"^result 'total' would overwrite the kept column 'total'"):
        model({"x": x, "total": np.arange(5)})
    with pytest.raises(fg.InvalidArgument, match=r"^no column 'nope' to keep"):
        BatchModel(dynamic_mlir, device=device, keep=["nope"])({"x": x})
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(fg.InvalidArgument, match=r"^cannot read '.*bad.npz': not an .npz file"):
        data.read_file(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "uneven.npz", x=x, id=np.arange(4))
    with pytest.raises(fg.InvalidArgument, match=r"columns have different row counts \(x: 5, id: 4\)"):
        data.read_file(str(tmp_path / "uneven.npz"))
    np.savez(tmp_path / "f32.npz", x=x, id=np.arange(5))
    np.savez(tmp_path / "f64.npz", x=x.astype(np.float64), id=np.arange(5))
    with pytest.raises(fg.InvalidArgument, match=r"^'.*f64.npz': column 'x' is float64 rows of \(4,\), but in '.*f32.npz' float32"):
        data.check_consistent([str(tmp_path / "f32.npz"), str(tmp_path / "f64.npz")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(fg.InvalidArgument, match="holds no .npy, .npz or .parquet files"):
        data.list_files(str(tmp_path / "empty"))


def test_parquet_round_trip_keeps_tensor_shapes(tmp_path) -> None:
    pytest.importorskip("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    batch = {"id": np.arange(6), "t": np.arange(6 * 2 * 3, dtype=np.float32).reshape(6, 2, 3)}
    data.write_parquet(str(tmp_path / "a.parquet"), batch)
    back = data.read_file(str(tmp_path / "a.parquet"))
    assert back["t"].shape == (6, 2, 3) and back["t"].dtype == np.float32
    np.testing.assert_array_equal(back["t"], batch["t"])
    assert data.describe(str(tmp_path / "a.parquet")) == (6, {"id": (np.dtype(np.int64), ()), "t": (np.dtype(np.float32), (2, 3))})
    pq.write_table(pa.table({"v": pa.array([[1.0, 2.0], [3.0]])}), tmp_path / "ragged.parquet")
    with pytest.raises(fg.InvalidArgument, match="column 'v' has rows of different lengths"):
        data.read_file(str(tmp_path / "ragged.parquet"))
    pq.write_table(pa.table({"s": ["a", "b"]}), tmp_path / "text.parquet")
    with pytest.raises(fg.InvalidArgument, match="column 's' of type string is not numeric"):
        data.read_file(str(tmp_path / "text.parquet"))


def test_cli_batch_local(dynamic_mlir, dataset_1000, tmp_path, capsys) -> None:
    out = tmp_path / "scored"
    assert cli.main(["batch", dynamic_mlir, "--input", dataset_1000, "--output", str(out), "--local",
                     "--batch-size", "128", "--workers", "1"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["rows"] == 1000 and summary["mode"] == "local" and summary["rows_per_s"] > 0
    assert "1,000/1,000 rows" in captured.err and "rows/s" in captured.err
    got = data.read_dataset(str(out))
    assert sorted(got) == ["id", "probs", "total"]
    np.testing.assert_array_equal(got["id"], np.arange(1000))
    # The same output directory again: refused, one line.
    assert cli.main(["batch", dynamic_mlir, "--input", dataset_1000, "--output", str(out), "-q"]) == 1
    assert capsys.readouterr().err.startswith("fibergrid: error: output directory")
    for argv, message in [
        (["--input", str(tmp_path / "missing")], "cannot read"),
        (["--input", dataset_1000, "--inputs", "q"], "no column 'q' for input 0 of @main (columns: id, x)"),
        (["--input", dataset_1000, "--batch-size", "0"], "--batch-size 0 must be >= 1"),
    ]:
        assert cli.main(["batch", dynamic_mlir, "--output", str(tmp_path / "o2"), "-q", *argv]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


def test_onnx_model_scores_by_its_graph_names(device, tmp_path) -> None:
    """An ONNX model's columns are its input names and its results its output names; the rows
    match what ONNX Runtime gave for them (tests/onnx/models, made by tests/onnx/make_models.py)."""
    models = "tests/onnx/models"
    ref = np.load(f"{models}/resnet_tiny.npz")
    pixels = np.concatenate([ref["in0_pixel_values"], ref["in1_pixel_values"]])
    np.savez(tmp_path / "rows.npz", pixel_values=pixels, id=np.arange(3))
    model = BatchModel(f"{models}/resnet_tiny.onnx", device=device)
    assert model.input_names == ["pixel_values"] and model.named
    out = data.Writer(str(tmp_path / "out"), rows_per_file=10)
    assert score_local(model, data.list_files(str(tmp_path / "rows.npz")), out, batch_size=2) == 3
    got = data.read_dataset(out.directory)
    assert sorted(got) == ["id", "logits"]
    want = np.concatenate([ref["out0_logits"], ref["out1_logits"]])
    np.testing.assert_allclose(got["logits"], want, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(want).max()))


def test_cli_batch_corrupted_onnx_is_fg_loads_error(dataset_1000, tmp_path, capsys) -> None:
    """A corrupted .onnx is refused in one line: fg.load's message."""
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\x08\x07")
    try:
        fg.load(str(model))
    except Exception as e:  # noqa: BLE001 — the message fg.load gives, compared below
        expected = str(e).splitlines()[0]
    else:
        pytest.skip("fg.load accepts this ONNX stub")
    assert cli.main(["batch", str(model), "--input", dataset_1000, "--output", str(tmp_path / "o"), "-q"]) == 1
    assert capsys.readouterr().err.strip() == f"fibergrid: error: {expected}"



def test_cpu_claims_are_disjoint_until_exhausted(tmp_path) -> None:
    """Actors on one node claim CPUs through per-CPU lock files: no CPU twice, None when none
    is left (the actor then runs unpinned)."""
    import os

    from fibergrid.batch import cpus

    available = sorted(os.sched_getaffinity(0))
    claimed = [cpus.claim(1, str(tmp_path)) for _ in available]
    assert sorted(c[0] for c in claimed) == available
    assert cpus.claim(1, str(tmp_path)) is None
    assert cpus.claim(len(available) + 1, str(tmp_path / "other")) is None
