"""The `fibergrid` command line: compile, run with each input syntax, --output .npy files and
benchmark JSON as a user runs them (a subprocess); failures as one line with exit status 1
(in-process, where a subprocess per case would cost a second each, plus one real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fibergrid import cli
from tests.compiler.test_fgx import TWO_FUNCTIONS

ROOT = Path(__file__).resolve().parents[1]


def fibergrid(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fibergrid.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})


def assert_one_line_error(proc: subprocess.CompletedProcess, match: str) -> None:
    assert proc.returncode == 1, proc
    assert proc.stderr.startswith("fibergrid: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert match in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A directory with model.mlir compiled to model.fgx (the compile command under test)."""
    path = tmp_path_factory.mktemp("cli")
    (path / "model.mlir").write_text(TWO_FUNCTIONS)
    proc = fibergrid("compile", "model.mlir", "-o", "model.fgx", cwd=path)
    assert proc.returncode == 0 and proc.stderr == "", proc
    return path


def test_run_with_splat_bracketed_and_npy_inputs(workdir: Path) -> None:
    np.save(workdir / "x.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    proc = fibergrid("run", "model.fgx", "--device", "local-task", "--workers", "2", "--function", "main",
                     "--input", "2x3xf32=1", "--input", "@x.npy", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "result[0]: 2x3xf32=[1 2 3][4 5 6]\n"
    proc = fibergrid("run", "model.mlir", "--function", "twice", "--input", "4xi32=[1 2][3 4]", cwd=workdir)
    assert proc.stdout == "result[0]: 4xi32=[2 4 6 8]\nresult[1]: 4xi32=[2 8 18 32]\n", proc.stderr


def test_outputs_go_to_npy_files_in_order(workdir: Path) -> None:
    proc = fibergrid("run", "model.fgx", "--function", "twice", "--input", "4xi32=3",
                     "--output", "@a.npy", "--output", "@b.npy", cwd=workdir)
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    np.testing.assert_array_equal(np.load(workdir / "a.npy"), np.full(4, 6, np.int32))
    np.testing.assert_array_equal(np.load(workdir / "b.npy"), np.full(4, 18, np.int32))


def test_benchmark_prints_json(workdir: Path) -> None:
    proc = fibergrid("benchmark", "model.fgx", "--device", "local-sync", "--input", "2x3xf32=1",
                     "--input", "2x3xf32=2", "--repetitions", "20", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["device"] == "local-sync" and report["repetitions"] == 20
    assert 0 < report["min_us"] <= report["median_us"] <= report["p90_us"]


@pytest.mark.parametrize("args, match", [
    (["run", "model.fgx", "--input", "2x3xf32=1"], "main: takes 2 arguments, got 1"),
    (["run", "model.fgx", "--input", "3x3xf32=1", "--input", "2x3xf32=1"], "argument 0: expected (2, 3) float32, got (3, 3)"),
    (["run", "model.fgx", "--input", "2x3xf99=1"], "unknown element type 'f99'"),
    (["run", "model.fgx", "--input", "2x3xf32=[1 2]"], "2 values for shape (2, 3)"),
    (["run", "model.fgx", "--input", "@missing.npy"], "cannot read a .npy array"),
    (["run", "model.fgx", "--function", "nope"], "no public function 'nope'"),
    (["run", "missing.fgx"], "cannot read 'missing.fgx'"),
    (["run", "model.mlir", "--device", "no-such-driver"], "no driver named 'no-such-driver'"),
    (["compile", "model.onnx", "-o", "x.fgx"], "cannot read 'model.onnx'"),
    (["compile", "model.mlir"], "required: -o/--output"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_failures_are_one_line_and_exit_1(workdir: Path, args: list[str], match: str, capsys, monkeypatch) -> None:
    monkeypatch.chdir(workdir)
    code = cli.main(args)
    assert_one_line_error(subprocess.CompletedProcess(args, code, *capsys.readouterr()), match)


def test_damaged_fgx_and_bad_mlir(workdir: Path) -> None:
    (workdir / "cut.fgx").write_bytes((workdir / "model.fgx").read_bytes()[:300])
    assert_one_line_error(fibergrid("run", "cut.fgx", cwd=workdir), "cut.fgx: truncated")
    (workdir / "bad.mlir").write_text("module { func.func public @main(%a: tensor<2xf32>) -> tensor<2xf32> { %0 = stablehlo.frob")
    assert_one_line_error(fibergrid("compile", "bad.mlir", "-o", "bad.fgx", cwd=workdir), "fibergrid: error: ")


def test_compile_specializes_dynamic_functions_ahead_of_time(tmp_path: Path, monkeypatch) -> None:
    jax = pytest.importorskip("jax")
    from compiler import executable

    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, 4"), jax.numpy.float32)
    (tmp_path / "dyn.mlir").write_text(jax.export.export(jax.jit(lambda x: x * 2.0))(spec).mlir_module())
    monkeypatch.chdir(tmp_path)
    assert cli.main(["compile", "dyn.mlir", "-o", "dyn.fgx", "--specialize", "main=3x4", "--specialize", "main=5x4"]) == 0
    program = executable.load("dyn.fgx")
    assert sorted(program.functions["main"].specializations) == [((3, 4),), ((5, 4),)]
    assert program.source is not None  # other batch sizes compile at call time
