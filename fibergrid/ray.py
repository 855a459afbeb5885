"""fibergrid on Ray (`pip install 'fibergrid[ray]'`): offline batch inference with Ray Data,
online serving with Ray Serve.

    import ray, fibergrid.ray
    ds = ray.data.read_parquet("s3://bucket/rows/")
    scored = ds.map_batches(fibergrid.ray.Predictor,
                            fn_constructor_kwargs={"model": "model.fgx", "function": "main"},
                            concurrency=4, num_cpus=2, batch_size=256, batch_format="numpy")

    from ray import serve
    serve.run(fibergrid.ray.deployment("model.fgx", num_replicas=2, num_cpus=1))

The pieces live in fibergrid.batch; this module is their public face under the name users of
Ray look for. Importing it does not import Ray.
"""

from fibergrid.batch.model import BatchModel
from fibergrid.batch.predictor import Predictor, map_batches_kwargs
from fibergrid.batch.serve import ModelServer, deployment

__all__ = ["BatchModel", "ModelServer", "Predictor", "deployment", "map_batches_kwargs"]
