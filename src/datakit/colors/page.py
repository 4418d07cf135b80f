"""OUT/colors.html: the figures and each image's thumbnail next to swatches of its colours."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pandas as pd

from datakit.colors.palette import Palette
from datakit.colors.science import to_hex
from datakit.images import thumbnail_uri as _thumb

_CSS = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px} h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse} td,th{padding:2px 10px;text-align:left;border-bottom:1px solid #eee}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:264px;font-size:11px;border:1px solid #ddd;border-radius:6px;padding:6px}
figure img{width:128px;height:128px;object-fit:contain;background:#f4f4f4}
.sw{display:inline-block;width:14px;height:14px;border:1px solid #999;vertical-align:middle;margin-right:4px}
.bar{display:flex;height:14px;margin:4px 0;border:1px solid #ccc}
.err{color:#b00}
"""


def _swatch(hex_: str, title: str) -> str:
    return f'<span class="sw" style="background:{html.escape(hex_)}" title="{html.escape(title)}"></span>'


def write_page(df: pd.DataFrame, root: Path, report: dict[str, Any], path: Path, *, images: int = 120,
               palette: Palette | None = None) -> None:
    """Write OUT/colors.html: figures, the dominant colours' counts and, for up to `images`
    images, the thumbnail (and mask) next to swatches of its colours (self-contained page)."""
    from datakit.fsutil import atomic_write_text

    esc = html.escape
    parts = [f"<!doctype html><meta charset='utf-8'><title>datakit colors</title><style>{_CSS}</style>",
             "<h1>datakit colors</h1>"]
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(report[k]))}</td></tr>"
                   for k in ("images", "analysed", "failed", "methods", "palette", "mean_colors_per_image",
                             "mean_foreground", "seconds", "images_per_s") if k in report)
    parts.append(f"<table>{rows}</table>")
    ok = df[df["color_error"].isna()]
    parts.append("<h2>Dominant colour per image</h2><table><tr><th>colour</th><th>images</th></tr>")
    ref_hex = {n: to_hex(c) for n, c in zip(palette.names, palette.rgb, strict=True)} if palette else {}
    for name, count in ok["color_1"].value_counts().items():
        sw = _swatch(ref_hex[name], f"palette {name}") if name in ref_hex else ""
        parts.append(f"<tr><td>{sw}{esc(str(name))}</td><td>{count}</td></tr>")
    parts.append("</table>")
    shown = ok.sort_values(["color_1", "image_id"]).head(images)
    parts.append(f"<h2>Images ({len(shown)} of {len(ok)}, by dominant colour)</h2><div class='grid'>")
    for r in shown.itertuples(index=False):
        cols = list(r.colors) if r.colors is not None else []
        bar = "".join(f'<div style="background:{esc(c["hex"])};width:{100 * c["weight"] / max(1e-9, sum(x["weight"] for x in cols)):.1f}%"'
                      f' title="{esc(c["name"])} {c["weight"]:.0%}"></div>' for c in cols)
        legend = "<br>".join(f'{_swatch(c["hex"], c["hex"])}<b>{esc(c["name"])}</b> {c["weight"]:.0%}'
                             f' <span title="CIEDE2000 to the palette colour">ΔE {c["delta_e"]:.1f}</span>' for c in cols)
        mask = ""
        if isinstance(getattr(r, "color_mask", None), str):
            mask = f'<img src="{_thumb(root, r.color_mask)}" alt="mask">'
        label = esc(str(getattr(r, "label", "") or ""))
        parts.append(f'<figure><img src="{_thumb(root, r.path)}" alt="">{mask}<div class="bar">{bar}</div>'
                     f"<figcaption>{legend}<br>{label} · {esc(str(r.color_method))} · "
                     f"fg {r.color_foreground:.0%}</figcaption></figure>")
    parts.append("</div>")
    bad = df[df["color_error"].notna()].head(100)
    if len(bad):
        parts.append(f"<h2>Not analysed ({int(df['color_error'].notna().sum())})</h2><table>")
        parts.extend(f"<tr><td>{esc(str(r.image_id)[:12])}</td><td>{esc(str(r.path))}</td><td class='err'>{esc(str(r.color_error))}</td></tr>"
                     for r in bad.itertuples(index=False))
        parts.append("</table>")
    atomic_write_text(path, "\n".join(parts) + "\n")
