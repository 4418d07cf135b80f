"""The colors stage: `run(manifest, ColorsParams, ctx) -> StageResult`.

Every input row is kept and gets the colour columns; an image that cannot be analysed keeps its
row with `color_error` set, and is also listed in the failures table (reason: the code before
the colon of `color_error`), so a failure is never silent. The page (`colors.html`) and the masks
folder are written to `ctx.out` and named in the result's `files`.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from datakit.colors.analyse import Job, analyse_files
from datakit.colors.page import write_page
from datakit.colors.palette import Palette, load_palette
from datakit.colors.params import COLOR_COLUMNS, COLOR_SCHEMA, MASKS, PAGE, ColorsParams
from datakit.errors import DatakitError
from datakit.manifest import is_known_reason
from datakit.stage import StageContext, StageResult, failure_rows

STAGE = "colors"
NO_IMAGE = "no_image: the row has no image file (path is null)"


def schema_of(manifest: pd.DataFrame) -> pa.Schema:
    """The output manifest's Arrow schema: the input columns as they were, then `COLOR_SCHEMA`
    (so that all-null colour columns keep their types)."""
    inputs = manifest.drop(columns=[c for c in COLOR_COLUMNS if c in manifest.columns])
    base = pa.Schema.from_pandas(inputs, preserve_index=False).remove_metadata()
    return pa.schema(list(base) + list(COLOR_SCHEMA))


def reason_of(error: str) -> str:
    """The failures-table reason for a `color_error` text: its code (before the colon) when that
    is a known reason, else `analysis_error`."""
    code = error.split(":", 1)[0].strip()
    return code if is_known_reason(code) else "analysis_error"


def run(manifest: pd.DataFrame, params: ColorsParams, ctx: StageContext, *, palette: Palette | None = None,
        page: bool = True) -> StageResult:
    """Add the colour columns to `manifest` (every row kept).

    Args:
        manifest: an earlier stage's manifest (`image_id`, `path` relative to `ctx.root`).
        params: `colors:` params (`params.masks`: write each mask to `ctx.out/masks/<image_id>.png`).
        ctx: the stage context (root, output folder, progress).
        palette: the palette (default: `load_palette(params.palette)`).
        page: write `ctx.out/colors.html` (needs `ctx.out`).

    Returns:
        StageResult: the manifest with `COLOR_COLUMNS` (its Arrow `schema`), the figures, one
        failures row per image not analysed, and `files` {"page", "masks"} that were written.
    """
    df = manifest
    if "path" not in df.columns or "image_id" not in df.columns:
        raise DatakitError("colors needs a manifest with image_id and path columns")
    palette = palette or load_palette(params.palette)
    masks_dir = Path(ctx.out) / MASKS if params.masks and ctx.out is not None else None
    t0 = time.perf_counter()
    jobs: list[Job] = []
    rows: list[int] = []
    results: list[dict[str, Any]] = [{"error": NO_IMAGE}] * len(df)
    if masks_dir is not None:
        masks_dir.mkdir(parents=True, exist_ok=True)
    for i, (iid, rel) in enumerate(zip(df["image_id"].astype(str), df["path"], strict=True)):
        if not isinstance(rel, str) or not rel:
            continue
        mask_path = str(masks_dir / f"{iid}.png") if masks_dir is not None else None
        jobs.append((str(ctx.resolve(rel)), iid, mask_path))
        rows.append(i)
    for i, res in zip(rows, analyse_files(jobs, params, palette, ui=ctx.progress), strict=True):
        results[i] = res
    seconds = time.perf_counter() - t0

    out = df.drop(columns=[c for c in COLOR_COLUMNS if c in df.columns]).reset_index(drop=True)
    first = [r["colors"][0] if r.get("colors") else None for r in results]
    out["colors"] = [r.get("colors") for r in results]
    out["color_1"] = [c["name"] if c else None for c in first]
    out["color_1_family"] = [c["family"] if c else None for c in first]
    out["color_1_hex"] = [c["hex"] if c else None for c in first]
    out["color_1_weight"] = [c["weight"] if c else None for c in first]
    out["color_method"] = [r.get("method") for r in results]
    out["color_foreground"] = [r.get("foreground") for r in results]
    out["color_mask"] = [ctx.relpath(Path(r["mask"])) if r.get("mask") else None for r in results]
    out["color_error"] = [r.get("error") for r in results]

    good = [r for r in results if "error" not in r]

    def counts(values: Any) -> dict[str, int]:
        return dict(sorted(Counter(values).items()))

    report: dict[str, Any] = {
        "images": len(out),
        "analysed": len(good),
        "failed": len(results) - len(good),
        "failed_by_reason": counts(r["error"].split(":")[0] for r in results if "error" in r),
        "methods": counts(r["method"] for r in good),
        "dominant": counts(r["colors"][0]["name"] for r in good),
        "dominant_family": counts(r["colors"][0]["family"] for r in good),
        "mean_colors_per_image": round(float(np.mean([len(r["colors"]) for r in good])), 3) if good else 0.0,
        "mean_foreground": round(float(np.mean([r["foreground"] for r in good])), 4) if good else 0.0,
        "palette": palette.source,
        "palette_colors": len(palette.names),
        "params": params.model_dump(),
        "seconds": round(seconds, 3),
        "images_per_s": round(len(jobs) / seconds, 2) if seconds > 0 and jobs else 0.0,
    }
    failed = out["color_error"].notna()
    errors = out.loc[failed, "color_error"].astype(str)
    failures = failure_rows(out, failed, STAGE, [reason_of(e) for e in errors], errors.tolist())
    files: dict[str, Path] = {}
    if page and ctx.out is not None:
        files["page"] = Path(ctx.out) / PAGE
        write_page(out, ctx.root, report, files["page"], images=params.page_images, palette=palette)
    if masks_dir is not None:
        files["masks"] = masks_dir
    return StageResult(out, report, failures, files=files, schema=schema_of(out), extra={"palette": palette})
