"""bench.matmul_kernels --costs: every tiling it times computes x @ w + b (checked against numpy
inside `costs`, which raises on a mismatch), at shapes whose tiles do not divide M, N or K."""

from __future__ import annotations

import pytest

from bench import matmul_kernels
from compiler.codegen.llvm_cpu import matmul


@pytest.mark.parametrize("m, n, k", [(23, 40, 300), (130, 70, 33)])
def test_costs_times_every_variant(m: int, n: int, k: int) -> None:
    rows = matmul_kernels.costs([(m, n, k)], rounds=1)
    variants = matmul_kernels.cost_variants(m, n, k)
    assert [row["variant"] for row in rows] == list(variants)
    for row in rows:
        assert row["shape"] == f"{m}x{n}x{k}" and row["workgroups"] >= 1
        assert min(row["hot_us"], row["cold_us"], row["two_threads_us"]) > 0


def test_cost_variants_balance_rows() -> None:
    """Row tiles as many as chosen, as equal as the register tile allows (128 rows in tiles of
    at most 96 on AVX-512: 66 and 62, not 96 and 32)."""
    variants = matmul_kernels.cost_variants(128, 256, 256)
    assert variants["chosen"] == matmul.choose_config(128, 256, 256, packed=True)
    base = variants["chosen"]
    balanced = variants["balanced_rows"]
    assert -(-128 // balanced.tile_m) == -(-128 // base.tile_m)
    assert balanced.tile_m % base.mr == 0 and 128 - balanced.tile_m <= balanced.tile_m
