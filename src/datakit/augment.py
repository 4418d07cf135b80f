"""`datakit augment`: K seeded albumentations variants per train image, written as new rows.

The rules (issue 5, house style 8/12/14, reliability.md SPL-05, IMG-16):

* only rows with `split == "train"` and `keep` true are parents; val and test are never touched;
* the pipeline is a preset (`fashion`, `no-flip`, `aerial`, `none`) or an explicit list of
  albumentations transforms (`{"name": "HorizontalFlip", "p": 0.5, ...}`), validated when the
  params are loaded: an unknown name or a bad argument is a `ParamsError` naming
  `augment.transforms[i]`;
* randomness is drawn per variant from `sha256(f"{seed}:{image_id}:{k}")`, never from global state,
  so the same params give byte-identical files; each variant row records the parameters the
  transforms sampled (`augment_params`, JSON);
* a variant row copies its parent's columns (label, split, dup_group, split_group, provenance)
  and gets its own `image_id`, `path`, `width`, `height`, `format`, `bytes`, plus
  `origin="augmented"` and `parent_ids=[parent]`;
* a variant whose decode or transform fails is skipped and reported (`transform_error`), never
  raised; the run goes on.

`build_pipeline(params)` is what the training loop imports for on-the-fly augmentation, so
offline and online use one definition (`size=` swaps the size-keeping crop for a
RandomResizedCrop to the training size).
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import io
import os
import random
from pathlib import Path
from typing import Any, Literal

# albumentations asks PyPI for its latest version at import (a network call in the middle of a
# pipeline stage, and a stall offline): datakit turns that off unless the user set it.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import numpy as np
import pandas as pd
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from datakit.errors import ParamsError
from datakit.images import EXTENSIONS, ImageRejected, ImageStore, load_image
from datakit.stage import (
    AUGMENTED,
    ORIGINAL,
    SPLIT,
    StageContext,
    StageResult,
    check_kind,
    child_row,
    origins,
    training_rows,
)

KEY = "augment"
_BORDER_REFLECT_101 = 4  # cv2.BORDER_REFLECT_101: no black corners after a small rotation

# Presets are data in the same shape as an explicit `transforms` list, so both take one path
# through validation, construction and `resolved_config`.
_FASHION_GEOMETRY: list[dict[str, Any]] = [
    {
        "name": "Affine",
        "rotate": [-10, 10],
        "scale": [0.92, 1.08],
        "translate_percent": [-0.05, 0.05],
        "border_mode": _BORDER_REFLECT_101,
        "p": 0.7,
    },
    # A slight crop resized back to the input size: area 0.85-1 means up to ~4% off each side.
    {"name": "CropAndPad", "percent": [-0.04, 0.0], "keep_size": True, "sample_independently": True, "p": 0.5},
]
_FASHION_COLOUR: list[dict[str, Any]] = [
    {"name": "RandomBrightnessContrast", "brightness_limit": 0.15, "contrast_limit": 0.15, "p": 0.5},
    {"name": "HueSaturationValue", "hue_shift_limit": 8, "sat_shift_limit": 15, "val_shift_limit": 10, "p": 0.4},
]
PRESETS: dict[str, list[dict[str, Any]]] = {
    "fashion": [{"name": "HorizontalFlip", "p": 0.5}, *_FASHION_GEOMETRY, *_FASHION_COLOUR],
    # Text and characters: a mirror image changes the label, so no flip of any kind.
    "no-flip": [*_FASHION_GEOMETRY, *_FASHION_COLOUR],
    # Seen from above, every orientation is equally true.
    "aerial": [
        {"name": "HorizontalFlip", "p": 0.5},
        {"name": "VerticalFlip", "p": 0.5},
        {"name": "RandomRotate90", "p": 0.5},
        {"name": "RandomBrightnessContrast", "brightness_limit": 0.15, "contrast_limit": 0.1, "p": 0.5},
    ],
    "none": [],
}
FLIPS = frozenset({"HorizontalFlip", "VerticalFlip", "Transpose", "D4", "SquareSymmetry"})

# Bookkeeping entries of albumentations' applied params that are not sampled values.
_UNSAMPLED = frozenset({"shape", "bbox_matrix", "output_shape", "result_shape"})


def _transform_classes() -> dict[str, type]:
    """Every single (non-compose) transform albumentations exports, by class name."""
    out: dict[str, type] = {}
    for name in dir(A):
        obj = getattr(A, name)
        if inspect.isclass(obj) and issubclass(obj, A.BasicTransform) and not inspect.isabstract(obj):
            if obj.__module__.startswith("albumentations.core"):
                continue  # base classes (BasicTransform, DualTransform, ...), not usable alone
            out[name] = obj
    return out


_CLASSES = _transform_classes()


def _build_transform(spec: Any, key: str) -> A.BasicTransform:
    """One transform from `{"name": ..., **kwargs}`; errors name `key` (augment.transforms[i])."""
    if not isinstance(spec, dict):
        raise ParamsError(f"{key}: expected a mapping like {{name: HorizontalFlip, p: 0.5}} (got {spec!r})")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ParamsError(f"{key}.name: a transform name is required (got {name!r})")
    cls = _CLASSES.get(name)
    if cls is None:
        close = difflib.get_close_matches(name, list(_CLASSES), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ParamsError(f"{key}.name: unknown albumentations transform {name!r}{hint}")
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    # albumentations only warns about unknown arguments; here they are errors.
    accepted = {p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ParamsError(
            f"{key}: {name} has no argument(s) {', '.join(unknown)} (allowed: {', '.join(sorted(accepted))})"
        )
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        # albumentations re-raises its InitSchema ValidationError as a ValueError; list its
        # errors compactly (field: message) rather than pydantic's multi-line dump.
        cause = exc if isinstance(exc, ValidationError) else exc.__cause__
        if isinstance(cause, ValidationError):
            detail = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in cause.errors())
        else:
            detail = " ".join(str(exc).split())
        raise ParamsError(f"{key}: {name}({_short(kwargs)}) is invalid: {detail}") from None


def _short(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


class AugmentParams(BaseModel):
    """params.yaml `augment:`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["fashion", "no-flip", "aerial", "none"] = Field(
        "fashion", description="named pipeline; ignored when `transforms` is given"
    )
    transforms: list[dict[str, Any]] | None = Field(
        None, description="explicit albumentations pipeline: [{name: HorizontalFlip, p: 0.5, ...}]"
    )
    variants: int = Field(2, ge=0, le=50, description="augmented variants per train image")
    seed: int = 0
    format: Literal["JPEG", "PNG"] = "JPEG"
    quality: int = Field(92, ge=1, le=100, description="JPEG quality of the variants")

    @field_validator("transforms")
    @classmethod
    def _valid_transforms(cls, v: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if v is not None:
            for i, spec in enumerate(v):
                _build_transform(spec, f"{KEY}.transforms[{i}]")  # raises ParamsError (a ValueError)
        return v

    def spec(self) -> list[dict[str, Any]]:
        """The transform list in force: the explicit one, else the preset's."""
        return [dict(t) for t in (self.transforms if self.transforms is not None else PRESETS[self.preset])]


def parse_augment(data: dict[str, Any] | None, prefix: str = KEY) -> AugmentParams:
    """Validate an `augment:` mapping; any error is a ParamsError naming the key."""
    from datakit.params import parse_section

    return parse_section(AugmentParams, data, prefix)


def build_pipeline(params: AugmentParams, *, size: tuple[int, int] | None = None) -> A.Compose:
    """The albumentations pipeline for `params`. Offline (size None) every transform keeps the
    image size; with `size=(h, w)` (training) the presets' slight crop becomes a
    RandomResizedCrop to that size (scale 0.85-1), and explicit pipelines get a final Resize."""
    specs = params.spec()
    transforms = []
    for i, spec in enumerate(specs):
        key = f"{KEY}.transforms[{i}]" if params.transforms is not None else f"{KEY}.preset[{params.preset}][{i}]"
        if size is not None and params.transforms is None and spec.get("name") == "CropAndPad":
            spec = {
                "name": "RandomResizedCrop",
                "size": list(size),
                "scale": [0.85, 1.0],
                "ratio": [0.9, 1.1],
                "p": 1.0,
            }
        transforms.append(_build_transform(spec, key))
    if size is not None and not any(isinstance(t, A.RandomResizedCrop) for t in transforms):
        transforms.append(A.Resize(height=size[0], width=size[1]))
    return A.Compose(transforms, save_applied_params=True)


def resolved_config(params: AugmentParams) -> dict[str, Any]:
    """What `reports/augment.json` records: the params, the pipeline as albumentations
    serialises it, and the library version (house style 14)."""
    pipeline = build_pipeline(params)
    return _jsonable(
        {
            "albumentations_version": A.__version__,
            "source": "transforms" if params.transforms is not None else f"preset:{params.preset}",
            "params": params.model_dump(),
            "transforms": params.spec(),
            "pipeline": A.to_dict(pipeline),
            "seeding": "per variant: int.from_bytes(sha256(f'{seed}:{image_id}:{k}')[:8], 'big')",
        }
    )


def variant_seed(seed: int, image_id: str, k: int) -> int:
    """The seed of variant `k` of `image_id` (independent of order, process and PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{image_id}:{k}".encode()).digest()[:8], "big")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


def apply(pipeline: A.Compose, image: np.ndarray, seed: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Run `pipeline` on `image` with randomness drawn only from `seed`; returns the image and
    the applied transforms with their sampled parameters (JSON-ready, in order)."""
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
    out = pipeline(image=image)
    applied = [
        {"name": name, "params": _jsonable({k: v for k, v in p.items() if k not in _UNSAMPLED})}
        for name, p in out.get("applied_transforms", [])
    ]
    return out["image"], applied


def encode(pixels: np.ndarray, fmt: str, quality: int) -> bytes:
    im = Image.fromarray(np.ascontiguousarray(pixels).astype(np.uint8, copy=False))
    if im.mode != "RGB":
        im = im.convert("RGB")
    buf = io.BytesIO()
    if fmt == "JPEG":
        im.save(buf, "JPEG", quality=quality)
    else:
        im.save(buf, "PNG")
    return buf.getvalue()


# Parents per task: a chunk is a few seconds of work at most. Below `_POOL_MIN_VARIANTS` variants
# (~1 s of work on one core) a local run stays in this process: starting the pool (its forkserver
# imports albumentations, ~2 s once per process) would cost more than it saves.
_MIN_CHUNK = 8
_MAX_CHUNK = 32
_POOL_MIN_VARIANTS = 256
_PIPELINES: dict[str, A.Compose] = {}


def _pipeline_for(params: AugmentParams) -> A.Compose:
    """One pipeline per worker process and params (every variant re-seeds it: `apply`)."""
    key = params.model_dump_json()
    if key not in _PIPELINES:
        _PIPELINES[key] = build_pipeline(params)
    return _PIPELINES[key]


# what one variant became: ("ok", k, seed, image_id, rel, width, height, bytes, applied) or
# ("fail", k or None for the parent, reason, detail)
_Outcome = tuple[Any, ...]


def _variants_of(pid: str, path: str, params: AugmentParams, root: Path, store: ImageStore) -> list[_Outcome]:
    """Every variant of one parent, stored; failures are outcomes, never exceptions (IMG-16)."""
    try:
        pixels = np.asarray(load_image(root, path))
    except ImageRejected as exc:
        return [("fail", None, exc.reason, exc.detail)]
    except OSError as exc:
        return [("fail", None, "missing_file" if isinstance(exc, FileNotFoundError) else "decode_error", str(exc))]
    pipeline = _pipeline_for(params)
    ext = EXTENSIONS[params.format]
    made: list[_Outcome] = []
    for k in range(params.variants):
        seed = variant_seed(params.seed, pid, k)
        try:
            result, applied = apply(pipeline, pixels, seed)
            data = encode(result, params.format, params.quality)
        except Exception as exc:  # noqa: BLE001 - one bad variant never stops the run (IMG-16)
            made.append(("fail", k, "transform_error", f"{type(exc).__name__}: {exc}"))
            continue
        image_id, rel = store.put(data, ext)
        made.append(("ok", k, seed, image_id, rel, int(result.shape[1]), int(result.shape[0]), len(data), applied))
    return made


def _augment_chunk(tasks: list[tuple[str, str]], params: AugmentParams, root: Path, store_folder: Path,
                   durable: bool) -> list[list[_Outcome]]:
    """One task of `run` (in process, a pool worker or a Dask worker): (parent id, path) pairs
    -> their variants' outcomes, in order. Files go straight into the (shared) store."""
    store = ImageStore(store_folder, durable=durable)
    return [_variants_of(pid, path, params, Path(root), store) for pid, path in tasks]


def run(manifest: pd.DataFrame, params: AugmentParams, ctx: StageContext) -> StageResult:
    """The manifest with `params.variants` augmented rows added per kept train image, their files
    in `ctx.store` (OUT/images) and their paths relative to `ctx.root`.

    The parents are the rows training uses (`stage.training_rows`) that are originals. Rows
    already marked `origin == "augmented"` (an earlier run) are dropped and regenerated, which
    gives the same files again. The variants are made on the executor of `datakit.parallel`
    (local processes, or a Dask cluster when `compute.scheduler` or DATAKIT_DASK_SCHEDULER names
    one); the result is the same wherever they run. A parent that cannot be read, and a variant
    that fails or repeats stored bytes, is a failures row (`variant`: which one, null for the
    parent) and is skipped, never raised (IMG-16).
    """
    check_kind(manifest, ctx.input or Path("the manifest"), [SPLIT])
    out = manifest.copy()
    out["origin"] = origins(out)
    out = out[out["origin"] != AUGMENTED].copy()
    out["parent_ids"] = [[] for _ in range(len(out))]
    if "augment_params" not in out.columns:
        out["augment_params"] = None
    out = out.reset_index(drop=True)
    failed: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    parents = out[training_rows(out) & out["origin"].eq(ORIGINAL)].to_dict("records")
    if params.variants and params.spec():
        rows = _make_variants(out, parents, params, ctx, failed)
    if rows:
        new = pd.DataFrame(rows, columns=out.columns)
        for col in out.columns:
            # Keep the manifest's column types (a str column emptied for variants stays str).
            if new[col].dtype != out[col].dtype:
                try:
                    new[col] = new[col].astype(out[col].dtype)
                except (TypeError, ValueError):
                    pass
        out = pd.concat([out, new], ignore_index=True)
    failures = pd.DataFrame(failed, columns=["image_id", "path", "label", "stage", "reason", "detail", "variant"])
    failures["variant"] = failures["variant"].astype("Int64")
    return StageResult(manifest=out, report=augment_report(out, failures, params, len(parents)), failures=failures)


def augment_report(out: pd.DataFrame, failures: pd.DataFrame, params: AugmentParams, parents: int) -> dict[str, Any]:
    """reports/augment.json: the resolved pipeline and what it made, per label and failure reason."""
    variants = out[out["origin"] == AUGMENTED]
    reasons = failures["reason"].value_counts()
    return {
        "pipeline": resolved_config(params),
        "originals": int((out["origin"] != AUGMENTED).sum()),
        "parents": int(parents),
        "parents_with_variants": int(variants["parent_ids"].map(lambda x: x[0]).nunique()) if len(variants) else 0,
        "variants": int(len(variants)),
        "variants_per_label": {str(k): int(v) for k, v in variants["label"].value_counts().sort_index().items()},
        "failures": int(len(failures)),
        "failures_by_reason": {str(r): int(reasons[r]) for r in sorted(reasons.index)},
    }


def _make_variants(out: pd.DataFrame, parents: list[dict[str, Any]], params: AugmentParams, ctx: StageContext,
                   failed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from datakit import parallel

    store = ctx.store
    seen: set[str] = set(out["image_id"].astype(str))
    rows: list[dict[str, Any]] = []
    tasks = [(str(p["image_id"]), str(p["path"])) for p in parents]

    def fail(parent: dict[str, Any], k: int | None, reason: str, detail: str) -> None:
        failed.append({"image_id": str(parent["image_id"]), "path": parent.get("path"), "label": parent.get("label"),
                       "stage": KEY, "reason": reason, "detail": detail, "variant": k})

    # Decode, transform, encode and store run as tasks (a local pool, or a Dask cluster whose
    # workers see the same folders); the rows are put together here, in parent order, so the
    # manifest does not depend on where or in which order the variants were made.
    compute = parallel.current()
    small = not compute.distributed and len(tasks) * params.variants < _POOL_MIN_VARIANTS
    with parallel.Executor(1) if small else parallel.executor(preload=[__name__]) as ex:
        size = parallel.auto_chunk(len(tasks), ex.workers, chunk_size=compute.chunk_size,
                                   min_chunk=_MIN_CHUNK, max_chunk=_MAX_CHUNK)
        done = ex.imap(_augment_chunk, parallel.chunked(tasks, size), params, Path(ctx.root), store.folder,
                       store.durable)
        outcomes = (one for part in done for one in part)
        ctx.progress.start("augment", len(parents))
        for parent, made in zip(parents, outcomes, strict=True):
            ctx.progress.advance("augment")
            pid = str(parent["image_id"])
            for outcome in made:
                if outcome[0] == "fail":
                    fail(parent, outcome[1], outcome[2], outcome[3])
                    continue
                _, k, seed, image_id, rel, width, height, nbytes, applied = outcome
                if image_id in seen:
                    # The transforms sampled nothing visible twice: identical bytes are one image.
                    fail(parent, k, "duplicate_bytes", f"same bytes as {image_id}")
                    continue
                seen.add(image_id)
                rows.append(child_row(
                    parent, root=Path(ctx.root), store=store, image_id=image_id, rel=rel, width=width, height=height,
                    fmt=params.format, nbytes=nbytes, origin=AUGMENTED, parent_ids=[pid],
                    made_with={"seed": seed, "variant": k, "applied": applied},
                ))
    return rows


class VariantMaker:
    """Augmented copies of one image for another stage (balance's oversampling), so that stage
    gets the augment pipeline as a callable and never imports this module: `maker(pixels,
    seed, key, k)` runs the pipeline seeded with `variant_seed(seed, key, k)` and returns
    `(encoded bytes, file extension, format, width, height, {"seed", "applied"})`."""

    def __init__(self, params: AugmentParams) -> None:
        self.params = params
        self.pipeline = build_pipeline(params)

    def __call__(self, pixels: np.ndarray, seed: int, key: str, k: int) -> tuple[bytes, str, str, int, int, dict[str, Any]]:
        s = variant_seed(seed, key, k)
        result, applied = apply(self.pipeline, pixels, s)
        data = encode(result, self.params.format, self.params.quality)
        return (data, EXTENSIONS[self.params.format], self.params.format, int(result.shape[1]), int(result.shape[0]),
                {"seed": s, "applied": applied})


def variant_maker(params: AugmentParams) -> VariantMaker | None:
    """The maker for `params`, or None when the pipeline has no transforms (copies would not differ)."""
    return VariantMaker(params) if params.spec() else None
