"""TF2 SavedModels -> compiled Programs, through TensorFlow's bridge to StableHLO.

`compile_saved_model(dir, signature, input_shapes)` loads the SavedModel with TensorFlow (an
optional extra: `pip install 'fibergrid[tf]'`, needed at compile time only), exports the
signature to StableHLO text with `experimental_get_compiler_ir(...)(stage="stablehlo")`, folds
the resource variables into constants, and compiles the text with the StableHLO frontend. The
signature's input names and output keys become @main's input and output names (both sorted by
name, TensorFlow's flattening order), so `mod(x=...)`, `mod.named(...)`, `mod.inputs` work and
the .fgx keeps them.

Layout: export.py (TensorFlow, in a child process: loading, the signature, the bridge, variable
values, TF errors), process.py (runs it; TensorFlow never enters the caller's process), text.py
(edits of the exported text: variables to constants, legacy ops, TF op names from `loc`s),
program.py (specialisations per input shape, the function for every size of the unknown dims, the
Program, errors naming TF ops).

Not supported, each a CompileError naming the signature and the TF op: ops without an XLA kernel
(string ops, py_function...), stateful random ops, data-dependent output shapes, string inputs,
and resources other than variables (lookup tables). The bridge exports static shapes only: unknown
leading dims become dynamic dims through two exports at large sizes (program.py), other unknown dims
are compiled per shape asked for.
"""

from compiler.frontends.savedmodel.process import export, is_saved_model
from compiler.frontends.savedmodel.program import compile_saved_model, program_from

__all__ = ["compile_saved_model", "export", "is_saved_model", "program_from"]
