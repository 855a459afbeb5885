"""Scoring a data set in this process, on the local device: the embedded default, and the
single-process reference that a Ray run must equal exactly."""

from __future__ import annotations

from typing import Callable, Iterable

from fibergrid.batch.data import Batch, Writer, read_file, rebatch
from fibergrid.batch.model import BatchModel
from fibergrid.batch.progress import RowProgress


def score_files(model: BatchModel | Callable[[Batch], Batch], files: Iterable[str], batch_size: int) -> Iterable[Batch]:
    """Scored batches of `batch_size` rows (batches span files), in data set order."""
    for batch in rebatch((read_file(p) for p in files), batch_size):
        yield model(batch)


def score_local(model: BatchModel | Callable[[Batch], Batch], files: list[str], writer: Writer, batch_size: int,
                progress: RowProgress | None = None) -> int:
    """Scores every row of `files` into `writer`; returns the rows written."""
    for scored in score_files(model, files, batch_size):
        writer.write(scored)
        if progress is not None:
            progress.update(len(next(iter(scored.values()))))
    writer.close()
    return writer.rows
