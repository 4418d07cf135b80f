"""`OUT/report.html` of `datakit balance`: what balancing did, for a person to check.

The rows training uses per class (kept train rows of every origin) before and after, the imbalance ratio, and for each origin that added
rows (augmented, oversampled, smote_pixels, smote) a few examples next to their parents, so a
blended smote_pixels ghost or an over-strong augmentation is seen before it is trained on.
Thumbnails are embedded (data URIs): the page is one self-contained file.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

from datakit.balance.stage import SMOTE_PIXELS
from datakit.fsutil import atomic_write_text
from datakit.images import thumbnail_uri
from datakit.stage import AUGMENTED, OVERSAMPLED, SMOTE, origins

_CSS = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:20px} h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse} td,th{padding:2px 10px;text-align:right;border-bottom:1px solid #eee}
th:first-child,td:first-child{text-align:left}
.ex{display:flex;align-items:center;gap:6px;border:1px solid #ddd;border-radius:6px;padding:6px;margin:6px 0}
figure{margin:0;width:100px;font-size:11px;text-align:center}
figure img{width:96px;height:96px;object-fit:contain;background:#f4f4f4;border:2px solid #ccc}
figure.child img{border-color:#36c}
.vec{width:96px;height:96px;display:flex;align-items:center;justify-content:center;background:#eef;border:2px dashed #36c;font-size:11px}
.note{color:#a60}
.arrow{font-size:20px;color:#888}
"""

ORIGINS = (AUGMENTED, OVERSAMPLED, SMOTE_PIXELS, SMOTE)
_WHAT = {
    AUGMENTED: "augmented variants (datakit augment): one parent, sampled transforms",
    OVERSAMPLED: "oversampled copies: a minority image repeated through the augment pipeline",
    SMOTE_PIXELS: "smote_pixels: pixel blends of two same-class parents (ghost images: the weaker option)",
    SMOTE: "smote: synthetic embedding vectors between two same-class parents (no image; linear probe only)",
}


def _figure(root: Path, row: Any, cls: str = "") -> str:
    src = thumbnail_uri(root, row.path, 96) if isinstance(row.path, str) else ""
    return (f'<figure class="{cls}"><img src="{src}" alt="{html.escape(str(row.image_id)[:12])}">'
            f"<figcaption>{html.escape(str(row.label))}<br>{html.escape(str(row.image_id)[:10])}</figcaption></figure>")


def _example(root: Path, child: Any, by_id: dict[str, Any]) -> str:
    parents = [by_id[p] for p in (child.parent_ids if child.parent_ids is not None else []) if p in by_id]
    made = {}
    if isinstance(child.augment_params, str):
        try:
            made = json.loads(child.augment_params)
        except ValueError:
            made = {}
    detail = ", ".join(a.get("name", "?") if isinstance(a, dict) else str(a) for a in made.get("applied", [])) if made.get("applied") else ""
    if "gap" in made:
        detail = f"gap {made['gap']:.2f}"
    left = "".join(_figure(root, p) for p in parents) or "<span>(parent not in manifest)</span>"
    if child.origin == SMOTE:
        right = f'<figure class="child"><div class="vec">vector<br>{html.escape(str(child.image_id)[:10])}</div><figcaption>{html.escape(str(child.label))}</figcaption></figure>'
    else:
        right = _figure(root, child, "child")
    return f'<div class="ex">{left}<span class="arrow">→</span>{right}<span class="meta">{html.escape(detail)}</span></div>'


def write_balance_page(df: pd.DataFrame, root: Path, report: dict[str, Any], path: Path, *, per_origin: int = 6) -> None:
    """Write the page; `df` is balance's output manifest, `report` its report dict."""
    by_id = {str(r.image_id): r for r in df.itertuples()}
    before, after = report.get("counts_before", {}), report.get("counts_after", {})
    weights = report.get("class_weights", {})
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{before.get(k, 0)}</td><td>{after.get(k, 0)}</td><td>{weights.get(k, 0):.3f}</td></tr>"
        for k in sorted(set(before) | set(after))
    )
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>datakit balance</title><style>{_CSS}</style>",
        f"<h1>datakit balance: {html.escape(str(report.get('strategy')))}</h1>",
        f"<p>Counted: {html.escape(str(report.get('counts', 'rows training uses')))}; new rows are made from "
        "the kept train originals; val and test are untouched.</p>",
        f"<table><tr><th>label</th><th>before</th><th>after</th><th>weight</th></tr>{rows}</table>",
        f"<p>imbalance (largest / smallest class): {report.get('imbalance_before')} → {report.get('imbalance_after')}; "
        f"rows added: {html.escape(str(report.get('rows_added') or 'none'))}; undersampled: {report.get('rows_undersampled', 0)}</p>",
    ]
    if report.get("note"):
        parts.append(f'<p class="note">{html.escape(report["note"])}</p>')
    origin = origins(df)
    for o in ORIGINS:
        sub = df[origin.eq(o)]
        if not len(sub):
            continue
        # A few per class, so every label's additions are seen.
        picks = sub.groupby("label", group_keys=False).head(max(1, per_origin // max(1, sub["label"].nunique())))
        picks = picks.head(per_origin)
        parts.append(f"<h2>{html.escape(o)} ({len(sub)} rows)</h2><p>{html.escape(_WHAT[o])}</p>")
        parts.extend(_example(root, r, by_id) for r in picks.itertuples())
    atomic_write_text(Path(path), "\n".join(parts) + "\n")


__all__ = ["write_balance_page"]
