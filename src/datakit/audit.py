"""`datakit audit`: an independent re-check of a split (issue 4, reliability.md SPL-04).

The audit trusts nothing the split stage wrote: by default it reads every file again and
computes, per image,

* the sha256 of the bytes (exact copies),
* the 256-bit dhash of the normalised picture as dedup computes it
  (`datakit.dedup.hashing.hash_bytes`), for near-copy candidates, and
* an 8x8 ``imagehash.average_hash`` as deepchecks' ``SimilarImageLeakage`` computes it: two
  pictures are similar when fewer than ``ceil(0.1 * 64 / 2) = 4`` bits differ. This second,
  unrelated hash is the oracle of SPL-04; its pairs are reported apart and do not change the
  verdict.

Near copies are found as dedup finds them (`datakit.dedup`): candidate pairs from the dhash
(within ``radius`` bits) and, when vectors are given (an embed folder, or computed by the CLI),
from each image's nearest neighbours (what finds re-crops); a candidate counts when one
picture overlays the other (`datakit.dedup.verify`, the overlay check), so look-alike shots
of one shelf are not called leaks and re-cropped copies are.

Then it reports

* leaks: pairs of images in two different splits that are byte-identical (``kind="exact"``)
  or near copies as above (``kind="near"``, bytes differ; ``via`` names the signals that
  nominated the pair, ``match`` its overlay score);
* label conflicts: pairs (in any splits, the same one included) of identical or near images
  that carry different labels;
* class counts per split, the deviation ``n_cs / n_c - n_s / n`` of each class's share in
  each split from that split's overall share, and the classes missing from each split;
* files that could not be read or decoded (listed, never fatal).

`AuditReport.ok` is ``leaks <= max_leaks``; the CLI writes `to_json()` to
``reports/audit.json`` and exits non-zero when not ok, so the audit can gate a pipeline.

Pictures flagged ``low_information`` by the hash (near-uniform, tiny) collide across
unrelated content, so they take part in the exact (sha256) check only, as in dedup (IMG-11).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from datakit.dedup.hashing import hamming_known
from datakit.dedup.index import cross_pairs, near_pairs, pack_hex
from datakit.images import ImageLimits, ImageRejected, decode

__all__ = [
    "AHASH_SIZE",
    "AHASH_THRESHOLD",
    "DEFAULT_RADIUS",
    "MAX_LISTED",
    "AuditReport",
    "audit_folder",
    "audit_manifest",
    "folder_table",
    "audit_records",
    "ahash_bits",
]

DEFAULT_RADIUS = 28
"""dhash radius (of 256 bits) for near-copy candidates: dedup's widest (without vectors), so
every pair dedup could group is a candidate here too; each candidate must still pass the overlay
check, so the radius does not trade precision away."""
AHASH_SIZE = 8
AHASH_THRESHOLD = 0.1
"""deepchecks' ``similarity_threshold``: similar when fewer than ceil(t * size**2 / 2) bits differ."""
MAX_LISTED = 1000
"""Pairs listed per kind in the report (the counts are always complete)."""

_LIMITS = ImageLimits()
_SPLIT_ORDER = ("train", "training", "val", "valid", "validation", "dev", "test", "testing", "holdout")
_ZERO_PAD = "0" * 48  # a 64-bit average hash padded to the 256-bit format pack_hex reads

Kind = Literal["exact", "near", "ahash"]


def ahash_bits(threshold: float = AHASH_THRESHOLD, size: int = AHASH_SIZE) -> int:
    """deepchecks' ``min_pixel_diff``: pairs strictly below this many differing bits are similar."""
    return int(math.ceil(threshold * size * size / 2))


# --------------------------------------------------------------------------------------------
# per-file fingerprints


@dataclass
class _Print:
    sha256: str
    dhash: str | None
    ahash: str | None  # 16 hex digits
    low_information: bool = False


def _fingerprint(path: str, with_pixels: bool = True) -> _Print | tuple[str, str]:
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
        return _Print(sha, None, None)
    import imagehash

    from datakit.dedup.hashing import hash_bytes

    try:
        res = hash_bytes(data, limits=_LIMITS)  # dedup's own hash: the same candidates dedup sees
        im = decode(data, _LIMITS)
    except ImageRejected as exc:
        return (exc.reason, exc.detail)
    ah = str(imagehash.average_hash(im, hash_size=AHASH_SIZE))
    return _Print(sha, res.dhash, ah, bool(res.low_information))


def _fingerprint_chunk(paths: list[str], with_pixels: bool) -> list[_Print | tuple[str, str]]:
    return [_fingerprint(p, with_pixels) for p in paths]


def _fingerprints(paths: Sequence[str], workers: int, with_pixels: bool = True) -> list[_Print | tuple[str, str]]:
    paths = list(paths)
    if workers <= 1 or len(paths) < 64:
        return _fingerprint_chunk(paths, with_pixels)
    from datakit.dedup.hashing import _init_worker
    from datakit.parallel import pool_context

    size = max(16, math.ceil(len(paths) / (4 * workers)))
    chunks = [paths[i:i + size] for i in range(0, len(paths), size)]
    out: list[_Print | tuple[str, str]] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=pool_context(["datakit.dedup.hashing"]), initializer=_init_worker) as pool:
        for part in pool.map(_fingerprint_chunk, chunks, [with_pixels] * len(chunks)):
            out.extend(part)
    return out


# --------------------------------------------------------------------------------------------
# the report


@dataclass
class AuditReport:
    """What the audit found. `leaks` counts exact + near cross-split pairs."""

    n_images: int
    splits: list[str]
    classes: list[str]
    radius: int
    max_leaks: int
    hashes: str
    exact_leaks: int = 0
    near_leaks: int = 0
    ahash_leaks: int | None = None  # None: not computed (hashes="manifest")
    ahash_only: int | None = None  # oracle pairs that neither exact nor dhash found
    label_conflicts: int = 0
    leak_pairs: list[dict[str, Any]] = field(default_factory=list)
    ahash_pairs: list[dict[str, Any]] = field(default_factory=list)
    conflict_pairs: list[dict[str, Any]] = field(default_factory=list)
    leaked_images: dict[str, int] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # class -> split -> n
    split_sizes: dict[str, int] = field(default_factory=dict)
    deviation: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> class -> dev
    max_deviation: dict[str, float] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)  # split -> classes absent
    unreadable: list[dict[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    low_information: int = 0
    signals: list[str] = field(default_factory=lambda: ["dhash"])
    verified: bool = False
    match_threshold: float | None = None
    candidates: int = 0
    rejected_by_verify: int = 0

    @property
    def leaks(self) -> int:
        return self.exact_leaks + self.near_leaks

    @property
    def ok(self) -> bool:
        return self.leaks <= self.max_leaks

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "leaks": self.leaks,
            "max_leaks": self.max_leaks,
            "n_images": self.n_images,
            "splits": self.splits,
            "classes": self.classes,
            "settings": {
                "hashes": self.hashes,
                "dhash_radius": self.radius,
                "signals": self.signals,
                "verified": self.verified,
                "match_threshold": self.match_threshold,
                "ahash_size": AHASH_SIZE,
                "ahash_below_bits": ahash_bits(),
            },
            "exact_leaks": self.exact_leaks,
            "near_leaks": self.near_leaks,
            "ahash_leaks": self.ahash_leaks,
            "ahash_only": self.ahash_only,
            "label_conflicts": self.label_conflicts,
            "candidates": self.candidates,
            "rejected_by_verify": self.rejected_by_verify,
            "leaked_images": self.leaked_images,
            "leak_pairs": self.leak_pairs,
            "leak_pairs_listed": len(self.leak_pairs),
            "ahash_pairs": self.ahash_pairs,
            "conflict_pairs": self.conflict_pairs,
            "counts": self.counts,
            "split_sizes": self.split_sizes,
            "deviation": self.deviation,
            "max_deviation": self.max_deviation,
            "missing_classes": self.missing,
            "unreadable": self.unreadable,
            "skipped": self.skipped,
            "low_information": self.low_information,
        }

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"audit: {self.n_images} images, splits {', '.join(self.splits)}; "
            f"{self.leaks} cross-split leaks ({self.exact_leaks} exact, {self.near_leaks} near: {'+'.join(self.signals)}"
            + (f", overlay >= {self.match_threshold}" if self.verified else "") + ")"
            f"; max allowed {self.max_leaks}: {'OK' if self.ok else 'FAIL'}",
        ]
        if self.ahash_leaks is not None:
            lines.append(f"  average_hash oracle: {self.ahash_leaks} pairs ({self.ahash_only} not found by sha256/dhash)")
        for p in self.leak_pairs[:10]:
            how = f"d={p['distance']:<3}" + (f" overlay={p['match']:.3f}" if p.get("match") is not None else "")
            lines.append(f"  {p['kind']:5} {how} {p['split_a']}:{p['path_a']}  <->  {p['split_b']}:{p['path_b']}")
        if len(self.leak_pairs) > 10:
            lines.append(f"  ... {self.leaks - 10} more in the report")
        if self.label_conflicts:
            lines.append(f"  label conflicts: {self.label_conflicts}")
        for s, cls in self.missing.items():
            if cls:
                lines.append(f"  split {s} lacks classes: {', '.join(cls)}")
        if self.unreadable:
            lines.append(f"  unreadable files: {len(self.unreadable)}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# the checks


def _order_splits(names: Sequence[str]) -> list[str]:
    rank = {s: i for i, s in enumerate(_SPLIT_ORDER)}
    return sorted(set(names), key=lambda s: (rank.get(s.lower(), len(rank)), s))


def _pair(t: pd.DataFrame, i: int, j: int, dist: int, kind: str) -> dict[str, Any]:
    return {
        "a": t.at[i, "image_id"], "b": t.at[j, "image_id"],
        "split_a": t.at[i, "split"], "split_b": t.at[j, "split"],
        "label_a": t.at[i, "label"], "label_b": t.at[j, "label"],
        "path_a": t.at[i, "path"], "path_b": t.at[j, "path"],
        "distance": int(dist), "kind": kind,
    }


def _cross_split(t: pd.DataFrame, col: str, codes: np.ndarray, radius: int, rows: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i, j, dist) over `rows` of `t` in different splits with `col` hashes within
    `radius`; `i` is in the earlier split (codes follow the split order)."""
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    n_splits = int(codes.max()) + 1 if len(codes) else 0
    sub = {s: rows[codes[rows] == s] for s in range(n_splits)}
    packed = {s: pack_hex(t[col].to_numpy()[r]) for s, r in sub.items() if len(r)}
    for sa in range(n_splits):
        for sb in range(sa + 1, n_splits):
            if sa not in packed or sb not in packed:
                continue
            i, j, d = cross_pairs(packed[sa], packed[sb], radius, workers=1)
            parts.append((sub[sa][i], sub[sb][j], d))
    if not parts:
        e = np.zeros(0, dtype=np.int64)
        return e, e, np.zeros(0, dtype=np.int32)
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]))


def _exact_pairs(t: pd.DataFrame) -> list[tuple[int, int]]:
    """Every pair of rows (i < j by row) with the same sha256."""
    out: list[tuple[int, int]] = []
    have = t[t["sha256"].notna()]
    for _, idx in have.groupby("sha256", sort=True).groups.items():
        rows = sorted(int(r) for r in idx)
        out.extend((a, b) for k, a in enumerate(rows) for b in rows[k + 1:])
    return out


def _sort_key(p: dict[str, Any], order: dict[str, int]) -> tuple[Any, ...]:
    return (order[p["split_a"]], order[p["split_b"]], p["distance"], str(p["a"]), str(p["b"]))


def _near_candidates(t: pd.DataFrame, low: np.ndarray, radius: int, embeddings: tuple[list[str], np.ndarray] | None,
                     neighbours: int, similarity: float) -> tuple[np.ndarray, ...]:
    """Candidate pairs (i < j, any splits): dhash within `radius`, plus each row's nearest
    neighbours by cosine when vectors are given. (i, j, via, dhash distance or -1, cosine or nan)."""
    n = len(t)
    pairs: dict[tuple[int, int], list[Any]] = {}
    have_d = np.flatnonzero(t["dhash"].notna().to_numpy() & ~low)
    if len(have_d) > 1:
        pi, pj, pd_ = near_pairs(pack_hex(t["dhash"].to_numpy()[have_d]), radius, workers=1)
        for a, b, dist in zip(have_d[pi].tolist(), have_d[pj].tolist(), pd_.tolist(), strict=True):
            pairs[(min(a, b), max(a, b))] = [{"dhash"}, int(dist), np.nan]
    if embeddings is not None and n > 1:
        from datakit.dedup.vectors import neighbour_pairs
        from datakit.embed import lookup

        ids, X = embeddings
        vecs, found = lookup(ids, X, t["image_id"].astype(str))
        rows = np.flatnonzero(found & ~low)
        ei, ej, es = neighbour_pairs(vecs[rows], neighbours, similarity)
        for a, b, cos in zip(rows[ei].tolist(), rows[ej].tolist(), es.tolist(), strict=True):
            entry = pairs.setdefault((min(a, b), max(a, b)), [set(), -1, np.nan])
            entry[0].add("embedding")
            entry[2] = float(cos)
    keys = sorted(pairs)
    i = np.array([k[0] for k in keys], dtype=np.int64)
    j = np.array([k[1] for k in keys], dtype=np.int64)
    via = np.array(["+".join(sorted(pairs[k][0])) for k in keys], dtype=object)
    dh = t["dhash"].to_numpy()
    d = np.array([pairs[k][1] if pairs[k][1] >= 0 else hamming_known(dh[k[0]], dh[k[1]]) for k in keys], dtype=np.int64)
    sim = np.array([pairs[k][2] for k in keys], dtype=np.float32)
    return i, j, via, d, sim


def audit_records(table: pd.DataFrame, *, radius: int = DEFAULT_RADIUS, max_leaks: int = 0,
                  hashes: str = "recompute", unreadable: Sequence[dict[str, str]] = (),
                  skipped: Sequence[str] = (), embeddings: tuple[list[str], np.ndarray] | None = None,
                  neighbours: int = 10, similarity: float = 0.75, files: Sequence[str] | None = None,
                  match_threshold: float = 0.97, workers: int = 1) -> AuditReport:
    """Run the checks on a prepared table.

    `table` has one row per image: ``image_id``, ``path`` (as shown), ``label``, ``split``,
    ``sha256`` (None: unknown), ``dhash`` (64 hex or None), ``ahash`` (16 hex or None),
    ``low_information`` (bool). `embeddings` (image_ids, vectors) add nearest-neighbour
    candidates; `files` (the readable file of each row) turn the overlay check on: a candidate
    pair counts only when one picture overlays the other at `match_threshold`.
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    t = table.reset_index(drop=True).copy()
    t["split"] = t["split"].astype(str)
    t["label"] = t["label"].astype(str)
    splits = _order_splits(t["split"].tolist())
    order = {s: k for k, s in enumerate(splits)}
    classes = sorted(set(t["label"].tolist()))
    codes = t["split"].map(order).to_numpy(dtype=np.int64)
    labels = t["label"].to_numpy()
    rep = AuditReport(n_images=len(t), splits=splits, classes=classes, radius=int(radius),
                      max_leaks=int(max_leaks), hashes=hashes, unreadable=list(unreadable),
                      skipped=list(skipped), signals=["dhash"] + (["embedding"] if embeddings is not None else []),
                      verified=files is not None, match_threshold=match_threshold if files is not None else None)
    low = t["low_information"].fillna(False).astype(bool).to_numpy()
    rep.low_information = int(low.sum())

    # exact: same bytes
    leak_pairs: list[dict[str, Any]] = []
    conflicts: list[dict[str, Any]] = []
    leaked: dict[str, set[Any]] = {s: set() for s in splits}
    exact_set: set[tuple[int, int]] = set()
    for a, b in _exact_pairs(t):
        exact_set.add((a, b))
        if codes[a] != codes[b]:
            i, j = (a, b) if codes[a] < codes[b] else (b, a)
            leak_pairs.append(_pair(t, i, j, 0, "exact"))
            leaked[t.at[j, "split"]].add(t.at[j, "image_id"])
        if labels[a] != labels[b]:
            conflicts.append(_pair(t, a, b, 0, "exact"))
    rep.exact_leaks = len(leak_pairs)

    # near: candidates from the dhash (and the vectors), kept when one picture overlays the other
    found: set[tuple[int, int]] = set(exact_set)
    i, j, via, d, sim = _near_candidates(t, low, radius, embeddings, neighbours, similarity)
    rep.candidates = int(len(i))
    match = np.full(len(i), np.nan, dtype=np.float32)
    if files is not None and len(i):
        from datakit.dedup.verify import score_pairs

        match = score_pairs(files, i, j, workers=workers)
        ok = match >= match_threshold
        rep.rejected_by_verify = int((~ok).sum())
        i, j, via, d, sim, match = i[ok], j[ok], via[ok], d[ok], sim[ok], match[ok]
    sha = t["sha256"].to_numpy()
    for a, b, v, dist, cos, m in zip(i.tolist(), j.tolist(), via, d.tolist(), sim.tolist(), match.tolist(), strict=True):
        if (a, b) in exact_set or (pd.notna(sha[a]) and sha[a] == sha[b]):
            continue  # already an exact pair
        found.add((a, b))
        extra = {"via": v, "similarity": None if np.isnan(cos) else round(cos, 4), "match": None if np.isnan(m) else round(m, 4)}
        if codes[a] != codes[b]:
            x, y = (a, b) if codes[a] < codes[b] else (b, a)
            leak_pairs.append({**_pair(t, x, y, dist, "near"), **extra})
            leaked[t.at[y, "split"]].add(t.at[y, "image_id"])
            rep.near_leaks += 1
        if labels[a] != labels[b]:  # label conflicts among near images, any splits (same split included)
            conflicts.append({**_pair(t, a, b, dist, "near"), **extra})

    # the deepchecks-style oracle
    if hashes != "manifest" and "ahash" in t.columns:
        have_a = np.flatnonzero(t["ahash"].notna().to_numpy() & ~low)
        padded = t["ahash"].where(t["ahash"].isna(), t["ahash"].astype(str) + _ZERO_PAD)
        tt = t.assign(_ahash256=padded)
        ahash_list: list[dict[str, Any]] = []
        only = 0
        if len(have_a):
            i, j, d = _cross_split(tt, "_ahash256", codes, ahash_bits() - 1, have_a)
            for a, b, dist in zip(i.tolist(), j.tolist(), d.tolist(), strict=True):
                ahash_list.append(_pair(t, a, b, dist, "ahash"))
                if (min(a, b), max(a, b)) not in found:
                    only += 1
        rep.ahash_leaks = len(ahash_list)
        rep.ahash_only = only
        ahash_list.sort(key=lambda p: _sort_key(p, order))
        rep.ahash_pairs = ahash_list[:MAX_LISTED]

    kind_rank = {"exact": 0, "near": 1}
    leak_pairs.sort(key=lambda p: (kind_rank[p["kind"]],) + _sort_key(p, order))
    rep.leak_pairs = leak_pairs[:MAX_LISTED]
    rep.label_conflicts = len(conflicts)
    conflicts.sort(key=lambda p: (kind_rank[p["kind"]], p["distance"], str(p["a"]), str(p["b"])))
    rep.conflict_pairs = conflicts[:MAX_LISTED]
    rep.leaked_images = {s: len(v) for s, v in leaked.items()}

    # class balance
    n = len(t)
    ct = pd.crosstab(t["label"], t["split"]) if n else pd.DataFrame()
    rep.counts = {c: {s: int(ct.at[c, s]) if (c in ct.index and s in ct.columns) else 0 for s in splits}
                  for c in classes}
    rep.split_sizes = {s: int((codes == order[s]).sum()) for s in splits}
    for s in splits:
        share = rep.split_sizes[s] / n if n else 0.0
        dev: dict[str, float] = {}
        for c in classes:
            n_c = sum(rep.counts[c].values())
            dev[c] = round(rep.counts[c][s] / n_c - share, 6) if n_c else 0.0
        rep.deviation[s] = dev
        rep.max_deviation[s] = max((abs(v) for v in dev.values()), default=0.0)
        rep.missing[s] = [c for c in classes if rep.counts[c][s] == 0]
    return rep


# --------------------------------------------------------------------------------------------
# entry points


def _fill(t: pd.DataFrame, prints: Sequence[_Print | tuple[str, str]]) -> list[dict[str, str]]:
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


def audit_manifest(df: pd.DataFrame, root: Path, *, radius: int = DEFAULT_RADIUS, max_leaks: int = 0,
                   hashes: str = "recompute", workers: int = 1, embeddings: tuple[list[str], np.ndarray] | None = None,
                   neighbours: int = 10, similarity: float = 0.75, verify: bool = True,
                   match_threshold: float = 0.97) -> AuditReport:
    """Audit a split manifest (`image_id`, `path`, `label`, `split`; rows with ``keep == False``
    are left out).

    Args:
        df: the manifest.
        root: the project root the `path` column is relative to.
        radius: dhash radius for near leaks.
        max_leaks: cross-split pairs (exact + near) tolerated before `ok` is False.
        hashes: ``"recompute"`` (default): read every file again (sha256, dhash, average hash);
            ``"manifest"``: trust the `dhash` column and take `image_id` as the sha256, read no
            file (the average-hash oracle is then skipped).
        workers: processes for reading files (1 = in this process).
        embeddings: (image_ids, vectors): each image's `neighbours` nearest at cosine >=
            `similarity` are candidates too (as in dedup).
        verify: keep a candidate only when one picture overlays the other (needs the files:
            not with ``hashes="manifest"``).

    Rows with no split (null) are left out and counted in `skipped`.
    """
    if hashes not in ("recompute", "manifest"):
        raise ValueError(f"hashes must be 'recompute' or 'manifest', got {hashes!r}")
    missing = [c for c in ("image_id", "path", "label", "split") if c not in df.columns]
    if hashes == "manifest" and "dhash" not in df.columns:
        missing.append("dhash")
    if missing:
        raise ValueError(f"the manifest lacks column(s) {', '.join(missing)}")
    if hashes == "recompute":
        from datakit.errors import ManifestError
        from datakit.manifest import escaping_message, escaping_rows

        outside = escaping_rows(Path(root), df["path"], df.index)  # numbered as the manifest's rows
        if outside:
            raise ManifestError(escaping_message(outside, Path(root)))
    t = df
    if "keep" in t.columns:
        t = t[t["keep"].fillna(True).astype(bool)]
    no_split = t["split"].isna()
    skipped = [str(x) for x in t.loc[no_split, "image_id"]]
    t = t.loc[~no_split, ["image_id", "path", "label", "split"] + [c for c in ("dhash", "low_information")
                                                                 if c in t.columns]].reset_index(drop=True)
    t["path"] = t["path"].astype(str)
    if hashes == "manifest":
        t["sha256"] = t["image_id"].astype(str)
        t["dhash"] = t["dhash"].where(t["dhash"].notna(), None)
        t["ahash"] = None
        if "low_information" not in t.columns:
            t["low_information"] = False
        bad: list[dict[str, str]] = []
    else:
        from datakit.manifest import resolve

        t = t.drop(columns=[c for c in ("dhash", "low_information") if c in t.columns])
        files = [str(resolve(Path(root), p)) for p in t["path"]]
        bad = _fill(t, _fingerprints(files, workers))
    return audit_records(t, radius=radius, max_leaks=max_leaks, hashes=hashes, unreadable=bad, skipped=skipped,
                         embeddings=embeddings, neighbours=neighbours, similarity=similarity,
                         files=files if verify and hashes == "recompute" else None, match_threshold=match_threshold,
                         workers=workers)


def _folder_files(folder: Path) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(split, label, relative path) for `folder/<split>/<label>/**/<file>`; stray files."""
    rows: list[tuple[str, str, str]] = []
    stray: list[str] = []
    for split_dir in sorted(folder.iterdir()):
        if split_dir.name.startswith("."):
            continue
        if not split_dir.is_dir():
            stray.append(split_dir.name)
            continue
        for label_dir in sorted(split_dir.iterdir()):
            if label_dir.name.startswith("."):
                continue
            rel_label = label_dir.relative_to(folder).as_posix()
            if not label_dir.is_dir():
                stray.append(rel_label)
                continue
            for f in sorted(label_dir.rglob("*")):
                rel = f.relative_to(folder)
                if any(part.startswith(".") for part in rel.parts) or not f.is_file():
                    continue
                rows.append((split_dir.name, label_dir.name, rel.as_posix()))
    return rows, stray


def audit_folder(folder: Path, *, radius: int = DEFAULT_RADIUS, max_leaks: int = 0, workers: int = 1,
                 embeddings: tuple[list[str], np.ndarray] | None = None, neighbours: int = 10,
                 similarity: float = 0.75, verify: bool = True, match_threshold: float = 0.97) -> AuditReport:
    """Audit a layout a user already has: ``folder/<split>/<label>/<image files>``.

    Every folder under `folder` is a split, every folder under a split a class; files below a
    class folder (any depth) are its images, hidden files and folders excepted. The image id is
    the sha256 of the bytes (so `embeddings` are keyed by it: `folder_table` lists the files
    to embed). Files that cannot be read or decoded are listed in `unreadable` and left out of
    every count; files not inside a class folder are listed in `skipped`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    rows, stray = _folder_files(folder)
    t = pd.DataFrame(rows, columns=["split", "label", "path"])
    t["image_id"] = None
    prints = _fingerprints([str(folder / p) for p in t["path"]], workers)
    bad = _fill(t, prints)
    t["image_id"] = t["sha256"]
    good = t["sha256"].notna() & t["dhash"].notna()
    for b in bad:
        b.pop("image_id", None)
    kept = t[good].reset_index(drop=True)
    return audit_records(kept, radius=radius, max_leaks=max_leaks, hashes="recompute",
                         unreadable=bad, skipped=stray, embeddings=embeddings, neighbours=neighbours,
                         similarity=similarity, files=[str(folder / p) for p in kept["path"]] if verify else None,
                         match_threshold=match_threshold, workers=workers)


def folder_table(folder: Path) -> pd.DataFrame:
    """The images of a SPLIT/LABEL folder as a manifest-like table (`image_id` = sha256 of the
    bytes, `path` relative to `folder`, `label`, `split`): what to embed before `audit_folder`.
    Unreadable files are left out."""
    rows, _ = _folder_files(Path(folder))
    out = []
    for split, label, rel in rows:
        try:
            data = (Path(folder) / rel).read_bytes()
        except OSError:
            continue
        out.append({"image_id": hashlib.sha256(data).hexdigest(), "path": rel, "label": label, "split": split})
    return pd.DataFrame(out, columns=["image_id", "path", "label", "split"]).drop_duplicates("image_id")
