"""Mutation fuzzing by the hundred thousand: every parser and loader fed damaged inputs in child
processes, counting crashes (a child killed by a signal), hangs (a child silent for HANG_S) and
violations (an exception that is not a `fibergrid.Error`, a damaged file that decodes to a
different program, a wrong result).

Formats, each made from valid seeds by deterministic mutations (input `i` of seed `s` is
always the same, so a failure found once is replayed with `--replay FORMAT SEED I`):
- `stablehlo`: JAX's StableHLO text with edits (tests/reliability/mutations.py's kinds);
- `onnx`: small ONNX models (made here, and a torch export from tests/onnx/models) with byte
  damage or structure-aware edits of the ModelProto (op types, attributes, names, dims, element
  types, initializer data, node order, opsets);
- `fgx`: .fgx bytes with flipped, dropped or inserted bytes;
- `fgx_structure`: .fgx files with a valid header and re-signed metadata in which offsets,
  lengths, checksums, versions or JSON fields (of the wrong type) are wrong;
- `cli`: the CLI's `--input` syntax.
Every input goes through its frontend's checks (parse, shape specialization, .fgx decoding);
one in `compile_every` accepted inputs is also compiled, loaded and called (LLVM, the object
loader, a run), since a compile takes a second where a parse takes milliseconds.

Run through bench/reliability.py (the counts as JSON) or tests/reliability/test_fuzz.py."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[2]
FORMATS = ("stablehlo", "onnx", "fgx", "fgx_structure", "cli")
HANG_S = 120.0  # no progress from a child for this long: a hang
STARTUP_S = 900.0  # ... before its first input
MEMORY_LIMIT = int(os.environ.get("FIBERGRID_FUZZ_MEMORY", 6 << 30))  # data per child
MAX_ELEMENTS = 1 << 20  # a mutation may declare huge inputs: calls with more are skipped
# (CLI shapes are either small or beyond any machine: 4 TB, not 4 GB, so that a quick run in the
# test process never fills gigabytes.)

# --------------------------------------------------------------------------------------------
# Mutations, driven by a numpy Generator (deterministic per input)


def text_edits(rng: np.random.Generator, text: str) -> str:
    from tests.reliability.mutations import TOKENS
    for _ in range(int(rng.integers(1, 4))):
        n = len(text)
        if n == 0:
            break
        at, span = int(rng.integers(0, n)), int(rng.integers(1, 41))
        kind = rng.integers(0, 6)
        if kind == 0:
            text = text[:at] + text[at + span:]
        elif kind == 1:
            text = text[:at] + text[at:at + span] + text[at:]
        elif kind == 2:
            text = text[:at] + TOKENS[rng.integers(len(TOKENS))] + text[at + span:]
        elif kind == 3:
            text = text[:at] + TOKENS[rng.integers(len(TOKENS))] + text[at:]
        elif kind == 4:
            text = text[:at]
        else:
            digits = [i for i, ch in enumerate(text) if ch.isdigit()]
            if digits:
                i = digits[rng.integers(len(digits))]
                text = text[:i] + str(rng.integers(0, 10)) + text[i + 1:]
    return text


def byte_edits(rng: np.random.Generator, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        if not data:
            break
        at = int(rng.integers(0, len(data)))
        kind = rng.integers(0, 5)
        if kind == 0:
            data[at] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:
            del data[at:at + int(rng.integers(1, 65))]
        elif kind == 2:
            data[at:at] = rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
        elif kind == 3:
            data[at] = int(rng.integers(0, 256))
        else:
            del data[at:]
    return bytes(data)


ODD_INTS = [-(1 << 63), -(1 << 31), -2, -1, 0, 1, 2, 3, 7, 64, 1 << 20, (1 << 31) - 1, 1 << 40, (1 << 63) - 1]
OP_TYPES = ["Add", "MatMul", "Gemm", "Relu", "Reshape", "Transpose", "Concat", "Gather", "Softmax", "Conv", "MaxPool",
            "Slice", "Squeeze", "Unsqueeze", "ReduceSum", "Cast", "Where", "Expand", "TopK", "Loop", "If", "Scan",
            "Identity", "Shape", "ConstantOfShape", "Range", "Pad", "Resize", "NoSuchOp", ""]


def onnx_edits(rng: np.random.Generator, data: bytes) -> bytes:
    """Structure-aware edits of a ModelProto: a node's type, inputs, attributes; dims and element
    types of inputs and initializers; initializer bytes; node order; the opset."""
    import onnx
    model = onnx.ModelProto.FromString(data)
    g = model.graph
    names = [n for node in g.node for n in (*node.input, *node.output)] + [i.name for i in g.input] + ["", "nope"]
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(0, 11))
        node = g.node[int(rng.integers(len(g.node)))] if len(g.node) else None
        if kind == 0 and node is not None:
            node.op_type = OP_TYPES[rng.integers(len(OP_TYPES))]
        elif kind == 1 and node is not None and len(node.input):
            node.input[int(rng.integers(len(node.input)))] = names[rng.integers(len(names))]
        elif kind == 2 and node is not None and len(node.attribute):
            a = node.attribute[int(rng.integers(len(node.attribute)))]
            choice = int(rng.integers(0, 4))
            if choice == 0:
                node.attribute.remove(a)
            elif choice == 1 and len(a.ints):
                a.ints[int(rng.integers(len(a.ints)))] = ODD_INTS[rng.integers(len(ODD_INTS))]
            elif choice == 2:
                a.i = ODD_INTS[rng.integers(len(ODD_INTS))]
            else:
                a.type = int(rng.integers(0, 15))
        elif kind == 3 and node is not None:
            node.attribute.add(name=["axis", "perm", "axes", "keepdims", "to", "pads", "strides"][rng.integers(7)],
                               type=onnx.AttributeProto.INT, i=ODD_INTS[rng.integers(len(ODD_INTS))])
        elif kind == 4 and len(g.initializer):
            t = g.initializer[int(rng.integers(len(g.initializer)))]
            if len(t.dims) and rng.integers(2):
                t.dims[int(rng.integers(len(t.dims)))] = ODD_INTS[rng.integers(len(ODD_INTS))]
            else:
                t.data_type = int(rng.integers(0, 26))
        elif kind == 5 and len(g.initializer):
            t = g.initializer[int(rng.integers(len(g.initializer)))]
            t.raw_data = t.raw_data[:int(rng.integers(0, len(t.raw_data) + 1))]
        elif kind == 6 and len(g.input):
            v = g.input[int(rng.integers(len(g.input)))]
            dims = v.type.tensor_type.shape.dim
            if len(dims) and rng.integers(2):
                d = dims[int(rng.integers(len(dims)))]
                if rng.integers(2):
                    d.dim_value = ODD_INTS[rng.integers(len(ODD_INTS))]
                else:
                    d.dim_param = ["n", "m", "", "a b"][rng.integers(4)]
            elif len(dims) and rng.integers(2):
                del dims[int(rng.integers(len(dims)))]
            else:
                v.type.tensor_type.elem_type = int(rng.integers(0, 26))
        elif kind == 7 and len(g.node):
            del g.node[int(rng.integers(len(g.node)))]
        elif kind == 8 and len(g.node) > 1:
            i, j = (int(x) for x in rng.integers(len(g.node), size=2))
            a, b = onnx.NodeProto(), onnx.NodeProto()
            a.CopyFrom(g.node[i])
            b.CopyFrom(g.node[j])
            g.node[i].CopyFrom(b)
            g.node[j].CopyFrom(a)
        elif kind == 9 and len(model.opset_import):
            model.opset_import[0].version = int(rng.integers(0, 30))
        elif kind == 10 and len(g.output):
            g.output[int(rng.integers(len(g.output)))].name = names[rng.integers(len(names))]
    return model.SerializeToString()


def _json_paths(value: Any, path: tuple = ()) -> list[tuple]:
    """Every path into a JSON value (dict keys and list indices)."""
    paths = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            paths += _json_paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            paths += _json_paths(v, path + (i,))
    return paths


ODD_VALUES: list[Any] = [None, True, False, 0, -1, 1, 2, 1 << 62, -(1 << 62), 1 << 70, 0.5, -0.0, 1e308, "", "x", "0", "-1",
                         [], [0], [-1], ["x"], {}, {"name": 1}, "0" * 64, "blob", [[1]]]


def fgx_structure_edits(rng: np.random.Generator, data: bytes) -> bytes:
    """An .fgx whose header is well-formed and whose metadata checksum matches (usually), but
    whose contents lie: blob offsets, lengths and checksums, header fields, JSON values of the
    wrong type, missing or extra keys."""
    from compiler import executable
    header = executable._HEADER
    magic, version, flags, meta_length, _ = header.unpack_from(data)
    meta = json.loads(data[header.size:header.size + meta_length])
    blobs_area = data[header.size + meta_length:]
    resign, length_changed, deep = True, False, 0
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(0, 8))
        table = meta.get("blobs") if isinstance(meta, dict) else None
        if kind <= 2 and isinstance(table, list) and table and isinstance(table[0], dict):
            b = table[int(rng.integers(len(table)))]
            if not isinstance(b, dict):
                continue
            key = ["offset", "length", "sha256", "name"][rng.integers(4)] if kind < 2 else "offset"
            if key in ("offset", "length") and isinstance(b.get(key), int) and rng.integers(2):
                b[key] += int(rng.choice([-64, -1, 1, 8, len(blobs_area), -len(blobs_area)]))
            elif key == "sha256" and rng.integers(2):
                b[key] = hashlib.sha256(bytes(rng.integers(0, 256, 8, dtype=np.uint8))).hexdigest()
            elif key == "name" and len(table) > 1 and rng.integers(2):
                other = table[int(rng.integers(len(table)))]
                b[key] = other.get("name") if isinstance(other, dict) else other  # a duplicate name
            else:
                b[key] = copy.deepcopy(ODD_VALUES[rng.integers(len(ODD_VALUES))])
        elif kind == 3:  # any JSON value replaced by one of another type
            paths = _json_paths(meta)
            path = paths[int(rng.integers(len(paths)))]
            if not path:
                meta = copy.deepcopy(ODD_VALUES[rng.integers(len(ODD_VALUES))])
                continue
            parent = meta
            for p in path[:-1]:
                parent = parent[p]
            parent[path[-1]] = copy.deepcopy(ODD_VALUES[rng.integers(len(ODD_VALUES))])
        elif kind == 4:  # a key dropped or an unknown key added
            paths = [p for p in _json_paths(meta) if p and isinstance(p[-1], str)]
            if paths and rng.integers(2):
                path = paths[int(rng.integers(len(paths)))]
                parent = meta
                for p in path[:-1]:
                    parent = parent[p]
                del parent[path[-1]]
            elif isinstance(meta, dict):
                meta["unknown_" + str(rng.integers(10))] = copy.deepcopy(ODD_VALUES[rng.integers(len(ODD_VALUES))])
        elif kind == 5:  # header fields
            which = int(rng.integers(0, 4))
            if which == 0:
                version = [0, 2, 0xFFFFFFFF][rng.integers(3)]
            elif which == 1:
                flags = [1, 0x80000000][rng.integers(2)]
            elif which == 2:
                meta_length, length_changed = [0, 1, (1 << 64) - 1, 1 << 40][rng.integers(4)], True
            else:
                resign = False
        elif kind == 6:  # the blob area: cut, padded, or one blob's bytes changed under a valid table
            if rng.integers(2):
                blobs_area = blobs_area[:int(rng.integers(0, len(blobs_area) + 1))]
            else:
                blobs_area = blobs_area + bytes(int(rng.integers(1, 64)))
        else:  # deep nesting (the JSON parser's recursion) or a huge number
            deep = [10, 100_000][rng.integers(2)] if rng.integers(2) else 0
            if not deep and isinstance(meta, dict):
                meta["blobs"] = 10 ** 400
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    if deep:
        meta_bytes = b'{"functions":' + b"[" * deep + b"]" * deep + b"," + meta_bytes[1:] if meta_bytes.startswith(b"{") else meta_bytes
    length = meta_length if length_changed else len(meta_bytes)
    sha = hashlib.sha256(meta_bytes).digest() if resign else bytes(32)
    return header.pack(magic, version, flags, length, sha) + meta_bytes + blobs_area


def cli_spec(rng: np.random.Generator) -> str:
    from tests.reliability.mutations import DTYPES
    kind = int(rng.integers(0, 3))
    if kind == 0:
        alphabet = "0123456789x=[] ,.-+efinatu@/?\n\x00"
        return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), int(rng.integers(0, 40))))
    if kind == 1:
        dims = [["0", "1", "2", "3", "-1", "?", "a", "99999999999", "4294967297000"][i] for i in rng.integers(0, 9, int(rng.integers(0, 5)))]
        values = ["", "=1", "=[1 2][3 4]", "=nan", "=0x7f", "=[1 2", "=1,2", "=[[]]", "=1e999", "=-", "=true", "=@x.npy",
                  "=" + " ".join(["1"] * int(rng.integers(0, 30)))][rng.integers(13)]
        return f"{'x'.join(dims)}{'x' if dims else ''}{DTYPES[rng.integers(len(DTYPES))]}{values}"
    return "@" + ["", "/nonexistent.npy", "/dev/null", "/etc/passwd", "/tmp", "/proc/self/status"][rng.integers(6)]


# --------------------------------------------------------------------------------------------
# Seeds and per-format checks (run in the child)


def onnx_seeds() -> dict[str, bytes]:
    """Three small graphs (dynamic batch; conv and pooling; indexing and shape ops) and a torch export."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(5)

    def model(nodes, inputs, outputs, inits, opset=17):
        g = helper.make_graph(nodes, "g", inputs, outputs, inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()

    f32 = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)  # noqa: E731
    arr = lambda name, a: numpy_helper.from_array(a, name)  # noqa: E731
    mlp = model([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["a"]),
                 helper.make_node("Relu", ["a"], ["r"]), helper.make_node("Softmax", ["r"], ["y"], axis=-1)],
                [f32("x", ["n", 8])], [f32("y", ["n", 4])],
                [arr("w", rng.standard_normal((8, 4)).astype(np.float32)), arr("b", rng.standard_normal(4).astype(np.float32))])
    conv = model([helper.make_node("Conv", ["x", "k"], ["c"], pads=[1, 1, 1, 1], strides=[1, 1]),
                  helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                  helper.make_node("Transpose", ["p"], ["y"], perm=[0, 2, 3, 1])],
                 [f32("x", [1, 2, 6, 6])], [f32("y", [1, 3, 3, 3])],
                 [arr("k", rng.standard_normal((3, 2, 3, 3)).astype(np.float32))])
    index = model([helper.make_node("Gather", ["x", "i"], ["g"], axis=0),
                   helper.make_node("Reshape", ["g", "s"], ["r"]),
                   helper.make_node("Concat", ["r", "r"], ["c"], axis=1),
                   helper.make_node("ReduceSum", ["c", "ax"], ["y"], keepdims=0)],
                  [f32("x", [5, 4])], [f32("y", [2])],
                  [arr("i", np.array([3, 1], np.int64)), arr("s", np.array([2, 4], np.int64)), arr("ax", np.array([1], np.int64))])
    return {"mlp": mlp, "conv": conv, "index": index,
            "resnet_tiny": (REPO / "tests" / "onnx" / "models" / "resnet_tiny.onnx").read_bytes()}


def stablehlo_seeds() -> dict[str, str]:
    from tests.reliability.test_malformed import _seeds
    return _seeds()


def zeros_for(signature) -> list[np.ndarray] | None:
    args = []
    for shape, dtype in signature:
        dims = [2 if d is None else d for d in shape]
        if any(d < 0 for d in dims) or int(np.prod(dims, dtype=np.float64)) > MAX_ELEMENTS:
            return None
        args.append(np.zeros(dims, dtype))
    return args


@dataclass
class Context:
    """What a child keeps between inputs: the seeds, a device, the reference .fgx and its results."""

    device: Any = None
    seeds: dict[str, Any] = field(default_factory=dict)
    fgx: bytes = b""
    fgx_reference: bytes = b""
    fgx_expected: list[np.ndarray] = field(default_factory=list)
    fgx_input: np.ndarray | None = None
    fgx_version: str = ""
    fgx_target: Any = None
    accepted: int = 0


def frontend_then_maybe_run(source: str | bytes, ctx: Context, compile_every: int) -> str:
    """Parse and specialize every public function; every `compile_every`-th input that passes
    is also compiled (fg.load) and called."""
    import fibergrid as fg
    from compiler import pipeline
    try:
        module = pipeline.parse(source)
        for name in pipeline.public_functions(module):
            signature = pipeline.signature(module, name)
            if zeros_for(signature) is None:
                continue
            pipeline.static_module(module, name, tuple(tuple(2 if d is None else d for d in s) for s, _ in signature))
    except fg.Error:
        return "rejected"
    ctx.accepted += 1
    if compile_every <= 0 or ctx.accepted % compile_every:
        return "accepted"
    try:
        loaded = fg.load(source, device=ctx.device)
        for function in loaded.functions.values():
            args = zeros_for(function.signature)
            if args is not None:
                function(*args)
    except fg.Error:
        return "rejected_at_compile"
    return "ran"


def check_input(fmt: str, seed: int, i: int, ctx: Context, compile_every: int) -> str:
    """Input `i` of `fmt`: its outcome, or an AssertionError/other exception for a violation."""
    import fibergrid as fg
    rng = np.random.default_rng([seed, i, FORMATS.index(fmt)])
    if fmt == "stablehlo":
        names = sorted(ctx.seeds)
        return frontend_then_maybe_run(text_edits(rng, ctx.seeds[names[rng.integers(len(names))]]), ctx, compile_every)
    if fmt == "onnx":
        names = sorted(ctx.seeds)
        data = ctx.seeds[names[rng.integers(len(names))]]
        data = onnx_edits(rng, data) if rng.integers(2) else byte_edits(rng, data)
        return frontend_then_maybe_run(data, ctx, compile_every)
    from compiler import executable
    if fmt in ("fgx", "fgx_structure"):
        damaged = byte_edits(rng, ctx.fgx) if fmt == "fgx" else fgx_structure_edits(rng, ctx.fgx)
        try:
            program = executable.from_bytes(damaged, "damaged.fgx")
        except fg.Error:
            return "rejected"
        # The compiler version and the CPU's name are labels (the format version and the CPU
        # features decide what runs).
        program = dataclasses.replace(program, compiler_version=ctx.fgx_version,
                                      target=dataclasses.replace(program.target, cpu=ctx.fgx_target.cpu, triple=ctx.fgx_target.triple))
        if executable.to_bytes(program) != ctx.fgx_reference:
            if fmt == "fgx":
                raise AssertionError("a damaged .fgx decoded to a different program")
            # Re-signed metadata with other values of the right types is a different program,
            # consistent with itself: a crafted file (the trust model: an .fgx is code). Counted,
            # never run.
            return "accepted_changed"
        ctx.accepted += 1
        if compile_every > 0 and ctx.accepted % compile_every == 0:  # the object code reaches the loader and runs
            from fibergrid.module import Module, Progress
            got = Module(program, ctx.device, timeout=60.0, progress=Progress(), origin="damaged.fgx")(ctx.fgx_input)
            np.testing.assert_array_equal(got, ctx.fgx_expected)
            return "ran"
        return "accepted"
    from fibergrid.cli import CliError, parse_input
    try:
        a = parse_input(cli_spec(rng))
    except CliError:
        return "rejected"
    assert isinstance(a, np.ndarray), type(a)
    return "accepted"


def make_context(fmt: str) -> Context:
    import fibergrid as fg
    ctx = Context(device=fg.create_device("local-sync"))
    if fmt == "stablehlo":
        ctx.seeds = stablehlo_seeds()
    elif fmt == "onnx":
        ctx.seeds = onnx_seeds()
    elif fmt in ("fgx", "fgx_structure"):
        from compiler import executable
        text = stablehlo_seeds()["mlp"]
        program = executable.build(text)
        ctx.fgx = ctx.fgx_reference = executable.to_bytes(program)
        ctx.fgx_version, ctx.fgx_target = program.compiler_version, program.target
        ctx.fgx_input = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
        ctx.fgx_expected = fg.load(text, device=ctx.device)(ctx.fgx_input)
    return ctx


def child(fmt: str, seed: int, start: int, count: int, compile_every: int) -> None:
    """Runs inputs [start, start + count): 'at I' before each, one 'VIOLATION {json}' per
    violation, 'DONE {counts}' at the end. The parent counts a death as a crash at the last 'at'."""
    import faulthandler
    import resource
    import tempfile
    faulthandler.enable()
    # A mutation may ask for a huge array the machine could give: on a shared machine, a child
    # gets MEMORY_LIMIT of data (an allocation beyond it is a MemoryError, which must become a
    # fibergrid error like any other). RLIMIT_DATA, not RLIMIT_AS: address space that is only
    # reserved (CUDA's, LLVM's) does not count.
    resource.setrlimit(resource.RLIMIT_DATA, (MEMORY_LIMIT, MEMORY_LIMIT))
    with tempfile.TemporaryDirectory(prefix="fibergrid-fuzz-") as cache:
        os.environ["FIBERGRID_CACHE_DIR"] = cache  # mutated models must not fill the user's compile cache
        ctx = make_context(fmt)
        counts: dict[str, int] = {}
        out = sys.stdout
        for i in range(start, start + count):
            out.write(f"at {i}\n")
            out.flush()
            try:
                outcome = check_input(fmt, seed, i, ctx, compile_every)
            except Exception as e:  # noqa: BLE001 - every non-fibergrid exception is a finding
                outcome = "violation"
                out.write("VIOLATION " + json.dumps({"format": fmt, "seed": seed, "input": i,
                                                      "error": f"{type(e).__name__}: {str(e)[:300]}"}) + "\n")
            counts[outcome] = counts.get(outcome, 0) + 1
        out.write("DONE " + json.dumps(counts) + "\n")
        out.flush()
        ctx.device.close()


# --------------------------------------------------------------------------------------------
# The parent: chunks in child processes, crashes and hangs counted


@dataclass
class Tally:
    format: str
    inputs: int = 0
    crashes: int = 0
    hangs: int = 0
    violations: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    findings: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "crashes": self.crashes, "hangs": self.hangs, "violations": self.violations,
                "outcomes": dict(sorted(self.outcomes.items())), "findings": self.findings[:20]}


def _spawn(fmt: str, seed: int, start: int, count: int, compile_every: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), PYTHONUNBUFFERED="1",
               OPENBLAS_NUM_THREADS="1", JAX_PLATFORMS="cpu")  # one core per child; no GPU plugin start-up
    return subprocess.Popen([sys.executable, "-m", "tests.reliability.fuzz", "--child", fmt, str(seed), str(start), str(count),
                             str(compile_every)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(fmt: str, count: int, *, seed: int = 0, jobs: int = 1, chunk: int | None = None, compile_every: int = 20,
        log: Callable[[str], None] = lambda s: None) -> Tally:
    """`count` inputs of `fmt` in chunks of `chunk`, `jobs` children at a time. A child that dies
    is a crash at its current input; one silent for HANG_S is killed and counted as a hang; the
    rest of its chunk runs in a new child."""
    tally = Tally(fmt)
    chunk = chunk or max(200, -(-count // (4 * jobs)))
    pending = [(s, min(chunk, count - s)) for s in range(0, count, chunk)]
    running: dict[int, tuple[subprocess.Popen, list]] = {}  # fd -> (proc, [start, end, current, last_seen, buffer])
    while pending or running:
        while pending and len(running) < jobs:
            start, n = pending.pop(0)
            p = _spawn(fmt, seed, start, n, compile_every)
            os.set_blocking(p.stdout.fileno(), False)
            running[p.stdout.fileno()] = (p, [start, start + n, start - 1, time.monotonic(), ""])
        ready, _, _ = select.select(list(running), [], [], 1.0)
        for fd in list(running):
            p, st = running[fd]
            if fd in ready:
                data = p.stdout.read() or ""
                st[4] += data
                st[3] = time.monotonic()
                *lines, st[4] = st[4].split("\n")
                for line in lines:
                    if line.startswith("at "):
                        st[2] = int(line[3:])
                    elif line.startswith("VIOLATION "):
                        tally.violations += 1
                        tally.findings.append(json.loads(line[10:]))
                        log(line)
                    elif line.startswith("DONE "):
                        for k, v in json.loads(line[5:]).items():
                            tally.outcomes[k] = tally.outcomes.get(k, 0) + v
                        tally.inputs += st[1] - st[0]
                        st[0] = st[1]
                if data:
                    continue
            silent = time.monotonic() - st[3]
            started = st[2] >= st[0]  # a child's start-up (imports, the seed's compile) may take minutes on a busy machine
            if p.poll() is None and silent < (HANG_S if started else STARTUP_S):
                continue
            if p.poll() is None:
                p.kill()
                tally.hangs += 1
                what = "hang"
            elif st[0] < st[1]:  # died before DONE
                tally.crashes += 1
                what = f"crash (exit {p.returncode})"
            else:
                what = None
            p.wait()
            stderr = p.stderr.read()
            p.stdout.close()
            p.stderr.close()
            del running[fd]
            if what is not None:
                at = max(st[2], st[0])
                finding = {"format": fmt, "seed": seed, "input": at, "what": what, "stderr": stderr[-2000:]}
                tally.findings.append(finding)
                log(json.dumps(finding))
                # The inputs of the chunk before `at` ran (their outcomes are lost with the child);
                # count them and the failing one, and go on after it.
                tally.inputs += at + 1 - st[0]
                if at + 1 < st[1]:
                    pending.insert(0, (at + 1, st[1] - at - 1))
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=5, metavar=("FORMAT", "SEED", "START", "COUNT", "COMPILE_EVERY"))
    parser.add_argument("--replay", nargs=3, metavar=("FORMAT", "SEED", "INPUT"), help="run one input here, raising what it raises")
    args = parser.parse_args()
    if args.child:
        fmt, *nums = args.child
        child(fmt, *(int(x) for x in nums))
    elif args.replay:
        fmt, seed, i = args.replay
        print(check_input(fmt, int(seed), int(i), make_context(fmt), 1))


if __name__ == "__main__":
    main()
