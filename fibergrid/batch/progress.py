"""A progress bar with rows/s for long scoring runs, on stderr.

On a terminal it redraws one line (at most 10 times a second); elsewhere (a log, CI) it prints a
line every `interval` seconds, so a long run is never silent and a log is never flooded. The
last line always gives the total and the rate.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class RowProgress:
    """`update(rows)` after each batch; `close()` prints the final line."""

    def __init__(self, total: int | None, *, label: str = "scored", stream: TextIO | None = None,
                 enabled: bool = True, interval: float = 5.0) -> None:
        self.total, self.label, self.enabled = total, label, enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.1 if self.tty else interval
        self.rows = 0
        self.start = time.perf_counter()
        self._last = self.start

    def _line(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.rows / elapsed
        if self.total:
            width = 24
            done = min(1.0, self.rows / self.total)
            bar = "#" * int(done * width) + "-" * (width - int(done * width))
            left = (self.total - self.rows) / rate if rate > 0 else float("inf")
            eta = f" eta {left:.0f} s" if left != float("inf") and self.rows < self.total else ""
            return f"{self.label} [{bar}] {self.rows:,}/{self.total:,} rows  {rate:,.0f} rows/s  {elapsed:.1f} s{eta}"
        return f"{self.label} {self.rows:,} rows  {rate:,.0f} rows/s  {elapsed:.1f} s"

    def update(self, rows: int) -> None:
        self.rows += rows
        now = time.perf_counter()
        if self.enabled and now - self._last >= self.interval:
            self._last = now
            self.stream.write(("\r" + self._line(now) + "\x1b[K") if self.tty else self._line(now) + "\n")
            self.stream.flush()

    @property
    def rows_per_s(self) -> float:
        return self.rows / max(time.perf_counter() - self.start, 1e-9)

    def close(self) -> None:
        if self.enabled:
            self.stream.write(("\r" + self._line(time.perf_counter()) + "\x1b[K\n") if self.tty
                              else self._line(time.perf_counter()) + "\n")
            self.stream.flush()
