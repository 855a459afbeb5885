"""As a user runs it: `fibergrid compile DIR`, then `fibergrid run` and fg.load of the .fgx in a
process where TensorFlow cannot be imported; `fibergrid run DIR`; one-line errors; a clear
error where TensorFlow is missing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.savedmodel.conftest import ROOT, needs_tf, reference

pytestmark = needs_tf

# Makes `import tensorflow` fail, as where it is not installed (first on PYTHONPATH; the export's
# child process inherits it).
HIDE_TF = "raise ImportError(\"No module named 'tensorflow'\")\n"


def _python(code: str, cwd: Path, hide_tf: bool = True) -> subprocess.CompletedProcess:
    hidden = cwd / "no-tensorflow"
    (hidden / "tensorflow").mkdir(parents=True, exist_ok=True)
    (hidden / "tensorflow" / "__init__.py").write_text(HIDE_TF)
    path = [str(hidden)] if hide_tf else []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path + [str(ROOT)]), HOME=str(cwd))
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_compile_then_run_without_tensorflow(models_dir, tmp_path, monkeypatch):
    """Compiled here with the CLI, run in processes without TensorFlow."""
    from fibergrid import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["compile", str(models_dir / "cnn"), "-o", "cnn.fgx", "--input-shape", "2x16x16x3"]) == 0
    inputs, expected = reference(models_dir, "cnn", "serving_default", [(2, 16, 16, 3)])
    np.save(tmp_path / "x.npy", inputs["inputs"])

    run = _python("import sys\nfrom fibergrid.cli import main\n"
                  "sys.exit(main(['run', 'cnn.fgx', '--input', '@x.npy', '--output', '@y.npy']))", tmp_path)
    assert run.returncode == 0, run.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected["output_0"], rtol=2e-5, atol=2e-5)

    load = _python("import numpy as np, fibergrid as fg\n"
                   "m = fg.load('cnn.fgx')\n"
                   "print([(i.name, i.shape) for i in m.inputs], [o.name for o in m.outputs])\n"
                   "np.save('z.npy', m.named(inputs=np.load('x.npy'))['output_0'])", tmp_path)
    assert load.returncode == 0, load.stderr
    assert load.stdout.strip() == "[('inputs', (None, 16, 16, 3))] ['output_0']"  # the batch: a dynamic dim
    np.testing.assert_allclose(np.load(tmp_path / "z.npy"), expected["output_0"], rtol=2e-5, atol=2e-5)


def test_run_directory_and_errors(models_dir, tmp_path, monkeypatch, capsys):
    """`fibergrid run DIR` compiles it; failures are one line, exit 1."""
    from fibergrid import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", str(models_dir / "subclassed"), "--input", "1x10xf32=0.5"]) == 0
    assert capsys.readouterr().out.startswith("result[0]: 1x10xf32=[")

    mlp = str(models_dir / "mlp")
    failing = [
        (["compile", str(models_dir / "string_op"), "-o", "s.fgx"], r"fibergrid: error: .*TF op '[\w/]*AsString' \(AsString\) has no XLA kernel"),
        (["compile", mlp, "-o", "m.fgx", "--input-shape", "4xq"], r"fibergrid: error: --input-shape '4xq': expected SHAPE"),
        (["compile", mlp, "-o", "m.fgx", "--specialize", "main=4x12"], r"fibergrid: error: a SavedModel compiles one signature"),
        (["compile", "model.mlir", "-o", "m.fgx", "--signature", "x"], r"fibergrid: error: --signature and --input-shape are for SavedModel"),
    ]
    for args, match in failing:
        assert cli.main(args) == 1, args
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("fibergrid: error:")]
        assert len(errors) == 1 and re.match(match, errors[0]), (args, err)
        assert "Traceback" not in err


def test_without_tensorflow_the_directory_says_how_to_install(models_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FIBERGRID_CACHE_DIR", str(tmp_path / "fresh-cache"))  # no export of it cached
    proc = _python(f"import fibergrid as fg\nfg.load({str(models_dir / 'mlp')!r})", tmp_path)
    assert "reading SavedModels needs TensorFlow" in proc.stderr and "pip install 'fibergrid[tf]'" in proc.stderr


def test_a_directory_loaded_before_loads_without_tensorflow(models_dir, tmp_path, monkeypatch):
    """The export is cached by the model's contents: a later process loading the same directory
    starts no TensorFlow (here it has none); a changed model is exported again."""
    import shutil

    import fibergrid as fg

    monkeypatch.setenv("FIBERGRID_CACHE_DIR", str(tmp_path / "cache"))
    model = tmp_path / "mlp"
    shutil.copytree(models_dir / "mlp", model)
    inputs, expected = reference(models_dir, "mlp", "serving_default", [(4, 12)])
    np.save(tmp_path / "x.npy", inputs["inputs"])
    fg.load(str(model)).close()  # exported by TensorFlow, and cached

    load = _python("import numpy as np, fibergrid as fg\n"
                   f"m = fg.load({str(model)!r})\n"
                   "np.save('y.npy', m.named(inputs=np.load('x.npy'))['output_0'])", tmp_path)
    assert load.returncode == 0, load.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected["output_0"], rtol=2e-5, atol=2e-5)

    variables = sorted((model / "variables").glob("variables.data-*"))[0]
    variables.write_bytes(variables.read_bytes()[:-4] + b"\0\0\0\0")  # another model now
    again = _python(f"import fibergrid as fg\nfg.load({str(model)!r})", tmp_path)
    assert "reading SavedModels needs TensorFlow" in again.stderr
