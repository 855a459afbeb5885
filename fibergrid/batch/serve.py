"""Online serving on Ray Serve: a deployment whose replicas each hold one loaded model.

    from ray import serve
    from fibergrid.ray import deployment
    serve.run(deployment("model.fgx", num_replicas=2, num_cpus=1), route_prefix="/score")
    # POST /score  {"x": [[0.1, 0.2, 0.3, 0.4]], "id": [7]}  ->  {"id": [7], "y": [[...]]}

A request is a batch in columns (JSON lists, one entry per row); JSON carries no dtype, so input
columns take the model's declared dtype (as fibergrid does for Python lists) and other columns
are carried through. Handles (`serve.get_app_handle`) may call `predict` with numpy columns
instead, which skips JSON. A replica's device is sized to its `num_cpus`, as a Predictor's.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from fibergrid.batch.predictor import Predictor
from common.errors import Error


class ModelServer:
    """The deployment class: `predict(columns)` for handles, `__call__(request)` for HTTP."""

    def __init__(self, model: str | os.PathLike | bytes, function: str = "main", **predictor: Any) -> None:
        self.predictor = Predictor(model, function, **predictor)

    def predict(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Scores columns given as numpy arrays (or lists: input columns take the model's dtypes)."""
        model = self.predictor.model
        columns = model.input_columns(list(batch))
        arrays = {}
        for name, value in batch.items():
            if name in columns and not isinstance(value, np.ndarray):
                dtype = model.signature[columns.index(name)][1]
                try:
                    value = np.asarray(value, dtype=dtype)
                except (TypeError, ValueError, OverflowError) as e:
                    raise Error(f"column '{name}': cannot convert to {np.dtype(dtype)}: {e}".splitlines()[0]) from None
            arrays[name] = np.asarray(value)
        return model(arrays)

    async def __call__(self, request: Any) -> Any:
        """HTTP: a JSON object of columns in, a JSON object of columns out; a bad request is a
        400 with the one-line error."""
        from starlette.responses import JSONResponse

        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise Error("the request body must be a JSON object of columns")
            scored = self.predict(body)
        except Error as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        except ValueError as e:  # malformed JSON
            return JSONResponse({"error": f"bad JSON: {e}"}, status_code=400)
        return JSONResponse({name: a.tolist() for name, a in scored.items()})


def deployment(model: str | os.PathLike | bytes, function: str = "main", *, num_replicas: int = 1,
               num_cpus: int = 1, name: str = "fibergrid", **predictor: Any):
    """A bound Ray Serve application of ModelServer: `serve.run(deployment(...))`."""
    from ray import serve

    return serve.deployment(ModelServer, name=name, num_replicas=num_replicas,
                            ray_actor_options={"num_cpus": num_cpus}).bind(model, function, **predictor)
