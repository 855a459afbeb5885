"""Real TF2-style models, saved with tf.saved_model.save, compiled and matched against
TensorFlow's own outputs: Keras functional and subclassed models, an LSTM and a GRU, a
tf.TensorArray loop; the signature's names on the module and in the .fgx."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from compiler import executable
from compiler.frontends.savedmodel import compile_saved_model, export, program_from
from tests.savedmodel.cases import FEEDFORWARD, LOOPS, TWO_BATCHES, UNSEEN_BATCHES
from tests.savedmodel.conftest import needs_tf, reference

pytestmark = needs_tf

def _check(module: fg.Module, models_dir, name: str, shapes, signature: str = "serving_default") -> None:
    inputs, expected = reference(models_dir, name, signature, shapes)
    got = module.named(**inputs)
    assert list(got) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=2e-5, atol=2e-5, err_msg=key)


def _saved(program: executable.Program, tmp_path) -> fg.Module:
    """The program written to an .fgx and loaded back (the names travel in it)."""
    executable.save(program, tmp_path / "model.fgx")
    return fg.load(tmp_path / "model.fgx")


@pytest.mark.parametrize("name,shapes", FEEDFORWARD, ids=[n for n, _ in FEEDFORWARD])
def test_feedforward_model_matches_tensorflow(models_dir, name, shapes, tmp_path):
    """The unknown batch compiles once for every size (and for the shapes asked for)."""
    module = _saved(compile_saved_model(str(models_dir / name), input_shapes=[tuple(shapes)]), tmp_path)
    assert module.main.dynamic
    assert [i.shape for i in module.inputs] == [(None, *s[1:]) for s in shapes]
    _check(module, models_dir, name, shapes)


@pytest.mark.parametrize("name,shapes", UNSEEN_BATCHES, ids=[f"{n}-{s[0][0]}" for n, s in UNSEEN_BATCHES])
def test_unknown_batch_runs_at_sizes_never_compiled(models_dir, name, shapes, compiles):
    """A signature's unknown batch (None) compiles to a dynamic dim: fg.load(dir) compiles it,
    and batch sizes nobody asked for run without a compile, matching TensorFlow."""
    module = fg.load(models_dir / name)
    assert module.main.dynamic and module.inputs[0].shape[0] is None
    loaded = compiles[0]
    _check(module, models_dir, name, shapes)
    assert compiles[0] == loaded


@pytest.mark.parametrize("name,shapes", LOOPS, ids=[n for n, _ in LOOPS])
def test_loop_model_matches_tensorflow(models_dir, name, shapes, tmp_path):
    """The loops arrive as `stablehlo.while` and run as fibergrid loops."""
    exported = export(str(models_dir / name), input_shapes=[tuple(shapes)])
    assert "stablehlo.while" in exported.texts[0][1]
    _check(_saved(program_from(exported), tmp_path), models_dir, name, shapes)


def test_load_directory_compiles_unknown_batch_once(models_dir):
    """fg.load(dir) of a Keras MLP (batch None): one function for every batch size; the names
    are the signature's input name and output key."""
    module = fg.load(models_dir / "mlp")
    assert module.main.dynamic
    assert [(i.name, i.shape) for i in module.inputs] == [("inputs", (None, 12))]
    assert [(o.name, o.shape) for o in module.outputs] == [("output_0", (None, 5))]
    for shapes in ([(1, 12)], [(4, 12)], [(7, 12)]):
        _check(module, models_dir, "mlp", shapes)
    with pytest.raises(fg.InvalidArgument, match=r"'inputs'\): expected \(\?, 12\) float32, got \(2, 11\)"):
        module(np.zeros((2, 11), np.float32))


def test_load_directory_compiles_a_recurrent_batch_as_one(models_dir, capfd):
    """An LSTM's batch cannot be a run-time value (its loop carries (batch, units) state behind the
    time dim): fg.load(dir) compiles the unknown batch as 1, said on stderr, and refuses another."""
    module = fg.load(models_dir / "lstm")
    assert not module.main.dynamic and "not its leading dim" in module.main.dynamic_fallback
    assert "compiled for 1x6x4" in capfd.readouterr().err
    assert [(i.name, i.shape) for i in module.inputs] == [("inputs", (1, 6, 4))]
    with pytest.raises(fg.InvalidArgument, match=r"expected \(1, 6, 4\) float32, got \(2, 6, 4\)"):
        module(np.zeros((2, 6, 4), np.float32))


def test_keras_export_keeps_input_names(models_dir, tmp_path):
    """Keras 3's `model.export` keeps the Input layer's name (tf.saved_model.save says 'inputs')."""
    module = _saved(compile_saved_model(str(models_dir / "keras_export"), input_shapes=[((3, 12),)]), tmp_path)
    assert [i.name for i in module.inputs] == ["features"]
    _check(module, models_dir, "keras_export", [(3, 12)])


def test_names_sorted_and_several_input_shapes(models_dir, tmp_path):
    """Inputs and outputs by name (sorted, TensorFlow's flattening order), another signature by
    name, two batch sizes in one .fgx: the batch dim stays dynamic and both run."""
    module = _saved(compile_saved_model(str(models_dir / "two_by_name"), "other", [tuple(s) for s in TWO_BATCHES]), tmp_path)
    assert [(i.name, i.shape) for i in module.inputs] == [("bias", (3,)), ("weights", (None, 3))]
    assert [(o.name, o.shape) for o in module.outputs] == [("mean", (None,)), ("sum", (None, 3))]
    for s in TWO_BATCHES + [[(3,), (4, 3)]]:  # 4: compiled for neither, run by the code for every size
        _check(module, models_dir, "two_by_name", s, "other")
    assert module.main.dynamic
