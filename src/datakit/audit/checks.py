"""The audit's checks on a prepared table (one row per image with its fingerprints): exact and
near copies across splits, label conflicts, the average-hash oracle and the class balance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from datakit.audit.report import MAX_LISTED, AuditReport, ahash_bits
from datakit.dedup.hashing import hamming_known
from datakit.dedup.index import cross_pairs, near_pairs, pack_hex
from datakit.params import AuditParams

_SPLIT_ORDER = ("train", "training", "val", "valid", "validation", "dev", "test", "testing", "holdout")
_ZERO_PAD = "0" * 48  # a 64-bit average hash padded to the 256-bit format pack_hex reads

Kind = Literal["exact", "near", "ahash"]



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
        from datakit.vectors import lookup

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


def audit_records(table: pd.DataFrame, params: AuditParams, *, hashes: str = "recompute",
                  unreadable: Sequence[dict[str, str]] = (), skipped: Sequence[str] = (),
                  embeddings: tuple[list[str], np.ndarray] | None = None, files: Sequence[str] | None = None,
                  workers: int = 1) -> AuditReport:
    """Run the checks on a prepared table with the settings of `params` (`audit:`).

    `table` has one row per image: ``image_id``, ``path`` (as shown), ``label``, ``split``,
    ``sha256`` (None: unknown), ``dhash`` (64 hex or None), ``ahash`` (16 hex or None),
    ``low_information`` (bool). `embeddings` (image_ids, vectors) add each row's
    `params.neighbours` nearest at cosine >= `params.similarity` as candidates; `files` (the
    readable file of each row) turn the overlay check on: a candidate pair counts only when one
    picture overlays the other at `params.match_threshold`.
    """
    radius, max_leaks, match_threshold = params.radius, params.max_leaks, params.match_threshold
    neighbours, similarity = params.neighbours, params.similarity
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
