"""Max abs error (and the outputs' scale) of each compiled test model against TensorFlow, as
JSON lines:

    python -m tests.savedmodel.max_errors

(needs TensorFlow). A model that does not compile prints its error instead."""

from __future__ import annotations

import json
import tempfile

import numpy as np

import fibergrid as fg
from common.errors import Error
from compiler import executable
from compiler.frontends.savedmodel import compile_saved_model
from tests.savedmodel import cases, models


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        models.write_all(tmp)
        for name, shapes in cases.FEEDFORWARD + cases.LOOPS:
            try:
                executable.save(compile_saved_model(f"{tmp}/{name}", input_shapes=[tuple(shapes)]), f"{tmp}/{name}.fgx")
            except Error as e:
                print(json.dumps({"model": name, "error": str(e)}), flush=True)
                continue
            with np.load(cases.reference_file(tmp, name, "serving_default", shapes)) as data:
                inputs = {k[3:]: data[k] for k in data.files if k.startswith("in/")}
                expected = {k[4:]: data[k] for k in data.files if k.startswith("out/")}
            got = fg.load(f"{tmp}/{name}.fgx").named(**inputs)
            abs_err = max(float(np.max(np.abs(got[k] - v))) for k, v in expected.items())
            scale = max(float(np.max(np.abs(v))) for v in expected.values())
            print(json.dumps({"model": name, "shapes": shapes, "max_abs_error": abs_err, "max_abs_tf_output": scale}), flush=True)


if __name__ == "__main__":
    main()
