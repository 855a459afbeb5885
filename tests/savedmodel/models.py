"""TF2-style models the SavedModel tests build, save with `tf.saved_model.save` and compile:
Keras functional and subclassed models (an MLP, a small CNN, an attention block over token ids,
an LSTM and a GRU over a short sequence), tf.Modules with named inputs and outputs, a
`tf.TensorArray` loop, and models that cannot be exported (a string op, a stateful random op, a
data-dependent output shape, an input of unknown rank).

Each builder returns (the object to save, the `signatures` argument for tf.saved_model.save).
Biases are random, not zero, so that folding the variables into constants is checked for real.

`python -m tests.savedmodel.models DIR` saves them all with TensorFlow's outputs for the test
inputs: the tests run it in a child process, as fibergrid runs its export, because TensorFlow
and the vulkan driver cannot share a process (TensorFlow's LLVM; a segfault).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from tests.savedmodel import cases

keras = tf.keras
_init = {"bias_initializer": "random_normal"}
VOCABULARY = 50  # token ids of the attention model (its integer inputs are drawn below it)


def mlp() -> tuple[Any, Any]:
    """Keras functional: Dense-ReLU-Dense-softmax, batch unknown (None)."""
    x = keras.Input((12,), name="features")
    h = keras.layers.Dense(32, activation="relu", **_init)(x)
    h = keras.layers.Dense(16, activation="tanh", **_init)(h)
    return keras.Model(x, keras.layers.Dense(5, activation="softmax", **_init)(h)), None


def cnn() -> tuple[Any, Any]:
    """Keras functional: Conv2D, BatchNorm (inference statistics), MaxPool, Conv2D, global
    average pool, Dense."""
    x = keras.Input((16, 16, 3), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", **_init)(x)
    h = keras.layers.BatchNormalization(moving_mean_initializer="random_normal",
                                        moving_variance_initializer="ones", beta_initializer="random_normal")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Conv2D(12, 3, strides=2, activation="relu", **_init)(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(x, keras.layers.Dense(4, **_init)(h)), None


def attention() -> tuple[Any, Any]:
    """Keras functional, saved with `model.export`: token ids (int32) -> Embedding -> self
    attention -> LayerNorm -> Dense(gelu) -> mean over the sequence."""
    ids = keras.Input((8,), dtype="int32", name="ids")
    h = keras.layers.Embedding(VOCABULARY, 16)(ids)
    h = keras.layers.LayerNormalization()(h + keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(h, h))
    h = keras.layers.Dense(16, activation="gelu", **_init)(h)
    return keras.Model(ids, keras.layers.GlobalAveragePooling1D()(h)), "keras-export"


class ResidualMLP(keras.Model):
    """Keras subclassed: two Dense layers and a skip connection in call()."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = keras.layers.Dense(10, activation="gelu", **_init)
        self.outer = keras.layers.Dense(10, **_init)

    def call(self, x):
        return tf.nn.relu(self.outer(self.inner(x)) + x)


def subclassed() -> tuple[Any, Any]:
    model = ResidualMLP()
    model(tf.zeros([1, 10]))  # builds the variables
    function = tf.function(lambda x: {"y": model(x)}, input_signature=[tf.TensorSpec([None, 10], tf.float32, name="x")])
    return model, {"serving_default": function}


def lstm() -> tuple[Any, Any]:
    """Keras functional: an LSTM over 6 steps (its loop is a `stablehlo.while`), then Dense."""
    x = keras.Input((6, 4), name="sequence")
    h = keras.layers.LSTM(8, **_init)(x)
    return keras.Model(x, keras.layers.Dense(3, **_init)(h)), None


def gru() -> tuple[Any, Any]:
    """Keras functional: a GRU returning its whole sequence over 5 steps."""
    x = keras.Input((5, 3), name="sequence")
    return keras.Model(x, keras.layers.GRU(6, return_sequences=True, **_init)(x)), None


class Scan(tf.Module):
    """A recurrence written with `tf.range` and a `tf.TensorArray` (TensorList ops)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(tf.random.normal([4, 4], seed=1) * 0.5)
        self.b = tf.Variable(tf.random.normal([4], seed=2))

    @tf.function(input_signature=[tf.TensorSpec([5, 4], tf.float32, name="xs")])
    def __call__(self, xs):
        states = tf.TensorArray(tf.float32, size=5)
        h = tf.zeros([4])
        for i in tf.range(5):
            h = tf.tanh(tf.linalg.matvec(self.w, xs[i]) + h + self.b)
            states = states.write(i, h)
        return {"states": states.stack(), "last": h}


def tensor_array() -> tuple[Any, Any]:
    module = Scan()
    return module, {"serving_default": module.__call__}


class TwoByName(tf.Module):
    """Two named inputs, two named outputs, declared in non-sorted order."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = tf.Variable([[1.5, -2.0, 0.5]])

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="weights"),
                                  tf.TensorSpec([3], tf.float32, name="bias")])
    def __call__(self, weights, bias):
        return {"sum": weights * self.scale + bias, "mean": tf.reduce_mean(weights, axis=1)}


def two_by_name() -> tuple[Any, Any]:
    module = TwoByName()
    return module, {"serving_default": module.__call__, "other": module.__call__}


def _single(body: Callable[[Any], Any], shape: list[int | None] | None) -> tuple[Any, Any]:
    module = tf.Module()
    module.f = tf.function(lambda x: {"y": body(x)}, input_signature=[tf.TensorSpec(shape, tf.float32, name="x")])
    return module, {"serving_default": module.f}


def string_op() -> tuple[Any, Any]:
    return _single(lambda x: tf.strings.to_number(tf.strings.as_string(x)) * 2.0, [3])


def stateful_random() -> tuple[Any, Any]:
    return _single(lambda x: x + tf.random.uniform([3]), [3])


def data_dependent() -> tuple[Any, Any]:
    return _single(lambda x: tf.unique(x)[0], [3])


def unknown_rank() -> tuple[Any, Any]:
    return _single(lambda x: x * 2.0, None)


def save(builder: Callable[[], tuple[Any, Any]], path: str) -> str:
    """`tf.saved_model.save` of the builder's model; signatures "keras-export": Keras 3's own
    `model.export(path)` (which keeps the Input layers' names)."""
    keras.utils.set_random_seed(0)
    obj, signatures = builder()
    if signatures == "keras-export":
        obj.export(path, verbose=False)
    else:
        tf.saved_model.save(obj, path, signatures=signatures)
    return path


def keras_export() -> tuple[Any, Any]:
    """The MLP, saved with Keras 3's `model.export`."""
    return mlp()[0], "keras-export"


BUILDERS = ["mlp", "keras_export", "cnn", "attention", "subclassed", "lstm", "gru", "tensor_array", "two_by_name",
            "string_op", "stateful_random", "data_dependent", "unknown_rank"]
def write_all(directory: str) -> None:
    """Saves every model under `directory` and each reference case's inputs and TensorFlow's
    outputs next to them (`in/NAME`, `out/KEY` in an .npz)."""
    for name in BUILDERS:
        save(globals()[name], os.path.join(directory, name))
    rng = np.random.default_rng(0)
    for name, signature, shapes in cases.REFERENCES:
        function = tf.saved_model.load(os.path.join(directory, name)).signatures[signature]
        specs = sorted(function.structured_input_signature[1].items())
        inputs = {k: rng.integers(0, VOCABULARY, s).astype(spec.dtype.as_numpy_dtype) if spec.dtype.is_integer
                  else rng.standard_normal(s).astype(spec.dtype.as_numpy_dtype) for (k, spec), s in zip(specs, shapes)}
        outputs = function(**{k: tf.constant(v) for k, v in inputs.items()})
        np.savez(cases.reference_file(directory, name, signature, shapes),
                 **{f"in/{k}": v for k, v in inputs.items()}, **{f"out/{k}": v.numpy() for k, v in outputs.items()})


if __name__ == "__main__":
    write_all(sys.argv[1])
