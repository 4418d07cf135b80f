"""The embeddings table (core): one vector per `image_id`, written by `datakit embed` and read by
dedup, audit, balance (SMOTE) and the linear-probe trainer.

| file | what |
|---|---|
| `embeddings.parquet` | `image_id` (string), `embedding` (fixed-size list of float32, width `dim`) |
| `embed.json` beside it | backbone, pretrained, weights, dim, preprocess recipe, seed, fingerprint |
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datakit.errors import ManifestError
from datakit.fsutil import atomic_write

EMBEDDINGS = "embeddings.parquet"
META = "embed.json"




def table_schema(dim: int) -> pa.Schema:
    return pa.schema([("image_id", pa.string()), ("embedding", pa.list_(pa.float32(), dim))])


def to_table(ids: list[str], X: np.ndarray) -> pa.Table:
    X = np.ascontiguousarray(X, dtype=np.float32)
    n, dim = X.shape
    values = pa.array(X.reshape(-1), type=pa.float32())
    emb = pa.FixedSizeListArray.from_arrays(values, dim)
    return pa.Table.from_arrays([pa.array(ids, type=pa.string()), emb], schema=table_schema(dim))


def write_embeddings(path: Path, ids: list[str], X: np.ndarray, metadata: dict[str, Any] | None = None) -> None:
    """Atomically write an embeddings table (the fingerprint, when given, rides in the schema)."""
    table = to_table(list(map(str, ids)), X)
    if metadata:
        table = table.replace_schema_metadata({b"datakit": json.dumps(metadata, sort_keys=True).encode()})

    def _write(tmp: str) -> None:
        pq.write_table(table, tmp)

    atomic_write(Path(path), _write)


def read_embeddings(path: Path) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """(image_ids, float32 array (n, dim), meta) from an embeddings table or the folder holding one.

    `meta` is `embed.json` beside the table when present, else the metadata stored in it."""
    path = Path(path)
    if path.is_dir():
        path = path / EMBEDDINGS
    if not path.exists():
        raise ManifestError(f"no embeddings table at {path}: run `datakit embed` first")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"corrupt embeddings table {path}: {exc}") from None
    if "image_id" not in table.column_names or "embedding" not in table.column_names:
        raise ManifestError(f"{path}: an embeddings table needs the columns image_id and embedding (has {table.column_names})")
    col = table.column("embedding").combine_chunks()
    if not pa.types.is_fixed_size_list(col.type):
        raise ManifestError(f"{path}: column embedding must be a fixed-size list of float32 (is {col.type})")
    dim = col.type.list_size
    X = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)
    ids = table.column("image_id").to_pylist()
    meta: dict[str, Any] = {}
    side = path.parent / META
    if side.exists():
        meta = json.loads(side.read_text())
    elif table.schema.metadata and b"datakit" in table.schema.metadata:
        meta = json.loads(table.schema.metadata[b"datakit"])
    if len(set(ids)) != len(ids):
        raise ManifestError(f"{path}: duplicate image_id rows")
    return ids, X, meta


def lookup(ids: list[str], X: np.ndarray, wanted: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """(rows of `X` for `wanted`, mask of which were found)."""
    pos = {iid: i for i, iid in enumerate(ids)}
    idx = np.array([pos.get(str(w), -1) for w in wanted], dtype=np.int64)
    found = idx >= 0
    out = np.zeros((len(idx), X.shape[1]), dtype=np.float32)
    out[found] = X[idx[found]]
    return out, found
