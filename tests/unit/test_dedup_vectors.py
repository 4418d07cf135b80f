"""Tests of the embedding-neighbour search (`datakit.dedup.vectors`).

The reference is an independent float64 brute force: full similarity matrix, every row's
neighbours ordered by (similarity desc, index asc), the top k kept when >= the threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datakit.dedup.vectors import (
    ApproxParams,
    cross_neighbour_pairs,
    load_vectors,
    neighbour_pairs,
    pair_similarities,
)
from datakit.errors import ManifestError
from datakit.vectors import write_embeddings


def _ref(X: np.ndarray, k: int, thr: float, side: np.ndarray | None = None) -> dict[tuple[int, int], float]:
    X = np.asarray(X, dtype=np.float64)
    nr = np.linalg.norm(X, axis=1)
    Xn = X / np.where(nr > 0, nr, 1.0)[:, None]
    S = Xn @ Xn.T
    n = len(X)
    np.fill_diagonal(S, -np.inf)
    S[nr == 0] = -np.inf
    S[:, nr == 0] = -np.inf
    if side is not None:
        S[side[:, None] == side[None, :]] = -np.inf
    out: dict[tuple[int, int], float] = {}
    for i in range(n):
        for j in np.lexsort((np.arange(n), -S[i]))[:k]:
            if S[i, j] >= thr:
                out[(min(i, int(j)), max(i, int(j)))] = float(S[i, j])
    return out


def _as_dict(i: np.ndarray, j: np.ndarray, s: np.ndarray) -> dict[tuple[int, int], float]:
    return {(a, b): v for a, b, v in zip(i.tolist(), j.tolist(), s.tolist(), strict=True)}


def _data(seed: int, n: int, d: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    if n > 8:
        X[3] = 0.0                      # zero vector: similar to nothing
        X[5] = X[4]                     # exact copy: a tie
        X[6] = 2 * X[4]                 # same direction, norm x2 (exact in floats): another tie
        X[7] = np.round(X[8])           # coarse values: more ties
    return X


@pytest.mark.parametrize("seed,n,d", [(0, 40, 3), (1, 200, 8), (2, 500, 32), (3, 9, 2)])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_exact_matches_brute_force(seed: int, n: int, d: int, k: int) -> None:
    X = _data(seed, n, d)
    for thr in (-1.0, 0.2, 0.6):
        got = _as_dict(*neighbour_pairs(X, k, thr, method="exact"))
        ref = _ref(X, k, thr)
        assert set(got) == set(ref)
        for p, v in got.items():
            assert abs(v - ref[p]) < 1e-5


def test_result_format_and_edge_cases() -> None:
    X = _data(0, 60, 6)
    i, j, s = neighbour_pairs(X, 4, 0.3)
    assert i.dtype == np.int64 and j.dtype == np.int64 and s.dtype == np.float32
    assert np.all(i < j) and np.all(s >= 0.3)
    assert len(set(zip(i.tolist(), j.tolist(), strict=True))) == len(i)
    assert np.all(np.diff(i * 1000 + j) > 0)  # sorted by (i, j)
    # k >= n: everything above the threshold
    assert set(_as_dict(*neighbour_pairs(X, 500, 0.3, method="exact"))) == set(_ref(X, 500, 0.3))
    # n < 2
    for Y in (X[:0], X[:1]):
        for m in ("exact", "approx", "auto"):
            assert all(len(a) == 0 for a in neighbour_pairs(Y, 3, 0.0, method=m))
    # all zero
    assert len(neighbour_pairs(np.zeros((5, 4), np.float32), 2, -1.0)[0]) == 0
    with pytest.raises(ValueError):
        neighbour_pairs(X, 0, 0.5)
    with pytest.raises(ValueError):
        neighbour_pairs(X, 2, 0.5, method="nope")


def test_block_size_invariance_is_byte_identical() -> None:
    X = _data(5, 700, 48)
    base = neighbour_pairs(X, 5, 0.1, method="exact", block=700)
    for block in (1, 3, 64, 333, 10_000):
        got = neighbour_pairs(X, 5, 0.1, method="exact", block=block)
        for a, b in zip(base, got, strict=True):
            assert a.tobytes() == b.tobytes()


def test_pair_similarities_symmetric_and_deterministic() -> None:
    X = _data(7, 50, 16)
    i = np.array([1, 9, 30, 2])
    j = np.array([9, 1, 2, 30])
    s = pair_similarities(X, i, j)
    assert s[0] == s[1] and s[2] == s[3]
    assert pair_similarities(X, i[:1], j[:1])[0] == s[0]


def _planted(n: int, d: int, seed: int) -> np.ndarray:
    """Clustered unit vectors (a common direction, class centres, within-class spread on a
    decaying spectrum) with planted near-copies, like the benchmark's, small."""
    rng = np.random.default_rng(seed)
    spec = np.arange(1, d + 1, dtype=np.float32) ** -0.6
    spec /= np.linalg.norm(spec)
    mu = np.abs(rng.normal(size=d)).astype(np.float32)
    mu /= np.linalg.norm(mu)
    centres = 0.6 * mu + 0.5 * rng.normal(size=(max(2, n // 100), d)).astype(np.float32) * spec
    X = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.normal(size=(n, d)).astype(np.float32) * spec
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    src = rng.choice(n, n // 20, replace=False)
    dst = rng.choice(np.setdiff1d(np.arange(n), src), n // 20, replace=False)
    X[dst] = X[src] + 0.2 * rng.normal(size=(len(src), d)).astype(np.float32) * spec
    return X


def test_approx_recall_on_planted_set() -> None:
    X = _planted(4000, 192, 11)
    ref = _ref(X, 5, 0.75)
    assert len(ref) > 2000
    got = _as_dict(*neighbour_pairs(X, 5, 0.75, method="approx", workers=2,
                                    approx=ApproxParams(dims=64, sample=2000)))
    hit = set(got) & set(ref)
    assert len(hit) / len(ref) >= 0.99
    # similarities are exact (re-scored from the full vectors), never the reduced ones
    assert max(abs(got[p] - ref[p]) for p in hit) < 1e-5
    # a true pair may be replaced by a lower-ranked one above the threshold, nothing else
    assert all(v >= 0.75 for v in got.values())
    assert len(set(got) - set(ref)) <= 0.01 * len(ref)


def test_approx_float16_input_and_determinism() -> None:
    X16 = _planted(3000, 96, 12).astype(np.float16)
    a = neighbour_pairs(X16, 5, 0.75, method="approx", approx=ApproxParams(dims=48, nprobe=24))
    b = neighbour_pairs(X16, 5, 0.75, method="approx", approx=ApproxParams(dims=48, nprobe=24))
    for x, y in zip(a, b, strict=True):
        assert x.tobytes() == y.tobytes()
    ref = _ref(X16.astype(np.float32), 5, 0.75)
    got = _as_dict(*a)
    assert len(set(got) & set(ref)) / len(ref) >= 0.99


def test_cross_pairs_match_reference() -> None:
    X = _data(9, 300, 12)
    na = 120
    side = np.r_[np.zeros(na, int), np.ones(len(X) - na, int)]
    ref = _ref(X, 3, 0.2, side)
    for method in ("exact", "approx"):
        ia, ib, s = cross_neighbour_pairs(X[:na], X[na:], 3, 0.2, method=method,
                                          approx=ApproxParams(nprobe=1000, probe_slack=2.0))
        got = {(a, b + na): v for a, b, v in zip(ia.tolist(), ib.tolist(), s.tolist(), strict=True)}
        assert set(got) == set(ref), method
    assert all(len(x) == 0 for x in cross_neighbour_pairs(X[:0], X, 3, 0.2))


def test_load_vectors_streams_normalises_and_filters(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 16)).astype(np.float32) * 7
    X[4] = 0
    ids = [f"im{t:03d}" for t in range(50)]
    write_embeddings(tmp_path / "embeddings.parquet", ids, X)
    got_ids, Y = load_vectors(tmp_path, batch_rows=7)
    assert got_ids == ids and Y.dtype == np.float16 and Y.shape == (50, 16)
    assert np.allclose(np.linalg.norm(Y[np.arange(50) != 4].astype(np.float32), axis=1), 1, atol=2e-3)
    assert not Y[4].any()
    sub, Z = load_vectors(tmp_path / "embeddings.parquet", wanted=["im010", "im002", "nope"], dtype=np.float32)
    assert sub == ["im002", "im010"]
    assert np.allclose(Z[1], X[10] / np.linalg.norm(X[10]), atol=1e-6)
    with pytest.raises(ManifestError):
        load_vectors(tmp_path / "missing")
