"""Analysis: a DeviceCapture turned into the numbers the report prints.

Everything here is computed from measurements, never assumed:

- per worker lane: *busy* is the sum of its trace events (time inside kernels); *spinning and
  scheduling* is its on-CPU time (schedstat) minus busy (claiming, stealing, the bounded spin);
  *waiting for a core* is the kernel's runnable-but-not-running time (other processes on a
  shared machine); *parked* is the rest of the wall time (futex sleep, nothing to do);
- per dispatch: one *instance* per (submission, command); its time is the span from its first
  workgroup's start to its last one's end, its workgroups the sum of the reservations' ranges;
- per call: the host's call boundaries (or, for a program profiled from outside, each
  submission from its submit to the host wait that saw it complete) split into host before
  submit, launch (submit -> first workgroup: the wake of a parked worker), kernels, gaps between
  regions (barriers), completion (last workgroup -> the host's wait returns) and host after.
  Without host timing (the default: nothing runs per call) the host's part is what passes
  before the first workgroup and after the last; a program profiled from outside then has no
  host view of its calls at all, only the device's.
"""

from __future__ import annotations

import statistics
from typing import Any
from dataclasses import dataclass, field

import numpy as np

from fibergrid.profile.collect import Call, DeviceCapture
from fibergrid.profile.naming import CommandInfo


@dataclass
class Lane:
    """A worker thread, or the host thread that runs work itself (local-sync; local-task where
    the caller helps). busy + spin + parked + other = the window's wall time; `runnable`
    overlaps them (ready but another process had the core: inside a kernel it counts as busy)."""

    name: str
    busy_ns: int  # inside kernels (trace events)
    spin_ns: int  # awake in the scheduler outside kernels: claiming, stealing, spinning (-1: unknown)
    parked_ns: int  # asleep in the scheduler with nothing to do (-1: unknown)
    runnable_ns: int  # waiting for a core (-1: unknown)
    workgroups: int
    reservations: int
    steals: int
    parks: int
    wakes: int  # parks that ended in a wake (native counter), else voluntary context switches
    other_ns: int = 0  # the host lane: outside the scheduler (Python, copies, the program)
    wake_latency_ns: float | None = None  # mean wake issued -> running again, where measured


@dataclass
class DispatchStats:
    name: str
    entry: str
    kind: str
    calls: int
    total_ns: int
    mean_ns: float
    share: float  # of the calls' wall time
    workgroups_per_call: float
    per_worker: dict[str, int]  # workgroups run per lane, over all calls
    balance: float  # per call: its workgroups per lane that could run at once / the busiest lane's (1 = even), mean
    busy_ns: int  # worker time inside it (sum of reservation durations)
    gflops: float | None
    gbytes: float | None
    flops: int | None
    bytes: int
    ops: tuple[str, ...] = ()
    lanes_per_call: float = 1.0  # distinct lanes that ran some of it, mean over calls


@dataclass
class CallBreakdown:
    """Mean ns per call in each category; they add up to `wall`."""

    wall: float
    host_before: float
    launch: float
    kernels: float
    gaps: float
    completion: float
    host_after: float
    lane_idle: float  # fraction of lane time idle while kernels were running (0..1)
    calls: int = 0  # calls averaged (the slowest tenth is left out where there are 10 or more)
    timed: bool = True  # False: no host timestamps (collect.Recorder): host_before is everything
    # before the first workgroup (host, submit, wake) and completion everything after the last


@dataclass
class CriticalStep:
    region: int
    name: str  # the dispatch that finished last in the region
    start_ns: int  # from the call's start
    duration_ns: int
    workgroups: int
    lanes: int  # distinct lanes that ran work in the region


@dataclass
class Analysis:
    device: str
    driver: str
    lanes: list[Lane]
    wall_ns: int
    calls: int
    call_ns: list[int]
    dispatches: list[DispatchStats]
    breakdown: CallBreakdown | None
    critical_path: list[CriticalStep]
    launch_ns: list[int]  # submit -> first workgroup, per submission
    completion_ns: list[int]  # last workgroup -> host wait returned, per wait that slept
    dropped_events: int
    submissions: int
    regions_per_call: float = 0.0
    notes: list[str] = field(default_factory=list)
    first_call: dict | None = None  # the categories of a warm-up first call left out of `breakdown`


def _lane_names(cap: DeviceCapture) -> list[str]:
    if cap.lane_names:
        return list(cap.lane_names)
    slots = max([len(cap.counters)] + ([int(cap.events["worker"].max()) + 1] if len(cap.events) else []))
    return [f"worker {w}" if w < cap.workers else "host" for w in range(slots)]


def _merged(times: list) -> object | None:
    """The host lane's threads' CPU accounting, summed."""
    if not times:
        return None
    t = times[0]
    for x in times[1:]:
        t = type(t)(t.on_cpu_ns + x.on_cpu_ns, t.runnable_ns + x.runnable_ns, t.voluntary + x.voluntary,
                    t.involuntary + x.involuntary)
    return t


def _lanes(cap: DeviceCapture) -> list[Lane]:
    """Per lane. Busy is the trace's time in kernels. The rest is split by the kernel's
    per-thread accounting, which is exact at both ends of the window (cumulative counters read
    at both instants): off-CPU and not runnable is parked (asleep), the remainder awake in the
    scheduler, or for the host its own work (less the scheduler's own spin clock where it keeps
    one). The scheduler's per-participant clocks (parked_ns, spin_ns, wakes, wake_ns) are
    credited when a park or spin *ends*, so a park that spans the window's edge would count
    wrongly: they split the time only where the kernel's accounting is missing, and give the
    wake count and latency, which do not have that problem."""
    names = _lane_names(cap)
    out = []
    ev = cap.events
    wall = cap.wall_ns
    for w, name in enumerate(names):
        mine = ev[ev["worker"] == w]
        busy = min(wall, int((mine["end_ns"] - mine["start_ns"]).sum()))
        c = cap.counters[w] if w < len(cap.counters) else {}
        host = w >= cap.workers
        t = _merged(list(cap.host_threads.values())) if host else (cap.worker_threads[w] if w < len(cap.worker_threads) else None)
        runnable = t.runnable_ns if t is not None else -1
        native = "parked_ns" in c and "spin_ns" in c
        other = 0
        if t is not None and t.on_cpu_ns >= 0:
            parked = min(wall - busy, max(0, wall - t.on_cpu_ns - max(0, runnable)))
            awake = wall - busy - parked
            spin = min(c["spin_ns"], awake) if host and native else (awake if not host else 0)
            other = awake - spin if host else 0
        elif native:
            parked = min(c["parked_ns"], wall - busy)
            spin = min(c["spin_ns"] + max(0, c.get("busy_ns", busy) - busy), wall - busy - parked)
            residue = wall - busy - spin - parked
            other, spin = (residue, spin) if host else (0, spin + residue)
        else:
            spin = parked = -1
        wakes = c["wakes"] if "wakes" in c else (t.voluntary if t is not None else -1)
        latency = c["wake_ns"] / c["wakes"] if c.get("wakes") and "wake_ns" in c else None
        out.append(Lane(name, busy, spin, parked, runnable, int((mine["end"] - mine["first"]).sum()), len(mine),
                        c.get("steals", 0), c.get("parks", 0), wakes, other, latency))
    return out


class _BySerial:
    """The events grouped by submission serial once, so that per-call and per-submission
    questions cost a slice, not a scan of every event (a long profile has millions)."""

    def __init__(self, ev: np.ndarray) -> None:
        self.ev = ev[np.argsort(ev["serial"], kind="stable")]
        self.serials, first = np.unique(self.ev["serial"], return_index=True)
        self.bounds = np.append(first, len(self.ev))
        self.first_start = np.minimum.reduceat(self.ev["start_ns"], first) if len(first) else np.zeros(0, np.int64)
        self.last_end = np.maximum.reduceat(self.ev["end_ns"], first) if len(first) else np.zeros(0, np.int64)
        self.index = {int(x): i for i, x in enumerate(self.serials)}

    def rows(self, serials: list[int]) -> np.ndarray:
        parts = [self.ev[self.bounds[i]:self.bounds[i + 1]] for i in (self.index.get(x) for x in serials) if i is not None]
        return parts[0] if len(parts) == 1 else (np.concatenate(parts) if parts else self.ev[:0])

    def span(self, serial: int) -> tuple[int, int] | None:
        i = self.index.get(serial)
        return None if i is None else (int(self.first_start[i]), int(self.last_end[i]))

    def issued(self, sub: Any) -> int:
        """When a submission was made: its host timestamp, or where it was not timed (see
        collect.Recorder) when its first workgroup started."""
        if sub.submit_ns >= 0:
            return sub.submit_ns
        span = self.span(sub.serial)
        return span[0] if span else -1


def _calls(cap: DeviceCapture, by: _BySerial) -> list[Call]:
    """The host's own call boundaries, or one per submission: submit -> the wait that saw it."""
    if cap.calls:
        return list(cap.calls)
    waits: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for w in sorted(cap.waits, key=lambda w: w.end_ns):
        waits.setdefault(w.thread, ([], []))
        waits[w.thread][0].append(w.end_ns)
        waits[w.thread][1].append(w.start_ns)
    out = []
    for sub in sorted(cap.submissions.values(), key=by.issued):
        span = by.span(sub.serial)
        if span is None:
            continue
        issued, last = by.issued(sub), span[1]
        end = last
        if sub.thread in waits:  # the submitting thread's wait that saw the work complete
            ends, starts = waits[sub.thread]
            j = int(np.searchsorted(ends, last))  # ended after the work, began before it ended
            while j < len(ends) and starts[j] > last:
                j += 1
            if j < len(ends):
                end = ends[j]
        out.append(Call(issued, max(end, last)))
    return out


def _union_ns(starts: np.ndarray, ends: np.ndarray) -> int:
    """Length of the union of intervals (time when at least one lane was in a kernel)."""
    if not len(starts):
        return 0
    order = np.argsort(starts)
    s, e = starts[order], np.maximum.accumulate(ends[order])
    gaps = np.maximum(0, s[1:] - e[:-1])  # a gap where an interval starts after all before it ended
    return int(e[-1] - s[0] - gaps.sum())


def _command(cap: DeviceCapture, serial: int, command: int) -> CommandInfo | None:
    sub = cap.submissions.get(serial)
    if sub is None:
        return None
    prog = cap.programs.get(sub.program)
    return prog.commands[command] if prog is not None and command < len(prog.commands) else None


def _dispatches(cap: DeviceCapture, names: list[str], call_wall: int, skip: set[int]) -> list[DispatchStats]:
    """Per dispatch site (program, command); submissions in `skip` (a warm-up call) left out.
    One instance is one (submission, command): its events reduced in one vectorised pass."""
    ev = cap.events
    if skip:
        ev = ev[~np.isin(ev["serial"], list(skip))]
    if not len(ev):
        return []
    e = ev[np.lexsort((ev["command"], ev["serial"]))]
    change = np.flatnonzero((np.diff(e["serial"]) != 0) | (np.diff(e["command"]) != 0)) + 1
    idx = np.concatenate([[0], change])
    spans = np.maximum.reduceat(e["end_ns"], idx) - np.minimum.reduceat(e["start_ns"], idx)
    wgs = e["end"] - e["first"]
    busy = np.add.reduceat(e["end_ns"] - e["start_ns"], idx)
    group = np.repeat(np.arange(len(idx)), np.diff(np.append(idx, len(e))))
    n_lanes = max(len(names), int(e["worker"].max()) + 1)
    per_lane = np.zeros((len(idx), n_lanes), np.int64)
    np.add.at(per_lane, (group, e["worker"]), wgs)
    ran = np.zeros((len(idx), n_lanes), bool)
    ran[group, e["worker"]] = True
    # Balance of one instance: its workgroups over the lanes that could run it at once (the
    # worker threads: a helping host takes one of their places), against the busiest lane.
    totals = per_lane.sum(axis=1)
    could = np.maximum(1, min(max(1, cap.workers), n_lanes))
    tops = np.maximum(1, per_lane.max(axis=1))
    lane_names = [names[w] if w < len(names) else f"lane {w}" for w in range(n_lanes)]
    sites: dict[tuple[int, int], dict] = {}  # (program key, command) -> totals
    ends = np.append(idx[1:], len(e))
    for g, i in enumerate(idx):
        serial, command = int(e["serial"][i]), int(e["command"][i])
        sub = cap.submissions.get(serial)
        key = (sub.program if sub else -1, command)
        site = sites.get(key)
        if site is None:
            site = sites[key] = {"info": _command(cap, serial, command), "command": command, "spans": 0, "calls": 0,
                                 "wg": 0, "busy": 0, "per": np.zeros(n_lanes, np.int64), "lanes": 0, "balance": 0.0}
        info = site["info"]
        if info is not None and 0 < info.tiles < totals[g]:  # it ran several times: a loop's body
            spans[g] = _union_ns(e["start_ns"][i:ends[g]], e["end_ns"][i:ends[g]])
        site["spans"] += int(spans[g])
        site["calls"] += 1
        site["busy"] += int(busy[g])
        site["per"] += per_lane[g]
        site["lanes"] += int(ran[g].sum())
        site["balance"] += min(1.0, float(totals[g]) / min(could, max(1, int(totals[g]))) / float(tops[g]))
    # One name at several sites (a kernel dispatched twice; one function's signatures, each its
    # own program): told apart by the command index, and by the program where that is not enough.
    clashes: dict[str, list[tuple[int, int]]] = {}
    for key, site in sites.items():
        info = site["info"]
        site["name"] = info.name if info else f"command {site['command']} (program not identified)"
        clashes.setdefault(site["name"], []).append(key)
    out = []
    for key, site in sites.items():
        info: CommandInfo | None = site["info"]
        name, same = site["name"], clashes[site["name"]]
        if len(same) > 1:
            commands = [c for _, c in same]
            programs = len({p for p, _ in same}) > 1
            name += f" #{site['command']}" if len(set(commands)) == len(commands) else ""
            name += f" (program {key[0]})" if programs and len(set(commands)) < len(commands) else ""
        calls, total, wg = site["calls"], site["spans"], int(site["per"].sum())
        per = {lane_names[w]: int(site["per"][w]) for w in range(n_lanes)}
        balance = site["balance"] / max(1, calls)
        seconds = total / 1e9
        flops = info.flops if info else None
        nbytes = info.bytes if info else 0
        out.append(DispatchStats(
            name, info.entry if info else "", info.kind if info else "?", calls, total, total / max(1, calls),
            total / max(1, call_wall), wg / max(1, calls), per, min(1.0, balance), site["busy"],
            flops * calls / seconds / 1e9 if flops and seconds > 0 else None,
            nbytes * calls / seconds / 1e9 if nbytes and seconds > 0 else None, flops, nbytes,
            info.source.ops if info and info.source else (), site["lanes"] / max(1, calls)))
    out.sort(key=lambda d: -d.total_ns)
    return out


def _breakdown(cap: DeviceCapture, calls: list[Call], lanes: int, by: _BySerial) -> tuple[CallBreakdown | None, list[int], dict | None]:
    subs = sorted(cap.submissions.values(), key=by.issued)
    sub_t = np.array([by.issued(s) for s in subs], np.int64)
    wait_ends = np.array(sorted(w.end_ns for w in cap.waits), np.int64)
    parts = {k: [] for k in ("wall", "host_before", "launch", "kernels", "gaps", "completion", "host_after", "idle")}
    launches: list[int] = []
    for call in calls:
        lo, hi = np.searchsorted(sub_t, call.start_ns), np.searchsorted(sub_t, call.end_ns, side="right")
        mine = subs[lo:hi]
        if not mine:
            continue
        rows = by.rows([s.serial for s in mine])
        wall = call.end_ns - call.start_ns
        first_submit = by.issued(mine[0])
        if not len(rows) and cap.dropped_events:
            continue  # its events were overwritten in the rings: nothing to split it by
        if not len(rows):
            parts["wall"].append(wall)
            parts["host_before"].append(first_submit - call.start_ns)
            for k in ("launch", "kernels", "gaps", "completion", "idle"):
                parts[k].append(0)
            parts["host_after"].append(call.end_ns - first_submit)
            continue
        first, last = int(rows["start_ns"].min()), int(rows["end_ns"].max())
        busy_union = _union_ns(rows["start_ns"], rows["end_ns"])
        j = int(np.searchsorted(wait_ends, max(last, call.start_ns)))  # the wait that saw the work done
        wait_end = int(wait_ends[j]) if j < len(wait_ends) and wait_ends[j] <= call.end_ns else call.end_ns
        parts["wall"].append(wall)
        parts["host_before"].append(max(0, first_submit - call.start_ns))
        parts["launch"].append(max(0, first - first_submit))
        parts["kernels"].append(busy_union)
        parts["gaps"].append(max(0, last - first - busy_union))
        parts["completion"].append(max(0, wait_end - last))
        parts["host_after"].append(max(0, call.end_ns - max(wait_end, last)))
        span = max(1, last - first)
        parts["idle"].append(1.0 - float((rows["end_ns"] - rows["start_ns"]).sum()) / (lanes * span))
        launches += [by.span(s.serial)[0] - s.submit_ns for s in mine if s.submit_ns >= 0 and by.span(s.serial) is not None]
    if not parts["wall"]:
        return None, launches, None
    first = None
    walls = parts["wall"]
    if not cap.calls and len(walls) >= 3 and walls[0] > 3 * statistics.median(walls[1:]):
        # A program's first call many times slower than the rest is warm-up (first touch of
        # constants, lazy linking): reported on its own, so the steady state is not averaged
        # with it. (`fibergrid profile MODEL` makes its own untraced warm-up call.)
        first = {k: v[0] for k, v in parts.items()}
        parts = {k: v[1:] for k, v in parts.items()}
    if len(parts["wall"]) >= 10:
        # The slowest tenth left out: on a shared machine one call that lost its core for 400 ms
        # would otherwise be most of the mean (the call line reports the max).
        limit = float(np.percentile(parts["wall"], 90))
        keep = [i for i, w in enumerate(parts["wall"]) if w <= limit]
        parts = {k: [v[i] for i in keep] for k, v in parts.items()}
    mean = {k: statistics.fmean(v) for k, v in parts.items()}
    # The categories are measured separately; a clock step or a wait outside the call could
    # leave a residue: it goes to host time so the parts still add up to the wall time.
    measured = sum(mean[k] for k in ("host_before", "launch", "kernels", "gaps", "completion", "host_after"))
    mean["host_after"] += max(0.0, mean["wall"] - measured)
    return CallBreakdown(mean["wall"], mean["host_before"], mean["launch"], mean["kernels"], mean["gaps"],
                         mean["completion"], mean["host_after"], max(0.0, mean["idle"]), len(parts["wall"]),
                         cap.host_timing), launches, first


def _critical_path(cap: DeviceCapture, calls: list[Call], by: _BySerial) -> tuple[list[CriticalStep], float]:
    """The regions of the median call, in order: each waits for the one before (a barrier), so
    the call's device time is the chain of region spans plus the gaps between them."""
    if not calls:
        return [], 0.0
    ordered = sorted(calls, key=lambda c: c.end_ns - c.start_ns)
    call = ordered[len(ordered) // 2]
    serials = [s.serial for s in cap.submissions.values() if call.start_ns <= by.issued(s) <= call.end_ns]
    steps: list[CriticalStep] = []
    regions = 0
    for serial in sorted(serials):
        sub = cap.submissions[serial]
        prog = cap.programs.get(sub.program)
        rows = by.rows([serial])
        if prog is None or not len(rows):
            continue
        regions += len(prog.regions)
        for r, (a, b) in enumerate(prog.regions):
            mine = rows[(rows["command"] >= a) & (rows["command"] < b)]
            if not len(mine):
                continue
            last = mine[np.argmax(mine["end_ns"])]
            start, end = int(mine["start_ns"].min()), int(mine["end_ns"].max())
            steps.append(CriticalStep(r, prog.commands[int(last["command"])].name, start - call.start_ns, end - start,
                                      int((mine["end"] - mine["first"]).sum()), len(np.unique(mine["worker"]))))
    return steps, float(regions)


def analyse(cap: DeviceCapture) -> Analysis:
    """The numbers of one device's capture."""
    names = _lane_names(cap)
    lanes = _lanes(cap)
    by = _BySerial(cap.events)
    calls = _calls(cap, by)
    busy_lanes = max(1, cap.workers) if cap.workers else 1
    breakdown, launches, first = _breakdown(cap, calls, busy_lanes, by)
    if not cap.calls and not cap.host_timing:
        breakdown = None  # a program's calls seen from the device only: nothing to split
    steady = calls[1:] if first is not None else calls
    call_wall = sum(c.end_ns - c.start_ns for c in steady) or cap.wall_ns
    skip = ({s.serial for s in cap.submissions.values() if calls[0].start_ns <= by.issued(s) <= calls[0].end_ns}
            if first is not None else set())
    if not launches:  # submissions outside any call (a script's own waits)
        launches = [by.span(s.serial)[0] - s.submit_ns for s in cap.submissions.values() if s.submit_ns >= 0 and by.span(s.serial)]
    ends = np.sort(cap.events["end_ns"])
    completions = []
    for w in cap.waits:  # the last workgroup that ended while the host waited -> the wait's end
        j = int(np.searchsorted(ends, w.end_ns, side="right")) - 1
        if j >= 0 and ends[j] >= w.start_ns and w.end_ns > w.start_ns:
            completions.append(w.end_ns - int(ends[j]))
    path, regions = _critical_path(cap, calls, by)
    notes = []
    if first is not None:
        notes.append("the first call was warm-up (see the findings): per-dispatch and per-call figures leave it out")
    if cap.dropped_events:
        notes.append(f"{cap.dropped_events} trace events were overwritten (the rings hold the newest); "
                     "per-dispatch figures cover the rest")
    return Analysis(cap.label, cap.driver, lanes, cap.wall_ns, len(calls), [c.end_ns - c.start_ns for c in calls],
                    _dispatches(cap, names, call_wall, skip), breakdown, path, launches, completions,
                    cap.dropped_events, len(cap.submissions), regions, notes, first)
