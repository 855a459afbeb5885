"""Scoring a data set on a Ray cluster (an existing one by address, or a local instance): the
files become a Ray Data set (one read task per file, on the workers), the Predictor actors
score it, and the driver writes the scored rows as they stream back, in data set order, so the
files written equal a local run's."""

from __future__ import annotations

import logging
import re
from typing import Any

from fibergrid.batch import data as data_module
from fibergrid.batch.data import Writer
from fibergrid.batch.predictor import Predictor, map_batches_kwargs
from fibergrid.batch.progress import RowProgress
from common.errors import Error, InvalidArgument

READ_CPUS = 0  # a read task mostly waits on I/O; with CPUs of its own it would wait for the actors that hold them all


def require_ray():
    """The ray module, or one clear error naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InvalidArgument("Ray is not installed: pip install 'fibergrid[ray]'") from None
    return ray


def connect(address: str) -> bool:
    """Joins the cluster at `address` ('auto': the one `ray start` made here; 'local': a new
    instance in this process). False when Ray was already initialised (left as it is)."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    try:
        local = {"include_dashboard": False} if address == "local" else {}
        ray.init(address=None if address == "local" else address, logging_level=logging.WARNING,
                 log_to_driver=False, **local)
    except Exception as e:  # noqa: BLE001 — ConnectionError and Ray's own: one line
        raise InvalidArgument(f"--ray {address}: cannot connect: {e}".splitlines()[0]) from None
    return True


def dataset(files: list[str], read_tasks: int = 1):
    """A Ray Data set of the files' rows, in file order, read on the workers by at most
    `read_tasks` tasks at once.

    Start-up is what Ray costs on small clusters, and most of it is worker processes importing
    fibergrid (1.5 s of CPU each). A read task needs none of it: the data module is shipped by
    value, so a reader imports numpy, pyarrow and common.errors only (0.2 s); and the cap keeps Ray
    from starting a worker process per file (tasks of 0 CPUs are otherwise all started at once)."""
    ray = require_ray()
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(data_module)
    items = ray.data.from_items([{"path": p} for p in files], override_num_blocks=len(files))
    return items.map_batches(data_module.read_paths, batch_size=1, batch_format="numpy", num_cpus=READ_CPUS,
                             compute=ray.data.TaskPoolStrategy(size=max(1, read_tasks)))


def _unwrap(e: BaseException) -> tuple[BaseException | None, BaseException]:
    """(the fibergrid error inside Ray's wrappers (RayTaskError, UserCodeException...) or None,
    the innermost cause)."""
    seen, last = set(), e
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, Error):
            return e, e
        last = e
        cause = getattr(e, "cause", None)
        e = cause if isinstance(cause, BaseException) else e.__cause__ or e.__context__
    return None, last


def _from_traceback(text: str) -> Error | None:
    """The fibergrid error an actor raised, rebuilt from the remote traceback Ray's message
    carries (Ray Data's UserCodeException keeps no cause object: it is lost in pickling)."""
    from common import errors

    match = re.search(r"(?m)^\s*common\.errors\.(\w+): (.*)$", re.sub(r"\x1b\[[0-9;]*m", "", text))
    cls = getattr(errors, match.group(1), None) if match else None
    return cls(match.group(2)) if isinstance(cls, type) and issubclass(cls, Error) else None


def score_ray(model: Any, files: list[str], writer: Writer, batch_size: int, *, concurrency: int = 1,
              num_cpus: int = 1, progress: RowProgress | None = None, max_restarts: int = 0,
              predictor_class: type = Predictor, **predictor: Any) -> int:
    """Scores every row of `files` with `concurrency` actors of `predictor_class` (a Predictor
    or a subclass) of `num_cpus` CPUs each into `writer`; returns the rows written. `model` and
    `predictor` as Predictor takes them."""
    ray = require_ray()
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # the output order is the input order
    context.enable_progress_bars = False  # ours counts rows; Ray's would interleave with it
    # Ray Data logs every run (INFO) and every failure (a traceback per layer) on stderr; they stay
    # in its log files (/tmp/ray/session_*/logs/ray-data), and a failure here is one line.
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    ds = dataset(files, read_tasks=concurrency).map_batches(predictor_class, **map_batches_kwargs(
        model, concurrency=concurrency, num_cpus=num_cpus, batch_size=batch_size,
        max_restarts=max_restarts, **predictor))
    try:
        for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
            writer.write(batch)
            if progress is not None:
                progress.update(len(next(iter(batch.values()))))
    except Exception as e:  # noqa: BLE001 — an actor's fibergrid error, as its own one line
        ours, innermost = _unwrap(e)
        if ours is None:
            ours = _from_traceback(str(e))
        if ours is not None:
            raise ours from None
        message = re.sub(r"\x1b\[[0-9;]*m", "", f"Ray: {type(innermost).__name__}: {innermost}")
        raise Error(message.splitlines()[0]) from None
    writer.close()
    return writer.rows
