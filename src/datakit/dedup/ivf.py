"""The approximate method of `datakit.dedup.vectors.neighbour_pairs`: an IVF index in numpy (a
principal-direction projection, a spherical k-means of cells, each row probing its nearest
cells), re-scored exactly; see `datakit.dedup.vectors` for the method and its measured recall."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from datakit.dedup.cosine import (
    CHUNK,
    Clock,
    blas_limit,
    desc_key,
    empty_pairs,
    inv_norms,
    run_threads,
    select_top,
    trim_heap,
    unique_pairs,
)


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
    for s in range(0, n, CHUNK):
        x = np.asarray(X[s : s + CHUNK], dtype=np.float32) * inv[s : s + CHUNK, None]
        y = x if U is None else x @ U
        if p.renormalise:
            nr = np.sqrt(np.einsum("ij,ij->i", y, y))
            y = y / np.where(nr > 0, nr, 1.0)[:, None]
        out[s : s + CHUNK] = y
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
        for s in range(0, m, CHUNK):
            a[s : s + CHUNK] = np.argmax(xs[s : s + CHUNK] @ C.T, axis=1)
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
        S = np.asarray(P[s : s + CHUNK], dtype=np.float32) @ C.T
        if nprobe < nc:
            top = np.argpartition(S, nc - nprobe, axis=1)[:, nc - nprobe :]
        else:
            top = np.broadcast_to(np.arange(nc), S.shape).copy()
        vals = np.take_along_axis(S, top, axis=1)
        o = np.argsort(-vals, axis=1, kind="stable")
        vals = np.take_along_axis(vals, o, axis=1)
        top = np.take_along_axis(top, o, axis=1)
        top[vals < vals[:, :1] - np.float32(slack)] = -1
        probes[s : s + CHUNK] = top

    run_threads(one, range(0, n, CHUNK), workers)
    return probes


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
    key = (owner.astype(np.int64) << 32) | desc_key(score).astype(np.int64)
    return np.argsort(key, kind="stable")


def approx_search(X: np.ndarray, k: int, min_similarity: float, workers: int, side: np.ndarray | None,
            p: ApproxParams, stats: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(X)
    clock = Clock(stats)
    inv = inv_norms(X)
    alive = np.flatnonzero(inv > 0)
    if len(alive) < 2:
        return empty_pairs()
    kp = p.kprime or 2 * k + 2
    with blas_limit(workers) if workers else nullcontext():
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

    run_threads(own, range(cells), workers)
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

    parts = run_threads(other, range(cells), workers)
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
    trim_heap()
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
    trim_heap()
    a_ = np.concatenate(keep_a) if keep_a else np.array([], dtype=np.int64)
    b_ = np.concatenate(keep_b) if keep_b else np.array([], dtype=np.int64)
    lo, hi, _ = unique_pairs(a_, b_, n)
    del a_, b_
    clock("reduce_s")
    stats["rescored"] = len(lo)
    sim = _rescore(X, lo, hi, inv, workers)
    clock("rescore_s")
    ok = sim >= min_similarity  # only these can be reported: halves the final selection's input
    lo, hi, sim = lo[ok], hi[ok], sim[ok]
    trim_heap()
    return select_top(np.concatenate([lo, hi]), np.concatenate([hi, lo]), np.concatenate([sim, sim]), k,
                   min_similarity)


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

    run_threads(one, range(0, len(lo), step), workers)
    return out


__all__ = ["ApproxParams", "approx_search"]
