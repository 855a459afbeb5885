"""The optimizer ops of the ai.onnx.preview.training domain: Adagrad, Adam, Momentum (and its
Nesterov mode), elementwise updates of one or more (X, G, state...) groups sharing the learning
rate R and the step count T, with the formulas of the spec (onnx/reference/ops/
aionnx_preview_training). T > 0 decides bias corrections at run time (a select)."""

from __future__ import annotations

import numpy as np

from compiler.frontends.onnx.builder import Tensor, dtype_of
from compiler.frontends.onnx.graph import Ctx


def _groups(c: Ctx, per_group: int) -> tuple[Tensor, Tensor, list[list[Tensor]]]:
    """R, T (as float32 scalars) and the input groups [X, G, states...] (inputs laid out as all
    X, then all G, then each state)."""
    inputs = [c.input(i) for i in range(len(c.inputs))]
    n, extra = divmod(len(inputs) - 2, per_group)
    if n < 1 or extra:
        raise c.error(f"expected R, T and groups of {per_group} tensors, got {len(inputs)} inputs")
    r, t = (c.b.reshape(c.b.convert(v, np.float32), []) for v in inputs[:2])
    return r, t, [[inputs[2 + k * n + i] for k in range(per_group)] for i in range(n)]


def _regularized(c: Ctx, x: Tensor, g: Tensor) -> Tensor:
    return c.b.binary("add", c.b.binary("multiply", x, _k(c, c.attr("norm_coefficient", 0.0), x)), g)


def _k(c: Ctx, v: float, like: Tensor) -> np.ndarray:
    return c.b.scalar(v, dtype_of(like))


def _scalar(c: Ctx, s: Tensor, like: Tensor) -> Tensor:
    return c.b.convert(s, dtype_of(like))


def _adagrad(c: Ctx) -> list[Tensor]:
    r, t, groups = _groups(c, 3)
    step = c.b.binary("divide", r, c.b.binary("add", c.b.scalar(1, np.float32),
                                               c.b.binary("multiply", t, c.b.scalar(c.attr("decay_factor", 0.0), np.float32))))
    xs, hs = [], []
    for x, g, h in groups:
        gr = _regularized(c, x, g)
        h_new = c.b.binary("add", h, c.b.binary("multiply", gr, gr))
        root = c.b.binary("add", c.b.unary("sqrt", h_new), _k(c, c.attr("epsilon", 0.0), h_new))
        xs.append(c.b.binary("subtract", x, c.b.binary("divide", c.b.binary("multiply", _scalar(c, step, x), gr), root)))
        hs.append(h_new)
    return xs + hs


def _adam(c: Ctx) -> list[Tensor]:
    r, t, groups = _groups(c, 4)
    alpha, beta = c.attr("alpha", 0.9), c.attr("beta", 0.999)
    f32 = np.float32
    power = lambda base: c.b.binary("power", c.b.scalar(base, f32), t)  # noqa: E731
    corrected = c.b.binary("divide", c.b.binary("multiply", r, c.b.unary("sqrt", c.b.binary("subtract", c.b.scalar(1, f32), power(beta)))),
                           c.b.binary("subtract", c.b.scalar(1, f32), power(alpha)))
    step = c.b.select(c.b.compare("GT", t, c.b.scalar(0, f32)), corrected, r)
    xs, vs, hs = [], [], []
    for x, g, v, h in groups:
        gr = _regularized(c, x, g)
        v_new = c.b.binary("add", c.b.binary("multiply", v, _k(c, alpha, v)), c.b.binary("multiply", gr, _k(c, 1 - alpha, v)))
        h_new = c.b.binary("add", c.b.binary("multiply", h, _k(c, beta, h)),
                           c.b.binary("multiply", c.b.binary("multiply", gr, gr), _k(c, 1 - beta, h)))
        root = c.b.binary("add", c.b.unary("sqrt", h_new), _k(c, c.attr("epsilon", 0.0), h_new))
        x_new = c.b.binary("subtract", x, c.b.binary("multiply", _scalar(c, step, x), c.b.binary("divide", v_new, root)))
        xs.append(c.b.binary("multiply", x_new, _k(c, 1 - c.attr("norm_coefficient_post", 0.0), x)))
        vs.append(v_new)
        hs.append(h_new)
    return xs + vs + hs


def _momentum(c: Ctx) -> list[Tensor]:
    r, t, groups = _groups(c, 3)
    alpha, beta = c.attr("alpha"), c.attr("beta")
    nesterov = c.attr("mode", "standard") == "nesterov"
    xs, vs = [], []
    for x, g, v in groups:
        gr = _regularized(c, x, g)
        b = c.b.select(c.b.compare("GT", t, c.b.scalar(0, np.float32)), c.b.scalar(beta, dtype_of(x)), c.b.scalar(1, dtype_of(x)))
        v_new = c.b.binary("add", c.b.binary("multiply", v, _k(c, alpha, v)), c.b.binary("multiply", gr, b))
        direction = c.b.binary("add", gr, c.b.binary("multiply", v_new, _k(c, alpha, v))) if nesterov else v_new
        xs.append(c.b.binary("subtract", x, c.b.binary("multiply", direction, _scalar(c, r, x))))
        vs.append(v_new)
    return xs + vs


HANDLERS = {f"ai.onnx.preview.training.{name}": fn for name, fn in
            {"Adagrad": _adagrad, "Adam": _adam, "Momentum": _momentum}.items()}
