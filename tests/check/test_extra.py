"""Check-dialect tests of ops the StableHLO suite does not cover (tests/check/extra/: rng's
distributions, the batch_norm ops on the spec's examples), plus ops checked against numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fibergrid as fg
from compiler.frontends.stablehlo import parse_stablehlo
from compiler.reference import evaluate
from fibergrid import check

EXTRA = sorted(str(p) for p in (Path(__file__).parent / "extra").glob("*.mlir"))


def test_extra_check_files_pass() -> None:
    outcomes = list(check.run_files(EXTRA, fg.default_device("local-task")))
    assert len(outcomes) >= 6
    assert [o for o in outcomes if o.status != "PASS"] == []


BATCH_NORM_GRAD = """func.func @main(%x: tensor<3x4x5xf32>, %scale: tensor<4xf32>, %mean: tensor<4xf32>,
                         %var: tensor<4xf32>, %dy: tensor<3x4x5xf32>) -> (tensor<3x4x5xf32>, tensor<4xf32>, tensor<4xf32>) {
  %0:3 = "stablehlo.batch_norm_grad"(%x, %scale, %mean, %var, %dy) {epsilon = 0.001 : f32, feature_index = 1 : i64}
    : (tensor<3x4x5xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<3x4x5xf32>) -> (tensor<3x4x5xf32>, tensor<4xf32>, tensor<4xf32>)
  return %0#0, %0#1, %0#2 : tensor<3x4x5xf32>, tensor<4xf32>, tensor<4xf32>
}"""


def test_batch_norm_grad_kernels_match_the_spec_formulas() -> None:
    rng = np.random.default_rng(0)
    args = [rng.standard_normal((3, 4, 5)).astype(np.float32), rng.standard_normal(4).astype(np.float32),
            rng.standard_normal(4).astype(np.float32), rng.uniform(0.5, 2, 4).astype(np.float32),
            rng.standard_normal((3, 4, 5)).astype(np.float32)]
    want = evaluate(parse_stablehlo(BATCH_NORM_GRAD), "main", args)
    for got, w in zip(fg.load(BATCH_NORM_GRAD, "local-sync")(*args), want):
        np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dim,batch_dims", [(0, 0), (1, 0), (2, 1)])
def test_torch_index_select_is_numpy_take(dim: int, batch_dims: int) -> None:
    x = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)
    index = np.array([[2, 0, 1, 1], [0, 0, 2, 1]], np.int32) % x.shape[dim]
    index = index if batch_dims else index[0]
    if batch_dims:
        want = np.stack([np.take(x[b], index[b], axis=dim - 1) for b in range(2)])
    else:
        want = np.take(x, index, axis=dim)
    i_type = "x".join(map(str, index.shape)) + "xi32"
    r_type = "x".join(map(str, want.shape)) + "xf32"
    text = f"""func.func @main(%x: tensor<2x4x3xf32>, %i: tensor<{i_type}>) -> tensor<{r_type}> {{
      %0 = "stablehlo.torch_index_select"(%x, %i) {{dim = {dim} : i64, batch_dims = {batch_dims} : i64}}
        : (tensor<2x4x3xf32>, tensor<{i_type}>) -> tensor<{r_type}>
      return %0 : tensor<{r_type}>
    }}"""
    np.testing.assert_array_equal(evaluate(parse_stablehlo(text), "main", [x, index])[0], want)
    np.testing.assert_array_equal(fg.load(text, "local-sync")(x, index), want)
