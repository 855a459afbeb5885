"""GPU profiling: the vulkan driver's timestamp queries (hal_gpu/vulkan/timestamps.py) and
`fibergrid profile --device vulkan`, on lavapipe or a real GPU; skipped where no Vulkan device
exists."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

import fibergrid as fg
from common.errors import Aborted
from fibergrid import cli
from tests.hal import kernels as K
from tests.hal.helpers import TIMEOUT, submit
from tests.profile import trace_format
from tests.profile.test_cli import model  # noqa: F401  (the fixture)

pytestmark = pytest.mark.skipif("vulkan" not in fg.available_drivers(), reason="no Vulkan device")


@pytest.fixture
def device():
    dev = fg.create_device("vulkan")
    dev.enable_timestamps()
    try:
        yield dev
    finally:
        dev.close()


def _saxpy_twice(device, n: int = 300):
    x = device.allocator.import_array(np.arange(n, dtype=np.float32))
    y = device.allocator.import_array(np.zeros(n, np.float32))
    cb = device.create_command_buffer("reusable")
    cb.fill(y.buffer, 0, None, np.float32(1.0))
    cb.execution_barrier()
    cb.dispatch(K.saxpy, "saxpy", (-(-n // 64),), [2.0], [x, y])
    cb.execution_barrier()
    cb.dispatch(K.saxpy, "saxpy", (-(-n // 64),), [3.0], [x, y])
    cb.end()
    return cb, y, n


def test_every_dispatch_of_every_run_is_timed_inside_its_submission(device):
    cb, y, n = _saxpy_twice(device)
    windows = []
    for _ in range(3):
        before = time.monotonic_ns()
        submit(device, [cb]).wait(1, timeout=TIMEOUT)
        windows.append((before, time.monotonic_ns()))
    np.testing.assert_array_equal(y.to_numpy(), 1 + 5 * np.arange(n, dtype=np.float32))
    events, submissions = device.timestamp_events()
    assert len(events) == 6 and len(submissions) == 3
    slack = device.timestamps.calibration_ns + 1_000_000  # the clock mapping's error, and 1 ms of rounding
    for serial, (lo, hi) in zip(sorted(submissions), windows):
        mine = events[events["serial"] == serial]
        assert sorted(mine["command"].tolist()) == [1, 2]  # the fill is command 0; barriers are not commands
        assert (mine["end"] - mine["first"]).tolist() == [math.ceil(n / 64)] * 2
        assert np.all(mine["start_ns"] <= mine["end_ns"])
        assert mine["start_ns"].min() >= lo - slack and mine["end_ns"].max() <= hi + slack
        assert lo <= submissions[serial][0] <= hi
        assert submissions[serial][2] == (cb.id,)


def test_commands_are_counted_across_the_command_buffers_of_a_submission(device):
    first, _, _ = _saxpy_twice(device)
    second, _, _ = _saxpy_twice(device)
    submit(device, [first, second]).wait(1, timeout=TIMEOUT)
    events, _ = device.timestamp_events()
    assert sorted(events["command"].tolist()) == [1, 2, 4, 5]  # each command buffer: fill, saxpy, saxpy


def test_a_dispatch_a_failure_skipped_leaves_no_event(device):
    out = device.allocator.allocate_view((16,), np.int32)
    cb = device.create_command_buffer()
    cb.dispatch(K.fail_at, "fail_at", (4, 4), [0, 1, 2], [out])
    cb.execution_barrier()
    cb.fill(out.buffer, 0, None, np.int32(0))
    cb.execution_barrier()
    cb.dispatch(K.fail_at, "fail_at", (4, 4), [0, 1, 2], [out])
    cb.end()
    with pytest.raises(Aborted):
        submit(device, [cb]).wait(1, timeout=TIMEOUT)
    events, _ = device.timestamp_events()
    assert events["command"].tolist() == [0]


def test_command_buffers_lowered_before_timestamps_are_not_timed():
    dev = fg.create_device("vulkan")
    try:
        cb, _, _ = _saxpy_twice(dev)
        dev.enable_timestamps()
        submit(dev, [cb]).wait(1, timeout=TIMEOUT)
        events, submissions = dev.timestamp_events()
        assert len(events) == 0 and len(submissions) == 1
        dev.disable_timestamps()
        assert len(dev.timestamp_events()[0]) == 0
    finally:
        dev.close()


def test_profile_a_model_on_vulkan(model, tmp_path, capsys):  # noqa: F811
    trace = tmp_path / "gpu.json"
    code = cli.main(["profile", str(model), "--input", "8x64xf32=0.5", "--device", "vulkan", "--repetitions", "4",
                     "--trace", str(trace), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    (dev,) = doc["devices"]
    assert dev["driver"] == "vulkan" and [lane["name"] for lane in dev["lanes"]] == ["gpu queue"]
    matmuls = [d for d in dev["dispatches"] if d["kind"] == "matmul"]
    assert len(matmuls) == 2 and all(d["calls"] == 4 and d["name"].startswith("dot_general") for d in matmuls)
    assert all(d["total_ns"] > 0 for d in dev["dispatches"])
    trace_format.check(json.loads(trace.read_text()))
