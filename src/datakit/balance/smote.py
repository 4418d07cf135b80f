"""Memory-bounded SMOTE: exact k nearest neighbours in blocks, then chunked interpolation.

Used by `datakit balance` (`smote_pixels` on flattened uint8 images, `smote` on float32
embeddings). The synthesis rule is imbalanced-learn's SMOTE (`_make_samples`): pick a random
class member `a`, one of its `k` nearest same-class neighbours `b` at random, a gap `g`
uniform in [0, 1), and emit `X[a] + g * (X[b] - X[a])`. datakit does it itself so that every
synthetic row knows its two parents, and so that memory stays bounded.

Memory bound. imbalanced-learn needs the whole class matrix as floats (a 64x64x3 image is 96 KiB
as float64, against 12 KiB as uint8), fits a NearestNeighbors on it and returns the original
plus the synthetic rows as one more float matrix. Here:

* the caller's matrix stays as it is: n x d bytes for uint8 pixels (n x d x 4 for float32);
* `knn` never converts all of it: it walks pairs of row blocks (block i against block j >= i,
  so each distance is computed once and feeds both blocks' neighbour lists), converting only
  the two blocks in hand to floats. The block size follows from `block_bytes` (the two
  converted blocks plus the block-pair distance matrix and its selection scratch), so the
  working set is O(block_bytes) whatever n is; the running top-k is n x k distances and
  indices (16 bytes per entry);
* `interpolate` yields `chunk` synthetic rows at a time (O(chunk x d) floats), so the caller
  writes each chunk out and drops it: nothing of size `need x d` is ever held.

Total: n x d (input, uint8) + O(block_bytes) + n x k x 16 + O(chunk x d x 4) bytes.

Exactness. Squared Euclidean distances are computed as |q|^2 + |x|^2 - 2 q.x with a matrix
product, which on its own cancels badly for large uint8 vectors in float32. For uint8 the
values are shifted to -128..127 (distances do not change) and the dot products are computed in
float32 over slices of 1024 dimensions: every product is an integer of magnitude <= 2^14, so
every partial sum of a slice stays <= 2^24 and is exact in float32 whatever order the BLAS
adds in; the slices are summed in float64 (exact below 2^53). The distances are therefore
exact integers and ties are real ties. Other dtypes are computed in float64 (one product with
two extra columns carrying the norms), where a tie is what the rounding leaves equal. Self is
excluded by index (an exact duplicate is a neighbour at distance 0), and ties are broken by the
lower row index, so the result is the one a brute-force sort by (distance, index) gives.

Selection. Each block is first paired with itself (a full argpartition per row), which gives
every row a k-th distance; in the later block pairs only entries <= that distance can enter,
so they are picked out with one comparison and merged sparsely.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

__all__ = ["knn", "interpolate", "block_rows"]

# uint8 shifted to -128..127: |a*b| <= 2^14, so 1024 terms sum to at most 2^24, exact in float32.
_EXACT_SLICE = 1024
_SHIFT = 128.0
# Bytes per entry of a b x b block pair beyond the two converted row blocks: the float64
# distances, the float32 slice product, and the selection scratch of a merge (a candidate
# matrix, argpartition's int64 positions, masks), counted generously.
_PAIR_BYTES = 48
# A row with at most this many times k qualifying entries in a block pair is merged sparsely.
_SPARSE = 4


def block_rows(n: int, d: int, itemsize: int, block_bytes: int) -> int:
    """Rows per block so that two converted blocks (b x d x itemsize each) and the b x b
    pair scratch fit in `block_bytes`; at least 1, at most n."""
    a, b_ = _PAIR_BYTES, 2 * d * itemsize
    rows = int((-b_ + math.sqrt(b_ * b_ + 4 * a * block_bytes)) / (2 * a))
    return max(1, min(n, rows))


def _check_matrix(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-d array (rows x features), got shape {X.shape}")
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_) or np.iscomplexobj(X):
        raise ValueError(f"expected a real numeric array, got dtype {X.dtype}")
    return X


class _Blocks:
    """Converts row blocks of X to the compute layout and knows every row's squared norm.

    uint8: shifted to -128..127, float32, laid out as (slices, rows, width <= 1024) so that each
    exact slice product is a contiguous GEMM (the last slice is zero-padded, which adds nothing).
    Other dtypes: float64, augmented so that one product gives the distances:
    [-2q | |q|^2 | 1] (role "q") against [x | 1 | |x|^2] (role "x").
    """

    def __init__(self, X: np.ndarray, rows: int) -> None:
        self.X = X
        self.exact_uint8 = X.dtype == np.uint8
        n, d = X.shape
        self.width = max(1, min(d, _EXACT_SLICE))
        self.slices = max(1, -(-d // self.width))
        self.norms = np.empty(n, dtype=np.float64)
        for s in range(0, n, rows):
            e = min(n, s + rows)
            if self.exact_uint8:
                # float64 squares of the shifted values are integers: the sums are exact.
                acc = np.zeros(e - s, dtype=np.float64)
                for part in self.get(s, e):
                    wide = part.astype(np.float64)
                    acc += np.einsum("ij,ij->i", wide, wide)
            else:
                block = X[s:e].astype(np.float64)
                if not np.isfinite(block).all():
                    raise ValueError("X contains NaN or infinite values")
                acc = np.einsum("ij,ij->i", block, block)
            self.norms[s:e] = acc

    def get(self, start: int, stop: int, role: str = "x") -> np.ndarray:
        d = self.X.shape[1]
        if not self.exact_uint8:
            out = np.empty((stop - start, d + 2), dtype=np.float64)
            out[:, :d] = self.X[start:stop]
            if role == "q":
                out[:, :d] *= -2.0
                out[:, d], out[:, d + 1] = self.norms[start:stop], 1.0
            else:
                out[:, d], out[:, d + 1] = 1.0, self.norms[start:stop]
            return out
        out = np.zeros((self.slices, stop - start, self.width), dtype=np.float32)
        for i in range(self.slices):
            c = i * self.width
            width = min(self.width, d - c)
            view = out[i, :, :width]
            view[...] = self.X[start:stop, c : c + width]
            view -= _SHIFT
        return out

    def distances(self, q: np.ndarray, qs: int, x: np.ndarray, xs: int) -> np.ndarray:
        """Squared distances, float64, between block q (rows from qs, from `get(.., "q")`) and
        block x (rows from xs, from `get(.., "x")`)."""
        if not self.exact_uint8:
            return q @ x.T  # the augmented columns add |q|^2 + |x|^2 to -2 q.x
        nq, nx = q.shape[1], x.shape[1]
        out = np.zeros((nq, nx), dtype=np.float64)
        prod = np.empty((nq, nx), dtype=np.float32)
        for i in range(self.slices):
            np.matmul(q[i], x[i].T, out=prod)
            out += prod
        out *= -2.0
        out += self.norms[qs : qs + nq, None]
        out += self.norms[None, xs : xs + nx]
        return out


def _merge(best_d: np.ndarray, best_i: np.ndarray, rows: np.ndarray, dist: np.ndarray, col0: int, k: int) -> None:
    """Fold candidate columns col0.. (distances `dist`, one row per entry of `rows`) into the
    running top-k of `rows`, keeping the k smallest by (distance, index), sorted."""
    bd, bi = best_d[rows], best_i[rows]
    m = dist.shape[1]
    cand = np.concatenate((bd, dist), axis=1)
    part = np.argpartition(cand, k - 1, axis=1)[:, :k]
    sel_d = np.take_along_axis(cand, part, axis=1)
    sel_i = np.where(part < k, np.take_along_axis(bi, np.minimum(part, k - 1), axis=1), col0 + part - k)
    # argpartition picks arbitrarily among values equal to the k-th: redo those rows by (distance, index).
    kth = sel_d.max(axis=1)
    tied = np.flatnonzero(np.count_nonzero(cand <= kth[:, None], axis=1) > k)
    if len(tied):
        cols = np.broadcast_to(np.arange(col0, col0 + m, dtype=np.int64), (len(tied), m))
        all_i = np.concatenate((bi[tied], cols), axis=1)
        order = np.lexsort((all_i, cand[tied]), axis=-1)[:, :k]
        sel_d[tied] = np.take_along_axis(cand[tied], order, axis=1)
        sel_i[tied] = np.take_along_axis(all_i, order, axis=1)
    _store_sorted(best_d, best_i, rows, sel_d, sel_i)


def _store_sorted(best_d: np.ndarray, best_i: np.ndarray, rows: np.ndarray, d: np.ndarray, i: np.ndarray) -> None:
    order = np.lexsort((i, d), axis=-1)[:, : best_d.shape[1]]
    best_d[rows] = np.take_along_axis(d, order, axis=1)
    best_i[rows] = np.take_along_axis(i, order, axis=1)


def _fold(
    best_d: np.ndarray, best_i: np.ndarray, dist: np.ndarray, q0: int, x0: int, k: int, *, for_x: bool
) -> None:
    """Fold a block pair's distances (rows q0.., columns x0..) into the top-k of the q rows,
    or of the x rows when `for_x` (then the q rows are the candidates).

    Only entries <= the row's current k-th distance can enter, and once every row has a
    finite k-th distance (after its own block) they are few: up to `_SPARSE * k` per row are
    merged sparsely. Rows where more qualify (no finite k-th distance yet, many ties) take the
    full path.
    """
    nq, nx = dist.shape
    if for_x:
        own0, oth0, n_own = x0, q0, nx
        oth, own = np.nonzero(dist <= best_d[x0 : x0 + nx, k - 1][None, :])
        vals = dist[oth, own]
        order = np.argsort(own, kind="stable")
        own, oth, vals = own[order], oth[order], vals[order]
    else:
        own0, oth0, n_own = q0, x0, nq
        own, oth = np.nonzero(dist <= best_d[q0 : q0 + nq, k - 1][:, None])
        vals = dist[own, oth]
    if not len(own):
        return
    counts = np.bincount(own, minlength=n_own)
    limit = _SPARSE * k
    heavy = np.flatnonzero(counts > limit)
    if len(heavy):
        sub = dist[:, heavy].T if for_x else dist[heavy]
        _merge(best_d, best_i, own0 + heavy, sub, oth0, k)
        keep = counts[own] <= limit
        own, oth, vals = own[keep], oth[keep], vals[keep]
        if not len(own):
            return
    light = np.flatnonzero((counts > 0) & (counts <= limit))
    width = int(counts[light].max())
    slot = np.empty(n_own, dtype=np.int64)
    slot[light] = np.arange(len(light))
    pos = np.arange(len(own)) - np.searchsorted(own, own, side="left")
    cand_d = np.full((len(light), width), np.inf)
    cand_i = np.full((len(light), width), best_i.shape[0], dtype=np.int64)
    cand_d[slot[own], pos] = vals
    cand_i[slot[own], pos] = oth0 + oth
    rows = own0 + light
    _store_sorted(
        best_d, best_i, rows,
        np.concatenate((best_d[rows], cand_d), axis=1), np.concatenate((best_i[rows], cand_i), axis=1),
    )


def knn(X: np.ndarray, k: int, *, block_bytes: int = 256 << 20) -> np.ndarray:
    """Indices (n, k) of each row's k nearest other rows by squared Euclidean distance.

    Nearest first; ties go to the lower row index; a row is never its own neighbour (an exact
    duplicate is, at distance 0). `X` is uint8 (flattened pixels: exact integer distances) or
    float (computed in float64). Works in row blocks sized from `block_bytes` (see the module
    docstring); never converts all of X at once.

    Raises:
        ValueError: X not 2-d numeric, non-finite values, k < 1 or k > n - 1.
    """
    X = _check_matrix(X)
    n, d = X.shape
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1 (got {k})")
    if k > n - 1:
        raise ValueError(f"k = {k} needs at least k + 1 = {k + 1} rows (got {n})")
    if block_bytes < 1:
        raise ValueError(f"block_bytes must be positive (got {block_bytes})")
    if X.dtype == np.uint8:  # float32 slices of <= 1024 columns, the last one zero-padded
        width = max(1, min(d, _EXACT_SLICE))
        rows = block_rows(n, -(-max(d, 1) // width) * width, 4, block_bytes)
    else:
        rows = block_rows(n, d, 8, block_bytes)
    blocks = _Blocks(X, rows)
    best_d = np.full((n, k), np.inf, dtype=np.float64)
    best_i = np.full((n, k), n, dtype=np.int64)  # placeholder index: loses every tie
    bounds = [(s, min(n, s + rows)) for s in range(0, n, rows)]

    # Each block against itself first, so that every row has a k-th distance to filter with.
    for s, e in bounds:
        q = blocks.get(s, e, "q")
        dist = blocks.distances(q, s, q if blocks.exact_uint8 else blocks.get(s, e, "x"), s)
        np.fill_diagonal(dist, np.inf)
        _merge(best_d, best_i, np.arange(s, e), dist, s, k)
        del q, dist
    # Then each pair of different blocks once: one product feeds both blocks' lists.
    for bi, (qs, qe) in enumerate(bounds):
        q = blocks.get(qs, qe, "q")
        for xs, xe in bounds[bi + 1 :]:
            x = blocks.get(xs, xe, "x")
            dist = blocks.distances(q, qs, x, xs)
            _fold(best_d, best_i, dist, qs, xs, k, for_x=False)
            _fold(best_d, best_i, dist, qs, xs, k, for_x=True)
            del x, dist
    return best_i


def interpolate(
    X: np.ndarray,
    need: int,
    k: int,
    rng: np.random.Generator,
    *,
    chunk: int = 1024,
    block_bytes: int = 256 << 20,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """`need` SMOTE rows from the rows of `X` (one class), `chunk` at a time.

    Yields `(a_idx, b_idx, gaps, synth)` per chunk: `synth[j] = X[a] + gaps[j] * (X[b] - X[a])`
    with `a = a_idx[j]` a uniformly drawn row and `b = b_idx[j]` one of a's `k` nearest
    neighbours (k clipped to n - 1), `gaps` uniform in [0, 1) (float64). `synth` is uint8
    (rounded, clipped) when X is uint8, float32 otherwise. Per chunk the draws are, in this
    order, `rng.integers(0, n, m)`, `rng.integers(0, k, m)`, `rng.uniform(0, 1, m)`.

    The arguments are checked at once; the neighbours are computed on the first `next()`.

    Raises:
        ValueError: fewer than 2 rows, need < 0, k < 1, chunk < 1, X not 2-d numeric.
    """
    X = _check_matrix(X)
    n = X.shape[0]
    if n < 2:
        raise ValueError(f"SMOTE needs at least 2 rows (got {n})")
    if need < 0:
        raise ValueError(f"need must be >= 0 (got {need})")
    if k < 1:
        raise ValueError(f"k must be >= 1 (got {k})")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 (got {chunk})")
    return _synthesise(X, int(need), min(int(k), n - 1), rng, int(chunk), block_bytes)


def _synthesise(
    X: np.ndarray, need: int, k: int, rng: np.random.Generator, chunk: int, block_bytes: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    if need == 0:
        return
    n = X.shape[0]
    neigh = knn(X, k, block_bytes=block_bytes)
    for start in range(0, need, chunk):
        m = min(chunk, need - start)
        a_idx = rng.integers(0, n, size=m)
        cols = rng.integers(0, k, size=m)
        gaps = rng.uniform(0.0, 1.0, size=m)
        b_idx = neigh[a_idx, cols]
        base = X[a_idx].astype(np.float32)
        step = X[b_idx].astype(np.float32)
        step -= base
        step *= gaps.astype(np.float32)[:, None]
        step += base
        del base
        if X.dtype == np.uint8:
            np.rint(step, out=step)
            np.clip(step, 0, 255, out=step)
            synth = step.astype(np.uint8)
        else:
            synth = step
        yield a_idx, b_idx, gaps, synth
