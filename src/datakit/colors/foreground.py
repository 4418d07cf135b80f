"""Foreground: which pixels of a picture are the product (border colour, GrabCut, or none)."""

from __future__ import annotations

import math

import numpy as np

from datakit.colors.params import ColorsParams


def _band(h: int, w: int, width: int) -> np.ndarray:
    band = np.zeros((h, w), dtype=bool)
    band[:width, :] = band[-width:, :] = True
    band[:, :width] = band[:, -width:] = True
    return band


def _band_width(h: int, w: int, p: ColorsParams) -> int:
    return max(1, min(min(h, w) // 4, int(round(p.border_width * min(h, w)))))


def border_uniformity(lab: np.ndarray, p: ColorsParams) -> tuple[np.ndarray, float]:
    """The median border colour and the share of border pixels within `border_tolerance` of it."""
    h, w = lab.shape[:2]
    border = lab[_band(h, w, _band_width(h, w, p))]
    ref = np.median(border, axis=0)
    share = float(np.mean(np.linalg.norm(border - ref, axis=1) < p.border_tolerance))
    return ref, share


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Background pixels not connected to the picture's edge become foreground."""
    import cv2

    h, w = mask.shape
    canvas = np.zeros((h + 2, w + 2), dtype=np.uint8)
    canvas[1:-1, 1:-1] = mask.astype(np.uint8)
    flood = np.zeros((h + 4, w + 4), dtype=np.uint8)
    cv2.floodFill(canvas, flood, (0, 0), 2)
    return canvas[1:-1, 1:-1] != 2


def _clean(mask: np.ndarray) -> np.ndarray:
    import cv2

    kernel = np.ones((3, 3), dtype=np.uint8)
    m = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    return cv2.morphologyEx(m, cv2.MORPH_CLOSE, kernel).astype(bool)


def mask_border(lab: np.ndarray, p: ColorsParams, ref: np.ndarray | None = None) -> np.ndarray:
    """Foreground of a picture on a plain background: far from the border colour, holes filled."""
    if ref is None:
        ref, _ = border_uniformity(lab, p)
    far = np.linalg.norm(lab - ref, axis=2) > p.border_threshold
    return _fill_holes(_clean(far))


def centred_rect(h: int, w: int, margin: float) -> tuple[int, int, int, int]:
    """(x, y, width, height) of the rectangle inset by `margin` of each side (at least 1 px)."""
    mx, my = max(1, int(round(margin * w))), max(1, int(round(margin * h)))
    return mx, my, max(1, w - 2 * mx), max(1, h - 2 * my)


def first_pass_rect(lab: np.ndarray, p: ColorsParams) -> tuple[int, int, int, int]:
    """The box around what differs from the border, padded by `margin`; the centred rectangle
    when nothing (or nearly everything) differs. Always leaves a 1-pixel frame for GrabCut."""
    import cv2

    h, w = lab.shape[:2]
    border = lab[_band(h, w, _band_width(h, w, p))].astype(np.float32)
    if len(border) > 2000:  # a regular subsample keeps the pass cheap and deterministic
        border = border[:: int(math.ceil(len(border) / 2000))]
    k = min(4, len(border))
    cv2.setRNGSeed(p.seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    _, labels, centres = cv2.kmeans(border, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    labels = labels.ravel()
    # a colour on less than a tenth of the border is the product touching the edge, not background
    share = np.bincount(labels, minlength=k) / len(labels)
    common = share >= min(0.1, float(share.max()))
    centres = centres[common]
    flat = lab.reshape(-1, 1, 3).astype(np.float32)
    dist = np.sqrt(((flat - centres[None, :, :]) ** 2).sum(axis=2)).min(axis=1).reshape(h, w)
    on_bg = common[labels]
    own = np.sqrt(((border[on_bg][:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)).min(axis=1)
    threshold = max(p.border_threshold, float(np.quantile(own, 0.95)))
    fg = _clean(dist > threshold)
    covered = float(fg.mean())
    if covered < 0.01 or covered > 0.95:
        return centred_rect(h, w, p.margin)
    ys, xs = np.nonzero(fg)
    # robust extent: ignore the outermost 0.5 % of foreground pixels on each side (specks)
    x0, x1 = np.quantile(xs, [0.005, 0.995])
    y0, y1 = np.quantile(ys, [0.005, 0.995])
    pad_x, pad_y = p.margin * w, p.margin * h
    left = int(max(1, math.floor(x0 - pad_x)))
    top = int(max(1, math.floor(y0 - pad_y)))
    right = int(min(w - 1, math.ceil(x1 + pad_x) + 1))
    bottom = int(min(h - 1, math.ceil(y1 + pad_y) + 1))
    if right - left < 4 or bottom - top < 4:
        return centred_rect(h, w, p.margin)
    return left, top, right - left, bottom - top


def mask_grabcut(rgb: np.ndarray, lab: np.ndarray, p: ColorsParams) -> np.ndarray:
    """GrabCut initialised with the first pass's rectangle; seeded (OpenCV's RNG)."""
    import cv2

    h, w = rgb.shape[:2]
    if h < 8 or w < 8:
        return np.ones((h, w), dtype=bool)
    rect = first_pass_rect(lab, p)
    mask = np.zeros((h, w), dtype=np.uint8)
    bgd = np.zeros((1, 65), dtype=np.float64)
    fgd = np.zeros((1, 65), dtype=np.float64)
    cv2.setRNGSeed(p.seed)
    try:
        cv2.grabCut(np.ascontiguousarray(rgb), mask, rect, bgd, fgd, p.grabcut_iterations, cv2.GC_INIT_WITH_RECT)
    except cv2.error:  # degenerate colour models (e.g. a flat picture): the rectangle is the answer
        x, y, rw, rh = rect
        out = np.zeros((h, w), dtype=bool)
        out[y:y + rh, x:x + rw] = True
        return out
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def foreground(rgb: np.ndarray, lab: np.ndarray, p: ColorsParams) -> tuple[np.ndarray, str]:
    """The product's mask at the working size and the method that made it."""
    h, w = rgb.shape[:2]
    if p.foreground == "none":
        return np.ones((h, w), dtype=bool), "none"
    method = p.foreground
    ref = None
    if method in ("auto", "border"):
        ref, share = border_uniformity(lab, p)
        if method == "auto":
            method = "border" if share >= p.border_uniformity else "grabcut"
    mask = mask_border(lab, p, ref) if method == "border" else mask_grabcut(rgb, lab, p)
    if mask.mean() < max(p.min_foreground, 1e-9):
        x, y, rw, rh = centred_rect(h, w, p.margin)
        mask = np.zeros((h, w), dtype=bool)
        mask[y:y + rh, x:x + rw] = True
        method += "+center"
    return mask, method
