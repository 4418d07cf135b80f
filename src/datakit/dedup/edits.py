"""The edits `datakit dedup calibrate` makes of a sampled picture: what a web page does to a
product photo (re-crops of 4-16 % per axis, symmetric and one-sided; resize 50-90 %; JPEG
q30-90; brightness +-20 %; a caption / price tag; PNG; and a stack of two of these). Each copy is
a known duplicate of its original, so the calibration can measure recall per edit."""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from typing import Any

from PIL import Image, ImageDraw, ImageEnhance, ImageFont

Edit = Callable[[Image.Image, random.Random], Image.Image]


def encode(im: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, fmt, **kw)
    return buf.getvalue()


def crop_sym(im: Image.Image, rng: random.Random) -> Image.Image:
    """Cut 4-16 % of each axis, half from each side (a re-framed product photo)."""
    w, h = im.size
    cx, cy = rng.uniform(0.04, 0.16) * w, rng.uniform(0.04, 0.16) * h
    return im.crop((round(cx / 2), round(cy / 2), w - round(cx / 2), h - round(cy / 2)))


def crop_one(im: Image.Image, rng: random.Random) -> Image.Image:
    """Cut 4-16 % of each axis, all from one side (a banner or a border cut off)."""
    w, h = im.size
    cx, cy = round(rng.uniform(0.04, 0.16) * w), round(rng.uniform(0.04, 0.16) * h)
    left = cx if rng.random() < 0.5 else 0
    top = cy if rng.random() < 0.5 else 0
    return im.crop((left, top, w - (cx - left), h - (cy - top)))


def resize(im: Image.Image, rng: random.Random) -> Image.Image:
    s = rng.uniform(0.5, 0.9)
    return im.resize((max(8, round(im.width * s)), max(8, round(im.height * s))), Image.Resampling.LANCZOS)


def brightness(im: Image.Image, rng: random.Random) -> Image.Image:
    f = rng.uniform(0.8, 0.95) if rng.random() < 0.5 else rng.uniform(1.05, 1.2)
    return ImageEnhance.Brightness(im).enhance(f)


def caption(im: Image.Image, rng: random.Random) -> Image.Image:
    """A price tag or caption: a filled box with text, about 3-5 % of the picture."""
    out = im.convert("RGB")
    w, h = out.size
    bw, bh = round(w * rng.uniform(0.28, 0.38)), round(h * rng.uniform(0.09, 0.12))
    x, y = rng.randint(0, max(0, w - bw)), rng.randint(0, max(0, h - bh))
    fill = rng.choice([(250, 220, 0), (220, 30, 30), (255, 255, 255), (20, 20, 20)])
    ink = (0, 0, 0) if sum(fill) > 380 else (255, 255, 255)
    draw = ImageDraw.Draw(out)
    draw.rectangle((x, y, x + bw, y + bh), fill=fill)
    font = ImageFont.load_default(size=max(8, round(bh * 0.7)))
    draw.text((x + bh // 5, y + bh // 8), rng.choice(["SALE -30%", "$4.99", "NEW!", "© shop", "2 for 1"]), fill=ink, font=font)
    return out


def unchanged(im: Image.Image, rng: random.Random) -> Image.Image:
    return im


# name -> (edit, how the copy is saved: "jpeg" = a random quality 30-90, a number = that quality, "png")
EDITS: dict[str, tuple[Edit, str | int]] = {
    "crop_sym": (crop_sym, "jpeg"),
    "crop_one": (crop_one, "jpeg"),
    "resize": (resize, 90),
    "jpeg": (unchanged, "jpeg"),
    "brightness": (brightness, 90),
    "caption": (caption, 90),
    "png": (unchanged, "png"),
    "stack": (unchanged, "jpeg"),  # two of STACKABLE, see `edit`
}
HARD_PER_IMAGE = len(EDITS)  # as many look-alikes as copies, so precision does not hang on the edit count
STACKABLE = ("crop_sym", "crop_one", "resize", "brightness", "caption")
CROPS = ("crop_sym", "crop_one")


def edit(im: Image.Image, name: str, rng: random.Random) -> tuple[bytes, str, bool]:
    """(file bytes, format suffix, re-cropped?) of the copy `name` makes of `im`."""
    fn, save = EDITS[name]
    steps = [name]
    if name == "stack":
        steps = rng.sample(STACKABLE, 2)
        while all(s in CROPS for s in steps):  # two crops would cut up to 32 %: beyond a re-crop
            steps = rng.sample(STACKABLE, 2)
        out = im
        for s in steps:
            out = EDITS[s][0](out, rng)
    else:
        out = fn(im, rng)
    if save == "png":
        return encode(out, "PNG"), "png", False
    q = rng.randint(30, 90) if save == "jpeg" else int(save)
    return encode(out, "JPEG", quality=q), "jpg", any(s in CROPS for s in steps)


__all__ = ["CROPS", "EDITS", "HARD_PER_IMAGE", "STACKABLE", "Edit", "brightness", "caption", "crop_one", "crop_sym",
           "edit", "encode", "resize", "unchanged"]
