"""The ONNX op table: op type -> handler, merged from one module per family."""

from compiler.frontends.onnx.graph import Handler
from compiler.frontends.onnx.ops import (control, deform_conv, elementwise, grid_sample, ml, nn, optional, quantized,
                                         recurrent, reduce, resize, roi_align, signal, tensor, tensor_scatter, tfidf,
                                         training, tree_ensemble)

HANDLERS: dict[str, Handler] = {**elementwise.HANDLERS, **tensor.HANDLERS, **reduce.HANDLERS,
                                **nn.HANDLERS, **recurrent.HANDLERS, **resize.HANDLERS,
                                **control.HANDLERS, **quantized.HANDLERS, **signal.HANDLERS,
                                **grid_sample.HANDLERS, **optional.HANDLERS, **tfidf.HANDLERS,
                                **training.HANDLERS, **ml.HANDLERS, **tensor_scatter.HANDLERS,
                                **deform_conv.HANDLERS, **roi_align.HANDLERS,
                                **tree_ensemble.HANDLERS}
"""Every ONNX op the frontend converts, by op type (the default domain) or 'domain.Op' (others); other
ops are expanded from their ONNX function bodies where the standard gives one (graph.py), or are a
CompileError."""

SUPPORTED_OPS: frozenset[str] = frozenset(HANDLERS)
