"""Batch scoring on a real local Ray instance (started here: `ray.init(num_cpus=2)`, once for
the module): Ray's results equal a single-process run exactly, an actor killed mid-run is
restarted and no row is lost or duplicated, and `fibergrid batch --ray` writes what `--local`
writes."""

from __future__ import annotations

import json
import os
import pathlib
import signal

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'fibergrid[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'fibergrid[ray]')")

import fibergrid as fg  # noqa: E402
from fibergrid import cli  # noqa: E402
from fibergrid.batch import data  # noqa: E402
from fibergrid.batch.local import score_local  # noqa: E402
from fibergrid.batch.model import BatchModel  # noqa: E402
from fibergrid.batch.predictor import Predictor  # noqa: E402
from fibergrid.batch.ray_runner import score_ray  # noqa: E402
from tests.batch.conftest import rows  # noqa: E402

REPO = str(pathlib.Path(__file__).resolve().parents[2])


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance for the module: 2 CPUs, no dashboard; workers import this test
    package (the killed-actor test's Predictor subclass lives here) and share the compile cache."""
    if ray.is_initialized():
        ray.shutdown()
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    if "FIBERGRID_CACHE_DIR" in os.environ:
        env["FIBERGRID_CACHE_DIR"] = os.environ["FIBERGRID_CACHE_DIR"]
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False,
             runtime_env={"env_vars": env})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def single_process(dynamic_mlir, dataset_1000, tmp_path_factory) -> dict[str, np.ndarray]:
    """The reference: the data set scored in this process, on one local device."""
    with fg.create_device("local-task", workers=1) as device:
        writer = data.Writer(str(tmp_path_factory.mktemp("reference")))
        score_local(BatchModel(dynamic_mlir, device=device), data.list_files(dataset_1000), writer, 64)
    return data.read_dataset(writer.directory)


def assert_same_rows(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    """Every row exactly once (by id) with bit-identical results."""
    assert sorted(got) == sorted(want)
    order = np.argsort(got["id"], kind="stable")
    np.testing.assert_array_equal(got["id"][order], want["id"])  # none lost, none duplicated
    for name in want:
        np.testing.assert_array_equal(got[name][order], want[name], err_msg=name)


def test_predictor_outside_ray(dynamic_mlir) -> None:
    affinity = os.sched_getaffinity(0)
    predictor = Predictor(dynamic_mlir, workers=1)
    out = predictor(rows(10))
    assert list(out) == ["id", "probs", "total"] and out["probs"].shape == (10, 3)
    assert predictor.placement()["cpus"] is None and os.sched_getaffinity(0) == affinity  # the caller is not pinned


def test_ray_two_actors_equal_single_process(cluster, dynamic_mlir, dataset_1000, single_process, tmp_path) -> None:
    writer = data.Writer(str(tmp_path / "ray"))
    n = score_ray(dynamic_mlir, data.list_files(dataset_1000), writer, 64, concurrency=2, num_cpus=1)
    assert n == 1000
    got = data.read_dataset(writer.directory)
    np.testing.assert_array_equal(got["id"], np.arange(1000))  # in data set order, too
    assert_same_rows(got, single_process)


def test_actors_size_and_pin_their_devices(cluster, dynamic_mlir) -> None:
    """Each actor's device has the workers Ray gave it CPUs, pinned to CPUs no other actor has."""
    actor = ray.remote(num_cpus=1)(Predictor)
    actors = [actor.remote(dynamic_mlir) for _ in range(2)]
    try:
        placements = ray.get([a.placement.remote() for a in actors], timeout=120)
    finally:
        for a in actors:
            ray.kill(a)
    assert [p["workers"] for p in placements] == [1, 1]
    cpus = [p["cpus"] for p in placements]
    if None not in cpus:  # claimed: disjoint (None: this machine gave too few CPUs to pin)
        assert len(set(cpus[0]) | set(cpus[1])) == 2, cpus
        assert [p["affinity"] for p in placements] == cpus


class DyingPredictor(Predictor):
    """A Predictor whose process kills itself (SIGKILL: no cleanup, as a crashed node would) on
    its second batch, once per test run (the marker file is created exclusively)."""

    def __init__(self, *args, marker: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.marker, self.calls = marker, 0

    def __call__(self, batch):
        self.calls += 1
        if self.calls == 2:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(batch)


def test_killed_actor_is_restarted_and_no_row_is_lost(cluster, dynamic_mlir, dataset_1000, single_process, tmp_path) -> None:
    from fibergrid.batch.ray_runner import dataset

    marker = str(tmp_path / "killed")
    ds = dataset(data.list_files(dataset_1000)).map_batches(
        DyingPredictor, fn_constructor_kwargs={"model": dynamic_mlir, "marker": marker},
        compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1, batch_size=50, batch_format="numpy",
        max_restarts=-1, max_task_retries=-1)
    got = data.concat(list(ds.iter_batches(batch_format="numpy", batch_size=None)))
    assert os.path.exists(marker), "no actor was killed"
    assert_same_rows(got, single_process)


def test_cli_ray_and_local_write_the_same_files(cluster, static_fgx, tmp_path, capsys) -> None:
    """The static-batch .fgx (padding on the actors; the model shipped as bytes), Parquet in
    and out, named columns given on the command line."""
    source = tmp_path / "in"
    source.mkdir()
    rng = np.random.default_rng(7)
    for i, n in enumerate((130, 70)):
        data.write_parquet(str(source / f"p{i}.parquet"), {
            "id": np.arange(n) + 1000 * i, "a": rng.standard_normal((n, 4)).astype(np.float32),
            "b": rng.standard_normal((n, 4)).astype(np.float32)})
    common = [static_fgx, "--input", str(source), "--inputs", "a,b", "--outputs", "y,argmax", "--keep", "id",
              "--batch-size", "48", "--rows-per-file", "64"]
    assert cli.main(["batch", *common, "--output", str(tmp_path / "local"), "--local"]) == 0
    assert cli.main(["batch", *common, "--output", str(tmp_path / "ray"), "--ray", "auto"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    local, remote = (json.loads(line) for line in lines)
    assert (local["mode"], remote["mode"], remote["actors"]) == ("local", "ray", 2)
    names = sorted(os.listdir(tmp_path / "local"))
    assert names == sorted(os.listdir(tmp_path / "ray")) == [f"part-0000{i}.parquet" for i in range(4)]
    for name in names:
        a, b = data.read_file(str(tmp_path / "local" / name)), data.read_file(str(tmp_path / "ray" / name))
        assert list(a) == list(b) == ["id", "y", "argmax"]
        for column in a:
            np.testing.assert_array_equal(a[column], b[column])
    whole = data.read_dataset(str(tmp_path / "ray"))
    src = data.read_dataset(str(source))
    np.testing.assert_array_equal(whole["y"], src["a"] * np.float32(2.0) + src["b"])


def test_cli_ray_bad_column_is_one_line(cluster, static_fgx, dataset_1000, tmp_path, capsys) -> None:
    """Checked on the driver before any actor starts."""
    assert cli.main(["batch", static_fgx, "--input", dataset_1000, "--output", str(tmp_path / "o"),
                     "--inputs", "x,nope", "--ray", "auto", "-q"]) == 1
    assert capsys.readouterr().err == ("fibergrid: error: no column 'nope' for input 1 of @main "
                                       "(columns: id, x)\n")


@pytest.mark.slow  # one more actor pool: ~20 s on 2 cores
def test_actor_error_is_the_fibergrid_error(cluster, dynamic_mlir, tmp_path) -> None:
    """No driver-side check here: the actors fail, and the caller sees their error, unwrapped."""
    np.savez(tmp_path / "q.npz", id=np.arange(3), q=np.zeros((3, 4), np.float32))
    with pytest.raises(fg.InvalidArgument, match=r"^no column 'x' for input 0 of @main \(columns: id, q\)$"):
        score_ray(dynamic_mlir, [str(tmp_path / "q.npz")], data.Writer(str(tmp_path / "o")), 8)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # Serve's controller and proxy add ~20 s of start-up on 2 cores
def test_serve_deployment_http_and_handle(cluster, dynamic_mlir) -> None:
    import urllib.error
    import urllib.request

    serve = pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'fibergrid[ray]')")
    from fibergrid.ray import deployment

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        handle = serve.run(deployment(dynamic_mlir, num_cpus=1), name="fibergrid-test", route_prefix="/score")
        batch = rows(5, seed=11)
        want = Predictor(dynamic_mlir, workers=1)(batch)
        got = handle.predict.remote(batch).result()
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
        body = json.dumps({"x": batch["x"].tolist(), "id": batch["id"].tolist()}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/score", data=body,
                                         headers={"Content-Type": "application/json"})
        reply = json.loads(urllib.request.urlopen(request, timeout=60).read())
        assert reply["id"] == batch["id"].tolist()
        np.testing.assert_array_equal(np.asarray(reply["probs"], np.float32), want["probs"])  # f32 -> JSON -> f32 is exact
        bad = urllib.request.Request(f"http://127.0.0.1:{port}/score", data=b'{"y": [1]}')
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(bad, timeout=60)
        assert error.value.code == 400
        assert json.loads(error.value.read()) == {"error": "no column 'x' for input 0 of @main (columns: y)"}
    finally:
        serve.shutdown()
