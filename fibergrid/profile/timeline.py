"""A PNG timeline for a README or a bug report: one lane per worker (and the host), one bar per
workgroup reservation coloured by dispatch, the host's calls and waits, a legend of the
dispatches that take the most time. matplotlib is an optional dependency (`pip install
'fibergrid[profile]'`); it is imported only here, only when a PNG is asked for.
"""

from __future__ import annotations

from fibergrid.profile.analysis import Analysis
from fibergrid.profile.collect import DeviceCapture
from fibergrid.profile.naming import CommandInfo

LEGEND_MAX = 10  # dispatches named in the legend; the rest share one grey


def _info(cap: DeviceCapture, serial: int, command: int) -> CommandInfo | None:
    sub = cap.submissions.get(serial)
    prog = cap.programs.get(sub.program) if sub else None
    return prog.commands[command] if prog and command < len(prog.commands) else None


def _window(cap: DeviceCapture, calls: int) -> tuple[int, int, str]:
    """`calls` consecutive calls, the run of them with the median total time: a few calls show
    the pattern (thousands are a grey smear), and a typical run shows it better than the first."""
    if cap.calls:
        n = min(calls, len(cap.calls))
        runs = sorted(range(len(cap.calls) - n + 1),
                      key=lambda i: cap.calls[i + n - 1].end_ns - cap.calls[i].start_ns)
        i = runs[len(runs) // 2]
        return cap.calls[i].start_ns, cap.calls[i + n - 1].end_ns, f"calls {i + 1}-{i + n} of {len(cap.calls)} (a typical run)"
    if len(cap.events):
        return int(cap.events["start_ns"].min()), int(cap.events["end_ns"].max()), "all submissions"
    return cap.start_ns, cap.end_ns, "nothing ran"


def write(cap: DeviceCapture, analysis: Analysis, path: str, size: tuple[int, int] = (1600, 500), calls: int = 3) -> None:
    """Draws `calls` typical consecutive calls of one device into a `size` (pixels) PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from common.errors import Unavailable

        raise Unavailable("--png needs matplotlib: pip install 'fibergrid[profile]'") from None
    dpi = 100
    start, end, shown = _window(cap, calls)
    span_us = max(1e-3, (end - start) / 1e3)
    lanes = [lane.name for lane in analysis.lanes]
    host_row = len(lanes) if "host" not in lanes else lanes.index("host")
    rows = len(lanes) + (0 if "host" in lanes else 1)
    ev = cap.events[(cap.events["end_ns"] >= start) & (cap.events["start_ns"] <= end)]
    totals: dict[str, float] = {d.name.split(" #")[0]: float(d.total_ns) for d in analysis.dispatches}
    named = sorted(totals, key=lambda n: -totals[n])[:LEGEND_MAX]
    cmap = plt.get_cmap("tab10")
    colours = {n: cmap(i % 10) for i, n in enumerate(named)}
    fig, ax = plt.subplots(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    bars: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for row in ev:
        info = _info(cap, int(row["serial"]), int(row["command"]))
        name = info.name if info else "unknown"
        key = (int(row["worker"]), name if name in colours else "other")
        bars.setdefault(key, []).append(((int(row["start_ns"]) - start) / 1e3, max(span_us / size[0], (int(row["end_ns"]) - int(row["start_ns"])) / 1e3)))
    for (lane, name), spans in bars.items():
        ax.broken_barh(spans, (lane - 0.3, 0.6), facecolors=colours.get(name, (0.6, 0.6, 0.6, 1.0)), linewidth=0, zorder=2)
    # The host row: its calls as a light background, its waits as a dark strip along the bottom
    # (under any kernels it ran itself while it waited).
    host = [((c.start_ns - start) / 1e3, (c.end_ns - c.start_ns) / 1e3) for c in cap.calls if c.end_ns >= start and c.start_ns <= end]
    if host:
        ax.broken_barh(host, (host_row - 0.45, 0.9), facecolors=(0.92, 0.92, 0.92, 1.0), linewidth=0, zorder=0)
    waits = [((w.start_ns - start) / 1e3, (w.end_ns - w.start_ns) / 1e3) for w in cap.waits if w.end_ns >= start and w.start_ns <= end]
    if waits:
        ax.broken_barh(waits, (host_row + 0.3, 0.12), facecolors=(0.3, 0.3, 0.3, 1.0), linewidth=0, zorder=3)
    for sub in cap.submissions.values():
        if sub.submit_ns >= 0 and start <= sub.submit_ns <= end:
            ax.axvline((sub.submit_ns - start) / 1e3, color=(0.2, 0.2, 0.2, 0.5), linewidth=0.6, linestyle=":")
    labels = [f"{n} (runs work; calls, waits)" if n == "host" else n for n in lanes] + ([] if "host" in lanes else ["host (calls, waits)"])
    ax.set_yticks(range(rows), labels)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_xlim(0, span_us)
    ax.set_xlabel("time (us) from the first call shown; dotted lines: submissions")
    ax.set_title(f"{cap.label} ({cap.driver}): {shown}", fontsize=10)
    from matplotlib.patches import Patch

    handles = [Patch(color=colours[n], label=n if len(n) <= 60 else n[:59] + "…") for n in named]
    if any(name == "other" for _, name in bars):
        handles.append(Patch(color=(0.6, 0.6, 0.6, 1.0), label="other dispatches"))
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)  # no bbox="tight": the file must be exactly `size`
    plt.close(fig)


def png_size(path: str) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk (tests and the CLI check what was written)."""
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")

