"""The overlay check (`datakit.dedup.verify`): edited copies overlay their original, different
shots of look-alike scenes do not."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from datakit.dedup import verify as V
from datakit.images import ImageRejected
from tests.fixtures.images import shelf_scene as _scene


def _jpeg(im: Image.Image, q: int = 70) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=q)
    return buf.getvalue()


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _caption(im: Image.Image) -> Image.Image:
    out = im.copy()
    d = ImageDraw.Draw(out)
    d.rectangle((20, 200, 170, 250), fill=(250, 220, 0))
    d.text((28, 206), "SALE -30%", fill=(0, 0, 0), font=ImageFont.load_default(size=30))
    return out


def _score(a: bytes, b: bytes) -> float:
    return V.match(V.thumb_bytes(a), V.thumb_bytes(b)).score


EDITS = {
    "crop_sym": lambda im: _jpeg(im.crop((22, 16, 338, 254)), 40),  # 6 % off each side
    "crop_one": lambda im: _jpeg(im.crop((50, 0, 360, 235)), 50),  # 14 % off the left, 13 % off the bottom
    "resize": lambda im: _jpeg(im.resize((216, 162), Image.Resampling.LANCZOS), 90),
    "jpeg": lambda im: _jpeg(im, 30),
    "bright": lambda im: _jpeg(ImageEnhance.Brightness(im).enhance(1.2), 90),
    "caption": lambda im: _jpeg(_caption(im), 85),
    "png": _png,
    "crop_and_caption": lambda im: _jpeg(_caption(im).crop((0, 30, 330, 270)), 60),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edited_copy_overlays_its_original(edit: str) -> None:
    im = _scene(1)
    original = _jpeg(im, 92)
    copy = EDITS[edit](im)
    assert _score(original, copy) >= V.DEFAULT_THRESHOLD
    assert _score(copy, original) >= V.DEFAULT_THRESHOLD  # either order


@pytest.mark.parametrize("other", [7, 8, 9, "other_scene"])
def test_look_alike_shots_do_not_overlay(other: int | str) -> None:
    """The same backdrop with other things on it (another product shot in the same studio, the
    chained pink-backdrop garments of issue 12), and another scene, stay below the threshold."""
    a = _jpeg(_scene(1), 92)
    b = _scene(2) if other == "other_scene" else _scene(1, objects=int(other))
    assert _score(a, _jpeg(b, 92)) < V.DEFAULT_THRESHOLD


def _recoloured(im: Image.Image, hue: int) -> Image.Image:
    """The middle of the picture (a garment on a backdrop) in another colour of the same
    lightness: the chroma (Cb, Cr) turned by `hue` degrees, the luma kept."""
    ycc = np.asarray(im.convert("YCbCr"), dtype=np.float32).copy()
    h, w = ycc.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((xx - w / 2) / (w * 0.33)) ** 2 + ((yy - h / 2) / (h * 0.36)) ** 2 < 1
    cb, cr = ycc[..., 1] - 128, ycc[..., 2] - 128
    t = np.deg2rad(hue)
    ycc[..., 1] = np.where(inside, 128 + np.cos(t) * cb - np.sin(t) * cr, ycc[..., 1])
    ycc[..., 2] = np.where(inside, 128 + np.sin(t) * cb + np.cos(t) * cr, ycc[..., 2])
    return Image.fromarray(np.clip(ycc, 0, 255).astype(np.uint8), "YCbCr").convert("RGB")


@pytest.mark.parametrize("hue", [90, 180])
def test_a_recoloured_variant_is_not_a_copy(hue: int) -> None:
    """The same shot with the garment in another colour overlays in grey; the colour check
    turns it down (the grey score alone would accept it)."""
    im = _scene(6)
    a, b = V.thumb_bytes(_jpeg(im, 92)), V.thumb_bytes(_jpeg(_recoloured(im, hue), 92))
    m = V.match(a, b)
    assert m.colour > V.COLOUR_LIMIT and m.score <= V.RECOLOURED
    grey = V.match(V.Thumb(a.coarse, a.fine, a.size), V.Thumb(b.coarse, b.fine, b.size))  # no colour thumbnails
    assert grey.score >= V.DEFAULT_THRESHOLD


def _garment(pattern: str, size: tuple[int, int] = (300, 320)) -> Image.Image:
    """One cut of vest on a plain backdrop, filled with a pattern (the catalogue case: the same
    garment in two prints, photographed the same way)."""
    w, h = size
    im = Image.new("RGB", size, (236, 232, 226))
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).polygon([(90, 40), (130, 40), (150, 120), (170, 40), (210, 40), (220, 280), (80, 280)], fill=255)
    fill = Image.new("RGB", size, (40, 140, 60))
    d = ImageDraw.Draw(fill)
    rng = np.random.default_rng(0 if pattern == "dots" else 1)
    for y in range(0, h, 14):
        for x in range(0, w, 14):
            if pattern == "dots":
                d.ellipse((x + 3, y + 3, x + 9, y + 9), fill=(230, 170, 180))
            elif rng.random() < 0.5:
                d.arc((x, y, x + 12, y + 10), 0, 300, fill=(120, 30, 20), width=3)
    im.paste(fill, (0, 0), mask)
    return im


def test_the_same_cut_in_another_print_is_not_a_copy() -> None:
    """The outlines overlay (0.99 in grey on the plain backdrop); the detail inside does not."""
    dots, spots = _garment("dots"), _garment("spots")
    assert _score(_jpeg(dots, 90), _jpeg(spots, 90)) < V.DEFAULT_THRESHOLD
    assert _score(_jpeg(dots, 90), _jpeg(dots.crop((10, 12, 290, 305)), 50)) >= V.DEFAULT_THRESHOLD


def test_the_match_says_which_picture_is_the_crop() -> None:
    im = _scene(3)
    full, crop = _jpeg(im, 92), _jpeg(im.crop((30, 20, 330, 250)), 90)
    m = V.match(V.thumb_bytes(full), V.thumb_bytes(crop))
    assert m.inner == 0 and 0.8 <= m.scale <= 0.9
    assert V.match(V.thumb_bytes(crop), V.thumb_bytes(full)).inner == 1


def test_score_pairs_keeps_order_and_scores_unreadable_files_minus_one(tmp_path) -> None:
    im = _scene(4)
    paths = []
    for name, data in (("a.jpg", _jpeg(im)), ("b.jpg", EDITS["crop_one"](im)), ("c.jpg", _jpeg(_scene(5))),
                       ("bad.jpg", b"not an image")):
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    i, j = np.array([2, 0, 0, 1]), np.array([3, 2, 1, 2])
    s = V.score_pairs(paths, i, j, workers=1)
    assert s[0] == -1.0  # the unreadable file
    assert s[2] >= V.DEFAULT_THRESHOLD > max(s[1], s[3])


def test_thumbnails_go_through_the_safe_decoder() -> None:
    with pytest.raises(ImageRejected):
        V.thumb_bytes(b"")
    with pytest.raises(ImageRejected):
        V.thumb_bytes(b"<svg xmlns='http://www.w3.org/2000/svg'/>")
