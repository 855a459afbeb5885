"""Chrome / Perfetto trace-event JSON (the "JSON Array/Object Format" of the Trace Event Format
document, which chrome://tracing and ui.perfetto.dev both open).

One process per device, one thread track per worker lane plus one per host thread; a complete
("X") slice per workgroup reservation named after its dispatch with the workgroup range in args;
on the host tracks the calls, submissions and waits; flow arrows ("s" -> "f", bound to the
enclosing slices) from each submission to the first reservation of each of its dispatches; and
a counter track ("C") of how many lanes are inside a kernel. Timestamps are microseconds from
the start of the profile; events are sorted by time, parents before their children.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from fibergrid.profile.collect import DeviceCapture
from fibergrid.profile.naming import CommandInfo

HOST_TID_BASE = 1000  # host threads' tracks come after the worker lanes


def _name(cap: DeviceCapture, serial: int, command: int) -> tuple[str, CommandInfo | None]:
    sub = cap.submissions.get(serial)
    prog = cap.programs.get(sub.program) if sub else None
    info = prog.commands[command] if prog and command < len(prog.commands) else None
    return (info.name if info else f"command {command}"), info


def trace_events(captures: list[DeviceCapture]) -> list[dict[str, Any]]:
    """The trace events of every capture, sorted as the format wants them."""
    if not captures:
        return []
    origin = min(c.start_ns for c in captures)

    def us(ns: int | float) -> float:
        return (ns - origin) / 1e3  # integer ns / 1000: prints as microseconds with 3 decimals

    events: list[dict[str, Any]] = []
    flow_id = 0
    for pid, cap in enumerate(captures, 1):
        events.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": f"{cap.label} ({cap.driver})"}})
        lanes = max([len(cap.counters)] + ([int(cap.events["worker"].max()) + 1] if len(cap.events) else []))
        for w in range(lanes):
            label = (cap.lane_names[w] if w < len(cap.lane_names) else
                     f"worker {w}" if w < cap.workers else "host (runs work)")
            events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": w, "args": {"name": label}})
            events.append({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": w, "args": {"sort_index": w}})
        host_tids = sorted({s.thread for s in cap.submissions.values() if s.thread >= 0} | {w.thread for w in cap.waits})
        host_track = {t: HOST_TID_BASE + i for i, t in enumerate(host_tids)}
        for t, tid in host_track.items():
            events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": f"host thread {t}"}})
            events.append({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": tid, "args": {"sort_index": tid}})
        main_host = host_track[host_tids[0]] if host_tids else HOST_TID_BASE
        if not host_tids and cap.calls:
            events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": main_host, "args": {"name": "host (calls)"}})
        for i, call in enumerate(cap.calls):
            events.append({"name": f"call {i}", "cat": "host", "ph": "X", "ts": us(call.start_ns),
                           "dur": (call.end_ns - call.start_ns) / 1e3, "pid": pid, "tid": main_host})
        for wait in cap.waits:
            events.append({"name": "wait", "cat": "host", "ph": "X", "ts": us(wait.start_ns),
                           "dur": (wait.end_ns - wait.start_ns) / 1e3, "pid": pid, "tid": host_track[wait.thread]})
        ev = cap.events
        first_of: dict[int, dict[int, int]] = {}  # serial -> command -> its first reservation
        for i in np.argsort(ev["start_ns"], kind="stable"):
            first_of.setdefault(int(ev["serial"][i]), {}).setdefault(int(ev["command"][i]), int(i))
        # Per event: ts and dur from numpy in one pass, names looked up once per (serial, command).
        ts_list = ((ev["start_ns"] - origin) / 1e3).tolist()
        dur_list = ((ev["end_ns"] - ev["start_ns"]) / 1e3).tolist()
        named: dict[tuple[int, int], tuple[str, CommandInfo | None]] = {}
        for serial, command, first, end, worker, ts, dur in zip(ev["serial"].tolist(), ev["command"].tolist(), ev["first"].tolist(),
                                                               ev["end"].tolist(), ev["worker"].tolist(), ts_list, dur_list):
            key = (serial, command)
            if key not in named:
                named[key] = _name(cap, serial, command)
            name, info = named[key]
            args = {"workgroups": f"[{first}, {end})", "submission": serial, "command": command}
            if info is not None:
                args["entry"] = info.entry
                if info.source is not None:
                    args["source ops"] = ", ".join(info.source.ops)
            events.append({"name": name, "cat": info.kind if info else "dispatch", "ph": "X", "ts": ts, "dur": dur,
                           "pid": pid, "tid": worker, "args": args})
        call_starts = np.array([c.start_ns for c in cap.calls], np.int64)
        for sub in cap.submissions.values():
            if sub.submit_ns >= 0:
                tid, origin_ns = host_track.get(sub.thread, main_host), sub.submit_ns
                events.append({"name": f"submit #{sub.serial}", "cat": "host", "ph": "X", "ts": us(sub.submit_ns),
                               "dur": 0.001, "pid": pid, "tid": tid})
            else:  # not timed from the host (collect.Recorder): the arrows start at the call
                firsts = first_of.get(sub.serial)
                if not firsts:
                    continue
                began = min(int(ev["start_ns"][i]) for i in firsts.values())
                j = int(np.searchsorted(call_starts, began, "right")) - 1
                if j < 0 or cap.calls[j].end_ns < began:
                    continue  # no call of the profiler's own encloses it (a program's submission)
                tid, origin_ns = main_host, cap.calls[j].start_ns
            for i in first_of.get(sub.serial, {}).values():
                flow_id += 1
                events.append({"name": "submit", "cat": "flow", "ph": "s", "id": flow_id, "ts": us(origin_ns),
                               "pid": pid, "tid": tid})
                events.append({"name": "submit", "cat": "flow", "ph": "f", "bp": "e", "id": flow_id,
                               "ts": us(ev["start_ns"][i]), "pid": pid, "tid": int(ev["worker"][i])})
        # Counter: lanes inside a kernel, at every change (the level after the last change at
        # each distinct time).
        if len(ev):
            times = np.concatenate([ev["start_ns"], ev["end_ns"]])
            steps = np.concatenate([np.ones(len(ev), np.int64), -np.ones(len(ev), np.int64)])
            order = np.lexsort((steps, times))  # at equal times an end before a start
            times, level = times[order], np.cumsum(steps[order])
            last = np.append(times[1:] != times[:-1], True)
            for t, n in zip(((times[last] - origin) / 1e3).tolist(), level[last].tolist()):
                events.append({"name": "busy workers", "ph": "C", "ts": t, "pid": pid, "tid": 0, "args": {"busy workers": n}})
    metadata = [e for e in events if e["ph"] == "M"]
    timed = [e for e in events if e["ph"] != "M"]
    # By time; at equal times the longer slice (the parent) first, flow ends after their slice.
    timed.sort(key=lambda e: (e["ts"], e["ph"] == "f", -e.get("dur", 0)))
    return metadata + timed


def write(captures: list[DeviceCapture], path: str) -> None:
    """Writes the trace as {"traceEvents": [...], "displayTimeUnit": "ns"}."""
    doc = {"traceEvents": trace_events(captures), "displayTimeUnit": "ns",
           "otherData": {"generator": "fibergrid profile"}}
    text = json.dumps(doc, separators=(",", ":"))  # the C encoder: json.dump streams in Python, 5x slower
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
