"""Reliability counts, re-measurable: the long runs of issue #16 as one JSON object.

    python -m bench.reliability --json                       # every section at its full size
    python -m bench.reliability --json --only fuzz --inputs 1000   # a smaller fuzz run

Sections:
- `fuzz`: per format (StableHLO, ONNX, .fgx bytes, .fgx structure, CLI input), the inputs run,
  crashes, hangs, violations and outcomes (tests/reliability/fuzz.py), in child processes,
  `--jobs` at a time.
- `programs`: random command-buffer programs per CPU driver configuration, checked against the
  numpy model of the HAL (tests/reliability/programs.py); mismatches.
- `stress`: threads x submissions chained across threads through semaphores; deadlocks, lost
  signals, payloads unaccounted for (tests/reliability/stress.py).
- `soak`: model calls with RSS and thread count sampled; their drift in percent from the first
  tenth of the run to the last.
- `cycles`: module and device load/close cycles; threads, file handles and RSS before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

SECTIONS = ("fuzz", "programs", "stress", "soak", "cycles")


def fuzz_section(inputs: int, jobs: int, seed: int) -> dict[str, Any]:
    from tests.reliability import fuzz
    out = {}
    for fmt in fuzz.FORMATS:
        t0 = time.monotonic()
        tally = fuzz.run(fmt, inputs, seed=seed, jobs=jobs, log=lambda line: print(line, file=sys.stderr))
        out[fmt] = {**tally.as_dict(), "seconds": round(time.monotonic() - t0, 1)}
        print(fmt, json.dumps(out[fmt]), file=sys.stderr, flush=True)
    return out


def programs_section(count: int) -> dict[str, Any]:
    """`count` programs per CPU driver configuration through the property test's check."""
    import fibergrid as fg
    from hypothesis import HealthCheck, given, settings
    from tests.reliability.programs import programs
    from tests.reliability.test_programs import CONFIGS, check
    out = {}
    for driver, options in CONFIGS:
        if driver == "vulkan":
            continue
        name = driver + "".join(f"-{v}w" for v in options.values())
        runs, failures = [0], []
        with fg.create_device(driver, **options) as dev:
            @settings(max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(program=programs(max_submissions=10))
            def one(program):
                runs[0] += 1
                check(dev, program)
            try:
                one()
            except Exception as e:  # noqa: BLE001 - hypothesis re-raises the shrunk failure
                failures.append(f"{type(e).__name__}: {str(e)[:300]}")
        out[name] = {"programs": runs[0], "mismatches": len(failures), "failure": failures[:1]}
        print(name, json.dumps(out[name]), file=sys.stderr, flush=True)
    return out


def stress_section(threads: int, submissions: int) -> dict[str, Any]:
    from tests.reliability.stress import semaphore_chains
    return semaphore_chains(threads, submissions)


def soak_section(calls: int) -> dict[str, Any]:
    from tests.reliability.stress import soak_calls
    return soak_calls(calls)


def cycles_section(cycles: int) -> dict[str, Any]:
    from tests.reliability.stress import load_close_cycles
    return load_close_cycles(cycles)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--inputs", type=int, default=100_000, help="fuzz inputs per format")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="fuzz child processes at a time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--programs", type=int, default=2_500, help="programs per CPU driver configuration (4 of them)")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--submissions", type=int, default=10_000, help="per thread")
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--cycles", type=int, default=1_000)
    args = parser.parse_args(argv)
    os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result: dict[str, Any] = {}
    for section in args.only:
        t0 = time.monotonic()
        if section == "fuzz":
            result[section] = fuzz_section(args.inputs, args.jobs, args.seed)
        elif section == "programs":
            result[section] = programs_section(args.programs)
        elif section == "stress":
            result[section] = stress_section(args.threads, args.submissions)
        elif section == "soak":
            result[section] = soak_section(args.calls)
        else:
            result[section] = cycles_section(args.cycles)
        result[section]["seconds"] = round(time.monotonic() - t0, 1)
        if not args.json:
            print(section, json.dumps(result[section], indent=1), flush=True)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
