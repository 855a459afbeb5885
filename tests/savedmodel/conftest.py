"""The SavedModel tests need TensorFlow (the `tf` extra); without it they skip, saying so.

TensorFlow is never imported into the test process: the models and TensorFlow's reference
outputs are made by `python -m tests.savedmodel.models` in a child process, once per session,
and fibergrid's own export runs in a child too. (TensorFlow and the vulkan driver in one
process crash, and the whole suite runs in one.)"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.savedmodel import cases

HAVE_TF = importlib.util.find_spec("tensorflow") is not None
needs_tf = pytest.mark.skipif(not HAVE_TF, reason="TensorFlow is not installed (pip install 'fibergrid[tf]')")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """Every model of models.py saved, with TensorFlow's reference outputs, by a child process."""
    directory = tmp_path_factory.mktemp("savedmodels")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "tests.savedmodel.models", str(directory)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return directory


def reference(models_dir: Path, name: str, signature: str, shapes) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(inputs by name, TensorFlow's outputs by key) of a case in models.REFERENCES."""
    with np.load(cases.reference_file(str(models_dir), name, signature, shapes)) as data:
        return ({k[3:]: data[k] for k in data.files if k.startswith("in/")},
                {k[4:]: data[k] for k in data.files if k.startswith("out/")})
