"""Optional values inside a graph: Optional, OptionalHasElement, OptionalGetElement.

Whether an optional holds an element is known at conversion (it is built by an `Optional` node or
is a tensor), so an optional holding a tensor is that tensor, an empty one is `EMPTY`, and
OptionalHasElement folds to a constant. A graph input of optional tensor type is passed as its
tensor (model.py), so it is present; an empty one (None) cannot be passed, and optional sequences
are refused where the graph's signature is read.
"""

from __future__ import annotations

import numpy as np

from compiler.frontends.onnx.builder import Tensor
from compiler.frontends.onnx.graph import Ctx


class _Empty:
    """An optional without an element."""

    def __repr__(self) -> str:
        return "EMPTY"


EMPTY = _Empty()


def _optional(c: Ctx) -> list[object]:
    x = c.optional(0)
    return [EMPTY if x is None else x]


def _has_element(c: Ctx) -> list[Tensor]:
    x = c.optional(0)
    return [np.asarray(x is not None and x is not EMPTY)]


def _get_element(c: Ctx) -> list[Tensor]:
    x = c.optional(0)
    if x is None or x is EMPTY:
        raise c.error("the optional has no element")
    return [x]


HANDLERS = {"Optional": _optional, "OptionalHasElement": _has_element, "OptionalGetElement": _get_element}
