"""Palettes: named reference colours (shipped `basic` and `fashion`, or a CSV file)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from datakit.colors.params import BUILTIN_PALETTES
from datakit.colors.science import ciede2000, srgb_to_lab
from datakit.errors import ParamsError


@dataclass(frozen=True)
class Palette:
    """Named reference colours: names, their basic families, sRGB and CIELAB."""

    source: str
    names: tuple[str, ...]
    families: tuple[str, ...]
    rgb: np.ndarray  # (n, 3) uint8
    lab: np.ndarray  # (n, 3) float64

    def nearest(self, lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index of the nearest palette colour (CIEDE2000) for each of `lab` (n, 3), and the ΔE."""
        d = ciede2000(np.asarray(lab)[:, None, :], self.lab[None, :, :])
        idx = np.argmin(d, axis=1)
        return idx, d[np.arange(len(idx)), idx]


def _parse_palette(text: str, source: str) -> Palette:
    rows = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.reader(rows)
    header = [h.strip().lower() for h in next(reader, [])]
    missing = [c for c in ("name", "r", "g", "b") if c not in header]
    if missing:
        raise ParamsError(f"colors.palette: {source}: the header must name name,r,g,b[,family] (missing {', '.join(missing)})")
    col = {h: i for i, h in enumerate(header)}
    names: list[str] = []
    families: list[str] = []
    values: list[tuple[int, int, int]] = []
    for n, row in enumerate(reader, start=2):
        try:
            name = row[col["name"]].strip()
            rgb = tuple(int(row[col[c]].strip()) for c in ("r", "g", "b"))
            family = row[col["family"]].strip() if "family" in col and col["family"] < len(row) else ""
        except (IndexError, ValueError):
            raise ParamsError(f"colors.palette: {source}: data row {n - 1} is not name,r,g,b with integers: {','.join(row)!r}") from None
        if not name or any(not 0 <= c <= 255 for c in rgb):
            raise ParamsError(f"colors.palette: {source}: data row {n - 1} needs a name and r,g,b in 0..255: {','.join(row)!r}")
        if name in names:
            raise ParamsError(f"colors.palette: {source}: the name {name!r} appears twice")
        names.append(name)
        families.append(family or name)
        values.append(rgb)  # type: ignore[arg-type]
    if not names:
        raise ParamsError(f"colors.palette: {source}: no colours")
    rgb_arr = np.array(values, dtype=np.uint8)
    return Palette(source, tuple(names), tuple(families), rgb_arr, srgb_to_lab(rgb_arr))


def load_palette(spec: str) -> Palette:
    """A shipped palette (`basic`, `fashion`) or a CSV file `name,r,g,b[,family]` (# comments).

    Raises:
        ParamsError: naming `colors.palette` when the file is missing or malformed.
    """
    if spec in BUILTIN_PALETTES:
        text = resources.files("datakit").joinpath("palettes", f"{spec}.csv").read_text(encoding="utf-8")
        return _parse_palette(text, spec)
    path = Path(spec)
    if not path.is_file():
        raise ParamsError(f"colors.palette: no palette file {spec!r} (use basic, fashion or a CSV file name,r,g,b[,family])")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ParamsError(f"colors.palette: cannot read {spec}: {exc}") from None
    return _parse_palette(text, str(path))
