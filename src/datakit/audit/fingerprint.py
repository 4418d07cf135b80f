"""Per-file fingerprints of the audit: the sha256 of the bytes, dedup's own dhash (so the audit
sees the candidates dedup sees) and deepchecks' 8x8 average hash, read again from the files
(the audit trusts nothing an earlier stage wrote)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import pandas as pd

from datakit.audit.report import AHASH_SIZE
from datakit.images import ImageLimits, ImageRejected, decode

_LIMITS = ImageLimits()


@dataclass
class Print:
    sha256: str
    dhash: str | None
    ahash: str | None  # 16 hex digits
    low_information: bool = False


def fingerprint(path: str, with_pixels: bool = True) -> Print | tuple[str, str]:
    """sha256, dhash (dedup's fast path, so the audit sees the candidates dedup sees) and
    average hash of one file, or (reason, detail)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return ("missing_file", path)
    except OSError as exc:
        return ("decode_error", f"cannot read: {type(exc).__name__}")
    sha = hashlib.sha256(data).hexdigest()
    if not with_pixels:
        return Print(sha, None, None)
    import imagehash

    from datakit.dedup.hashing import hash_bytes

    try:
        res = hash_bytes(data, limits=_LIMITS)  # dedup's own hash: the same candidates dedup sees
        im = decode(data, _LIMITS)
    except ImageRejected as exc:
        return (exc.reason, exc.detail)
    ah = str(imagehash.average_hash(im, hash_size=AHASH_SIZE))
    return Print(sha, res.dhash, ah, bool(res.low_information))


def fingerprint_chunk(paths: list[str], with_pixels: bool) -> list[Print | tuple[str, str]]:
    return [fingerprint(p, with_pixels) for p in paths]


def fingerprints(paths: Sequence[str], workers: int, with_pixels: bool = True) -> list[Print | tuple[str, str]]:
    paths = list(paths)
    if workers <= 1 or len(paths) < 64:
        return fingerprint_chunk(paths, with_pixels)
    from datakit.dedup.hashing import init_worker
    from datakit.parallel import pool_context

    size = max(16, math.ceil(len(paths) / (4 * workers)))
    chunks = [paths[i:i + size] for i in range(0, len(paths), size)]
    out: list[Print | tuple[str, str]] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=pool_context(["datakit.dedup.hashing"]), initializer=init_worker) as pool:
        for part in pool.map(fingerprint_chunk, chunks, [with_pixels] * len(chunks)):
            out.extend(part)
    return out


def fill(t: pd.DataFrame, prints: Sequence[Print | tuple[str, str]]) -> list[dict[str, str]]:
    """Write fingerprints into `t` (in row order); return the unreadable rows."""
    bad: list[dict[str, str]] = []
    sha: list[str | None] = []
    dh: list[str | None] = []
    ah: list[str | None] = []
    low: list[bool] = []
    for k, p in enumerate(prints):
        if isinstance(p, tuple):
            bad.append({"image_id": str(t["image_id"].iat[k]), "path": str(t["path"].iat[k]),
                        "split": str(t["split"].iat[k]), "reason": p[0], "detail": p[1]})
            sha.append(None), dh.append(None), ah.append(None), low.append(False)
        else:
            sha.append(p.sha256), dh.append(p.dhash), ah.append(p.ahash), low.append(p.low_information)
    t["sha256"], t["dhash"], t["ahash"], t["low_information"] = sha, dh, ah, low
    return bad
