"""SVG charts drawn here (no plotting library, no script): the page stays one offline file."""

from __future__ import annotations

import math
from collections.abc import Sequence

from datakit.report.parts import esc

SERIES_COLORS = ("#1a5fb4", "#e66100", "#2ec27e", "#c01c28", "#813d9c", "#986a44")


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo
    raw = span / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    out = []
    v = first
    while v <= hi + step * 1e-6:
        out.append(round(v, 10))
        v += step
    return out


def _fmt_tick(v: float) -> str:
    return f"{v:g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks on a log10 axis (`lo`, `hi` are log10 values): whole decades, every k-th one so at
    most 8 show; a range under two decades gets the linear ticks of its exponents."""
    first, last = math.ceil(lo - 1e-9), math.floor(hi + 1e-9)
    if last - first < 2:
        return _ticks(lo, hi, 4)
    step = max(1, math.ceil((last - first + 1) / 8))
    return [float(k) for k in range(first, last + 1, step)]


def svg_line_chart(title: str, series: Sequence[tuple[str, Sequence[float], Sequence[float]]], *, x_label: str,
                   y_label: str, y_range: tuple[float, float] | None = None, width: int = 540, height: int = 290,
                   log_x: bool = False, marks: Sequence[tuple[str, float]] = ()) -> str:
    """An inline SVG line chart: `series` is (name, xs, ys) per line; NaNs are skipped. `log_x`:
    a log10 x axis (points with x <= 0 are skipped), tick labels in the data's units. `marks`:
    (label, x) vertical lines (a suggested value, a threshold). With `y_range`, points outside it
    are drawn on its edge."""
    def keep(x: float, y: float) -> bool:
        return math.isfinite(x) and math.isfinite(y) and not (log_x and x <= 0)

    def tx(x: float) -> float:
        return math.log10(x) if log_x else x

    pts = [(n, [(tx(float(x)), float(y)) for x, y in zip(xs, ys, strict=True) if keep(float(x), float(y))])
           for n, xs, ys in series]
    pts = [(n, p) for n, p in pts if p]
    if not pts:
        return ""
    xs_all = [x for _, p in pts for x, _ in p]
    ys_all = [y for _, p in pts for _, y in p]
    x0, x1 = min(xs_all), max(xs_all)
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    if y_range is not None:
        y0, y1 = y_range
        pts = [(n, [(x, min(max(y, y0), y1)) for x, y in p]) for n, p in pts]
    else:
        y0, y1 = min(ys_all), max(ys_all)
        pad = (y1 - y0) * 0.08 or max(abs(y1) * 0.1, 0.1)
        y0, y1 = (0.0 if y0 >= 0 and y0 - pad < 0 else y0 - pad), y1 + pad
    left, right, top, bottom = 56, 16, 30, 44
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label="{esc(title)}" font-family="system-ui,sans-serif" font-size="11">',
             f'<text x="{left}" y="18" font-size="13" font-weight="bold">{esc(title)}</text>']
    for t in _ticks(y0, y1):
        y = sy(t)
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{_fmt_tick(t)}</text>')
    for t in (_log_ticks(x0, x1) if log_x else _ticks(x0, x1, 6)):
        x = sx(t)
        shown = _fmt_tick(10**t if log_x else t)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + ph}" y2="{top + ph + 4}" stroke="#888"/>'
                     f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle" fill="#555">{shown}</text>')
    for label, value in marks:
        if (log_x and value <= 0) or not math.isfinite(value) or not x0 <= tx(value) <= x1:
            continue
        x = sx(tx(value))
        parts.append(f'<line class="mark" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph}" stroke="#555" '
                     f'stroke-dasharray="4 3"><title>{esc(label)}</title></line>'
                     f'<text x="{x + 4:.1f}" y="{top + ph - 6}" fill="#333">{esc(label)}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#bbb"/>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 6}" text-anchor="middle" fill="#333">{esc(x_label)}</text>'
                 f'<text transform="translate(14,{top + ph / 2:.1f}) rotate(-90)" text-anchor="middle" fill="#333">{esc(y_label)}</text>')
    for i, (name, p) in enumerate(pts):
        color = SERIES_COLORS[i % len(SERIES_COLORS)]
        line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in p)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2"/>')
        parts.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="{2 if len(p) > 60 else 3}" fill="{color}"><title>'
                     f'{esc(name)}: {_fmt_tick(10**x if log_x else x)}, {y:.4g}</title></circle>' for x, y in p)
        lx, ly = left + pw - 150, top + 14 + 15 * i
        if i == 0:
            parts.append(f'<rect x="{lx - 6}" y="{top + 3}" width="150" height="{15 * len(pts) + 4}" fill="#fff" fill-opacity=".85"/>')
        parts.append(f'<line x1="{lx}" x2="{lx + 18}" y1="{ly - 4}" y2="{ly - 4}" stroke="{color}" stroke-width="2"/>'
                     f'<text x="{lx + 24}" y="{ly}" fill="#333">{esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
