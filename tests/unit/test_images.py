"""The safe decode path (reliability.md IMG-01..17)."""

from __future__ import annotations

import io
import warnings

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageFile

from datakit.images import ImageLimits, ImageRejected, ImageStore, check_bytes, decode, normalise, sniff
from tests.fixtures import images as F

LIMITS = ImageLimits()


def reason(data: bytes, limits: ImageLimits = LIMITS) -> str:
    with pytest.raises(ImageRejected) as info:
        check_bytes(data, limits)
    return info.value.reason


def test_accepts_jpeg_and_reports_size() -> None:
    c = check_bytes(F.jpeg(120, 80))
    assert (c.format, c.width, c.height, c.downsized) == ("JPEG", 120, 80, False)
    assert c.ext == "jpg"


@pytest.mark.parametrize("data,expected", [
    (b"", "empty"),                                              # IMG-01
    (b"<!doctype html><p>captcha</p>", "not_an_image"),          # SRV-08
    (b"\x00" * 50, "not_an_image"),
    (b'<svg xmlns="http://www.w3.org/2000/svg"><script>1</script></svg>', "unsupported_format"),  # SRV-10
], ids=["empty", "html", "zeros", "svg"])
def test_non_images_rejected_with_reason(data: bytes, expected: str) -> None:
    assert reason(data) == expected


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99])
def test_truncated_jpeg_is_caught_by_full_decode(fraction: float) -> None:  # IMG-02
    data = F.jpeg(256, 256)
    cut = data[: int(len(data) * fraction)]
    Image.open(io.BytesIO(cut)).verify()  # the trap: verify passes
    assert reason(cut) in ("truncated", "decode_error")


def test_truncated_png_and_bad_crc() -> None:  # IMG-03
    data = F.encode(F.photo(64, 64), "PNG")
    assert reason(data[: len(data) // 2]) in ("truncated", "decode_error")
    flipped = bytearray(data)
    flipped[40] ^= 0xFF
    assert reason(bytes(flipped)) in ("truncated", "decode_error")


@pytest.mark.parametrize("side", [20000, 10000])
def test_decompression_bombs_refused_before_load(side: int) -> None:  # IMG-04
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert reason(F.bomb_png(side)) == "too_many_pixels"


def test_formats_outside_allow_list() -> None:  # IMG-06
    assert reason(F.encode(F.photo(), "TIFF")) == "unsupported_format"
    assert reason(F.encode(F.photo(), "BMP")) == "unsupported_format"
    assert sniff(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 20) == "HEIF"  # IMG-15


def test_exif_orientation_applied_and_dhash_agrees() -> None:  # IMG-07
    tagged, turned = F.exif_rotated_pair()
    c = check_bytes(tagged)
    assert (c.width, c.height) == (48, 64)  # dimensions follow the orientation
    a, b = decode(tagged), decode(turned)
    assert a.size == b.size
    assert imagehash.dhash(a, 16) - imagehash.dhash(b, 16) <= 12
    raw = Image.open(io.BytesIO(tagged))
    assert imagehash.dhash(raw, 16) - imagehash.dhash(b, 16) > 40  # unnormalised: far apart


def test_broken_exif_orientation_is_ignored() -> None:  # IMG-08
    exif = Image.Exif()
    exif[0x0112] = 65535
    data = F.encode(F.photo(64, 48), "JPEG", exif=exif.tobytes())
    assert check_bytes(data).width == 64
    assert decode(data).size == (64, 48)


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:  # IMG-09
    im = decode(F.png16())
    arr = np.asarray(im)[..., 0]
    assert im.mode == "RGB"
    assert (arr == 255).mean() < 0.05
    assert arr.min() == 0 and arr.max() == 255


def test_cmyk_becomes_rgb() -> None:
    assert decode(F.cmyk_jpeg()).mode == "RGB"


def test_alpha_composited_on_white() -> None:  # IMG-10
    arr = np.asarray(decode(F.logo_rgba()))
    colours = np.unique(arr.reshape(-1, 3), axis=0)
    assert len(colours) >= 2
    assert (arr[0, 0] == 255).all() and (arr[32, 32] == 0).all()


def test_tiny_and_strip_images() -> None:  # IMG-11
    assert reason(F.encode(F.photo(16, 16), "PNG")) == "too_small"
    assert reason(F.encode(Image.new("RGB", (2000, 40)), "PNG")) == "aspect"


def test_animated_gif_first_frame_only() -> None:  # IMG-12
    c = check_bytes(F.animated_gif(50))
    assert c.format == "GIF" and (c.width, c.height) == (48, 48)


def test_large_images_are_downsized_on_store() -> None:
    big = F.jpeg(3000, 2000)
    c = check_bytes(big, ImageLimits(max_pixels=1_000_000))
    assert c.downsized and c.width * c.height <= 1_000_000
    assert (c.orig_width, c.orig_height) == (3000, 2000)
    assert abs(c.width / c.height - 1.5) < 0.01
    assert Image.open(io.BytesIO(c.data)).size == (c.width, c.height)


def test_gps_flagged() -> None:  # IMG-14 (originals are kept: the manifest flags GPS)
    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (1.0, 2.0, 3.0)}
    data = F.encode(F.photo(), "JPEG", exif=exif.tobytes())
    assert check_bytes(data).has_gps
    assert not check_bytes(F.jpeg()).has_gps


def test_pillow_global_state_untouched() -> None:  # IMG-17
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, list(warnings.filters))
    for data in (F.jpeg(), F.jpeg()[:300], F.bomb_png(10000), F.png16()):
        try:
            check_bytes(data)
            decode(data)
        except ImageRejected:
            pass
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, list(warnings.filters)) == before


def test_normalise_palette_with_transparency() -> None:
    im = Image.new("P", (40, 40), 0)
    im.putpalette([0, 0, 0] + [255, 0, 0] * 255)
    im.info["transparency"] = 0
    out = normalise(im)
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)


def test_store_is_content_addressed_and_idempotent(tmp_path) -> None:  # SEC-10, CON-03
    store = ImageStore(tmp_path)
    data = F.jpeg()
    a = store.put(data, "jpg")
    b = store.put(data, "jpg")
    assert a == b
    image_id, rel = a
    assert rel == f"images/{image_id[:2]}/{image_id}.jpg"
    assert (tmp_path / rel).read_bytes() == data
    assert list(store.objects()) == [image_id]
    assert not list(tmp_path.rglob("*.tmp"))


def test_store_refuses_planted_symlink(tmp_path) -> None:  # SEC-11
    from datakit.errors import StoreError

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    store_dir = tmp_path / "store"
    (store_dir / "images").mkdir(parents=True)
    data = F.jpeg()
    from datakit.images import content_id

    (store_dir / "images" / content_id(data)[:2]).symlink_to(elsewhere)
    with pytest.raises(StoreError, match="symlink"):
        ImageStore(store_dir).put(data, "jpg")
    assert list(elsewhere.iterdir()) == []


def test_png_with_bad_idat_crc_is_refused() -> None:  # IMG-03 (load() alone ignores CRCs)
    data = bytearray(F.encode(F.photo(64, 64), "PNG"))
    idat = data.index(b"IDAT")
    length = int.from_bytes(data[idat - 4: idat], "big")
    data[idat + 4 + length] ^= 0xFF  # first CRC byte of the IDAT chunk
    assert reason(bytes(data)) == "decode_error"


def test_stored_files_are_readable_by_the_team(tmp_path) -> None:
    import stat

    from datakit.fsutil import FILE_MODE, atomic_write_text

    _, rel = ImageStore(tmp_path).put(F.jpeg(), "jpg")
    atomic_write_text(tmp_path / "m.json", "{}")
    for p in (tmp_path / rel, tmp_path / "m.json"):
        assert stat.S_IMODE(p.stat().st_mode) == FILE_MODE
        assert FILE_MODE & 0o044  # group/other can read under the usual umasks
