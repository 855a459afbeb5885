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
folding), ops/ (the op table by family: elementwise, tensor, reduce, nn, recurrent, resize, control).

What is not supported, each a CompileError naming the node: a value that decides a shape arriving
as a graph input at run time (Reshape's shape, Slice's starts, ReduceX's axes, TopK's k...: the
graph is specialised on shapes, not values); sequences, optionals and maps; float8, int4/int2,
float4 and string element types; data-dependent output shapes (NonZero, Unique, Compress...) unless
their inputs are constants; Loop/If whose trip count or branch shapes depend on data; scatter with
runtime indices; ops without a converter or a function body (GridSample, DFT, NonMaxSuppression,
RoiAlign, DeformConv, the QLinear* ops...).
"""

from compiler.frontends.onnx.model import OnnxModule, parse_onnx
from compiler.frontends.onnx.ops import SUPPORTED_OPS

__all__ = ["OnnxModule", "parse_onnx", "SUPPORTED_OPS"]
