"""As a user runs it: `fibergrid compile DIR`, then `fibergrid run` and fg.load of the .fgx in a
process where TensorFlow cannot be imported; `fibergrid run DIR`; one-line errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.savedmodel.conftest import NEEDS_TF

tf = pytest.importorskip(*NEEDS_TF)

# Runs `code` in a fresh interpreter in which `import tensorflow` fails, as where it is not installed.
NO_TF = "import sys; sys.modules['tensorflow'] = None\n"
ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TF + code], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(cwd)})


def test_compile_then_run_without_tensorflow(saved_model, tmp_path, monkeypatch):
    """Compiled here (in process: a subprocess would import TensorFlow again), run in processes
    without it."""
    from fibergrid import cli

    path = saved_model("cnn")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["compile", path, "-o", "cnn.fgx", "--input-shape", "2x16x16x3"]) == 0
    x = np.random.default_rng(1).standard_normal((2, 16, 16, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    expected = tf.saved_model.load(path).signatures["serving_default"](inputs=tf.constant(x))["output_0"].numpy()

    run = _python("from fibergrid.cli import main\n"
                  "sys.exit(main(['run', 'cnn.fgx', '--input', '@x.npy', '--output', '@y.npy']))", tmp_path)
    assert run.returncode == 0, run.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=2e-5, atol=2e-5)

    load = _python("import numpy as np, fibergrid as fg\n"
                   "m = fg.load('cnn.fgx')\n"
                   "print([(i.name, i.shape) for i in m.inputs], [o.name for o in m.outputs])\n"
                   "np.save('z.npy', m.named(inputs=np.load('x.npy'))['output_0'])", tmp_path)
    assert load.returncode == 0, load.stderr
    assert load.stdout.strip() == "[('inputs', (2, 16, 16, 3))] ['output_0']"
    np.testing.assert_allclose(np.load(tmp_path / "z.npy"), expected, rtol=2e-5, atol=2e-5)


def test_run_directory_and_errors(saved_model, tmp_path, monkeypatch, capsys):
    """`fibergrid run DIR` compiles it (TensorFlow present); failures are one line, exit 1 (in
    process: a subprocess per case would import TensorFlow each time)."""
    from fibergrid import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", saved_model("subclassed"), "--input", "1x10xf32=0.5"]) == 0
    assert capsys.readouterr().out.startswith("result[0]: 1x10xf32=[")

    failing = [
        (["compile", saved_model("string_op"), "-o", "s.fgx"], r"fibergrid: error: .*TF op '[\w/]*AsString' \(AsString\) has no XLA kernel"),
        (["compile", saved_model("mlp"), "-o", "m.fgx", "--input-shape", "4xq"], r"fibergrid: error: --input-shape '4xq': expected SHAPE"),
        (["compile", saved_model("mlp"), "-o", "m.fgx", "--specialize", "main=4x12"], r"fibergrid: error: a SavedModel compiles one signature"),
        (["compile", saved_model("mlp"), "-o", "m.fgx", "--signature", "nope"], r"fibergrid: error: .*no signature 'nope' \(signatures: serving_default\)"),
    ]
    for args, match in failing:
        assert cli.main(args) == 1, args
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("fibergrid: error:")]
        assert len(errors) == 1 and re.match(match, errors[0]), (args, err)
        assert "Traceback" not in err


def test_without_tensorflow_the_directory_says_how_to_install(saved_model, tmp_path):
    proc = _python(f"import fibergrid as fg\nfg.load({saved_model('mlp')!r})", tmp_path)
    assert "reading SavedModels needs TensorFlow" in proc.stderr and "pip install 'fibergrid[tf]'" in proc.stderr
