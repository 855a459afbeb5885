"""The outputs people open: the Chrome/Perfetto trace (checked against the trace-event format's
rules and against what ran), the PNG timeline (a real PNG of the asked size) and the JSON."""

from __future__ import annotations

import json

import pytest

import fibergrid as fg
from fibergrid.profile import chrome, report, timeline
from fibergrid.profile.analysis import analyse
from fibergrid.profile.findings import explain
from tests.profile import trace_format
from tests.profile.kernels import profile_calls, record


@pytest.fixture(scope="module")
def capture():
    with fg.create_device("local-task", workers=2) as device:
        cb, _ = record(device, [(24, 20_000), (3, 20_000)])
        yield profile_calls(device, cb, calls=3)


def test_chrome_trace_follows_the_format_and_shows_what_ran(capture, tmp_path):
    path = tmp_path / "trace.json"
    chrome.write([capture], str(path))
    events = trace_format.check(json.loads(path.read_text()))
    slices = [e for e in events if e["ph"] == "X" and e.get("cat") != "host"]
    assert len(slices) == len(capture.events)
    ranges = [e["args"]["workgroups"] for e in slices]
    covered = sum(int(r.split(",")[1].strip(" )")) - int(r.split(",")[0].strip("[ ")) for r in ranges)
    assert covered == 3 * (24 + 3)
    names = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names[0] == "worker 0" and names[1] == "worker 1"
    for tid in {e["tid"] for e in slices}:  # workers, and the host where the caller helps
        assert names[tid] in ("worker 0", "worker 1", "host (runs work)")
    # a flow arrow from each submission to the first reservation of each of its dispatches
    assert sum(1 for e in events if e["ph"] == "s") == 3 * 2
    counters = [e for e in events if e["ph"] == "C"]
    assert counters and max(e["args"]["busy workers"] for e in counters) <= len(capture.counters)
    assert counters[-1]["args"]["busy workers"] == 0
    assert sum(1 for e in events if e.get("name", "").startswith("call ")) == 3


def test_png_is_a_real_image_of_the_asked_size(capture, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "timeline.png"
    timeline.write(capture, analyse(capture), str(path), size=(900, 300))
    assert timeline.png_size(str(path)) == (900, 300)
    assert path.stat().st_size > 5000  # bars and text, not an empty canvas


def test_json_report_round_trips(capture):
    a = analyse(capture)
    doc = json.loads(json.dumps(report.as_json([(a, explain(a))], module="m")))
    assert doc["module"] == "m"
    (device,) = doc["devices"]
    assert sorted(d["workgroups_per_call"] for d in device["dispatches"]) == [3, 24]
    assert {"busy_ns", "spin_ns", "parked_ns", "runnable_ns", "steals", "parks", "wakes"} <= set(device["lanes"][0])


def test_text_report_has_every_table(capture):
    a = analyse(capture)
    text = report.text(a, explain(a))
    for heading in ("Workers", "Dispatches", "Where a call's", "Critical path", "Findings"):
        assert heading in text


def test_untimed_trace_draws_arrows_from_the_calls(tmp_path):
    with fg.create_device("local-task", workers=2) as device:
        cb, _ = record(device, [(8, 1000), (2, 1000)])
        capture = profile_calls(device, cb, calls=3, host_timing=False)
    path = tmp_path / "trace.json"
    chrome.write([capture], str(path))
    events = trace_format.check(json.loads(path.read_text()))
    assert not [e for e in events if e.get("name", "").startswith("submit #")]  # no host timestamps
    starts = [e for e in events if e["ph"] == "s"]
    calls = {e["ts"] for e in events if e.get("name", "").startswith("call ")}
    assert len(starts) == 3 * 2 and {e["ts"] for e in starts} <= calls
