"""Scoring data sets with fibergrid models: in this process, on Ray Data, on Ray Serve.

One concept per module: `data` (data sets of .npy/.npz/Parquet rows, read and written as
columns), `names` (input and result names from JAX's StableHLO text), `model` (a model function
applied to column batches: the piece everything else shares), `local` (the in-process runner),
`cpus` (which CPUs an actor's device runs on), `predictor` (the Ray Data callable class),
`ray_runner` (a data set through Ray Data), `serve` (the Ray Serve deployment), `progress`
(rows/s on stderr), `command` (`fibergrid batch`). Ray is imported only where it is used, so
the local path needs nothing beyond fibergrid (and pyarrow for Parquet).
"""

from fibergrid.batch.model import BatchModel
from fibergrid.batch.predictor import Predictor

__all__ = ["BatchModel", "Predictor"]
