"""`fibergrid profile` as a user runs it: on a JAX-exported model (tables named after the model's
ops, the trace, the PNG, --json), on a whole program (`-- python app.py`), and bad input as one
clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fibergrid import cli
from fibergrid.profile import timeline
from tests.profile import trace_format

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A small MLP as JAX prints it with debug locations (as a user would export it)."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    rng = np.random.default_rng(0)
    w1, w2 = (rng.standard_normal(s).astype(np.float32) / 16 for s in ((64, 256), (256, 32)))

    def mlp(x):
        h = jnp.maximum(x @ w1, 0.0)
        return jnp.tanh(h @ w2).sum(axis=1)

    path = tmp_path_factory.mktemp("profile") / "mlp.mlir"
    path.write_text(jax.jit(mlp).lower(np.zeros((8, 64), np.float32)).as_text(debug_info=True))
    return path


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fibergrid.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_profile_a_model_prints_tables_and_writes_trace_and_png(model, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    trace, png = tmp_path / "t.json", tmp_path / "t.png"
    code = cli.main(["profile", str(model), "--input", "8x64xf32=0.5", "--device", "local-task", "--workers", "2",
                     "--repetitions", "5", "--trace", str(trace), "--png", str(png), "--png-size", "1000x400"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "5 calls" in out and "dot_general" in out and "Findings" in out
    assert "main_dispatch_" not in out.split("Dispatches")[1].split("Where")[0]  # named after source ops
    trace_format.check(json.loads(trace.read_text()))
    assert timeline.png_size(str(png)) == (1000, 400)


def test_profile_json_has_flops_of_the_matmuls(model, capsys):
    assert cli.main(["profile", str(model), "--input", "8x64xf32=0.5", "--repetitions", "3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["repetitions"] == 3
    (device,) = doc["devices"]
    matmuls = sorted(d["flops"] for d in device["dispatches"] if d["kind"] == "matmul")
    # x @ w1 with relu folded in (2mnk + one op per output), then h @ w2 (tanh is its own region)
    assert matmuls == sorted([2 * 8 * 64 * 256 + 8 * 256, 2 * 8 * 256 * 32])
    assert all(d["calls"] == 3 for d in device["dispatches"])


def test_an_fgx_is_named_from_its_source(model, tmp_path, capsys):
    fgx = tmp_path / "mlp.fgx"
    assert cli.main(["compile", str(model), "-o", str(fgx)]) == 0
    assert cli.main(["profile", str(fgx), "--input", "8x64xf32=0.5", "--repetitions", "2"]) == 0
    assert "main_dispatch_0_matmul" in capsys.readouterr().out  # no source in a static .fgx
    assert cli.main(["profile", str(fgx), "--source", str(model), "--input", "8x64xf32=0.5", "--repetitions", "2"]) == 0
    table = capsys.readouterr().out.split("Dispatches")[1].split("Where")[0]
    assert "dot_general" in table and "main_dispatch_" not in table


@pytest.mark.parametrize("args, match", [
    (["--function", "nope"], "no public function 'nope'"),
    (["--input", "8x64xq9=1"], "--input '8x64xq9=1'"),
    (["--input", "8x64xf32=1", "--repetitions", "0"], "--repetitions 0 must be >= 1"),
    (["--input", "8x64xf32=1", "--png", "x.png", "--png-size", "big"], "--png-size 'big'"),
    (["--input", "8x64xf32=1", "--source", "/nonexistent.mlir"], "--source /nonexistent.mlir: cannot read"),
])
def test_bad_input_is_one_line(model, args, match, capsys):
    assert cli.main(["profile", str(model), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fibergrid: error: ") and err.count("\n") == 1 and match in err, err


def test_profile_a_whole_program(model, tmp_path):
    """`fibergrid profile -- python app.py`: every device the script makes is traced, and its
    kernels are named after the model's ops because it loaded StableHLO through fg.load."""
    app = tmp_path / "app.py"
    app.write_text(
        "import sys, numpy as np, fibergrid as fg\n"
        "m = fg.load(sys.argv[1], device='local-task')\n"
        "for _ in range(6):\n"
        "    m(np.full((8, 64), 0.5, np.float32))\n"
        "print('app ran')\n")
    trace = tmp_path / "app.json"
    proc = run("profile", "--trace", str(trace), "--", sys.executable, str(app), str(model), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "app ran" in proc.stdout
    assert "6 submissions" in proc.stdout and "dot_general" in proc.stdout
    trace_format.check(json.loads(trace.read_text()))


def test_program_that_fails_passes_its_status_on(tmp_path):
    proc = run("profile", "--", sys.executable, "-c", "raise SystemExit(3)", cwd=tmp_path)
    assert proc.returncode == 3
    assert "no fibergrid CPU device ran work" in proc.stdout


def test_every_device_of_a_program_is_profiled_even_one_closed_early(tmp_path):
    """Two devices: one closed by the program (captured as it closes), one left open (captured at
    exit, before the scheduler stops its workers); hand-written kernels keep their entry names."""
    app = tmp_path / "devices.py"
    app.write_text(
        "import numpy as np, fibergrid as fg\n"
        "from tests.profile.kernels import record\n"
        "def run(device, workgroups, n):\n"
        "    cb, _ = record(device, [(workgroups, 1000)])\n"
        "    sem = device.create_semaphore(0)\n"
        "    for i in range(1, n + 1):\n"
        "        device.queue_execute([cb], signal=[(sem, i)])\n"
        "        sem.wait(i, 60)\n"
        "with fg.create_device('local-task', workers=2) as first:\n"
        "    run(first, 12, 3)\n"
        "second = fg.create_device('local-sync')\n"
        "run(second, 5, 2)\n")
    proc = run("profile", "--json", "--", sys.executable, str(app), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    devices = {d["driver"]: d for d in doc["devices"]}
    assert set(devices) == {"local-task", "local-sync"}
    assert devices["local-task"]["submissions"] == 3 and devices["local-sync"]["submissions"] == 2
    assert [d["workgroups_per_call"] for d in devices["local-task"]["dispatches"]] == [12]
    assert [d["name"] for d in devices["local-sync"]["dispatches"]] == ["burn"]
