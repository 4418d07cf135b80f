"""`datakit balance`: class balancing of the train split, honestly labelled (issue 5).

The rules (house style 9 and 13, reliability.md SPL-05):

* only rows with `split == "train"`, `keep` true and `origin` original (or missing) are counted
  and resampled; val and test rows, augmented rows and rows already dropped come back unchanged;
* `balance.target` is normalised first, through imbalanced-learn's own `check_sampling_strategy`,
  into the final per-class count (`normalise_target`); every later step reads only that dict;
* indices first, rows second: the imblearn sampler is fitted on row positions only and says
  which originals to repeat (`sample_indices_`) or keep; datakit then writes the rows;
* no original row is ever deleted: `undersample` sets `keep=False` with
  `balance_reason="undersampled"`; `oversample` and `smote_pixels` add rows with their own
  `origin` and `parent_ids`.

Strategies:

* `none` - nothing changes; the report still has the counts.
* `class_weights` (default) - nothing changes; the report carries
  `class_weights[c] = n / (n_classes * n_c)` for the trainer.
* `oversample` - `RandomOverSampler` picks which originals to repeat; each repeat is a freshly
  augmented image of its parent (the augment pipeline, seeded per copy), `origin="oversampled"`,
  `parent_ids=[parent]`, the parent's label, split and groups.
* `undersample` - `RandomUnderSampler` picks the originals to keep; the others are marked.
* `smote_pixels` - the weaker option, kept for comparison: SMOTE interpolation on raw pixels
  (train images resized to `pixels_size` x `pixels_size` RGB). The results are blended "ghost"
  images, not plausible photos. datakit does the interpolation itself (the same rule as
  imblearn's SMOTE: a random class member, one of its `k_neighbors` nearest same-class
  neighbours from `NearestNeighbors`, a uniform gap), per class and on uint8 storage, so every
  synthetic row knows its two parents exactly: `origin="smote_pixels"`,
  `parent_ids=[sample, neighbour]`, saved as PNG at `pixels_size`.
* `smote` - SMOTE on embeddings (`datakit embed` vectors, from `INPUT/embeddings.parquet`,
  `balance.embeddings` or `--embeddings`): synthetic *vectors*, not images, for a linear-probe
  head. The same interpolation rule per class; each synthetic row has `origin="smote"`,
  `parent_ids=[sample, neighbour]`, no image (`path` is null) and its vector in
  `OUT/embeddings.parquet` (the input vectors plus the synthetic ones). Its `image_id` is the
  sha256 of the vector's float32 bytes. Trainers that need pixels skip these rows.

SMOTE needs neighbours: `datakit.smote` finds them exactly, in blocks, on uint8 pixels or float32
vectors, so memory stays at the class's own storage plus a bounded working set.

Re-running is idempotent: rows an earlier balance run added (`origin` in `BALANCE_ORIGINS`) are
removed and regenerated, and rows an earlier run marked undersampled are restored first.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from imblearn.over_sampling import RandomOverSampler
from imblearn.under_sampling import RandomUnderSampler
from imblearn.utils import check_sampling_strategy
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator

from datakit.augment import AugmentParams, apply, build_pipeline, child_row, derived_row, encode, variant_seed
from datakit.errors import ManifestError, ParamsError
from datakit.images import EXTENSIONS, ImageRejected, ImageStore, load_image
from datakit.params import parse_section

KEY = "balance"
ORIGINAL = "original"
OVERSAMPLED = "oversampled"
SMOTE_PIXELS = "smote_pixels"
SMOTE = "smote"
BALANCE_ORIGINS = frozenset({OVERSAMPLED, SMOTE_PIXELS, SMOTE})
UNDERSAMPLED = "undersampled"
TARGET_FORMS = (
    "'auto', 'minority', 'not minority', 'not majority', 'all' (over-sampling), "
    "'majority', 'not minority', 'not majority', 'all', 'auto' (under-sampling), "
    "a ratio 0 < r <= 1 (minority / majority after resampling), "
    "an int n (every class brought to n), or a {label: count} mapping"
)
# Extra tries per oversampled copy when an augmented copy has the same bytes as an existing image.
_RETRIES = 8
# Rows synthesised per chunk in smote_pixels (bounds the float working set).
_CHUNK = 1024


class BalanceParams(BaseModel):
    """params.yaml `balance:`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Literal["none", "oversample", "undersample", "class_weights", "smote_pixels", "smote"] = Field(
        "class_weights", description="how the train split is balanced"
    )
    # int before float so that `200` stays a count and `0.5` a ratio (pydantic smart union).
    target: str | int | float | dict[str, int] = Field(
        "auto", description="imblearn sampling_strategy: 'auto', a ratio, an int count or {label: count}"
    )
    seed: int = 0
    pixels_size: int = Field(32, ge=4, le=512, description="side of the images smote_pixels interpolates")
    k_neighbors: int = Field(5, ge=1, description="neighbours SMOTE interpolates towards")
    embeddings: str | None = Field(None, description="smote: an embed folder or embeddings.parquet (default: INPUT/embeddings.parquet)")

    @field_validator("target")
    @classmethod
    def _target_shape(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError(f"expected one of {TARGET_FORMS}")
        if isinstance(v, float) and not 0.0 < v <= 1.0:
            raise ValueError(f"a ratio must be in (0, 1] (allowed forms: {TARGET_FORMS})")
        if isinstance(v, int) and v < 1:
            raise ValueError(f"a count must be at least 1 (allowed forms: {TARGET_FORMS})")
        if isinstance(v, dict) and any(n < 0 for n in v.values()):
            raise ValueError("per-class counts must be >= 0")
        return v


def parse_balance(data: dict[str, Any] | None, prefix: str = KEY) -> BalanceParams:
    """Validate a `balance:` mapping; any error is a ParamsError naming `balance.<key>`."""
    return parse_section(BalanceParams, data, prefix, forms={"target": f"expected one of {TARGET_FORMS}"})


def normalise_target(
    target: str | int | float | dict[str, int],
    counts: dict[str, int],
    kind: Literal["over", "under"],
) -> dict[str, int]:
    """The per-class count after resampling, for every class in `counts`.

    Strings, a binary float ratio and dicts go straight through imblearn's
    `check_sampling_strategy` (which answers "samples to add" for over-sampling and "samples to
    keep" for under-sampling). A float ratio with more than two classes - which imblearn only
    accepts as a dict - is turned into one: over-sampling brings every class up to
    `int(ratio * majority)`, under-sampling cuts every class down to `int(minority / ratio)`.
    An int `n` means every class up to n (over) or down to n (under). Errors are ParamsError
    naming `balance.target`.
    """
    counts = {str(k): int(v) for k, v in counts.items() if int(v) > 0}
    if not counts:
        return {}
    if kind not in ("over", "under"):
        raise ValueError(f"kind must be 'over' or 'under' (got {kind!r})")
    strategy: Any = target
    if isinstance(target, bool):
        raise ParamsError(f"{KEY}.target: expected one of {TARGET_FORMS} (got {target!r})")
    if isinstance(target, int):
        if target < 1:
            raise ParamsError(f"{KEY}.target: a count must be at least 1 (got {target!r})")
        if kind == "over":
            strategy = {c: max(n, target) for c, n in counts.items()}
        else:
            strategy = {c: min(n, target) for c, n in counts.items()}
    elif isinstance(target, float):
        if not 0.0 < target <= 1.0:
            raise ParamsError(
                f"{KEY}.target: a ratio must be in (0, 1] (got {target!r}; allowed forms: {TARGET_FORMS})"
            )
        if len(counts) > 2:
            if kind == "over":
                goal = int(target * max(counts.values()))
                strategy = {c: max(n, goal) for c, n in counts.items()}
            else:
                goal = int(min(counts.values()) / target)
                strategy = {c: min(n, goal) for c, n in counts.items()}
    elif isinstance(target, dict):
        strategy = {str(k): v for k, v in target.items()}
        unknown = sorted(set(strategy) - set(counts))
        if unknown:
            raise ParamsError(
                f"{KEY}.target: unknown class(es) {', '.join(map(repr, unknown))} "
                f"(train classes: {', '.join(sorted(counts))})"
            )
        bad = {
            k: v for k, v in strategy.items() if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0
        }
        if bad:
            raise ParamsError(f"{KEY}.target: per-class counts must be whole numbers >= 0 (got {bad!r})")
    elif not isinstance(target, str):
        raise ParamsError(f"{KEY}.target: expected one of {TARGET_FORMS} (got {target!r})")

    labels = sorted(counts)
    y = np.repeat(np.array(labels, dtype=object), [counts[c] for c in labels])
    if len(labels) < 2:
        return dict(counts)  # one class: nothing to balance (imblearn refuses a single class)
    try:
        resolved = check_sampling_strategy(strategy, y, "over-sampling" if kind == "over" else "under-sampling")
    except ValueError as exc:
        detail = " ".join(str(exc).split())
        if isinstance(target, str) and "needs to be one of" in detail:
            detail = f"unknown form {target!r}"
        raise ParamsError(f"{KEY}.target: {detail} ({kind}-sampling; allowed forms: {TARGET_FORMS})") from None
    out = dict(counts)
    for label, n in resolved.items():
        label = str(label)
        out[label] = counts[label] + int(n) if kind == "over" else int(n)
    return out


def class_weights(counts: dict[str, int]) -> dict[str, float]:
    """sklearn's "balanced" weights: n / (n_classes * n_c)."""
    counts = {c: n for c, n in counts.items() if n > 0}
    total = sum(counts.values())
    return {c: total / (len(counts) * n) for c, n in sorted(counts.items())}


def _imbalance(counts: dict[str, int]) -> float | None:
    values = [n for n in counts.values() if n > 0]
    return round(max(values) / min(values), 3) if values else None


def _kept(df: pd.DataFrame) -> pd.Series:
    # Same reading of `keep` as split.py and augment.py: a missing value is not kept.
    return df["keep"].fillna(False).astype(bool) if "keep" in df.columns else pd.Series(True, index=df.index)


def _train_originals(df: pd.DataFrame) -> pd.Series:
    return df["split"].eq("train") & _kept(df) & df["origin"].eq(ORIGINAL)


def _train_counts(df: pd.DataFrame, origins: frozenset[str]) -> dict[str, int]:
    mask = df["split"].eq("train") & _kept(df) & df["origin"].isin(origins)
    return {str(k): int(v) for k, v in sorted(Counter(df.loc[mask, "label"].astype(str)).items())}


def _prepare(df: pd.DataFrame) -> pd.DataFrame:
    """A copy with origin / parent_ids / balance_reason present and an earlier balance undone."""
    out = df.copy()
    if "split" not in out.columns:
        raise ParamsError("balance needs a split manifest (no `split` column): run `datakit split` first")
    out["origin"] = out["origin"].fillna(ORIGINAL) if "origin" in out.columns else ORIGINAL
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


def run(
    df: pd.DataFrame,
    params: BalanceParams,
    *,
    root: Path,
    store: ImageStore,
    augment: AugmentParams | None = None,
    failures: list[dict[str, Any]] | None = None,
    embeddings: tuple[list[str], np.ndarray] | None = None,
    new_vectors: dict[str, np.ndarray] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The balanced manifest and its report (see the module docstring).

    `failures` (when given) receives `{image_id (parent), label, reason, detail}` for every
    original whose image could not be read or transformed; such parents are skipped.
    `embeddings` (image_ids, vectors) feed `smote`; `new_vectors` (when given) receives the
    synthetic vectors by their row's image_id.
    """
    if params.strategy == SMOTE and embeddings is None:
        raise ParamsError(
            f"{KEY}.strategy smote interpolates embeddings: run `datakit embed` on the input first and pass its "
            f"folder (INPUT/embeddings.parquet, {KEY}.embeddings or --embeddings); or use smote_pixels (weaker), "
            "oversample, undersample or class_weights"
        )
    root = Path(root)
    out = _prepare(df)
    failed = failures if failures is not None else []
    originals = _train_originals(out)
    counts = _train_counts(out, frozenset({ORIGINAL}))
    added: list[dict[str, Any]] = []
    undersampled = 0
    resolved: dict[str, int] | None = None
    y = out.loc[originals, "label"].astype(str).to_numpy()
    positions = np.flatnonzero(originals.to_numpy())

    if params.strategy in ("oversample", "smote_pixels", SMOTE) and len(counts) >= 2:
        resolved = normalise_target(params.target, counts, "over")
        if params.strategy == "oversample":
            added = _oversample(out, positions, y, resolved, params, augment, root, store, failed)
        elif params.strategy == SMOTE:
            vectors = new_vectors if new_vectors is not None else {}
            added = _smote_embeddings(out, positions, y, resolved, params, embeddings, vectors, failed)  # type: ignore[arg-type]
        else:
            added = _smote_pixels(out, positions, y, resolved, params, root, store, failed)
    elif params.strategy == "undersample" and len(counts) >= 2:
        resolved = normalise_target(params.target, counts, "under")
        sampler = RandomUnderSampler(sampling_strategy=resolved, random_state=params.seed)
        sampler.fit_resample(np.arange(len(y)).reshape(-1, 1), y)
        chosen = np.zeros(len(y), dtype=bool)
        chosen[sampler.sample_indices_] = True
        dropped = out.index[positions[~chosen]]
        if "keep" not in out.columns:
            out["keep"] = True
        out.loc[dropped, "keep"] = False
        out.loc[dropped, "balance_reason"] = UNDERSAMPLED
        undersampled = len(dropped)

    if added:
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
        out = pd.concat([out, new], ignore_index=True)

    after = _train_counts(out, frozenset({ORIGINAL}) | BALANCE_ORIGINS)
    report = {
        "strategy": params.strategy,
        "params": params.model_dump(),
        "target": resolved,
        "counts_before": counts,
        "counts_after": after,
        "imbalance_before": _imbalance(counts),
        "imbalance_after": _imbalance(after),
        "rows_added": dict(sorted(Counter(r["origin"] for r in added).items())),
        "rows_undersampled": undersampled,
        # Weights of the data the trainer will see: for class_weights/none the originals.
        "class_weights": class_weights(after),
        "failures": len(failed),
    }
    if params.strategy == SMOTE:
        report["note"] = (
            "smote adds embedding vectors, not images (path is null): only a linear probe on embeddings "
            "trains on them; fine-tuning on pixels sees the originals and class weights"
        )
    if params.strategy == "smote_pixels":
        report["note"] = (
            "smote_pixels interpolates raw pixels: the synthetic images are blended ghosts, "
            "a weaker option than oversample or smote on embeddings"
        )
    return out, report


def _fail(failed: list[dict[str, Any]], parent: dict[str, Any], reason: str, detail: str) -> None:
    failed.append(
        {"image_id": str(parent["image_id"]), "label": parent.get("label"), "reason": reason, "detail": detail}
    )


def _load(root: Path, parent: dict[str, Any], failed: list[dict[str, Any]]) -> Image.Image | None:
    try:
        return load_image(root, str(parent["path"]))
    except ImageRejected as exc:
        _fail(failed, parent, exc.reason, exc.detail)
    except OSError as exc:
        _fail(failed, parent, "missing_file" if isinstance(exc, FileNotFoundError) else "decode_error", str(exc))
    return None


def _child(parent: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """`augment.child_row`, without the parent's balance decision."""
    row = child_row(parent, **kwargs)
    row["balance_reason"] = None
    return row


def _oversample(
    out: pd.DataFrame,
    positions: np.ndarray,
    y: np.ndarray,
    resolved: dict[str, int],
    params: BalanceParams,
    augment: AugmentParams | None,
    root: Path,
    store: ImageStore,
    failed: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    aug = augment or AugmentParams()
    if not aug.spec():
        raise ParamsError(
            f"{KEY}.strategy oversample needs an augment pipeline with transforms so copies differ "
            f"(augment preset {aug.preset!r} has none)"
        )
    sampler = RandomOverSampler(sampling_strategy=resolved, random_state=params.seed)
    sampler.fit_resample(np.arange(len(y)).reshape(-1, 1), y)
    repeats = sampler.sample_indices_[len(y) :]  # the first len(y) are the originals themselves
    pipeline = build_pipeline(aug)
    ext = EXTENSIONS[aug.format]
    seen: set[str] = set(out["image_id"].astype(str))
    records = out.to_dict("records")
    copies: Counter[int] = Counter()
    pixels_cache: dict[int, np.ndarray | None] = {}
    rows: list[dict[str, Any]] = []
    for i in repeats:
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
            # Salted so a copy never reproduces `datakit augment`'s variant k of the same parent.
            seed = variant_seed(params.seed, f"{KEY}:{pid}", k)
            try:
                result, applied = apply(pipeline, pixels, seed)
                data = encode(result, aug.format, aug.quality)
            except Exception as exc:  # noqa: BLE001 - one bad copy never stops the run
                _fail(failed, parent, "transform_error", f"{type(exc).__name__}: {exc}")
                break
            image_id, rel = store.put(data, ext)
            if image_id in seen:
                continue  # the transforms sampled nothing visible: try the next seed
            seen.add(image_id)
            rows.append(
                _child(
                    parent, root=root, store=store, image_id=image_id, rel=rel, width=result.shape[1],
                    height=result.shape[0], fmt=aug.format, nbytes=len(data), origin=OVERSAMPLED, parent_ids=[pid],
                    made_with={"seed": seed, "copy": k, "applied": applied, "strategy": "oversample"},
                )
            )
            break
        else:
            _fail(failed, parent, "duplicate_bytes", f"{_RETRIES} augmented copies all repeated stored bytes")
    return rows


def _class_members(y: np.ndarray, resolved: dict[str, int]) -> Iterator[tuple[str, np.ndarray, int]]:
    for label in sorted(resolved):
        members = np.flatnonzero(y == label)
        need = resolved[label] - len(members)
        if need > 0:
            yield label, members, need


def _too_few(failed: list[dict[str, Any]], label: str, n: int) -> None:
    _fail(failed, {"image_id": "", "label": label}, "smote_too_few",
          f"class {label!r} has {n} usable train row(s); SMOTE needs 2")


def _smote_pixels(
    out: pd.DataFrame,
    positions: np.ndarray,
    y: np.ndarray,
    resolved: dict[str, int],
    params: BalanceParams,
    root: Path,
    store: ImageStore,
    failed: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    from datakit.smote import interpolate

    size = params.pixels_size
    rng = np.random.default_rng(params.seed)
    records = out.to_dict("records")
    seen: set[str] = set(out["image_id"].astype(str))
    rows: list[dict[str, Any]] = []
    for label, members, need in _class_members(y, resolved):
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
                data = encode(synth[j].reshape(size, size, 3), "PNG", 100)
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


def _smote_embeddings(
    out: pd.DataFrame,
    positions: np.ndarray,
    y: np.ndarray,
    resolved: dict[str, int],
    params: BalanceParams,
    embeddings: tuple[list[str], np.ndarray],
    vectors: dict[str, np.ndarray],
    failed: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    from datakit.embed import lookup
    from datakit.smote import interpolate

    ids, table = embeddings
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
    for label, members, need in _class_members(y, resolved):
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


__all__ = [
    "BALANCE_ORIGINS",
    "BalanceParams",
    "class_weights",
    "normalise_target",
    "parse_balance",
    "run",
]
