"""Exact near-duplicate search over 256-bit perceptual hashes, in numpy only.

A hash is one row of four ``uint64`` words (an ``(N, 4)`` array); word 0 holds the first 64
bits of imagehash's flattened boolean array, most significant bit first, so :func:`pack_hex`
and :func:`unpack_hex` map rows to and from ``str(imagehash.dhash(img, 16))`` one to one. The
Hamming distance does not depend on that layout; only the hex conversion does.

Search is multi-index hashing. The 256 bits are cut into ``m = radius + 1`` disjoint
substrings; two hashes within ``radius`` bits differ in at most ``radius`` substrings, so
(pigeonhole) they are *equal* on at least one. For each substring the rows are sorted by
that substring, rows with equal keys form buckets, every pair inside a bucket is a
candidate, and candidates are checked with a vectorised popcount. A pair found in several
tables is kept only by the first substring it agrees on, so no global deduplication pass is
needed and the result is exact (recall 1.0) by construction.

Exact copies are collapsed first (one 64-bit fingerprint per row, checked word by word):
the index runs on distinct rows and the pairs among identical rows are added directly at
distance 0, so a thousand identical hashes cost a thousand rows, not a 500,000-pair bucket.
Buckets are walked offset by offset in slices of at most ``chunk`` candidate pairs, and each
slice is first screened on one 64-bit word (which alone rules out nearly every non-match)
before full rows are gathered, so the working memory stays bounded (about 40 bytes per
candidate per worker, plus O(N) per table) whatever the bucket sizes; a pathological bucket
(thousands of distinct hashes sharing a substring) costs time, never memory beyond its output.

At a large radius the substrings become so short that nearly every pair is a candidate;
there a blocked brute force (the same verification, without the tables) is used instead.

On a cluster the search is partitioned (:func:`near_pairs_partitioned`,
:func:`cross_pairs_partitioned`; chosen by :func:`near_pairs` / :func:`cross_pairs` themselves
when the compute settings of `datakit.parallel` name a Dask scheduler and there are more than
``compute.block_rows`` hashes): the rows are cut into contiguous blocks, one task per pair of
blocks, each task a plain search on at most two blocks, and the merged edges are the same
arrays as the one-process search. Memory per worker is bounded by two blocks; the price is that
each block's substring tables are rebuilt once per partner block (index building grows with the
number of blocks, the candidate verification that dominates at large N does not).

Typical use::

    hashes = pack_hex(df["dhash"])               # (N, 4) uint64
    i, j, dist = near_pairs(hashes, radius=10)   # every pair within 10 bits, i < j
    n, o, dist = cross_pairs(new, old, 10)       # new batch against an older dataset

For union-find over very duplicate-heavy data, :func:`unique_hashes` gives the distinct rows
and each row's distinct id, so groups can be joined on distinct rows without expanding the
quadratic set of pairs among identical copies.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from datakit.parallel import ComputeParams, Executor

__all__ = [
    "BITS",
    "WORDS",
    "cross_pairs",
    "cross_pairs_partitioned",
    "hamming",
    "near_pairs",
    "near_pairs_partitioned",
    "pack_bits",
    "pack_hex",
    "unique_hashes",
    "unpack_bits",
    "unpack_hex",
]

BITS = 256
"""Bits per hash (dhash with ``hash_size=16``)."""
WORDS = BITS // 64
"""``uint64`` words per hash row."""
HEX_CHARS = BITS // 4

DEFAULT_CHUNK = 1 << 20
"""Candidate pairs verified per numpy batch when ``chunk`` is not given."""

Method = Literal["auto", "index", "brute"]
PairArrays = tuple[np.ndarray, np.ndarray, np.ndarray]

_U64_MAX = (1 << 64) - 1
_EMPTY_I = np.zeros(0, dtype=np.int64)
_EMPTY_D = np.zeros(0, dtype=np.int32)


# --------------------------------------------------------------------------------------------
# conversions


def pack_hex(hex_strings: Iterable[str]) -> np.ndarray:
    """Convert 64-character hex strings (imagehash's ``str`` format) to an ``(N, 4)`` array.

    Args:
        hex_strings: Strings as written by ``str(imagehash.dhash(img, hash_size=16))``;
            upper or lower case. Any iterable (list, numpy array, pandas Series).

    Returns:
        ``(N, 4)`` C-contiguous ``uint64`` array; word 0 holds the first 16 hex digits.

    Raises:
        TypeError: A single string was given instead of a sequence of them.
        ValueError: A string is not exactly 64 hexadecimal digits (the message names the
            first offending position).
    """
    if isinstance(hex_strings, (str, bytes)):
        raise TypeError("pack_hex takes a sequence of hex strings, not one string (wrap it in a list)")
    items = [str(s) for s in hex_strings]
    if not items:
        return np.zeros((0, WORDS), dtype=np.uint64)
    joined = "".join(items)
    raw: bytes | None = None
    if len(joined) == HEX_CHARS * len(items):
        try:
            raw = bytes.fromhex(joined)
        except ValueError:
            raw = None
    # bytes.fromhex skips whitespace, so a length check on the result catches "ab cd..." too
    if raw is None or len(raw) != (BITS // 8) * len(items):
        for k, s in enumerate(items):
            _check_one_hex(s, k)
        raise ValueError("hex hashes could not be decoded")  # pragma: no cover - the loop raises
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(len(items), WORDS)


def _check_one_hex(s: str, position: int) -> None:
    """Raise a precise ValueError when ``s`` is not one 256-bit hex hash."""
    ok = len(s) == HEX_CHARS
    if ok:
        try:
            ok = len(bytes.fromhex(s)) == BITS // 8
        except ValueError:
            ok = False
    if not ok:
        raise ValueError(f"hash {position}: expected {HEX_CHARS} hex digits, got {s[:80]!r}")


def unpack_hex(hashes: np.ndarray) -> list[str]:
    """Convert an ``(N, 4)`` hash array back to 64-character lower-case hex strings.

    Args:
        hashes: ``(N, 4)`` ``uint64`` array (a single ``(4,)`` row is accepted too).

    Returns:
        One string per row, identical to imagehash's ``str`` of the same hash.
    """
    h = _as_hashes(np.atleast_2d(hashes), "hashes")
    text = h.astype(">u8").tobytes().hex()
    return [text[k : k + HEX_CHARS] for k in range(0, len(text), HEX_CHARS)]


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack boolean hash arrays (imagehash's ``ImageHash.hash``) into ``(N, 4)`` rows.

    Args:
        bits: ``(N, 16, 16)``, ``(N, 256)``, ``(16, 16)`` or ``(256,)`` booleans, row-major.

    Returns:
        ``(N, 4)`` ``uint64`` array, the same rows :func:`pack_hex` gives for the hex strings.
    """
    b = np.asarray(bits, dtype=bool)
    if b.size % BITS:
        raise ValueError(f"expected a multiple of {BITS} bits, got shape {b.shape}")
    flat = b.reshape(-1, BITS)
    packed = np.packbits(flat, axis=1)  # big-endian bytes: first bit is the MSB of byte 0
    return np.ascontiguousarray(packed).view(">u8").astype(np.uint64).reshape(-1, WORDS)


def unpack_bits(hashes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``(N, 4)`` rows to ``(N, 256)`` booleans."""
    h = _as_hashes(np.atleast_2d(hashes), "hashes")
    raw = h.astype(">u8").view(np.uint8).reshape(len(h), BITS // 8)
    return np.unpackbits(raw, axis=1).astype(bool)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distance between hash rows, broadcasting over leading axes.

    Args:
        a: ``(..., 4)`` ``uint64`` hashes.
        b: ``(..., 4)`` ``uint64`` hashes, broadcast against ``a`` (e.g. one row against N).

    Returns:
        ``int32`` distances of the broadcast leading shape (0-d for two single rows).
    """
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    if x.shape[-1:] != (WORDS,):
        raise ValueError(f"hashes must have {WORDS} uint64 words in the last axis, got shape {x.shape}")
    return np.bitwise_count(x).sum(axis=-1, dtype=np.int32)


def _popcount_rows(x: np.ndarray) -> np.ndarray:
    """Bits set per row of an ``(K, 4)`` array, as ``uint16`` (uint8 would wrap at 256)."""
    c = np.bitwise_count(x)
    lo = c[:, 0] + c[:, 1]  # each at most 128: safe in uint8
    hi = c[:, 2] + c[:, 3]
    out = lo.astype(np.uint16)
    out += hi
    return out


def _as_hashes(hashes: np.ndarray, name: str) -> np.ndarray:
    """Validate an ``(N, 4)`` ``uint64`` array and return it C-contiguous."""
    h = np.asarray(hashes)
    if h.ndim != 2 or h.shape[1] != WORDS:
        raise ValueError(f"{name}: expected shape (N, {WORDS}), got {h.shape}")
    if h.dtype != np.uint64:
        raise TypeError(f"{name}: expected dtype uint64, got {h.dtype} (use pack_hex / pack_bits)")
    return np.ascontiguousarray(h)


def _check_radius(radius: int) -> int:
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)):
        raise TypeError(f"radius must be an int, got {type(radius).__name__}")
    r = int(radius)
    if r < 0:
        raise ValueError(f"radius must be >= 0, got {r}")
    return min(r, BITS)


def _check_chunk(chunk: int | None) -> int:
    if chunk is None:
        return DEFAULT_CHUNK
    if int(chunk) < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return int(chunk)


def _check_workers(workers: int | None) -> int:
    if workers is None:
        return max(1, min(2, os.cpu_count() or 1))
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return int(workers)


# --------------------------------------------------------------------------------------------
# exact copies


def _splitmix(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, in place on a fresh uint64 array (wrapping arithmetic)."""
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def _row_fingerprint(h: np.ndarray) -> np.ndarray:
    """A 64-bit fingerprint per row (equal rows, equal fingerprints)."""
    acc = h[:, 0].copy()
    for w in range(1, WORDS):
        acc = _splitmix(acc)
        acc ^= h[:, w]
    return _splitmix(acc)


def unique_hashes(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of a hash array.

    Args:
        hashes: ``(N, 4)`` ``uint64`` array.

    Returns:
        ``(first, inverse)``: ``first[u]`` is the index of the first occurrence of distinct
        row ``u`` (distinct rows are numbered in order of first occurrence, so ``first`` is
        increasing) and ``inverse[k]`` the distinct id of row ``k``; ``hashes[first][inverse]``
        equals ``hashes``. Both ``int64``.
    """
    h = _as_hashes(hashes, "hashes")
    found = _unique(h)
    if found is None:
        ident = np.arange(len(h), dtype=np.int64)
        return ident, ident.copy()
    return found


def _unique(h: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(first, inverse)`` as in :func:`unique_hashes`, or None when every row is distinct."""
    n = len(h)
    if n < 2:
        return None
    fp = _row_fingerprint(h)
    sfp = np.sort(fp)
    same = sfp[1:] == sfp[:-1]
    if not same.any():  # distinct fingerprints imply distinct rows
        return None
    repeated = np.unique(sfp[1:][same])
    del sfp, same
    # only rows whose fingerprint repeats need grouping (usually a small share)
    at = np.searchsorted(repeated, fp)
    np.minimum(at, len(repeated) - 1, out=at)
    rows = np.flatnonzero(repeated[at] == fp)
    del at
    rows = rows[np.argsort(fp[rows], kind="stable")]  # grouped; ascending index inside a group
    fr = fp[rows]
    del fp
    new = np.empty(len(rows), dtype=bool)
    new[0] = True
    np.not_equal(fr[1:], fr[:-1], out=new[1:])
    group_first = rows[np.flatnonzero(new)]
    rep = np.arange(n, dtype=np.int64)
    rep[rows] = group_first[np.cumsum(new) - 1]
    if not all(np.array_equal(h[rep[rows], w], h[rows, w]) for w in range(WORDS)):
        return _unique_exact(h)  # a 64-bit fingerprint collision between different rows
    is_first = rep == np.arange(n, dtype=np.int64)
    id_of_row = np.cumsum(is_first, dtype=np.int64) - 1
    return np.flatnonzero(is_first).astype(np.int64), id_of_row[rep]


def _unique_exact(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`unique_hashes` by a full row sort (slow; only after a fingerprint collision)."""
    _, first, inverse = np.unique(h, axis=0, return_index=True, return_inverse=True)
    first = first.astype(np.int64)
    inverse = inverse.reshape(-1).astype(np.int64)
    is_first = np.zeros(len(h), dtype=bool)
    is_first[first] = True
    id_of_row = np.cumsum(is_first, dtype=np.int64) - 1
    return np.flatnonzero(is_first).astype(np.int64), id_of_row[first][inverse]


@dataclass(frozen=True)
class _Groups:
    """The distinct rows of a hash array, and the original rows of each repeated hash.

    Nothing is copied: distinct row ``u`` is ``h[first[u]]``. When every row is distinct
    (``first is None``) distinct ids are original indices. Only hashes that occur more than
    once get a member list (CSR: ``multi_members[multi_start[k]:multi_start[k + 1]]`` are
    the rows of distinct id ``multi_ids[k]``, ascending).
    """

    h: np.ndarray
    first: np.ndarray | None  # (U,) original index of each distinct row's first occurrence
    inverse: np.ndarray | None  # (N,) distinct id of every original row
    multi_ids: np.ndarray  # sorted distinct ids that occur more than once
    multi_members: np.ndarray
    multi_start: np.ndarray

    def __len__(self) -> int:
        return len(self.h) if self.first is None else len(self.first)

    def orig(self, ids: np.ndarray) -> np.ndarray:
        """Original index of the first occurrence of distinct rows ``ids``."""
        return ids if self.first is None else self.first[ids]

    def ids_of(self, rows: np.ndarray) -> np.ndarray:
        """Distinct id of original rows ``rows``."""
        return rows if self.inverse is None else self.inverse[rows]

    def column(self, w: int) -> np.ndarray:
        """Word ``w`` of every distinct row."""
        return self.h[:, w] if self.first is None else self.h[self.first, w]

    def distinct(self) -> np.ndarray:
        """The distinct rows as one array (a copy unless every row is distinct)."""
        return self.h if self.first is None else np.ascontiguousarray(self.h[self.first])

    def copies(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(count, slot)`` per distinct id: how many rows hold it, and its ``multi_ids`` slot (-1: none)."""
        if not len(self.multi_ids):
            return np.ones(len(ids), dtype=np.int64), np.full(len(ids), -1, dtype=np.int64)
        k = np.minimum(np.searchsorted(self.multi_ids, ids), len(self.multi_ids) - 1)
        hit = self.multi_ids[k] == ids
        slot = np.where(hit, k, -1)
        count = np.where(hit, self.multi_start[k + 1] - self.multi_start[k], 1)
        return count, slot

    def member(self, ids: np.ndarray, slot: np.ndarray, rank: np.ndarray) -> np.ndarray:
        """The ``rank``-th original row holding distinct id ``ids`` (``slot`` from :meth:`copies`)."""
        out = np.array(self.orig(ids), dtype=np.int64)
        sel = slot >= 0
        out[sel] = self.multi_members[self.multi_start[slot[sel]] + rank[sel]]
        return out


def _collapse(h: np.ndarray) -> _Groups:
    """Group the rows of ``h`` by distinct hash."""
    found = _unique(h)
    if found is None:
        return _Groups(h, None, None, _EMPTY_I, _EMPTY_I, np.zeros(1, dtype=np.int64))
    first, inverse = found
    counts = np.bincount(inverse, minlength=len(first))
    multi_ids = np.flatnonzero(counts > 1)
    rows = np.flatnonzero(counts[inverse] > 1)
    rows = rows[np.argsort(inverse[rows], kind="stable")]
    start = np.zeros(len(multi_ids) + 1, dtype=np.int64)
    np.cumsum(counts[multi_ids], out=start[1:])
    return _Groups(h, first, inverse, multi_ids, rows, start)


# --------------------------------------------------------------------------------------------
# run enumeration (all pairs inside contiguous runs, in bounded slices)


def _run_pairs(ends: np.ndarray, chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every pair of positions ``p < q`` lying in the same run, in slices of ``chunk``.

    Args:
        ends: ``ends[k]`` is the exclusive end of the run holding position ``k`` (runs are
            contiguous ranges of positions).
        chunk: Largest slice yielded.

    Yields:
        ``(p, q)`` position arrays of equal length; ``q = p + d`` for one offset ``d``.
    """
    act = np.flatnonzero(ends - np.arange(len(ends)) > 1)
    d = 1
    while act.size:
        for s in range(0, act.size, chunk):
            p = act[s : s + chunk]
            yield p, p + d
        d += 1
        act = act[ends[act] - act > d]


def _span_pairs(lo: np.ndarray, count: np.ndarray, chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Pairs ``(k, lo[k] + d)`` for every ``k`` and ``0 <= d < count[k]``, in slices."""
    act = np.flatnonzero(count > 0)
    d = 0
    while act.size:
        for s in range(0, act.size, chunk):
            k = act[s : s + chunk]
            yield k, lo[k] + d
        d += 1
        act = act[count[act] > d]


# --------------------------------------------------------------------------------------------
# substrings


@dataclass(frozen=True)
class _Substring:
    """Bits ``[lo, hi)`` of the 256-bit string (bit 0 = MSB of word 0)."""

    lo: int
    hi: int

    @property
    def width(self) -> int:
        return self.hi - self.lo

    def words(self) -> list[tuple[int, int]]:
        """(word, mask) for each word this substring touches."""
        out = []
        for w in range(self.lo // 64, (self.hi - 1) // 64 + 1):
            a = max(self.lo, 64 * w) - 64 * w  # first bit in this word, from the MSB
            b = min(self.hi, 64 * w + 64) - 64 * w
            mask = ((1 << (b - a)) - 1) << (64 - b)
            out.append((w, mask))
        return out

    def key(self, rows: _Groups) -> np.ndarray:
        """The substring of every distinct row as a fresh uint64 key (exact up to 64 bits, mixed beyond)."""
        if self.width > 64:
            acc: np.ndarray | None = None
            for lo in range(self.lo, self.hi, 64):
                part = _Substring(lo, min(lo + 64, self.hi)).key(rows)
                acc = part if acc is None else _splitmix(acc) ^ part
            assert acc is not None
            return _splitmix(acc)
        parts = self.words()
        out: np.ndarray | None = None
        for w, mask in parts:
            b = min(self.hi, 64 * w + 64) - 64 * w
            col = rows.column(w)
            v = col & np.uint64(mask) if mask != _U64_MAX else col.copy()
            v >>= np.uint64(64 - b)
            if out is None:
                out = v
            else:
                out <<= np.uint64(b)
                out |= v
        assert out is not None
        return out


def _substrings(m: int) -> list[_Substring]:
    """Cut the 256 bits into ``m`` disjoint near-equal substrings."""
    cuts = [(t * BITS) // m for t in range(m + 1)]
    return [_Substring(cuts[t], cuts[t + 1]) for t in range(m)]


def _owner_mask(x: np.ndarray, subs: Sequence[_Substring], t: int) -> np.ndarray:
    """Rows of xor-differences ``x`` whose first agreeing substring is ``t``."""
    keep = np.ones(len(x), dtype=bool)
    for s in range(t + 1):
        differs = np.zeros(len(x), dtype=bool)
        for w, mask in subs[s].words():
            differs |= (x[:, w] & np.uint64(mask)) != 0
        if s < t:
            keep &= differs
        elif subs[t].width > 64:  # mixed key: equal keys need not mean equal substrings
            keep &= ~differs
    return keep


def _sorted_keys(key: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort keys; returns (order, sorted keys). Packs key and index into one word when they fit.

    ``key`` is overwritten (it must be a fresh array the caller no longer needs).
    """
    n = len(key)
    ib = max(1, (n - 1).bit_length())
    if min(width, 64) + ib <= 64:
        packed = key  # consumed: the caller's key array becomes the packed array
        packed <<= np.uint64(ib)
        packed |= np.arange(n, dtype=np.uint64)
        packed.sort()
        order = (packed & np.uint64((1 << ib) - 1)).view(np.int64)
        packed >>= np.uint64(ib)
        return order, packed
    order = np.argsort(key).astype(np.int64, copy=False)
    return order, key[order]


def _buckets(key: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows in buckets of two or more equal keys, and each position's bucket end.

    Returns:
        ``(rows, ends)``: ``rows`` lists row indices grouped by key (singletons dropped);
        ``ends[k]`` is the exclusive end, in ``rows``, of the bucket holding position ``k``.
    """
    order, sk = _sorted_keys(key, width)
    same = sk[1:] == sk[:-1]
    if not same.any():
        return _EMPTY_I, _EMPTY_I
    inb = np.zeros(len(sk), dtype=bool)
    inb[1:] = same
    inb[:-1] |= same
    del same
    pos = np.flatnonzero(inb)
    del inb
    rows = order[pos]
    del order
    skc = sk[pos]
    del sk, pos
    starts = np.flatnonzero(np.concatenate(([True], skc[1:] != skc[:-1])))
    bounds = np.append(starts, len(rows))
    ends = np.repeat(bounds[1:], np.diff(bounds))
    return rows, ends


# --------------------------------------------------------------------------------------------
# verification


class _Collector:
    """Accumulates verified pairs (a, b, dist) from slices."""

    def __init__(self) -> None:
        self.a: list[np.ndarray] = []
        self.b: list[np.ndarray] = []
        self.d: list[np.ndarray] = []

    def add(self, a: np.ndarray, b: np.ndarray, d: np.ndarray) -> None:
        if len(a):
            self.a.append(a)
            self.b.append(b)
            self.d.append(d)

    def result(self) -> PairArrays:
        if not self.a:
            return _EMPTY_I, _EMPTY_I, _EMPTY_D
        return (np.concatenate(self.a).astype(np.int64, copy=False), np.concatenate(self.b).astype(np.int64, copy=False),
                np.concatenate(self.d).astype(np.int32))


def _filter_word(sub: _Substring) -> int:
    """The word sharing fewest bits with ``sub``: the cheapest pre-filter for its candidates."""
    overlap = [0] * WORDS
    for w, mask in sub.words():
        overlap[w] = int(mask).bit_count()
    return int(np.argmin(overlap))


def _verify(ca: np.ndarray, cb: np.ndarray, p: np.ndarray, q: np.ndarray, ra: np.ndarray, rb: np.ndarray,
            ha: np.ndarray, hb: np.ndarray, radius: int, subs: Sequence[_Substring], t: int,
            out: _Collector) -> None:
    """Keep the candidate pairs within ``radius`` that table ``t`` owns.

    A candidate is positions ``(p, q)``: ``ca[p]`` / ``cb[q]`` is one word of rows ``ra[p]`` of
    ``ha`` / ``rb[q]`` of ``hb``. That word alone already differs in more than ``radius``
    bits for nearly every non-match, so full rows are gathered for the few survivors only.
    """
    x1 = ca[p]
    x1 ^= cb[q]
    ok = np.bitwise_count(x1) <= radius
    if not ok.any():
        return
    sel = np.flatnonzero(ok)
    a = ra[p[sel]]
    b = rb[q[sel]]
    x = ha[a]
    x ^= hb[b]
    dist = _popcount_rows(x)
    ok = dist <= radius
    if not ok.any():
        return
    sel = np.flatnonzero(ok)
    a, b, dist = a[sel], b[sel], dist[sel]
    if t > 0 or subs[t].width > 64:
        own = _owner_mask(x[sel], subs, t)
        a, b, dist = a[own], b[own], dist[own]
    out.add(a, b, dist)


def _self_table(g: _Groups, subs: Sequence[_Substring], t: int, radius: int, chunk: int) -> PairArrays:
    """Verified pairs of distinct rows owned by substring table ``t`` (as original row indices)."""
    rows, ends = _buckets(subs[t].key(g), subs[t].width)
    out = _Collector()
    if len(rows):
        orig = g.orig(rows)
        col = g.h[orig, _filter_word(subs[t])]  # one word per row, in bucket order: streamed
        for p, q in _run_pairs(ends, chunk):
            _verify(col, col, p, q, orig, orig, g.h, g.h, radius, subs, t, out)
    return out.result()


def _cross_table(gn: _Groups, go: _Groups, subs: Sequence[_Substring], t: int, radius: int,
                 chunk: int) -> PairArrays:
    """Verified (new, old) pairs of distinct rows owned by table ``t`` (as original row indices)."""
    sub = subs[t]
    order_o, sk_o = _sorted_keys(sub.key(go), sub.width)
    order_n, sk_n = _sorted_keys(sub.key(gn), sub.width)
    lo = np.searchsorted(sk_o, sk_n, side="left")
    count = np.searchsorted(sk_o, sk_n, side="right") - lo
    del sk_o, sk_n
    out = _Collector()
    if count.any():
        w = _filter_word(sub)
        orig_n, orig_o = gn.orig(order_n), go.orig(order_o)
        col_n, col_o = gn.h[orig_n, w], go.h[orig_o, w]
        for k, q in _span_pairs(lo, count, chunk):
            _verify(col_n, col_o, k, q, orig_n, orig_o, gn.h, go.h, radius, subs, t, out)
    return out.result()


def _brute_self(h: np.ndarray, radius: int, chunk: int) -> PairArrays:
    """All pairs of rows of ``h`` within ``radius``, by blocks of about ``chunk`` comparisons."""
    n = len(h)
    out = _Collector()
    block = max(1, chunk // n)
    for s in range(0, n - 1, block):
        e = min(n - 1, s + block)
        x = h[s:e, None, :] ^ h[None, s + 1 :, :]  # (rows of the block, later rows, words)
        x = x.reshape(-1, WORDS)
        d = _popcount_rows(x)
        flat = np.flatnonzero(d <= radius)
        i = flat // (n - s - 1) + s
        j = flat % (n - s - 1) + s + 1
        keep = j > i
        out.add(i[keep], j[keep], d[flat[keep]])
    return out.result()


def _brute_cross(hn: np.ndarray, ho: np.ndarray, radius: int, chunk: int) -> PairArrays:
    """All (new, old) pairs within ``radius``, by blocks of about ``chunk`` comparisons."""
    m = len(ho)
    out = _Collector()
    block = max(1, chunk // m)
    for s in range(0, len(hn), block):
        e = min(len(hn), s + block)
        x = (hn[s:e, None, :] ^ ho[None, :, :]).reshape(-1, WORDS)
        d = _popcount_rows(x)
        flat = np.flatnonzero(d <= radius)
        out.add(flat // m + s, flat % m, d[flat])
    return out.result()


def _prefer_brute(radius: int) -> bool:
    """True when substrings would be so short that most pairs become candidates anyway.

    With ``m`` substrings of ``256 / m`` bits, a random pair is a candidate in about
    ``m * 2**(-256 / m)`` tables; once that passes 1/2 the tables cost more than comparing
    every pair (around radius 40).
    """
    m = radius + 1
    return m > BITS or m * math.pow(2.0, -BITS / m) >= 0.5


def _map_tables(fn: Callable[[int], PairArrays], m: int, workers: int) -> list[PairArrays]:
    if workers <= 1 or m == 1:
        return [fn(t) for t in range(m)]
    with ThreadPoolExecutor(max_workers=min(workers, m)) as pool:
        return list(pool.map(fn, range(m)))


def _concat(parts: Sequence[PairArrays]) -> PairArrays:
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return _EMPTY_I, _EMPTY_I, _EMPTY_D
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]))


def _resolve_method(method: Method, radius: int) -> Literal["index", "brute"]:
    if method == "auto":
        return "brute" if _prefer_brute(radius) else "index"
    if method not in ("index", "brute"):
        raise ValueError(f"method must be 'auto', 'index' or 'brute', got {method!r}")
    return method


# --------------------------------------------------------------------------------------------
# expansion back to the original rows


_DIST_BITS = 9  # distances 0..256 fit in 9 bits


def _expanded(u: np.ndarray, v: np.ndarray, d: np.ndarray, gu: _Groups, gv: _Groups,
              chunk: int) -> tuple[int, Iterator[PairArrays]]:
    """Pairs of distinct rows -> pairs of original rows (every copy of ``u`` with every copy of ``v``).

    Returns:
        ``(count, chunks)``: the number of original pairs and an iterator over them in slices
        of at most ``chunk`` (a pair of large copy groups is split across slices too).
    """
    cu, su = gu.copies(u)
    cv, sv = gv.copies(v)
    reps = cu * cv
    if not len(reps) or int(reps.max()) == 1:
        return len(u), iter([(gu.orig(u), gv.orig(v), d)])
    ends = np.cumsum(reps)
    total = int(ends[-1])

    def chunks() -> Iterator[PairArrays]:
        for s in range(0, total, chunk):
            pos = np.arange(s, min(total, s + chunk), dtype=np.int64)
            pid = np.searchsorted(ends, pos, side="right")
            k = pos - (ends[pid] - reps[pid])
            a = gu.member(u[pid], su[pid], k // cv[pid])
            b = gv.member(v[pid], sv[pid], k % cv[pid])
            yield a, b, d[pid]

    return total, chunks()


def _copies(g: _Groups, chunk: int) -> tuple[int, Iterator[PairArrays]]:
    """All pairs among identical rows (distance 0), as ``(count, chunks)``."""
    sizes = np.diff(g.multi_start)
    total = int((sizes * (sizes - 1) // 2).sum())
    if not total:
        return 0, iter(())

    def chunks() -> Iterator[PairArrays]:
        ends = np.repeat(g.multi_start[1:], sizes)
        for p, q in _run_pairs(ends, chunk):
            yield g.multi_members[p], g.multi_members[q], np.zeros(len(p), dtype=np.int32)

    return total, chunks()


def _assemble(sources: Sequence[tuple[int, Iterator[PairArrays]]], n_b: int, n_pairs_max: int, *,
              symmetric: bool) -> PairArrays:
    """Concatenate pair slices into arrays sorted by ``(i, j)``.

    Each pair becomes one ``uint64`` word ``((i * n_b + j) << 9) | dist`` written into one
    preallocated array and sorted in place, so the peak is about 28 bytes per output pair.

    Args:
        sources: ``(count, slices)`` per source; slices yield ``(a, b, dist)``.
        n_b: Number of possible ``j`` values.
        n_pairs_max: Upper bound on ``i * n_b + j`` (decides whether the packing fits).
        symmetric: Put the smaller index of each pair first.
    """
    total = sum(count for count, _ in sources)
    if total == 0:
        for _, slices in sources:
            for _ in slices:
                pass
        return _EMPTY_I.copy(), _EMPTY_I.copy(), _EMPTY_D.copy()
    nb = np.uint64(max(n_b, 1))
    if max(n_pairs_max - 1, 1).bit_length() + _DIST_BITS > 64:  # beyond ~10^8 rows: unpacked path
        parts = [p for _, slices in sources for p in slices]
        a = np.concatenate([p[0] for p in parts])
        b = np.concatenate([p[1] for p in parts])
        d = np.concatenate([p[2] for p in parts]).astype(np.int32)
        if symmetric:
            a, b = np.minimum(a, b), np.maximum(a, b)
        order = np.lexsort((b, a))
        return a[order].astype(np.int64), b[order].astype(np.int64), d[order]
    key = np.empty(total, dtype=np.uint64)
    off = 0
    for _, slices in sources:
        for a, b, d in slices:
            if symmetric:
                a, b = np.minimum(a, b), np.maximum(a, b)
            k = key[off : off + len(a)]
            np.multiply(a.astype(np.uint64, copy=False), nb, out=k)
            k += b.astype(np.uint64, copy=False)
            k <<= np.uint64(_DIST_BITS)
            k |= d.astype(np.uint64)
            off += len(a)
    if off != total:  # pragma: no cover - internal invariant
        raise AssertionError(f"pair count mismatch: {off} != {total}")
    key.sort()
    dist = (key & np.uint64((1 << _DIST_BITS) - 1)).astype(np.int32)
    key >>= np.uint64(_DIST_BITS)
    i = key // nb
    key -= i * nb
    return i.view(np.int64), key.view(np.int64), dist


# --------------------------------------------------------------------------------------------
# public search


def near_pairs(hashes: np.ndarray, radius: int, *, chunk: int | None = None, workers: int | None = None,
               method: Method = "auto", executor: Executor | None = None, block_rows: int | None = None) -> PairArrays:
    """Every pair of rows within Hamming distance ``radius`` (exact, recall 1.0).

    Args:
        hashes: ``(N, 4)`` ``uint64`` hashes (see :func:`pack_hex`).
        radius: Largest Hamming distance reported (0 = exact copies only).
        chunk: Largest number of candidate pairs verified in one numpy batch (default
            1,048,576; about 40 bytes each per worker). Smaller bounds memory tighter.
        workers: Threads over substring tables (default: up to 2). numpy releases the GIL
            in the sorts and array passes that dominate.
        method: ``"index"`` (multi-index hashing), ``"brute"`` (blocked all-pairs), or
            ``"auto"``: the index unless ``radius`` is so large (about 40+) that nearly
            every pair would be a candidate.
        executor: run partitioned on this `datakit.parallel` executor (see
            :func:`near_pairs_partitioned`). By default the search is partitioned only when
            the compute settings in force name a Dask cluster and there are more than
            ``compute.block_rows`` hashes; otherwise it runs here, on ``workers`` threads.
        block_rows: Hashes per partition when partitioned (default ``compute.block_rows``).

    Returns:
        ``(i, j, dist)``: ``int64`` row indices with ``i < j`` and ``int32`` distances, one
        entry per pair, sorted by ``(i, j)``. The result depends only on the set of rows
        (a permutation of the rows permutes the indices and nothing else).

    Note:
        ``k`` identical rows contribute all ``k * (k - 1) / 2`` of their pairs. To group
        duplicate-heavy data without that, run on the distinct rows
        (``first, inv = unique_hashes(h); near_pairs(h[first], r)``) and join through ``inv``.
    """
    h = _as_hashes(hashes, "hashes")
    r = _check_radius(radius)
    ck = _check_chunk(chunk)
    nw = _check_workers(workers)
    how = _resolve_method(method, r)
    plan = _partition_plan(len(h), executor, block_rows)
    if plan is not None:
        return near_pairs_partitioned(h, r, block_rows=plan, executor=executor, chunk=ck, method=how)
    return _near_pairs_here(h, r, ck, nw, how)


def _near_pairs_here(h: np.ndarray, r: int, ck: int, nw: int, how: Literal["index", "brute"]) -> PairArrays:
    """:func:`near_pairs` in this process (arguments already checked)."""
    n = len(h)
    if n < 2:
        return _EMPTY_I.copy(), _EMPTY_I.copy(), _EMPTY_D.copy()
    groups = _collapse(h)
    sources = [_copies(groups, ck)]
    if r > 0 and len(groups) > 1:
        if how == "brute":
            u, v, d = _brute_self(groups.distinct(), r, ck)
        else:
            subs = _substrings(r + 1)
            u, v, d = _concat(_map_tables(lambda t: _self_table(groups, subs, t, r, ck), len(subs), nw))
            u, v = groups.ids_of(u), groups.ids_of(v)  # original first occurrences -> distinct ids
        sources.append(_expanded(u, v, d, groups, groups, ck))
    return _assemble(sources, n, n * n, symmetric=True)


def cross_pairs(new: np.ndarray, old: np.ndarray, radius: int, *, chunk: int | None = None,
                workers: int | None = None, method: Method = "auto", executor: Executor | None = None,
                block_rows: int | None = None) -> PairArrays:
    """Every (new, old) pair of rows within Hamming distance ``radius`` (exact).

    Used by ``dedup --against``: a new batch against the hashes of an existing dataset. Rows
    are not compared within ``new`` or within ``old``.

    Args:
        new: ``(N, 4)`` ``uint64`` hashes of the new batch.
        old: ``(M, 4)`` ``uint64`` hashes of the existing dataset.
        radius: Largest Hamming distance reported.
        chunk: As in :func:`near_pairs`.
        workers: As in :func:`near_pairs`.
        method: As in :func:`near_pairs`.
        executor: As in :func:`near_pairs` (partitioned when the larger side has more than
            ``block_rows`` hashes; see :func:`cross_pairs_partitioned`).
        block_rows: As in :func:`near_pairs`.

    Returns:
        ``(i_new, j_old, dist)``: ``int64`` indices into ``new`` and ``old`` and ``int32``
        distances, sorted by ``(i_new, j_old)``.
    """
    hn = _as_hashes(new, "new")
    ho = _as_hashes(old, "old")
    r = _check_radius(radius)
    ck = _check_chunk(chunk)
    nw = _check_workers(workers)
    how = _resolve_method(method, r)
    plan = _partition_plan(max(len(hn), len(ho)), executor, block_rows)
    if plan is not None and len(hn) and len(ho):
        return cross_pairs_partitioned(hn, ho, r, block_rows=plan, executor=executor, chunk=ck, method=how)
    return _cross_pairs_here(hn, ho, r, ck, nw, how)


def _cross_pairs_here(hn: np.ndarray, ho: np.ndarray, r: int, ck: int, nw: int,
                      how: Literal["index", "brute"]) -> PairArrays:
    """:func:`cross_pairs` in this process (arguments already checked)."""
    if not len(hn) or not len(ho):
        return _EMPTY_I.copy(), _EMPTY_I.copy(), _EMPTY_D.copy()
    gn = _collapse(hn)
    go = _collapse(ho)
    if how == "brute":
        u, v, d = _brute_cross(gn.distinct(), go.distinct(), r, ck)
    else:
        subs = _substrings(r + 1)
        u, v, d = _concat(_map_tables(lambda t: _cross_table(gn, go, subs, t, r, ck), len(subs), nw))
        u, v = gn.ids_of(u), go.ids_of(v)
    return _assemble([_expanded(u, v, d, gn, go, ck)], len(ho), len(hn) * len(ho), symmetric=False)


# --------------------------------------------------------------------------------------------
# partitioned search (a cluster): blocks of rows, one task per pair of blocks


def _partition_plan(n: int, executor: Executor | None, block_rows: int | None) -> int | None:
    """Rows per block when the search should be partitioned, else None (search here)."""
    if block_rows is not None and int(block_rows) < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    if executor is not None:
        return int(block_rows) if block_rows else _compute().block_rows
    compute = _compute()
    if not compute.distributed:
        return None
    rows = int(block_rows) if block_rows else compute.block_rows
    return rows if n > rows else None


def _compute() -> ComputeParams:
    from datakit.parallel import current

    return current()


def _blocks(n: int, rows: int) -> list[tuple[int, int]]:
    return [(s, min(n, s + rows)) for s in range(0, n, rows)]


def _pairs_task(task: tuple[str, np.ndarray, np.ndarray | None], radius: int, chunk: int,
                method: Literal["index", "brute"]) -> PairArrays:
    """One partition task: every pair within one block, or every pair across two blocks (block
    indices, one thread: a cluster runs one task per core)."""
    kind, a, b = task
    if kind == "self":
        return _near_pairs_here(a, radius, chunk, 1, method)
    assert b is not None
    return _cross_pairs_here(a, b, radius, chunk, 1, method)


def _run_partitioned(tasks: list[tuple[str, Any, Any]], offsets: list[tuple[int, int]], radius: int, chunk: int,
                     method: Literal["index", "brute"], executor: Executor | None, n_b: int,
                     n_pairs_max: int) -> PairArrays:
    from datakit import parallel

    ex = executor if executor is not None else parallel.executor()
    try:
        sources: list[tuple[int, Iterator[PairArrays]]] = []
        for (oa, ob), (i, j, d) in zip(offsets, ex.imap(_pairs_task, tasks, radius, chunk, method), strict=True):
            if len(i):
                sources.append((len(i), iter([(i + oa, j + ob, d)])))
    finally:
        if executor is None:
            ex.close()
    # blocks are contiguous row ranges and a block pair (p, q) has p <= q, so every pair already
    # has i < j (self) or is a (new, old) pair: no swap, one sort by (i, j) as the plain search
    return _assemble(sources, n_b, n_pairs_max, symmetric=False)


def near_pairs_partitioned(hashes: np.ndarray, radius: int, *, block_rows: int, executor: Executor | None = None,
                           chunk: int | None = None, method: Method = "auto") -> PairArrays:
    """:func:`near_pairs`, cut into tasks that each hold at most two blocks of rows.

    The rows are cut into ``B = ceil(N / block_rows)`` contiguous blocks; task ``(p, p)`` finds
    the pairs inside block ``p`` (:func:`near_pairs`) and task ``(p, q)``, ``p < q``, the pairs
    across blocks ``p`` and ``q`` (:func:`cross_pairs`): ``B (B + 1) / 2`` tasks that together
    see every pair of rows exactly once, so the merged, sorted result is the same arrays as
    :func:`near_pairs` (exact copies across blocks included). Each task builds its own substring
    tables, so a worker's memory is bounded by two blocks (32 bytes a hash, ~24 bytes a row per
    table being built) plus ``chunk`` candidates, whatever ``N``; each block is sent to the
    cluster once (`Executor.share`).

    Args:
        hashes: ``(N, 4)`` ``uint64`` hashes.
        radius: As in :func:`near_pairs`.
        block_rows: Rows per block.
        executor: A `datakit.parallel` executor (default: the compute settings in force).
        chunk: As in :func:`near_pairs` (per task).
        method: As in :func:`near_pairs`.
    """
    h = _as_hashes(hashes, "hashes")
    r = _check_radius(radius)
    ck = _check_chunk(chunk)
    how = _resolve_method(method, r)
    if int(block_rows) < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    n = len(h)
    if n < 2:
        return _EMPTY_I.copy(), _EMPTY_I.copy(), _EMPTY_D.copy()
    spans = _blocks(n, int(block_rows))
    from datakit import parallel

    ex = executor if executor is not None else parallel.executor()
    try:
        shared = [ex.share(np.ascontiguousarray(h[s:e])) for s, e in spans]
        tasks: list[tuple[str, Any, Any]] = []
        offsets: list[tuple[int, int]] = []
        for p, (sp, _ep) in enumerate(spans):
            for q in range(p, len(spans)):
                tasks.append(("self", shared[p], None) if p == q else ("cross", shared[p], shared[q]))
                offsets.append((sp, spans[q][0]))
        return _run_partitioned(tasks, offsets, r, ck, how, ex, n, n * n)
    finally:
        if executor is None:
            ex.close()


def cross_pairs_partitioned(new: np.ndarray, old: np.ndarray, radius: int, *, block_rows: int,
                            executor: Executor | None = None, chunk: int | None = None,
                            method: Method = "auto") -> PairArrays:
    """:func:`cross_pairs`, one task per (block of ``new``, block of ``old``): the same arrays,
    with a worker's memory bounded by two blocks (see :func:`near_pairs_partitioned`)."""
    hn = _as_hashes(new, "new")
    ho = _as_hashes(old, "old")
    r = _check_radius(radius)
    ck = _check_chunk(chunk)
    how = _resolve_method(method, r)
    if int(block_rows) < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    if not len(hn) or not len(ho):
        return _EMPTY_I.copy(), _EMPTY_I.copy(), _EMPTY_D.copy()
    spans_n, spans_o = _blocks(len(hn), int(block_rows)), _blocks(len(ho), int(block_rows))
    from datakit import parallel

    ex = executor if executor is not None else parallel.executor()
    try:
        shared_n = [ex.share(np.ascontiguousarray(hn[s:e])) for s, e in spans_n]
        shared_o = [ex.share(np.ascontiguousarray(ho[s:e])) for s, e in spans_o]
        tasks = [("cross", shared_n[p], shared_o[q]) for p in range(len(spans_n)) for q in range(len(spans_o))]
        offsets = [(spans_n[p][0], spans_o[q][0]) for p in range(len(spans_n)) for q in range(len(spans_o))]
        return _run_partitioned(tasks, offsets, r, ck, how, ex, len(ho), len(hn) * len(ho))
    finally:
        if executor is None:
            ex.close()
