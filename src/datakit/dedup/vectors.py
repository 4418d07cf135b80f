"""Top-k cosine neighbours of embedding vectors: the embedding signal of `datakit dedup`.

:func:`neighbour_pairs` answers: for every row, its ``k`` most cosine-similar *other* rows whose
similarity is at least ``min_similarity``; a pair ``(i, j)``, ``i < j``, is reported once when
``j`` is among ``i``'s top-k or ``i`` among ``j``'s, with its similarity. Zero vectors are
similar to nothing. :func:`cross_neighbour_pairs` is the same between two sets (a row's top-k
among the *other* set: cross-split leaks for the audit, new images against an older dataset).

Two methods, one answer format:

``exact``
    Blocked float32 matrix products (``block`` query rows against all rows at a time, so
    memory is ``block x n`` floats) find, per row, every row whose BLAS similarity is within
    a margin (1e-3, far above float32 rounding for unit vectors) of the row's k-th best or of
    the threshold. Those candidates are re-scored one pair at a time with a fixed summation
    order (float32 inputs, float64 accumulation, always ``min(i, j)`` first), and the top-k is
    taken on these scores with ties broken by the lower index. The result is therefore the
    same bytes whatever the block size, and the same pair gets the same similarity from either
    side. O(n^2 d): the default up to ``EXACT_MAX_ROWS`` rows.

``approx`` (an IVF index in numpy; no extra dependency)
    1. rows are L2-normalised on the fly and projected onto the top ``dims`` (128) principal
       directions of the uncentred second-moment matrix (subspace iteration on a sample of
       20,000 rows); the reduced rows' dot product is the exact similarity minus the dot product
       of the residuals, so it is rarely inflated;
    2. a spherical k-means (``2 sqrt(n)`` cells, trained on a sample) partitions them; every
       row is stored in its nearest cell and probes up to ``nprobe`` (12) nearest cells;
    3. phase 1: every cell against itself (a first top-``kprime`` per row, ``kprime = 2k + 2``);
       phase 2: per cell, one matrix product of the rows probing it against its members, and
       only scores that beat a row's phase-1 ``kprime``-th best are kept; each score counts for
       *both* rows (a pair is found when either row probes the other's cell), never twice;
    4. per row the ``kprime`` best candidates by reduced score (above ``min_similarity -
       margin``) are re-scored exactly from the stored rows (float32 arithmetic; the float16 rows
       of :func:`load_vectors` give similarities within ~1e-4 of float32, 9e-5 measured), and
       the top-k and the threshold are applied to the exact scores.
    Reported similarities are never the reduced ones; approximation only means a true pair can
    be missed, or that a lower-ranked neighbour above the threshold takes a missed one's place.

Measured (``bench/dedup_scale.py``, clustered synthetic 1,280-d vectors whose top-5 neighbours
sit at cosine 0.75-0.8, 2 shared cores): recall of the exact pairs 0.98 at 20k rows (5.6 s;
exact 17 s), 0.97-0.99 at 100k (nprobe 12-32), but **0.72 at 1M in 175 s and 4.4 GiB peak**:
the issue-12 goal (1M in 2 min, 4 GiB, recall 0.99) is not met by this method; see
bench/README.md for the figures and what is left.
:func:`load_vectors` streams an embeddings table (`datakit embed`'s ``embeddings.parquet``) in
record batches into one normalised float16 array, so 1M x 1280 vectors take 2.4 GiB instead of
the 4.9 GiB of float32 plus Arrow's copy.

Typical use::

    ids, X = load_vectors(embed_dir, wanted=manifest_ids)     # float16, unit rows
    i, j, sim = neighbour_pairs(X, k=5, min_similarity=0.75)   # i < j, indices into ids
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from datakit.dedup.cosine import CHUNK, empty_pairs, inv_norms, pair_similarities, select_top, worker_count
from datakit.dedup.ivf import ApproxParams, approx_search

__all__ = [
    "EXACT_MAX_ROWS",
    "ApproxParams",
    "cross_neighbour_pairs",
    "load_vectors",
    "neighbour_pairs",
    "pair_similarities",
]

EXACT_MAX_ROWS = 20_000
"""``method="auto"`` is exact up to this many rows (17 s for 20k x 1,280 on 2 shared cores) and
approximate above."""

_MARGIN_EXACT = 1e-3  # BLAS vs fixed-order re-score, for unit float32 rows of any width used here


def _exact(X: np.ndarray, k: int, min_similarity: float, block: int | None,
           side: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(X)
    inv = inv_norms(X)
    dead = inv == 0
    Xn = np.empty(X.shape, dtype=np.float32)
    for s in range(0, n, CHUNK):
        Xn[s : s + CHUNK] = np.asarray(X[s : s + CHUNK], dtype=np.float32) * inv[s : s + CHUNK, None]
    Xn[dead] = 0.0
    if block is None:
        block = max(1, (1 << 24) // max(n, 1))  # 64 MiB of similarities at a time
    kk = min(k, n - 1)
    owners, cands = [], []
    for s in range(0, n, block):
        e = min(n, s + block)
        S = Xn[s:e] @ Xn.T
        r = np.arange(e - s)
        S[r, s + r] = -np.inf
        S[:, dead] = -np.inf
        S[dead[s:e]] = -np.inf
        if side is not None:
            S[side[s:e, None] == side[None, :]] = -np.inf
        kth = np.partition(S, n - kk, axis=1)[:, n - kk]
        cut = np.maximum(kth, np.float32(min_similarity)) - np.float32(_MARGIN_EXACT)
        rr, cc = np.nonzero(S >= cut[:, None])
        owners.append(rr + s)
        cands.append(cc)
    owner = np.concatenate(owners).astype(np.int64)
    cand = np.concatenate(cands).astype(np.int64)
    sim = pair_similarities(Xn, owner, cand, np.where(dead, 0.0, 1.0).astype(np.float32), wide=True)
    return select_top(owner, cand, sim, k, min_similarity)


# --------------------------------------------------------------------------------------------
# public


def _search(X: np.ndarray, k: int, min_similarity: float, method: str, workers: int | None,
            block: int | None, approx: ApproxParams | None, side: np.ndarray | None,
            stats: dict[str, float] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if X.ndim != 2:
        raise ValueError(f"X must be 2-d (rows x dims), got shape {X.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if method not in ("auto", "exact", "approx"):
        raise ValueError(f"method must be auto, exact or approx, got {method!r}")
    n = len(X)
    if n < 2:
        return empty_pairs()
    if method == "exact" or (method == "auto" and n <= EXACT_MAX_ROWS):
        return _exact(X, k, min_similarity, block, side)
    return approx_search(X, k, min_similarity, worker_count(workers), side, approx or ApproxParams(),
                   stats if stats is not None else {})


def neighbour_pairs(X: np.ndarray, k: int, min_similarity: float, *, method: str = "auto",
                    workers: int | None = None, block: int | None = None, approx: ApproxParams | None = None,
                    stats: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of rows that are among each other's top-k cosine neighbours, above a threshold.

    Args:
        X: ``(n, d)`` vectors, any float dtype (need not be normalised; zero rows match nothing).
            float16 (from :func:`load_vectors`) is read chunk by chunk, never widened whole.
        k: Neighbours per row.
        min_similarity: Minimum cosine similarity of a reported pair.
        method: ``exact``, ``approx`` or ``auto`` (exact up to ``EXACT_MAX_ROWS`` rows).
        workers: Threads of the approximate search (default: the CPU count, at most 8).
        block: Query rows per block of the exact method (default: 64 MiB of similarities);
            the result does not depend on it.
        approx: Settings of the approximate method.
        stats: When given, filled with the approximate method's phase seconds and counts.

    Returns:
        ``(i, j, sim)``: int64, int64, float32 arrays, ``i < j``, each pair once, sorted by
        ``(i, j)``; ``j`` is among ``i``'s top-k (ties: lower index first) or ``i`` among
        ``j``'s, and ``sim >= min_similarity``.
    """
    return _search(X, k, min_similarity, method, workers, block, approx, None, stats)


def cross_neighbour_pairs(Xa: np.ndarray, Xb: np.ndarray, k: int, min_similarity: float, *,
                          method: str = "auto", workers: int | None = None, block: int | None = None,
                          approx: ApproxParams | None = None, stats: dict[str, float] | None = None,
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``(a, b)`` between two sets: ``b`` among the top-k of row ``a`` of `Xa` within `Xb`,
    or ``a`` among the top-k of row ``b`` within `Xa`, with cosine similarity >= `min_similarity`.

    Same methods and arguments as :func:`neighbour_pairs` (``auto`` looks at the total rows).
    Returns ``(ia, ib, sim)`` with ``ia`` indexing `Xa` and ``ib`` indexing `Xb`, sorted.
    """
    na, nb = len(Xa), len(Xb)
    if na == 0 or nb == 0:
        return empty_pairs()
    if Xa.shape[1:] != Xb.shape[1:]:
        raise ValueError(f"Xa and Xb differ in width: {Xa.shape} vs {Xb.shape}")
    dtype = np.result_type(Xa.dtype, Xb.dtype)
    X = np.concatenate([np.asarray(Xa, dtype=dtype), np.asarray(Xb, dtype=dtype)])
    side = np.concatenate([np.zeros(na, dtype=np.int8), np.ones(nb, dtype=np.int8)])
    i, j, s = _search(X, k, min_similarity, method, workers, block, approx, side, stats)
    # every pair crosses the sets and i < j, so i is in Xa and j in Xb
    order = np.lexsort((j, i))
    return i[order], j[order] - na, s[order]


def load_vectors(path: Path | str, wanted: Iterable[str] | None = None, *, batch_rows: int = 16_384,
                 dtype: Any = np.float16) -> tuple[list[str], np.ndarray]:
    """Stream an embeddings table into one array of unit rows.

    Args:
        path: ``embeddings.parquet`` or the folder holding it (`datakit embed`'s output).
        wanted: image_ids to keep (default: every row); others are skipped while streaming.
        batch_rows: Rows per record batch (memory beyond the result: a few batches of float32).
        dtype: Storage of the result: float16 (default; 2,560 bytes a 1,280-d row, similarities
            from it are within ~1e-5 of float32) or float32.

    Returns:
        ``(ids, X)``: the kept image_ids in table order and their L2-normalised vectors
        (zero rows stay zero).

    Raises:
        ManifestError: no table, a table without ``image_id`` / ``embedding`` columns, an
            embedding column that is not a fixed-size list, or duplicate ids.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datakit.errors import ManifestError
    from datakit.vectors import EMBEDDINGS

    path = Path(path)
    if path.is_dir():
        path = path / EMBEDDINGS
    if not path.exists():
        raise ManifestError(f"no embeddings table at {path}: run `datakit embed` first")
    want = None if wanted is None else {str(w) for w in wanted}
    try:
        # buffer_size > 0: column chunks are streamed, not read whole (a 1M-row table written by
        # write_table is a single 5 GB row group)
        pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 22)
        schema = pf.schema_arrow
        if "image_id" not in schema.names or "embedding" not in schema.names:
            raise ManifestError(f"{path}: an embeddings table needs the columns image_id and embedding "
                                f"(has {schema.names})")
        etype = schema.field("embedding").type
        if not pa.types.is_fixed_size_list(etype):
            raise ManifestError(f"{path}: column embedding must be a fixed-size list of float32 (is {etype})")
        dim = etype.list_size
        total = pf.metadata.num_rows
        out = np.empty((total, dim), dtype=dtype)  # pages never written are never resident
        ids: list[str] = []
        m = 0
        for batch in pf.iter_batches(batch_size=batch_rows, columns=["image_id", "embedding"], use_threads=False):
            bid = batch.column(0).to_pylist()
            emb = batch.column(1)
            x = emb.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)
            if want is not None:
                keep = np.fromiter((b in want for b in bid), dtype=bool, count=len(bid))
                x = x[keep]
                bid = [b for b, kp in zip(bid, keep.tolist(), strict=True) if kp]
            nr = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
            ok = np.isfinite(nr) & (nr > 0)
            y = x / np.where(ok, nr, 1.0).astype(np.float32)[:, None]
            y[~ok] = 0.0
            out[m : m + len(y)] = y
            m += len(y)
            ids.extend(bid)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"corrupt embeddings table {path}: {exc}") from None
    finally:
        pa.default_memory_pool().release_unused()  # Arrow's allocator keeps freed batches otherwise
    if len(set(ids)) != len(ids):
        raise ManifestError(f"{path}: duplicate image_id rows")
    return ids, out[:m]
