"""The dedup stage: exact and near-duplicates, the kept copy of each group, label conflicts.

Per image, then per dataset (house style 6): a pure hash per image (`hashing.py`), candidate
pairs from a multi-index search within a Hamming radius (`index.py`), connected components and
the keep / conflict policies (`grouping.py`). Decisions are columns, never deletions:

| column | meaning |
|---|---|
| `dhash` | 256-bit dhash (hex, imagehash's format) of the normalised image |
| `dhash_crops` | dhashes of central crops (the crop-robust signal) |
| `low_information` | uniform / tiny image: never near-matched (it would chain unrelated images) |
| `dup_group` | group id: the smallest `image_id` of the group (every row has one) |
| `dup_of` | the kept image this row duplicates (null for kept rows and dropped conflict groups) |
| `dup_distance` | Hamming distance to `dup_of` (0 for exact copies; also for pairs the embedding signal found) |
| `keep` | False when the row is a duplicate, in a dropped conflict group, or undecodable |
| `dedup_reason` | why kept (`unique`, `largest of 3`, ...) or why not (`duplicate`, `label_conflict`, ...) |
| `label_conflict` | the group's members carry different labels |
| `conflict_labels` | those labels, `|`-joined |
| `against_dup` | with `--against`: the image of the other dataset this row duplicates |

Beside the manifest: `failures.parquet` (one row per image that could not be hashed, with its
reason code: a failure, where a dropped duplicate is a decision) and `gallery.html`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from datakit.dedup.grouping import components, decide
from datakit.dedup.hashing import hamming_known
from datakit.errors import ManifestError, ParamsError
from datakit.manifest import FAILURES, is_known_reason, read_table
from datakit.params import DedupParams
from datakit.stage import DEDUPLICATED, SCRAPED, StageContext, StageResult, failure_rows, find_embeddings, load_input

DEDUP_COLUMNS = ["dhash", "dhash_crops", "low_information", "dup_group", "dup_of", "dup_distance", "keep",
                 "dedup_reason", "label_conflict", "conflict_labels", "against_dup"]
GALLERY = "gallery.html"
STAGE = "dedup"


def embeddings_for(params: DedupParams, source: Path | None, option: Path | str | None = None) -> Path | None:
    """The embeddings table this run reads, or None: with `signals` naming only dhash none;
    else the `--embeddings` option, `dedup.embeddings`, or INPUT's own table when it has one (a
    table named explicitly must exist). The default uses vectors whenever they exist; `plan`
    then refuses an explicit embedding signal without them."""
    if params.signals is not None and "embedding" not in params.signals:
        return None
    return find_embeddings(option if option is not None else params.embeddings, source)


def read_against(source: Path) -> pd.DataFrame:
    """The manifest of an earlier dedup output (`--against`): its `dhash` column is reused, so
    it must be a dedup output; its files are not read."""
    inp = load_input(source, needs=(SCRAPED, DEDUPLICATED), required=("dhash",), check_files=False)
    return inp.manifest


def _extra_labels(input_dir: Path | None, df: pd.DataFrame) -> dict[int, set[str]]:
    """Labels the same bytes carried under other queries (scrape's duplicate_bytes rows)."""
    if input_dir is None or not input_dir.is_dir() or not (input_dir / FAILURES).exists():
        return {}
    fails = read_table(input_dir / FAILURES, "failures table")
    if "reason" not in fails.columns or "image_id" not in fails.columns:
        return {}
    dup = fails[(fails["reason"] == "duplicate_bytes") & fails["image_id"].notna()]
    row_of = {iid: i for i, iid in enumerate(df["image_id"])}
    out: dict[int, set[str]] = {}
    for iid, label in zip(dup["image_id"], dup["label"], strict=True):
        r = row_of.get(iid)
        if r is not None and isinstance(label, str) and label != df["label"].iat[r]:
            out.setdefault(r, set()).add(label)
    return out


Hashes = tuple[list[str | None], list[list[str]], list[bool], list[str | None], list[str | None]]
"""Per row: dhash, crop hashes, low_information, the reason it could not be hashed and the detail."""


def hash_manifest(df: pd.DataFrame, ctx: StageContext, params: DedupParams) -> Hashes:
    """Hash every row's image. Returns dhash, crops, low_information, and an error (reason code
    and detail) per row."""
    from datakit.dedup.hashing import hash_paths
    from datakit.images import ImageRejected

    paths = [ctx.resolve(p) for p in df["path"]]
    results = hash_paths(paths, exact=params.exact, workers=params.workers)
    dh: list[str | None] = []
    crops: list[list[str]] = []
    low: list[bool] = []
    errors: list[str | None] = []
    details: list[str | None] = []
    for res in results:
        if isinstance(res, ImageRejected):
            dh.append(None)
            crops.append([])
            low.append(False)
            errors.append(res.reason)
            details.append(res.detail or None)
        else:
            dh.append(res.dhash)
            crops.append(list(res.crops) if params.crops is not False else [])
            low.append(bool(res.low_information))
            errors.append(None)
            details.append(None)
    return dh, crops, low, errors, details


@dataclass(frozen=True)
class Plan:
    """What the defaults resolve to for one run."""

    signals: tuple[str, ...]
    radius: int  # dhash radius for candidates
    crop_join: bool  # full hashes against crop hashes
    verify: bool
    match_threshold: float


def plan(params: DedupParams, have_embeddings: bool) -> Plan:
    """Resolve the automatic defaults: the embedding signal whenever vectors exist; with it the
    dhash radius is 16 and the crop join is off (the vectors nominate re-crops), without it 28
    and on."""
    signals = tuple(params.signals) if params.signals is not None else (("dhash", "embedding") if have_embeddings else ("dhash",))
    if not signals:
        raise ParamsError("dedup.signals: name at least one signal (dhash, embedding), or leave it out for the default")
    if "embedding" in signals and not have_embeddings:
        raise ParamsError(
            "dedup.signals: 'embedding' needs an embeddings table (no embeddings.parquet in INPUT, no --embeddings, "
            "no dedup.embeddings): run `datakit embed INPUT --out DIR` and pass "
            "--embeddings DIR (or set dedup.embeddings), or use signals: [dhash]"
        )
    with_vectors = "embedding" in signals
    radius = params.threshold if params.threshold is not None else (16 if with_vectors else 28)
    crop_join = params.crops if params.crops is not None else not with_vectors
    return Plan(signals, radius, bool(crop_join) and "dhash" in signals, params.verify, params.match_threshold)


VIA_FULL, VIA_CROP, VIA_EMBEDDING = 1, 2, 4


def via_names(bits: int) -> str:
    """'full+embedding' for the signals that nominated a pair."""
    return "+".join(name for bit, name in ((VIA_FULL, "full"), (VIA_CROP, "crop"), (VIA_EMBEDDING, "embedding")) if bits & bit)


def hash_candidates(dh: list[str | None], crops: list[list[str]], low: list[bool], radius: int, crop_radius: int,
                    crop_join: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i, j, via bit) the hashes nominate: full hashes within `radius` of each other (a
    self-join), and with `crop_join` a full hash within `crop_radius` of another image's crop
    hashes (crop against crop is never compared). Low-information and unhashable rows take part
    in none."""
    from datakit.dedup.index import cross_pairs, near_pairs, pack_hex

    rows = [r for r, h in enumerate(dh) if h is not None and not low[r]]
    empty = np.array([], dtype=np.int64)
    if len(rows) < 2:
        return empty, empty, empty
    own = np.array(rows, dtype=np.int64)
    full = pack_hex([dh[r] for r in rows])  # type: ignore[misc]
    fi, fj, _ = near_pairs(full, radius)
    parts_a, parts_b, parts_v = [own[fi]], [own[fj]], [np.full(len(fi), VIA_FULL, dtype=np.int64)]
    if crop_join:
        crop_owner = [r for r in rows for _ in crops[r]]
        crop_hex = [c for r in rows for c in crops[r]]
        if crop_hex:
            ci, cj, _ = cross_pairs(full, pack_hex(crop_hex), crop_radius)
            a, b = own[ci], np.array(crop_owner, dtype=np.int64)[cj]
            keep = a != b
            parts_a.append(a[keep])
            parts_b.append(b[keep])
            parts_v.append(np.full(int(keep.sum()), VIA_CROP, dtype=np.int64))
    return np.concatenate(parts_a), np.concatenate(parts_b), np.concatenate(parts_v)


def embedding_candidates(df: pd.DataFrame, errors: list[str | None], low: list[bool],
                         embeddings: tuple[list[str], np.ndarray], params: DedupParams
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each row's `embedding_neighbours` most similar rows at cosine >= `embedding_similarity`:
    (i, j, via bit, vectors of every row). Rows without a vector, unreadable rows and
    low-information rows take part in none."""
    from datakit.dedup.vectors import neighbour_pairs
    from datakit.vectors import lookup

    ids, X = embeddings
    vecs, found = lookup(ids, X, df["image_id"].astype(str))
    missing = int((~found & np.array([e is None for e in errors])).sum())
    if missing:
        gone = [iid for iid, f, e in zip(df["image_id"], found, errors, strict=True) if not f and e is None]
        raise ManifestError(
            f"dedup.signals embedding: {missing} image(s) have no vector in the embeddings table "
            f"(e.g. {', '.join(map(str, gone[:3]))}): run `datakit embed` on this manifest"
        )
    rows = np.array([r for r in range(len(df)) if found[r] and errors[r] is None and not low[r]], dtype=np.int64)
    ei, ej, _ = neighbour_pairs(vecs[rows], params.embedding_neighbours, params.embedding_similarity)
    return rows[ei], rows[ej], np.full(len(ei), VIA_EMBEDDING, dtype=np.int64), vecs


def merge_candidates(a: np.ndarray, b: np.ndarray, via: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One row per unordered pair (lo < hi), its via bits OR-ed together, sorted by (lo, hi)."""
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    if not len(lo):
        return lo, hi, via
    order = np.lexsort((hi, lo))
    lo, hi, via = lo[order], hi[order], via[order]
    start = np.ones(len(lo), dtype=bool)
    start[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
    bits = np.bitwise_or.reduceat(via, np.nonzero(start)[0])
    return lo[start], hi[start], bits


def _pair_distances(dh: list[str | None], i: np.ndarray, j: np.ndarray) -> np.ndarray:
    return np.array([hamming_known(dh[a], dh[b]) for a, b in zip(i.tolist(), j.tolist(), strict=True)], dtype=np.int64)


def _pair_similarities(vecs: np.ndarray | None, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    if vecs is None or not len(i):
        return np.full(len(i), np.nan, dtype=np.float32)
    norms = np.linalg.norm(vecs, axis=1)
    norms[norms == 0] = 1.0
    return (np.einsum("ij,ij->i", vecs[i], vecs[j]) / (norms[i] * norms[j])).astype(np.float32)


def run(manifest: pd.DataFrame, params: DedupParams, ctx: StageContext, *,
        against: pd.DataFrame | Path | None = None, hashes: Hashes | None = None,
        vectors: tuple[list[str], np.ndarray] | None = None) -> StageResult:
    """The dedup stage over a manifest (`ctx.root`: what its `path`s are relative to).

    Candidate pairs come from the signals (`plan`): dhash (full hashes within the radius; with
    the crop join also full-vs-crop hashes) and embedding neighbours (the vectors of
    `ctx.embeddings`, see `embeddings_for`). With `verify` (default) a candidate becomes an
    edge only when one picture overlays the other (`datakit.dedup.verify`, score >=
    `match_threshold`), so look-alike shots never chain into one group; groups are the
    connected components of the edges. Labels the same bytes carried under other queries come
    from the input folder's failures table (`ctx.input`, scrape's duplicate_bytes rows).

    Decisions are columns: a duplicate is `keep=False` with its `dedup_reason`, never a
    failure. An image that cannot be hashed is `keep=False` too, *and* a failures row (its
    reason code). With `ctx.out` the gallery is written there (`files["gallery"]`); `extra`
    holds the accepted `pairs` and the `conflict_groups` for the caller.

    Args:
        against: another dataset's dedup output (a folder, or its manifest as read by
            `read_against`; its `dhash` column is used as is): rows within the dhash radius
            of one of its images are marked `keep=False`, `dedup_reason="in_against"`,
            `against_dup=<its image_id>`.
        hashes: precomputed `Hashes`, for tests and re-use.
        vectors: (image_ids, vectors) instead of reading `ctx.embeddings` (tests, calibration).
    """
    from datakit.dedup.verify import score_pairs

    df = manifest
    embeddings = vectors
    if embeddings is None and ctx.embeddings is not None and (params.signals is None or "embedding" in params.signals):
        from datakit.vectors import read_embeddings

        ids, X, _ = read_embeddings(ctx.embeddings)
        embeddings = (ids, X)
    if against is not None and not isinstance(against, pd.DataFrame):
        against = read_against(Path(against))
    pl = plan(params, embeddings is not None)
    for col in ("image_id", "path", "label", "width", "height", "bytes"):
        if col not in df.columns:
            raise ManifestError(f"dedup input manifest lacks the column {col!r}")
    t0 = time.monotonic()
    df = df.reset_index(drop=True).copy()
    ctx.progress.start("hash", len(df))
    dh, crops, low, errors, details = hashes if hashes is not None else hash_manifest(df, ctx, params)
    ctx.progress.advance("hash", len(df))
    t_hash = time.monotonic() - t0
    parts_a, parts_b, parts_v = [], [], []
    if "dhash" in pl.signals:
        a, b, v = hash_candidates(dh, crops, low, pl.radius, params.crop_threshold, pl.crop_join)
        parts_a.append(a), parts_b.append(b), parts_v.append(v)
    vecs = None
    if "embedding" in pl.signals and embeddings is not None:
        a, b, v, vecs = embedding_candidates(df, errors, low, embeddings, params)
        parts_a.append(a), parts_b.append(b), parts_v.append(v)
    empty = np.array([], dtype=np.int64)
    ci, cj, cvia = merge_candidates(np.concatenate(parts_a or [empty]), np.concatenate(parts_b or [empty]),
                                    np.concatenate(parts_v or [empty]))
    t1 = time.monotonic()
    paths = [ctx.resolve(p) for p in df["path"]]
    if pl.verify and len(ci):
        score = np.asarray(score_pairs(paths, ci, cj, workers=params.workers), dtype=np.float32)
        accept = score >= pl.match_threshold
    else:
        score = np.full(len(ci), np.nan, dtype=np.float32)
        accept = np.ones(len(ci), dtype=bool)
    t_verify = time.monotonic() - t1
    cd = _pair_distances(dh, ci, cj)
    csim = _pair_similarities(vecs, ci, cj)
    i, j, d, via, sim, match = ci[accept], cj[accept], cd[accept], cvia[accept], csim[accept], score[accept]
    roots = components(len(df), i, j)
    extra = _extra_labels(ctx.input, df)
    decisions = decide(
        df["image_id"].tolist(), df["label"].tolist(), df["width"].tolist(), df["height"].tolist(),
        df["bytes"].tolist(), roots, keep=params.keep, conflicts=params.conflicts, extra_labels=extra,
    )
    dist_to: dict[tuple[int, int], int] = {}
    for a, b, dist in zip(i.tolist(), j.tolist(), d.tolist(), strict=True):
        dist_to[(a, b)] = dist
        dist_to[(b, a)] = dist
    row_of = {iid: r for r, iid in enumerate(df["image_id"])}
    df["dhash"] = dh
    df["dhash_crops"] = crops
    df["low_information"] = low
    df["dup_group"] = [x.group for x in decisions]
    df["dup_of"] = [x.dup_of for x in decisions]
    df["dup_distance"] = [
        _distance(dist_to, r, row_of[x.dup_of]) if x.dup_of is not None else None for r, x in enumerate(decisions)
    ]
    df["keep"] = [x.keep for x in decisions]
    df["dedup_reason"] = [x.reason for x in decisions]
    df["label_conflict"] = [x.label_conflict for x in decisions]
    df["conflict_labels"] = [x.conflict_labels for x in decisions]
    for r, err in enumerate(errors):
        if err is not None:
            df.at[r, "keep"] = False
            df.at[r, "dedup_reason"] = f"undecodable:{err}"
    df["against_dup"] = None
    n_against = 0
    if against is not None:
        n_against = _mark_against(df, against, pl.radius)
    ids = df["image_id"].to_numpy()
    pairs = pd.DataFrame({"a": ids[i] if len(i) else [], "b": ids[j] if len(j) else [], "distance": d,
                          "via": [via_names(int(x)) for x in via], "similarity": sim, "match": match})
    report = _report(df, params, pairs, t_hash, time.monotonic() - t0, n_against)
    report.update({
        "signals": list(pl.signals),
        "threshold": pl.radius,
        "crop_threshold": params.crop_threshold if pl.crop_join else None,
        "embedding_similarity": params.embedding_similarity if "embedding" in pl.signals else None,
        "embedding_neighbours": params.embedding_neighbours if "embedding" in pl.signals else None,
        "verify": pl.verify,
        "match_threshold": pl.match_threshold if pl.verify else None,
        "candidates": int(len(ci)),
        "candidates_by_signal": {name: int(((cvia & bit) > 0).sum()) for bit, name in
                                 ((VIA_FULL, "full"), (VIA_CROP, "crop"), (VIA_EMBEDDING, "embedding"))},
        "rejected_by_verify": int((~accept).sum()),
        "pairs_via_embedding": int(((via & VIA_EMBEDDING) > 0).sum()),
        "pairs_only_embedding": int((via == VIA_EMBEDDING).sum()),
        "verify_seconds": round(t_verify, 3),
    })
    conflicts = sorted(set(df.loc[df["label_conflict"], "dup_group"]))
    bad = np.array([e is not None for e in errors], dtype=bool)
    failures = failure_rows(df, bad, STAGE, [e if is_known_reason(e) else "decode_error" for e in errors if e is not None],
                            [d for e, d in zip(errors, details, strict=True) if e is not None])
    report["failures"] = int(bad.sum())
    files: dict[str, Path] = {}
    if ctx.out is not None:
        from datakit.dedup.gallery import write_gallery

        files["gallery"] = Path(ctx.out) / GALLERY
        write_gallery(df, ctx.root, report, files["gallery"], largest=params.gallery_groups, pairs=pairs)
    return StageResult(df, report, failures, files, extra={"pairs": pairs, "conflict_groups": conflicts})


def _distance(dist_to: dict[tuple[int, int], int], a: int, b: int) -> int | None:
    v = dist_to.get((a, b))
    return v if v is not None and v >= 0 else None  # -1: a pair with an unhashed row


def _mark_against(df: pd.DataFrame, against: pd.DataFrame, radius: int) -> int:
    from datakit.dedup.index import cross_pairs, pack_hex

    if "dhash" not in against.columns:
        raise ManifestError("--against needs a dedup output (its manifest has no dhash column); run datakit dedup on it first")
    old = against[against["dhash"].notna()]
    new_rows = [r for r in range(len(df)) if isinstance(df.at[r, "dhash"], str) and not df.at[r, "low_information"]]
    if not new_rows or not len(old):
        return 0
    ni, oj, dist = cross_pairs(pack_hex([df.at[r, "dhash"] for r in new_rows]), pack_hex(old["dhash"].tolist()), radius)
    old_ids = old["image_id"].tolist()
    best: dict[int, tuple[int, str]] = {}
    for a, b, dd in zip(ni.tolist(), oj.tolist(), dist.tolist(), strict=True):
        r = new_rows[a]
        if r not in best or dd < best[r][0]:
            best[r] = (dd, old_ids[b])
    for r, (_, old_id) in best.items():
        df.at[r, "against_dup"] = old_id
        df.at[r, "keep"] = False
        df.at[r, "dedup_reason"] = "in_against"
    return len(best)


def _report(df: pd.DataFrame, params: DedupParams, pairs: pd.DataFrame, t_hash: float, total: float, n_against: int) -> dict[str, Any]:
    sizes = df.groupby("dup_group").size()
    multi = sizes[sizes > 1]
    distinct = df.groupby("dup_group")["dhash"].nunique(dropna=False)
    exact_groups = int((distinct[multi.index] == 1).sum())
    before = df["label"].value_counts().sort_index()
    after = df.loc[df["keep"], "label"].value_counts().reindex(before.index, fill_value=0)
    reasons = df.loc[~df["keep"], "dedup_reason"].value_counts().to_dict()
    return {
        "images": int(len(df)),
        "kept": int(df["keep"].sum()),
        "removed": int((~df["keep"]).sum()),
        "groups": int(len(multi)),
        "exact_groups": int(exact_groups),
        "near_groups": int(len(multi) - exact_groups),
        "largest_group": int(sizes.max()) if len(sizes) else 0,
        "pairs": int(len(pairs)),
        "pairs_via_crop": int(pairs["via"].str.contains("crop").sum()) if len(pairs) else 0,
        "conflict_groups": int(df.loc[df["label_conflict"], "dup_group"].nunique()),
        "conflict_images": int(df["label_conflict"].sum()),
        "low_information": int(df["low_information"].sum()),
        "in_against": int(n_against),
        "removed_by_reason": {str(k): int(v) for k, v in sorted(reasons.items())},
        "per_label_before": {str(k): int(v) for k, v in before.items()},
        "per_label_after": {str(k): int(v) for k, v in after.items()},
        "exact": params.exact,
        "keep_policy": params.keep,
        "conflict_policy": params.conflicts,
        "hash_seconds": round(t_hash, 3),
        "seconds": round(total, 3),
        "images_per_s": round(len(df) / t_hash, 1) if t_hash > 0 else None,
    }
