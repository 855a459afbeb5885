"""Shared helpers for the StableHLO frontend tests: lower with JAX, parse, run the reference
evaluator and compare with JAX's own result."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

from compiler.frontends.stablehlo import parse_stablehlo
from compiler.ir import Module
from compiler.reference import evaluate


def assert_matches(got: list[np.ndarray], want: list[Any]) -> None:
    """Floats: max abs error <= 1e-4 * max|ref| (at least 1e-4); integers and bools exact."""
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        w = np.asarray(w)
        assert g.shape == w.shape, f"result {i}: shape {g.shape} != {w.shape}"
        assert g.dtype == w.dtype, f"result {i}: dtype {g.dtype} != {w.dtype}"
        if w.dtype.kind in "fV":
            g64, w64 = g.astype(np.float64), w.astype(np.float64)
            assert np.array_equal(np.isnan(g64), np.isnan(w64)), f"result {i}: NaNs differ"
            finite = ~np.isnan(w64)
            assert np.array_equal(g64[~np.isfinite(w64) & finite], w64[~np.isfinite(w64) & finite])
            ok = np.isfinite(w64)
            scale = np.abs(w64[ok]).max(initial=0.0)
            tol = max(1e-4 * scale, 1e-4) * (8 if w.dtype.itemsize < 4 else 1)  # f16/bf16 roundings
            err = np.abs(g64[ok] - w64[ok]).max(initial=0.0)
            assert err <= tol, f"result {i}: max abs error {err} > {tol}"
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"result {i}")


@pytest.fixture(scope="session")
def jax_modules():
    """(jax, jnp, lax), skipping the test when JAX is missing."""
    jax = pytest.importorskip("jax")
    return jax, jax.numpy, jax.lax


@pytest.fixture
def check(jax_modules) -> Callable[..., Module]:
    """check(f, *args): lower f with JAX, parse, evaluate, compare; returns the module."""
    jax = jax_modules[0]

    def run(f: Callable, *args: Any) -> Module:
        lowered = jax.jit(f).lower(*args)
        module = parse_stablehlo(lowered.as_text())
        got = evaluate(module, "main", [np.asarray(a) for a in jax.tree_util.tree_leaves(args)])
        want = jax.tree_util.tree_leaves(lowered.compile()(*args))
        assert_matches(got, want)
        return module

    return run


def op_names(module: Module) -> set[str]:
    """Every op name used anywhere in the module (nested regions included)."""
    names: set[str] = set()

    def walk(ops) -> None:
        for op in ops:
            names.add(op.name)
            for region in op.regions:
                walk(region.ops)

    for fn in module.functions.values():
        walk(fn.ops)
    return names


def run_against_jax(device, f: Callable, *args: Any):
    """Compile f's StableHLO with fibergrid, run it on `device`, compare with jax.jit(f)(*args);
    returns the loaded module (tests inspect its dispatches)."""
    import jax

    import fibergrid as fg

    mod = fg.load(jax.jit(f).lower(*args).as_text(), device)
    got = mod(*args)
    want = jax.tree_util.tree_leaves(jax.jit(f)(*args))
    assert_matches(list(got) if isinstance(got, tuple) else [got], [np.asarray(w) for w in want])
    return mod
