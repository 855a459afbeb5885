"""The StableHLO interpreter's own test suite (tests/check/stablehlo_interpret/, openxla/stablehlo's
`stablehlo/tests/interpret`) run through `fibergrid check` on local-task, every test's outcome
pinned in expected.json: a regression, or a test that starts passing, fails this test until
expected.json says so (`python -m tests.check.test_suite` rewrites it from a run)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import fibergrid as fg
from fibergrid import check

HERE = Path(__file__).parent
SUITE = sorted(str(p) for p in (HERE / "stablehlo_interpret").rglob("*.mlir"))
EXPECTED = HERE / "expected.json"


def outcomes() -> dict[str, str]:
    """test id (file:function:line) -> PASS / FAIL / ERROR / SKIP, for the whole suite."""
    device = fg.default_device("local-task")
    return {f"{Path(o.file).relative_to(HERE / 'stablehlo_interpret')}:{o.name}:{o.line}": o.status
            for o in check.run_files(SUITE, device)}


def test_every_outcome_is_as_pinned(capsys) -> None:
    got = outcomes()
    want = json.loads(EXPECTED.read_text())
    counts = check.totals(check.Outcome("", "", 0, s) for s in got.values())
    with capsys.disabled():
        print(f"\nStableHLO interpreter suite: {counts}")
    changed = {t: f"{want.get(t)} -> {got.get(t)}" for t in sorted(set(got) | set(want)) if got.get(t) != want.get(t)}
    assert not changed, f"outcomes differ from expected.json (rewrite it with `python -m tests.check.test_suite`): {changed}"


if __name__ == "__main__":
    EXPECTED.write_text(json.dumps(outcomes(), indent=1, sort_keys=True) + "\n")
    sys.exit(0)


def test_the_reference_evaluator_passes_the_suite_too() -> None:
    """The test oracle (compiler/reference.py) against the suite's own expectations: every test
    that can be read passes, except where fibergrid follows XLA instead (reduce_precision to a
    format without mantissa keeps NaN)."""
    from compiler.frontends.check_dialect import read_tests
    from compiler.reference import evaluate

    failures = []
    for path in SUITE:
        for case in read_tests(Path(path).read_text(), path):
            if case.skip is None and case.error is None:
                got = evaluate(case.module, case.name, case.inputs)
                if any(check.compare(c, got) for c in case.checks):
                    failures.append(case.name)
    assert failures == ["reduce_precision_op_test_f64_zero_mantissa_bits"]
