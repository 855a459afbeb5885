"""What cannot be compiled is one CompileError naming the signature and the TF op, never a
TensorFlow traceback; bad arguments name what was wrong."""

from __future__ import annotations

import pytest

import fibergrid as fg
from compiler.errors import CompileError
from compiler.frontends.savedmodel import compile_saved_model
from tests.savedmodel.conftest import needs_tf

pytestmark = needs_tf


@pytest.mark.parametrize("name,match", [
    ("string_op", r"signature 'serving_default': TF op '[\w/]*AsString' \(AsString\) has no XLA kernel"),
    ("stateful_random", r"signature 'serving_default': TF op '[\w/]*RandomUniform' \(RandomUniform\) is a stateful random op"),
    ("data_dependent", r"signature 'serving_default': output\(s\) 'y' have a data-dependent shape"),
    ("unknown_rank", r"signature 'serving_default': input 'x' has unknown rank"),
])
def test_unexportable_model(models_dir, name, match):
    with pytest.raises(CompileError, match=match) as info:
        compile_saved_model(str(models_dir / name))
    assert "Traceback" not in str(info.value) and len(str(info.value).splitlines()) == 1


def test_bad_arguments(models_dir, tmp_path):
    path = str(models_dir / "two_by_name")
    with pytest.raises(CompileError, match=r"no signature 'missing' \(signatures: other, serving_default\)"):
        compile_saved_model(path, "missing")
    with pytest.raises(fg.InvalidArgument, match=r"input 'weights' is declared \(None, 3\), got shape \(2, 4\)"):
        compile_saved_model(path, input_shapes=[((3,), (2, 4))])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CompileError, match="not a SavedModel directory"):
        fg.load(tmp_path / "empty")
