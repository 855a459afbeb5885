"""`fibergrid check`: both spellings of the check dialect, hoisted constants, and what it prints
for a pass, a failure, an error and a skip."""

from __future__ import annotations

import json

import numpy as np

from compiler.frontends.check_dialect import read_tests
from fibergrid import cli

STABLEHLO_SPELLING = """\
func.func @passes() {
  %x = stablehlo.constant dense<[1.0, -2.0, 3.5]> : tensor<3xf32>
  %y = stablehlo.abs %x : tensor<3xf32>
  check.expect_almost_eq_const %y, dense<[1.0, 2.0, 3.5]> : tensor<3xf32>
  check.expect_eq %y, %y : tensor<3xf32>
  check.expect_close %y, %y, max_ulp_difference = 3 : tensor<3xf32>, tensor<3xf32>
  func.return
}

// -----

func.func @fails() {
  %x = stablehlo.constant dense<[1, 2, 3]> : tensor<3xi32>
  %y = stablehlo.add %x, %x : tensor<3xi32>
  check.expect_eq_const %y, dense<[2, 4, 7]> : tensor<3xi32>
  func.return
}

// -----

func.func @errs() {
  %x = stablehlo.constant dense<1> : tensor<i32>
  %y = stablehlo.no_such_op %x : tensor<i32>
  func.return
}

// -----

func.func @skipped() {
  %x = stablehlo.constant dense<1> : tensor<i4>
  func.return
}
"""

IREE_SPELLING = """\
func.func @iree_style() {
  %x = util.unfoldable_constant dense<[1.0, 4.0]> : tensor<2xf32>
  %y = stablehlo.sqrt %x : tensor<2xf32>
  check.expect_almost_eq_const(%y, dense<[1.0, 2.0]>) : tensor<2xf32>
  %b = stablehlo.compare GT, %y, %x : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xi1>
  %n = stablehlo.not %b : tensor<2xi1>
  check.expect_true(%n) : tensor<2xi1>
  %near = util.unfoldable_constant dense<[1.05, 2.05]> : tensor<2xf32>
  check.expect_almost_eq(%y, %near, atol 0.1) : tensor<2xf32>
  %z = util.unfoldable_constant dense<[1.01, 3.9]> : tensor<2xf32>
  check.expect_almost_eq(%x, %z, atol 0.0, rtol 0.03) : tensor<2xf32>
  %kept = util.optimization_barrier %x : tensor<2xf32>
  %a = "stablehlo.abs"(%kept) : (tensor<2xf32>) -> tensor<2xf32>
  check.expect_eq_const(%a, dense<[1.0, 4.0]> : tensor<2xf32>) : tensor<2xf32>
  return
}
"""


def test_constants_feeding_ops_become_inputs() -> None:
    case = read_tests(STABLEHLO_SPELLING)[0]
    fn = case.module.function("passes")
    assert [op.name for op in fn.ops] == ["abs"]  # the constant is an argument now
    np.testing.assert_array_equal(case.inputs[0], [1.0, -2.0, 3.5])
    assert [c.kind for c in case.checks] == ["almost_eq", "eq", "close"] and case.checks[2].max_ulps == 3


def test_cli_reports_each_outcome_and_totals(tmp_path, capsys) -> None:
    path = tmp_path / "t.mlir"
    path.write_text(STABLEHLO_SPELLING)
    assert cli.main(["check", str(path), "--device", "local-sync"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "PASS  t.mlir:passes"
    assert out[1] == "FAIL  t.mlir:fails: line 15: 1 of 3 differ; first at [2]: got 6, want 7"
    assert out[2].startswith("ERROR t.mlir:errs: unsupported op 'stablehlo.no_such_op' at 23:")
    assert out[3] == "SKIP  t.mlir:skipped: sub-byte integers"
    assert out[4] == "4 tests: 1 passed, 1 failed, 1 errors, 1 skipped (33.3 % of those run)"


def test_iree_spelling_and_json(tmp_path, capsys) -> None:
    path = tmp_path / "iree.mlir"
    path.write_text(IREE_SPELLING)
    assert cli.main(["check", str(path), "--json", "--device", "local-task"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["totals"] == {"PASS": 1, "FAIL": 0, "ERROR": 0, "SKIP": 0}
    assert report["tests"][0]["test"] == "iree_style"
