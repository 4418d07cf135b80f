"""Deterministic corpus of small, distinct, photo-like JPEGs for the benches.

Each image is a smooth random colour field (a few low-frequency blobs, like an out-of-focus
photo) with sensor-like grain and a few soft-edged shapes on top, encoded at JPEG quality 85.
At the default 400x300 that gives files of roughly 20-40 KB, close to the real clothing photos
in shared/reference/perf-baselines.md (0.22 MP, ~27 KB). Image ``i`` depends only on ``i`` and
the generator version, so a corpus can be grown or regenerated and stays byte-identical;
every image is distinct (different sha256, and different perceptual hashes, because the
low-frequency layout is drawn per image).

Needs numpy and Pillow. Used by bench/scrape.py; later benches can import it too:

    from _corpus import ensure_corpus
    paths = ensure_corpus(Path("bench-out/corpus"), 20_000)
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Bump when the pictures change, so cached corpora are rebuilt rather than mixed.
GENERATOR_VERSION = 1
CLASSES = tuple(f"class{k}" for k in range(10))
STAMP = ".corpus.json"

_GRAIN_SIDE = 1024
_grain_cache: dict[int, np.ndarray] = {}


def _grain(seed: int) -> np.ndarray:
    """A shared tile of Gaussian grain; each image reads its own random window of it."""
    tile = _grain_cache.get(seed)
    if tile is None:
        rng = np.random.default_rng([seed, 0xC0FFEE])
        tile = rng.normal(0.0, 9.0, size=(_GRAIN_SIDE, _GRAIN_SIDE, 3)).astype(np.int16)
        _grain_cache[seed] = tile
    return tile


def label_of(index: int) -> str:
    """The class of image ``index`` (round robin over ten classes)."""
    return CLASSES[index % len(CLASSES)]


def file_name(index: int) -> str:
    return f"{index:06d}.jpg"


def make_jpeg(index: int, width: int = 400, height: int = 300, quality: int = 85, seed: int = 0) -> bytes:
    """The JPEG bytes of image ``index``: the same bytes for the same arguments, every time."""
    rng = np.random.default_rng([seed, GENERATOR_VERSION, index])
    # A per-class tint gives the classes a (weak) visual signal; the rest is per image.
    tint = np.array([(index % 10) * 20, 128, 255 - (index % 10) * 20], dtype=np.float64)
    coarse = rng.uniform(0, 255, size=(4, 5, 3)) * 0.7 + tint * 0.3
    field = Image.fromarray(coarse.astype(np.uint8), "RGB").resize((width, height), Image.Resampling.BICUBIC)

    draw = ImageDraw.Draw(field)
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
        x1, y1 = x0 + int(rng.integers(20, width // 2)), y0 + int(rng.integers(20, height // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
    field = field.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(1.0, 3.0))))

    grain = _grain(seed)
    gy = int(rng.integers(0, _GRAIN_SIDE - height))
    gx = int(rng.integers(0, _GRAIN_SIDE - width))
    pixels = np.asarray(field, dtype=np.int16) + grain[gy : gy + height, gx : gx + width]
    out = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")

    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _read_stamp(folder: Path) -> dict:
    try:
        return json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        return {}


def ensure_corpus(
    folder: Path, n: int, *, width: int = 400, height: int = 300, quality: int = 85, log=print
) -> list[Path]:
    """Make sure ``folder`` holds images 0..n-1 (generating only the missing ones); return their paths.

    A stamp file records the generator version, size and count, so a corpus made by an older
    generator or with other settings is rebuilt, and a larger cached corpus is reused as is.
    """
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"version": GENERATOR_VERSION, "width": width, "height": height, "quality": quality}
    stamp = _read_stamp(folder)
    have = int(stamp.get("count", 0)) if all(stamp.get(k) == v for k, v in settings.items()) else 0
    if have == 0:
        for old in folder.glob("*.jpg"):
            old.unlink()
    if have < n:
        log(f"corpus: generating images {have}..{n - 1} into {folder}")
        for i in range(have, n):
            data = make_jpeg(i, width, height, quality)
            tmp = folder / (file_name(i) + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, folder / file_name(i))
            if (i + 1) % 5000 == 0:
                log(f"corpus: {i + 1}/{n}")
        (folder / STAMP).write_text(json.dumps({**settings, "count": n}))
    return [folder / file_name(i) for i in range(n)]
