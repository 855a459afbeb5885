"""`fibergrid check FILE.mlir...`: run check-dialect test files on a device, as iree-check-module
does, and report PASS / FAIL (max error and where) / ERROR (the compile or run error) / SKIP (why)
per test, and totals.

Each test is compiled like any model (not through the disk cache: a cached program is rebuilt
from its source for other formats, and a test's source is not plain StableHLO; compiling the
whole StableHLO suite takes seconds) with its constants as inputs (compiler/frontends/check_dialect.py), run on the
device, and its results compared as the check dialect defines: `expect_eq` exactly (NaN equals
NaN), `expect_almost_eq` within an absolute tolerance (1e-4 unless the check gives one; IREE's
`atol`/`rtol` too: |got - want| <= atol + rtol |want|),
`expect_close` within N ULPs (1 unless `max_ulp_difference` says), `expect_true` non-zero.
"""

from __future__ import annotations

import collections
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from common.errors import Error
from compiler import executable
from compiler.frontends.check_dialect import Check, TestCase, read_tests
from compiler.pipeline import Progress
from hal.device import Device



@dataclass(frozen=True)
class Outcome:
    """One test's result: status PASS / FAIL / ERROR / SKIP and a one-line detail."""

    file: str
    name: str
    line: int
    status: str
    detail: str = ""

    @property
    def test_id(self) -> str:
        return f"{Path(self.file).name}:{self.name}"


def _where(index: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, index)) + "]" if index else "(scalar)"


def _ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ULPs between floats, through their bits ordered as integers (-0 and +0 are 0 apart)."""
    width = a.dtype.itemsize
    ints = np.dtype(f"i{width}")

    def ordered(x: np.ndarray) -> np.ndarray:
        bits = np.ascontiguousarray(x).view(ints).astype(np.int64)
        return np.where(bits < 0, -(bits & ((1 << (8 * width - 1)) - 1)), bits)

    return np.abs(ordered(a) - ordered(b))


def compare(check: Check, got: list[np.ndarray]) -> str | None:
    """None when `check` holds for the test's results `got`, else what differs and where."""
    actual = got[check.results[0]]
    if check.kind == "true":
        return None if np.all(actual != 0) else f"not true at {_where(np.argwhere(actual == 0)[0])}"
    want = check.expected if check.expected is not None else got[check.results[1]]
    if actual.shape != want.shape or actual.dtype != want.dtype:
        return f"got {actual.dtype}{list(actual.shape)}, want {want.dtype}{list(want.shape)}"
    if actual.dtype.kind not in "fV" or check.kind == "eq":
        if actual.dtype.kind in "fV":
            a64, w64 = actual.astype(np.float64), want.astype(np.float64)
            bad = ~((a64 == w64) | (np.isnan(a64) & np.isnan(w64)))
        else:
            bad = actual != want
        if not bad.any():
            return None
        i = tuple(int(k) for k in np.argwhere(bad)[0])
        return f"{int(bad.sum())} of {bad.size} differ; first at {_where(i)}: got {actual[i]}, want {want[i]}"
    a64, w64 = actual.astype(np.float64), want.astype(np.float64)
    same = (a64 == w64) | (np.isnan(a64) & np.isnan(w64))
    if check.kind == "close":
        err = np.where(same, 0, _ulp_distance(actual, want)).astype(np.float64)
        limit, unit = np.full(err.shape, float(check.max_ulps)), " ULPs"
    else:
        with np.errstate(invalid="ignore"):
            err = np.where(same, 0.0, np.abs(a64 - w64))
        err = np.where(np.isnan(err), np.inf, err)
        # IREE's rtol: the bound grows with |want|
        limit, unit = check.tolerance + check.relative * np.where(np.isfinite(w64), np.abs(w64), 0), ""
    excess = err - limit
    if err.size == 0 or not (excess > 0).any():
        return None
    i = tuple(int(k) for k in np.unravel_index(int(np.argmax(excess)), err.shape))
    return f"max error {err[i]:g}{unit} > {limit[i]:g} at {_where(i)}: got {actual[i]}, want {want[i]}"


def _load(case: TestCase, device: Device):
    from fibergrid.module import Module  # the runtime side of fg.load

    program = executable.build(case.source, [case.name], module=case.module)
    return Module(program, device, timeout=60.0, progress=Progress(), origin=f"{case.file}:{case.name}")


def run_case(case: TestCase, device: Device) -> Outcome:
    """Compile and run one test on `device` and check its results (never raises)."""
    out = lambda status, detail="": Outcome(case.file, case.name, case.line, status, detail)  # noqa: E731
    if case.skip:
        return out("SKIP", case.skip)
    if case.error:
        return out("ERROR", case.error.splitlines()[0])
    try:
        module = _load(case, device)
        results = module[case.name](*case.inputs)
        got = list(results) if isinstance(results, tuple) else [results]
    except Error as e:
        return out("ERROR", (str(e).splitlines() or [type(e).__name__])[0])
    except Exception as e:  # noqa: BLE001 — a bug is reported as such, never a traceback
        return out("ERROR", f"internal error: {type(e).__name__}: {e}".splitlines()[0])
    failures = [f"line {c.line}: {msg}" for c in case.checks if (msg := compare(c, got)) is not None]
    return out("FAIL", "; ".join(failures)) if failures else out("PASS")


def run_files(paths: Sequence[str], device: Device) -> Iterable[Outcome]:
    """Every test of every file, in order, as it finishes."""
    for path in paths:
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as e:
            yield Outcome(path, "<file>", 0, "ERROR", f"cannot read: {e}")
            continue
        for case in read_tests(text, path):
            yield run_case(case, device)


def totals(outcomes: Iterable[Outcome]) -> dict[str, int]:
    counts = collections.Counter(o.status for o in outcomes)
    return {s: counts.get(s, 0) for s in ("PASS", "FAIL", "ERROR", "SKIP")}


def main(paths: Sequence[str], device: Device, as_json: bool = False) -> int:
    """The CLI command: prints per-test lines (or JSON) and totals; 1 if any test failed or erred."""
    outcomes = []
    for o in run_files(paths, device):
        outcomes.append(o)
        if not as_json:
            print(f"{o.status:5} {o.test_id}" + (f": {o.detail}" if o.detail else ""), flush=True)
    count = totals(outcomes)
    ran = count["PASS"] + count["FAIL"] + count["ERROR"]
    if as_json:
        json.dump({"device": device.driver, "totals": count,
                   "tests": [{"file": o.file, "test": o.name, "line": o.line, "status": o.status,
                              "detail": o.detail} for o in outcomes]}, sys.stdout, indent=1)
        print()
    else:
        rate = f" ({100 * count['PASS'] / ran:.1f} % of those run)" if ran else ""
        print(f"{len(outcomes)} tests: {count['PASS']} passed, {count['FAIL']} failed, {count['ERROR']} errors, "
              f"{count['SKIP']} skipped{rate}")
    return 0 if count["FAIL"] == count["ERROR"] == 0 else 1
