"""Parquet I/O for every table a2i writes. Knows nothing of torch.

Each file carries ``a2i.schema_version`` and ``a2i.kind`` in its metadata; a reader that meets another
version or kind stops with a clear message instead of misreading columns. Embeddings are
``fixed_size_list<float>`` columns. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from a2i_core.core.errors import A2IError
from a2i_core.core.files import atomic_path

SCHEMA_VERSION = "1"
FLOAT32 = pa.float32()


class SchemaError(A2IError):
    pass


def write_table(table: pa.Table, path: str | Path, kind: str, metadata: dict[str, str] | None = None,
                row_group_size: int | None = None) -> None:
    meta = dict(table.schema.metadata or {})
    meta.update({b"a2i.schema_version": SCHEMA_VERSION.encode(), b"a2i.kind": kind.encode()})
    for key, value in (metadata or {}).items():
        meta[f"a2i.{key}".encode()] = value.encode()
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp, compression="zstd", row_group_size=row_group_size)


def read_table(path: str | Path, kind: str, columns: list[str] | None = None) -> pa.Table:
    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"{path}: not found (has the stage that writes it run?)")
    check_schema(pq.read_schema(path), path, kind)
    return pq.read_table(path, columns=columns)


def table_metadata(path: str | Path) -> dict[str, str]:
    """The a2i.* metadata of a Parquet file, without the prefix."""
    meta = pq.read_schema(path).metadata or {}
    return {k.decode()[4:]: v.decode() for k, v in meta.items() if k.startswith(b"a2i.")}


def check_schema(schema: pa.Schema, path: str | Path, kind: str) -> None:
    meta = schema.metadata or {}
    version = meta.get(b"a2i.schema_version", b"").decode()
    found_kind = meta.get(b"a2i.kind", b"").decode()
    if found_kind != kind:
        raise SchemaError(f"{path}: expected an a2i {kind!r} table, found {found_kind or 'no a2i kind'!r}")
    if version != SCHEMA_VERSION:
        raise SchemaError(f"{path}: schema version {version or 'missing'!r}, this a2i reads {SCHEMA_VERSION!r}; "
                          "rerun the stage that wrote it")


def shard_path(directory: str | Path, index: int) -> Path:
    return Path(directory) / f"part-{index:05d}.parquet"


def prepare_shard_dir(directory: str | Path, shards: int) -> None:
    """Make ``directory`` ready for a plan of ``shards`` shards, keeping finished ones for a resumed run: remove a
    killed run's temporary files and every shard numbered beyond the plan (by number, not by position: a killed
    multi-process run can leave gaps)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(".*.tmp"):
        stale.unlink()
    for path in shard_paths(directory, missing_ok=True):
        if int(path.stem.split("-")[1]) >= shards:
            path.unlink()


def shard_paths(directory: str | Path, missing_ok: bool = False) -> list[Path]:
    paths = sorted(Path(directory).glob("part-*.parquet"))
    if not paths and not missing_ok:
        raise SchemaError(f"{directory}: no part-*.parquet shards (has the stage that writes them run?)")
    return paths


def iter_shards(directory: str | Path, kind: str, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """Stream the shards of a directory one table at a time. Join results by id, never by position."""
    for path in shard_paths(directory):
        yield read_table(path, kind, columns)


def read_shards(directory: str | Path, kind: str, columns: list[str] | None = None) -> pa.Table:
    return pa.concat_tables(iter_shards(directory, kind, columns))


def fixed_list(values: np.ndarray, dtype: pa.DataType = FLOAT32) -> pa.FixedSizeListArray:
    """(n, d) -> fixed_size_list<dtype, d>; (n, t, d) -> fixed_size_list<fixed_size_list<dtype, d>, t>."""
    values = np.ascontiguousarray(values, dtype=dtype.to_pandas_dtype())
    if values.ndim < 2:
        raise ValueError(f"expected at least 2 dims, got shape {values.shape}")
    flat = pa.array(values.reshape(-1), type=dtype)
    for size in reversed(values.shape[1:]):
        flat = pa.FixedSizeListArray.from_arrays(flat, size)
    return flat


def ragged_list(arrays: list[np.ndarray], width: int, dtype: pa.DataType = FLOAT32) -> pa.ListArray:
    """A list of (n_i, width) arrays -> list<fixed_size_list<dtype, width>> (e.g. per-clip frame embeddings)."""
    offsets = np.concatenate([[0], np.cumsum([a.shape[0] for a in arrays])]).astype(np.int32)
    inner = fixed_list(np.concatenate([np.zeros((0, width)), *arrays], axis=0), dtype)
    return pa.ListArray.from_arrays(pa.array(offsets), inner)


def to_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Inverse of fixed_list: a (nested) fixed_size_list column -> (n, ..., d) array."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    shape = [len(column)]
    flat = column
    while pa.types.is_fixed_size_list(flat.type):
        shape.append(flat.type.list_size)
        flat = flat.flatten()
    return flat.to_numpy(zero_copy_only=False).reshape(shape)
