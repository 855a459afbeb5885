"""Errors raised by the model compiler.

Every compiler error is a `fibergrid.Error` (through `common.errors.InvalidArgument`): malformed or
unsupported model text is an invalid argument to the compiler, and the message names the offending
construct and its line:col in the input.
"""

from common.errors import InvalidArgument


class CompileError(InvalidArgument):
    """The model text is malformed, inconsistent or uses something the compiler does not support."""


class NeedsInputValues(CompileError):
    """A conversion needs the contents of model inputs, not only their shapes (an ONNX Reshape's
    shape, Slice's starts or TopK's k given as graph inputs). `inputs` names them: a runtime may
    compile one specialization per value of those inputs (fibergrid/module.py), as it compiles
    one per shape of dynamic dims."""

    def __init__(self, message: str, inputs: tuple[str, ...]) -> None:
        super().__init__(message)
        self.inputs = inputs


class ShapeAssertionError(InvalidArgument):
    """Concrete input shapes violate a `shape_assertion` that jax.export put in the module.

    The message is JAX's own error message with the dimension values filled in.
    """


def shape_assertion_message(message: str, values: list[int]) -> str:
    """JAX's shape_assertion message with its `{0}`, `{1}`... filled from the operand values."""
    try:
        return message.format(*values)
    except (IndexError, KeyError, ValueError):
        return message
