"""The report: the analysis as text tables (for people) or a JSON document (for scripts)."""

from __future__ import annotations

import dataclasses
from typing import Any

from fibergrid.profile.analysis import Analysis
from fibergrid.profile.findings import Finding

NAME_WIDTH = 56


def _us(ns: float) -> str:
    return f"{ns / 1e3:,.1f}"


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:5.1f}" if whole > 0 and part >= 0 else "    -"


def _table(headers: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """Columns padded to their widest cell; the first `left` columns left-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]


def _short(name: str) -> str:
    """Long names keep their head (the op) and their tail (where a path of scopes, as ONNX node
    names and Python file:lines are, says the most)."""
    if len(name) <= NAME_WIDTH:
        return name
    head = name.split(" ", 1)[0][:16]
    return f"{head} …{name[-(NAME_WIDTH - len(head) - 2):]}"


def text(a: Analysis, findings: list[Finding]) -> str:
    """The tables and findings of one device, as `fibergrid profile` prints them."""
    lanes = ", ".join(l.name for l in a.lanes) if a.lanes and not a.lanes[0].name.startswith("worker") else \
        f"{sum(1 for l in a.lanes if l.name != 'host')} worker threads"
    out = [f"== {a.device} ({a.driver}, {lanes}): "
           f"{a.calls} calls, {a.submissions} submissions, {a.wall_ns / 1e6:,.1f} ms profiled"]
    if a.call_ns:
        calls = sorted(a.call_ns)
        out.append(f"call: median {_us(calls[len(calls) // 2])} us, min {_us(calls[0])} us, max {_us(calls[-1])} us")
    out += ["", "Workers (% of the profiled wall time; 'preempted' overlaps the others)"]
    rows = []
    for lane in a.lanes:
        rows.append([lane.name, _pct(lane.busy_ns, a.wall_ns), _pct(lane.spin_ns, a.wall_ns), _pct(lane.parked_ns, a.wall_ns),
                     _pct(lane.other_ns, a.wall_ns) if lane.name == "host" else "", _pct(lane.runnable_ns, a.wall_ns),
                     str(lane.workgroups), str(lane.reservations), str(lane.steals), str(lane.parks),
                     str(lane.wakes) if lane.wakes >= 0 else "-",
                     _us(lane.wake_latency_ns) if lane.wake_latency_ns is not None else "-"])
    out += _table(["lane", "busy%", "spin/sched%", "parked%", "host other%", "preempted%", "workgroups", "reservations",
                   "steals", "parks", "wakes", "wake us"], rows)
    if a.launch_ns:
        lat = sorted(a.launch_ns)
        out.append(f"submit -> first workgroup: median {_us(lat[len(lat) // 2])} us (p90 {_us(lat[int(0.9 * (len(lat) - 1))])} us)"
                   + (f"; last workgroup -> host wakes: median {_us(sorted(a.completion_ns)[len(a.completion_ns) // 2])} us"
                      if a.completion_ns else ""))
    out += ["", "Dispatches (time: first workgroup start to last end, per call)"]
    rows = []
    for d in a.dispatches:
        spread = "/".join(str(v) for v in d.per_worker.values())
        rows.append([_short(d.name), d.kind, str(d.calls), _us(d.total_ns), _us(d.mean_ns), f"{100 * d.share:5.1f}",
                     f"{d.workgroups_per_call:g}", spread, f"{d.balance:.2f}",
                     f"{d.gflops:.2f}" if d.gflops is not None else "-", f"{d.gbytes:.2f}" if d.gbytes is not None else "-"])
    out += _table(["dispatch", "kind", "calls", "total us", "mean us", "share%", "wg/call", "wg per lane",
                   "balance", "GFLOP/s", "GB/s"], rows, left=2)
    b = a.breakdown
    if b:
        out += ["", f"Where a call's {_us(b.wall)} us went (mean of {b.calls} calls"
                    + (", the slowest tenth left out)" if b.calls < a.calls - (1 if a.first_call else 0) else ")")]
        if b.timed:
            parts = [("host before submit (Python, copies in)", b.host_before), ("launch: submit -> first workgroup", b.launch),
                     ("kernels (>= 1 worker in a kernel)", b.kernels), ("between regions (barriers, no kernel)", b.gaps),
                     ("completion: last workgroup -> host wakes", b.completion), ("host after (copies out, Python)", b.host_after)]
        else:
            parts = [("before the first workgroup (host, copies in, submit, wake)", b.host_before),
                     ("kernels (>= 1 worker in a kernel)", b.kernels), ("between regions (barriers, no kernel)", b.gaps),
                     ("after the last workgroup (host wake, copies out)", b.completion)]
        out += _table(["part", "us", "%"], [[k, _us(v), _pct(v, b.wall)] for k, v in parts])
        if not b.timed:
            out.append("(--host-timing splits host work from launch and completion latency, for 2-5 us a call)")
        out.append(f"worker idle while kernels run: {100 * b.lane_idle:.0f} %")
    if a.critical_path:
        out += ["", "Critical path of the median call (regions run one after another)"]
        rows = [[str(s.region), _short(s.name), _us(s.start_ns), _us(s.duration_ns), str(s.workgroups), str(s.lanes)]
                for s in a.critical_path[:40]]
        out += _table(["region", "last to finish", "start us", "us", "workgroups", "workers"], rows, left=2)
        if len(a.critical_path) > 40:
            out.append(f"... {len(a.critical_path) - 40} more regions")
    out += ["", "Findings (most important first)"]
    out += [f"{i}. {f.text}" for i, f in enumerate(findings, 1)] or ["none: nothing stands out"]
    out += [f"note: {n}" for n in a.notes]
    return "\n".join(out)


def as_json(analyses: list[tuple[Analysis, list[Finding]]], **meta: Any) -> dict[str, Any]:
    """One JSON-able document: `meta` (module, function, ...) and per device its numbers."""
    return {**meta, "devices": [{**dataclasses.asdict(a), "findings": [dataclasses.asdict(f) for f in fs]}
                                for a, fs in analyses]}
