"""datakit.balance.smote: blocked exact k-NN and chunked SMOTE interpolation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.neighbors import NearestNeighbors

from datakit.balance.smote import block_rows, interpolate, knn


def _brute(X: np.ndarray, k: int) -> np.ndarray:
    """Exact reference: int64 (uint8) or float64 distances, sorted by (distance, index), self excluded."""
    wide = X.astype(np.int64) if X.dtype == np.uint8 else X.astype(np.float64)
    d = ((wide[:, None, :] - wide[None, :, :]) ** 2).sum(axis=-1).astype(np.float64)
    np.fill_diagonal(d, np.inf)
    idx = np.arange(len(X))
    return np.stack([np.lexsort((idx, row))[:k] for row in d])


def _sklearn(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's brute-force neighbours, and which rows have k + 1 distinct nearest distances
    (elsewhere sklearn's order among equal distances is its own)."""
    wide = X.astype(np.float64)
    nn = NearestNeighbors(n_neighbors=k + 2, algorithm="brute").fit(wide)
    dist, idx = nn.kneighbors(wide)
    distinct = np.all(np.diff(dist[:, 1:]) > 1e-9, axis=1)
    return idx[:, 1 : k + 1], distinct


def _data(kind: str, n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "uint8":
        centres = rng.integers(0, 256, size=(4, d))
        noisy = centres[rng.integers(0, 4, size=n)] + rng.integers(-30, 31, size=(n, d))
        return np.clip(noisy, 0, 255).astype(np.uint8)
    return (rng.normal(size=(4, d))[rng.integers(0, 4, size=n)] + 0.3 * rng.normal(size=(n, d))).astype(np.float32)


# -- knn ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["uint8", "float32"])
@pytest.mark.parametrize(
    ("n", "d", "block_bytes"),
    [
        (120, 1500, 40_000),  # uint8: two exact slices of 1024 columns; a few rows per block
        (257, 16, 3_000),  # blocks of 5-6 rows: ~50 blocks, the last one smaller than k + 1
        (90, 33, 256 << 20),  # one block
    ],
)
def test_knn_equals_brute_force(kind: str, n: int, d: int, block_bytes: int) -> None:
    X = _data(kind, n, d, seed=n + d)
    k = 5
    got = knn(X, k, block_bytes=block_bytes)
    assert got.shape == (n, k)
    assert np.array_equal(got, _brute(X, k))
    ref, distinct = _sklearn(X, k)
    assert distinct.mean() > 0.8
    assert np.array_equal(got[distinct], ref[distinct])


def test_many_blocks_really_used() -> None:
    assert block_rows(257, 16, 8, 3_000) == 5
    assert block_rows(10_000, 12288, 4, 256 << 20) < 10_000
    assert block_rows(10, 12288, 4, 1) == 1


def test_uint8_distances_are_exact_despite_large_norms() -> None:
    # Norms ~ 3072 * 255^2 / 2 ~ 1e8, distances to the query 1, 4, 9, ...: float32 arithmetic on
    # |q|^2 + |x|^2 - 2 q.x cannot tell these apart; the exact slices can.
    rng = np.random.default_rng(3)
    base = (rng.integers(0, 2, size=3072) * 255).astype(np.uint8)
    rows = [base]
    for step in range(1, 9):
        row = base.astype(np.int64)
        pos = 11 * step
        row[pos] += step if row[pos] == 0 else -step
        rows.append(row.astype(np.uint8))
    X = np.stack(rows)[::-1].copy()  # query is the last row; neighbours in reverse index order
    got = knn(X, 8, block_bytes=30_000)
    assert list(got[-1]) == [7, 6, 5, 4, 3, 2, 1, 0]
    assert np.array_equal(got, _brute(X, 8))


def test_ties_go_to_the_lower_index_and_duplicates_are_neighbours() -> None:
    rng = np.random.default_rng(5)
    X = rng.integers(0, 3, size=(150, 4)).astype(np.uint8)  # 81 possible rows: many exact ties
    for bb in (2_000, 256 << 20):
        assert np.array_equal(knn(X, 7, block_bytes=bb), _brute(X, 7))
    dup = np.repeat(np.arange(6, dtype=np.uint8)[:, None] * 40, 4, axis=0)  # 6 values x 4 copies
    got = knn(np.hstack([dup, dup]), 3, block_bytes=500)
    for i, row in enumerate(got):
        copies = [j for j in range(i - i % 4, i - i % 4 + 4) if j != i]
        assert list(row) == copies  # the three exact copies, by index, never the row itself


def test_knn_rejects_bad_input() -> None:
    X = np.zeros((4, 3), np.uint8)
    with pytest.raises(ValueError, match="at least"):
        knn(X, 4)
    with pytest.raises(ValueError, match="k must be"):
        knn(X, 0)
    with pytest.raises(ValueError, match="2-d"):
        knn(np.zeros(5), 1)
    bad = np.ones((5, 2), np.float32)
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        knn(bad, 2)


# -- interpolate -----------------------------------------------------------------------------------


def _all(X: np.ndarray, need: int, k: int, seed: int, chunk: int = 64):
    parts = list(interpolate(X, need, k, np.random.default_rng(seed), chunk=chunk, block_bytes=20_000))
    return parts, [np.concatenate(p) for p in zip(*parts, strict=True)] if parts else []


@pytest.mark.parametrize("kind", ["uint8", "float32"])
def test_interpolation_follows_the_smote_rule(kind: str) -> None:
    X = _data(kind, 60, 24, seed=1)
    k = 4
    parts, (a, b, gaps, synth) = _all(X, 300, k, seed=9)
    assert [len(p[0]) for p in parts] == [64, 64, 64, 64, 44]
    assert synth.shape == (300, 24)
    assert synth.dtype == (np.uint8 if kind == "uint8" else np.float32)
    assert a.min() >= 0 and a.max() < 60 and b.min() >= 0 and b.max() < 60
    neigh = knn(X, k)
    assert all(bj in neigh[aj] for aj, bj in zip(a, b, strict=True))  # b is one of a's k neighbours
    assert np.all(a != b)
    assert np.all((gaps >= 0) & (gaps < 1))
    xa, xb = X[a].astype(np.float64), X[b].astype(np.float64)
    expected = xa + gaps[:, None] * (xb - xa)
    tol = 0.5 + 1e-3 if kind == "uint8" else 1e-4  # uint8 is rounded to the nearest integer
    assert np.abs(synth - expected).max() <= tol
    lo, hi = np.minimum(xa, xb), np.maximum(xa, xb)
    assert np.all(synth >= lo - 1e-4) and np.all(synth <= hi + 1e-4)  # on the segment, per feature


def test_interpolation_is_reproducible_and_seed_dependent() -> None:
    X = _data("uint8", 40, 10, seed=2)
    _, first = _all(X, 100, 5, seed=4)
    _, again = _all(X, 100, 5, seed=4)
    _, other = _all(X, 100, 5, seed=5)
    for x, y in zip(first, again, strict=True):
        assert np.array_equal(x, y)
    assert not np.array_equal(first[0], other[0])


def test_chunk_size_does_not_change_the_total() -> None:
    X = _data("float32", 25, 6, seed=3)
    for chunk, sizes in ((7, [7, 7, 7, 2]), (23, [23]), (1000, [23])):
        parts, _ = _all(X, 23, 3, seed=0, chunk=chunk)
        assert [len(p[3]) for p in parts] == sizes
    assert _all(X, 0, 3, seed=0)[0] == []


def test_k_is_clipped_to_the_class_size() -> None:
    X = np.array([[0, 0], [10, 10], [20, 0]], np.uint8)
    _, (a, b, _, synth) = _all(X, 50, 10, seed=1)  # k 10 > n - 1 = 2: every other row is a neighbour
    assert np.all(a != b)
    assert set(zip(a.tolist(), b.tolist(), strict=True)) <= {(i, j) for i in range(3) for j in range(3) if i != j}
    two = np.array([[0, 0, 0], [200, 100, 50]], np.uint8)
    _, (a, b, gaps, synth) = _all(two, 20, 5, seed=2)
    assert np.array_equal(b, 1 - a)
    assert np.array_equal(synth, np.rint(two[a] + gaps[:, None] * (two[b].astype(float) - two[a])).astype(np.uint8))


def test_interpolate_rejects_bad_input_at_once() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="at least 2 rows"):
        interpolate(np.zeros((1, 4), np.uint8), 5, 5, rng)
    with pytest.raises(ValueError, match="need"):
        interpolate(np.zeros((3, 4), np.uint8), -1, 5, rng)
    with pytest.raises(ValueError, match="chunk"):
        interpolate(np.zeros((3, 4), np.uint8), 1, 5, rng, chunk=0)


# -- properties ------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 30),
    d=st.integers(1, 12),
    k=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
    block_bytes=st.sampled_from([1, 700, 5_000, 1 << 20]),
    uint8=st.booleans(),
    levels=st.sampled_from([3, 256]),
)
def test_knn_and_interpolation_properties(
    n: int, d: int, k: int, seed: int, block_bytes: int, uint8: bool, levels: int
) -> None:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, levels, size=(n, d))  # levels 3: many ties and duplicate rows
    X = raw.astype(np.uint8) if uint8 else (raw / 4.0).astype(np.float32)  # exact in float32/64: real ties
    kk = min(k, n - 1)
    neigh = knn(X, kk, block_bytes=block_bytes)
    assert np.array_equal(neigh, _brute(X, kk))
    a, b, gaps, synth = (np.concatenate(p) for p in zip(*interpolate(X, 17, k, rng, chunk=5), strict=True))
    assert len(synth) == 17
    assert all(bj in neigh[aj] for aj, bj in zip(a, b, strict=True))
    xa, xb = X[a].astype(np.float64), X[b].astype(np.float64)
    assert np.all(synth >= np.minimum(xa, xb) - 1e-4) and np.all(synth <= np.maximum(xa, xb) + 1e-4)
