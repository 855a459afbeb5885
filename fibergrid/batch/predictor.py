"""The Ray Data Predictor: `ds.map_batches(fibergrid.ray.Predictor, ...)`.

    ds.map_batches(Predictor, fn_constructor_kwargs={"model": "model.fgx", "function": "main"},
                   concurrency=2, num_cpus=1, batch_size=256, batch_format="numpy")

Ray Data creates one instance per actor, so the model is loaded once per actor (compiled code
comes from the .fgx, or for StableHLO from the on-disk compile cache the actors on a node share)
and each batch is one `BatchModel` call. The device is sized to the actor: `workers` = the CPUs
Ray assigned the actor (`num_cpus`), pinned to CPUs the actor claims on its node (cpus.py).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from fibergrid.batch.model import BatchModel


def assigned_cpus() -> int | None:
    """CPUs Ray assigned to the current actor or task (None outside Ray)."""
    try:
        import ray
    except ImportError:
        return None
    if not ray.is_initialized():  # never start Ray from here (get_runtime_context would)
        return None
    try:
        cpu = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except AssertionError:  # the driver: Ray answers only inside workers
        return None
    return None if cpu is None else max(1, int(round(cpu)))


def _model_source(model: str | os.PathLike | bytes) -> str | os.PathLike | bytes:
    """A model given as bytes (a model file's contents, shipped to a cluster whose nodes do not
    share the driver's files) as what fg.load takes: an .fgx written locally, StableHLO text, or
    the bytes themselves (a serialized ONNX model)."""
    if not isinstance(model, bytes):
        return model
    from compiler.executable import MAGIC

    if model.startswith(MAGIC[:4]):
        import tempfile

        fd, path = tempfile.mkstemp(suffix=".fgx", prefix="fibergrid-model-")
        with os.fdopen(fd, "wb") as f:
            f.write(model)
        return path
    try:
        text = model.decode("utf-8")
    except UnicodeDecodeError:
        return model
    return text if "{" in text else model


class Predictor:
    """A callable class for Ray Data's `map_batches` (and plain use: `Predictor(...)(batch)`).

    `model`: an .fgx, .mlir or .onnx path, StableHLO text, or a model file's bytes; `function`:
    the public function (default main); `inputs`/`outputs`/`keep`/`max_batch`: as BatchModel;
    `workers`: device workers (default: the CPUs Ray assigned, else one per core); `pin`: in a
    Ray actor, pin them to CPUs claimed on the node (default True; outside Ray nothing is
    pinned: the calling thread is the user's)."""

    def __init__(self, model: str | os.PathLike | bytes, function: str = "main", *, inputs: Sequence[str] | None = None,
                 outputs: Sequence[str] | None = None, keep: Sequence[str] | None = None,
                 max_batch: int | None = None, workers: int | None = None, pin: bool = True) -> None:
        from fibergrid.batch.cpus import actor_device

        ray_cpus = assigned_cpus()
        if ray_cpus is not None:  # a Ray actor: its own process, so pinning its thread is its business
            self.device, self.cpus = actor_device(workers or ray_cpus, pin)
        else:  # plain use: never pin the caller's thread
            import fibergrid as fg

            self.device, self.cpus = fg.create_device("local-task", **({"workers": workers} if workers else {})), None
        source = _model_source(model)
        try:
            self.model = BatchModel(source, function, device=self.device, inputs=inputs, outputs=outputs,
                                    keep=keep, max_batch=max_batch)
        finally:
            if isinstance(model, bytes) and isinstance(source, str) and source.endswith(".fgx"):
                os.unlink(source)  # the loaded program is in memory; the temporary file is not needed

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.model(batch)

    def placement(self) -> dict[str, Any]:
        """Where this actor's device runs: its workers, the CPUs it claimed (None: unpinned) and
        this thread's affinity."""
        affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        return {"workers": getattr(self.device, "workers", None), "cpus": self.cpus, "affinity": affinity}

    def __repr__(self) -> str:
        return f"<fibergrid Predictor {self.model.origin} workers={getattr(self.device, 'workers', None)} cpus={self.cpus}>"


def map_batches_kwargs(model: str, function: str = "main", *, concurrency: int = 1, num_cpus: int = 1,
                       batch_size: int = 256, max_restarts: int = 0, **predictor: Any) -> dict[str, Any]:
    """The keyword arguments of `ds.map_batches(Predictor, **kwargs)` for a common setup: one
    model load per actor, `concurrency` actors of `num_cpus` CPUs each (`max_restarts` > 0 or -1:
    a killed actor is restarted and its batches retried)."""
    import ray.data

    remote: dict[str, Any] = {}
    if max_restarts:
        remote = {"max_restarts": max_restarts, "max_task_retries": -1}  # named: ray_remote_args is deprecated in 2.60
    return {
        "fn_constructor_kwargs": {"model": model, "function": function, **predictor},
        "compute": ray.data.ActorPoolStrategy(size=concurrency),  # `concurrency=` is deprecated since 2.51
        "num_cpus": num_cpus, "batch_size": batch_size, "batch_format": "numpy",
        **remote,
    }
