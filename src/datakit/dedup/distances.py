"""Distances between dedup hashes (`datakit.dedup.hashing.HashResult`, 64-hex dhashes): full
against full, a full hash against the other image's crop hashes, and the pair rule with its
two radii. Pure and light: no image is decoded here."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datakit.dedup.hashing import HashResult

HASH_BITS = 256  # a 16 x 16 dhash (`hashing.HASH_SIZE` squared)

DEFAULT_RADIUS = 28
"""Hamming radius (of 256 bits) for full-image near-duplicates. bench/dedup_quality.py: the
smallest radius with recall >= 0.95 on resized, re-encoded (q 30-90), brightened (+-20 %),
captioned and PNG<->JPEG copies; 1 false pair in 8.8 million unrelated pairs there."""
DEFAULT_CROP_RADIUS = 24
"""Hamming radius between one image's full hash and another image's crop hashes: crop recall
>= 0.8 on 2-8 % crops; 4 false pairs in 8.8 million there (28 gives 62: too many)."""


def hamming(a: str, b: str) -> int:
    """Bits that differ between two hex hashes of equal length."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def hamming_known(a: object, b: object) -> int:
    """`hamming`, or -1 when either hash is missing (an unreadable picture)."""
    return hamming(a, b) if isinstance(a, str) and isinstance(b, str) else -1


def full_distance(a: HashResult, b: HashResult) -> int:
    """Hamming distance between the two full-image hashes."""
    return hamming(a.dhash, b.dhash)


def crop_distance(a: HashResult, b: HashResult) -> int:
    """Smallest distance between one image's full hash and the other's crop hashes (either way);
    `HASH_BITS + 1` when neither carries crop hashes."""
    fa, fb = int(a.dhash, 16), int(b.dhash, 16)
    best = HASH_BITS + 1
    for c in b.crops:
        best = min(best, (fa ^ int(c, 16)).bit_count())
    for c in a.crops:
        best = min(best, (fb ^ int(c, 16)).bit_count())
    return best


def pair_distance(a: HashResult, b: HashResult, *, radius: int = DEFAULT_RADIUS,
                  crop_radius: int = DEFAULT_CROP_RADIUS) -> tuple[int, str]:
    """The distance that decides whether two images are near-duplicates, and which signal gave it.

    Returns ``(d, "full")`` when the full hashes are within `radius` (or when the crop signal
    does not match either: then ``d`` is the full distance and exceeds `radius`), and
    ``(d, "crop")`` when only a full-vs-crop distance is within `crop_radius`. So the pair
    matches iff ``d <= (radius if via == "full" else crop_radius)`` (see `is_near`).
    """
    full = full_distance(a, b)
    if full <= radius:
        return full, "full"
    crop = crop_distance(a, b)
    if crop <= crop_radius:
        return crop, "crop"
    return full, "full"


def is_near(a: HashResult, b: HashResult, *, radius: int = DEFAULT_RADIUS,
            crop_radius: int = DEFAULT_CROP_RADIUS) -> bool:
    """Whether `pair_distance` calls the two images near-duplicates."""
    d, via = pair_distance(a, b, radius=radius, crop_radius=crop_radius)
    return d <= (radius if via == "full" else crop_radius)


__all__ = ["DEFAULT_CROP_RADIUS", "DEFAULT_RADIUS", "crop_distance", "full_distance", "hamming", "hamming_known",
           "is_near", "pair_distance"]
