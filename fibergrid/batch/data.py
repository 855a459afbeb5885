"""Data sets of rows on disk: .npy, .npz and Parquet files, read as columns of numpy arrays.

A data set is a file or a directory of files (read in sorted order, so every run sees the rows
in one order). A *batch* is a dict of equally long columns: name -> array whose first dim is the
row. The formats:

- `.npz`: each array is a column (its first dim is the row);
- `.npy`: one array, one column named `data` (Ray Data's `read_numpy` names it so, too);
- `.parquet`: each column; a fixed-size list column (nested for more dims) or a list column
  whose rows all have one length is a tensor column (rows, ...), as Ray Data writes them.

Files are read whole: a file is the unit of work (a Ray task reads one), so keep files to a few
hundred MB. Row counts come from headers and Parquet metadata without reading the data, so a
progress bar knows its total before the first batch.
"""

from __future__ import annotations

import os
import zipfile
from typing import Iterator, Mapping

import numpy as np

from common.errors import InvalidArgument

Batch = dict[str, np.ndarray]
SUFFIXES = (".npy", ".npz", ".parquet")


def list_files(path: str) -> list[str]:
    """The data set's files, sorted; one clear error for a path with none."""
    if os.path.isdir(path):
        try:
            names = sorted(os.listdir(path))
        except OSError as e:
            raise InvalidArgument(f"cannot read directory '{path}': {e.strerror or e}") from None
        files = [os.path.join(path, n) for n in names if n.endswith(SUFFIXES) and not n.startswith((".", "_"))]
        if not files:
            raise InvalidArgument(f"'{path}' holds no .npy, .npz or .parquet files")
        return files
    if not os.path.exists(path):
        raise InvalidArgument(f"cannot read '{path}': No such file or directory")
    if not path.endswith(SUFFIXES):
        raise InvalidArgument(f"'{path}': not a data set file (expected .npy, .npz or .parquet, or a directory of them)")
    return [path]


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise InvalidArgument("Parquet needs pyarrow: pip install 'fibergrid[ray]' (or pyarrow)") from None
    return pyarrow


def _checked(batch: Batch, path: str) -> Batch:
    rows = {len(a) if a.ndim else None for a in batch.values()}
    if None in rows:
        raise InvalidArgument(f"'{path}': a column is a scalar; columns need one entry per row")
    if len(rows) > 1:
        counts = ", ".join(f"{k}: {len(a)}" for k, a in batch.items())
        raise InvalidArgument(f"'{path}': columns have different row counts ({counts})")
    return batch


def _arrow_column(column, name: str, path: str) -> np.ndarray:
    """An Arrow column as (rows, ...) numpy: tensor extension types, (nested) fixed-size lists,
    or lists of one length per level."""
    pa = _pyarrow()
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if hasattr(array.type, "to_pandas_dtype") and hasattr(array, "to_numpy_ndarray"):  # Ray's tensor types
        return np.asarray(array.to_numpy_ndarray())
    shape = [len(array)]
    while pa.types.is_fixed_size_list(array.type) or pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        if array.null_count:
            raise InvalidArgument(f"'{path}': column '{name}' has null rows")
        if pa.types.is_fixed_size_list(array.type):
            width = array.type.list_size
            array = array.flatten()
        else:
            lengths = np.diff(np.asarray(array.offsets))
            if len(lengths) and (lengths != lengths[0]).any():
                raise InvalidArgument(f"'{path}': column '{name}' has rows of different lengths "
                                      f"({lengths.min()} to {lengths.max()}); a model input needs one shape per row")
            width = int(lengths[0]) if len(lengths) else 0
            array = array.flatten()
        shape.append(width)
    if array.null_count:
        raise InvalidArgument(f"'{path}': column '{name}' has null values")
    try:
        values = array.to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, NotImplementedError) as e:
        raise InvalidArgument(f"'{path}': column '{name}' of type {column.type} is not numeric: {e}") from None
    if values.dtype == object:
        raise InvalidArgument(f"'{path}': column '{name}' of type {column.type} is not numeric")
    return values.reshape(shape)


def read_file(path: str, columns: list[str] | None = None) -> Batch:
    """Every row of one file, as columns (only `columns` where given)."""
    try:
        if path.endswith(".npy"):
            batch = {"data": np.load(path, allow_pickle=False)}
        elif path.endswith(".npz"):
            if not zipfile.is_zipfile(path):
                raise InvalidArgument(f"cannot read '{path}': not an .npz file (no zip archive)")
            with np.load(path, allow_pickle=False) as z:
                batch = {name: z[name] for name in z.files if columns is None or name in columns}
        elif path.endswith(".parquet"):
            pq = _pyarrow().parquet
            table = pq.read_table(path, columns=columns)
            batch = {name: _arrow_column(table.column(name), name, path) for name in table.column_names}
        else:
            raise InvalidArgument(f"'{path}': not a data set file (expected .npy, .npz or .parquet)")
    except InvalidArgument:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise InvalidArgument(f"cannot read '{path}': {getattr(e, 'strerror', None) or e}".splitlines()[0]) from None
    except Exception as e:  # pyarrow's own errors (ArrowInvalid: a damaged file)
        raise InvalidArgument(f"cannot read '{path}': {type(e).__name__}: {e}".splitlines()[0]) from None
    return _checked(batch, path)


Schema = dict[str, tuple[np.dtype, tuple[int, ...]]]  # column -> (dtype, shape of a row)


def describe(path: str) -> tuple[int, Schema]:
    """(rows, columns) of a file from its headers or Parquet metadata, reading no data: a
    progress bar knows its total, and files that disagree are caught before any work starts."""
    try:
        if path.endswith(".npy"):
            a = np.load(path, mmap_mode="r", allow_pickle=False)
            return (int(a.shape[0]) if a.ndim else 0), {"data": (a.dtype, tuple(a.shape[1:]))}
        if path.endswith(".npz"):
            schema, rows = {}, 0
            with zipfile.ZipFile(path) as z:
                for name in z.namelist():
                    if not name.endswith(".npy"):
                        continue
                    with z.open(name) as f:
                        version = np.lib.format.read_magic(f)
                        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                        shape, _, dtype = read(f)
                    schema[name[:-4]] = (dtype, tuple(shape[1:]))
                    rows = int(shape[0]) if shape else 0
            return rows, schema
        pq = _pyarrow().parquet
        meta = pq.ParquetFile(path)
        return int(meta.metadata.num_rows), {name: _arrow_schema(meta.schema_arrow.field(name).type)
                                             for name in meta.schema_arrow.names}
    except InvalidArgument:
        raise
    except Exception as e:  # noqa: BLE001 — reported as the file being unreadable
        raise InvalidArgument(f"cannot read '{path}': {getattr(e, 'strerror', None) or e}".splitlines()[0]) from None


def _arrow_schema(arrow_type) -> tuple[np.dtype | None, tuple[int, ...]]:
    """(dtype, row shape) of an Arrow column type; variable list dims are -1, unknown dtypes None."""
    pa = _pyarrow()
    shape = []
    while True:
        if pa.types.is_fixed_size_list(arrow_type):
            shape.append(arrow_type.list_size)
        elif pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
            shape.append(-1)
        else:
            break
        arrow_type = arrow_type.value_type
    try:
        return np.dtype(arrow_type.to_pandas_dtype()), tuple(shape)
    except (NotImplementedError, TypeError, AttributeError):
        return None, tuple(shape)


def count_rows(path: str) -> int:
    """Rows in a file, from its headers or metadata."""
    return describe(path)[0]


def check_consistent(paths: list[str]) -> int:
    """Total rows; one clear error where a file's column differs in dtype or row shape from the
    first file's (Ray would fail deep inside when it merges the two)."""
    total, first = 0, None
    for path in paths:
        rows, schema = describe(path)
        total += rows
        if first is None:
            first = (path, schema)
            continue
        for name, (dtype, shape) in schema.items():
            if name in first[1] and first[1][name] != (dtype, shape):
                want = first[1][name]
                raise InvalidArgument(f"'{path}': column '{name}' is {dtype} rows of {shape}, but in '{first[0]}' "
                                      f"{want[0]} rows of {want[1]}; every file needs the same columns")
    return total


def concat(batches: list[Batch]) -> Batch:
    """Rows of several batches, in order."""
    if not batches:
        return {}
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


def rebatch(batches: Iterator[Batch], size: int) -> Iterator[Batch]:
    """Batches of exactly `size` rows (the last one may be shorter), across file boundaries."""
    pending: list[Batch] = []
    held = 0
    for batch in batches:
        rows = len(next(iter(batch.values()))) if batch else 0
        start = 0
        while rows - start >= size - held:
            take = size - held
            pending.append({k: v[start : start + take] for k, v in batch.items()})
            yield concat(pending) if len(pending) > 1 else pending[0]
            pending, held, start = [], 0, start + take
        if start < rows:
            pending.append({k: v[start:] for k, v in batch.items()})
            held += rows - start
    if held:
        yield concat(pending)


def read_paths(batch: Mapping[str, np.ndarray]) -> Batch:
    """The rows of the files named in a batch's `path` column (a Ray Data read step)."""
    return concat([read_file(str(p)) for p in batch["path"]])


def read_dataset(path: str) -> Batch:
    """A whole data set (every file, in order) as one batch: for checks and small sets."""
    return concat([read_file(p) for p in list_files(path)])


class Writer:
    """Writes rows as part files of exactly `rows_per_file` rows (`part-00000.npz`, ...; the
    last may be shorter), however the rows arrive, so a local run and a Ray run of one data set
    write the same files."""

    def __init__(self, directory: str, file_format: str = "npz", rows_per_file: int = 65536) -> None:
        if file_format not in ("npz", "parquet"):
            raise InvalidArgument(f"output format '{file_format}': expected npz or parquet")
        if rows_per_file < 1:
            raise InvalidArgument(f"rows per output file {rows_per_file} must be >= 1")
        if file_format == "parquet":
            _pyarrow()
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            raise InvalidArgument(f"cannot create output directory '{directory}': {e.strerror or e}") from None
        stale = [n for n in os.listdir(directory) if n.startswith("part-") and n.endswith(SUFFIXES)]
        if stale:
            raise InvalidArgument(f"output directory '{directory}' already holds part files ({stale[0]}, ...); "
                                  "choose an empty one")
        self.directory, self.format, self.rows_per_file = directory, file_format, rows_per_file
        self.files: list[str] = []
        self.rows = 0
        self._pending: list[Batch] = []
        self._held = 0

    def write(self, batch: Mapping[str, np.ndarray]) -> None:
        """Adds rows; full part files are written at once."""
        rows = len(next(iter(batch.values()))) if batch else 0
        start = 0
        while start < rows:
            take = min(self.rows_per_file - self._held, rows - start)
            self._pending.append({k: v[start : start + take] for k, v in batch.items()})
            self._held += take
            self.rows += take
            start += take
            if self._held == self.rows_per_file:
                self._flush()

    def _flush(self) -> None:
        if not self._held:
            return
        batch = concat(self._pending)
        path = os.path.join(self.directory, f"part-{len(self.files):05d}.{self.format}")
        try:
            if self.format == "npz":
                np.savez(path, **batch)
            else:
                write_parquet(path, batch)
        except OSError as e:
            raise InvalidArgument(f"cannot write '{path}': {e.strerror or e}") from None
        self.files.append(path)
        self._pending, self._held = [], 0

    def close(self) -> list[str]:
        """Writes the last, short part; returns every file written."""
        self._flush()
        return self.files


def write_parquet(path: str, batch: Mapping[str, np.ndarray]) -> None:
    """Columns as Parquet; a column of (rows, d1, d2...) as nested fixed-size lists, so its
    shape survives (read_file restores it)."""
    pa = _pyarrow()
    arrays = []
    for a in batch.values():
        a = np.ascontiguousarray(a)
        arrow = pa.array(a.reshape(-1))
        for width in reversed(a.shape[1:]):
            arrow = pa.FixedSizeListArray.from_arrays(arrow, width)
        arrays.append(arrow)
    pa.parquet.write_table(pa.table(arrays, names=list(batch)), path)
