"""The colors stage: the dominant colours of each image's product, named against a palette.

Catalogue colour labels are inconsistent ("salmon", "light-red", "RD") or missing. This stage
needs no training set. Per image, pure and seeded (house style 6, 7):

1. **Foreground.** The product is separated from its background at a small working size
   (`colors.work_size`). `border`: pixels far (CIELAB distance) from the median border colour are
   the product; holes are filled, so a pattern that shares the background's colour stays. It is
   fast and right for plain backgrounds. `grabcut`: a first pass models the border with a few
   colours and boxes whatever differs from them; that box, padded by `colors.margin`, or the
   centred rectangle inside `margin` when the pass finds nothing, initialises OpenCV's GrabCut.
   `auto` (the default) picks `border` when the border is uniform, else `grabcut`. `none` keeps
   every pixel. A mask covering less than `colors.min_foreground` of the picture is not trusted:
   the centred rectangle is used instead (`color_method` ends in `+center`).
2. **Clusters.** Up to `colors.sample` product pixels, a seeded sample drawn at full resolution
   under the mask less its outer `colors.erode` pixels (downsizing would blend thin stripes into
   colours the product does not have; edges are anti-aliased), go through k-means in CIELAB
   (`colors.k` clusters, OpenCV, seeded); clusters closer than `colors.merge_delta_e` (CIEDE2000)
   are merged closest pair first, the merged centre being the weighted mean of the two.
3. **Names.** Each cluster takes the nearest palette colour by CIEDE2000; clusters with the same
   name are combined (a person would call them one colour). The palette is `basic` (17 everyday
   words), `fashion` (59 catalogue names, each with its basic `family`) or a CSV file
   `name,r,g,b[,family]`.

Columns added to the manifest (decisions are columns; an unreadable image is a row with
`color_error`, never a crash):

| column | meaning |
|---|---|
| `colors` | up to `colors.max_colors` structs `{name, family, hex, weight, delta_e}`, heaviest first |
| `color_1`, `color_1_family`, `color_1_hex`, `color_1_weight` | the dominant colour, flat |
| `color_method` | foreground method used: `border`, `grabcut`, `none` (`+center`: the mask was not trusted) |
| `color_foreground` | share of the picture taken as the product |
| `color_mask` | the mask PNG (with `--masks`), relative to the project root |
| `color_error` | why the image could not be analysed (`decode_error: ...`), else null |

`hex` is the measured colour of the cluster (sRGB), `weight` its share of the product's pixels and
`delta_e` its CIEDE2000 distance to the palette colour that named it.
"""

from __future__ import annotations

import csv
import html
import io
import math
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from datakit.errors import DatakitError, ParamsError
from datakit.images import thumbnail_uri as _thumb
from datakit.parallel import cores, pool_context

KEY = "colors"
PAGE = "colors.html"
MASKS = "masks"
BUILTIN_PALETTES = ("basic", "fashion")

COLOR_STRUCT = pa.struct([("name", pa.string()), ("family", pa.string()), ("hex", pa.string()),
                          ("weight", pa.float64()), ("delta_e", pa.float64())])
COLOR_SCHEMA = pa.schema([
    ("colors", pa.list_(COLOR_STRUCT)),
    ("color_1", pa.string()),
    ("color_1_family", pa.string()),
    ("color_1_hex", pa.string()),
    ("color_1_weight", pa.float64()),
    ("color_method", pa.string()),
    ("color_foreground", pa.float64()),
    ("color_mask", pa.string()),
    ("color_error", pa.string()),
])
COLOR_COLUMNS = COLOR_SCHEMA.names


class ColorsParams(BaseModel):
    """params.yaml `colors:`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    foreground: Literal["auto", "grabcut", "border", "none"] = Field(
        "auto", description="auto: border when the border is uniform, else grabcut")
    margin: float = Field(0.05, ge=0.0, le=0.4, description="share of each side: padding of the first-pass box; the centred rectangle's inset")
    grabcut_iterations: int = Field(3, ge=1, le=20)
    border_width: float = Field(0.04, gt=0.0, le=0.25, description="border band, share of the shorter side")
    border_threshold: float = Field(14.0, gt=0.0, le=100.0, description="CIELAB distance from the background beyond which a pixel is product")
    border_tolerance: float = Field(8.0, gt=0.0, le=100.0, description="CIELAB distance within which a border pixel matches the border colour")
    border_uniformity: float = Field(0.9, ge=0.0, le=1.0, description="auto: share of border pixels matching the border colour to use `border`")
    erode: int = Field(1, ge=0, le=10, description="mask pixels (working size) left out at the product's edge")
    min_foreground: float = Field(0.03, ge=0.0, le=1.0, description="a smaller mask is not trusted (centred rectangle instead)")
    work_size: int = Field(160, ge=32, le=2048, description="longest side the foreground is computed at")
    sample: int = Field(3000, ge=50, le=1_000_000, description="foreground pixels clustered per image")
    k: int = Field(6, ge=1, le=32, description="k-means clusters before merging")
    merge_delta_e: float = Field(9.0, ge=0.0, le=100.0, description="merge clusters closer than this CIEDE2000 difference")
    palette: str = Field("basic", description="basic | fashion | a CSV file name,r,g,b[,family]")
    max_colors: int = Field(3, ge=1, le=16, description="colours kept per image")
    min_weight: float = Field(0.05, ge=0.0, le=1.0, description="lighter colours are dropped (the dominant one always stays)")
    masks: bool = Field(False, description="write the foreground masks to OUT/masks/")
    seed: int = Field(0, ge=0)
    workers: int = Field(0, ge=0, le=256, description="processes; 0 = one per core")
    page_images: int = Field(120, ge=0, le=100_000, description="images shown on OUT/colors.html")

    @field_validator("palette")
    @classmethod
    def _palette(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("empty: use basic, fashion or a CSV file name,r,g,b[,family]")
        if v not in BUILTIN_PALETTES and not v.lower().endswith(".csv"):
            raise ValueError(f"use basic, fashion or a path to a .csv file (got {v!r})")
        return v


def parse_colors(data: dict[str, Any] | None, prefix: str = KEY) -> ColorsParams:
    """Validate a `colors:` mapping; any error is a ParamsError naming `colors.<key>`."""
    from datakit.params import parse_section

    return parse_section(ColorsParams, data, prefix)


# --------------------------------------------------------------------------------------------
# colour science

# sRGB (D65) to CIE XYZ, and the D65 reference white.
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
_WHITE = np.array([0.95047, 1.0, 1.08883])
_EPS = (6.0 / 29.0) ** 3


def _linear_table() -> np.ndarray:
    c = np.arange(256) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


_LINEAR = _linear_table()


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65, 2 degree observer) of sRGB colours.

    Args:
        rgb: (..., 3) array, uint8 or floats in 0..255.

    Returns:
        (..., 3) float64 array of L*, a*, b*.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype == np.uint8:
        lin = _LINEAR[rgb]
    else:
        c = np.clip(rgb.astype(np.float64) / 255.0, 0.0, 1.0)
        lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = (lin @ _RGB_TO_XYZ.T) / _WHITE
    f = np.where(xyz > _EPS, np.cbrt(xyz), xyz / (3 * (6.0 / 29.0) ** 2) + 4.0 / 29.0)
    out = np.empty(f.shape, dtype=np.float64)
    out[..., 0] = 116.0 * f[..., 1] - 16.0
    out[..., 1] = 500.0 * (f[..., 0] - f[..., 1])
    out[..., 2] = 200.0 * (f[..., 1] - f[..., 2])
    return out


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference (kL = kC = kH = 1), broadcasting over leading axes.

    Written from the formula in Sharma, Wu & Dalal, "The CIEDE2000 color-difference formula:
    implementation notes, supplementary test data, and mathematical observations" (2005),
    including its conventions for hue when a chroma is zero.

    Args:
        lab1: (..., 3) CIELAB colours.
        lab2: (..., 3) CIELAB colours, broadcastable against `lab1`.

    Returns:
        The differences, shape of the broadcast leading axes.
    """
    lab1 = np.asarray(lab1, dtype=np.float64)
    lab2 = np.asarray(lab2, dtype=np.float64)
    L1, a1, b1 = lab1[..., 0], lab1[..., 1], lab1[..., 2]
    L2, a2, b2 = lab2[..., 0], lab2[..., 1], lab2[..., 2]
    pow25_7 = 25.0 ** 7

    # a* is stretched near the neutral axis so that greys are not over-separated in hue
    chroma_mean = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2.0
    c7 = chroma_mean ** 7
    g = 0.5 * (1.0 - np.sqrt(c7 / (c7 + pow25_7)))
    a1p, a2p = a1 * (1.0 + g), a2 * (1.0 + g)
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    # hue angles in degrees, 0..360; 0 by convention for a neutral colour
    h1p = np.where((a1p == 0) & (b1 == 0), 0.0, np.degrees(np.arctan2(b1, a1p)) % 360.0)
    h2p = np.where((a2p == 0) & (b2 == 0), 0.0, np.degrees(np.arctan2(b2, a2p)) % 360.0)

    neutral = (c1p * c2p) == 0
    dL = L2 - L1
    dC = c2p - c1p
    dh = h2p - h1p
    dh = np.where(dh > 180.0, dh - 360.0, np.where(dh < -180.0, dh + 360.0, dh))
    dh = np.where(neutral, 0.0, dh)
    dH = 2.0 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh) / 2.0)

    L_mean = (L1 + L2) / 2.0
    C_mean = (c1p + c2p) / 2.0
    h_sum = h1p + h2p
    far = np.abs(h1p - h2p) > 180.0
    h_mean = np.where(far, np.where(h_sum < 360.0, (h_sum + 360.0) / 2.0, (h_sum - 360.0) / 2.0), h_sum / 2.0)
    h_mean = np.where(neutral, h_sum, h_mean)

    t = (1.0 - 0.17 * np.cos(np.radians(h_mean - 30.0)) + 0.24 * np.cos(np.radians(2.0 * h_mean))
         + 0.32 * np.cos(np.radians(3.0 * h_mean + 6.0)) - 0.20 * np.cos(np.radians(4.0 * h_mean - 63.0)))
    d_theta = 30.0 * np.exp(-(((h_mean - 275.0) / 25.0) ** 2))
    cm7 = C_mean ** 7
    r_c = 2.0 * np.sqrt(cm7 / (cm7 + pow25_7))
    l50 = (L_mean - 50.0) ** 2
    s_l = 1.0 + 0.015 * l50 / np.sqrt(20.0 + l50)
    s_c = 1.0 + 0.045 * C_mean
    s_h = 1.0 + 0.015 * C_mean * t
    r_t = -np.sin(np.radians(2.0 * d_theta)) * r_c
    tl, tc, th = dL / s_l, dC / s_c, dH / s_h
    return np.sqrt(np.maximum(tl * tl + tc * tc + th * th + r_t * tc * th, 0.0))


def to_hex(rgb: Sequence[float]) -> str:
    r, g, b = (int(min(255, max(0, round(float(c))))) for c in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


# --------------------------------------------------------------------------------------------
# palettes


@dataclass(frozen=True)
class Palette:
    """Named reference colours: names, their basic families, sRGB and CIELAB."""

    source: str
    names: tuple[str, ...]
    families: tuple[str, ...]
    rgb: np.ndarray  # (n, 3) uint8
    lab: np.ndarray  # (n, 3) float64

    def nearest(self, lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index of the nearest palette colour (CIEDE2000) for each of `lab` (n, 3), and the ΔE."""
        d = ciede2000(np.asarray(lab)[:, None, :], self.lab[None, :, :])
        idx = np.argmin(d, axis=1)
        return idx, d[np.arange(len(idx)), idx]


def _parse_palette(text: str, source: str) -> Palette:
    rows = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.reader(rows)
    header = [h.strip().lower() for h in next(reader, [])]
    missing = [c for c in ("name", "r", "g", "b") if c not in header]
    if missing:
        raise ParamsError(f"colors.palette: {source}: the header must name name,r,g,b[,family] (missing {', '.join(missing)})")
    col = {h: i for i, h in enumerate(header)}
    names: list[str] = []
    families: list[str] = []
    values: list[tuple[int, int, int]] = []
    for n, row in enumerate(reader, start=2):
        try:
            name = row[col["name"]].strip()
            rgb = tuple(int(row[col[c]].strip()) for c in ("r", "g", "b"))
            family = row[col["family"]].strip() if "family" in col and col["family"] < len(row) else ""
        except (IndexError, ValueError):
            raise ParamsError(f"colors.palette: {source}: data row {n - 1} is not name,r,g,b with integers: {','.join(row)!r}") from None
        if not name or any(not 0 <= c <= 255 for c in rgb):
            raise ParamsError(f"colors.palette: {source}: data row {n - 1} needs a name and r,g,b in 0..255: {','.join(row)!r}")
        if name in names:
            raise ParamsError(f"colors.palette: {source}: the name {name!r} appears twice")
        names.append(name)
        families.append(family or name)
        values.append(rgb)  # type: ignore[arg-type]
    if not names:
        raise ParamsError(f"colors.palette: {source}: no colours")
    rgb_arr = np.array(values, dtype=np.uint8)
    return Palette(source, tuple(names), tuple(families), rgb_arr, srgb_to_lab(rgb_arr))


def load_palette(spec: str) -> Palette:
    """A shipped palette (`basic`, `fashion`) or a CSV file `name,r,g,b[,family]` (# comments).

    Raises:
        ParamsError: naming `colors.palette` when the file is missing or malformed.
    """
    if spec in BUILTIN_PALETTES:
        text = resources.files("datakit").joinpath("palettes", f"{spec}.csv").read_text(encoding="utf-8")
        return _parse_palette(text, spec)
    path = Path(spec)
    if not path.is_file():
        raise ParamsError(f"colors.palette: no palette file {spec!r} (use basic, fashion or a CSV file name,r,g,b[,family])")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ParamsError(f"colors.palette: cannot read {spec}: {exc}") from None
    return _parse_palette(text, str(path))


# --------------------------------------------------------------------------------------------
# foreground


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


# --------------------------------------------------------------------------------------------
# clusters and names


@dataclass
class Clusters:
    """Colour clusters of one image: CIELAB and sRGB means, and weights (share of the pixels)."""

    lab: np.ndarray  # (n, 3)
    rgb: np.ndarray  # (n, 3) float
    weight: np.ndarray  # (n,)


def kmeans(lab: np.ndarray, rgb: np.ndarray, k: int, seed: int) -> Clusters:
    """k-means (OpenCV, k-means++ seeding, seeded) on CIELAB samples; empty clusters dropped."""
    import cv2

    n = len(lab)
    k = max(1, min(k, n))
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 0.2)
    _, labels, _ = cv2.kmeans(lab.astype(np.float32), k, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    labels = labels.ravel()
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    used = counts > 0
    lab_sum = np.zeros((k, 3))
    rgb_sum = np.zeros((k, 3))
    np.add.at(lab_sum, labels, lab)
    np.add.at(rgb_sum, labels, rgb)
    return Clusters(lab_sum[used] / counts[used, None], rgb_sum[used] / counts[used, None], counts[used] / n)


def _combine(c: Clusters, i: int, j: int) -> Clusters:
    """Clusters i and j as one (weighted means of their centres), j removed."""
    wi, wj = c.weight[i], c.weight[j]
    w = wi + wj
    lab, rgb, weight = c.lab.copy(), c.rgb.copy(), c.weight.copy()
    lab[i] = (wi * lab[i] + wj * lab[j]) / w
    rgb[i] = (wi * rgb[i] + wj * rgb[j]) / w
    weight[i] = w
    keep = np.arange(len(weight)) != j
    return Clusters(lab[keep], rgb[keep], weight[keep])


def merge_clusters(c: Clusters, threshold: float) -> Clusters:
    """Merge the closest pair (CIEDE2000) while it is closer than `threshold`."""
    while len(c.weight) > 1:
        d = ciede2000(c.lab[:, None, :], c.lab[None, :, :])
        np.fill_diagonal(d, np.inf)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        if d[i, j] >= threshold:
            break
        c = _combine(c, int(min(i, j)), int(max(i, j)))
    return c


def name_clusters(c: Clusters, palette: Palette, *, max_colors: int, min_weight: float) -> list[dict[str, Any]]:
    """Name each cluster, combine clusters sharing a name, keep the heaviest `max_colors`
    (dropping those under `min_weight`, except the heaviest)."""
    idx, _ = palette.nearest(c.lab)
    groups: dict[int, list[int]] = {}
    for row, k in enumerate(idx):
        groups.setdefault(int(k), []).append(row)
    named = []
    for k, rows in groups.items():
        w = c.weight[rows]
        total = float(w.sum())
        lab = (c.lab[rows] * w[:, None]).sum(axis=0) / total
        rgb = (c.rgb[rows] * w[:, None]).sum(axis=0) / total
        named.append({"name": palette.names[k], "family": palette.families[k], "hex": to_hex(rgb),
                      "weight": round(total, 4), "delta_e": round(float(ciede2000(lab, palette.lab[k])), 2)})
    named.sort(key=lambda d: (-d["weight"], d["name"]))
    kept = [d for n, d in enumerate(named) if n == 0 or d["weight"] >= min_weight]
    return kept[:max_colors]


# --------------------------------------------------------------------------------------------
# one image (pure)


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


# --------------------------------------------------------------------------------------------
# many images: a process pool over files

_Job = tuple[str, str, str | None]  # (image file, image_id, mask file or None)


def _analyse_file(job: _Job, p: ColorsParams, palette: Palette) -> dict[str, Any]:
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


def _analyse_chunk(jobs: list[_Job], p: ColorsParams, palette: Palette) -> list[dict[str, Any]]:
    return [_analyse_file(job, p, palette) for job in jobs]


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads only compete


class Progress(Protocol):
    def start(self, phase: str, total: int) -> None: ...

    def advance(self, phase: str, n: int = 1) -> None: ...


def analyse_files(jobs: Sequence[_Job], p: ColorsParams, palette: Palette, *,
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


# --------------------------------------------------------------------------------------------
# the stage


@dataclass
class ColorsResult:
    manifest: pd.DataFrame
    report: dict[str, Any]

    def schema(self) -> pa.Schema:
        """The manifest's Arrow schema: the input columns as they were, then `COLOR_SCHEMA`
        (for `manifest.write_table`, so that all-null columns keep their types)."""
        inputs = self.manifest.drop(columns=COLOR_COLUMNS)
        base = pa.Schema.from_pandas(inputs, preserve_index=False).remove_metadata()
        return pa.schema(list(base) + list(COLOR_SCHEMA))


def run(df: pd.DataFrame, p: ColorsParams, *, root: Path, masks_dir: Path | None = None,
        palette: Palette | None = None, ui: Progress | None = None) -> ColorsResult:
    """Add the colour columns to a manifest (every row kept; failures are `color_error`).

    Args:
        df: an earlier stage's manifest (`image_id`, `path`).
        p: `colors:` params.
        root: the project root manifest paths are relative to.
        masks_dir: write each mask to `masks_dir/<image_id>.png` (and `color_mask`), or None.
        palette: the palette (default: `load_palette(p.palette)`).
        ui: progress reporting.

    Returns:
        The manifest with `COLOR_COLUMNS` and the stage's figures.
    """
    from datakit.manifest import relpath, resolve

    if "path" not in df.columns or "image_id" not in df.columns:
        raise DatakitError("colors needs a manifest with image_id and path columns")
    palette = palette or load_palette(p.palette)
    t0 = time.perf_counter()
    jobs: list[_Job] = []
    rows: list[int] = []
    results: list[dict[str, Any]] = [{"error": "no_image: the row has no image file (path is null)"}] * len(df)
    if masks_dir is not None:
        masks_dir.mkdir(parents=True, exist_ok=True)
    for i, (iid, rel) in enumerate(zip(df["image_id"].astype(str), df["path"], strict=True)):
        if not isinstance(rel, str) or not rel:
            continue
        mask_path = str(masks_dir / f"{iid}.png") if masks_dir is not None else None
        jobs.append((str(resolve(root, rel)), iid, mask_path))
        rows.append(i)
    for i, res in zip(rows, analyse_files(jobs, p, palette, ui=ui), strict=True):
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
    out["color_mask"] = [relpath(root, Path(r["mask"])) if r.get("mask") else None for r in results]
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
        "params": p.model_dump(),
        "seconds": round(seconds, 3),
        "images_per_s": round(len(jobs) / seconds, 2) if seconds > 0 and jobs else 0.0,
    }
    return ColorsResult(out, report)


# --------------------------------------------------------------------------------------------
# the page

_CSS = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px} h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse} td,th{padding:2px 10px;text-align:left;border-bottom:1px solid #eee}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:264px;font-size:11px;border:1px solid #ddd;border-radius:6px;padding:6px}
figure img{width:128px;height:128px;object-fit:contain;background:#f4f4f4}
.sw{display:inline-block;width:14px;height:14px;border:1px solid #999;vertical-align:middle;margin-right:4px}
.bar{display:flex;height:14px;margin:4px 0;border:1px solid #ccc}
.err{color:#b00}
"""


def _swatch(hex_: str, title: str) -> str:
    return f'<span class="sw" style="background:{html.escape(hex_)}" title="{html.escape(title)}"></span>'


def write_page(df: pd.DataFrame, root: Path, report: dict[str, Any], path: Path, *, images: int = 120,
               palette: Palette | None = None) -> None:
    """Write OUT/colors.html: figures, the dominant colours' counts and, for up to `images`
    images, the thumbnail (and mask) next to swatches of its colours (self-contained page)."""
    from datakit.fsutil import atomic_write_text

    esc = html.escape
    parts = [f"<!doctype html><meta charset='utf-8'><title>datakit colors</title><style>{_CSS}</style>",
             "<h1>datakit colors</h1>"]
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(report[k]))}</td></tr>"
                   for k in ("images", "analysed", "failed", "methods", "palette", "mean_colors_per_image",
                             "mean_foreground", "seconds", "images_per_s") if k in report)
    parts.append(f"<table>{rows}</table>")
    ok = df[df["color_error"].isna()]
    parts.append("<h2>Dominant colour per image</h2><table><tr><th>colour</th><th>images</th></tr>")
    ref_hex = {n: to_hex(c) for n, c in zip(palette.names, palette.rgb, strict=True)} if palette else {}
    for name, count in ok["color_1"].value_counts().items():
        sw = _swatch(ref_hex[name], f"palette {name}") if name in ref_hex else ""
        parts.append(f"<tr><td>{sw}{esc(str(name))}</td><td>{count}</td></tr>")
    parts.append("</table>")
    shown = ok.sort_values(["color_1", "image_id"]).head(images)
    parts.append(f"<h2>Images ({len(shown)} of {len(ok)}, by dominant colour)</h2><div class='grid'>")
    for r in shown.itertuples(index=False):
        cols = list(r.colors) if r.colors is not None else []
        bar = "".join(f'<div style="background:{esc(c["hex"])};width:{100 * c["weight"] / max(1e-9, sum(x["weight"] for x in cols)):.1f}%"'
                      f' title="{esc(c["name"])} {c["weight"]:.0%}"></div>' for c in cols)
        legend = "<br>".join(f'{_swatch(c["hex"], c["hex"])}<b>{esc(c["name"])}</b> {c["weight"]:.0%}'
                             f' <span title="CIEDE2000 to the palette colour">ΔE {c["delta_e"]:.1f}</span>' for c in cols)
        mask = ""
        if isinstance(getattr(r, "color_mask", None), str):
            mask = f'<img src="{_thumb(root, r.color_mask)}" alt="mask">'
        label = esc(str(getattr(r, "label", "") or ""))
        parts.append(f'<figure><img src="{_thumb(root, r.path)}" alt="">{mask}<div class="bar">{bar}</div>'
                     f"<figcaption>{legend}<br>{label} · {esc(str(r.color_method))} · "
                     f"fg {r.color_foreground:.0%}</figcaption></figure>")
    parts.append("</div>")
    bad = df[df["color_error"].notna()].head(100)
    if len(bad):
        parts.append(f"<h2>Not analysed ({int(df['color_error'].notna().sum())})</h2><table>")
        parts.extend(f"<tr><td>{esc(str(r.image_id)[:12])}</td><td>{esc(str(r.path))}</td><td class='err'>{esc(str(r.color_error))}</td></tr>"
                     for r in bad.itertuples(index=False))
        parts.append("</table>")
    atomic_write_text(path, "\n".join(parts) + "\n")


__all__ = [
    "COLOR_COLUMNS", "COLOR_SCHEMA", "ColorsParams", "ColorsResult", "Clusters", "ImageColors", "Palette",
    "analyse", "analyse_files", "border_uniformity", "ciede2000", "first_pass_rect", "foreground", "load_palette", "mask_border",
    "mask_grabcut", "merge_clusters", "name_clusters", "parse_colors", "run", "srgb_to_lab", "write_page",
]
