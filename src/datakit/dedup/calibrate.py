"""`datakit dedup calibrate`: how each dedup signal does on the user's own images, and the
thresholds to use.

Dedup nominates candidate pairs with two signals (the dhash within `dedup.threshold` bits, plus
crop hashes within `dedup.crop_threshold` when there are no vectors; embedding neighbours at
cosine >= `dedup.embedding_similarity`) and accepts a candidate only when one picture overlays
the other (`datakit.dedup.verify`, score >= `dedup.match_threshold`). Calibration measures every
signal on pairs whose answer is known:

* duplicates: each sampled image against edited copies of itself, the edits a web page makes
  (`EDITS`: re-crops of 4-16 % per axis, symmetric and one-sided; resize 50-90 %; JPEG q30-90;
  brightness +-20 %; a caption / price tag; PNG; and a stack of two of these);
* look-alikes (hard negatives): each sampled image against its `hard_per_image` nearest *other*
  images of the dataset (by cosine when INPUT has vectors, else by dhash distance; rows of the
  same `dup_group` are left out when INPUT is a dedup output), as many as it has copies, so a
  precision here is one at even odds. These are what the embedding signal nominates, and what
  decides the precision of the overlay check;
* unrelated: random pairs of sampled images.

A look-alike (or a random pair) that overlays at >= `SUSPECT_SCORE` is most likely a copy already in the dataset
(different shots of look-alike scenes stay at <= 0.962 on real photos): such pairs are listed as
suspects and left out of the figures rather than counted as false pairs.

Or a file of labelled pairs (`--pairs`, `a,b,duplicate`: paths or image_ids).

For every pair: the full dhash distance, the best full-vs-crop-hash distance, the cosine of the
two images' vectors (vectors of INPUT's images come from its embeddings table; the copies are
embedded here with the settings recorded in its `embed.json`, or with `embed:` when INPUT has no
table), and the overlay score. From these: precision and recall per signal and threshold, recall
per edit at the current params, recommended thresholds, and the recall and precision of the
whole rule (candidates and overlay) at the current and the recommended params.

Recommendations:
* `dedup.threshold`: the smallest radius at which the full dhash finds >= 0.99 of the copies
  that are not re-cropped (re-crops are the vectors' and the crop hashes' job);
* `dedup.embedding_similarity`: a candidate floor: the highest cosine (0.01 steps) that keeps
  >= 0.99 of all copies (the overlay check, not this floor, decides precision);
* `dedup.match_threshold`: halfway between the lowest score (0.005 steps) at which precision
  against the look-alikes is >= 0.995 and the highest score that still finds as many copies:
  a margin both ways for pictures the sample did not hold.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from datakit.dedup.edits import EDITS, HARD_PER_IMAGE, edit
from datakit.dedup.figures import (
    LOOK_ALIKE,
    MIN_PRECISION,
    SIGNALS,
    UNRELATED,
    Rule,
    figures,
    hard_negatives,
    lowest_precise_match,
    recommend_match,
    recommend_radius,
    recommend_similarity,
    same_recall_ceiling,
    signal_table,
)
from datakit.errors import DatakitError
from datakit.images import ImageRejected, load_image
from datakit.manifest import resolve

Embedder = Callable[..., tuple[list[str], np.ndarray]]
"""`embedder(frame, root, settings) -> (image_ids, vectors)`: `datakit embed`'s model, handed in by
the command (see `datakit.cli.embedder`)."""

SUSPECT_SCORE = 0.99  # look-alikes overlaying this well are likely real copies inside the dataset


# ---------------------------------------------------------------- pairs


@dataclass
class PairSet:
    """Pictures (each once) and the labelled pairs between them."""

    paths: list[Path] = field(default_factory=list)
    ids: list[str | None] = field(default_factory=list)  # image_id in INPUT (vector lookup), None for copies
    a: list[int] = field(default_factory=list)
    b: list[int] = field(default_factory=list)
    duplicate: list[bool] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)  # an edit, LOOK_ALIKE, UNRELATED, or "file"
    crop: list[bool] = field(default_factory=list)  # the copy was re-cropped
    _index: dict[Path, int] = field(default_factory=dict)

    def picture(self, path: Path, image_id: str | None) -> int:
        if path not in self._index:
            self._index[path] = len(self.paths)
            self.paths.append(path)
            self.ids.append(image_id)
        return self._index[path]

    def add(self, a: int, b: int, duplicate: bool, kind: str, crop: bool = False) -> None:
        self.a.append(a)
        self.b.append(b)
        self.duplicate.append(duplicate)
        self.kind.append(kind)
        self.crop.append(crop)


def sample_rows(df: pd.DataFrame, sample: int, seed: int) -> np.ndarray:
    """Positions of the rows to sample (readable rows only when INPUT is a dedup output)."""
    usable = np.arange(len(df))
    if "dedup_reason" in df.columns:
        usable = usable[~df["dedup_reason"].astype(str).str.startswith("undecodable").to_numpy()]
    if len(usable) < 2:
        raise DatakitError(f"dedup calibrate: needs at least 2 images to sample, INPUT has {len(usable)}")
    if sample < 2:
        raise DatakitError(f"dedup calibrate: --sample must be at least 2 (got {sample})")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(usable, size=min(sample, len(usable)), replace=False))


def nearest_others(df: pd.DataFrame, root: Path, rows: np.ndarray, k: int, *,
                   vectors: tuple[list[str], np.ndarray] | None, exact: bool = False, workers: int = 0,
                   block: int = 65536) -> np.ndarray:
    """(len(rows), k) positions of each sampled row's nearest other rows of `df` (-1: none):
    by cosine when `vectors` (image_ids, X) are given, else by full dhash distance (INPUT's
    `dhash` column when it has one). The row itself, rows with the same image_id or path, and
    rows of the same `dup_group` are never its neighbours. Works through `df` in blocks of
    columns, keeping the best `k` (memory: len(rows) x block)."""
    n = len(df)
    k = max(0, min(k, n - 1))
    out = np.full((len(rows), k), -1, dtype=np.int64)
    if k == 0 or not len(rows):
        return out
    if vectors is not None:
        pos = {iid: i for i, iid in enumerate(vectors[0])}
        at = np.array([pos.get(str(iid), -1) for iid in df["image_id"]], dtype=np.int64)
        X = vectors[1]
        norms = np.linalg.norm(X, axis=1)
        ok = at >= 0
        ok[ok] = norms[at[ok]] > 0

        def unit(sel: np.ndarray) -> np.ndarray:
            v = X[np.where(at[sel] >= 0, at[sel], 0)].astype(np.float32)
            return v / np.where(ok[sel], norms[np.where(at[sel] >= 0, at[sel], 0)], 1.0)[:, None]

        q = unit(rows)

        def dist(lo: int, hi: int) -> np.ndarray:
            return -(q @ unit(np.arange(lo, hi)).T).astype(np.float64)
    else:
        from datakit.dedup.index import pack_hex

        if "dhash" in df.columns:
            hexes: list[str | None] = [h if isinstance(h, str) else None for h in df["dhash"]]
            low = df["low_information"].fillna(False).to_numpy(bool) if "low_information" in df.columns else np.zeros(n, bool)
        else:
            from datakit.dedup.hashing import hash_paths

            res = hash_paths([resolve(root, p) for p in df["path"]], exact=exact, workers=workers)
            hexes = [None if isinstance(r, ImageRejected) else r.dhash for r in res]
            low = np.array([False if isinstance(r, ImageRejected) else bool(r.low_information) for r in res])
        ok = np.array([h is not None for h in hexes]) & ~low
        bits = pack_hex([h if h is not None else "0" * 64 for h in hexes])
        qb = bits[rows]

        def dist(lo: int, hi: int) -> np.ndarray:
            return np.bitwise_count(qb[:, None, :] ^ bits[None, lo:hi, :]).sum(axis=2).astype(np.float64)

    codes = [pd.factorize(df["image_id"].astype(str))[0], pd.factorize(df["path"].astype(str))[0]]
    if "dup_group" in df.columns:
        codes.append(pd.factorize(df["dup_group"].astype(str))[0])
    best_d = np.full((len(rows), k), np.inf)
    best_i = np.full((len(rows), k), -1, dtype=np.int64)
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        d = dist(lo, hi)
        d[:, ~ok[lo:hi]] = np.inf
        for c in codes:
            d[c[rows][:, None] == c[None, lo:hi]] = np.inf
        cand_d = np.concatenate([best_d, d], axis=1)
        cand_i = np.concatenate([best_i, np.broadcast_to(np.arange(lo, hi), d.shape)], axis=1)
        order = np.argsort(cand_d, axis=1, kind="stable")[:, :k]
        best_d = np.take_along_axis(cand_d, order, axis=1)
        best_i = np.take_along_axis(cand_i, order, axis=1)
    finite = np.isfinite(best_d)
    out[finite] = best_i[finite]
    return out


def generate_pairs(df: pd.DataFrame, root: Path, rows: np.ndarray, neighbours: np.ndarray, workdir: Path, *,
                   seed: int) -> PairSet:
    """Copies of the sampled rows' images (written to `workdir`) as duplicates; the rows'
    `neighbours` as look-alikes; as many random pairs of sampled images as duplicates, unrelated."""
    rng = random.Random(seed)
    ps = PairSet()
    workdir.mkdir(parents=True, exist_ok=True)
    ids = df["image_id"].astype(str).tolist()
    paths = [resolve(root, p) for p in df["path"]]
    originals: list[int] = []
    for r_i, r in enumerate(rows.tolist()):
        try:
            im = load_image(root, df["path"].iat[r])
        except (ImageRejected, OSError):
            continue
        me = ps.picture(paths[r], ids[r])
        originals.append(me)
        for name in EDITS:
            data, suffix, cropped = edit(im, name, rng)
            target = workdir / f"{ids[r][:16]}-{r}-{name}.{suffix}"
            target.write_bytes(data)
            ps.add(me, ps.picture(target, None), True, name, cropped)
        for other in neighbours[r_i].tolist():
            if other >= 0:
                ps.add(me, ps.picture(paths[other], ids[other]), False, LOOK_ALIKE)
    if len(originals) < 2:
        raise DatakitError(f"dedup calibrate: needs at least 2 readable images to sample, found {len(originals)}")
    n_dup = sum(ps.duplicate)
    for _ in range(n_dup):
        x, y = rng.sample(originals, 2)
        ps.add(x, y, False, UNRELATED)
    return ps


def read_pairs(path: Path, df: pd.DataFrame, root: Path) -> PairSet:
    """A CSV `a,b,duplicate` (paths or image_ids; duplicate 1/0/true/false/yes/no)."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatakitError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in ("a", "b", "duplicate") if c not in table.columns]
    if missing:
        raise DatakitError(f"{path}: missing column(s) {', '.join(missing)} (expected a,b,duplicate)")
    by_id = dict(zip(df["image_id"].astype(str), df["path"].astype(str), strict=True))
    by_path = {p: iid for iid, p in by_id.items()}
    ps = PairSet()

    def load(ref: str, line: int) -> int:
        ref = ref.strip()
        iid = ref if ref in by_id else by_path.get(ref)
        if iid is not None:
            return ps.picture(resolve(root, by_id[iid]), iid)
        p = Path(ref)
        if not p.is_file():
            raise DatakitError(f"{path}: line {line}: {ref!r} is neither an image_id or path of the manifest nor a file")
        return ps.picture(p.resolve(), None)

    for k, r in enumerate(table.itertuples(), start=2):
        flag = str(r.duplicate).strip().lower()
        if flag not in ("1", "0", "true", "false", "yes", "no"):
            raise DatakitError(f"{path}: line {k}: duplicate must be 1/0/true/false, got {r.duplicate!r}")
        ps.add(load(r.a, k), load(r.b, k), flag in ("1", "true", "yes"), "file")
    if not ps.a:
        raise DatakitError(f"{path}: no pairs")
    return ps


# ---------------------------------------------------------------- the signals


def embed_settings(params: Any, meta: dict[str, Any] | None) -> tuple[Any, str | None]:
    """The `EmbedParams` to embed copies with: the table's recorded backbone, weights and
    preprocessing over `embed:` (which still gives batch size, device, workers); and a note
    when the recorded recipe cannot be reproduced."""
    from datakit.params import section

    base = section(params, "embed")
    if not meta or "backbone" not in meta:
        return base, None if meta is None else "the embeddings table records no settings: copies embedded with embed:"
    from datakit.models import preprocess_for

    upd: dict[str, Any] = {"backbone": meta["backbone"], "pretrained": bool(meta.get("pretrained", base.pretrained)),
                           "seed": int(meta.get("seed", base.seed)), "image_size": None}
    rec = meta.get("preprocess") or {}
    try:
        default = preprocess_for(upd["backbone"], upd["pretrained"], None).to_dict()
        if rec and rec.get("crop") != default["crop"]:
            upd["image_size"] = int(rec["crop"])
        got = preprocess_for(upd["backbone"], upd["pretrained"], upd["image_size"]).to_dict()
    except (DatakitError, ImportError, KeyError, ValueError) as exc:
        return base.model_copy(update=upd), f"recorded embed settings: {exc}"
    note = None
    if rec and {k: rec.get(k) for k in ("resize", "crop")} != {k: got[k] for k in ("resize", "crop")}:
        note = f"the table's preprocessing {rec} is not reproduced exactly ({got})"
    return base.model_copy(update=upd), note


def pair_vectors(ps: PairSet, table: tuple[list[str], np.ndarray] | None, settings: Any, workdir: Path,
                 embedder: Embedder | None = None) -> tuple[np.ndarray | None, str | None]:
    """A vector per picture (rows of `table` where it has the image_id; the rest embedded here
    by `embedder` with `settings`), or (None, why) when there is no embedder or the model cannot
    be built."""
    from datakit.vectors import lookup

    n = len(ps.paths)
    if table is not None:
        X, found = lookup(table[0], table[1], [i if i is not None else "\0" for i in ps.ids])
    else:
        X, found = None, np.zeros(n, dtype=bool)
    todo = [k for k in range(n) if not found[k]]
    if not todo:
        return X, None
    if embedder is None:
        return None, "embedding signal skipped: no model to embed the copies with"
    src = workdir / "embed-src"
    src.mkdir(parents=True, exist_ok=True)
    names = []
    for k in todo:
        name = f"{k}{ps.paths[k].suffix.lower() or '.img'}"
        (src / name).write_bytes(ps.paths[k].read_bytes())
        names.append(name)
    frame = pd.DataFrame({"image_id": [str(k) for k in todo], "path": names, "label": "calibrate"})
    try:
        ids, V = embedder(frame, src, settings)
    except (ImportError, DatakitError) as exc:
        return None, f"embedding signal skipped: the model could not be built ({str(exc).splitlines()[0]})"
    got, ok = lookup(ids, V, [str(k) for k in todo])
    if X is None or X.shape[1] != V.shape[1]:
        if X is not None and found.any():
            return None, (f"embedding signal skipped: the table's vectors have {X.shape[1]} dimensions, "
                          f"the copies' {V.shape[1]}")
        X = np.zeros((n, V.shape[1]), dtype=np.float32)
    X[todo] = got
    found[todo] = ok
    X[~found] = np.nan
    return X, None


def measure(ps: PairSet, *, exact: bool = False, workers: int = 0, vectors: np.ndarray | None = None) -> pd.DataFrame:
    """One row per pair: kind, duplicate, crop, full (dhash distance), crop_distance (best full
    hash vs the other's crop hashes), cosine (NaN without vectors), score (overlay). Pairs with
    an unreadable picture are left out."""
    from datakit.dedup.hashing import hash_paths
    from datakit.dedup.index import pack_hex
    from datakit.dedup.verify import score_pairs

    res = hash_paths(ps.paths, exact=exact, workers=workers)
    ok = np.array([not isinstance(r, ImageRejected) for r in res])
    full_bits = pack_hex([r.dhash if ok[k] else "0" * 64 for k, r in enumerate(res)])  # type: ignore[union-attr]
    a, b = np.asarray(ps.a, dtype=np.int64), np.asarray(ps.b, dtype=np.int64)
    keep = ok[a] & ok[b]
    a, b = a[keep], b[keep]

    def ham(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.bitwise_count(x ^ y).sum(axis=-1)

    full = ham(full_bits[a], full_bits[b]) if len(a) else np.zeros(0, dtype=np.int64)
    crops = [pack_hex(r.crops) if ok[k] and r.crops else None for k, r in enumerate(res)]  # type: ignore[union-attr]
    crop_d = []
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        best = 256
        for f, c in ((full_bits[x], crops[y]), (full_bits[y], crops[x])):
            if c is not None:
                best = min(best, int(ham(c, f[None, :]).min()))
        crop_d.append(best)
    score = score_pairs(ps.paths, a, b, workers=workers) if len(a) else np.zeros(0, dtype=np.float32)
    if vectors is not None and len(a):
        va, vb = vectors[a], vectors[b]
        den = np.linalg.norm(va, axis=1) * np.linalg.norm(vb, axis=1)
        cosine = np.where(den > 0, np.einsum("ij,ij->i", va, vb) / np.where(den > 0, den, 1.0), np.nan)
    else:
        cosine = np.full(len(a), np.nan)
    sel = np.nonzero(keep)[0]
    return pd.DataFrame({
        "a": [str(ps.paths[x]) for x in a.tolist()], "b": [str(ps.paths[y]) for y in b.tolist()],
        "a_id": [ps.ids[x] for x in a.tolist()], "b_id": [ps.ids[y] for y in b.tolist()],
        "kind": [ps.kind[k] for k in sel], "duplicate": np.array([ps.duplicate[k] for k in sel], dtype=bool),
        "crop": np.array([ps.crop[k] for k in sel], dtype=bool),
        "full": full.astype(np.int64), "crop_distance": np.array(crop_d, dtype=np.int64),
        "cosine": cosine.astype(np.float64), "score": score.astype(np.float64),
    })


@dataclass
class Calibration:
    pairs: pd.DataFrame
    tables: dict[str, pd.DataFrame]
    per_edit: pd.DataFrame
    recommended: dict[str, Any]
    end_to_end: dict[str, dict[str, Any]]
    rules: dict[str, Rule]
    notes: list[str]
    suspects: pd.DataFrame

    def counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.pairs["kind"].map(
            lambda k: k if k in (LOOK_ALIKE, UNRELATED) else ("duplicate" if k != "file" else "file")).value_counts().items()}

    def to_dict(self) -> dict[str, Any]:
        def rows(t: pd.DataFrame) -> list[dict[str, Any]]:
            return json.loads(t.to_json(orient="records"))

        return {
            "pairs": {"duplicates": int(self.pairs["duplicate"].sum()),
                      "look_alikes": int((self.pairs["kind"] == LOOK_ALIKE).sum()),
                      "unrelated": int((~self.pairs["duplicate"] & (self.pairs["kind"] != LOOK_ALIKE)).sum())},
            "signals": {name: rows(t) for name, t in self.tables.items()},
            "recall_per_edit": rows(self.per_edit),
            "recommended": self.recommended,
            "end_to_end": {name: {"rule": self.rules[name].describe(), **fig} for name, fig in self.end_to_end.items()},
            "suspects": rows(self.suspects),
            "notes": self.notes,
        }


def current_rule(params: Any, vectors: bool) -> Rule:
    """The rule `datakit dedup` runs with these params (vectors: INPUT has an embeddings table)."""
    from datakit.dedup.stage import plan
    from datakit.errors import ParamsError

    try:
        pl = plan(params, vectors)
    except ParamsError:
        pl = plan(params.model_copy(update={"signals": None}), vectors)
    return Rule(pl.radius, params.crop_threshold if pl.crop_join else None,
                params.embedding_similarity if "embedding" in pl.signals else None,
                pl.match_threshold if pl.verify else None)


def summarise(d: pd.DataFrame, params: Any, *, has_table: bool = False, notes: list[str] | None = None) -> Calibration:
    """Tables, recall per edit, recommendations and the whole rule's figures from measured pairs."""
    notes = list(notes or [])
    suspect = d["kind"].isin([LOOK_ALIKE, UNRELATED]) & (d["score"] >= SUSPECT_SCORE)
    suspects = d.loc[suspect, ["a_id", "b_id", "kind", "full", "cosine", "score"]].reset_index(drop=True)
    if len(suspects):
        notes.append(f"{len(suspects)} look-alike or unrelated pair(s) overlay at >= {SUSPECT_SCORE}: most likely copies already inside "
                     "the dataset, so they are left out of the figures (listed under suspects in --json; calibrating "
                     "a dedup output leaves its groups out)")
        d = d[~suspect].reset_index(drop=True)
    if not d["duplicate"].any():
        raise DatakitError("dedup calibrate: no duplicate pairs to measure (a pairs file needs some duplicate=1 rows)")
    have_cos = bool(d["cosine"].notna().any())
    tables = {name: signal_table(d, name) for name in SIGNALS if name != "embedding" or have_cos}
    cur = current_rule(params, has_table)
    radius = recommend_radius(d)
    sim = recommend_similarity(d) if have_cos else None
    match, m_recall, m_precision = recommend_match(d)
    with_vectors = have_cos
    crops_on = params.crops if params.crops is not None else not with_vectors
    rec = Rule(radius if radius is not None else cur.radius,
               params.crop_threshold if crops_on else None,
               sim if with_vectors else None,
               (match if match is not None else cur.match) if params.verify else None)
    if match is None:
        notes.append(f"no overlay threshold reaches precision {MIN_PRECISION} against the look-alikes; "
                     "the current one is kept in the recommended rule")
    recommended = {
        "threshold": radius,
        "embedding_similarity": sim,
        "match_threshold": match,
        "match_recall": m_recall,
        "match_precision": m_precision,
        "match_threshold_same_recall": same_recall_ceiling(d, match, m_recall),
        "match_false_look_alikes": int((d.loc[hard_negatives(d) & ~d["duplicate"], "score"] >= match).sum()) if match is not None else None,
        "look_alikes": int((hard_negatives(d) & ~d["duplicate"]).sum()),
    }
    rules = {"current": cur, "recommended": rec}
    end = {name: figures(r.hits(d), d) for name, r in rules.items()}
    dup = d[d["duplicate"]]
    per = []
    for kind, g in dup.groupby("kind", sort=False):
        row: dict[str, Any] = {"edit": kind, "pairs": len(g), f"dhash<={cur.radius}": float((g["full"] <= cur.radius).mean())}
        row[f"crops<={params.crop_threshold}"] = float((g["crop_distance"] <= params.crop_threshold).mean())
        if have_cos:
            row[f"cosine>={params.embedding_similarity:g}"] = float((g["cosine"] >= params.embedding_similarity).mean())
        row[f"overlay>={params.match_threshold:g}"] = float((g["score"] >= params.match_threshold).mean())
        row["rule (current)"] = float(cur.hits(g).mean())
        row["rule (recommended)"] = float(rec.hits(g).mean())
        per.append(row)
    return Calibration(d, tables, pd.DataFrame(per), recommended, end, rules, notes, suspects)


def run(df: pd.DataFrame, root: Path, params: Any, *, input_dir: Path | None = None, pairs: Path | None = None,
        sample: int = 100, seed: int = 0, hard_per_image: int = HARD_PER_IMAGE,
        progress: Callable[[str], None] | None = None, embedder: Embedder | None = None) -> Calibration:
    """`datakit dedup calibrate` on a manifest (`params`: the whole params.yaml). The vectors of
    INPUT's images come from its embeddings table (`dedup.embeddings`, else `input_dir`'s own);
    the copies are embedded by `embedder` (without one, or when its model cannot be built, the
    embedding signal is left out with a note)."""
    from datakit.stage import find_embeddings
    from datakit.vectors import read_embeddings

    say = progress or (lambda _msg: None)
    p = params.dedup
    notes: list[str] = []
    source = find_embeddings(p.embeddings, input_dir)
    table, meta = None, None
    if source is not None:
        ids, X, meta = read_embeddings(source)
        table = (ids, X)
    with tempfile.TemporaryDirectory(prefix="datakit-calibrate-") as tmp:
        work = Path(tmp)
        if pairs is not None:
            ps = read_pairs(pairs, df, root)
        else:
            rows = sample_rows(df, sample, seed)
            say(f"{'cosine' if table else 'dhash'} neighbours of {len(rows)} sampled images")
            near = nearest_others(df, root, rows, hard_per_image, vectors=table, exact=p.exact, workers=p.workers)
            ps = generate_pairs(df, root, rows, near, work / "copies", seed=seed)
        settings, note = embed_settings(params, meta if table is not None else None)
        if note:
            notes.append(note)
        say(f"vectors for {len(ps.paths)} pictures")
        vectors, note = pair_vectors(ps, table, settings, work, embedder)
        if note:
            notes.append(note)
        say(f"hashes and overlay scores of {len(ps.a)} pairs")
        d = measure(ps, exact=p.exact, workers=p.workers, vectors=vectors)
    return summarise(d, p, has_table=table is not None, notes=notes)


__all__ = ["EDITS", "Calibration", "Embedder", "PairSet", "Rule", "edit", "generate_pairs", "measure", "nearest_others",
           "lowest_precise_match", "read_pairs", "recommend_match", "recommend_radius", "recommend_similarity", "run",
           "same_recall_ceiling", "sample_rows", "signal_table", "summarise"]
