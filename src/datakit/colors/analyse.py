"""The colours of one picture (pure, seeded) and of many image files (a process pool)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datakit.colors.clusters import kmeans, merge_clusters, name_clusters
from datakit.colors.foreground import foreground
from datakit.colors.palette import Palette
from datakit.colors.params import ColorsParams
from datakit.colors.science import srgb_to_lab
from datakit.parallel import cores, pool_context
from datakit.stage import Progress


@dataclass
class ImageColors:
    """The result for one image: named colours, the foreground method, its share, the mask."""

    colors: list[dict[str, Any]]
    method: str
    foreground: float
    mask: np.ndarray  # bool, working size


def _work_image(rgb: np.ndarray, size: int) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    if scale >= 1.0:
        return np.ascontiguousarray(rgb)
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _sample_pixels(full: np.ndarray, mask: np.ndarray, p: ColorsParams) -> np.ndarray:
    """Up to `p.sample` product pixels (float RGB), drawn at full resolution under the working-size
    mask: downsizing would blend thin stripes and small dots into colours the product does not
    have. The mask's outer `p.erode` pixels are left out (anti-aliased edges, halos), unless that
    leaves less than a quarter of it."""
    import cv2

    if p.erode:
        kernel = np.ones((2 * p.erode + 1, 2 * p.erode + 1), dtype=np.uint8)
        core = cv2.erode(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=1).astype(bool)
        if core.sum() >= 0.25 * mask.sum():
            mask = core
    cells = np.flatnonzero(mask.ravel())
    H, W = full.shape[:2]
    h, w = mask.shape
    rng = np.random.default_rng(p.seed)
    area = max(1, (H // h) * (W // w))
    n = min(p.sample, len(cells) * area)
    pick = cells[np.sort(rng.choice(len(cells), n, replace=n > len(cells)))]
    # a random full-resolution pixel inside each picked working-size cell
    y = np.minimum(((pick // w) + rng.random(n)) * (H / h), H - 1).astype(np.intp)
    x = np.minimum(((pick % w) + rng.random(n)) * (W / w), W - 1).astype(np.intp)
    return full[y, x].astype(np.float64)


def analyse(rgb: np.ndarray, p: ColorsParams, palette: Palette) -> ImageColors:
    """Dominant named colours of the product in one RGB picture (H x W x 3 uint8).

    Pure and deterministic: the result depends only on the pixels, `p` (its seed included) and
    the palette.
    """
    full = np.asarray(rgb, dtype=np.uint8)
    work = _work_image(full, p.work_size)
    lab = srgb_to_lab(work)
    mask, method = foreground(work, lab, p)
    px_rgb = _sample_pixels(full, mask, p)
    px_lab = srgb_to_lab(px_rgb)
    clusters = merge_clusters(kmeans(px_lab, px_rgb, p.k, p.seed), p.merge_delta_e)
    colors = name_clusters(clusters, palette, max_colors=p.max_colors, min_weight=p.min_weight)
    return ImageColors(colors, method, round(float(mask.mean()), 4), mask)


def save_mask(mask: np.ndarray, size: tuple[int, int], path: Path) -> None:
    """Write a mask as an 8-bit PNG (0 background, 255 product) at `size` (width, height)."""
    from PIL import Image

    from datakit.fsutil import atomic_write_bytes

    im = Image.fromarray(mask.astype(np.uint8) * 255, "L")
    if im.size != size:
        im = im.resize(size, Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=False)
    atomic_write_bytes(path, buf.getvalue(), durable=False)


Job = tuple[str, str, str | None]  # (image file, image_id, mask file or None)


def _analyse_file(job: Job, p: ColorsParams, palette: Palette) -> dict[str, Any]:
    from datakit.images import ImageRejected, decode

    path, _, mask_path = job
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return {"error": f"missing_file: {exc.strerror or exc}"}
    try:
        im = decode(data)
        res = analyse(np.asarray(im), p, palette)
    except ImageRejected as exc:
        return {"error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - one bad picture (e.g. an OpenCV error) is a row, not a crash
        return {"error": f"analysis_error: {type(exc).__name__}: {exc}"}
    out: dict[str, Any] = {"colors": res.colors, "method": res.method, "foreground": res.foreground}
    if mask_path:
        save_mask(res.mask, im.size, Path(mask_path))
        out["mask"] = mask_path
    return out


def _analyse_chunk(jobs: list[Job], p: ColorsParams, palette: Palette) -> list[dict[str, Any]]:
    return [_analyse_file(job, p, palette) for job in jobs]


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads only compete


def analyse_files(jobs: Sequence[Job], p: ColorsParams, palette: Palette, *,
                  workers: int | None = None, ui: Progress | None = None) -> list[dict[str, Any]]:
    """Analyse image files, in input order; each result is `{colors, method, foreground[, mask]}`
    or `{error}`. `workers`: processes (0 = one per core, 1 = in this process; default params)."""
    import cv2

    jobs = list(jobs)
    n_workers = p.workers if workers is None else workers
    n_workers = min(cores() if n_workers <= 0 else n_workers, len(jobs))
    if ui:
        ui.start("colors", len(jobs))
    if n_workers <= 1:
        results = []
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            for job in jobs:
                results.append(_analyse_file(job, p, palette))
                if ui:
                    ui.advance("colors")
        finally:
            cv2.setNumThreads(threads)
        return results
    size = max(1, min(32, math.ceil(len(jobs) / (4 * n_workers))))
    chunks = [jobs[i:i + size] for i in range(0, len(jobs), size)]
    results = []
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=pool_context([__name__]), initializer=_init_worker) as pool:
        futures = [pool.submit(_analyse_chunk, chunk, p, palette) for chunk in chunks]
        for fut, chunk in zip(futures, chunks, strict=True):
            results.extend(fut.result())
            if ui:
                ui.advance("colors", len(chunk))
    return results
