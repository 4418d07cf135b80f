"""Hashes for dedup (`datakit.dedup.hashing`): the reference path is imagehash bit for bit on the
normalised image, the fast path stays close to it, crops are found through the crop hashes, and
degenerate pictures are flagged (reliability.md IMG-07/09/10/11)."""

from __future__ import annotations

import io
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from datakit.dedup import hashing as H
from datakit.images import ImageLimits, ImageRejected, decode
from tests.fixtures import images as F


def scene(seed: int, w: int = 320, h: int = 240) -> Image.Image:
    """A photo-like picture: a smooth colour field, a few soft shapes, mild grain."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (4, 5, 3)).astype(np.uint8)
    im = Image.fromarray(coarse, "RGB").resize((w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(im)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
        x1, y1 = x0 + int(rng.integers(20, w // 2)), y0 + int(rng.integers(20, h // 2))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    im = im.filter(ImageFilter.GaussianBlur(1.5))
    arr = np.asarray(im, dtype=np.int16) + rng.normal(0, 3, (h, w, 3)).astype(np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def reference(data: bytes) -> str:
    return str(imagehash.dhash(decode(data), hash_size=16))


# --------------------------------------------------------------------------------------------
# the reference path


@pytest.mark.parametrize("make", [
    lambda: F.jpeg(203, 141, seed=3),
    lambda: F.encode(scene(1), "PNG"),
    lambda: F.exif_rotated_pair(2)[0],
    F.png16,
    F.logo_rgba,
    F.cmyk_jpeg,
    lambda: F.animated_gif(3),
], ids=["jpeg", "png", "exif6", "png16", "rgba", "cmyk", "gif"])
def test_exact_path_is_imagehash_on_the_normalised_image(make) -> None:
    data = make()
    result = H.hash_bytes(data, exact=True)
    assert result.dhash == reference(data)
    assert len(result.dhash) == H.HEX_CHARS == 64
    assert len(result.crops) == len(H.CROP_BOXES)
    assert all(len(c) == 64 for c in result.crops)


def test_hash_image_matches_hash_bytes_exact() -> None:
    data = F.encode(scene(4), "JPEG", quality=90)
    assert H.hash_image(decode(data)) == H.hash_bytes(data, exact=True)


def test_fast_path_stays_close_to_the_exact_path() -> None:
    dist = []
    for seed in range(6):
        data = F.encode(scene(seed, 403 + seed, 301), "JPEG", quality=85)
        fast, exact = H.hash_bytes(data), H.hash_bytes(data, exact=True)
        dist.append(H.hamming(fast.dhash, exact.dhash))
        assert max(H.hamming(a, b) for a, b in zip(fast.crops, exact.crops, strict=True)) <= 16
    assert np.mean(dist) <= 5 and max(dist) <= 12, dist


def test_non_jpeg_fast_path_is_the_reference() -> None:
    data = F.encode(scene(5), "PNG")
    assert H.hash_bytes(data) == H.hash_bytes(data, exact=True)


# --------------------------------------------------------------------------------------------
# IMG-07, IMG-09, IMG-10: hashing happens on the normalised image


@pytest.mark.parametrize("exact", [False, True], ids=["fast", "exact"])
def test_exif_rotated_twin_hashes_alike(exact: bool) -> None:
    tagged, turned = F.exif_rotated_pair(0)
    raw = imagehash.dhash(Image.open(io.BytesIO(tagged)), 16) - imagehash.dhash(Image.open(io.BytesIO(turned)), 16)
    assert raw > 30  # without the orientation the twins are far apart
    a, b = H.hash_bytes(tagged, exact=exact), H.hash_bytes(turned, exact=exact)
    assert H.hamming(a.dhash, b.dhash) <= 6
    assert H.is_near(a, b)


def test_every_exif_orientation_lands_upright() -> None:
    """Odd sizes: DCT scaling rounds the size up, and the padding moves with the flips."""
    upright = scene(7, 403, 301)
    undo = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_270}
    ref = H.hash_bytes(F.encode(upright, "JPEG", quality=95))
    for orientation, method in undo.items():
        exif = Image.Exif()
        exif[0x0112] = orientation
        data = F.encode(upright.transpose(method), "JPEG", quality=95, exif=exif.tobytes())
        got = H.hash_bytes(data)
        assert H.hamming(got.dhash, ref.dhash) <= 10, orientation
        assert decode(data).size == upright.size


@pytest.mark.parametrize("exact", [False, True], ids=["fast", "exact"])
def test_sixteen_bit_png_is_scaled_not_clipped(exact: bool) -> None:
    grey8 = np.asarray(scene(6).convert("L"))
    png8 = F.encode(Image.fromarray(grey8, "L"), "PNG")
    png16 = F.encode(Image.fromarray(grey8.astype(np.uint16) * 257), "PNG")
    assert Image.open(io.BytesIO(png16)).mode.startswith("I")
    clipped = str(imagehash.dhash(Image.open(io.BytesIO(png16)).convert("L"), 16))
    got, want = H.hash_bytes(png16, exact=exact), H.hash_bytes(png8, exact=exact)
    assert got.dhash == want.dhash and not got.low_information
    assert H.hamming(clipped, want.dhash) > 40  # a naive convert clips nearly everything to white


@pytest.mark.parametrize("exact", [False, True], ids=["fast", "exact"])
def test_transparent_logo_is_composited_on_white(exact: bool) -> None:
    result = H.hash_bytes(F.logo_rgba(), exact=exact)
    naive = str(imagehash.dhash(Image.open(io.BytesIO(F.logo_rgba())), 16))
    assert naive == "0" * 64  # plain convert: solid black, no gradients at all
    assert result.dhash != naive
    assert not result.low_information


# --------------------------------------------------------------------------------------------
# IMG-11: degenerate pictures


@pytest.mark.parametrize("make", [
    lambda: F.encode(Image.new("RGB", (200, 150), (120, 130, 140)), "JPEG"),
    lambda: F.encode(Image.new("RGB", (300, 300), (255, 255, 255)), "PNG"),
    lambda: F.encode(Image.fromarray(np.clip(128 + np.random.default_rng(0).normal(0, 1.0, (150, 200)), 0, 255)
                                     .astype(np.uint8), "L"), "JPEG"),
    lambda: F.encode(F.photo(16, 16, seed=8), "PNG"),
    lambda: F.encode(Image.new("P", (1, 1)), "GIF"),
    lambda: F.encode(F.photo(300, 30, seed=9), "JPEG"),
], ids=["uniform-jpeg", "white-png", "near-uniform", "icon-16px", "pixel-1px", "strip-30px"])
@pytest.mark.parametrize("exact", [False, True], ids=["fast", "exact"])
def test_degenerate_pictures_are_low_information(make, exact: bool) -> None:
    assert H.hash_bytes(make(), exact=exact).low_information


def test_ordinary_pictures_are_not_low_information() -> None:
    for seed in range(4):
        assert not H.hash_bytes(F.encode(scene(seed), "JPEG", quality=85)).low_information
    product = Image.new("RGB", (400, 400), (255, 255, 255))
    ImageDraw.Draw(product).ellipse((120, 100, 280, 300), fill=(30, 60, 150))
    assert not H.hash_bytes(F.encode(product, "JPEG", quality=90)).low_information


# --------------------------------------------------------------------------------------------
# crops and the pair rule


def test_a_five_percent_crop_is_found_through_the_crop_signal() -> None:
    found = via_crop = 0
    hashes = []
    for seed in range(5):
        base = scene(100 + seed, 400, 300)
        # 5 % of the width and of the height, split unevenly between the sides
        box = (6, 3, 400 - 14, 300 - 12)
        a = H.hash_bytes(F.encode(base, "JPEG", quality=90))
        b = H.hash_bytes(F.encode(base.crop(box), "JPEG", quality=90))
        hashes.append(a)
        d, via = H.pair_distance(a, b)
        found += H.is_near(a, b)
        via_crop += via == "crop" and H.full_distance(a, b) > H.DEFAULT_RADIUS
    assert found >= 4 and via_crop >= 3, (found, via_crop)  # the full hashes alone miss them
    for i in range(len(hashes)):
        for j in range(i + 1, len(hashes)):
            assert not H.is_near(hashes[i], hashes[j])


def test_pair_distance_prefers_the_full_hash() -> None:
    a = H.hash_bytes(F.encode(scene(11), "JPEG", quality=90))
    b = H.hash_bytes(F.encode(scene(11).resize((240, 180), Image.Resampling.LANCZOS), "JPEG", quality=80))
    d, via = H.pair_distance(a, b)
    assert via == "full" and d == H.full_distance(a, b) <= H.DEFAULT_RADIUS
    assert H.pair_distance(a, a) == (0, "full")
    unrelated = H.hash_bytes(F.encode(scene(12), "JPEG", quality=90))
    d, via = H.pair_distance(a, unrelated)
    assert via == "full" and d > H.DEFAULT_RADIUS


def test_crop_boxes_cover_cuts_up_to_eight_percent() -> None:
    spans = sorted({(b[0], b[2]) for b in H.CROP_BOXES})
    for a in np.linspace(0, 0.08, 17):
        for b in np.linspace(0, 0.08 - a, 9):
            gap = min(max(abs(a - lo), abs((1 - b) - hi)) for lo, hi in spans)
            assert gap <= 0.02 + 1e-9, (a, b)


# --------------------------------------------------------------------------------------------
# the safe path still applies


def test_fast_path_refuses_what_the_safe_path_refuses() -> None:
    good = F.encode(scene(13), "JPEG", quality=90)
    for data, why in [
        (good[: len(good) // 2], "truncated"),
        (b"<html>nope</html>", "not_an_image"),
        (F.encode(scene(14), "TIFF"), "unsupported_format"),
        (b"", "empty"),
    ]:
        with pytest.raises(ImageRejected) as info:
            H.hash_bytes(data)
        assert info.value.reason == why
    with pytest.raises(ImageRejected) as info:
        H.hash_bytes(good, limits=ImageLimits(max_decode_pixels=1000))
    assert info.value.reason == "too_many_pixels"


def test_hash_paths_in_processes_matches_in_process(tmp_path: Path) -> None:
    paths = []
    for i in range(140):  # more than two chunks, so both workers get some
        p = tmp_path / f"{i:03d}.jpg"
        p.write_bytes(F.jpeg(64 + i % 5, 48, seed=i))
        paths.append(p)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    paths += [tmp_path / "bad.jpg", tmp_path / "missing.jpg"]
    one = H.hash_paths(paths, workers=1)
    two = H.hash_paths(paths, workers=2)
    assert len(one) == len(two) == len(paths)
    for a, b in zip(one, two, strict=True):
        if isinstance(a, ImageRejected):
            assert isinstance(b, ImageRejected) and (a.reason, a.detail) == (b.reason, b.detail)
        else:
            assert a == b
    assert isinstance(one[-1], ImageRejected) and one[-1].reason == "missing_file"
    assert isinstance(one[-2], ImageRejected) and one[-2].reason in ("decode_error", "truncated")
    assert one[0] == H.hash_bytes(paths[0].read_bytes())
