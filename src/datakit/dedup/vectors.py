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

import math
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
_CHUNK = 8192  # rows per chunk of the streamed passes (fixed: results must not depend on it)


@dataclass(frozen=True)
class ApproxParams:
    """Settings of the approximate method (defaults measured by ``bench/dedup_scale.py``).

    Attributes:
        dims: Principal directions kept for the search (the full width when smaller).
        sample: Rows the projection and the cells are fitted on.
        cells: Cells of the coarse quantiser; 0 means ``2 sqrt(n)`` (at most 8,192).
        nprobe: Cells a row probes at most ...
        probe_slack: ... of those whose centroid is within this similarity of its nearest one.
        iterations: k-means iterations.
        margin: Candidates are kept when their reduced score is >= ``min_similarity - margin``.
        kprime: At most this many candidates per row are re-scored exactly; 0 means ``2 k + 2``.
        slack: ... and only those whose reduced score is within `slack` of the row's k-th best.
        renormalise: Score by the cosine of the reduced vectors (else by their dot product, which
            is the exact similarity minus the residuals' dot product: slightly low, never inflated
            by the lost energy).
        seed: Seed of the samples and of the k-means start (the result is deterministic).
    """

    dims: int = 128
    sample: int = 20_000
    cells: int = 0
    nprobe: int = 12
    probe_slack: float = 0.2
    iterations: int = 6
    margin: float = 0.05
    kprime: int = 0
    slack: float = 0.03
    renormalise: bool = False
    seed: int = 0


# --------------------------------------------------------------------------------------------
# small helpers


def _empty() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    e = np.array([], dtype=np.int64)
    return e, e.copy(), np.array([], dtype=np.float32)


def _inv_norms(X: np.ndarray) -> np.ndarray:
    """1 / L2 norm of every row (float32; 0 for a zero or non-finite row), in fixed chunks."""
    n = len(X)
    out = np.zeros(n, dtype=np.float32)
    for s in range(0, n, _CHUNK):
        x = np.asarray(X[s : s + _CHUNK], dtype=np.float64)
        sq = np.einsum("ij,ij->i", x, x)
        ok = np.isfinite(sq) & (sq > 0)
        out[s : s + _CHUNK][ok] = (1.0 / np.sqrt(sq[ok])).astype(np.float32)
    return out


def _desc_key(s: np.ndarray) -> np.ndarray:
    """uint32 keys whose ascending order is the descending order of float32 `s`."""
    b = np.ascontiguousarray(s, dtype=np.float32).view(np.uint32)
    asc = np.where(b >> 31 == 1, ~b, b | np.uint32(0x80000000))
    return ~asc


def _top_per_owner(owner: np.ndarray, cand: np.ndarray, score: np.ndarray, k: int) -> np.ndarray:
    """Indices of the at most `k` best (score desc, then cand asc) entries of every owner.

    The (owner, cand) pairs must be unique; owners must fit in 31 bits."""
    if len(owner) == 0:
        return np.array([], dtype=np.int64)
    o1 = np.argsort(cand, kind="stable")
    key = (owner[o1].astype(np.int64) << 32) | _desc_key(score[o1]).astype(np.int64)
    order = o1[np.argsort(key, kind="stable")]
    so = owner[order]
    first = np.flatnonzero(np.concatenate(([True], so[1:] != so[:-1])))
    rank = np.arange(len(so)) - np.repeat(first, np.diff(np.append(first, len(so))))
    return order[rank < k]


def _unique_pairs(a: np.ndarray, b: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lo, hi, index of first occurrence) of the unordered pairs, sorted by (lo, hi)."""
    lo = np.minimum(a, b).astype(np.int64)
    hi = np.maximum(a, b).astype(np.int64)
    key = lo * n + hi
    order = np.argsort(key, kind="stable")  # sort-based: np.unique is far slower on 10^7 keys
    sk = key[order]
    first = order[np.concatenate(([True], sk[1:] != sk[:-1]))]
    return lo[first], hi[first], first


def pair_similarities(X: np.ndarray, i: np.ndarray, j: np.ndarray, inv: np.ndarray | None = None, *,
                      wide: bool = True) -> np.ndarray:
    """Cosine similarity of the row pairs ``(i[t], j[t])``, computed one pair at a time.

    Deterministic: the same pair gives the same float32 whatever else is asked (the lower index
    is always the left operand, the sum runs in a fixed order over the row). With `wide` the
    products are summed in float64 (used by the exact method), else in float32 (faster).

    Args:
        X: ``(n, d)`` rows, any float dtype (float16 rows are widened chunk by chunk).
        i, j: Row indices of equal length.
        inv: 1 / norm of every row (computed when None); 0 marks a zero row (similarity 0).
    """
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    if inv is None:
        inv = _inv_norms(X)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    out = np.empty(len(lo), dtype=np.float32)
    acc = np.float64 if wide else np.float32
    for s in range(0, len(lo), _CHUNK):
        a, b = lo[s : s + _CHUNK], hi[s : s + _CHUNK]
        xa = np.asarray(X[a], dtype=acc)
        xb = np.asarray(X[b], dtype=np.float32)
        dot = np.einsum("ij,ij->i", xa, xb) if not wide else (xa * xb).sum(axis=1)
        out[s : s + _CHUNK] = (dot * inv[a].astype(acc) * inv[b].astype(acc)).astype(np.float32)
    return out


class _Clock:
    """Records the seconds since the previous call under a name (phase timings for the bench)."""

    def __init__(self, stats: dict[str, float]) -> None:
        self.stats = stats
        self.t = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.stats[name] = round(self.stats.get(name, 0.0) + now - self.t, 3)
        self.t = now
        try:  # resident memory after the phase (Linux), for the bench
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        self.stats[name.replace("_s", "_rss_mib")] = int(line.split()[1]) // 1024
        except OSError:
            pass


def _blas_limit(n_threads: int) -> Any:
    """A context that limits BLAS threads (threadpoolctl when installed, else a no-op)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return nullcontext()
    return threadpool_limits(limits=n_threads, user_api="blas")


def _workers(workers: int | None) -> int:
    return max(1, int(workers)) if workers else max(1, min(os.cpu_count() or 1, 8))


# --------------------------------------------------------------------------------------------
# final selection shared by both methods


def _select(owner: np.ndarray, cand: np.ndarray, sim: np.ndarray, k: int, min_similarity: float,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From exact candidate scores (both directions present), the top-k of every owner above the
    threshold, as unique (i < j, sim) pairs sorted by (i, j)."""
    keep = sim >= min_similarity
    owner, cand, sim = owner[keep], cand[keep], sim[keep]
    top = _top_per_owner(owner, cand, sim, k)
    if len(top) == 0:
        return _empty()
    a, b, s = owner[top], cand[top], sim[top]
    n = int(max(a.max(), b.max())) + 1
    lo, hi, first = _unique_pairs(a, b, n)
    return lo, hi, s[first]


# --------------------------------------------------------------------------------------------
# exact


def _exact(X: np.ndarray, k: int, min_similarity: float, block: int | None,
           side: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(X)
    inv = _inv_norms(X)
    dead = inv == 0
    Xn = np.empty(X.shape, dtype=np.float32)
    for s in range(0, n, _CHUNK):
        Xn[s : s + _CHUNK] = np.asarray(X[s : s + _CHUNK], dtype=np.float32) * inv[s : s + _CHUNK, None]
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
    return _select(owner, cand, sim, k, min_similarity)


# --------------------------------------------------------------------------------------------
# approximate


def _project(X: np.ndarray, inv: np.ndarray, p: ApproxParams) -> np.ndarray:
    """Rows projected on the top principal directions (uncentred) and re-normalised, float32."""
    n, d = X.shape
    alive = np.flatnonzero(inv > 0)
    rng = np.random.default_rng(p.seed)
    if d <= p.dims:
        U = None
    else:
        idx = np.sort(rng.choice(alive, size=min(len(alive), p.sample), replace=False))
        xs = np.asarray(X[idx], dtype=np.float32) * inv[idx, None]
        C = xs.T @ xs
        # top eigenvectors by subspace iteration (a full eigh of d x d costs seconds at d = 1280)
        V = rng.standard_normal((d, p.dims + 16)).astype(np.float32)
        for _ in range(4):
            V, _r = np.linalg.qr(C @ V)
        w, E = np.linalg.eigh((V.T @ C @ V).astype(np.float64))
        U = np.ascontiguousarray((V @ E[:, ::-1][:, : p.dims].astype(np.float32)), dtype=np.float32)
    out = np.empty((n, d if U is None else p.dims), dtype=np.float16)  # widened in cell order later
    for s in range(0, n, _CHUNK):
        x = np.asarray(X[s : s + _CHUNK], dtype=np.float32) * inv[s : s + _CHUNK, None]
        y = x if U is None else x @ U
        if p.renormalise:
            nr = np.sqrt(np.einsum("ij,ij->i", y, y))
            y = y / np.where(nr > 0, nr, 1.0)[:, None]
        out[s : s + _CHUNK] = y
    out[inv == 0] = 0.0
    return out


def _kmeans(P: np.ndarray, alive: np.ndarray, cells: int, p: ApproxParams) -> np.ndarray:
    """Spherical k-means centroids (cells x dims) trained on a sample of the live rows."""
    rng = np.random.default_rng(p.seed + 1)
    m = min(len(alive), max(cells * 32, p.sample))
    xs = P[np.sort(rng.choice(alive, size=m, replace=False))].astype(np.float32)
    C = xs[rng.choice(m, size=cells, replace=False)].copy()
    for _ in range(p.iterations):
        a = np.empty(m, dtype=np.int64)
        for s in range(0, m, _CHUNK):
            a[s : s + _CHUNK] = np.argmax(xs[s : s + _CHUNK] @ C.T, axis=1)
        sums = np.zeros_like(C, dtype=np.float64)
        np.add.at(sums, a, xs)
        nr = np.linalg.norm(sums, axis=1)
        ok = nr > 0
        C[ok] = (sums[ok] / nr[ok, None]).astype(np.float32)
    return C


def _assign(P: np.ndarray, C: np.ndarray, nprobe: int, slack: float, workers: int) -> np.ndarray:
    """The cells every row probes (n x nprobe int32, nearest first, -1 padded): its nearest cell and
    the next ones, at most ``nprobe``, whose centroid similarity is within `slack` of the nearest."""
    n = len(P)
    nc = len(C)
    nprobe = min(nprobe, nc)
    probes = np.empty((n, nprobe), dtype=np.int32)

    def one(s: int) -> None:
        S = np.asarray(P[s : s + _CHUNK], dtype=np.float32) @ C.T
        if nprobe < nc:
            top = np.argpartition(S, nc - nprobe, axis=1)[:, nc - nprobe :]
        else:
            top = np.broadcast_to(np.arange(nc), S.shape).copy()
        vals = np.take_along_axis(S, top, axis=1)
        o = np.argsort(-vals, axis=1, kind="stable")
        vals = np.take_along_axis(vals, o, axis=1)
        top = np.take_along_axis(top, o, axis=1)
        top[vals < vals[:, :1] - np.float32(slack)] = -1
        probes[s : s + _CHUNK] = top

    _run(one, range(0, n, _CHUNK), workers)
    return probes


def _run(fn: Callable[[Any], Any], items: Iterable[Any], workers: int) -> list[Any]:
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with _blas_limit(1), ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def _top_rows(S: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, columns) of the kk largest entries of every row (-inf padded when fewer columns)."""
    nr, nc = S.shape
    if nc <= kk:
        vals = np.full((nr, kk), -np.inf, dtype=np.float32)
        cols = np.zeros((nr, kk), dtype=np.int64)
        vals[:, :nc] = S
        cols[:, :nc] = np.arange(nc)
        return vals, cols
    cols = np.argpartition(S, nc - kk, axis=1)[:, nc - kk :]
    return np.take_along_axis(S, cols, axis=1), cols


def _desc_order(owner: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Stable order by (owner asc, score desc)."""
    key = (owner.astype(np.int64) << 32) | _desc_key(score).astype(np.int64)
    return np.argsort(key, kind="stable")


def _approx(X: np.ndarray, k: int, min_similarity: float, workers: int, side: np.ndarray | None,
            p: ApproxParams, stats: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(X)
    clock = _Clock(stats)
    inv = _inv_norms(X)
    alive = np.flatnonzero(inv > 0)
    if len(alive) < 2:
        return _empty()
    kp = p.kprime or 2 * k + 2
    with _blas_limit(workers) if workers else nullcontext():
        P = _project(X, inv, p)
    clock("project_s")
    cells = p.cells or int(min(8192, max(1, round(2 * math.sqrt(len(alive))))))
    cells = min(cells, len(alive))
    C = _kmeans(P, alive, cells, p)
    clock("kmeans_s")
    probes = _assign(P if len(alive) == n else P[alive], C, p.nprobe, p.probe_slack, workers)
    stats["probes_per_row"] = round(float((probes >= 0).sum()) / max(1, len(probes)), 2)
    clock("assign_s")
    stats["cells"] = cells
    # rows in cell order: cell c holds sorted positions mstart[c]:mstart[c+1]; `rows` maps a
    # position back to the row index
    primary = probes[:, 0]
    order = np.argsort(primary, kind="stable")
    rows = alive[order]
    probes = probes[order]
    primary = probes[:, 0]
    mstart = np.searchsorted(primary, np.arange(cells + 1))
    Ps = P[rows].astype(np.float32)
    del P
    sd = None if side is None else side[rows]
    t = np.float32(min_similarity - p.margin)
    m = len(rows)

    # phase 1: every row against the rows of its own cell -> a first top-kp per row
    best_s = np.full((m, kp), -np.inf, dtype=np.float32)
    best_j = np.zeros((m, kp), dtype=np.int64)

    def own(c: int) -> None:
        a, b = int(mstart[c]), int(mstart[c + 1])
        if b - a < 2:
            return
        S = Ps[a:b] @ Ps[a:b].T
        np.fill_diagonal(S, -np.inf)
        if sd is not None:
            S[sd[a:b, None] == sd[None, a:b]] = -np.inf
        v, cols = _top_rows(S, kp)
        v[v < t] = -np.inf
        best_s[a:b] = v
        best_j[a:b] = cols + a

    _run(own, range(cells), workers)
    clock("own_cell_s")
    kth = np.maximum(best_s.min(axis=1), t)

    # phase 2: every row against the other cells it probes; only entries that beat the row's
    # (or the column's) phase-1 k-th best can enter a top-kp
    flat = probes[:, 1:].reshape(-1)
    qorder = np.argsort(flat, kind="stable")
    qpos = (qorder // max(1, probes.shape[1] - 1)).astype(np.int32)
    qstart = np.searchsorted(flat[qorder], np.arange(cells + 1))  # -1 (no probe) sorts first
    del flat, qorder

    def other(c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a, b = int(mstart[c]), int(mstart[c + 1])
        Q = qpos[qstart[c] : qstart[c + 1]]
        if b == a or len(Q) == 0:
            e = np.array([], dtype=np.int64)
            return e, e, np.array([], dtype=np.float32)
        S = Ps[Q] @ Ps[a:b].T
        if sd is not None:
            S[sd[Q][:, None] == sd[None, a:b]] = -np.inf
        r1, c1 = np.nonzero(S >= kth[Q][:, None])
        r2, c2 = np.nonzero(S >= kth[a:b][None, :])
        # the member gets the query unless the member probes the query's cell (then it is
        # scored there, as a query of that cell)
        keep = ~(probes[a + c2] == primary[Q[r2]][:, None]).any(axis=1)
        r2, c2 = r2[keep], c2[keep]
        own_ = np.concatenate([Q[r1], a + c2]).astype(np.int32)
        cnd = np.concatenate([a + c1, Q[r2]]).astype(np.int32)
        return own_, cnd, np.concatenate([S[r1, c1], S[r2, c2]])

    parts = _run(other, range(cells), workers)
    # free the reduced rows and the probe lists before merging
    Ps = np.empty((0, 0), dtype=np.float32)
    probes = qpos = np.empty((0, 0), dtype=np.int32)
    clock("probe_s")
    fin = np.isfinite(best_s)
    nb = int(fin.sum())
    total = nb + sum(len(x[0]) for x in parts)
    stats["emitted"] = total - nb
    owner = np.empty(total, dtype=np.int32)
    cand = np.empty(total, dtype=np.int32)
    score = np.empty(total, dtype=np.float32)
    owner[:nb] = np.nonzero(fin)[0]
    cand[:nb] = best_j[fin]
    score[:nb] = best_s[fin]
    pos = nb
    for t in range(len(parts)):  # copy and drop one part at a time: never two copies of all
        o_, c_, s_ = parts[t]
        owner[pos : pos + len(o_)] = o_
        cand[pos : pos + len(o_)] = c_
        score[pos : pos + len(o_)] = s_
        pos += len(o_)
        parts[t] = None
    del parts, fin
    _trim()
    best_s = best_j = np.empty((0, 0), dtype=np.float32)
    # top-kp per row over both phases (in owner ranges, so the temporaries stay small), then the
    # unordered pairs to re-score
    by_owner = np.argsort(owner, kind="stable")
    keep_a, keep_b = [], []
    step = 1 << 21
    s0 = 0
    while s0 < len(by_owner):
        s1 = min(len(by_owner), s0 + step)
        while s1 < len(by_owner) and owner[by_owner[s1]] == owner[by_owner[s1 - 1]]:
            s1 += 1  # never split an owner
        idx = by_owner[s0:s1]
        ow, sc = owner[idx], score[idx]
        o = _desc_order(ow, sc)
        so = ow[o]
        first = np.flatnonzero(np.concatenate(([True], so[1:] != so[:-1])))
        size = np.diff(np.append(first, len(so)))
        start = np.repeat(first, size)
        rank = np.arange(len(so)) - start
        ss = sc[o]
        # the row's k-th best reduced score (-inf when it has fewer than k)
        kb = np.where(size >= k, ss[np.minimum(first + k - 1, len(ss) - 1)], -np.inf).astype(np.float32)
        sel = (rank < kp) & (ss >= np.repeat(kb, size) - np.float32(p.slack))
        keep_a.append(rows[so[sel]])
        keep_b.append(rows[cand[idx[o[sel]]]])
        s0 = s1
    del owner, cand, score, by_owner
    _trim()
    a_ = np.concatenate(keep_a) if keep_a else np.array([], dtype=np.int64)
    b_ = np.concatenate(keep_b) if keep_b else np.array([], dtype=np.int64)
    lo, hi, _ = _unique_pairs(a_, b_, n)
    del a_, b_
    clock("reduce_s")
    stats["rescored"] = len(lo)
    sim = _rescore(X, lo, hi, inv, workers)
    clock("rescore_s")
    ok = sim >= min_similarity  # only these can be reported: halves the final selection's input
    lo, hi, sim = lo[ok], hi[ok], sim[ok]
    _trim()
    return _select(np.concatenate([lo, hi]), np.concatenate([hi, lo]), np.concatenate([sim, sim]), k,
                   min_similarity)


def _trim() -> None:
    """Hand freed heap memory back to the OS (glibc keeps many mid-size freed arrays otherwise)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _rescore(X: np.ndarray, lo: np.ndarray, hi: np.ndarray, inv: np.ndarray, workers: int) -> np.ndarray:
    """Exact cosine of the pairs (lo sorted), float32 arithmetic on the stored rows, in threads."""
    out = np.empty(len(lo), dtype=np.float32)
    step = 4096

    def one(s: int) -> None:
        a, b = lo[s : s + step], hi[s : s + step]
        ua, ia = np.unique(a, return_inverse=True) if len(a) else (a, a)
        xa = np.asarray(X[ua], dtype=np.float32)[ia]
        xb = np.asarray(X[b], dtype=np.float32)
        out[s : s + step] = np.einsum("ij,ij->i", xa, xb) * inv[a] * inv[b]

    _run(one, range(0, len(lo), step), workers)
    return out


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
        return _empty()
    if method == "exact" or (method == "auto" and n <= EXACT_MAX_ROWS):
        return _exact(X, k, min_similarity, block, side)
    return _approx(X, k, min_similarity, _workers(workers), side, approx or ApproxParams(),
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
        return _empty()
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

    from datakit.embed import EMBEDDINGS
    from datakit.errors import ManifestError

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
