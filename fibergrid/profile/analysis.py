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
"""

from __future__ import annotations

import statistics
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
    balance: float  # mean lane share / max lane share over the lanes that could run it (1 = even)
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
    """Per lane. Where the scheduler keeps its own clocks per participant (parked_ns, spin_ns,
    busy_ns, wakes, wake_ns counters), they split the time; otherwise the kernel's per-thread
    accounting does (on-CPU time outside kernels is spinning and scheduling, off-CPU time that
    was not runnable is parked)."""
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
        other, latency = 0, None
        if "parked_ns" in c and "spin_ns" in c:
            parked = min(c["parked_ns"], wall - busy)
            spin = min(c["spin_ns"] + max(0, c.get("busy_ns", busy) - busy), wall - busy - parked)
            residue = wall - busy - spin - parked
            if host:
                other = residue
            else:
                spin += residue
            wakes = c.get("wakes", -1)
            if c.get("wakes"):
                latency = c.get("wake_ns", 0) / c["wakes"]
        elif t is None or t.on_cpu_ns < 0:
            spin = parked = wakes = -1
        elif host:  # no native clocks: on-CPU outside kernels is the program's own work
            other = max(0, min(wall - busy, t.on_cpu_ns - busy))
            parked, spin, wakes = max(0, wall - busy - other), -1, t.voluntary
        else:
            parked = min(wall - busy, max(0, wall - t.on_cpu_ns - max(0, runnable)))
            spin = max(0, wall - busy - parked)
            wakes = t.voluntary
        out.append(Lane(name, busy, spin, parked, runnable, int((mine["end"] - mine["first"]).sum()), len(mine),
                        c.get("steals", 0), c.get("parks", 0), wakes, other, latency))
    return out


def _calls(cap: DeviceCapture) -> list[Call]:
    """The host's own call boundaries, or one per submission: submit -> the wait that saw it."""
    if cap.calls:
        return list(cap.calls)
    ev = cap.events
    out = []
    waits = sorted(cap.waits, key=lambda w: w.end_ns)
    for sub in sorted(cap.submissions.values(), key=lambda s: s.submit_ns):
        mine = ev[ev["serial"] == sub.serial]
        last = int(mine["end_ns"].max()) if len(mine) else sub.submit_ns
        end = next((w.end_ns for w in waits if w.thread == sub.thread and w.end_ns >= last and w.start_ns >= sub.submit_ns), last)
        out.append(Call(sub.submit_ns, max(end, last)))
    return out


def _union_ns(starts: np.ndarray, ends: np.ndarray) -> int:
    """Length of the union of intervals (time when at least one lane was in a kernel)."""
    if not len(starts):
        return 0
    order = np.argsort(starts)
    total, cur_s, cur_e = 0, int(starts[order[0]]), int(ends[order[0]])
    for i in order[1:]:
        s, e = int(starts[i]), int(ends[i])
        if s > cur_e:
            total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return total + cur_e - cur_s


def _command(cap: DeviceCapture, serial: int, command: int) -> CommandInfo | None:
    sub = cap.submissions.get(serial)
    if sub is None:
        return None
    prog = cap.programs.get(sub.program)
    return prog.commands[command] if prog is not None and command < len(prog.commands) else None


def _dispatches(cap: DeviceCapture, names: list[str], call_wall: int, skip: set[int]) -> list[DispatchStats]:
    """Per dispatch site; submissions in `skip` (a warm-up first call) are left out."""
    ev = cap.events
    if skip:
        ev = ev[~np.isin(ev["serial"], list(skip))]
    groups: dict[tuple[str, str], dict] = {}
    if not len(ev):
        return []
    keys = np.stack([ev["serial"], ev["command"]], axis=1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    for i, (serial, command) in enumerate(uniq):
        info = _command(cap, int(serial), int(command))
        rows = ev[inverse == i]
        name = info.name if info else f"command {int(command)} (submitted before the profile)"
        g = groups.setdefault((name, info.entry if info else "", int(command)), {"info": info, "spans": [], "wg": 0, "busy": 0, "per": {}, "lanes": 0})
        g["lanes"] += len(np.unique(rows["worker"]))
        g["spans"].append(int(rows["end_ns"].max() - rows["start_ns"].min()))
        g["wg"] += int((rows["end"] - rows["first"]).sum())
        g["busy"] += int((rows["end_ns"] - rows["start_ns"]).sum())
        for w in np.unique(rows["worker"]):
            lane = names[int(w)] if int(w) < len(names) else f"lane {int(w)}"
            g["per"][lane] = g["per"].get(lane, 0) + int((rows[rows["worker"] == w]["end"] - rows[rows["worker"] == w]["first"]).sum())
    out = []
    lanes = max(1, len(names))
    clashes: dict[str, int] = {}
    for name, _, _ in groups:
        clashes[name] = clashes.get(name, 0) + 1
    for (name, entry, command), g in groups.items():
        if clashes[name] > 1:  # the same kernel at several places of a program
            name = f"{name} #{command}"
        info: CommandInfo | None = g["info"]
        calls, total = len(g["spans"]), sum(g["spans"])
        per = {n: g["per"].get(n, 0) for n in names} if names else g["per"]
        could = min(lanes, max(1, info.tiles if info else lanes))
        top = max(per.values()) if per else 0
        balance = (g["wg"] / could) / top if top else 1.0
        seconds = total / 1e9
        flops = info.flops if info else None
        nbytes = info.bytes if info else 0
        out.append(DispatchStats(
            name, entry, info.kind if info else "?", calls, total, total / max(1, calls), total / max(1, call_wall),
            g["wg"] / max(1, calls), per, min(1.0, balance), g["busy"],
            flops * calls / seconds / 1e9 if flops and seconds > 0 else None,
            nbytes * calls / seconds / 1e9 if nbytes and seconds > 0 else None, flops, nbytes,
            info.source.ops if info and info.source else (), g["lanes"] / max(1, calls)))
    out.sort(key=lambda d: -d.total_ns)
    return out


def _breakdown(cap: DeviceCapture, calls: list[Call], lanes: int) -> tuple[CallBreakdown | None, list[int], dict | None]:
    ev = cap.events
    subs = sorted(cap.submissions.values(), key=lambda s: s.submit_ns)
    parts = {k: [] for k in ("wall", "host_before", "launch", "kernels", "gaps", "completion", "host_after", "idle")}
    launches: list[int] = []
    for call in calls:
        mine = [s for s in subs if call.start_ns <= s.submit_ns <= call.end_ns]
        if not mine:
            continue
        rows = ev[np.isin(ev["serial"], [s.serial for s in mine])]
        wall = call.end_ns - call.start_ns
        first_submit = mine[0].submit_ns
        if not len(rows):
            parts["wall"].append(wall)
            parts["host_before"].append(first_submit - call.start_ns)
            for k in ("launch", "kernels", "gaps", "completion", "idle"):
                parts[k].append(0)
            parts["host_after"].append(call.end_ns - first_submit)
            continue
        first, last = int(rows["start_ns"].min()), int(rows["end_ns"].max())
        busy_union = _union_ns(rows["start_ns"], rows["end_ns"])
        waits = [w.end_ns for w in cap.waits if call.start_ns <= w.end_ns <= call.end_ns and w.end_ns >= last]
        wait_end = min(waits) if waits else call.end_ns
        parts["wall"].append(wall)
        parts["host_before"].append(max(0, first_submit - call.start_ns))
        parts["launch"].append(max(0, first - first_submit))
        parts["kernels"].append(busy_union)
        parts["gaps"].append(max(0, last - first - busy_union))
        parts["completion"].append(max(0, wait_end - last))
        parts["host_after"].append(max(0, call.end_ns - max(wait_end, last)))
        span = max(1, last - first)
        parts["idle"].append(1.0 - float((rows["end_ns"] - rows["start_ns"]).sum()) / (lanes * span))
        launches += [int(ev[ev["serial"] == s.serial]["start_ns"].min()) - s.submit_ns for s in mine if (ev["serial"] == s.serial).any()]
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
    mean = {k: statistics.fmean(v) for k, v in parts.items()}
    # The categories are measured separately; a clock step or a wait outside the call could
    # leave a residue: it goes to host time so the parts still add up to the wall time.
    measured = sum(mean[k] for k in ("host_before", "launch", "kernels", "gaps", "completion", "host_after"))
    mean["host_after"] += max(0.0, mean["wall"] - measured)
    return CallBreakdown(mean["wall"], mean["host_before"], mean["launch"], mean["kernels"], mean["gaps"],
                         mean["completion"], mean["host_after"], max(0.0, mean["idle"])), launches, first


def _critical_path(cap: DeviceCapture, calls: list[Call], names: list[str]) -> tuple[list[CriticalStep], float]:
    """The regions of the median call, in order: each waits for the one before (a barrier), so
    the call's device time is the chain of region spans plus the gaps between them."""
    if not calls:
        return [], 0.0
    ev = cap.events
    ordered = sorted(calls, key=lambda c: c.end_ns - c.start_ns)
    call = ordered[len(ordered) // 2]
    serials = [s.serial for s in cap.submissions.values() if call.start_ns <= s.submit_ns <= call.end_ns]
    steps: list[CriticalStep] = []
    regions = 0
    for serial in sorted(serials):
        sub = cap.submissions[serial]
        prog = cap.programs.get(sub.program)
        rows = ev[ev["serial"] == serial]
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
    calls = _calls(cap)
    busy_lanes = max(1, cap.workers) if cap.workers else 1
    breakdown, launches, first = _breakdown(cap, calls, busy_lanes)
    steady = calls[1:] if first is not None else calls
    call_wall = sum(c.end_ns - c.start_ns for c in steady) or cap.wall_ns
    skip = ({s.serial for s in cap.submissions.values() if calls[0].start_ns <= s.submit_ns <= calls[0].end_ns}
            if first is not None else set())
    if not launches:  # submissions outside any call (a script's own waits)
        for s in cap.submissions.values():
            rows = cap.events[cap.events["serial"] == s.serial]
            if len(rows):
                launches.append(int(rows["start_ns"].min()) - s.submit_ns)
    completions = []
    for w in cap.waits:
        rows = cap.events[(cap.events["end_ns"] <= w.end_ns) & (cap.events["end_ns"] >= w.start_ns)]
        if len(rows) and w.end_ns - w.start_ns > 0:
            completions.append(w.end_ns - int(rows["end_ns"].max()))
    path, regions = _critical_path(cap, calls, names)
    notes = []
    if first is not None:
        notes.append("the first call was warm-up (see the findings): per-dispatch and per-call figures leave it out")
    if cap.dropped_events:
        notes.append(f"{cap.dropped_events} trace events were overwritten (the rings hold the newest); "
                     "per-dispatch figures cover the rest")
    return Analysis(cap.label, cap.driver, lanes, cap.wall_ns, len(calls), [c.end_ns - c.start_ns for c in calls],
                    _dispatches(cap, names, call_wall, skip), breakdown, path, launches, completions,
                    cap.dropped_events, len(cap.submissions), regions, notes, first)
