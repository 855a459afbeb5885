"""Malformed input never crashes or hangs the interpreter: mutated StableHLO text, damaged .fgx
files, the CLI's input syntax and wrong call arguments each end in a `fibergrid.Error` (or, for
a mutation that is still a valid program, in a result), and the process stays usable.

A crash would kill the test run, a hang trips the watchdog: both fail loudly. The default run
tries a few dozen inputs of each kind (derandomized); `-m slow` runs FIBERGRID_FUZZ_EXAMPLES."""

from __future__ import annotations

import faulthandler
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fibergrid as fg
from compiler import executable
from fibergrid.cli import CliError, parse_input
from tests.reliability.mutations import byte_edits, edits, input_specs, wrong_arguments

jax = pytest.importorskip("jax")
jnp = jax.numpy
EXAMPLES = int(os.environ.get("FIBERGRID_FUZZ_EXAMPLES", "2000"))
QUICK = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
LONG = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
MAX_ELEMENTS = 1 << 20  # a mutation may declare huge inputs: do not allocate them


def _seeds() -> dict[str, str]:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 4)).astype(np.float32)
    x = np.zeros((2, 8), np.float32)
    img = np.zeros((1, 6, 6, 2), np.float32)
    f = rng.standard_normal((3, 3, 2, 3)).astype(np.float32)
    return {
        "mlp": jax.jit(lambda x: jax.nn.relu(x @ w + 1.0).sum(axis=1)).lower(x).as_text(),
        "conv": jax.jit(lambda v: jax.lax.reduce_window(
            jax.lax.conv_general_dilated(v, f, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")),
            -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")).lower(img).as_text(),
        "data": jax.jit(lambda x, i: (jnp.sort(x[::-1], axis=1), jnp.take(x, i, axis=0),
                                      jax.lax.dynamic_slice(x, (i[0], 0), (1, 4)))).lower(x, np.array([1, 0], np.int32)).as_text(),
    }


SEEDS = _seeds()


@pytest.fixture(scope="module")
def device():
    with fg.create_device("local-task", workers=2) as dev:
        yield dev


@pytest.fixture(autouse=True)
def watchdog():
    """A hang fails the run (with every thread's stack) instead of stalling it."""
    faulthandler.dump_traceback_later(300, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def load_and_call(text: str, device) -> None:
    """fg.load, then a call with zeros of the declared signature: each either works or raises
    a fibergrid.Error."""
    try:
        module = fg.load(text, device=device)
    except fg.Error:
        return
    for function in module.functions.values():
        args = []
        for shape, dtype in function.signature:
            dims = [2 if d is None else d for d in shape]
            if int(np.prod(dims, dtype=np.int64)) > MAX_ELEMENTS:
                return
            args.append(np.zeros(dims, dtype))
        try:
            function(*args)
        except fg.Error:
            pass


def _stablehlo_case(device, seed: str, data) -> None:
    load_and_call(data.draw(edits(SEEDS[seed]), label="text"), device)


@QUICK
@given(seed=st.sampled_from(sorted(SEEDS)), data=st.data())
def test_mutated_stablehlo(device, seed, data):
    _stablehlo_case(device, seed, data)


@pytest.mark.slow
@LONG
@given(seed=st.sampled_from(sorted(SEEDS)), data=st.data())
def test_mutated_stablehlo_long(device, seed, data):
    _stablehlo_case(device, seed, data)


@pytest.fixture(scope="module")
def fgx_bytes() -> bytes:
    return executable.to_bytes(executable.build(SEEDS["mlp"]))


@QUICK
@given(data=st.data())
def test_damaged_fgx(device, fgx_bytes, data):
    damaged = data.draw(byte_edits(fgx_bytes), label="fgx")
    try:
        program = executable.from_bytes(damaged, "damaged.fgx")
    except fg.Error:
        return
    assert executable.to_bytes(program) == fgx_bytes, "damage that decodes must have changed nothing"


@QUICK
@given(spec=input_specs)
def test_cli_input_syntax(spec):
    try:
        a = parse_input(spec)
    except CliError:  # the CLI prints it as one line and exits with status 2
        return
    assert isinstance(a, np.ndarray)


@QUICK
@given(arg=wrong_arguments)
def test_wrong_call_arguments(device, arg):
    module = _mlp_module(device)
    try:
        module(arg)
    except fg.InvalidArgument:
        return
    raise AssertionError(f"{arg!r} was accepted for a 2x8xf32 argument")


_modules: dict = {}


def _mlp_module(device):
    if device not in _modules:
        _modules[device] = fg.load(SEEDS["mlp"], device=device)
    return _modules[device]
