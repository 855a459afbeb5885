"""The Trace Event Format's rules (the document chrome://tracing and Perfetto implement), as a
checker: the profiler's JSON must pass it."""

from __future__ import annotations

from typing import Any

PHASES = {"X", "B", "E", "M", "C", "s", "t", "f", "i", "I"}


def check(doc: Any) -> list[dict]:
    """Raises AssertionError naming the first broken rule; returns the events."""
    assert isinstance(doc, dict) and isinstance(doc.get("traceEvents"), list), "object form with traceEvents"
    assert doc.get("displayTimeUnit", "ms") in ("ms", "ns")
    events = doc["traceEvents"]
    last_ts: dict[tuple[int, int], float] = {}
    open_b: dict[tuple[int, int], list[str]] = {}
    flows: dict[Any, list[str]] = {}
    stacks: dict[tuple[int, int], list[float]] = {}  # per track: end times of the open X slices
    for i, e in enumerate(events):
        where = f"event {i} {e}"
        assert isinstance(e.get("name"), str) and e.get("ph") in PHASES, where
        assert isinstance(e.get("pid"), int) and isinstance(e.get("tid"), int), where
        if e["ph"] == "M":
            assert isinstance(e.get("args"), dict), where
            continue
        assert isinstance(e.get("ts"), (int, float)) and e["ts"] >= 0, where
        track = (e["pid"], e["tid"])
        assert e["ts"] >= last_ts.get(track, float("-inf")), f"timestamps go back on track {track}: {where}"
        last_ts[track] = e["ts"]
        if e["ph"] == "X":
            assert isinstance(e.get("dur"), (int, float)) and e["dur"] >= 0, where
            # slices on one track nest or follow each other, never overlap partly
            stack = stacks.setdefault(track, [])
            while stack and stack[-1] <= e["ts"]:
                stack.pop()
            assert not stack or e["ts"] + e["dur"] <= stack[-1] + 1e-6, f"partial overlap on track {track}: {where}"
            stack.append(e["ts"] + e["dur"])
        elif e["ph"] == "B":
            open_b.setdefault(track, []).append(e["name"])
        elif e["ph"] == "E":
            assert open_b.get(track), f"E without B: {where}"
            open_b[track].pop()
        elif e["ph"] == "C":
            assert isinstance(e.get("args"), dict) and all(isinstance(v, (int, float)) for v in e["args"].values()), where
        elif e["ph"] in "stf":
            assert "id" in e, where
            flows.setdefault(e["id"], []).append(e["ph"])
    assert not any(open_b.values()), f"B without E: {open_b}"
    for fid, phases in flows.items():
        assert phases[0] == "s" and phases[-1] == "f", f"flow {fid}: {phases}"
    return events
