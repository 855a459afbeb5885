"""A matmul's activation (`MatmulBody.activation`, compiler/passes/matmul_activation.py) as an
epilogue of the matmul kernel: the expression over each vector of C the microkernel is about to
store, with the inline vector math (erf, exp, tanh) the elementwise kernels use."""

from __future__ import annotations

import functools

from llvmlite import ir

from compiler import kernel_ir as kir

from . import vector_math
from .expr import ExprEmitter
from .matmul import Epilogue, EpilogueSite


def activation(expr: kir.Expr) -> Epilogue:
    """The epilogue applying `expr` (Arg(0): the value) lane by lane to a vector of C."""

    def apply(site: EpilogueSite, values: ir.Value) -> ir.Value:
        b = site.builder
        if getattr(b, "target_math", None) is None:  # the microkernel's own builder
            b.target_math = functools.partial(vector_math.lower, b)
        return ExprEmitter(b, (), (), [], None, values.type.count, [values]).value(expr)

    return apply
