"""Shared pieces of the cosine-neighbour search (`datakit.dedup.vectors` and its approximate
method, `datakit.dedup.ivf`): row norms, deterministic pair similarities, the top-k per row
with its tie rule, unique pairs, thread and BLAS limits, and phase timings for the bench.

Everything streams in fixed chunks of `CHUNK` rows, so results never depend on a block size.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

import numpy as np

CHUNK = 8192  # rows per chunk of the streamed passes (fixed: results must not depend on it)


def empty_pairs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    e = np.array([], dtype=np.int64)
    return e, e.copy(), np.array([], dtype=np.float32)


def inv_norms(X: np.ndarray) -> np.ndarray:
    """1 / L2 norm of every row (float32; 0 for a zero or non-finite row), in fixed chunks."""
    n = len(X)
    out = np.zeros(n, dtype=np.float32)
    for s in range(0, n, CHUNK):
        x = np.asarray(X[s : s + CHUNK], dtype=np.float64)
        sq = np.einsum("ij,ij->i", x, x)
        ok = np.isfinite(sq) & (sq > 0)
        out[s : s + CHUNK][ok] = (1.0 / np.sqrt(sq[ok])).astype(np.float32)
    return out


def desc_key(s: np.ndarray) -> np.ndarray:
    """uint32 keys whose ascending order is the descending order of float32 `s`."""
    b = np.ascontiguousarray(s, dtype=np.float32).view(np.uint32)
    asc = np.where(b >> 31 == 1, ~b, b | np.uint32(0x80000000))
    return ~asc


def top_per_owner(owner: np.ndarray, cand: np.ndarray, score: np.ndarray, k: int) -> np.ndarray:
    """Indices of the at most `k` best (score desc, then cand asc) entries of every owner.

    The (owner, cand) pairs must be unique; owners must fit in 31 bits."""
    if len(owner) == 0:
        return np.array([], dtype=np.int64)
    o1 = np.argsort(cand, kind="stable")
    key = (owner[o1].astype(np.int64) << 32) | desc_key(score[o1]).astype(np.int64)
    order = o1[np.argsort(key, kind="stable")]
    so = owner[order]
    first = np.flatnonzero(np.concatenate(([True], so[1:] != so[:-1])))
    rank = np.arange(len(so)) - np.repeat(first, np.diff(np.append(first, len(so))))
    return order[rank < k]


def unique_pairs(a: np.ndarray, b: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
        inv = inv_norms(X)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    out = np.empty(len(lo), dtype=np.float32)
    acc = np.float64 if wide else np.float32
    for s in range(0, len(lo), CHUNK):
        a, b = lo[s : s + CHUNK], hi[s : s + CHUNK]
        xa = np.asarray(X[a], dtype=acc)
        xb = np.asarray(X[b], dtype=np.float32)
        dot = np.einsum("ij,ij->i", xa, xb) if not wide else (xa * xb).sum(axis=1)
        out[s : s + CHUNK] = (dot * inv[a].astype(acc) * inv[b].astype(acc)).astype(np.float32)
    return out


class Clock:
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


def blas_limit(n_threads: int) -> Any:
    """A context that limits BLAS threads (threadpoolctl when installed, else a no-op)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return nullcontext()
    return threadpool_limits(limits=n_threads, user_api="blas")


def worker_count(workers: int | None) -> int:
    return max(1, int(workers)) if workers else max(1, min(os.cpu_count() or 1, 8))


# --------------------------------------------------------------------------------------------
# final selection shared by both methods


def select_top(owner: np.ndarray, cand: np.ndarray, sim: np.ndarray, k: int, min_similarity: float,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From exact candidate scores (both directions present), the top-k of every owner above the
    threshold, as unique (i < j, sim) pairs sorted by (i, j)."""
    keep = sim >= min_similarity
    owner, cand, sim = owner[keep], cand[keep], sim[keep]
    top = top_per_owner(owner, cand, sim, k)
    if len(top) == 0:
        return empty_pairs()
    a, b, s = owner[top], cand[top], sim[top]
    n = int(max(a.max(), b.max())) + 1
    lo, hi, first = unique_pairs(a, b, n)
    return lo, hi, s[first]


def run_threads(fn: Callable[[Any], Any], items: Iterable[Any], workers: int) -> list[Any]:
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with blas_limit(1), ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def trim_heap() -> None:
    """Hand freed heap memory back to the OS (glibc keeps many mid-size freed arrays otherwise)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


__all__ = ["CHUNK", "Clock", "blas_limit", "desc_key", "empty_pairs", "inv_norms", "pair_similarities", "run_threads",
           "select_top", "top_per_owner", "trim_heap", "unique_pairs", "worker_count"]
