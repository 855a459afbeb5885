"""Explain: plain-language findings, ranked by how much of the call they account for.

Each rule reads the Analysis and, when its condition holds, states what it measured with the
numbers and what usually helps. The rank is the share of the call's wall time the finding is
about, so the first line is where the time goes. Thresholds are the point below which a finding
is not worth a user's attention (e.g. < 10 % of the call), not guesses at the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from fibergrid.profile.analysis import Analysis


@dataclass(frozen=True)
class Finding:
    weight: float  # share of the call's wall time it concerns (0..1): the rank
    code: str  # stable identifier for scripts and tests
    text: str


def _us(ns: float) -> str:
    return f"{ns / 1e3:,.0f} us" if ns >= 10e3 else f"{ns / 1e3:.1f} us"


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def explain(a: Analysis, peak_gflops: float | None = None) -> list[Finding]:
    """Findings for one device, most important first. `peak_gflops`: a measured single-core
    reference rate for matmul-like kernels on this machine (see peak.py), or None."""
    out: list[Finding] = []
    b = a.breakdown
    wall = b.wall if b else a.wall_ns / max(1, a.calls)
    lanes = [lane for lane in a.lanes if lane.name != "host"] or a.lanes
    multi = len(lanes) > 1

    # Where the kernel time goes: the biggest dispatches.
    for d in a.dispatches[:3]:
        if d.share < 0.2:
            break
        rate = ""
        if d.gflops is not None:
            rate = f" running at {d.gflops:.1f} GFLOP/s"
            if peak_gflops and d.kind in ("matmul", "conv"):
                ref = peak_gflops * d.lanes_per_call
                rate += (f" on {d.lanes_per_call:.1f} worker(s): {_pct(d.gflops / ref)} of what BLAS reaches on as many "
                         f"cores here ({ref:.0f} GFLOP/s)")
        elif d.gbytes is not None:
            rate = f" moving {d.gbytes:.1f} GB/s"
        out.append(Finding(d.share, "dominant-dispatch",
                           f"{_pct(d.share)} of the call is one {d.kind} ({d.name}), {_us(d.mean_ns)} a call{rate}"))

    # Serial graphs and idle workers.
    path = a.critical_path
    if multi and path:
        single = [s for s in path if s.lanes <= 1]
        span = sum(s.duration_ns for s in path) or 1
        single_ns = sum(s.duration_ns for s in single)
        idle = b.lane_idle if b else 0.0
        if len(single) == len(path) and len(path) > 1:
            few = sum(1 for s in path if s.workgroups < len(lanes))
            why = []
            if few:
                why.append(f"{few} have fewer workgroups than workers")
            if few < len(path):
                why.append(f"{len(path) - few} have enough workgroups to share but no other lane joined")
            out.append(Finding(max(0.5, single_ns / max(1.0, wall)), "serial-graph",
                               f"the graph runs serially: each of the {len(path)} regions of a call ran on one lane "
                               f"({'; '.join(why)}), and each waits for the one before at a barrier, so "
                               f"{len(lanes) - 1} of {len(lanes)} workers idle and the critical path is the whole "
                               f"device time ({_us(span)}); more workgroups per dispatch or independent work between "
                               f"barriers would let workers overlap"))
        elif idle >= 0.25:
            few = [s for s in path if s.workgroups < len(lanes)]
            why = (f": {len(few)} of {len(path)} regions have fewer workgroups than workers and serialize the graph"
                   if few else ": workgroups finish unevenly (see the balance column)")
            out.append(Finding(idle * (b.kernels + b.gaps) / max(1.0, wall), "idle-workers",
                               f"workers idle {_pct(idle)} of the time kernels run{why}"))

    # Wakes: launch and completion latency per call (timed from the host), or the workers'
    # own wake count and latency (native counters) where the host was not timed.
    worker_wakes = [lane.wakes for lane in lanes if lane.name != "host" and lane.wakes >= 0]
    latencies = [lane.wake_latency_ns for lane in lanes if lane.wake_latency_ns]
    per_call = sum(worker_wakes) / a.calls if worker_wakes and a.calls else None
    if b and b.timed and b.launch + b.completion >= 0.1 * wall:
        why = ""
        if per_call is not None and per_call >= 0.5:
            why = f" ({per_call:.1f} worker wakes a call" + (f" at ~{_us(sum(latencies) / len(latencies))} each" if latencies else "") + ")"
        out.append(Finding((b.launch + b.completion) / wall, "wake-latency",
                           f"each call waits {_us(b.launch + b.completion)} ({_pct((b.launch + b.completion) / wall)}) "
                           f"for work to start and for the host to see it done: {_us(b.launch)} from submit to the first "
                           f"workgroup{why}, {_us(b.completion)} from the last workgroup until the host's wait returns"))
    elif b and not b.timed and per_call and latencies:
        cost = per_call * sum(latencies) / len(latencies)
        if cost >= 0.1 * wall:
            out.append(Finding(cost / wall, "wake-latency",
                               f"each call pays {per_call:.1f} worker wakes at ~{_us(sum(latencies) / len(latencies))} each "
                               f"(~{_us(cost)}, {_pct(cost / wall)} of the call): the workers park between calls"))

    # Host overhead.
    if b and b.timed and b.host_before + b.host_after >= 0.15 * wall:
        host = b.host_before + b.host_after
        out.append(Finding(host / wall, "host-overhead",
                           f"{_pct(host / wall)} of each call ({_us(host)}) is host work: Python, argument checks and "
                           f"copies in ({_us(b.host_before)}) and out ({_us(b.host_after)}); larger batches amortize it"))
    elif b and not b.timed and b.host_before + b.completion >= 0.15 * wall:
        outside = b.host_before + b.completion
        out.append(Finding(outside / wall, "host-overhead",
                           f"{_pct(outside / wall)} of each call ({_us(outside)}) passes outside the device's work: "
                           f"{_us(b.host_before)} before the first workgroup (Python, copies in, submit, a wake) and "
                           f"{_us(b.completion)} after the last (the host's wake, copies out); larger batches amortize "
                           f"it, --host-timing splits it"))

    # Barrier gaps.
    if b and b.gaps >= 0.1 * wall:
        out.append(Finding(b.gaps / wall, "region-gaps",
                           f"{_pct(b.gaps / wall)} of each call ({_us(b.gaps)}) passes between regions with no kernel "
                           f"running ({a.regions_per_call:.0f} regions a call): barriers and region hand-offs"))

    # Uneven spread.
    for d in a.dispatches:
        if multi and d.share >= 0.1 and d.balance < 0.7 and d.workgroups_per_call >= len(lanes):
            split = ", ".join(f"{k} {v}" for k, v in d.per_worker.items())
            out.append(Finding(d.share * (1 - d.balance), "imbalance",
                               f"{d.name} spreads its {d.workgroups_per_call:.0f} workgroups unevenly: the busiest lane "
                               f"runs {1 / max(d.balance, 1e-9):.1f}x an even share (balance {d.balance:.2f}; over all "
                               f"calls {split}), and it sets the dispatch's time"))

    # Tiny workgroups: scheduling cost next to the work.
    for d in a.dispatches:
        if d.workgroups_per_call >= 64 and d.busy_ns / max(1, d.calls * d.workgroups_per_call) < 2000 and d.share >= 0.1:
            per = d.busy_ns / (d.calls * d.workgroups_per_call)
            out.append(Finding(d.share * 0.5, "tiny-workgroups",
                               f"{d.name} runs {d.workgroups_per_call:.0f} workgroups of {_us(per)} each: per-workgroup "
                               f"costs weigh; fewer, larger workgroups would amortize them"))

    # Lanes awake without work: spinning, or claiming with nothing to claim.
    for lane in a.lanes:
        if lane.spin_ns > 0.3 * a.wall_ns and lane.spin_ns > 2 * lane.busy_ns:
            out.append(Finding(lane.spin_ns / a.wall_ns, "spinning",
                               f"{lane.name} spent {_pct(lane.spin_ns / a.wall_ns)} of the profile awake in the scheduler "
                               f"without running a kernel (spinning, or looking for work it could not take): a core "
                               f"burnt that another thread or process could have used"))

    # A shared machine: other processes took the cores.
    waited = [lane for lane in a.lanes if lane.runnable_ns > 0.1 * a.wall_ns]
    if waited:
        worst = max(lane.runnable_ns for lane in waited) / a.wall_ns
        each = ", ".join(f"{lane.name} {_pct(lane.runnable_ns / a.wall_ns)}" for lane in waited)
        out.append(Finding(worst, "preempted",
                           f"threads were ready but waited for a core ({each} of the time): other processes compete "
                           f"for the CPUs, and every time above includes that wait"))

    if a.first_call is not None and a.call_ns:
        f = a.first_call
        out.append(Finding(f["wall"] / sum(a.call_ns), "first-call",
                           f"the first call took {_us(f['wall'])}, {f['wall'] / max(1.0, wall):.0f}x a steady call; "
                           f"{_us(f['launch'])} of it passed between submit and the first workgroup and "
                           f"{_us(f['host_before'])} in host work before submit (one-time warm-up)"))
    if a.dropped_events:
        out.append(Finding(0.0, "trace-overflow", f"{a.dropped_events} trace events were overwritten (the rings keep "
                           f"the newest); raise --capacity to keep them all"))
    if not a.dispatches:
        out.append(Finding(0.0, "no-work", "no workgroup ran on this device during the profile"))
    out.sort(key=lambda f: -f.weight)
    return out
