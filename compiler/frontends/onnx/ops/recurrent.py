"""RNN, GRU and LSTM, unrolled over the (static) sequence length.

The input projection of every step is one matmul over the whole sequence ([seq * batch, input] x
[input, gates * hidden]); each step then adds the recurrent matmul and applies the gates as the
ONNX spec writes them (gate order: GRU z, r, h; LSTM i, o, f, c). Directions forward, reverse and
bidirectional; activations Sigmoid, Tanh and Relu; `clip`; GRU's `linear_before_reset`; LSTM
peepholes. `sequence_lens` must be absent or the full length for every batch entry (a graph input
is read at conversion: the graph compiles per distinct value).
"""

from __future__ import annotations

import numpy as np

from compiler.frontends.onnx.builder import Tensor, dtype_of, shape_of
from compiler.frontends.onnx.graph import Ctx, Handler
from compiler.frontends.onnx.ops.nn import matmul

_ACTIVATIONS = {"Sigmoid": "logistic", "Tanh": "tanh"}
_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
_DEFAULTS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}


def _activation(c: Ctx, name: str, x: Tensor) -> Tensor:
    if name in _ACTIVATIONS:
        return c.b.unary(_ACTIVATIONS[name], x)
    if name == "Relu":
        return c.b.binary("maximum", x, c.b.scalar(0, dtype_of(x)))
    raise c.error(f"activation '{name}' is not supported (Sigmoid, Tanh, Relu are)")


def _part(c: Ctx, x: Tensor, k: int, size: int) -> Tensor:
    """The k-th block of `size` along the last dim."""
    xs = shape_of(x)
    return c.b.slice(x, [0] * (len(xs) - 1) + [k * size], [*xs[:-1], (k + 1) * size])


def _recurrent(kind: str) -> Handler:
    def handler(c: Ctx) -> list[Tensor]:
        x, w, r = c.input(0), c.input(1), c.input(2)
        bias, lens, h0 = c.optional(3), c.known(4, "sequence_lens"), c.optional(5)
        c0 = c.optional(6) if kind == "LSTM" else None
        peep = c.optional(7) if kind == "LSTM" else None
        dtype = dtype_of(x)
        hidden = c.attr("hidden_size")
        gates = _GATES[kind]
        layout = c.attr("layout", 0)
        if layout:
            x = c.b.transpose(x, [1, 0, 2])
        seq, batch, _ = shape_of(x)
        if lens is not None and np.any(lens != seq):  # (known: a graph input compiles per distinct value)
            raise c.error("sequence_lens shorter than the sequence is not supported (per-entry lengths would need masking)")
        direction = c.attr("direction", "forward")
        dirs = 2 if direction == "bidirectional" else 1
        names = list(c.attr("activations", _DEFAULTS[kind] * dirs))
        per_dir = len(_DEFAULTS[kind])
        clip = c.attr("clip")
        outputs, last_h, last_c = [], [], []
        for d in range(dirs):
            reverse = direction == "reverse" or d == 1
            act = names[d * per_dir:(d + 1) * per_dir]
            wd = c.b.reshape(c.b.slice(w, [d, 0, 0], [d + 1, *shape_of(w)[1:]]), shape_of(w)[1:])
            rd = c.b.reshape(c.b.slice(r, [d, 0, 0], [d + 1, *shape_of(r)[1:]]), shape_of(r)[1:])
            wt = wd.T.copy() if isinstance(wd, np.ndarray) else c.b.transpose(wd, [1, 0])
            rt = rd.T.copy() if isinstance(rd, np.ndarray) else c.b.transpose(rd, [1, 0])
            xw = matmul(c, x, wt)  # [seq, batch, gates * hidden]
            wb = rb = None
            if bias is not None:
                bd = c.b.reshape(c.b.slice(bias, [d, 0], [d + 1, 2 * gates * hidden]), [2 * gates * hidden])
                wb, rb = _part(c, bd, 0, gates * hidden), _part(c, bd, 1, gates * hidden)
                if kind != "GRU":  # both biases simply add
                    xw = c.b.binary("add", xw, c.b.binary("add", wb, rb))
                else:
                    xw = c.b.binary("add", xw, wb)
            h = c.b.full(0, [batch, hidden], dtype) if h0 is None else c.b.reshape(
                c.b.slice(h0, [d, 0, 0], [d + 1, batch, hidden]), [batch, hidden])
            cell = None
            if kind == "LSTM":
                cell = c.b.full(0, [batch, hidden], dtype) if c0 is None else c.b.reshape(
                    c.b.slice(c0, [d, 0, 0], [d + 1, batch, hidden]), [batch, hidden])
            ys: list[Tensor] = [None] * seq  # type: ignore[list-item]
            for step in range(seq):
                t = seq - 1 - step if reverse else step
                xt = c.b.reshape(c.b.slice(xw, [t, 0, 0], [t + 1, batch, gates * hidden]), [batch, gates * hidden])
                if kind == "RNN":
                    pre = c.b.binary("add", xt, matmul(c, h, rt))
                    h = _activation(c, act[0], _clip(c, pre, clip))
                elif kind == "GRU":
                    h = _gru_step(c, xt, h, rt, rb, hidden, act, clip)
                else:
                    h, cell = _lstm_step(c, xt, h, cell, rt, peep, d, hidden, act, clip)
                ys[t] = h
            outputs.append(c.b.concat([c.b.reshape(y, [1, 1, batch, hidden]) for y in ys], 0))
            last_h.append(c.b.reshape(h, [1, batch, hidden]))
            if cell is not None:
                last_c.append(c.b.reshape(cell, [1, batch, hidden]))
        y = c.b.concat(outputs, 1)  # [seq, dirs, batch, hidden]
        yh = c.b.concat(last_h, 0)
        yc = c.b.concat(last_c, 0) if last_c else None
        if layout:
            y = c.b.transpose(y, [2, 0, 1, 3])
            yh = c.b.transpose(yh, [1, 0, 2])
            yc = c.b.transpose(yc, [1, 0, 2]) if yc is not None else None
        return [y, yh] + ([yc] if kind == "LSTM" else [])
    return handler


def _clip(c: Ctx, x: Tensor, clip: float | None) -> Tensor:
    if clip is None:
        return x
    bound = c.b.scalar(clip, dtype_of(x))
    return c.b.binary("minimum", c.b.binary("maximum", x, c.b.unary("negate", bound)), bound)


def _gru_step(c: Ctx, xt: Tensor, h: Tensor, rt: Tensor, rb: Tensor | None, hidden: int, act: list[str],
              clip: float | None) -> Tensor:
    hr = matmul(c, h, _part(c, rt, 0, 2 * hidden) if not isinstance(rt, np.ndarray) else rt[:, :2 * hidden].copy())
    rbzr = None if rb is None else _part(c, rb, 0, 2 * hidden)
    zr = c.b.binary("add", _part(c, xt, 0, 2 * hidden), hr if rbzr is None else c.b.binary("add", hr, rbzr))
    zr = _activation(c, act[0], _clip(c, zr, clip))
    z, r = _part(c, zr, 0, hidden), _part(c, zr, 1, hidden)
    rh = rt[:, 2 * hidden:].copy() if isinstance(rt, np.ndarray) else _part(c, rt, 2, hidden)
    rbh = None if rb is None else _part(c, rb, 2, hidden)
    if c.attr("linear_before_reset", 0):
        inner = matmul(c, h, rh)
        if rbh is not None:
            inner = c.b.binary("add", inner, rbh)
        inner = c.b.binary("multiply", r, inner)
    else:
        inner = matmul(c, c.b.binary("multiply", r, h), rh)
        if rbh is not None:
            inner = c.b.binary("add", inner, rbh)
    cand = _activation(c, act[1], _clip(c, c.b.binary("add", _part(c, xt, 2, hidden), inner), clip))
    one = c.b.scalar(1, dtype_of(h))
    return c.b.binary("add", c.b.binary("multiply", c.b.binary("subtract", one, z), cand), c.b.binary("multiply", z, h))


def _lstm_step(c: Ctx, xt: Tensor, h: Tensor, cell: Tensor, rt: Tensor, peep: Tensor | None, d: int, hidden: int,
               act: list[str], clip: float | None) -> tuple[Tensor, Tensor]:
    pre = c.b.binary("add", xt, matmul(c, h, rt))
    i, o, f, g = (_part(c, pre, k, hidden) for k in range(4))
    if peep is not None:
        pd = c.b.reshape(c.b.slice(peep, [d, 0], [d + 1, 3 * hidden]), [3 * hidden])
        pi, po, pf = (_part(c, pd, k, hidden) for k in range(3))
        i = c.b.binary("add", i, c.b.binary("multiply", pi, cell))
        f = c.b.binary("add", f, c.b.binary("multiply", pf, cell))
    i = _activation(c, act[0], _clip(c, i, clip))
    f = _activation(c, act[0], _clip(c, f, clip))
    g = _activation(c, act[1], _clip(c, g, clip))
    cell = c.b.binary("add", c.b.binary("multiply", f, cell), c.b.binary("multiply", i, g))
    if peep is not None:
        o = c.b.binary("add", o, c.b.binary("multiply", po, cell))
    o = _activation(c, act[0], _clip(c, o, clip))
    return c.b.binary("multiply", o, _activation(c, act[2], cell)), cell


HANDLERS: dict[str, Handler] = {kind: _recurrent(kind) for kind in _GATES}
