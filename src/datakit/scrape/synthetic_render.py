"""Procedural garment pictures for the offline `synthetic` provider.

Everything here is pure: a picture depends only on the arguments of `render` (item, attribute,
integer seed, nominal size), never on global random state, the clock or `hash()`. Only numpy and
Pillow are used, and all per-pixel work is vectorised.

How a picture is made:

1. A *sketch* of the garment is built in a unit frame (x to the right, y down, the garment
   roughly inside [0, 1] x [0, 1]): polygons that add to or cut from the silhouette, plus detail
   strokes (seams, ribbing, buttons, pockets) and shaded areas (the inside of a hood). Each item
   has its own sketch builder, so silhouettes differ per item: a vest has no sleeves and a deep V
   neck, a hoodie a hood, kangaroo pocket and ribbed long sleeves, a t-shirt short sleeves and a
   round neck, a shirt a collar, placket and buttons, a blouse a flared body with bell sleeves and
   ruffles, a pullover ribbed cuffs and hem with a crew or V neck, a sweater a roll neck and cable
   stitches. Unknown items get a generic top.
2. The sketch is scaled, rotated a little and placed on a canvas, drawn at twice the resolution
   and reduced, which gives an anti-aliased alpha mask.
3. The garment is filled with the attribute's pattern, computed in the garment's own frame so the
   pattern turns with it: stripes (any angle, varied widths, sometimes a thin third stripe), polka
   dots (square or hexagonal lattices of varied spacing and size) or leopard rosettes (irregular
   broken dark rings with darker centres, plus solid spots). Unknown attributes give a plain fill.
4. Soft shading, a drop shadow, a background (plain, gradient or noise texture, chosen to
   contrast with the garment) and a little sensor noise finish the picture.

`render` returns the picture together with a `GarmentTruth`: what was drawn, including the
garment's main colour (name and RGB) so colour features can be checked against ground truth.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

Point = tuple[float, float]
Polygon = list[Point]
RGB = tuple[int, int, int]
Colour = Sequence[float] | np.ndarray  # an RGB triple, 0..255

ITEMS: tuple[str, ...] = ("blouse", "hoodie", "pullover", "sweater", "shirt", "t-shirt", "vest")
"""Items with a dedicated silhouette; any other item name is drawn as a generic top."""

ATTRIBUTES: tuple[str, ...] = ("striped", "dotted", "leopard")
"""Attributes with a dedicated pattern; any other attribute (or None) gives a plain fill."""

PALETTE: dict[str, RGB] = {
    "black": (28, 28, 30),
    "white": (236, 236, 230),
    "grey": (128, 128, 132),
    "red": (196, 32, 44),
    "burgundy": (118, 26, 46),
    "orange": (232, 118, 32),
    "yellow": (238, 198, 42),
    "beige": (214, 194, 158),
    "brown": (112, 70, 40),
    "olive": (108, 114, 46),
    "green": (40, 138, 62),
    "teal": (22, 126, 128),
    "blue": (42, 92, 200),
    "navy": (26, 36, 92),
    "purple": (108, 52, 148),
    "pink": (236, 132, 172),
}
"""Named garment colours; the ground-truth colour name is always one of these keys."""

# Leopard grounds lean towards the natural tans, but any colour can occur.
_LEOPARD_GROUNDS: dict[str, float] = {"beige": 5, "orange": 3, "yellow": 2, "brown": 2, "white": 1,
                                      "grey": 1, "pink": 1.5, "red": 0.5, "blue": 0.5, "green": 0.5}
_LEOPARD_RINGS: dict[str, float] = {"black": 6, "brown": 3, "navy": 1, "burgundy": 1}

_SUPERSAMPLE = 2


def derive_seed(*parts: object) -> int:
    """A 64-bit seed from any parts, stable across processes (sha256, never `hash()`).

    Args:
        *parts: values whose `str()` identifies the random stream (seed, item, rank, ...).

    Returns:
        A non-negative integer suitable for `numpy.random.default_rng`.
    """
    text = "\x1f".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


@dataclass(frozen=True)
class GarmentTruth:
    """What `render` drew: the ground truth behind one synthetic picture.

    Attributes:
        item: silhouette drawn (one of `ITEMS`, or "generic").
        pattern: "striped", "dotted", "leopard" or "plain".
        colour_name: the garment's main colour, a `PALETTE` key.
        colour_rgb: the exact RGB of the main colour (before shading).
        accent_name: the pattern's second colour (stripes, dots, rosette rings), if any.
        accent_rgb: its exact RGB, if any.
        background: "plain", "gradient" or "noise".
        width: picture width in pixels.
        height: picture height in pixels.
        coverage: fraction of the picture covered by the garment (alpha mean).
        bbox: garment bounding box (left, top, right, bottom), right/bottom exclusive.
        rotation: rotation of the garment in degrees.
    """

    item: str
    pattern: str
    colour_name: str
    colour_rgb: RGB
    accent_name: str | None
    accent_rgb: RGB | None
    background: str
    width: int
    height: int
    coverage: float
    bbox: tuple[int, int, int, int]
    rotation: float


@dataclass
class Rendering:
    """A rendered picture, its garment alpha mask (H x W float32 in [0, 1]) and ground truth."""

    image: Image.Image
    mask: np.ndarray
    truth: GarmentTruth


# --------------------------------------------------------------------------------------------
# sketches: garments in the unit frame


@dataclass
class _Stroke:
    points: Polygon
    width: float  # in unit-frame lengths
    darkness: int  # 0..255, how much the stroke darkens the fabric
    closed: bool = False


@dataclass
class _Sketch:
    """Silhouette operations and details, all in the unit frame."""

    shapes: list[tuple[Polygon, bool]] = field(default_factory=list)  # (polygon, adds?)
    strokes: list[_Stroke] = field(default_factory=list)
    shades: list[tuple[Polygon, int]] = field(default_factory=list)  # (polygon, darkness)

    def add(self, poly: Polygon) -> None:
        self.shapes.append((poly, True))

    def cut(self, poly: Polygon) -> None:
        self.shapes.append((poly, False))

    def line(self, points: Polygon, width: float = 0.008, darkness: int = 110,
             closed: bool = False) -> None:
        self.strokes.append(_Stroke(points, width, darkness, closed))

    def shade(self, poly: Polygon, darkness: int) -> None:
        self.shades.append((poly, darkness))


@dataclass(frozen=True)
class _Body:
    """Proportions of a torso; left-side landmarks, the right side is mirrored."""

    top: float  # y of the neckline's top edge
    neck: float  # half-width of the neck opening
    shoulder: float  # half-width at the shoulders
    armpit: float  # y of the armpit
    hem: float  # y of the hem
    hem_half: float  # half-width at the hem

    @property
    def neck_pt(self) -> Point:
        return (0.5 - self.neck, self.top)

    @property
    def shoulder_pt(self) -> Point:
        return (0.5 - self.shoulder, self.top + 0.035)

    @property
    def armpit_pt(self) -> Point:
        return (0.5 - self.shoulder + 0.03, self.armpit)

    @property
    def hem_pt(self) -> Point:
        return (0.5 - self.hem_half, self.hem)


def _mirror(poly: Sequence[Point]) -> Polygon:
    return [(1.0 - x, y) for x, y in reversed(poly)]


def _mirror_pt(p: Point) -> Point:
    return (1.0 - p[0], p[1])


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 32,
             start: float = 0.0, stop: float = 2 * math.pi) -> Polygon:
    closed = abs(stop - start - 2 * math.pi) < 1e-9
    count = n if closed else n + 1
    step = (stop - start) / n
    return [(cx + rx * math.cos(start + k * step), cy + ry * math.sin(start + k * step))
            for k in range(count)]


def _lerp(a: Point, b: Point, t: float) -> Point:
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)


def _body(rng: np.random.Generator, *, flare: float = 0.0, length: float = 0.0,
          neck: float = 0.0) -> _Body:
    shoulder = rng.uniform(0.20, 0.235)
    return _Body(
        top=rng.uniform(0.15, 0.18),
        neck=rng.uniform(0.075, 0.095) + neck,
        shoulder=shoulder,
        armpit=rng.uniform(0.35, 0.39),
        hem=min(0.97, rng.uniform(0.86, 0.92) + length),
        hem_half=shoulder + rng.uniform(-0.025, 0.01) + flare,
    )


def _torso(b: _Body) -> Polygon:
    left = [b.neck_pt, b.shoulder_pt, b.armpit_pt, b.hem_pt]
    return left + _mirror(left)


@dataclass(frozen=True)
class _Sleeve:
    poly: Polygon
    cuff_out: Point
    cuff_in: Point
    direction: Point  # unit vector from shoulder towards the cuff


def _sleeve(b: _Body, angle_deg: float, length: float, cuff: float) -> _Sleeve:
    """Left sleeve hanging `angle_deg` out from vertical, `length` long, `cuff` wide."""
    a = math.radians(angle_deg)
    d = (-math.sin(a), math.cos(a))
    n = (math.cos(a), math.sin(a))  # across the sleeve, pointing to its inner edge
    sh, ap = b.shoulder_pt, b.armpit_pt
    mid = _lerp(sh, ap, 0.5)
    c = (mid[0] + d[0] * length, mid[1] + d[1] * length)
    out = (c[0] - n[0] * cuff / 2, c[1] - n[1] * cuff / 2)
    inn = (c[0] + n[0] * cuff / 2, c[1] + n[1] * cuff / 2)
    return _Sleeve([sh, out, inn, ap], out, inn, d)


def _both_sleeves(s: _Sketch, sl: _Sleeve) -> None:
    s.add(sl.poly)
    s.add(_mirror(sl.poly))


def _rib_band(s: _Sketch, a: Point, b: Point, depth: Point, ribs: int) -> None:
    """Ribbing on a band whose outer edge runs a->b and extends by vector `depth` inwards."""
    s.line([(a[0] + depth[0], a[1] + depth[1]), (b[0] + depth[0], b[1] + depth[1])], 0.007, 120)
    for k in range(1, ribs):
        p = _lerp(a, b, k / ribs)
        s.line([p, (p[0] + depth[0], p[1] + depth[1])], 0.004, 80)


def _ribbed_cuffs(s: _Sketch, sl: _Sleeve, band: float = 0.05) -> None:
    depth = (-sl.direction[0] * band, -sl.direction[1] * band)
    for a, b in ((sl.cuff_out, sl.cuff_in), (_mirror_pt(sl.cuff_in), _mirror_pt(sl.cuff_out))):
        dep = depth if a is sl.cuff_out else (-depth[0], depth[1])
        _rib_band(s, a, b, dep, 6)


def _ribbed_hem(s: _Sketch, b: _Body, band: float = 0.055) -> None:
    left, right = b.hem_pt, _mirror_pt(b.hem_pt)
    _rib_band(s, left, right, (0.0, -band), max(8, int((right[0] - left[0]) / 0.022)))


def _round_neck(s: _Sketch, b: _Body, depth: float, band: float = 0.0) -> None:
    s.cut(_ellipse(0.5, b.top, b.neck, depth))
    if band > 0:
        s.line(_ellipse(0.5, b.top, b.neck + band, depth + band, 20, 0.0, math.pi), 0.007, 110)


def _v_neck(s: _Sketch, b: _Body, depth: float, band: float = 0.0) -> None:
    ln, rn = b.neck_pt, _mirror_pt(b.neck_pt)
    s.cut([(ln[0], ln[1] - 0.01), (rn[0], rn[1] - 0.01), (0.5, b.top + depth)])
    if band > 0:
        s.line([(ln[0] - band, ln[1]), (0.5, b.top + depth + band * 1.6),
                (rn[0] + band, rn[1])], 0.007, 110)


def _buttons(s: _Sketch, x: float, y0: float, y1: float, count: int, r: float = 0.011) -> None:
    for k in range(count):
        y = y0 + (y1 - y0) * (k + 0.5) / count
        s.shade(_ellipse(x, y, r, r, 10), 150)


def _sketch_tshirt(rng: np.random.Generator) -> _Sketch:
    s = _Sketch()
    b = _body(rng)
    _both_sleeves(s, _sleeve(b, rng.uniform(52, 64), rng.uniform(0.15, 0.2), rng.uniform(0.12, 0.15)))
    s.add(_torso(b))
    _round_neck(s, b, rng.uniform(0.045, 0.07), band=0.018)
    sl = _sleeve(b, 58, 0.17, 0.13)
    s.line([sl.cuff_out, sl.cuff_in], 0.005, 70)
    s.line([_mirror_pt(sl.cuff_in), _mirror_pt(sl.cuff_out)], 0.005, 70)
    return s


def _sketch_shirt(rng: np.random.Generator) -> _Sketch:
    s = _Sketch()
    b = _body(rng, neck=-0.01)
    sl = _sleeve(b, rng.uniform(18, 26), rng.uniform(0.56, 0.62), rng.uniform(0.085, 0.1))
    _both_sleeves(s, sl)
    # curved shirt-tail hem: the sides ride up
    torso = _torso(b)
    left_hem = [(0.5 - b.hem_half, b.hem - 0.06), (0.5 - b.hem_half * 0.55, b.hem - 0.01),
                (0.5 - b.hem_half * 0.15, b.hem + 0.012)]
    s.add(torso[:3] + left_hem + _mirror(left_hem) + torso[-3:])
    s.cut([(b.neck_pt[0], b.top - 0.01), (1 - b.neck_pt[0], b.top - 0.01), (0.5, b.top + 0.05)])
    # collar: two pointed wings
    for side in (1, -1):
        wing = [(0.5 - side * b.neck, b.top - 0.012), (0.5 - side * (b.neck + 0.035), b.top + 0.03),
                (0.5 - side * 0.045, b.top + 0.095), (0.5, b.top + 0.05)]
        s.add(wing)
        s.line(wing, 0.006, 130, closed=True)
    s.line([(0.5, b.top + 0.06), (0.5, b.hem + 0.01)], 0.006, 100)
    _buttons(s, 0.515, b.top + 0.08, b.hem - 0.02, 6)
    if rng.random() < 0.6:
        x0, y0 = 0.5 - b.shoulder * 0.75, b.top + 0.12
        s.line([(x0, y0), (x0, y0 + 0.09), (x0 + 0.08, y0 + 0.09), (x0 + 0.08, y0)], 0.005, 90)
    for cuff in ((sl.cuff_out, sl.cuff_in), (_mirror_pt(sl.cuff_in), _mirror_pt(sl.cuff_out))):
        up = (-sl.direction[0] * 0.06, -sl.direction[1] * 0.06)
        if cuff[0] is not sl.cuff_out:
            up = (-up[0], up[1])
        s.line([(cuff[0][0] + up[0], cuff[0][1] + up[1]), (cuff[1][0] + up[0], cuff[1][1] + up[1])],
               0.006, 110)
    return s


def _sketch_blouse(rng: np.random.Generator) -> _Sketch:
    s = _Sketch()
    b = _body(rng, flare=rng.uniform(0.06, 0.1), length=-rng.uniform(0.04, 0.08), neck=0.01)
    sl = _sleeve(b, rng.uniform(30, 40), rng.uniform(0.36, 0.44), rng.uniform(0.16, 0.2))
    _both_sleeves(s, sl)
    s.add(_torso(b))
    # ruffles: scallops along the hem and the bell cuffs
    left, right = b.hem_pt, _mirror_pt(b.hem_pt)
    count = int((right[0] - left[0]) / 0.045)
    r = (right[0] - left[0]) / count / 2
    for k in range(count):
        x = left[0] + r * (2 * k + 1)
        s.add(_ellipse(x, b.hem, r * 1.05, r * 0.9, 14))
        s.line(_ellipse(x, b.hem - r * 0.1, r * 0.7, r * 0.6, 8, 0.2, math.pi - 0.2), 0.004, 70)
    for a, c in ((sl.cuff_out, sl.cuff_in), (_mirror_pt(sl.cuff_in), _mirror_pt(sl.cuff_out))):
        for k in range(4):
            p = _lerp(a, c, (k + 0.5) / 4)
            s.add(_ellipse(p[0], p[1], 0.026, 0.022, 12))
    depth = rng.uniform(0.05, 0.08)
    _round_neck(s, b, depth)
    # ruffled neckline: small loops around the opening
    for k in range(9):
        t = math.pi * (k + 0.5) / 9
        x, y = 0.5 + (b.neck + 0.015) * math.cos(t), b.top + (depth + 0.015) * math.sin(t)
        s.line(_ellipse(x, y, 0.016, 0.013, 10), 0.004, 100, closed=True)
    if rng.random() < 0.5:  # a bow at the neck
        y = b.top + 0.09
        s.shade([(0.5, y), (0.45, y - 0.025), (0.45, y + 0.025)], 90)
        s.shade([(0.5, y), (0.55, y - 0.025), (0.55, y + 0.025)], 90)
    return s


def _sketch_hoodie(rng: np.random.Generator) -> _Sketch:
    s = _Sketch()
    b = _body(rng, flare=-0.01)
    sl = _sleeve(b, rng.uniform(18, 26), rng.uniform(0.55, 0.62), rng.uniform(0.09, 0.11))
    _both_sleeves(s, sl)
    s.add(_torso(b))
    hood_rx, hood_ry = rng.uniform(0.15, 0.17), rng.uniform(0.12, 0.14)
    s.add(_ellipse(0.5, b.top - 0.015, hood_rx, hood_ry))
    s.shade(_ellipse(0.5, b.top + 0.0, hood_rx * 0.58, hood_ry * 0.62), 170)
    s.line(_ellipse(0.5, b.top - 0.015, hood_rx * 0.78, hood_ry * 0.8, 24, math.pi * 0.9,
                    math.pi * 2.1), 0.006, 90)
    for x in (0.47, 0.53):  # drawstrings
        s.line([(x, b.top + 0.06), (x + (x - 0.5) * 0.4, b.top + 0.22)], 0.006, 150)
        s.shade(_ellipse(x + (x - 0.5) * 0.4, b.top + 0.225, 0.008, 0.012, 8), 160)
    y0, y1 = b.hem - rng.uniform(0.28, 0.32), b.hem - 0.075
    pocket = [(0.37, y0), (0.63, y0), (0.69, y1), (0.31, y1)]
    s.line(pocket, 0.007, 120, closed=True)
    _ribbed_cuffs(s, sl)
    _ribbed_hem(s, b)
    return s


def _sketch_pullover(rng: np.random.Generator) -> _Sketch:
    s = _Sketch()
    b = _body(rng, flare=-0.02)
    sl = _sleeve(b, rng.uniform(16, 24), rng.uniform(0.57, 0.64), rng.uniform(0.08, 0.095))
    _both_sleeves(s, sl)
    s.add(_torso(b))
    if rng.random() < 0.5:
        _v_neck(s, b, rng.uniform(0.12, 0.18), band=0.02)
    else:
        _round_neck(s, b, rng.uniform(0.04, 0.06), band=0.022)
    _ribbed_cuffs(s, sl, 0.06)
    _ribbed_hem(s, b, 0.07)
    return s


def _sketch_sweater(rng: np.random.Generator) -> _Sketch:
    s = _Sketch()
    b = _body(rng, flare=-0.015, neck=-0.01)
    sl = _sleeve(b, rng.uniform(16, 24), rng.uniform(0.57, 0.64), rng.uniform(0.09, 0.105))
    _both_sleeves(s, sl)
    s.add(_torso(b))
    roll_h = rng.uniform(0.1, 0.13)
    x0, x1 = 0.5 - b.neck - 0.012, 0.5 + b.neck + 0.012
    s.add([(x0, b.top + 0.03), (x0 - 0.01, b.top - roll_h), (x1 + 0.01, b.top - roll_h),
           (x1, b.top + 0.03)])
    s.add(_ellipse(0.5, b.top - roll_h, b.neck + 0.022, 0.025, 20))
    for k in range(3):  # folds of the roll neck
        y = b.top - roll_h * (0.25 + 0.3 * k)
        s.line([(x0, y), (0.5, y + 0.012), (x1, y)], 0.006, 110)
    # cable stitches: two wavy columns
    phase = rng.uniform(0, 2 * math.pi)
    for cx in (0.5 - b.shoulder * 0.45, 0.5 + b.shoulder * 0.45):
        ys = np.linspace(b.top + 0.1, b.hem - 0.08, 40)
        pts = [(cx + 0.018 * math.sin(float(y) * 60 + phase), float(y)) for y in ys]
        s.line(pts, 0.006, 90)
        s.line([(2 * cx - x, y) for x, y in pts], 0.006, 90)
    _ribbed_cuffs(s, sl, 0.06)
    _ribbed_hem(s, b, 0.075)
    return s


def _sketch_vest(rng: np.random.Generator) -> _Sketch:
    s = _Sketch()
    b = _body(rng, neck=0.01)
    strap = rng.uniform(0.045, 0.065)
    arm_y = b.armpit + rng.uniform(0.03, 0.06)
    left = [(0.5 - b.neck, b.top), (0.5 - b.neck - strap, b.top + 0.01),
            (0.5 - b.shoulder + 0.07, b.top + 0.12), (0.5 - b.shoulder + 0.045, arm_y),
            b.hem_pt]
    pointed = rng.random() < 0.5
    if pointed:
        left.append((0.5 - b.hem_half * 0.45, b.hem + 0.05))
    s.add(left + _mirror(left))
    depth = rng.uniform(0.26, 0.34)
    s.cut([(0.5 - b.neck, b.top - 0.02), (0.5 + b.neck, b.top - 0.02), (0.5, b.top + depth)])
    s.line([(0.5 - b.shoulder + 0.07, b.top + 0.12), (0.5 - b.shoulder + 0.045, arm_y)], 0.005, 80)
    s.line([(0.5 + b.shoulder - 0.07, b.top + 0.12), (0.5 + b.shoulder - 0.045, arm_y)], 0.005, 80)
    if pointed or rng.random() < 0.5:  # waistcoat: buttons below the V
        s.line([(0.5, b.top + depth), (0.5, b.hem + (0.05 if pointed else 0.0))], 0.005, 100)
        _buttons(s, 0.515, b.top + depth + 0.02, b.hem - 0.02, 4)
    return s


def _sketch_generic(rng: np.random.Generator) -> _Sketch:
    s = _Sketch()
    b = _body(rng)
    _both_sleeves(s, _sleeve(b, rng.uniform(35, 45), rng.uniform(0.3, 0.36), rng.uniform(0.11, 0.13)))
    s.add(_torso(b))
    _round_neck(s, b, rng.uniform(0.05, 0.07))
    return s


_SKETCHERS: dict[str, Callable[[np.random.Generator], _Sketch]] = {
    "blouse": _sketch_blouse,
    "hoodie": _sketch_hoodie,
    "pullover": _sketch_pullover,
    "sweater": _sketch_sweater,
    "shirt": _sketch_shirt,
    "t-shirt": _sketch_tshirt,
    "vest": _sketch_vest,
}


# --------------------------------------------------------------------------------------------
# placement and rasterisation


@dataclass(frozen=True)
class _Placement:
    """Maps the unit frame to pixels: p = centre + scale * R(angle) (u - 0.5)."""

    cx: float
    cy: float
    scale: float
    angle: float  # radians

    def to_px(self, pts: Sequence[Point], factor: float = 1.0) -> list[Point]:
        c, s = math.cos(self.angle), math.sin(self.angle)
        out = []
        for x, y in pts:
            dx, dy = (x - 0.5) * self.scale, (y - 0.5) * self.scale
            out.append(((self.cx + c * dx - s * dy) * factor, (self.cy + s * dx + c * dy) * factor))
        return out

    def unit_grid(self, x0: int, y0: int, width: int, height: int
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Unit-frame coordinates (u, v) of the pixel centres of a window, each H x W float32."""
        xs = (np.arange(x0, x0 + width, dtype=np.float32) + 0.5 - self.cx)[None, :]
        ys = (np.arange(y0, y0 + height, dtype=np.float32) + 0.5 - self.cy)[:, None]
        c, s = np.float32(math.cos(self.angle)), np.float32(math.sin(self.angle))
        inv = np.float32(1.0 / self.scale)
        u = (c * xs + s * ys) * inv + np.float32(0.5)
        v = (-s * xs + c * ys) * inv + np.float32(0.5)
        return u, v


def _rasterise(sketch: _Sketch, place: _Placement, width: int, height: int
               ) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """The anti-aliased mask of a placed sketch (an "L" image), the same as H x W float32 in
    [0, 1], and the detail darkness (H x W float32 in [0, 1])."""
    f = _SUPERSAMPLE
    size = (width * f, height * f)
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    for poly, adds in sketch.shapes:
        draw.polygon(place.to_px(poly, f), fill=255 if adds else 0)
    detail = Image.new("L", size, 0)
    ddraw = ImageDraw.Draw(detail)
    for poly, darkness in sketch.shades:
        ddraw.polygon(place.to_px(poly, f), fill=darkness)
    for stroke in sketch.strokes:
        pts = place.to_px(stroke.points, f)
        if stroke.closed:
            pts = pts + pts[:1]
        w = max(1, round(stroke.width * place.scale * f))
        ddraw.line(pts, fill=stroke.darkness, width=w, joint="curve")
    mask = mask.reduce(f)
    alpha = np.asarray(mask, dtype=np.float32) * np.float32(1 / 255)
    dark = np.asarray(detail.reduce(f), dtype=np.float32) * np.float32(1 / 255)
    return mask, alpha, dark


def _lowfreq(rng: np.random.Generator, width: int, height: int, cells: int) -> np.ndarray:
    """Smooth noise in [-1, 1] (H x W float32): a small random grid upsampled bicubically."""
    small = rng.random((cells, cells), dtype=np.float32) * 2 - 1
    big = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(big, dtype=np.float32), -1.0, 1.0)


# --------------------------------------------------------------------------------------------
# colours and patterns


def _pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _jitter(rng: np.random.Generator, rgb: RGB, amount: int = 9) -> RGB:
    arr = np.clip(np.array(rgb) + rng.integers(-amount, amount + 1, 3), 0, 255)
    return (int(arr[0]), int(arr[1]), int(arr[2]))


def _distance(a: Colour, b: Colour) -> float:
    return float(math.sqrt(sum((float(x) - float(y)) ** 2 for x, y in zip(a, b, strict=True))))


def _contrasting(rng: np.random.Generator, base: RGB, exclude: Sequence[str] = (),
                 minimum: float = 120.0) -> str:
    names = [n for n in PALETTE if n not in exclude and _distance(PALETTE[n], base) >= minimum]
    if not names:
        names = sorted((n for n in PALETTE if n not in exclude),
                       key=lambda n: -_distance(PALETTE[n], base))[:3]
    return names[int(rng.integers(len(names)))]


class _Fabric:
    """Colour layers painted over a ground colour, kept as scalar coverage maps.

    Painting colour c with coverage a scales the weight of every earlier layer by (1 - a); the
    RGB image is formed once, as ground + weights @ (colours - ground), which is much cheaper
    than blending three channels per layer.
    """

    def __init__(self, shape: tuple[int, ...], ground: Sequence[float]) -> None:
        self.shape = shape
        self.ground = np.asarray(ground, dtype=np.float32)
        self.weights: list[np.ndarray] = []
        self.colours: list[Sequence[float]] = []

    def paint(self, colour: Sequence[float], alpha: np.ndarray) -> None:
        keep = 1 - alpha
        for w in self.weights:
            w *= keep
        self.weights.append(np.array(alpha, dtype=np.float32))
        self.colours.append(colour)

    def rgb(self) -> np.ndarray:
        if not self.weights:
            out = np.empty(self.shape + (3,), dtype=np.float32)
            out[...] = self.ground
            return out
        weights = np.stack(self.weights, axis=-1).reshape(-1, len(self.weights))
        deltas = np.asarray(self.colours, dtype=np.float32) - self.ground
        out = weights @ deltas
        out += self.ground
        return out.reshape(self.shape + (3,))


def _stripes(u: np.ndarray, v: np.ndarray, rng: np.random.Generator, px: float,
             base: RGB, accent: RGB, third: RGB | None) -> _Fabric:
    if rng.random() < 0.6:
        angle = float(rng.choice([0.0, 90.0, 45.0, -45.0])) + rng.uniform(-4, 4)
    else:
        angle = rng.uniform(0.0, 180.0)
    a = math.radians(angle)
    period = rng.uniform(0.035, 0.14)
    duty = rng.uniform(0.2, 0.42)
    t = (u * np.float32(math.sin(a)) + v * np.float32(math.cos(a))) / np.float32(period)
    t = t + np.float32(rng.uniform(0, 1))
    d = (t - np.floor(t)) * np.float32(period)  # position inside the period, unit lengths
    w = np.float32(duty * period)
    inside = np.minimum(d, w - d)
    outside = -np.minimum(d - w, np.float32(period) - d)
    signed = np.where(d < w, inside, outside)
    fabric = _Fabric(u.shape, base)
    fabric.paint(accent, np.clip(signed / np.float32(px) + 0.5, 0.0, 1.0))
    if third is not None:  # a thin stripe in the middle of the ground
        centre = w + (np.float32(period) - w) / 2
        half = np.float32(period * 0.06)
        thin = half - np.abs(d - centre)
        fabric.paint(third, np.clip(thin / np.float32(px) + 0.5, 0.0, 1.0))
    return fabric


def _dots(u: np.ndarray, v: np.ndarray, rng: np.random.Generator, px: float,
          base: RGB, accent: RGB) -> _Fabric:
    spacing = rng.uniform(0.05, 0.13)
    radius = spacing * rng.uniform(0.16, 0.32)
    a = math.radians(45.0 if rng.random() < 0.2 else rng.uniform(-20, 20))
    ca, sa = np.float32(math.cos(a)), np.float32(math.sin(a))
    p = u * ca + v * sa + np.float32(rng.uniform(0, spacing))
    q = -u * sa + v * ca + np.float32(rng.uniform(0, spacing))
    d = np.float32(spacing)

    def lattice(x: np.ndarray, y: np.ndarray, dy: np.float32) -> np.ndarray:
        fx = x - d * np.round(x / d)
        fy = y - dy * np.round(y / dy)
        return np.sqrt(fx * fx + fy * fy)

    if rng.random() < 0.5:
        dist = lattice(p, q, d)
    else:  # hexagonal packing: two offset rectangular lattices
        h = np.float32(spacing * math.sqrt(3) / 2)
        dist = np.minimum(lattice(p, q, 2 * h), lattice(p - d / 2, q - h, 2 * h))
    fabric = _Fabric(u.shape, base)
    fabric.paint(accent, np.clip((np.float32(radius) - dist) / np.float32(px) + 0.5, 0, 1))
    return fabric


def _leopard_layer(fabric: _Fabric, p: np.ndarray, q: np.ndarray, rng: np.random.Generator,
                   cell_px: float, base: RGB, ring: RGB) -> None:
    """Paint one lattice of rosettes and spots; `p`, `q` are pixel positions in cell units."""
    i = np.floor(p)
    j = np.floor(q)
    i0, j0 = int(i.min()), int(j.min())
    ni, nj = int(i.max()) - i0 + 1, int(j.max()) - j0 + 1
    # one jittered blob per cell; a blob never leaves its cell, so each pixel only needs the
    # parameters of its own cell (one gather instead of a search over neighbours)
    lo = np.array([-0.07, -0.07, 0.28, 0.75, 0, 0, 0, 0, 0], dtype=np.float32)[:, None]
    hi = np.array([0.07, 0.07, 0.36, 1.0, 6.3, 6.3, 6.3, 1, 1], dtype=np.float32)[:, None]
    table = lo + (hi - lo) * rng.random((9, ni * nj), dtype=np.float32)
    flat = ((i - i0) * nj + (j - j0)).astype(np.intp)
    jx, jy, radius, stretch, ph1, ph2, ph3, kind, gap = np.take(table, flat, axis=1)
    spot = kind < 0.25  # solid spots instead of rosettes
    dx = (p - i - 0.5 - jx) / stretch
    dy = q - j - 0.5 - jy
    phi = np.arctan2(dy, dx)
    r_phi = radius * np.where(spot, np.float32(0.55), np.float32(1.0))
    r_phi *= 1 + 0.12 * np.sin(3 * phi + ph1) + 0.06 * np.sin(5 * phi + ph2)
    rho = np.sqrt(dx * dx + dy * dy) / r_phi
    r_px = r_phi * np.float32(cell_px)
    outer = np.clip((1 - rho) * r_px + 0.5, 0, 1)
    inner_edge = np.clip((rho - np.where(spot, np.float32(0.0), np.float32(0.6))) * r_px + 0.5,
                         0, 1)
    # rosette rings are broken into arcs; about a third stay closed
    gaps = np.where(spot | (gap < 0.3), np.float32(1.0),
                    np.clip((np.sin(2 * phi + ph3) + 0.5) * 4, 0, 1))
    centre_col = tuple(0.7 * c + 0.3 * r for c, r in zip(base, (150, 80, 30), strict=True))
    fabric.paint(centre_col, outer * (1 - inner_edge))
    fabric.paint(ring, outer * inner_edge * gaps)


def _leopard(u: np.ndarray, v: np.ndarray, rng: np.random.Generator, px: float,
             base: RGB, ring: RGB) -> _Fabric:
    cell = rng.uniform(0.08, 0.14)
    a = rng.uniform(0, math.pi)
    ca, sa = np.float32(math.cos(a)), np.float32(math.sin(a))
    p = (u * ca + v * sa) / np.float32(cell)
    q = (-u * sa + v * ca) / np.float32(cell)
    fabric = _Fabric(u.shape, base)
    # two lattices offset by half a cell fill the gaps of each other
    _leopard_layer(fabric, p, q, rng, cell / px, base, ring)
    _leopard_layer(fabric, p + np.float32(0.5), q + np.float32(0.5), rng, cell / px, base, ring)
    return fabric


# --------------------------------------------------------------------------------------------
# background


def _ramp(t: Image.Image, c1: Colour, c2: Colour) -> Image.Image:
    """RGB image c1 + (c2 - c1) * t / 255 from an "L" image t, via per-band lookup tables."""
    steps = np.arange(256, dtype=np.float32) / 255
    bands = []
    for k in range(3):
        lut = np.clip(c1[k] + (c2[k] - c1[k]) * steps + 0.5, 0, 255).astype(np.uint8)
        bands.append(t.point(lut.tolist()))
    return Image.merge("RGB", bands)


_GAUSS = [NormalDist().inv_cdf((k + 0.5) / 256) for k in range(256)]  # uniform byte -> N(0, 1)


def _add_grain(image: Image.Image, rng: np.random.Generator, sigma: float) -> Image.Image:
    """Add grey Gaussian noise of standard deviation `sigma` (in 0..255 units).

    Uniform random bytes are mapped through the inverse normal CDF by a lookup table, which is
    several times cheaper than drawing normal floats.
    """
    w, h = image.size
    uniform = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8))
    grain = uniform.point([max(0, min(255, int(128.5 + sigma * g))) for g in _GAUSS])
    return ImageChops.add(image, Image.merge("RGB", (grain, grain, grain)), 1.0, -128)


def _background(rng: np.random.Generator, width: int, height: int, avoid: RGB
                ) -> tuple[Image.Image, str]:
    def colour(light: bool) -> np.ndarray:
        best, best_d = None, -1.0
        for _ in range(12):
            if light:
                c = rng.uniform(170, 250) + rng.uniform(-18, 18, 3)
            else:
                c = rng.uniform(20, 235, 3)
            d = _distance(c, avoid)
            if d > best_d:
                best, best_d = c, d
            if d >= 110:
                break
        assert best is not None
        return np.clip(best, 0, 255)

    kind = _pick(rng, {"plain": 0.4, "gradient": 0.35, "noise": 0.25})
    light = rng.random() < 0.6
    c1 = colour(light)
    if kind == "plain":
        rgb = tuple(int(round(c)) for c in c1)
        return Image.new("RGB", (width, height), rgb), kind  # type: ignore[arg-type]
    c2 = np.clip(c1 + rng.uniform(-70, 70, 3), 0, 255)
    if kind == "gradient":
        a = rng.uniform(0, 2 * math.pi)
        xs = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :]
        ys = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None]
        t = xs * np.float32(math.cos(a) * 255) + ys * np.float32(math.sin(a) * 255) + 128
        return _ramp(Image.fromarray(np.clip(t, 0, 255).astype(np.uint8)), c1, c2), kind
    cells = int(rng.integers(4, 12))
    small = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    field_ = small.resize((width, height), Image.Resampling.BICUBIC)
    return _add_grain(_ramp(field_, c1, c2), rng, rng.uniform(3, 9)), kind


# --------------------------------------------------------------------------------------------
# public entry points


def sketch_items() -> tuple[str, ...]:
    """Item names with a dedicated silhouette.

    Returns:
        The same names as `ITEMS`.
    """
    return tuple(_SKETCHERS)


def silhouette(item: str, seed: int, size: int = 128) -> np.ndarray:
    """The item's silhouette, upright and centred, as a size x size float32 alpha mask.

    Uses the same sketch as `render` for this seed but no placement jitter, so masks of
    different items can be compared directly.

    Args:
        item: garment item; unknown names give the generic top.
        seed: integer seed of the picture.
        size: side of the square mask in pixels.

    Returns:
        H x W float32 array in [0, 1].
    """
    rng = np.random.default_rng(derive_seed("garment", seed))
    sketch = _SKETCHERS.get(item, _sketch_generic)(rng)
    place = _Placement(size / 2, size / 2, float(size), 0.0)
    return _rasterise(sketch, place, size, size)[1]


def render(item: str | None, attribute: str | None, seed: int, size: int = 320) -> Rendering:
    """Render one garment picture with its ground truth.

    Args:
        item: garment item (see `ITEMS`); None or unknown names give a generic top.
        attribute: pattern (see `ATTRIBUTES`); None or unknown names give a plain fill.
        seed: integer seed; the picture depends only on (item, attribute, seed, size).
        size: the longest possible side; each side is drawn from [size / 2, size].

    Returns:
        The RGB picture, the garment's alpha mask and a `GarmentTruth`.
    """
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    item_name = item if item in _SKETCHERS else "generic"
    pattern = attribute if attribute in ATTRIBUTES else "plain"
    rng = np.random.default_rng(derive_seed("garment", seed))
    sketch = _SKETCHERS.get(item_name, _sketch_generic)(rng)
    # the layout, colour and pattern streams are separate from the sketch's, so the sketch
    # (and `silhouette`) stays the same whatever the pattern draws
    rng = np.random.default_rng(derive_seed("scene", seed, item_name, pattern, size))
    width = max(16, int(round(size * rng.uniform(0.5, 1.0))))
    height = max(16, int(round(size * rng.uniform(0.5, 1.0))))
    side = min(width, height)
    scale = side * rng.uniform(0.68, 0.95)
    slack_x, slack_y = max(0.0, width - scale) / 2, max(0.0, height - scale) / 2
    place = _Placement(
        cx=width / 2 + rng.uniform(-0.8, 0.8) * slack_x + rng.uniform(-0.04, 0.04) * scale,
        cy=height / 2 + rng.uniform(-0.8, 0.8) * slack_y + rng.uniform(-0.04, 0.04) * scale,
        scale=scale,
        angle=math.radians(rng.uniform(-10.0, 10.0)),
    )
    mask, alpha, detail = _rasterise(sketch, place, width, height)

    # colours
    if pattern == "leopard":
        base_name = _pick(rng, _LEOPARD_GROUNDS)
        accent_name: str | None = _pick(rng, {k: w for k, w in _LEOPARD_RINGS.items()
                                              if _distance(PALETTE[k], PALETTE[base_name]) > 120}
                                        or {"black": 1.0})
    else:
        base_name = list(PALETTE)[int(rng.integers(len(PALETTE)))]
        accent_name = _contrasting(rng, PALETTE[base_name]) if pattern != "plain" else None
    base = _jitter(rng, PALETTE[base_name])
    accent = _jitter(rng, PALETTE[accent_name]) if accent_name else None

    # the fabric is only computed inside the garment's bounding box
    cols = np.flatnonzero(alpha.max(axis=0) > 0)
    rows = np.flatnonzero(alpha.max(axis=1) > 0)
    if cols.size == 0:  # cannot happen with the placement above, but stay total
        cols = rows = np.array([0])
    x0, x1, y0, y1 = int(cols[0]), int(cols[-1]) + 1, int(rows[0]), int(rows[-1]) + 1
    u, v = place.unit_grid(x0, y0, x1 - x0, y1 - y0)
    px = 1.0 / scale
    if pattern == "striped" and accent is not None:
        third = None
        if rng.random() < 0.3:
            third = PALETTE[_contrasting(rng, base, exclude=(str(accent_name),), minimum=90)]
        layers = _stripes(u, v, rng, px, base, accent, third)
    elif pattern == "dotted" and accent is not None:
        layers = _dots(u, v, rng, px, base, accent)
    elif pattern == "leopard" and accent is not None:
        layers = _leopard(u, v, rng, px, base, accent)
    else:
        layers = _Fabric(u.shape, base)
    fabric = layers.rgb()

    # soft folds and light from above; seams and ribbing darkened
    light = (1 + 0.07 * _lowfreq(rng, x1 - x0, y1 - y0, 5)) * (1.04 - 0.08 * np.clip(v, 0, 1))
    fabric *= (light * (1 - 0.6 * detail[y0:y1, x0:x1]))[..., None]

    picture, bg_kind = _background(rng, width, height, base)
    if rng.random() < 0.6:  # drop shadow
        off = (int(round(scale * rng.uniform(0.01, 0.04))),
               int(round(scale * rng.uniform(0.01, 0.04))))
        moved = Image.new("L", mask.size, 0)
        moved.paste(mask, off)
        strength = rng.uniform(0.2, 0.4)
        shadow = moved.filter(ImageFilter.BoxBlur(max(1.0, scale * 0.02)))
        shadow = shadow.point([int(k * strength + 0.5) for k in range(256)])
        picture = Image.composite(Image.new("RGB", mask.size, (0, 0, 0)), picture, shadow)

    cloth = Image.fromarray(np.clip(fabric + 0.5, 0, 255).astype(np.uint8), "RGB")
    picture.paste(cloth, (x0, y0), mask.crop((x0, y0, x1, y1)))  # fabric over background
    sigma = rng.uniform(0.0, 3.0)
    if sigma > 0.5:  # sensor noise
        picture = _add_grain(picture, rng, sigma)

    cols = np.flatnonzero(alpha.max(axis=0) > 0.5)
    rows = np.flatnonzero(alpha.max(axis=1) > 0.5)
    bbox = ((int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
            if cols.size and rows.size else (0, 0, 0, 0))
    truth = GarmentTruth(
        item=item_name,
        pattern=pattern,
        colour_name=base_name,
        colour_rgb=base,
        accent_name=accent_name,
        accent_rgb=accent,
        background=bg_kind,
        width=width,
        height=height,
        coverage=float(alpha.mean()),
        bbox=bbox,
        rotation=math.degrees(place.angle),
    )
    return Rendering(picture, alpha, truth)


def render_garment(item: str | None, attribute: str | None, seed: int,
                   size: int = 320) -> Image.Image:
    """Render one garment picture (see `render` for the picture with its ground truth).

    Args:
        item: garment item (see `ITEMS`); None or unknown names give a generic top.
        attribute: pattern (see `ATTRIBUTES`); None or unknown names give a plain fill.
        seed: integer seed.
        size: the longest possible side in pixels.

    Returns:
        An RGB `PIL.Image.Image`.
    """
    return render(item, attribute, seed, size).image
