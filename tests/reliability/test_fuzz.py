"""Mutation fuzzing of every parser and loader (tests/reliability/fuzz.py): StableHLO text, ONNX
models, .fgx bytes, .fgx files with re-signed metadata that lies, and the CLI's input syntax.
Every input ends in a fibergrid error or a result; nothing crashes, hangs or decodes a damaged
file into another program.

The default run tries QUICK inputs per format in this process (the same inputs every run); the
`slow` profile runs FIBERGRID_FUZZ_INPUTS per format (100,000 by default) in child processes,
one per core, counting crashes and hangs instead of dying of them."""

from __future__ import annotations

import json
import os

import pytest

from tests.reliability import fuzz

QUICK = 400
LONG = int(os.environ.get("FIBERGRID_FUZZ_INPUTS", "100000"))


@pytest.fixture(scope="module", params=fuzz.FORMATS)
def context(request):
    if request.param in ("stablehlo", "fgx", "fgx_structure"):
        pytest.importorskip("jax")
    if request.param == "onnx":
        pytest.importorskip("onnx")
    ctx = fuzz.make_context(request.param)
    yield request.param, ctx
    ctx.device.close()


def test_quick_profile(context, tmp_path, monkeypatch):
    monkeypatch.setenv("FIBERGRID_CACHE_DIR", str(tmp_path))  # mutated models stay out of the user's cache
    fmt, ctx = context
    outcomes: dict[str, int] = {}
    for i in range(QUICK):
        outcome = fuzz.check_input(fmt, 0, i, ctx, compile_every=40)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes.get("rejected", 0) > 0, outcomes  # the mutations reach the checks


@pytest.mark.slow
@pytest.mark.parametrize("fmt", fuzz.FORMATS)
def test_long_profile(fmt):
    tally = fuzz.run(fmt, LONG, seed=int(os.environ.get("FIBERGRID_FUZZ_SEED", "0")), jobs=os.cpu_count() or 1)
    print(fmt, json.dumps(tally.as_dict()))
    assert tally.inputs == LONG
    assert (tally.crashes, tally.hangs, tally.violations) == (0, 0, 0), tally.findings
