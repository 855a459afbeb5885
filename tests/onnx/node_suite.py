"""ONNX's node conformance suite, run on fibergrid.

`onnx.backend.test.case.node.collect_testcases()` builds every node test case in memory (the onnx
wheel ships no data files). Every case is compiled with `fg.load(model_bytes)`: it is
*unsupported* when the frontend refuses an op of its graph (one without a converter in
`compiler.frontends.onnx.SUPPORTED_OPS` and without an ONNX function body made of supported ops);
otherwise each of its data sets is run, its outputs compared the way onnx's
backend test runner compares them (`Runner.assert_similar_outputs`: shape, dtype, then
`assert_allclose` with the case's rtol/atol, 1e-3/1e-7 by default). Tensors of the narrow types
(float8, float4, int4, int2) go in and come out as their bytes, as ONNX Runtime's cases are fed
(compiler/frontends/onnx/narrow.py); the results are read back as the expected type before the
comparison. A failure keeps its reason (the fibergrid error, or the mismatch, with `EXPLAINED`'s
note where a mismatch is understood), so the counts explain themselves.

    python -m tests.onnx.node_suite [--json] [--op Conv] [--limit N] [--failures]
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np


@dataclass(frozen=True)
class Outcome:
    name: str
    ops: tuple[str, ...]
    status: str  # pass | fail | unsupported
    reason: str = ""


@functools.cache
def testcases() -> tuple[Any, ...]:
    """Every node test case (built in memory; ~1,900, a few seconds)."""
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return tuple(collect_testcases(None))


def graph_ops(graph: Any) -> set[str]:
    """Op types of a graph and of its subgraphs (If/Loop bodies); other domains prefixed."""
    import onnx
    ops = set()
    for node in graph.node:
        ops.add(node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}")
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                ops |= graph_ops(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    ops |= graph_ops(g)
    return ops


def _first_line(text: str, limit: int = 320) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return (lines[0] if lines else "")[:limit]


def _mismatch(e: AssertionError) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    keep = [ln for ln in lines if ln.startswith(("Mismatched", "Max absolute", "Max relative", "Output", "Items are not equal", "ACTUAL", "DESIRED"))]
    return "mismatch: " + "; ".join(keep or lines[:2])[:200]


def _array(x: Any) -> Any:
    """A TensorProto (how some cases give exotic element types) or a numpy scalar (a rank-0
    tensor) as an array; other values (sequences, optionals) as they are."""
    import onnx
    from onnx import numpy_helper
    if isinstance(x, onnx.TensorProto):
        return numpy_helper.to_array(x)
    return np.asarray(x) if isinstance(x, np.generic) else x


def _raw(x: np.ndarray) -> np.ndarray:
    """A narrow-typed array (float8, float4, int4, int2) as the bytes fibergrid takes, as ONNX
    Runtime's cases are fed."""
    from compiler.frontends.onnx.narrow import is_narrow
    return x.view(np.uint8) if is_narrow(x.dtype) else x


def _typed(result: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """A result's bytes read as the narrow type the case expects (any other result as it is)."""
    from compiler.frontends.onnx.narrow import is_narrow
    return result.view(expected.dtype) if is_narrow(expected.dtype) and result.dtype == np.uint8 else result


def run_case(case: Any, device: Any) -> Outcome:
    """Compiles and runs one case; never raises."""
    import fibergrid as fg
    from onnx.backend.test.runner import Runner
    ops = tuple(sorted(graph_ops(case.model.graph)))
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            module = fg.load(case.model.SerializeToString(), device=device)
            for inputs, outputs in case.data_sets:
                inputs, outputs = [_array(x) for x in inputs], [_array(x) for x in outputs]
                if any(not isinstance(x, np.ndarray) for x in inputs + outputs):
                    return Outcome(case.name, ops, "fail", "sequence or optional values (tensors only)")
                results = module(*[_raw(x) for x in inputs])
                results = list(results) if isinstance(results, tuple) else [results]
                results = [_typed(r, o) for r, o in zip(results, outputs)]
                Runner.assert_similar_outputs(list(outputs), results, rtol=case.rtol, atol=case.atol)
    except fg.Error as e:
        message = _first_line(e)
        if message.startswith("unsupported ONNX op"):  # an op the frontend (or a function body's) lacks
            return Outcome(case.name, ops, "unsupported", message)
        return Outcome(case.name, ops, "fail", f"{type(e).__name__}: {message}")
    except AssertionError as e:
        why = f" -- why: {EXPLAINED[case.name]}" if case.name in EXPLAINED else ""
        return Outcome(case.name, ops, "fail", _mismatch(e) + why)
    except Exception as e:  # noqa: BLE001 - a crash is a failure with its reason, never an abort
        return Outcome(case.name, ops, "fail", f"crash {type(e).__name__}: {_first_line(e)}")
    return Outcome(case.name, ops, "pass")


def select(names: Iterable[str] | None = None, ops: Iterable[str] | None = None, limit: int | None = None) -> list[Any]:
    cases = testcases()
    if names is not None:
        wanted = set(names)
        cases = tuple(c for c in cases if c.name in wanted)
    if ops is not None:
        wanted_ops = set(ops)
        cases = tuple(c for c in cases if graph_ops(c.model.graph) & wanted_ops)
    return list(cases[:limit] if limit else cases)


def run(cases: list[Any], progress: bool = False) -> list[Outcome]:
    """Runs `cases` on a local-sync device with a scratch compile cache (the suite's ~1,900
    programs would otherwise fill the user's)."""
    import fibergrid as fg
    device = fg.create_device("local-sync")
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="fg-onnx-suite-") as cache:
        old = os.environ.get("FIBERGRID_CACHE_DIR")
        os.environ["FIBERGRID_CACHE_DIR"] = cache
        try:
            for i, case in enumerate(cases):
                outcomes.append(run_case(case, device))
                if progress and (i + 1) % 100 == 0:
                    print(f"... {i + 1}/{len(cases)}", file=sys.stderr, flush=True)
        finally:
            if old is None:
                os.environ.pop("FIBERGRID_CACHE_DIR", None)
            else:
                os.environ["FIBERGRID_CACHE_DIR"] = old
    return outcomes


EXPLAINED: dict[str, str] = {
    **dict.fromkeys(("test_dft_inverse", "test_dft_inverse_opset19"),
                    "expected values from numpy's single-precision FFT (complex64 input): components that are exactly 0 "
                    "are 1.9e-7 there, over the 1e-7 atol; fibergrid computes the DFT in float64 (~1e-16)"),
    **dict.fromkeys(("test_attention_4d_causal_fp16", "test_attention_4d_causal_fp16_expanded"),
                    "expected values rounded to float16 after every op of the reference; fibergrid rounds matmuls and "
                    "softmax once from float32: 2 of 192 elements differ by one float16 ulp (4.9e-4), over rtol 1e-3"),
}
"""Why a claimed case known to fail does, where its reason alone (a mismatch) does not say; it is
appended to the reason, never changes the outcome."""


def category(reason: str) -> str:
    """The kind of a failure, for the explained counts."""
    if "a value given at run time" in reason or "must be known at compile time" in reason or "given at run time" in reason:
        return ("an input whose value the conversion needs (shape, axes, pads, sizes, k, scatter indices...) "
                "arrives at run time: fibergrid specialises on shapes, not values")
    if "unsupported element type" in reason:
        return "element type without an IR form (strings; float6): " + reason.rsplit("element type ", 1)[-1].split()[0]
    if "sequence or optional" in reason or "only tensor" in reason:
        return "sequence or optional values (tensors only)"
    if reason.startswith("mismatch"):
        return "mismatch" + (f" ({reason.split(' -- why: ', 1)[1]})" if " -- why: " in reason else "")
    if "opset" in reason and "is not supported" in reason:
        return "opset before 7"
    return reason


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    counts = collections.Counter(o.status for o in outcomes)
    by_op: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for o in outcomes:
        key = o.ops[0] if len(o.ops) == 1 else "+".join(o.ops) if len(o.ops) <= 3 else "(graphs of %d ops)" % len(o.ops)
        by_op[key][o.status] += 1
    total = len(outcomes)
    return {
        "total": total, "pass": counts["pass"], "fail": counts["fail"], "unsupported": counts["unsupported"],
        "pass_rate": round(counts["pass"] / total, 4) if total else 0.0,
        "claimed_pass_rate": round(counts["pass"] / (counts["pass"] + counts["fail"]), 4) if counts["pass"] + counts["fail"] else 0.0,
        "by_op": {op: dict(c) for op, c in sorted(by_op.items())},
        "failure_kinds": dict(collections.Counter(
            category(o.reason).split(": ", 1)[0] if "element type" in o.reason else category(o.reason)
            for o in outcomes if o.status == "fail").most_common()),
        "failures": {o.name: o.reason for o in outcomes if o.status == "fail"},
        "unsupported_cases": {o.name: o.reason for o in outcomes if o.status == "unsupported"},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--op", action="append", help="only cases using this op (repeatable)")
    parser.add_argument("--case", action="append", help="only this case (repeatable)")
    parser.add_argument("--limit", type=int, help="at most this many cases")
    parser.add_argument("--failures", action="store_true", help="list every failure and unsupported case")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    outcomes = run(select(args.case, args.op, args.limit), progress=True)
    result = summary(outcomes)
    result["seconds"] = round(time.perf_counter() - start, 1)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{result['total']} cases: {result['pass']} pass, {result['fail']} fail, {result['unsupported']} unsupported "
          f"({100 * result['pass_rate']:.1f} % pass; {100 * result['claimed_pass_rate']:.1f} % of the claimed) "
          f"in {result['seconds']} s")
    for kind, count in result["failure_kinds"].items():
        print(f"  {count:4d} fail: {kind}")
    if args.failures:
        for name, reason in result["failures"].items():
            print(f"FAIL {name}: {reason}")
        for name, reason in result["unsupported_cases"].items():
            print(f"UNSUPPORTED {name}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
