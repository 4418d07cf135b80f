"""`datakit balance`: class balancing of what training sees, honestly labelled (issues 5, 14).

The rules (house style 9 and 13, reliability.md SPL-05):

* the counts are the rows training uses (`stage.training_rows`: kept train rows of every
  origin, augment's variants included), since that is what the trainer learns from; val and
  test rows come back unchanged;
* `balance.target` is normalised first, through imbalanced-learn's own `check_sampling_strategy`,
  into the final per-class count of those rows (`normalise_target`); every later step reads
  only that dict;
* new rows are made from the kept train *originals* (a class with none falls back to its other
  training rows that have a file): a copy of a copy would drift from the photo;
* indices first, rows second: the imblearn sampler is fitted on row positions only and says
  which rows to repeat (`sample_indices_`) or keep; datakit then writes the rows;
* no row is ever deleted: `undersample` sets `keep=False` with `balance_reason="undersampled"`
  and a failures row (reason `undersampled`); `oversample`, `smote_pixels` and `smote` add rows
  with their own `origin` and `parent_ids`. A parent that cannot be read is a failures row.

Strategies:

* `none` - nothing changes; the report still has the counts.
* `class_weights` (default) - nothing changes; the report (and OUT/class_weights.json) carries
  `class_weights[c] = n / (n_classes * n_c)` for the trainer.
* `oversample` - `RandomOverSampler` picks which originals to repeat; each repeat is a freshly
  augmented image of its parent (the caller's `make_variant`: the augment pipeline, seeded per
  copy), `origin="oversampled"`, `parent_ids=[parent]`, the parent's label, split and groups.
* `undersample` - a class above its target first loses augment variants (seeded at random),
  then, when those are not enough, originals chosen by `RandomUnderSampler`; both are marked.
* `smote_pixels` - the weaker option, kept for comparison: SMOTE interpolation on raw pixels
  (train images resized to `pixels_size` x `pixels_size` RGB). The results are blended "ghost"
  images, not plausible photos. datakit does the interpolation itself (the same rule as
  imblearn's SMOTE: a random class member, one of its `k_neighbors` nearest same-class
  neighbours, a uniform gap), per class and on uint8 storage, so every synthetic row knows its
  two parents exactly: `origin="smote_pixels"`, `parent_ids=[sample, neighbour]`, PNG.
* `smote` - SMOTE on embeddings (`datakit embed` vectors: `ctx.embeddings`, or `vectors=`):
  synthetic *vectors*, not images, for a linear-probe head. Each synthetic row has
  `origin="smote"`, `parent_ids=[sample, neighbour]`, no image (`path` is null) and its vector
  in `OUT/embeddings.parquet`. Its `image_id` is the sha256 of the vector's float32 bytes.
  Trainers that need pixels skip these rows.

When vectors are at hand the stage carries them forward: OUT/embeddings.parquet holds the
vectors of the rows in its manifest plus the synthetic ones, so the trainer finds them there.

Re-running is idempotent: rows an earlier balance run added (`origin` in `BALANCE_ORIGINS`) are
removed and regenerated, and rows an earlier run marked undersampled are restored first.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from imblearn.over_sampling import RandomOverSampler
from imblearn.under_sampling import RandomUnderSampler
from PIL import Image

from datakit.balance.params import KEY, BalanceParams, class_weights, imbalance, normalise_target
from datakit.errors import ManifestError, ParamsError
from datakit.images import EXTENSIONS, ImageRejected, load_image
from datakit.stage import (
    ORIGINAL,
    OVERSAMPLED,
    SMOTE,
    SPLIT,
    StageContext,
    StageResult,
    check_kind,
    child_row,
    derived_row,
    failure_rows,
    origins,
    training_rows,
)

SMOTE_PIXELS = "smote_pixels"  # balance's own origin: a pixel blend of two train images
BALANCE_ORIGINS = frozenset({OVERSAMPLED, SMOTE_PIXELS, SMOTE})
UNDERSAMPLED = "undersampled"
COUNTS = "rows training uses (kept train rows, every origin)"
FAILURE_COLUMNS = ["image_id", "path", "label", "stage", "reason", "detail"]
# Extra tries per oversampled copy when an augmented copy has the same bytes as an existing image.
_RETRIES = 8
# Rows synthesised per chunk in smote_pixels (bounds the float working set).
_CHUNK = 1024

# make_variant(pixels, seed, key, k) -> (bytes, extension, format, width, height, made_with): an
# augmented copy seeded from (seed, key, k). The CLI builds it from the augment pipeline
# (`datakit.augment.variant_maker`); balance never imports augment.
MakeVariant = Callable[[np.ndarray, int, str, int], tuple[bytes, str, str, int, int, dict[str, Any]]]
# (image_ids, float32 vectors) or (image_ids, vectors, embed.json meta)
Vectors = tuple[Any, ...]


def training_counts(df: pd.DataFrame) -> dict[str, int]:
    """Rows per class that training uses (`stage.training_rows`)."""
    return {str(k): int(v) for k, v in sorted(Counter(df.loc[training_rows(df), "label"].astype(str)).items())}


def prepare(df: pd.DataFrame, where: Any = "the manifest") -> pd.DataFrame:
    """A copy with origin / parent_ids / balance_reason present and an earlier balance undone."""
    check_kind(df, Path(str(where)), [SPLIT])
    out = df.copy()
    out["origin"] = origins(out)
    out = out[~out["origin"].isin(BALANCE_ORIGINS)].copy()
    if "parent_ids" not in out.columns:
        out["parent_ids"] = [[] for _ in range(len(out))]
    else:
        out["parent_ids"] = [list(v) if isinstance(v, (list, tuple, np.ndarray)) else [] for v in out["parent_ids"]]
    if "balance_reason" not in out.columns:
        out["balance_reason"] = None
    else:
        undone = out["balance_reason"].eq(UNDERSAMPLED)
        if undone.any() and "keep" in out.columns:
            out.loc[undone, "keep"] = True
        out.loc[undone, "balance_reason"] = None
        out["balance_reason"] = out["balance_reason"].astype(object)
    if "augment_params" not in out.columns:
        out["augment_params"] = None
    return out.reset_index(drop=True)


def parent_pool(df: pd.DataFrame) -> pd.Series:
    """The rows new rows are made from: kept train originals; for a class with none, its other
    training rows that have a file."""
    train = training_rows(df)
    pool = train & df["origin"].eq(ORIGINAL)
    covered = set(df.loc[pool, "label"].astype(str))
    return pool | (train & ~df["label"].astype(str).isin(covered) & df["path"].notna())


def run(manifest: pd.DataFrame, params: BalanceParams, ctx: StageContext, *, make_variant: MakeVariant | None = None,
        vectors: Vectors | None = None) -> StageResult:
    """The balanced manifest, its report and failures (see the module docstring).

    `make_variant` makes oversampled copies; `vectors` feed `smote` (default: read from
    `ctx.embeddings` when set). With an output folder the stage also writes
    OUT/class_weights.json, OUT/report.html and (with vectors) OUT/embeddings.parquet; the
    synthetic vectors are in `extra["new_vectors"]` by their row's image_id.
    """
    meta: dict[str, Any] = {}
    if vectors is None and ctx.embeddings is not None:
        from datakit.vectors import read_embeddings

        vectors = read_embeddings(ctx.embeddings)
    if vectors is not None:
        meta = dict(vectors[2]) if len(vectors) > 2 else {}
        vectors = (list(map(str, vectors[0])), np.asarray(vectors[1], dtype=np.float32))
    if params.strategy == SMOTE and vectors is None:
        raise ParamsError(
            f"{KEY}.strategy smote interpolates embeddings: run `datakit embed` on the input first and pass its "
            f"folder (INPUT/embeddings.parquet, {KEY}.embeddings or --embeddings); or use smote_pixels (weaker), "
            "oversample, undersample or class_weights"
        )
    out = prepare(manifest, ctx.input or "the manifest")
    failed: list[dict[str, Any]] = []
    counts = training_counts(out)
    pool = parent_pool(out)
    originals = {str(k): int(v) for k, v in Counter(out.loc[training_rows(out) & out["origin"].eq(ORIGINAL), "label"].astype(str)).items()}
    y = out.loc[pool, "label"].astype(str).to_numpy()
    positions = np.flatnonzero(pool.to_numpy())
    added: list[dict[str, Any]] = []
    new_vectors: dict[str, np.ndarray] = {}
    undersampled = pd.Index([])
    resolved: dict[str, int] | None = None

    if params.strategy in ("oversample", SMOTE_PIXELS, SMOTE) and len(counts) >= 2:
        resolved = normalise_target(params.target, counts, "over")
        in_pool = Counter(y.tolist())
        # What each class's pool must reach so that its training rows reach the target.
        goal = {c: in_pool[c] + resolved[c] - counts[c] for c in resolved if in_pool[c]}
        if params.strategy == "oversample":
            added = _oversample(out, positions, y, goal, params, make_variant, ctx, failed)
        elif params.strategy == SMOTE:
            added = _smote_embeddings(out, positions, y, goal, params, vectors, new_vectors, failed)  # type: ignore[arg-type]
        else:
            added = _smote_pixels(out, positions, y, goal, params, ctx, failed)
    elif params.strategy == "undersample" and len(counts) >= 2:
        resolved = normalise_target(params.target, counts, "under")
        undersampled = _undersample(out, counts, resolved, params.seed)
        if "keep" not in out.columns:
            out["keep"] = True
        out.loc[undersampled, "keep"] = False
        out.loc[undersampled, "balance_reason"] = UNDERSAMPLED

    failures = pd.DataFrame(failed, columns=FAILURE_COLUMNS)
    if len(undersampled):
        labels = out.loc[undersampled, "label"].astype(str)
        detail = [f"class {c!r}: {counts[c]} training rows brought down to the target {resolved[c]}"  # type: ignore[index]
                  for c in labels]
        failures = pd.concat([failure_rows(out, undersampled, KEY, UNDERSAMPLED, detail), failures], ignore_index=True)
    if added:
        out = _append(out, added)
    after = training_counts(out)
    reasons = failures["reason"].value_counts()
    report: dict[str, Any] = {
        "strategy": params.strategy,
        "params": params.model_dump(),
        "target": resolved,
        "counts": COUNTS,
        "counts_before": counts,
        "counts_after": after,
        "originals_before": dict(sorted(originals.items())),
        "imbalance_before": imbalance(counts),
        "imbalance_after": imbalance(after),
        "rows_added": dict(sorted(Counter(r["origin"] for r in added).items())),
        "rows_undersampled": int(len(undersampled)),
        # Weights of the rows the trainer will see (for class_weights/none: the rows as they are).
        "class_weights": class_weights(after),
        "failures": int(len(failures)),
        "failures_by_reason": {str(r): int(reasons[r]) for r in sorted(reasons.index)},
    }
    if params.strategy == SMOTE:
        report["note"] = (
            "smote adds embedding vectors, not images (path is null): only a linear probe on embeddings "
            "trains on them; fine-tuning on pixels sees the originals and class weights"
        )
    if params.strategy == SMOTE_PIXELS:
        report["note"] = (
            "smote_pixels interpolates raw pixels: the synthetic images are blended ghosts, "
            "a weaker option than oversample or smote on embeddings"
        )
    files = _write_side_files(out, report, ctx, vectors, new_vectors, meta) if ctx.out is not None else {}
    return StageResult(manifest=out, report=report, failures=failures, files=files, extra={"new_vectors": new_vectors})


def _append(out: pd.DataFrame, added: list[dict[str, Any]]) -> pd.DataFrame:
    new = pd.DataFrame(added, columns=out.columns)
    for col in out.columns:
        if new[col].dtype != out[col].dtype:
            if pd.api.types.is_integer_dtype(out[col].dtype) and new[col].isna().any():
                # smote rows have no width/height/bytes: nullable ints keep the column numeric
                out[col] = out[col].astype("Int64")
                new[col] = new[col].astype("Int64")
                continue
            try:
                new[col] = new[col].astype(out[col].dtype)
            except (TypeError, ValueError):
                pass
    return pd.concat([out, new], ignore_index=True)


def _write_side_files(out: pd.DataFrame, report: dict[str, Any], ctx: StageContext, vectors: Vectors | None,
                      new_vectors: dict[str, np.ndarray], meta: dict[str, Any]) -> dict[str, Path]:
    """OUT/class_weights.json (for the trainer), OUT/report.html (for a person) and, when vectors
    were at hand, OUT/embeddings.parquet: those of the rows in the manifest plus the synthetic ones."""
    from datakit.balance.page import write_balance_page
    from datakit.fsutil import atomic_write_text
    from datakit.vectors import EMBEDDINGS, META, write_embeddings

    folder = Path(ctx.out)  # type: ignore[arg-type]
    folder.mkdir(parents=True, exist_ok=True)
    files = {"class_weights": folder / "class_weights.json", "page": folder / "report.html"}
    atomic_write_text(files["class_weights"], json.dumps(report["class_weights"], indent=2, sort_keys=True) + "\n")
    write_balance_page(out, Path(ctx.root), report, files["page"])
    if vectors is not None:
        ids, X = vectors[0], vectors[1]
        wanted = set(out["image_id"].astype(str))
        rows = [k for k, iid in enumerate(ids) if iid in wanted]
        all_ids = [ids[k] for k in rows] + list(new_vectors)
        X_all = np.concatenate([X[rows], np.stack(list(new_vectors.values()))]) if new_vectors else X[rows]
        files["embeddings"] = folder / EMBEDDINGS
        write_embeddings(files["embeddings"], all_ids, X_all)
        atomic_write_text(folder / META, json.dumps({**meta, "synthetic_rows": len(new_vectors)}, indent=2, sort_keys=True) + "\n")
    return files


def _undersample(out: pd.DataFrame, counts: dict[str, int], resolved: dict[str, int], seed: int) -> pd.Index:
    """The rows to mark so that each class's training rows come down to its target: derived
    rows (augment variants) first, at random, then originals chosen by RandomUnderSampler."""
    train = training_rows(out)
    derived = train & out["origin"].ne(ORIGINAL)
    labels = out["label"].astype(str)
    rng = np.random.default_rng(seed)
    dropped: list[Any] = []
    rest: dict[str, int] = {}
    for c in sorted(counts):
        excess = counts[c] - resolved[c]
        mine = out.index[derived & labels.eq(c)].to_numpy()
        take = min(max(excess, 0), len(mine))
        if take:
            dropped.extend(sorted(rng.permutation(mine)[:take].tolist()))
        rest[c] = max(excess, 0) - take
    if any(rest.values()):
        originals = train & ~derived
        y = labels[originals].to_numpy()
        positions = out.index[originals].to_numpy()
        have = Counter(y.tolist())
        goal = {c: have[c] - rest.get(c, 0) for c in sorted(have)}
        chosen = np.zeros(len(y), dtype=bool)
        if len(have) >= 2:
            sampler = RandomUnderSampler(sampling_strategy=goal, random_state=seed)
            sampler.fit_resample(np.arange(len(y)).reshape(-1, 1), y)
            chosen[sampler.sample_indices_] = True
        else:  # one class: imblearn refuses a single class
            for c, n in goal.items():
                chosen[rng.permutation(np.flatnonzero(y == c))[:n]] = True
        dropped.extend(positions[~chosen].tolist())
    return pd.Index(sorted(dropped))


def _fail(failed: list[dict[str, Any]], parent: dict[str, Any], reason: str, detail: str) -> None:
    failed.append({"image_id": str(parent["image_id"]), "path": parent.get("path"), "label": parent.get("label"),
                   "stage": KEY, "reason": reason, "detail": detail})


def _load(root: Path, parent: dict[str, Any], failed: list[dict[str, Any]]) -> Image.Image | None:
    try:
        return load_image(root, str(parent["path"]))
    except ImageRejected as exc:
        _fail(failed, parent, exc.reason, exc.detail)
    except OSError as exc:
        _fail(failed, parent, "missing_file" if isinstance(exc, FileNotFoundError) else "decode_error", str(exc))
    return None


def _child(parent: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """`stage.child_row`, without the parent's balance decision."""
    row = child_row(parent, **kwargs)
    row["balance_reason"] = None
    return row


def _repeats(y: np.ndarray, goal: dict[str, int], seed: int) -> np.ndarray:
    """Positions in `y` to repeat so that each class reaches `goal`, chosen by RandomOverSampler."""
    if len(set(y.tolist())) < 2:  # one class: imblearn refuses a single class
        rng = np.random.default_rng(seed)
        return np.concatenate([rng.choice(np.flatnonzero(y == c), n - int((y == c).sum())) for c, n in goal.items()])
    sampler = RandomOverSampler(sampling_strategy=goal, random_state=seed)
    sampler.fit_resample(np.arange(len(y)).reshape(-1, 1), y)
    return sampler.sample_indices_[len(y) :]  # the first len(y) are the rows themselves


def _oversample(
    out: pd.DataFrame,
    positions: np.ndarray,
    y: np.ndarray,
    goal: dict[str, int],
    params: BalanceParams,
    make_variant: MakeVariant | None,
    ctx: StageContext,
    failed: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    if make_variant is None:
        raise ParamsError(
            f"{KEY}.strategy oversample needs an augment pipeline with transforms so copies differ "
            "(the augment params give none: set augment.preset or augment.transforms)"
        )
    root, store = Path(ctx.root), ctx.store
    seen: set[str] = set(out["image_id"].astype(str))
    records = out.to_dict("records")
    copies: Counter[int] = Counter()
    pixels_cache: dict[int, np.ndarray | None] = {}
    rows: list[dict[str, Any]] = []
    repeats = _repeats(y, goal, params.seed)
    ctx.progress.start("oversample", len(repeats))
    for i in repeats:
        ctx.progress.advance("oversample")
        parent = records[positions[i]]
        pid = str(parent["image_id"])
        if i not in pixels_cache:
            im = _load(root, parent, failed)
            pixels_cache[i] = None if im is None else np.asarray(im)
        pixels = pixels_cache[i]
        if pixels is None:
            continue
        for _ in range(_RETRIES):
            k = copies[i]
            copies[i] += 1
            try:
                # Salted key: a copy never reproduces `datakit augment`'s variant k of the same parent.
                data, ext, fmt, width, height, made = make_variant(pixels, params.seed, f"{KEY}:{pid}", k)
            except Exception as exc:  # noqa: BLE001 - one bad copy never stops the run
                _fail(failed, parent, "transform_error", f"{type(exc).__name__}: {exc}")
                break
            image_id, rel = store.put(data, ext)
            if image_id in seen:
                continue  # the transforms sampled nothing visible: try the next seed
            seen.add(image_id)
            rows.append(
                _child(
                    parent, root=root, store=store, image_id=image_id, rel=rel, width=width, height=height, fmt=fmt,
                    nbytes=len(data), origin=OVERSAMPLED, parent_ids=[pid],
                    made_with={**made, "copy": k, "strategy": "oversample"},
                )
            )
            break
        else:
            _fail(failed, parent, "duplicate_bytes", f"{_RETRIES} augmented copies all repeated stored bytes")
    return rows


def _class_members(y: np.ndarray, goal: dict[str, int]) -> Iterator[tuple[str, np.ndarray, int]]:
    for label in sorted(goal):
        members = np.flatnonzero(y == label)
        need = goal[label] - len(members)
        if need > 0:
            yield label, members, need


def _too_few(failed: list[dict[str, Any]], label: str, n: int) -> None:
    _fail(failed, {"image_id": "", "label": label}, "smote_too_few",
          f"class {label!r} has {n} usable train row(s); SMOTE needs 2")


def _smote_pixels(
    out: pd.DataFrame,
    positions: np.ndarray,
    y: np.ndarray,
    goal: dict[str, int],
    params: BalanceParams,
    ctx: StageContext,
    failed: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    from datakit.balance.smote import interpolate

    root, store = Path(ctx.root), ctx.store
    size = params.pixels_size
    rng = np.random.default_rng(params.seed)
    records = out.to_dict("records")
    seen: set[str] = set(out["image_id"].astype(str))
    rows: list[dict[str, Any]] = []
    for label, members, need in _class_members(y, goal):
        # Per class, uint8 rows filled in place: n x size*size*3 bytes (64x64: 12 KiB an image).
        X = np.empty((len(members), size * size * 3), dtype=np.uint8)
        loaded: list[int] = []
        for i in members:
            parent = records[positions[i]]
            im = _load(root, parent, failed)
            if im is None:
                continue
            im = im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            X[len(loaded)] = np.asarray(im, dtype=np.uint8).reshape(-1)
            loaded.append(int(i))
        if len(loaded) < 2:
            _too_few(failed, label, len(loaded))
            continue
        X = X[: len(loaded)]
        for a_idx, b_idx, gaps, synth in interpolate(X, need, params.k_neighbors, rng, chunk=_CHUNK):
            for j in range(len(a_idx)):
                pa = records[positions[loaded[a_idx[j]]]]
                pb = records[positions[loaded[b_idx[j]]]]
                data = _png(synth[j].reshape(size, size, 3))
                image_id, rel = store.put(data, EXTENSIONS["PNG"])
                if image_id in seen:
                    # e.g. gap 0 twice on one member: the same bytes are one image, reported not repeated.
                    _fail(failed, pa, "duplicate_bytes", f"synthetic image equals {image_id}")
                    continue
                seen.add(image_id)
                rows.append(
                    _child(
                        pa, root=root, store=store, image_id=image_id, rel=rel, width=size, height=size,
                        fmt="PNG", nbytes=len(data), origin=SMOTE_PIXELS,
                        parent_ids=[str(pa["image_id"]), str(pb["image_id"])],
                        made_with={"strategy": SMOTE_PIXELS, "gap": float(gaps[j]), "size": size},
                    )
                )
    return rows


def _png(pixels: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _smote_embeddings(
    out: pd.DataFrame,
    positions: np.ndarray,
    y: np.ndarray,
    goal: dict[str, int],
    params: BalanceParams,
    embeddings: tuple[list[str], np.ndarray],
    vectors: dict[str, np.ndarray],
    failed: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    from datakit.balance.smote import interpolate
    from datakit.vectors import lookup

    ids, table = embeddings[0], embeddings[1]
    rng = np.random.default_rng(params.seed)
    records = out.to_dict("records")
    all_vecs, found = lookup(ids, table, (str(records[p]["image_id"]) for p in positions))
    missing = [str(records[positions[i]]["image_id"]) for i in np.flatnonzero(~found)]
    if missing:
        raise ManifestError(
            f"{KEY}.strategy smote: {len(missing)} train image(s) have no embedding (e.g. {', '.join(missing[:3])}); "
            "run `datakit embed` on this manifest (it only computes what is missing)"
        )
    seen: set[str] = set(out["image_id"].astype(str))
    rows: list[dict[str, Any]] = []
    for label, members, need in _class_members(y, goal):
        if len(members) < 2:
            _too_few(failed, label, len(members))
            continue
        X = all_vecs[members]
        for a_idx, b_idx, gaps, synth in interpolate(X, need, params.k_neighbors, rng, chunk=_CHUNK):
            for j in range(len(a_idx)):
                pa = records[positions[members[a_idx[j]]]]
                pb = records[positions[members[b_idx[j]]]]
                vec = np.ascontiguousarray(synth[j], dtype=np.float32)
                image_id = hashlib.sha256(vec.tobytes()).hexdigest()
                if image_id in seen:
                    _fail(failed, pa, "duplicate_bytes", f"synthetic vector equals {image_id}")
                    continue
                seen.add(image_id)
                vectors[image_id] = vec
                row = derived_row(pa, image_id=image_id, origin=SMOTE, parent_ids=[str(pa["image_id"]), str(pb["image_id"])],
                                  made_with={"strategy": SMOTE, "gap": float(gaps[j])})
                row["balance_reason"] = None
                rows.append(row)
    return rows
