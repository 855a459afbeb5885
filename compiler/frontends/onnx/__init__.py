"""ONNX -> the compiler's tensor IR (the same IR the StableHLO frontend produces).

`parse_onnx(bytes)` reads and checks a model and returns an `OnnxModule`: its @main has the graph's
declared signature (symbolic dims by their `dim_param` names); `instantiate(function, shapes)`
converts the graph at one input-shape signature into a static module for the shared passes and
backends. See model.py (reading), graph.py (the walk and compile-time folding), builder.py (IR
emission) and ops/ (the op table by family).
"""

from compiler.frontends.onnx.model import OnnxModule, parse_onnx
from compiler.frontends.onnx.ops import SUPPORTED_OPS

__all__ = ["OnnxModule", "parse_onnx", "SUPPORTED_OPS"]
