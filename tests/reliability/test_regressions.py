"""Bugs the fuzzers found, each replayed as a fixed input."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import fibergrid as fg
from compiler import executable
from fibergrid.cli import CliError, parse_input


def resigned(data: bytes, edit) -> bytes:
    """The .fgx `data` with its metadata passed through `edit(meta) -> bytes` and re-signed."""
    h = executable._HEADER
    magic, version, flags, length, _ = h.unpack_from(data)
    meta = edit(json.loads(data[h.size:h.size + length]))
    return h.pack(magic, version, flags, len(meta), hashlib.sha256(meta).digest()) + meta + data[h.size + length:]


@pytest.fixture(scope="module")
def fgx() -> bytes:
    jax = pytest.importorskip("jax")
    text = jax.jit(lambda x: (x * 2.0).sum(axis=1)).lower(np.zeros((2, 8), np.float32)).as_text()
    return executable.to_bytes(executable.build(text))


def test_deeply_nested_metadata_is_rejected(fgx):
    """json.loads raised RecursionError, which escaped from_bytes."""
    deep = resigned(fgx, lambda m: b'{"functions":' + b"[" * 100_000 + b"]" * 100_000 + b"," + json.dumps(m).encode()[1:])
    with pytest.raises(fg.InvalidArgument, match="malformed metadata"):
        executable.from_bytes(deep, "deep.fgx")


@pytest.mark.parametrize("path, value", [
    (("functions", 0, "specializations", 0, "tensors", 0, "shape", 1), 1e308),   # int() turned it into a huge dim
    (("functions", 0, "specializations", 0, "tensors", 0, "shape", 1), 0.5),     # ... or into 0
    (("functions", 0, "specializations", 0, "tensors", 1, "kind"), 1),          # str() turned it into '1'
    (("functions", 0, "specializations", 0, "tensors", 1, "input_index"), "0"),  # int('0')
    (("functions", 0, "specializations", 0, "inputs"), ""),                      # iterating '' gave no inputs
    (("functions", 0, "specializations", 0, "steps", 0, "barrier_before"), 1),
])
def test_fields_of_the_wrong_type_are_rejected(fgx, path, value):
    """The decoders converted with int()/str(), so a field of the wrong type became another program."""
    def edit(meta):
        parent = meta
        for p in path[:-1]:
            parent = parent[p]
        parent[path[-1]] = value
        return json.dumps(meta).encode()
    with pytest.raises(fg.InvalidArgument, match=f"{path[-1]}|malformed"):
        executable.from_bytes(resigned(fgx, edit), "typed.fgx")


@pytest.mark.parametrize("field, value, message", [
    ("shape", [2, -1], "bad shape"),
    ("input_index", 5, "input index"),
    ("dispatch_tensor", 99, "missing"),
    ("entry", "no_such_kernel", "unknown kernel"),
])
def test_inconsistent_host_programs_are_rejected(fgx, field, value, message):
    """Re-signed metadata whose values have the right types but refer to nothing: an error at load,
    not an IndexError or a kernel bound to the wrong buffer at the first call."""
    def edit(meta):
        s = meta["functions"][0]["specializations"][0]
        temp = next(t for t in s["tensors"] if t["kind"] == "temp")
        if field == "shape":
            temp["shape"] = value
        elif field == "input_index":
            next(t for t in s["tensors"] if t["kind"] == "input")["input_index"] = value
        elif field == "dispatch_tensor":
            s["steps"][0]["tensors"][0] = value
        else:
            s["steps"][0]["entry"] = value
        return json.dumps(meta).encode()
    with pytest.raises(fg.InvalidArgument, match=message):
        executable.from_bytes(resigned(fgx, edit), "inconsistent.fgx")


@pytest.mark.parametrize("spec", ["99999999999x0x99999999999x3xf16=[[]]", "4294967297x4294967297x1x0xf32=[]"])
def test_cli_empty_shapes_too_large_for_numpy(spec):
    """No values for a shape with a 0 dim whose other dims overflow numpy's size: reshape raised
    a raw ValueError."""
    with pytest.raises(CliError, match="too large"):
        parse_input(spec)


def test_cli_fill_larger_than_the_machine_is_refused_before_allocating():
    """`--input 99999999999x99999999999xf32=1` went to np.full; a fill of more than the machine
    has now is refused before anything is allocated or written."""
    with pytest.raises(CliError, match="available"):
        parse_input("99999999999x99999999999xf32=1")


@pytest.mark.parametrize("shape", [(1 << 32, 1 << 32), (1 << 62, 4)])
def test_huge_shapes_do_not_wrap_to_small_buffers(shape):
    """allocate_view multiplied dims in int64: (2**32, 2**32) wrapped to 0 bytes, a buffer every
    kernel would overrun."""
    with fg.create_device("local-sync") as dev:
        with pytest.raises(fg.ResourceExhausted):
            dev.allocator.allocate_view(shape, np.float32)


def test_negative_dims_are_rejected_before_allocation():
    with fg.create_device("local-sync") as dev:
        with pytest.raises(fg.InvalidArgument, match="non-negative"):
            dev.allocator.allocate_view((-1, 4), np.float32)


# Found by the long fuzz runs: malformed ops that passed the frontend and broke code generation
# with raw exceptions (TypeError in fusion or codegen, LLVM IR errors, KeyError).
_VALID = """func.func @main(%a: tensor<4xf32>, %b: tensor<4xf32>, %p: tensor<4xi1>, %i: tensor<4xi32>) -> tensor<4xf32> {
  %0 = BODY
  return %0 : tensor<4xf32>
}"""


@pytest.mark.parametrize("body, message", [
    ("stablehlo.add %a, %b, %a : tensor<4xf32>", "takes 2 operands"),
    ('stablehlo.broadcast_in_dim %a, %b, dims = [0] : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>', "takes 1 operand"),
    ("stablehlo.broadcast_in_dim %a, dims = [] : (tensor<4xf32>) -> tensor<4xf32>", "broadcast_dimensions"),
    ("stablehlo.select %a, %a, %b : tensor<4xf32>, tensor<4xf32>", "predicate must be i1|malformed|i1"),
    ("stablehlo.add %a, %i : (tensor<4xf32>, tensor<4xi32>) -> tensor<4xf32>", "element type|does not match"),
])
def test_malformed_ops_are_compile_errors(body, message):
    from compiler import pipeline
    with pytest.raises(fg.InvalidArgument, match=message):
        pipeline.compile_function(pipeline.parse(_VALID.replace("BODY", body)), "main")


def test_returning_an_undefined_value_is_a_compile_error():
    from compiler import pipeline
    text = _VALID.replace("%0 = BODY\n  return %0", "%0 = stablehlo.add %a, %b : tensor<4xf32>\n  return %7")
    with pytest.raises(fg.InvalidArgument):
        pipeline.compile_function(pipeline.parse(text), "main")


@pytest.mark.parametrize("fmt, index", [("stablehlo", 20537), ("stablehlo", 39494), ("stablehlo", 25454),
                                        ("stablehlo", 36413), ("stablehlo", 90551), ("stablehlo", 13390), ("stablehlo", 38489), ("stablehlo", 41378), ("stablehlo", 37409),
                                        ("stablehlo", 13479), ("stablehlo", 89660),
                                        ("onnx", 4901), ("onnx", 37307), ("cli", 6917), ("cli", 21278)])
def test_fuzz_findings_replay(fmt, index, tmp_path, monkeypatch):
    """The inputs of the 100,000-input runs that escaped as raw exceptions (seed 0), compiled and
    called as the run did: each is now rejected with a fibergrid error."""
    pytest.importorskip("jax" if fmt == "stablehlo" else "onnx")
    from tests.reliability import fuzz
    monkeypatch.setenv("FIBERGRID_CACHE_DIR", str(tmp_path))
    ctx = _contexts.setdefault(fmt, fuzz.make_context(fmt))
    assert fuzz.check_input(fmt, 0, index, ctx, compile_every=1) in ("rejected", "rejected_at_compile")


_contexts: dict = {}
