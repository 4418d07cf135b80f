"""Perceptual hashes for `datakit dedup`: a 256-bit dhash per image plus crop hashes.

The reference definition is imagehash's difference hash with ``hash_size=16`` computed on the
*normalised* image (EXIF orientation applied, 8-bit RGB, alpha on white, 16-bit scaled:
reliability.md IMG-07/09/10), written as imagehash writes it: 64 hex characters, row-major,
most significant bit first. `hash_bytes(data, exact=True)` reproduces
``str(imagehash.dhash(datakit.images.decode(data), hash_size=16))`` bit for bit.

The default path is cheaper for JPEG: libjpeg decodes the luma plane only, at a DCT-reduced
scale (Pillow's ``draft``, 1/2 to 1/8, keeping both sides >= `WORK_SIDE`: 1/8 for a 0.2 MP
photo); every entropy-coded byte is still read, so truncated and corrupt files are still
refused. The 17x16 grid is resampled from that small *working image* with the Lanczos-3 filter
imagehash uses (Pillow's ``LANCZOS``), as two matrix products, over the exact sub-pixel extent
of the picture (DCT scaling rounds sizes up), with the EXIF orientation applied to the small
array. It moves the hash by ~2-2.5 bits on average (p99 ~8) against the reference; on the
quality benchmark it is within 1 point of the reference at the default radii, not at small
radii (PNG<->JPEG copies lose ~8 points at radius 10), so the radius and the path go together.
The decode is most of the cost (~3/4 on 0.2 MP photos): files are decoded in blocks and the
rounding, bits and flags of a block are computed together (`_results`). Other formats (PNG,
WebP, GIF) and JPEGs that are not plain YCbCr/greyscale (CMYK, YCCK) take the reference
decode on both paths.

dhash does not survive crops: a 2-8 % crop shifts the 17x16 grid by about a third of a cell
and moves ~50 of the 256 bits. The crop-robust signal is a few more dhashes of sub-boxes of
the same working image (`CROP_BOXES`, fractions of the width and height): if B is A with a few
percent cut from its sides, B's full hash is close to the hash of A's sub-box that best matches
the cut. `pair_distance` compares full against full within `DEFAULT_RADIUS`, and a full hash
against the other image's crop hashes within `DEFAULT_CROP_RADIUS`. The crop set and both
radii were chosen on `bench/dedup_quality.py` (its output prints the trade-off table).

Degenerate images (near-uniform placeholders, images with a shorter side below 32 px, hashes
with almost no informative bits) are flagged ``low_information``: their hashes collide across
unrelated content, so grouping leaves them out of near-duplicate matching (IMG-11).

Every path goes through `datakit.images`: the magic-byte allow-list and the pixel cap before any
pixel is decoded, a complete decode of the first frame, and the same handling of broken EXIF.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from datakit.dedup.distances import (  # noqa: F401 - the comparisons of these hashes, named here too
    DEFAULT_CROP_RADIUS,
    DEFAULT_RADIUS,
    crop_distance,
    full_distance,
    hamming,
    hamming_known,
    is_near,
    pair_distance,
)
from datakit.images import ImageLimits, ImageRejected, decode
from datakit.images import exif_orientation as _exif_orientation  # broken EXIF counts as 1 (IMG-08)
from datakit.images import load_pixels as _load_pixels  # the shared complete decode (truncation -> ImageRejected)
from datakit.images import open_checked as _open_checked  # allow-list and pixel cap, header only

if TYPE_CHECKING:
    from datakit.parallel import Executor

__all__ = [
    "CROP_BOXES",
    "DEFAULT_CROP_RADIUS",
    "DEFAULT_RADIUS",
    "hamming_known",
    "HASH_BITS",
    "HashResult",
    "HashSettings",
    "crop_distance",
    "full_distance",
    "hamming",
    "hash_bytes",
    "hash_image",
    "hash_paths",
    "init_worker",
    "is_near",
    "pair_distance",
]

HASH_SIZE = 16
"""imagehash's ``hash_size``: a 17x16 grey grid, 16x16 = 256 horizontal-gradient bits."""
HASH_BITS = HASH_SIZE * HASH_SIZE
HEX_CHARS = HASH_BITS // 4
_GRID_W, _GRID_H = HASH_SIZE + 1, HASH_SIZE

Box = tuple[float, float, float, float]
"""(left, top, right, bottom) as fractions of the image's width and height."""
Extent = tuple[float, float, float, float]
"""(left, top, right, bottom) in pixels of a working image: where the whole picture lies in it."""

# Crop boxes. A copy cut by up to 8 % along an axis, split at random between the two sides,
# is the original's span [a, 1 - b] with a, b >= 0 and a + b <= 0.08. Three spans per axis,
# [0.02, 0.98], [0.06, 0.98] and [0.02, 0.94], put every such cut within 0.02 of one of them at
# both ends (a, b <= 0.04: the first; a > 0.04: the second; b > 0.04: the third); cuts below
# ~2 % are also close to the full image. The boxes are the product of the x and y spans (9).
_AXIS_SPANS: tuple[tuple[float, float], ...] = ((0.02, 0.98), (0.06, 0.98), (0.02, 0.94))


def _product_boxes(spans: Sequence[tuple[float, float]]) -> tuple[Box, ...]:
    """Every (x span, y span) pair as a box, the whole image left out."""
    return tuple((x0, y0, x1, y1) for (x0, x1) in spans for (y0, y1) in spans
                 if (x0, y0, x1, y1) != (0.0, 0.0, 1.0, 1.0))


CROP_BOXES: tuple[Box, ...] = _product_boxes(_AXIS_SPANS)
"""Sub-boxes hashed beside the full image (fractions of width and height)."""

WORK_SIDE = 48
"""Shorter side (px) the working image keeps at least: the DCT scale (1/2..1/8) and any further
box reduction stop there (a 0.2 MP photo is decoded at 1/8, ~68x50, where 64 took 1/4, which
cost ~15 % more per picture: the entropy decoding is the same, the rest is not).
bench/dedup_quality.py at the default radii: 64 and 48 are both within 1 point of the exact path
on every transform, 40 is near the edge (resize 0.8 and PNG<->JPEG 0.5 points under it) and 32
loses crops (recall below 0.8)."""
LOW_INFO_MIN_SIDE = 32
"""Images whose shorter side is below this are `low_information` (icons, tracking pixels)."""
LOW_INFO_RANGE = 8.0
"""Grey-level range (max - min) of the 17x16 grid below which the picture counts as uniform."""
LOW_INFO_STRONG_CELLS = 12
"""Fewer grid gradients of at least `_STRONG_STEP` grey levels than this: no usable structure."""
_STRONG_STEP = 2.0


@dataclass(frozen=True)
class HashSettings:
    """Knobs of the hash (the defaults are the tuned ones; the benchmarks try others)."""

    work_side: int = WORK_SIDE
    crop_boxes: tuple[Box, ...] = CROP_BOXES


DEFAULT_SETTINGS = HashSettings()
_DEFAULT_LIMITS = ImageLimits()


@dataclass
class HashResult:
    """The hashes of one image.

    Attributes:
        dhash: 64 hex characters, imagehash's ``str(dhash(img, 16))`` format.
        crops: one hash per `CROP_BOXES` entry, same format.
        low_information: uniform, tiny or structure-less: match by exact bytes only.
    """

    dhash: str
    crops: list[str] = field(default_factory=list)
    low_information: bool = False


# --------------------------------------------------------------------------------------------
# resampling: Pillow's Lanczos-3 as matrices, so a full grid and all crop grids cost two
# batched matrix products on the working image


def _lanczos3(t: np.ndarray) -> np.ndarray:
    """sinc(t) * sinc(t / 3) for |t| < 3, else 0, with one sine: for u = pi * t / 3,
    sin(3u) = sin(u) * (3 - 4 sin(u)^2), so the product is sin(u)^2 (3 - 4 sin(u)^2) / (3 u^2)."""
    u = t * np.float32(np.pi / 3.0)
    s2 = np.sin(u) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        w = s2 * (3.0 - 4.0 * s2) / (3.0 * u * u)
    w[u == 0] = 1.0
    w[np.abs(t) >= 3.0] = 0.0
    return w


def _axis_weights(n_in: int, lo: float, hi: float, spans: tuple[tuple[float, float], ...], n_out: int) -> np.ndarray:
    """Weights (len(spans) * n_out, n_in) resampling [lo + f0 * (hi - lo), lo + f1 * (hi - lo)]
    of an axis of `n_in` pixels to `n_out` samples, as Pillow's resize(box=...) with LANCZOS
    does: sample centres at (i + 0.5) * scale, the filter widened by the reduction, weights
    normalised over the pixels inside the image."""
    f = np.asarray(spans, dtype=np.float64)
    start = lo + f[:, 0] * (hi - lo)
    scale = (f[:, 1] - f[:, 0]) * (hi - lo) / n_out
    inv_widen = 1.0 / np.maximum(scale, 1.0)
    centres = start[:, None] + (np.arange(n_out) + 0.5) * scale[:, None]
    t = ((np.arange(n_in) + 0.5)[None, None, :] - centres[:, :, None]) * inv_widen[:, None, None]
    w = _lanczos3(t.astype(np.float32))
    total = w.sum(axis=-1, keepdims=True)
    total[total == 0] = 1.0
    w /= total
    out = np.ascontiguousarray(w.reshape(len(spans) * n_out, n_in))
    out.setflags(write=False)
    return out


# Picture sizes repeat in a dataset, so the weights are built once per (axis length, extent),
# ~15-25 KB each at ordinary working sizes (a dataset of 0.2 MP photos of ~250 distinct sizes
# fills a quarter of each cache per path).
@lru_cache(maxsize=1024)
def _y_weights(n_in: int, lo: float, hi: float, spans: tuple[tuple[float, float], ...]) -> np.ndarray:
    """`_axis_weights` for the rows: (len(spans) * 16, n_in), the left-hand factor."""
    return _axis_weights(n_in, lo, hi, spans, _GRID_H)


@lru_cache(maxsize=1024)
def _x_weights_t(n_in: int, lo: float, hi: float, spans: tuple[tuple[float, float], ...]) -> np.ndarray:
    """`_axis_weights` for the columns, transposed: (n_in, len(spans) * 17), the right-hand factor."""
    out = np.ascontiguousarray(_axis_weights(n_in, lo, hi, spans, _GRID_W).T)
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class _BoxPlan:
    """How a box set maps onto the batched product (independent of the picture's size)."""

    ys: tuple[tuple[float, float], ...]  # distinct y spans: blocks of 16 rows
    xs: tuple[tuple[float, float], ...]  # distinct x spans: blocks of 17 columns
    yi: np.ndarray  # per box: its y span
    xi: np.ndarray  # per box: its x span


@lru_cache(maxsize=64)
def _box_plan(boxes: tuple[Box, ...]) -> _BoxPlan:
    """The distinct x spans and y spans of `boxes`, and each box's index into them."""
    xs = tuple(sorted({(b[0], b[2]) for b in boxes}))
    ys = tuple(sorted({(b[1], b[3]) for b in boxes}))
    xi = np.array([xs.index((b[0], b[2])) for b in boxes], dtype=np.intp)
    yi = np.array([ys.index((b[1], b[3])) for b in boxes], dtype=np.intp)
    xi.setflags(write=False)
    yi.setflags(write=False)
    return _BoxPlan(ys, xs, yi, xi)


def _grid_values(arr: np.ndarray, box: Extent, plan: _BoxPlan) -> np.ndarray:
    """Every (y span, x span) grid of `plan` at once, unrounded, from the working image `arr`
    in which the whole picture lies at `box`: shape (ys, 16, xs, 17).

    One product with all y weights, one with all x weights; crop sets built as a product of
    per-axis spans cost about as much as two or three full grids."""
    h, w = arr.shape
    wy = _y_weights(h, box[1], box[3], plan.ys)
    wxt = _x_weights_t(w, box[0], box[2], plan.xs)
    return ((wy @ arr) @ wxt).reshape(len(plan.ys), _GRID_H, len(plan.xs), _GRID_W)


def _grids(arr: np.ndarray, box: Extent, boxes: tuple[Box, ...]) -> np.ndarray:
    """The 17x16 grey grids (len(boxes), 16, 17) of `boxes` (fractions of `box`, the extent of
    the whole picture in `arr`'s pixel coordinates), unrounded."""
    plan = _box_plan(boxes)
    return _grid_values(arr, box, plan)[plan.yi, :, plan.xi, :]


# --------------------------------------------------------------------------------------------
# orientation on a small array, keeping track of where the original image lies in it


def _flip_x(arr: np.ndarray, box: Extent) -> tuple[np.ndarray, Extent]:
    w = arr.shape[1]
    return arr[:, ::-1], (w - box[2], box[1], w - box[0], box[3])


def _flip_y(arr: np.ndarray, box: Extent) -> tuple[np.ndarray, Extent]:
    h = arr.shape[0]
    return arr[::-1, :], (box[0], h - box[3], box[2], h - box[1])


def _swap(arr: np.ndarray, box: Extent) -> tuple[np.ndarray, Extent]:
    return arr.T, (box[1], box[0], box[3], box[2])


# EXIF orientation -> the steps that show the picture upright (as Pillow's exif_transpose)
_ORIENT_STEPS = {
    1: (),
    2: (_flip_x,),
    3: (_flip_x, _flip_y),
    4: (_flip_y,),
    5: (_swap,),
    6: (_swap, _flip_x),
    7: (_swap, _flip_x, _flip_y),
    8: (_swap, _flip_y),
}


def _orient(arr: np.ndarray, box: Extent, orientation: int) -> tuple[np.ndarray, Extent]:
    """Turn a small array upright; `box` (where the whole picture lies in it: DCT scaling and
    box reduction round sizes up) follows the pixels."""
    for step in _ORIENT_STEPS.get(orientation, ()):
        arr, box = step(arr, box)
    return np.ascontiguousarray(arr), box


# --------------------------------------------------------------------------------------------
# decoding to the working image


def _dct_scale(width: int, height: int, side: int) -> int:
    """The largest DCT scale (1, 2, 4 or 8) keeping both decoded sides >= `side`."""
    fit = min(width // side, height // side)
    return 8 if fit >= 8 else 4 if fit >= 4 else 2 if fit >= 2 else 1


@dataclass
class _Decoded:
    """What the hashes are computed from."""

    work: np.ndarray  # float32 grey working image, upright
    box: Extent  # where the whole picture lies in `work` (pixel coordinates)
    size: tuple[int, int]  # (width, height) of the upright original
    exact_grid: np.ndarray | None  # imagehash's own 16x17 grid (reference path only)


def _pixels(grey: Image.Image) -> np.ndarray:
    """An 8-bit grey image as a float32 (height, width) array (one copy out of Pillow)."""
    raw = np.frombuffer(grey.tobytes(), dtype=np.uint8)
    return raw.reshape(grey.height, grey.width).astype(np.float32)


def _working(grey: Image.Image, box: Extent, side: int) -> tuple[np.ndarray, Extent]:
    """Box-reduce by the largest integer factor keeping both sides >= `side` (large pictures
    only: the DCT stops at 1/8); float32 pixels and the scaled extent."""
    step = max(1, min(grey.width // side, grey.height // side))
    if step > 1:
        grey = grey.reduce(step)
        box = (box[0] / step, box[1] / step, box[2] / step, box[3] / step)
    return _pixels(grey), box


def _decode_fast_jpeg(im: Image.Image, side: int) -> _Decoded:
    """Luma only (libjpeg skips the colour planes' transforms and the colour conversion) at a
    DCT-reduced scale; orientation applied to the small array."""
    orientation = _exif_orientation(im)
    width, height = im.size
    dct = _dct_scale(width, height, side)
    box: Extent = (0.0, 0.0, float(width), float(height))
    drafted = im.draft("L", (width // dct, height // dct))
    if drafted is not None:  # (mode, (0, 0, width / scale, height / scale))
        box = (0.0, 0.0, float(drafted[1][2]), float(drafted[1][3]))
    _load_pixels(im)  # the whole entropy-coded stream: truncation and corruption raise here
    grey = im if im.mode == "L" else im.convert("L")
    arr, box = _working(grey, box, side)
    if orientation != 1:
        arr, box = _orient(arr, box, orientation)
    upright = (height, width) if orientation >= 5 else (width, height)
    return _Decoded(arr, box, upright, None)


def _decode_reference(grey: Image.Image, side: int) -> _Decoded:
    """imagehash's grid from the full normalised grey image, plus the working image made as on
    the fast path (a 1/2..1/8 box reduction standing in for the DCT scaling, then the rest)."""
    width, height = grey.size
    exact = _pixels(grey.resize((_GRID_W, _GRID_H), Image.Resampling.LANCZOS))
    dct = _dct_scale(width, height, side)
    box: Extent = (0.0, 0.0, float(width), float(height))
    if dct > 1:
        grey = grey.reduce(dct)
        box = (0.0, 0.0, width / dct, height / dct)
    arr, box = _working(grey, box, side)
    return _Decoded(arr, box, (width, height), exact[None])


def _decode(data: bytes, exact: bool, limits: ImageLimits, side: int) -> _Decoded:
    if not data:
        raise ImageRejected("empty", "0 bytes")
    if not exact:
        im = _open_checked(data, limits)
        if im.format == "JPEG" and im.mode in ("RGB", "L"):
            try:
                return _decode_fast_jpeg(im, side)
            except ImageRejected:
                raise
            except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
                raise ImageRejected("decode_error", f"{type(exc).__name__}: {exc}") from exc
    return _decode_reference(decode(data, limits).convert("L"), side)


# --------------------------------------------------------------------------------------------
# the public API


_FULL: Box = (0.0, 0.0, 1.0, 1.0)


@lru_cache(maxsize=16)
def _with_full(boxes: tuple[Box, ...]) -> tuple[Box, ...]:
    """The whole picture first, then `boxes`: what the fast path resamples in one go."""
    return (_FULL, *boxes)


def _grid_stack(dec: _Decoded, boxes: tuple[Box, ...]) -> np.ndarray:
    """(1 + len(boxes), 16, 17) unrounded grids: the whole picture, then each crop box."""
    if dec.exact_grid is None:
        plan = _box_plan(_with_full(boxes))
        return _grid_values(dec.work, dec.box, plan)[plan.yi, :, plan.xi, :]
    if not boxes:
        return dec.exact_grid
    return np.concatenate([dec.exact_grid, _grids(dec.work, dec.box, boxes)])


def _results(decoded: Sequence[_Decoded], settings: HashSettings) -> list[HashResult]:
    """The hashes of several decoded pictures: the products per picture, then the rounding, the
    bits, the hex text and the low-information test once for the whole batch (the same numbers
    as one at a time, without a dozen small array operations per picture)."""
    boxes = tuple(settings.crop_boxes)
    grids = np.stack([_grid_stack(dec, boxes) for dec in decoded])  # (n, boxes + 1, 16, 17)
    np.rint(grids, out=grids)  # as an 8-bit resize rounds (imagehash's own grid is already whole)
    text = np.packbits(grids[..., 1:] > grids[..., :-1]).tobytes().hex()  # left < right, MSB first
    # low information (IMG-11): tiny, near-uniform, or too few clear gradients in the full grid
    full = grids[:, 0]
    spread = full.max(axis=(1, 2)) - full.min(axis=(1, 2))
    strong = np.count_nonzero(np.abs(full[..., 1:] - full[..., :-1]) >= _STRONG_STEP, axis=(1, 2))
    low = (spread < LOW_INFO_RANGE) | (strong < LOW_INFO_STRONG_CELLS)
    hexes = [text[j:j + HEX_CHARS] for j in range(0, len(text), HEX_CHARS)]
    per = grids.shape[1]
    return [HashResult(hexes[i * per], hexes[i * per + 1:(i + 1) * per], flag or min(dec.size) < LOW_INFO_MIN_SIDE)
            for i, (dec, flag) in enumerate(zip(decoded, low.tolist(), strict=True))]


def hash_bytes(data: bytes, *, exact: bool = False, limits: ImageLimits = _DEFAULT_LIMITS,
               settings: HashSettings = DEFAULT_SETTINGS) -> HashResult:
    """Hash one encoded image.

    Args:
        data: the file's bytes (JPEG, PNG, WebP or GIF; the first frame of animations).
        exact: the reference path: the full safe decode, then imagehash's dhash bit for bit.
            The default decodes JPEG luma at a DCT-reduced scale (a few bits away, ~4x cheaper
            on 0.2 MP photos).
        limits: the allow-list and pixel cap (`datakit.images.ImageLimits`).
        settings: hash knobs (benchmarks only; the defaults are the tuned ones).

    Returns:
        The full-image hash, the crop hashes (one per `settings.crop_boxes`) and the
        low-information flag.

    Raises:
        ImageRejected: the bytes are not an allowed, decodable image (reason codes as
            `datakit.images.check_bytes`).
    """
    return _results([_decode(data, exact, limits, settings.work_side)], settings)[0]


def hash_image(im: Image.Image, *, settings: HashSettings = DEFAULT_SETTINGS) -> HashResult:
    """Hash a picture already decoded by `datakit.images.decode` (the reference path)."""
    return _results([_decode_reference(im.convert("L"), settings.work_side)], settings)[0]


# --------------------------------------------------------------------------------------------
# many files: blocks of `_CHUNK` files (decoded one by one, hashed as a batch), in this process
# or over a process pool

_CHUNK = 64


def _read_and_decode(path: Path | str, exact: bool, limits: ImageLimits, side: int) -> _Decoded | ImageRejected:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return ImageRejected("missing_file", str(path))
    except OSError as exc:
        return ImageRejected("decode_error", f"cannot read {path}: {type(exc).__name__}")
    try:
        return _decode(data, exact, limits, side)
    except ImageRejected as exc:
        return exc


def _hash_block(paths: Sequence[Path | str], exact: bool, limits: ImageLimits,
                settings: HashSettings) -> list[HashResult | ImageRejected]:
    """Decode a block of files, then hash the decodable ones as one batch (`_results`)."""
    got = [_read_and_decode(p, exact, limits, settings.work_side) for p in paths]
    decoded = [g for g in got if isinstance(g, _Decoded)]
    hashed = iter(_results(decoded, settings) if decoded else ())
    return [g if isinstance(g, ImageRejected) else next(hashed) for g in got]


# Exceptions pickle through their args, which ImageRejected does not keep apart: ship the pieces.
_Shipped = HashResult | tuple[str, str]


def _hash_chunk(paths: list[str], exact: bool, limits: ImageLimits, settings: HashSettings) -> list[_Shipped]:
    """One task of `hash_paths` (a pool or Dask worker): a block of files, results in order."""
    _one_blas_thread_in_worker()
    return [(res.reason, res.detail) if isinstance(res, ImageRejected) else res
            for res in _hash_block(paths, exact, limits, settings)]


def _one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """The hashes are many tiny matrix products: a threaded BLAS only adds hand-offs (and
    competes with the other worker processes), so it is held to one thread while hashing."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


_worker_limits: contextlib.AbstractContextManager[Any] | None = None


def _one_blas_thread_in_worker() -> None:
    """In a worker process (pool or Dask), one BLAS thread from the first task on; the parent
    process running a task inline is left as it was."""
    global _worker_limits
    if _worker_limits is None and mp.parent_process() is not None:
        _worker_limits = _one_blas_thread()


def init_worker() -> None:
    """Initializer of a plain process pool running hashes (`datakit.audit`): one BLAS thread."""
    global _worker_limits
    _worker_limits = _one_blas_thread()


def hash_paths(paths: Sequence[Path], *, exact: bool = False, workers: int = 0,
               limits: ImageLimits = _DEFAULT_LIMITS, settings: HashSettings = DEFAULT_SETTINGS,
               executor: Executor | None = None) -> list[HashResult | ImageRejected]:
    """Hash files, in input order; an unreadable or undecodable file gives its `ImageRejected`.

    Where the work runs follows `datakit.parallel`: a local process pool by default, a Dask
    cluster when `compute.scheduler` or DATAKIT_DASK_SCHEDULER names one (every worker must see
    the files at the same paths). The hashes do not depend on where they were computed.

    Args:
        paths: image files.
        exact: the reference path (see `hash_bytes`).
        workers: local processes; 0 = `compute.workers`, else one per available core; 1 = in
            this process (ignored on a Dask cluster).
        limits: decode limits.
        settings: hash knobs (benchmarks only).
        executor: an explicit `datakit.parallel` executor (default: the settings in force).
    """
    from datakit import parallel

    names = [str(p) for p in paths]
    compute = parallel.current()
    ex = executor if executor is not None else parallel.executor(workers=workers, preload=[__name__])
    try:
        spread = ex.workers if ex.kind == "dask" else min(ex.workers, len(names))
        if ex.kind == "inline" or spread <= 1:
            with _one_blas_thread():
                return [res for i in range(0, len(names), _CHUNK)
                        for res in _hash_block(names[i:i + _CHUNK], exact, limits, settings)]
        # about four chunks per worker at least (large pictures), at most _CHUNK files per chunk
        size = parallel.auto_chunk(len(names), spread, chunk_size=compute.chunk_size, max_chunk=_CHUNK)
        results: list[HashResult | ImageRejected] = []
        for part in ex.imap(_hash_chunk, parallel.chunked(names, size), exact, limits, settings):
            results.extend(ImageRejected(item[0], item[1]) if isinstance(item, tuple) else item for item in part)
        return results
    finally:
        if executor is None:
            ex.close()
