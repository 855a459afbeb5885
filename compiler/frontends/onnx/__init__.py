"""ONNX -> the compiler's tensor IR (the same IR the StableHLO frontend produces).

`parse_onnx(bytes)` reads and checks a model (onnx's checker; external data inlined by
`model.read_source(path)`) and returns an `OnnxModule`: its @main has the graph's declared
signature (symbolic dims by their `dim_param` names); `instantiate(function, shapes)` converts the
graph at one input-shape signature into a static module for the shared passes and backends. The
pipeline calls it where it would specialise a StableHLO module (`pipeline.static_module`), so the
compile cache, the .fgx and `fg.load`'s per-call specialisation take ONNX unchanged.

Layout: model.py (reading, signature, dim binding), graph.py (the node walk, compile-time folding of
nodes whose inputs are all known -- the shape subgraphs -- and expansion of ops the standard
defines as ONNX functions), builder.py (typed IR emission), rewrite.py (Conv+BatchNormalization
folding), narrow.py (float8/float4/int4/int2 tensors as their storage bytes, exact conversions),
ops/ (the op table by family: elementwise, tensor, tensor_scatter, reduce, nn, quantized, signal,
grid_sample, deform_conv, roi_align, recurrent, resize, control, optional, tfidf; training, ml and
tree_ensemble for ops of other domains).

A graph input whose contents decide a shape (Reshape's shape, Slice's starts, TopK's k, Compress's
condition...) is known at conversion: the graph compiles once per distinct contents.

What is not supported, each a CompileError naming the node or the input: sequences and maps as graph
inputs or outputs (an optional tensor passes as its tensor); string and float6 element types;
data-dependent output shapes (NonZero, Unique...) unless their inputs are constants; Loop/If whose
trip count or branch shapes depend on data; scatter with runtime indices; random ops; ops without a
converter or a function body (NonMaxSuppression, MaxUnpool, ImageDecoder...).
"""

from compiler.frontends.onnx.model import OnnxModule, parse_onnx
from compiler.frontends.onnx.ops import SUPPORTED_OPS

__all__ = ["OnnxModule", "parse_onnx", "SUPPORTED_OPS"]
