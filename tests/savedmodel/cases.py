"""The test cases, shared by the tests and models.py (which makes their references with
TensorFlow in a child process); importing this needs no TensorFlow."""

import os

# (model in models.py, input shapes compiled: one per input, inputs sorted by name)
FEEDFORWARD = [("mlp", [(4, 12)]), ("cnn", [(2, 16, 16, 3)]), ("attention", [(2, 8)]), ("subclassed", [(3, 10)])]
LOOPS = [("lstm", [(2, 6, 4)]), ("gru", [(2, 5, 3)]), ("tensor_array", [(5, 4)])]
TWO_BATCHES = [[(3,), (2, 3)], [(3,), (5, 3)]]  # two_by_name's signature 'other' at two batch sizes
# Batch sizes nothing was compiled for, run by the code compiled once for every batch size
UNSEEN_BATCHES = [("mlp", [(7, 12)]), ("mlp", [(33, 12)]), ("subclassed", [(6, 10)]), ("attention", [(5, 8)]),
                  ("cnn", [(3, 16, 16, 3)])]
# (model, signature, input shapes): TensorFlow's outputs on random inputs, the references
REFERENCES = ([(name, "serving_default", shapes) for name, shapes in FEEDFORWARD + LOOPS + UNSEEN_BATCHES
               + [("mlp", [(1, 12)]), ("keras_export", [(3, 12)])]]
              + [("two_by_name", "other", shapes) for shapes in TWO_BATCHES + [[(3,), (4, 3)]]])


def reference_file(directory: str, name: str, signature: str, shapes: list[tuple[int, ...]]) -> str:
    """Where models.py puts a REFERENCES case's inputs and TensorFlow's outputs."""
    return os.path.join(directory, f"{name}-{signature}-{'-'.join('x'.join(map(str, s)) for s in shapes)}.npz")
