"""The one safe way datakit decodes and stores images.

Every stage reads pixels through `decode`/`load_image`, and scrape accepts bytes through
`check_bytes`. The rules (reliability.md, IMG-01..17):

* format allow-list (JPEG, PNG, WEBP, GIF) decided from magic bytes, never from a URL or header;
  SVG, TIFF, EPS, HEIC and the rest are `unsupported_format`, HTML and text `not_an_image`;
* our own pixel cap checked right after `open()` and before `load()` (Pillow's
  DecompressionBombError is not an OSError, and below 2x its limit Pillow only warns);
* the decode cost bounded before decoding (issue 13 B1): a progressive JPEG is decoded scan by
  scan and each scan walks the whole image, so a 90 KB file repeating its last scan 5,000 times
  costs half a minute of CPU. Scans are counted from the markers and refused (`decode_cost`)
  above `max_jpeg_scans`, or when width x height x scans exceeds `max_decode_work`; decoding
  also stops at `decode_deadline_s` (checked between scans, which are fed to libjpeg one by one);
* a full decode, because `open()` and `verify()` both pass truncated JPEGs;
* the first frame only of animations;
* EXIF orientation applied, modes normalised to 8-bit RGB (16-bit scaled, not clipped; alpha
  composited on white; palette transparency honoured); ICC profiles are ignored (stripped when
  re-encoding) rather than run through the colour-management code;
* images above `max_pixels` (default 4 MP) are downsized and re-encoded when stored.

Pillow's process-wide switches (`MAX_IMAGE_PIXELS`, `LOAD_TRUNCATED_IMAGES`, warning filters) are
never touched.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import os
import re
import struct
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from datakit.errors import StoreError
from datakit.fsutil import FILE_MODE, TMP_SUFFIX

ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF")
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}
MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
_ORIENTATION = 0x0112
_GPS_IFD = 0x8825

# Exceptions Pillow raises on hostile input (the set its own fuzz suite expects), plus
# DecompressionBombError, which derives from Exception directly.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    struct.error,
    IndexError,
    EOFError,
    OverflowError,
    NotImplementedError,
    MemoryError,
    TypeError,
    KeyError,
    zlib.error,
    Image.DecompressionBombError,
)


class ImageRejected(Exception):
    """An input that cannot become a dataset image; `reason` is a code from manifest.REASONS."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImageLimits:
    """Decode and storage limits (params `scrape.image`)."""

    max_pixels: int = 4_000_000  # downsize above this when storing
    max_decode_pixels: int = 40_000_000  # refuse above this (decompression bombs)
    min_side: int = 32
    max_aspect: float = 10.0
    formats: tuple[str, ...] = ALLOWED_FORMATS
    jpeg_quality: int = 90
    max_jpeg_scans: int = 100  # libjpeg writes 10 (colour) or 6 (grey); optimisers a few more
    max_decode_work: int = 1_000_000_000  # width x height x scans: about 1 s of libjpeg time
    decode_deadline_s: float = 10.0  # backstop for whatever the estimate lets through


@dataclass
class Checked:
    """An accepted image: the bytes to store and what they are."""

    data: bytes
    format: str
    width: int
    height: int
    orig_width: int
    orig_height: int
    downsized: bool
    has_gps: bool

    @property
    def ext(self) -> str:
        return EXTENSIONS[self.format]


def sniff(data: bytes) -> str | None:
    """The format named by the magic bytes, or a word for known non-allowed content."""
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif", b"ftypavis", b"ftyphevc"):
        return "HEIF"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith(b"%PDF"):
        return "PDF"
    if head.startswith(b"%!PS") or head.startswith(b"\xc5\xd0\xd3\xc6"):
        return "EPS"
    if head.startswith(b"8BPS"):
        return "PSD"
    if head.startswith(b"\x00\x00\x01\x00") or head.startswith(b"icns"):
        return "ICO"
    if head.startswith(b"\x00\x00\x00\x0cjP  ") or head.startswith(b"\xff\x4f\xff\x51"):
        return "JPEG2000"
    text = head.lstrip().lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in data[:2048].lower()):
        return "SVG"
    return None


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation (1-8); broken or odd values count as 1 (IMG-08)."""
    try:
        value = im.getexif().get(_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - broken EXIF counts as "no orientation" (IMG-08)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _has_gps(im: Image.Image) -> bool:
    try:
        return _GPS_IFD in im.getexif()
    except Exception:  # noqa: BLE001
        return False


# After a scan's header, the entropy-coded data runs to the next marker: 0xFF followed by
# anything but a stuffed 0x00, a restart marker (D0-D7) or a fill byte (FF).
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def jpeg_scans(data: bytes) -> list[int]:
    """Offsets of the scans (SOS markers) of a JPEG, from its marker structure: segments are
    skipped by their length and entropy-coded data up to the next real marker, so an EXIF
    thumbnail's markers are not counted. Stops quietly at anything malformed (the decoder
    reports that) and at the end of the image."""
    scans: list[int] = []
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:
            scans.append(pos)
            found = _NEXT_MARKER.search(data, pos + 2 + length)
            if found is None:
                break
            pos = found.start()
            continue
        pos += 2 + length
    return scans


def decode_work(data: bytes) -> int:
    """A cheap estimate of what decoding `data` costs, in pixel passes (width x height, times
    the scans of a JPEG), read from the headers only; 0 when they cannot be read. Callers use it
    to decide where to decode (download validates costly images off the event loop)."""
    kind = sniff(data)
    if kind not in ALLOWED_FORMATS:
        return 0
    try:
        with Image.open(io.BytesIO(data), formats=[kind]) as im:
            w, h = im.size
    except _DECODE_ERRORS:
        return 0
    return w * h * (max(1, len(jpeg_scans(data))) if kind == "JPEG" else 1)


class _DecodeOverdue(Exception):
    """Raised from inside Pillow's read loop when decoding passes its deadline."""


class _PacedBytes(io.BytesIO):
    """The image bytes as Pillow reads them. Once `arm`ed (just before pixels are decoded),
    every read stops at the next scan boundary, so libjpeg (which suspends when its input runs
    out) decodes one scan per read, and a read after the deadline raises `_DecodeOverdue`."""

    def __init__(self, data: bytes, stops: list[int], deadline_s: float) -> None:
        super().__init__(data)
        self.stops = stops
        self.deadline_s = deadline_s
        self._until: float | None = None

    def arm(self) -> None:
        self._until = time.monotonic() + self.deadline_s

    def read(self, size: int | None = -1) -> bytes:
        if self._until is not None:
            if time.monotonic() > self._until:
                raise _DecodeOverdue(f"decoding passed its {self.deadline_s:g} s deadline")
            pos = self.tell()
            nxt = bisect.bisect_right(self.stops, pos)
            if nxt < len(self.stops):
                room = self.stops[nxt] - pos
                size = room if size is None or size < 0 else min(size, room)
        return super().read(size)


def open_checked(data: bytes, limits: ImageLimits) -> Image.Image:
    """Open (header only) with the allow-list, our pixel cap and the decode-cost bound; no
    pixels decoded yet."""
    kind = sniff(data)
    if kind is None:
        raise ImageRejected("not_an_image", "no image signature")
    if kind not in limits.formats:
        raise ImageRejected("unsupported_format", kind)
    scans = jpeg_scans(data) if kind == "JPEG" else []
    if len(scans) > limits.max_jpeg_scans:
        raise ImageRejected("decode_cost", f"{len(scans)} JPEG scans > {limits.max_jpeg_scans} (a scan bomb?)")
    try:
        im = Image.open(_PacedBytes(data, scans[1:], limits.decode_deadline_s), formats=list(limits.formats))
    except Image.DecompressionBombError as exc:
        raise ImageRejected("too_many_pixels", str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise ImageRejected("decode_error", f"{kind} header not readable") from exc
    except _DECODE_ERRORS as exc:
        raise ImageRejected("decode_error", f"{type(exc).__name__}: {exc}") from exc
    w, h = im.size
    if w * h > limits.max_decode_pixels:
        raise ImageRejected("too_many_pixels", f"{w}x{h} > {limits.max_decode_pixels} pixels")
    if w * h * max(1, len(scans)) > limits.max_decode_work:
        raise ImageRejected(
            "decode_cost",
            f"{w}x{h} pixels x {len(scans)} JPEG scans > {limits.max_decode_work} pixel passes",
        )
    return im


def load_pixels(im: Image.Image) -> None:
    """Decode the first frame completely; truncation and corruption raise here, and so does the
    decode deadline of an image from `open_checked` (`decode_cost`)."""
    fp = getattr(im, "fp", None)
    if isinstance(fp, _PacedBytes):
        fp.arm()
    try:
        im.load()
    except _DecodeOverdue as exc:
        raise ImageRejected("decode_cost", str(exc)) from None
    except Image.DecompressionBombError as exc:
        raise ImageRejected("too_many_pixels", str(exc)) from exc
    except OSError as exc:
        msg = str(exc)
        if "truncated" in msg or "broken data stream" in msg or "end of file" in msg.lower():
            raise ImageRejected("truncated", msg) from exc
        raise ImageRejected("decode_error", f"{type(exc).__name__}: {msg}") from exc
    except _DECODE_ERRORS as exc:
        raise ImageRejected("decode_error", f"{type(exc).__name__}: {exc}") from exc


def _verify_png(data: bytes, limits: ImageLimits) -> None:
    try:
        Image.open(io.BytesIO(data), formats=["PNG"]).verify()
    except _DECODE_ERRORS as exc:
        raise ImageRejected("decode_error", f"PNG check failed: {type(exc).__name__}: {exc}") from exc


def normalise(im: Image.Image) -> Image.Image:
    """EXIF orientation applied; 8-bit RGB. 16-bit data is scaled (not clipped); alpha and
    palette transparency are composited onto white."""
    orientation = exif_orientation(im)
    if orientation != 1:
        try:
            im = ImageOps.exif_transpose(im)
        except Exception:  # noqa: BLE001 - broken EXIF: keep the pixels as they are (IMG-08)
            pass
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im)
        if mode == "F" or (mode == "I" and arr.max(initial=0) <= 255 and arr.min(initial=0) >= 0):
            arr8 = np.clip(arr, 0, 255).astype(np.uint8)
        else:
            arr8 = (np.clip(arr.astype(np.float64), 0, 65535) / 257.0 + 0.5).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    elif mode == "PA":
        im = im.convert("RGBA")
        mode = im.mode
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode != "RGB":
        return im.convert("RGB")
    return im


def _target_size(w: int, h: int, max_pixels: int) -> tuple[int, int]:
    scale = (max_pixels / float(w * h)) ** 0.5
    return max(1, int(w * scale)), max(1, int(h * scale))


def _downsize(im: Image.Image, max_pixels: int, original: tuple[int, int] | None = None) -> Image.Image:
    """Resize to at most `max_pixels`, keeping the aspect ratio of `original` (the size
    before any draft reduction, orientation applied)."""
    w, h = original or im.size
    size = _target_size(w, h, max_pixels)
    if im.size == size:
        return im
    return im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def check_bytes(data: bytes, limits: ImageLimits = ImageLimits()) -> Checked:
    """Validate downloaded bytes completely and decide what to store.

    Raises:
        ImageRejected: with a reason code (empty, not_an_image, unsupported_format,
            too_many_pixels, truncated, decode_error, too_small, aspect, transform_error).
    """
    if not data:
        raise ImageRejected("empty", "0 bytes")
    im = open_checked(data, limits)
    fmt = im.format or ""
    ow, oh = im.size
    if fmt == "PNG":
        _verify_png(data, limits)  # load() does not check chunk CRCs; verify() does
    orientation = exif_orientation(im)
    fits = ow * oh <= limits.max_pixels
    if fmt == "JPEG" and im.mode in ("RGB", "L"):
        # libjpeg still entropy-decodes the whole stream (truncation and corrupt data raise as
        # in a plain load); only the inverse DCT runs at a reduced scale: about half the cost.
        # Images to downsize are decoded at the smallest scale still above the target size.
        target = (max(1, ow // 8), max(1, oh // 8)) if fits else _target_size(ow, oh, limits.max_pixels)
        im.draft("L" if fits else "RGB", target)
    load_pixels(im)
    w, h = (oh, ow) if orientation >= 5 else (ow, oh)
    if min(w, h) < limits.min_side:
        raise ImageRejected("too_small", f"{w}x{h}, min side {limits.min_side}")
    if max(w, h) / max(1, min(w, h)) > limits.max_aspect:
        raise ImageRejected("aspect", f"{w}x{h}, max aspect {limits.max_aspect}")
    has_gps = fmt == "JPEG" and _has_gps(im)
    if fits:
        return Checked(data, fmt, w, h, w, h, False, has_gps)
    try:
        small = _downsize(normalise(im), limits.max_pixels, (w, h))
        buf = io.BytesIO()
        out_fmt = "PNG" if fmt in ("PNG", "GIF") else "JPEG"
        if out_fmt == "JPEG":
            small.save(buf, "JPEG", quality=limits.jpeg_quality, optimize=False)
        else:
            small.save(buf, "PNG", compress_level=6)
    except ImageRejected:
        raise
    except _DECODE_ERRORS as exc:
        raise ImageRejected("transform_error", f"{type(exc).__name__}: {exc}") from exc
    return Checked(buf.getvalue(), out_fmt, small.width, small.height, w, h, True, False)


def decode(data: bytes, limits: ImageLimits = ImageLimits(), *, max_pixels: int | None = None) -> Image.Image:
    """Decode bytes to a normalised 8-bit RGB image (downsized above `max_pixels` if given).

    Raises:
        ImageRejected: as `check_bytes`.
    """
    im = open_checked(data, limits)
    load_pixels(im)
    try:
        out = normalise(im)
        if max_pixels and out.width * out.height > max_pixels:
            out = _downsize(out, max_pixels)
    except _DECODE_ERRORS as exc:
        raise ImageRejected("transform_error", f"{type(exc).__name__}: {exc}") from exc
    return out


def load_image(root: Path, rel: str, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """The image a manifest row names (`path` relative to the project root), normalised."""
    from datakit.manifest import resolve

    return decode(resolve(root, rel).read_bytes(), limits)


def content_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def object_relpath(image_id: str, ext: str) -> str:
    """Where an image lives inside a store folder: `images/<id[:2]>/<id>.<ext>`."""
    return f"images/{image_id[:2]}/{image_id}.{ext}"


class ImageStore:
    """A content-addressed folder of images (`<folder>/images/<id[:2]>/<id>.<ext>`).

    Writes are atomic (temp file in the target folder, then `os.replace`); writing bytes that
    are already stored is a no-op, so two tasks storing the same content never conflict.
    """

    def __init__(self, folder: Path, *, durable: bool = False) -> None:
        self.folder = Path(folder)
        self.durable = durable
        self._ready: set[str] = set()
        images = self.folder / "images"
        if images.is_symlink():
            raise StoreError(f"refusing to write through the symlink {images} (datakit did not create it)")
        images.mkdir(parents=True, exist_ok=True)

    def _shard(self, prefix: str) -> Path:
        shard = self.folder / "images" / prefix
        if prefix not in self._ready:
            if shard.is_symlink():
                raise StoreError(f"refusing to write through the symlink {shard} (datakit did not create it)")
            shard.mkdir(exist_ok=True)
            self._ready.add(prefix)
        return shard

    def put(self, data: bytes, ext: str, image_id: str | None = None) -> tuple[str, str]:
        """Store `data`; returns (image_id, path relative to the store folder)."""
        image_id = image_id or content_id(data)
        rel = object_relpath(image_id, ext)
        target = self.folder / rel
        shard = self._shard(image_id[:2])
        fd, tmp = tempfile.mkstemp(prefix="." + image_id[:16] + ".", suffix=TMP_SUFFIX, dir=shard)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                os.fchmod(fh.fileno(), FILE_MODE)
                if self.durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return image_id, rel

    def objects(self) -> dict[str, Path]:
        """Every stored object, keyed by image_id (file stem)."""
        return stored_objects(self.folder)


def stored_objects(folder: Path) -> dict[str, Path]:
    """Every object of the store in `folder` (`images/<id[:2]>/<id>.<ext>`), keyed by image_id."""
    out: dict[str, Path] = {}
    images = Path(folder) / "images"
    if not images.exists():
        return out
    for shard in images.iterdir():
        if not shard.is_dir():
            continue
        for p in shard.iterdir():
            if p.is_file() and not p.name.endswith(TMP_SUFFIX) and not p.name.startswith("."):
                out[p.stem] = p
    return out


def thumbnail_uri(root: Path, rel: str, size: int = 128) -> str:
    """A JPEG data URI of the image's thumbnail (longest side `size`) for self-contained HTML
    pages; "" when the image cannot be read (the page shows an empty box, not a broken image)."""
    import base64

    try:
        im = load_image(root, rel)
    except (ImageRejected, OSError):
        return ""
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
