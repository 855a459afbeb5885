"""Max abs error (and the outputs' scale) of each compiled test model against TensorFlow, as JSON lines:

    python -m tests.savedmodel.max_errors

(needs TensorFlow). A model that does not compile prints its error instead."""

from __future__ import annotations

import json
import tempfile

import numpy as np

import fibergrid as fg
from compiler import executable
from compiler.frontends.savedmodel import compile_saved_model
from common.errors import Error
from tests.savedmodel import models


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, shapes in models.FEEDFORWARD + models.LOOPS:
            path = models.save(getattr(models, name), f"{tmp}/{name}")
            try:
                executable.save(compile_saved_model(path, input_shapes=[tuple(shapes)]), f"{tmp}/{name}.fgx")
            except Error as e:
                print(json.dumps({"model": name, "error": str(e)}), flush=True)
                continue
            module = fg.load(f"{tmp}/{name}.fgx")
            inputs = models.random_inputs(module, shapes)
            expected, got = models.tf_outputs(path, inputs), module.named(**inputs)
            abs_err = max(float(np.max(np.abs(got[k] - v))) for k, v in expected.items())
            scale = max(float(np.max(np.abs(v))) for v in expected.values())
            print(json.dumps({"model": name, "shapes": shapes, "max_abs_error": abs_err, "max_abs_tf_output": scale}), flush=True)


if __name__ == "__main__":
    main()
