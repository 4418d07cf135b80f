"""The README's first screen shows what the report looks like: a real screenshot, small, in the repo."""

from __future__ import annotations

import re

from PIL import Image

from tests.e2e.helpers import REPO


def test_the_first_screen_shows_the_report_screenshot() -> None:
    first_screen = "\n".join((REPO / "README.md").read_text(encoding="utf-8").splitlines()[:15])
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", first_screen)
    assert links, "no image in the README's first 15 lines"
    shot = REPO / links[0]
    assert shot.is_file() and shot.stat().st_size < 200_000, shot
    with Image.open(shot) as im:
        assert im.format == "PNG" and 600 <= im.width <= 1400 and 300 <= im.height <= 1200
        assert len(set(im.convert("RGB").resize((64, 48)).getdata())) > 50  # a picture, not a blank page
