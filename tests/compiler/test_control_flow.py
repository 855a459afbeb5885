"""Control flow compiled and run: JAX programs with fori_loop, while_loop, scan, cond and switch
(nested, and a loop inside a branch) against JAX itself, on every present driver; the program
through an .fgx; malformed control flow rejected with a clear error."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from compiler import executable
from compiler.host_program import CopyRecord, JumpRecord
from tests.compiler.conftest import assert_matches

jax = pytest.importorskip("jax")
jnp, lax = jax.numpy, jax.lax

DRIVERS = fg.available_drivers()
RNG = np.random.default_rng(9)
F32 = np.float32


def _rnn(params, xs):
    w, u, b = params

    def step(h, x):
        h = jnp.tanh(h @ w + x @ u + b)
        return h, h.sum()

    return lax.scan(step, jnp.zeros(w.shape[0], F32), xs)


def _nested(x, n):
    def outer(i, c):
        return lax.fori_loop(0, i, lambda j, d: d + j * 0.5, c) * 0.9
    return lax.fori_loop(0, n, outer, x)


def _loop_in_cond(x, n):
    return lax.cond(n > 2, lambda x: lax.fori_loop(0, n, lambda i, c: c * 1.1 + i, x), lambda x: x - 5, x)


@jax.jit
def _inner_loop(x):
    return lax.fori_loop(0, 3, lambda i, c: jnp.sin(c) + i, x)


# name -> (function, argument sets: the first is what it is lowered with)
PROGRAMS = {
    "fori_constant": (lambda x: lax.fori_loop(0, 7, lambda i, c: c * 1.5 + i, x),
                      [(RNG.standard_normal(5).astype(F32),)]),
    "fori_dynamic": (lambda x, n: lax.fori_loop(0, n, lambda i, c: c * 0.5 + jnp.cos(c) * i, x),
                     [(RNG.standard_normal((2, 3)).astype(F32), np.int32(6)),
                      (RNG.standard_normal((2, 3)).astype(F32), np.int32(0)),
                      (RNG.standard_normal((2, 3)).astype(F32), np.int32(-2))]),
    "while_data_dependent": (lambda x: lax.while_loop(lambda c: c[0].sum() < 100.0,
                                                      lambda c: (c[0] * 2.0 + 1.0, c[1] + 1), (x, 0)),
                             [(np.ones(3, F32),), (np.full(3, 40.0, F32),), (np.full(3, 200.0, F32),)]),
    "scan_cumsum": (lambda xs: lax.scan(lambda c, x: (c + x, c + x), jnp.zeros(4, F32), xs),
                    [(RNG.standard_normal((6, 4)).astype(F32),)]),
    "scan_length_zero": (lambda x: lax.scan(lambda c, _: (c * 2.0, None), x, None, length=0)[0],
                         [(np.ones(3, F32),)]),
    "scan_rnn": (_rnn, [([RNG.standard_normal((8, 8)).astype(F32) * 0.3, RNG.standard_normal((3, 8)).astype(F32),
                          RNG.standard_normal(8).astype(F32)], RNG.standard_normal((5, 3)).astype(F32))]),
    "cond": (lambda x: lax.cond(x.sum() > 0, lambda x: x * 2.0, lambda x: jnp.exp(x) - 1.0, x),
             [(np.array([1, -2, 3], F32),), (np.array([-1, -2, 3], F32),)]),
    "switch": (lambda i, x: lax.switch(i, [lambda x: x + 1, lambda x: x * 3, lambda x: -x], x),
               [(np.int32(i), RNG.standard_normal(4).astype(F32)) for i in (0, 1, 2, 5, -3)]),
    "nested_loops": (_nested, [(np.ones(2, F32), np.int32(4)), (np.ones(2, F32), np.int32(0))]),
    "loop_in_cond": (_loop_in_cond, [(np.ones(2, F32), np.int32(4)), (np.ones(2, F32), np.int32(1))]),
    "rotated_carry": (lambda a, b, c, n: lax.fori_loop(0, n, lambda i, s: (s[1], s[2] * 2, s[0]), (a, b, c)),
                      [(F32(1), F32(2), F32(3), np.int32(k)) for k in (0, 1, 5)]),
    "call_with_loop": (lambda x: _inner_loop(x) + _inner_loop(x * 2), [(RNG.standard_normal(3).astype(F32),)]),
}


def _flat(args) -> list[np.ndarray]:
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(args)]


@pytest.fixture(scope="module")
def texts() -> dict[str, str]:
    return {name: jax.jit(f).lower(*sets[0]).as_text() for name, (f, sets) in PROGRAMS.items()}


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("name", list(PROGRAMS))
def test_matches_jax(texts, name, driver):
    f, sets = PROGRAMS[name]
    module = fg.load(texts[name], device=driver)
    for args in sets:
        got = module(*_flat(args))
        got = list(got) if isinstance(got, tuple) else [got]
        assert_matches(got, jax.tree_util.tree_leaves(jax.jit(f)(*args)))


@pytest.mark.parametrize("driver", DRIVERS)
def test_stablehlo_if_case_while_and_call(driver):
    """The generic forms the StableHLO suite prints (an `if` on an i1, a `case` with an index out
    of range, a `while` whose body calls a function), against the reference evaluator."""
    from compiler.frontends.stablehlo import parse_stablehlo
    from compiler.reference import evaluate
    from tests.compiler.test_stablehlo_control import GENERIC

    module = fg.load(GENERIC, device=driver)
    x = np.array([1.5, -2.0], F32)
    for pred in (True, False):
        for index in (-1, 0, 1, 7):
            args = [np.bool_(pred), np.int32(index), x]
            assert_matches(list(module(*args)), evaluate(parse_stablehlo(GENERIC), "main", args))


def test_program_shape(texts):
    """A loop is jumps and carried-value copies in the host program; a function without control
    flow has neither (it is fusion's dispatch list, as before)."""
    loop = fg.load(texts["fori_dynamic"], device="local-task").compiled.program
    assert any(isinstance(s, JumpRecord) and s.predicate >= 0 for s in loop)
    assert any(isinstance(s, JumpRecord) and s.target < i for i, s in enumerate(loop))  # goes back
    assert any(isinstance(s, CopyRecord) for s in loop)
    # n is an argument: an entry test and an exit test; a scan's trip count is known: no entry test.
    assert len([s for s in loop if isinstance(s, JumpRecord) and s.predicate >= 0]) == 2
    for name in ("scan_cumsum", "fori_constant"):
        program = fg.load(texts[name], device="local-task").compiled.program
        assert len([s for s in program if isinstance(s, JumpRecord) and s.predicate >= 0]) == 1, name
    plain = fg.load(jax.jit(lambda x: jnp.sin(x) * 2).lower(np.ones(3, F32)).as_text(), device="local-task")
    assert not any(isinstance(s, (JumpRecord, CopyRecord)) for s in plain.compiled.program)


def test_fgx_round_trip(texts, tmp_path):
    path = tmp_path / "loop.fgx"
    targets = ["vulkan"] if "vulkan" in DRIVERS else []
    executable.save(executable.build(texts["while_data_dependent"], targets=targets), path)
    f, sets = PROGRAMS["while_data_dependent"]
    for driver in DRIVERS:
        module = fg.load(path, device=driver)
        for args in sets:
            assert_matches(list(module(*_flat(args))), jax.tree_util.tree_leaves(jax.jit(f)(*args)))


def test_fgx_with_a_bad_jump_is_refused(texts, tmp_path):
    """A damaged program (a jump past the end) fails at load naming the file, not on a device."""
    program = executable.build(texts["fori_dynamic"])
    compiled = next(iter(program.functions["main"].specializations.values()))
    steps = list(compiled.program)
    i = next(i for i, s in enumerate(steps) if isinstance(s, JumpRecord))
    steps[i] = JumpRecord(len(steps) + 5, steps[i].predicate, 0)
    import dataclasses
    program.functions["main"].specializations[compiled.shapes] = dataclasses.replace(compiled, program=tuple(steps))
    path = tmp_path / "bad.fgx"
    executable.save(program, path)
    with pytest.raises(fg.InvalidArgument, match=r"bad.fgx.*jump step"):
        executable.load(path)


def test_submit_runs_control_flow(texts):
    f, sets = PROGRAMS["fori_dynamic"]
    for driver in DRIVERS:
        module = fg.load(texts["fori_dynamic"], device=driver)
        futures = [module["main"].submit(*_flat(args)) for args in sets]
        for future, args in zip(futures, sets):
            assert_matches([future.result(30)], jax.tree_util.tree_leaves(jax.jit(f)(*args)))


def test_a_loop_that_never_ends_times_out():
    """while(true): the call fails with DeadlineExceeded at the module's timeout, on every
    driver (on the CPU the loop's backward jump checks the call's deadline), and the module still
    runs afterwards."""
    f = lambda x, stop: lax.while_loop(lambda c: c[1] != stop, lambda c: (c[0] + 1.0, c[1] + 1), (x, 0))[0]
    text = jax.jit(f).lower(np.zeros(2, F32), np.int32(3)).as_text()
    for driver in DRIVERS:
        module = fg.load(text, device=driver, timeout=0.3)
        with pytest.raises(fg.DeadlineExceeded):
            module(np.zeros(2, F32), np.int32(-1))
        np.testing.assert_array_equal(module(np.zeros(2, F32), np.int32(3)), [3, 3])


WHILE = """
func.func public @main(%x: tensor<3xf32>) -> tensor<3xf32> {{
  %r = stablehlo.while(%a = %x) : tensor<3xf32>
  cond {{
    %s = {cond}
    stablehlo.return %s : {cond_type}
  }} do {{
    %b = stablehlo.add %a, %a : tensor<3xf32>
    stablehlo.return %b : tensor<3xf32>
  }}
  return %r : tensor<3xf32>
}}
"""

CASE = """
func.func public @main(%i: {index_type}, %x: tensor<3xf32>) -> tensor<3xf32> {{
  %r = "stablehlo.case"(%i) ({{
    stablehlo.return %x : tensor<3xf32>
  }}, {{
    %b = stablehlo.add %x, %x : tensor<3xf32>
    stablehlo.return %b : tensor<3xf32>
  }}) : ({index_type}) -> tensor<3xf32>
  return %r : tensor<3xf32>
}}
"""


@pytest.mark.parametrize("text", [
    WHILE.format(cond="stablehlo.constant dense<1.0> : tensor<f32>", cond_type="tensor<f32>"),
    WHILE.format(cond="stablehlo.constant dense<true> : tensor<2xi1>", cond_type="tensor<2xi1>"),
    CASE.format(index_type="tensor<f32>"),
    CASE.format(index_type="tensor<2xi32>"),
])
def test_malformed_control_flow_is_a_clear_error(text):
    with pytest.raises(fg.Error) as info:
        fg.load(text, device="local-task")
    message = str(info.value)
    assert any(w in message for w in ("cond", "case", "index", "i1", "predicate")), message


def test_profile_a_model_with_a_loop(tmp_path, capsys):
    """`fibergrid profile` on a loop: the submissions are matched to their program although
    its commands ran once per iteration, and a loop body's time is what its iterations took."""
    import json

    from fibergrid import cli
    from tests.profile import trace_format

    f = lambda x, n: lax.fori_loop(0, n, lambda i, c: c * 0.5 + jnp.sin(c), x)
    model = tmp_path / "loop.mlir"
    model.write_text(jax.jit(f).lower(np.ones(256, F32), np.int32(5)).as_text())
    trace = tmp_path / "t.json"
    code = cli.main(["profile", str(model), "--input", "256xf32=1", "--input", "i32=20", "--device", "local-task",
                     "--repetitions", "3", "--trace", str(trace), "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    (device,) = json.loads(out)["devices"]
    names = [d["name"] for d in device["dispatches"]]
    assert not any("not identified" in n for n in names), names
    # The body's kernels ran once per iteration: 20 workgroups a call, each call one instance.
    assert any(d["calls"] == 3 and d["workgroups_per_call"] == 20 and d["kind"] == "elementwise"
               for d in device["dispatches"]), device["dispatches"]
    trace_format.check(json.loads(trace.read_text()))
