"""Is one picture an edited copy of the other? A pixel-alignment check for candidate pairs.

Hashes and embeddings only nominate pairs: on real photos both put different shots of look-alike
things (the same pile of apples, four garments on one pink backdrop) as close as a re-cropped
copy. The check here asks the question a person asks: can one picture be laid over the other?

A copy made by re-cropping, resizing, recompressing, brightening or captioning an original is
`resize(original[box])` plus small changes, so one image is a uniformly scaled window of the
other. The window's aspect follows from the two images' sizes (a crop keeps pixel scale, a resize
keeps the aspect), so the search has one scale and two offsets:

1. coarse: both images as grey thumbnails 48 px on the long side; window scales 1.00 .. 0.76
   (up to 24 % cut per axis) in steps of 0.03, in both directions (which one is the crop is not
   known); normalised cross-correlation over every offset (OpenCV's `matchTemplate`);
2. fine: the best direction and scale again at 160 px, scales +-0.03 in steps of 0.01;
3. the score: the correlation of the two aligned windows after a gain/bias fit, leaving out
   the 10 % of pixels that disagree most (a caption, a price tag, a watermark cover a part
   of the picture; brightness is the gain). A copy scores 0.98-1.00; two different shots of one
   shelf, aligned as well as they can be, stay below 0.97 (measured on 1,920 real grocery photos
   and their edited copies: `bench/dedup_real.py`);
4. detail: the correlation of the fine detail (image minus its blur) at the same placement;
   below `DETAIL_FLOOR` the outlines agree but the insides do not (the same cut of a
   garment in two patterns on one backdrop), and that low value is the score. (Its limit: a
   picture of pure pixel noise recompressed at q40 or below loses that detail too; real photos
   at q30 keep >= 0.67);
5. colour: grey pixels cannot tell a red shirt from the same shirt in blue, so the aligned
   windows' chromaticity is compared over an 8 x 8 grid; when more than a fifth of the cells
   changed colour (`COLOUR_LIMIT`) the pair is a recoloured variant, not a copy, and scores
   `RECOLOURED`.

A pair below `COARSE_FLOOR` at the coarse level is scored there and not refined (most candidate
pairs of different pictures stop after ~1 ms). Pictures are read through `datakit.images`
(format allow-list, pixel and decode-cost limits, EXIF orientation), JPEGs at a reduced DCT scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datakit.images import ImageLimits, ImageRejected, exif_orientation, load_pixels, normalise, open_checked

COARSE_SIDE = 48
FINE_SIDE = 160
COARSE_SCALES = tuple(round(1.0 - 0.03 * k, 2) for k in range(9))  # 1.00 .. 0.76
FINE_STEPS = tuple(round(0.01 * k, 2) for k in range(-3, 4))
COARSE_FLOOR = 0.6
TRIM = 0.10  # share of the worst-agreeing pixels left out of the final score
DEFAULT_THRESHOLD = 0.97
COLOUR_SIDE = 32
DETAIL_TRIM = 0.15
DETAIL_FLOOR = 0.55  # fine-detail agreement below which the insides differ
CELL_GAP = 0.04  # chromaticity difference of a cell that changed colour
COLOUR_LIMIT = 0.2  # share of cells: a recoloured variant, not a copy
RECOLOURED = 0.5  # the score of a pair whose colours disagree
_LIMITS = ImageLimits()


@dataclass(frozen=True)
class Thumb:
    """Grey thumbnails of one picture (uint8), a small colour one, and its upright size."""

    coarse: np.ndarray
    fine: np.ndarray
    size: tuple[int, int]  # (width, height)
    colour: np.ndarray | None = None  # (h, w, 3) uint8, COLOUR_SIDE on the long side


@dataclass(frozen=True)
class Match:
    """The best overlay of two pictures: `score` in [-1, 1]; `inner` is 0 when the second
    picture was laid inside the first, 1 for the other way round; `scale` is the window's
    share of the outer picture's side."""

    score: float
    inner: int
    scale: float
    colour: float = 0.0  # colour disagreement (see `_colour_gap`)


def _resized(grey, side: int) -> np.ndarray:  # noqa: ANN001 - a PIL image
    from PIL import Image

    w, h = grey.size
    s = side / max(w, h)
    small = grey.resize((max(8, round(w * s)), max(8, round(h * s))), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(small, dtype=np.uint8)


def thumb_bytes(data: bytes, limits: ImageLimits = _LIMITS) -> Thumb:
    """A `Thumb` from an image file's bytes; raises `ImageRejected` like every decode."""
    if not data:
        raise ImageRejected("empty", "0 bytes")
    im = open_checked(data, limits)
    width, height = im.size
    upright = (height, width) if exif_orientation(im) >= 5 else (width, height)
    if im.format == "JPEG":
        im.draft("RGB", (2 * FINE_SIDE, 2 * FINE_SIDE))  # DCT scaling: never below twice the fine side
    try:
        load_pixels(im)
        rgb = normalise(im)
        grey = rgb.convert("L")
    except ImageRejected:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise ImageRejected("decode_error", f"{type(exc).__name__}: {exc}") from exc
    return Thumb(_resized(grey, COARSE_SIDE), _resized(grey, FINE_SIDE), upright, _resized(rgb, COLOUR_SIDE))


def thumb_path(path: Path | str, limits: ImageLimits = _LIMITS) -> Thumb:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageRejected("unreadable", f"{type(exc).__name__}: {exc}") from exc
    return thumb_bytes(data, limits)


def _window(outer: np.ndarray, inner: np.ndarray, aspect: float, scale: float) -> tuple[int, int] | None:
    """(width, height) of `inner` resized as a window of `outer` at `scale`, or None when it
    does not fit or is too small to say anything."""
    oh, ow = outer.shape
    wh = round(scale * oh)
    ww = round(aspect * scale * ow)
    if wh < 8 or ww < 8 or wh > oh or ww > ow or ww < 0.7 * ow or wh < 0.7 * oh:
        return None
    return ww, wh


def _best(outer: np.ndarray, inner: np.ndarray, aspect: float, scales: Sequence[float]
          ) -> tuple[float, float, tuple[int, int]]:
    """(correlation, scale, top-left offset) of the best placement of `inner` in `outer`."""
    import cv2

    best = (-2.0, 1.0, (0, 0))
    o = outer.astype(np.float32)
    for scale in scales:
        size = _window(outer, inner, aspect, scale)
        if size is None:
            continue
        t = cv2.resize(inner.astype(np.float32), size, interpolation=cv2.INTER_AREA)
        r = cv2.matchTemplate(o, t, cv2.TM_CCOEFF_NORMED)
        _, top, _, loc = cv2.minMaxLoc(r)
        if np.isfinite(top) and top > best[0]:
            best = (float(top), float(scale), (int(loc[0]), int(loc[1])))
    return best


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    d = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / d) if d > 1e-9 else 0.0


def _trimmed(outer: np.ndarray, inner: np.ndarray, aspect: float, scale: float, loc: tuple[int, int]) -> float:
    """Correlation of the aligned windows after a gain/bias fit, without the `TRIM` share of
    pixels that disagree most."""
    import cv2

    size = _window(outer, inner, aspect, scale)
    if size is None:
        return -1.0
    t = cv2.resize(inner.astype(np.float32), size, interpolation=cv2.INTER_AREA).ravel().astype(np.float64)
    w = outer[loc[1]:loc[1] + size[1], loc[0]:loc[0] + size[0]].astype(np.float64).ravel()
    if t.std() < 1.0 or w.std() < 1.0:  # a flat window: alike only when both are flat and equal
        return 1.0 if t.std() < 1.0 and w.std() < 1.0 and abs(t.mean() - w.mean()) < 8 else 0.0
    gain, bias = np.polyfit(t, w, 1)
    resid = np.abs(w - (gain * t + bias))
    keep = resid <= np.quantile(resid, 1.0 - TRIM)
    return _corr(t[keep], w[keep])


def match(a: Thumb, b: Thumb) -> Match:
    """The best overlay of `a` and `b` (either inside the other) and its score."""
    tried = []
    for inner, (outer_t, inner_t) in enumerate(((a, b), (b, a))):
        aspect = (inner_t.size[0] / inner_t.size[1]) / (outer_t.size[0] / outer_t.size[1])
        top, scale, _ = _best(outer_t.coarse, inner_t.coarse, aspect, COARSE_SCALES)
        tried.append((top, inner, scale, aspect))
    top, inner, scale, aspect = max(tried)
    if top < COARSE_FLOOR:
        return Match(round(top, 4), inner, scale)
    outer_t, inner_t = (a, b) if inner == 0 else (b, a)
    scales = [s for s in (round(scale + d, 2) for d in FINE_STEPS) if s <= 1.0]
    _, fine_scale, loc = _best(outer_t.fine, inner_t.fine, aspect, scales)
    score = _trimmed(outer_t.fine, inner_t.fine, aspect, fine_scale, loc)
    detail = _detail_agreement(outer_t.fine, inner_t.fine, aspect, fine_scale, loc)
    if detail < DETAIL_FLOOR:  # the outline agrees, the texture inside does not: another object of that shape
        score = min(score, detail)
    colour = _colour_gap(outer_t, inner_t, aspect, fine_scale, loc)
    if colour > COLOUR_LIMIT:  # same shapes, other colours: a recoloured variant, not a copy
        score = min(score, RECOLOURED)
    return Match(round(float(score), 4), inner, fine_scale, round(colour, 4))


def _detail_agreement(outer: np.ndarray, inner: np.ndarray, aspect: float, scale: float, loc: tuple[int, int]) -> float:
    """Correlation of the aligned windows' fine detail (each minus its blur), after a gain fit
    and without the `DETAIL_TRIM` share of pixels that disagree most. The whole-window score is
    ruled by the strongest contrast (a garment's outline on a plain backdrop); this one by the
    texture inside (dots against leopard spots). Copies keep their detail (>= 0.67 with a large
    caption, >= 0.92 re-cropped on the real photos); a same-shape object with another pattern
    does not (~0.4)."""
    import cv2

    size = _window(outer, inner, aspect, scale)
    if size is None:
        return 1.0
    t = cv2.resize(inner.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    w = outer[loc[1]:loc[1] + size[1], loc[0]:loc[0] + size[0]].astype(np.float32)
    x = (t - cv2.GaussianBlur(t, (0, 0), 1.5)).ravel().astype(np.float64)
    y = (w - cv2.GaussianBlur(w, (0, 0), 1.5)).ravel().astype(np.float64)
    if x.std() < 0.5 or y.std() < 0.5:  # no detail on one side: nothing to compare
        return 1.0
    gain, bias = np.polyfit(x, y, 1)
    resid = np.abs(y - (gain * x + bias))
    keep = resid <= np.quantile(resid, 1.0 - DETAIL_TRIM)
    return _corr(x[keep], y[keep])


def _colour_gap(outer: Thumb, inner: Thumb, aspect: float, scale: float, loc: tuple[int, int]) -> float:
    """How much of the overlay disagrees in colour: the share of an 8 x 8 grid's cells whose
    chromaticity (r, g over r + g + b: blind to brightness) differs by more than `CELL_GAP`.
    A caption or a price tag covers a few cells; a recoloured garment a quarter of the picture
    or more. Dark cells (no reliable colour) count as agreeing."""
    import cv2

    if outer.colour is None or inner.colour is None:
        return 0.0
    size = _window(outer.fine, inner.fine, aspect, scale)
    if size is None:
        return 0.0
    fh, fw = outer.fine.shape
    ch, cw = outer.colour.shape[:2]
    x0, y0 = round(loc[0] / fw * cw), round(loc[1] / fh * ch)
    x1, y1 = max(x0 + 8, round((loc[0] + size[0]) / fw * cw)), max(y0 + 8, round((loc[1] + size[1]) / fh * ch))
    win = outer.colour[y0:y1, x0:x1].astype(np.float32)
    other = cv2.resize(inner.colour.astype(np.float32), (win.shape[1], win.shape[0]), interpolation=cv2.INTER_AREA)
    h, w = win.shape[:2]
    cells = 0
    off = 0
    for r in range(8):
        for c in range(8):
            cell = (slice(r * h // 8, max(r * h // 8 + 1, (r + 1) * h // 8)), slice(c * w // 8, max(c * w // 8 + 1, (c + 1) * w // 8)))
            a, b = win[cell].reshape(-1, 3).mean(axis=0), other[cell].reshape(-1, 3).mean(axis=0)
            cells += 1
            if a.sum() >= 60 and b.sum() >= 60 and float(np.hypot(*(a[:2] / a.sum() - b[:2] / b.sum()))) > CELL_GAP:
                off += 1
    return off / cells if cells else 0.0


def _match_chunk(pairs: list[tuple[str, str]], limits: ImageLimits) -> list[float]:
    """Scores of (path, path) pairs; a picture that cannot be read scores -1 (no edge)."""
    cache: dict[str, Thumb | None] = {}

    def get(p: str) -> Thumb | None:
        if p not in cache:
            try:
                cache[p] = thumb_path(p, limits)
            except ImageRejected:
                cache[p] = None
        return cache[p]

    out = []
    for pa, pb in pairs:
        ta, tb = get(pa), get(pb)
        out.append(-1.0 if ta is None or tb is None else match(ta, tb).score)
    return out


def score_pairs(paths: Sequence[Path | str], i: np.ndarray, j: np.ndarray, *, workers: int = 0,
                limits: ImageLimits = _LIMITS) -> np.ndarray:
    """The overlay score of every pair (paths[i[k]], paths[j[k]]), float32, in input order.

    Pairs are worked through in order of their first row, in chunks that share decoded
    thumbnails; chunks run where `datakit.parallel` says (local processes or a Dask cluster)."""
    from datakit import parallel

    n = len(i)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    order = np.lexsort((j, i))
    names = [str(p) for p in paths]
    items = [(names[int(i[k])], names[int(j[k])]) for k in order]
    ex = parallel.executor(workers=workers, preload=[__name__])
    try:
        if ex.kind == "inline" or n < 64:
            scores = _match_chunk(items, limits)
        else:
            scores = ex.map_chunks(_match_chunk, items, 0, limits, min_chunk=16, max_chunk=256)
    finally:
        ex.close()
    out = np.empty(n, dtype=np.float32)
    out[order] = np.asarray(scores, dtype=np.float32)
    return out


__all__ = ["DEFAULT_THRESHOLD", "Match", "Thumb", "match", "score_pairs", "thumb_bytes", "thumb_path"]
