"""Decode cost is bounded before decoding (issue 13 B1; reliability.md IMG-04, NET-15).

A progressive JPEG is decoded scan by scan, and every scan walks every block of the image, so a
small file that repeats its last scan thousands of times costs seconds to minutes of CPU. The
bombs are built here: Pillow writes a real progressive JPEG, then its last scan is repeated by
byte surgery.
"""

from __future__ import annotations

import asyncio
import io
import time

import numpy as np
import pytest
from PIL import Image

from datakit.images import ImageLimits, ImageRejected, ImageStore, check_bytes, decode, decode_work, jpeg_scans
from datakit.params import FetchParams
from datakit.scrape.download import Journal, Work, download

pytestmark = pytest.mark.timeout(120)


def progressive_jpeg(side: int, extra_scans: int = 0, *, noisy: bool = False) -> bytes:
    """A progressive JPEG of side x side whose last scan is repeated `extra_scans` more times."""
    if noisy:
        pixels = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
        im = Image.fromarray(pixels, "RGB")
    else:
        im = Image.new("RGB", (side, side), (120, 130, 140))
    buf = io.BytesIO()
    im.save(buf, "JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    assert data.endswith(b"\xff\xd9")
    last = data.rfind(b"\xff\xda")  # the last SOS marker: its scan runs to the EOI
    return data[:last] + data[last:-2] * (1 + extra_scans) + b"\xff\xd9"


def scan_bomb(side: int = 2000, scans: int = 5000) -> bytes:
    return progressive_jpeg(side, scans)


def timed(fn, *args):  # noqa: ANN001, ANN201
    t0 = time.monotonic()
    try:
        return fn(*args), time.monotonic() - t0
    except ImageRejected as exc:
        return exc, time.monotonic() - t0


@pytest.mark.parametrize(("side", "scans"), [(2000, 5000), (6000, 3000)])
def test_scan_bomb_is_refused_within_two_seconds(side, scans) -> None:  # B1
    bomb = scan_bomb(side, scans)
    if side == 2000:
        assert len(bomb) < 256 * 1024  # small enough to have been validated on the event loop
    for fn in (check_bytes, decode):  # every stage decodes through these two
        got, seconds = timed(fn, bomb, ImageLimits())
        assert isinstance(got, ImageRejected) and got.reason == "decode_cost", got
        assert "scans" in got.detail
        assert seconds <= 2.0, f"{fn.__name__} took {seconds:.1f} s"


def test_scan_count_reads_markers_not_bytes() -> None:
    baseline = io.BytesIO()
    Image.new("RGB", (64, 48), "red").save(baseline, "JPEG")
    assert len(jpeg_scans(baseline.getvalue())) == 1
    normal = progressive_jpeg(300, noisy=True)  # entropy data full of 0xFF bytes (stuffed)
    assert len(jpeg_scans(normal)) == 10  # libjpeg's standard progressive script for colour
    assert len(jpeg_scans(progressive_jpeg(300, 40))) == 50
    assert decode_work(normal) == 300 * 300 * 10
    assert decode_work(b"<html>not an image</html>") == 0


def test_real_progressive_jpegs_are_still_accepted() -> None:
    for data in (progressive_jpeg(1200, noisy=True), progressive_jpeg(2000, 40)):
        checked = check_bytes(data, ImageLimits())
        assert checked.format == "JPEG" and checked.orig_width in (1200, 2000)


def test_pixel_scan_budget_refuses_big_images_with_many_scans() -> None:
    data = progressive_jpeg(2000, 40)  # 50 scans x 4 MP
    with pytest.raises(ImageRejected) as err:
        check_bytes(data, ImageLimits(max_decode_work=100_000_000))
    assert err.value.reason == "decode_cost" and "pixel" in err.value.detail


def test_decoding_has_a_deadline() -> None:  # the backstop when the estimate lets a slow file through
    data = progressive_jpeg(2000, 90)  # 100 scans: allowed, ~0.3 s of work
    got, seconds = timed(check_bytes, data, ImageLimits(decode_deadline_s=0.03))
    assert isinstance(got, ImageRejected) and got.reason == "decode_cost", got
    assert "deadline" in got.detail
    assert seconds < 0.25


def test_costly_small_images_are_validated_off_the_event_loop(tmp_path) -> None:  # B1, NET-15
    heavy = progressive_jpeg(3000, 50)  # ~70 KB, 9 MP x 60 scans: about half a second of decoding
    assert len(heavy) < 256 * 1024
    store = ImageStore(tmp_path)
    (tmp_path / "state").mkdir()
    journal = Journal(tmp_path / "state")

    async def main() -> float:
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.005)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        await download([Work("heavy", data=heavy), Work("heavy2", data=heavy + b"\x00")],
                       fetch=FetchParams(), user_agent="t", limits=ImageLimits(), store=store, journal=journal)
        done.set()
        await tick
        return max(gaps)

    worst = asyncio.run(main())
    journal.close()
    assert {r["status"] for r in journal.entries.values()} == {"ok"}
    assert worst < 0.2, f"the event loop stalled for {worst:.2f} s"
