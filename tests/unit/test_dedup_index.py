"""Tests of the near-duplicate index (`datakit.dedup.index`).

The reference everywhere is an independent brute force: hashes unpacked to 256 booleans with
``np.unpackbits`` and compared element by element, so neither the popcount nor the bit layout
of the module under test is trusted. Property tests draw data with the structure that breaks
multi-index hashing when it is wrong: planted chains (A~B~C), clusters of near copies, exact
copies, and low-entropy rows that share substrings (large buckets).
"""

from __future__ import annotations

import imagehash
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from datakit.dedup.index import (
    cross_pairs,
    hamming,
    near_pairs,
    pack_bits,
    pack_hex,
    unique_hashes,
    unpack_bits,
    unpack_hex,
)

CI = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

Pairs = list[tuple[int, int, int]]


# --------------------------------------------------------------------------------------------
# reference and data


def _bits(h: np.ndarray) -> np.ndarray:
    """(N, 4) uint64 -> (N, 256) bool, independently of the module under test."""
    return np.unpackbits(h.astype(">u8").view(np.uint8).reshape(len(h), 32), axis=1).astype(bool)


def brute_self(h: np.ndarray, radius: int) -> Pairs:
    b = _bits(h)
    dist = (b[:, None, :] != b[None, :, :]).sum(axis=2)
    i, j = np.nonzero(np.triu(dist <= radius, k=1))
    return [(int(x), int(y), int(dist[x, y])) for x, y in zip(i, j, strict=True)]


def brute_cross(new: np.ndarray, old: np.ndarray, radius: int) -> Pairs:
    bn, bo = _bits(new), _bits(old)
    dist = (bn[:, None, :] != bo[None, :, :]).sum(axis=2)
    i, j = np.nonzero(dist <= radius)
    return [(int(x), int(y), int(dist[x, y])) for x, y in zip(i, j, strict=True)]


def as_list(result: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Pairs:
    i, j, d = result
    assert i.dtype == np.int64 and j.dtype == np.int64 and d.dtype == np.int32
    assert len(i) == len(j) == len(d)
    return list(zip(i.tolist(), j.tolist(), d.tolist(), strict=True))


def flip(row: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """A copy of one (4,) row with the given bit positions flipped."""
    out = row.copy()
    for b in np.unique(bits):
        out[b // 64] ^= np.uint64(1) << np.uint64(63 - b % 64)
    return out


@st.composite
def hash_sets(draw: st.DrawFn, max_rows: int = 90) -> np.ndarray:
    """Random rows, planted chains and clusters of near copies, exact copies, sparse rows."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_random = draw(st.integers(0, max_rows // 3))
    rows: list[np.ndarray] = list(rng.integers(0, 2**64, size=(n_random, 4), dtype=np.uint64))
    for _ in range(draw(st.integers(0, 4))):  # chains A ~ B ~ C ~ ...: each step flips 0..12 bits
        cur = rng.integers(0, 2**64, size=4, dtype=np.uint64)
        rows.append(cur)
        for _ in range(draw(st.integers(1, 4))):
            cur = flip(cur, rng.integers(0, 256, size=draw(st.integers(0, 12))))
            rows.append(cur)
    for _ in range(draw(st.integers(0, 3))):  # clusters: copies of one seed with 1..10 flips
        seed = rng.integers(0, 2**64, size=4, dtype=np.uint64)
        for _ in range(draw(st.integers(1, 8))):
            rows.append(flip(seed, rng.integers(0, 256, size=int(rng.integers(1, 11)))))
    if draw(st.booleans()):  # low-entropy rows: mostly zero bits, so substrings collide often
        density = draw(st.sampled_from([0.01, 0.03, 0.08]))
        bits = rng.random((draw(st.integers(1, 20)), 256)) < density
        rows.extend(pack_bits(bits))
    if draw(st.booleans()) and len(rows) > 0:  # exact copies of existing rows
        for _ in range(draw(st.integers(1, 15))):
            rows.append(rows[int(rng.integers(0, len(rows)))].copy())
    if not rows:
        return np.zeros((0, 4), dtype=np.uint64)
    h = np.array(rows[:max_rows], dtype=np.uint64)
    return h[rng.permutation(len(h))]


# --------------------------------------------------------------------------------------------
# near_pairs


@CI
@given(h=hash_sets(), radius=st.integers(0, 16), chunk=st.sampled_from([None, 1, 3, 64]),
       workers=st.sampled_from([1, 2]))
def test_near_pairs_equals_brute_force(h: np.ndarray, radius: int, chunk: int | None, workers: int) -> None:
    got = as_list(near_pairs(h, radius, chunk=chunk, workers=workers))
    assert got == brute_self(h, radius)  # same pairs, i < j, sorted by (i, j), no duplicates


@CI
@given(h=hash_sets(), radius=st.integers(0, 16), perm_seed=st.integers(0, 2**32 - 1))
def test_near_pairs_do_not_depend_on_row_order(h: np.ndarray, radius: int, perm_seed: int) -> None:
    perm = np.random.default_rng(perm_seed).permutation(len(h))
    base = as_list(near_pairs(h, radius))
    i, j, d = near_pairs(h[perm], radius)
    a, b = perm[i], perm[j]  # row k of h[perm] is row perm[k] of h
    mapped = sorted(zip(np.minimum(a, b).tolist(), np.maximum(a, b).tolist(), d.tolist(), strict=True))
    assert mapped == base


@CI
@given(new=hash_sets(max_rows=40), old=hash_sets(max_rows=60), radius=st.integers(0, 16),
       shared=st.integers(0, 10), chunk=st.sampled_from([None, 1, 5]))
def test_cross_pairs_equals_brute_force(new: np.ndarray, old: np.ndarray, radius: int, shared: int,
                                        chunk: int | None) -> None:
    if len(old) and shared:  # some new rows are near copies of old ones
        rng = np.random.default_rng(shared)
        picks = [flip(old[int(rng.integers(0, len(old)))], rng.integers(0, 256, size=int(rng.integers(0, 8))))
                 for _ in range(shared)]
        new = np.concatenate([new, np.array(picks, dtype=np.uint64)]) if len(new) else np.array(picks)
    got = as_list(cross_pairs(new, old, radius, chunk=chunk))
    assert got == brute_cross(new, old, radius)


@pytest.mark.parametrize("radius", [20, 33, 41, 64])
@pytest.mark.parametrize("method", ["index", "brute", "auto"])
def test_large_radius_every_method(radius: int, method: str) -> None:
    rng = np.random.default_rng(radius)
    seed = rng.integers(0, 2**64, size=4, dtype=np.uint64)
    h = np.array([flip(seed, rng.integers(0, 256, size=int(rng.integers(0, 80)))) for _ in range(40)]
                 + list(rng.integers(0, 2**64, size=(20, 4), dtype=np.uint64)), dtype=np.uint64)
    assert as_list(near_pairs(h, radius, method=method)) == brute_self(h, radius)  # type: ignore[arg-type]
    assert as_list(cross_pairs(h[:25], h[25:], radius, method=method)) == brute_cross(h[:25], h[25:], radius)  # type: ignore[arg-type]


def test_identical_rows_are_all_paired_at_distance_zero() -> None:
    rng = np.random.default_rng(7)
    one = rng.integers(0, 2**64, size=4, dtype=np.uint64)
    other = rng.integers(0, 2**64, size=(5, 4), dtype=np.uint64)
    h = np.concatenate([np.tile(one, (1000, 1)), other])
    i, j, d = near_pairs(h, 0)
    assert len(i) == 1000 * 999 // 2
    assert (d == 0).all() and (i < j).all() and (j < 1000).all()
    i, j, d = near_pairs(h, 10, chunk=1000)
    assert len(i) == 1000 * 999 // 2  # the random rows are ~128 bits from everything


def test_near_copies_of_a_duplicated_row_pair_with_every_copy() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2**64, size=4, dtype=np.uint64)
    b = flip(a, np.array([5, 77, 200]))
    h = np.array([a, b, a, b, a], dtype=np.uint64)
    assert as_list(near_pairs(h, 3)) == brute_self(h, 3)
    assert as_list(near_pairs(h, 2)) == [(0, 2, 0), (0, 4, 0), (1, 3, 0), (2, 4, 0)]
    assert as_list(cross_pairs(h[:2], h, 3)) == brute_cross(h[:2], h, 3)


def test_empty_and_single_inputs() -> None:
    empty = np.zeros((0, 4), dtype=np.uint64)
    one = np.ones((1, 4), dtype=np.uint64)
    for res in (near_pairs(empty, 5), near_pairs(one, 5), cross_pairs(empty, one, 5), cross_pairs(one, empty, 5)):
        assert [len(x) for x in res] == [0, 0, 0]
    assert as_list(cross_pairs(one, one, 0)) == [(0, 0, 0)]


def test_rejects_bad_input() -> None:
    h = np.zeros((3, 4), dtype=np.uint64)
    with pytest.raises(TypeError):
        near_pairs(h.astype(np.int64), 3)
    with pytest.raises(ValueError):
        near_pairs(np.zeros((3, 8), dtype=np.uint64), 3)
    with pytest.raises(ValueError):
        near_pairs(h, -1)
    with pytest.raises(TypeError):
        near_pairs(h, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        near_pairs(h, 3, chunk=0)
    with pytest.raises(ValueError):
        near_pairs(h, 3, method="faiss")  # type: ignore[arg-type]


@CI
@given(h=hash_sets())
def test_unique_hashes(h: np.ndarray) -> None:
    first, inverse = unique_hashes(h)
    assert (h[first][inverse] == h).all()
    assert len(first) == len(np.unique(h, axis=0))
    assert (np.diff(first) > 0).all()  # numbered by first occurrence
    if len(h):
        assert (inverse[first] == np.arange(len(first))).all()


# --------------------------------------------------------------------------------------------
# hex and bit conversions against imagehash


@CI
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 8))
def test_hex_round_trip_matches_imagehash(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    arrays = rng.random((n, 16, 16)) < rng.random()  # include near-constant hashes
    strings = [str(imagehash.ImageHash(a)) for a in arrays]
    h = pack_hex(strings)
    assert h.shape == (n, 4) and h.dtype == np.uint64
    assert unpack_hex(h) == strings
    assert (pack_bits(arrays) == h).all()
    assert (unpack_bits(h) == arrays.reshape(n, 256)).all()
    assert pack_hex([s.upper() for s in strings]).tolist() == h.tolist()
    for a in range(n):
        for b in range(n):
            expected = imagehash.hex_to_hash(strings[a]) - imagehash.hex_to_hash(strings[b])
            assert int(hamming(h[a], h[b])) == expected
    assert hamming(h[:1], h).tolist() == [imagehash.hex_to_hash(strings[0]) - imagehash.hex_to_hash(s)
                                          for s in strings]


def test_dhash_of_real_images_round_trips() -> None:
    rng = np.random.default_rng(11)
    pixels = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    img = Image.fromarray(pixels)
    hashes = [imagehash.dhash(im, hash_size=16)
              for im in (img, img.resize((40, 30)), img.rotate(180), Image.fromarray(255 - pixels))]
    strings = [str(x) for x in hashes]
    h = pack_hex(strings)
    assert unpack_hex(h) == strings
    assert (pack_bits(np.array([x.hash for x in hashes])) == h).all()
    i, j, d = near_pairs(h, 256)
    assert [(a, b, c) for a, b, c in zip(i.tolist(), j.tolist(), d.tolist(), strict=True)] == [
        (a, b, hashes[a] - hashes[b]) for a in range(4) for b in range(a + 1, 4)]


@pytest.mark.parametrize("bad", ["", "0" * 63, "0" * 65, "g" * 64, " " + "0" * 63, "0" * 62 + " 0"])
def test_pack_hex_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValueError, match="hash 1"):
        pack_hex(["0" * 64, bad])


def test_pack_hex_edge_cases() -> None:
    assert pack_hex([]).shape == (0, 4)
    assert unpack_hex(np.zeros((0, 4), dtype=np.uint64)) == []
    assert unpack_hex(pack_hex(["f" * 64])[0]) == ["f" * 64]  # a single (4,) row
    with pytest.raises(TypeError):
        pack_hex("0" * 64)
    assert int(hamming(pack_hex(["f" * 64])[0], pack_hex(["0" * 64])[0])) == 256
