""".fgx executables and the compile cache: round trips, several functions, dynamic shapes,
damaged / foreign / wrong-version files (fuzzed) failing with one clear error, cache hits."""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest

import fibergrid as fg
from compiler import executable
from compiler.cache import CACHE
from tests.compiler.conftest import assert_matches

# Two public functions, one with two results; hand-written so it needs no JAX.
TWO_FUNCTIONS = """
module @m {
  func.func public @main(%arg0: tensor<2x3xf32>, %arg1: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %0 = stablehlo.add %arg0, %arg1 : tensor<2x3xf32>
    return %0 : tensor<2x3xf32>
  }
  func.func public @twice(%arg0: tensor<4xi32>) -> (tensor<4xi32>, tensor<4xi32>) {
    %0 = stablehlo.add %arg0, %arg0 : tensor<4xi32>
    %1 = stablehlo.multiply %0, %arg0 : tensor<4xi32>
    return %0, %1 : tensor<4xi32>, tensor<4xi32>
  }
}
"""
RNG = np.random.default_rng(3)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("FIBERGRID_CACHE_DIR", str(path))
    return path


@pytest.fixture(scope="module")
def device():
    with fg.create_device("local-sync") as dev:
        yield dev


@pytest.fixture(scope="module")
def two_functions_bytes() -> bytes:
    return executable.to_bytes(executable.build(TWO_FUNCTIONS))


def _check_two_functions(mod) -> None:
    x, y = RNG.standard_normal((2, 3)).astype(np.float32), RNG.standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(mod(x, y), x + y)
    a = np.array([1, 2, 3, 4], np.int32)
    for twice in (mod.twice, mod["twice"]):
        doubled, product = twice(a)
        np.testing.assert_array_equal(doubled, 2 * a)
        np.testing.assert_array_equal(product, 2 * a * a)


def test_round_trip_keeps_every_function(tmp_path, device, two_functions_bytes) -> None:
    program = executable.from_bytes(two_functions_bytes, "mem.fgx")
    assert list(program.functions) == ["main", "twice"]
    assert program.source is None  # static: compiled code only
    assert executable.to_bytes(program) == two_functions_bytes
    path = tmp_path / "m.fgx"
    path.write_bytes(two_functions_bytes)
    _check_two_functions(fg.load(str(path), device))


def test_constants_survive_the_file(tmp_path, device, jax_modules) -> None:
    jax = jax_modules[0]
    w1, b1 = RNG.standard_normal((16, 32)).astype(np.float32), RNG.standard_normal(32).astype(np.float32)
    w2 = RNG.standard_normal((32, 4)).astype(np.float32)

    def mlp(x):
        return jax.nn.relu(x @ w1 + b1) @ w2

    x = RNG.standard_normal((3, 16)).astype(np.float32)
    path = tmp_path / "mlp.fgx"
    executable.save(executable.build(jax.jit(mlp).lower(x).as_text()), path)
    assert_matches([fg.load(path, device)(x)], [np.asarray(jax.jit(mlp)(x))])


def test_dynamic_batch_fgx_runs_every_batch_with_no_compile(tmp_path, cache_dir, device, jax_modules) -> None:
    jax, jnp, _ = jax_modules
    w, b = RNG.standard_normal((4, 8)).astype(np.float32), RNG.standard_normal(8).astype(np.float32)

    def layer(x):
        return jax.nn.relu(x @ w + b)

    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, 4"), jnp.float32)
    text = jax.export.export(jax.jit(layer))(spec).mlir_module()
    program = executable.build(text, shapes={"main": [((2, 4),)]})  # batch 2 ahead of time, too
    entry = program.functions["main"]
    assert entry.is_dynamic and entry.dynamic is not None and program.source == text
    path = tmp_path / "dyn.fgx"
    executable.save(program, path)

    builds = CACHE.builds
    mod = fg.load(path, device)
    assert mod.main.dynamic
    for batch in (2, 3, 3, 5):  # 2: the exact specialization; 3 and 5: the code for every batch
        x = RNG.standard_normal((batch, 4)).astype(np.float32)
        assert_matches([mod(x)], [np.asarray(jax.jit(layer)(x))])
    assert CACHE.builds == builds


def test_dynamic_fallback_compiles_new_shapes_through_the_cache(tmp_path, cache_dir, device, jax_modules) -> None:
    jax, jnp, _ = jax_modules

    def centred(x):  # a sum over the batch: compiled per batch size (compiler/dynamic.py)
        return x - x.sum(0)

    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, 4"), jnp.float32)
    text = jax.export.export(jax.jit(centred))(spec).mlir_module()
    program = executable.build(text, shapes={"main": [((2, 4),)]})
    assert program.functions["main"].dynamic is None and "reduces over the dynamic dim" in program.functions["main"].dynamic_fallback
    path = tmp_path / "dyn.fgx"
    executable.save(program, path)

    builds = CACHE.builds
    mod = fg.load(path, device)
    assert not mod.main.dynamic and "reduces over" in mod.main.dynamic_fallback
    for batch in (2, 3, 3, 5):
        x = RNG.standard_normal((batch, 4)).astype(np.float32)
        assert_matches([mod(x)], [np.asarray(jax.jit(centred)(x))])
    assert CACHE.builds == builds + 2  # 3 and 5; 2 came with the file, the second 3 was prepared

    hits = CACHE.hits
    fg.load(path, device)(np.zeros((3, 4), np.float32))
    assert (CACHE.builds, CACHE.hits) == (builds + 2, hits + 1)


def test_cache_hit_skips_the_compile_and_a_damaged_entry_is_rebuilt(cache_dir, device) -> None:
    builds, hits = CACHE.builds, CACHE.hits
    _check_two_functions(fg.load(TWO_FUNCTIONS, device))
    (entry,) = cache_dir.glob("*.fgx")
    _check_two_functions(fg.load(TWO_FUNCTIONS, device))
    assert (CACHE.builds, CACHE.hits) == (builds + 1, hits + 1)

    entry.write_bytes(entry.read_bytes()[:-7])  # truncated by a crash or a full disk
    _check_two_functions(fg.load(TWO_FUNCTIONS, device))
    assert (CACHE.builds, CACHE.hits) == (builds + 2, hits + 1)
    executable.load(entry)  # rewritten whole
    assert sorted(p.name for p in cache_dir.iterdir()) == [entry.name]  # no temporary files left

    fg.load(TWO_FUNCTIONS.replace("multiply", "subtract"), device)
    assert CACHE.builds == builds + 3  # another source is another key


def _fails_cleanly(data: bytes) -> str:
    with pytest.raises((fg.InvalidArgument, fg.Unavailable)) as info:
        executable.from_bytes(data, "model.fgx")
    message = str(info.value)
    assert message.startswith("model.fgx: ") and "\n" not in message
    return message


def test_truncations_and_bit_flips_are_clear_errors(two_functions_bytes) -> None:
    data = two_functions_bytes
    rng = np.random.default_rng(11)
    for cut in [0, 1, 7, 55, 56, 57, len(data) - 1, *rng.integers(0, len(data), 150)]:
        _fails_cleanly(data[:cut])
    for bit in [*range(0, 56 * 8, 5), *rng.integers(0, len(data) * 8, 300)]:
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        _fails_cleanly(bytes(flipped))
    assert "unexpected bytes" in _fails_cleanly(data + b"\0")
    assert "bad magic" in _fails_cleanly(b"PK\x03\x04" + data[4:])


def test_wrong_version_is_named(two_functions_bytes) -> None:
    data = bytearray(two_functions_bytes)
    struct.pack_into("<I", data, 8, executable.FORMAT_VERSION + 1)
    assert f"format version {executable.FORMAT_VERSION + 1}" in _fails_cleanly(bytes(data))


def test_code_for_another_cpu_is_refused(two_functions_bytes) -> None:
    program = executable.from_bytes(two_functions_bytes, "model.fgx")
    host = program.target
    extra = dataclasses.replace(program, target=dataclasses.replace(host, features=host.features | {"+madeup-isa"}))
    with pytest.raises(fg.Unavailable, match=r"model\.fgx: .*lacks: \+madeup-isa"):
        executable.from_bytes(executable.to_bytes(extra), "model.fgx")
    foreign = dataclasses.replace(program, target=executable.Target("sparc64-unknown-linux-gnu", "v9", frozenset()))
    with pytest.raises(fg.Unavailable, match="compiled for sparc64"):
        executable.from_bytes(executable.to_bytes(foreign), "model.fgx")


def test_load_names_unreadable_and_foreign_files(tmp_path, device) -> None:
    junk = tmp_path / "junk.fgx"
    junk.write_bytes(b"\x00\xff" * 100)
    with pytest.raises(fg.InvalidArgument, match="junk.fgx: not a fibergrid executable"):
        fg.load(junk, device)
    with pytest.raises(fg.InvalidArgument, match="cannot read"):
        fg.load(str(tmp_path / "missing.fgx"), device)
    with pytest.raises(fg.InvalidArgument, match="cannot read 'model.onnx'"):
        fg.load("model.onnx", device)
