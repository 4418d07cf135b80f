"""A static HTML page a person can scan: every label-conflict group and the largest groups,
thumbnails side by side with labels, distance to the kept image and the decision, and under
each group every link that joined it: which signal nominated the pair (full or crop dhash,
embedding), its dhash distance, cosine similarity and overlay score."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from datakit.images import thumbnail_uri
from datakit.manifest import resolve

_CSS = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px} h2{font-size:16px;margin-top:28px}
.group{border:1px solid #ddd;border-radius:6px;padding:8px;margin:10px 0}
.group.conflict{border-color:#d33}
.row{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;width:132px;font-size:11px;text-align:center}
figure img{width:128px;height:128px;object-fit:contain;background:#f4f4f4;border:2px solid #ccc}
figure.kept img{border-color:#2a2}
figure.dropped img{opacity:.75}
.meta{color:#666;font-size:12px}
.links{color:#444;font:11px ui-monospace,monospace;margin-top:4px}
table{border-collapse:collapse} td,th{padding:2px 10px;text-align:right;border-bottom:1px solid #eee}
"""


_thumb = thumbnail_uri


def _num(x: object, fmt: str) -> str:
    return "–" if x is None or pd.isna(x) else format(x, fmt)


def _links_html(links: pd.DataFrame | None) -> str:
    if links is None or not len(links):
        return ""
    items = [
        f"{html.escape(str(r.a)[:8])} ↔ {html.escape(str(r.b)[:8])}: {html.escape(str(r.via))} · "
        f"dhash {_num(r.distance if r.distance >= 0 else None, 'd')} · cos {_num(r.similarity, '.3f')} · overlay {_num(r.match, '.3f')}"
        for r in links.itertuples()
    ]
    return f'<div class="links">{"<br>".join(items)}</div>'


def _group_html(root: Path, rows: pd.DataFrame, conflict: bool, links: pd.DataFrame | None = None) -> str:
    figs = []
    for r in rows.sort_values(["keep", "image_id"], ascending=[False, True]).itertuples():
        cls = "kept" if r.keep else "dropped"
        dist = "" if pd.isna(r.dup_distance) else f" · d={int(r.dup_distance)}"
        figs.append(
            f'<figure class="{cls}"><img src="{_thumb(root, r.path)}" alt="">'
            f"<figcaption><b>{html.escape(str(r.label))}</b>{dist} · {html.escape(str(r.image_id)[:8])}<br>"
            f"{html.escape(str(r.dedup_reason))}<br>{r.width}×{r.height}</figcaption></figure>"
        )
    title = f"group {html.escape(str(rows['dup_group'].iat[0])[:12])} · {len(rows)} images"
    if conflict:
        title += f" · labels {html.escape(str(rows['conflict_labels'].iat[0]))}"
    return (f'<div class="group{" conflict" if conflict else ""}"><div class="meta">{title}</div>'
            f'<div class="row">{"".join(figs)}</div>{_links_html(links)}</div>')


def write_gallery(df: pd.DataFrame, root: Path, report: dict, path: Path, *, largest: int = 40, max_conflicts: int = 300,
                  pairs: pd.DataFrame | None = None) -> None:
    """Write the gallery page (self-contained: thumbnails are embedded); `pairs` (a, b,
    distance, via, similarity, match) are the accepted links, listed under their group."""
    from datakit.fsutil import atomic_write_text

    sizes = df.groupby("dup_group").size().sort_values(ascending=False)
    conflict_groups = sorted(set(df.loc[df["label_conflict"], "dup_group"]))[:max_conflicts]
    multi = [g for g in sizes.index if sizes[g] > 1 and g not in set(conflict_groups)][:largest]
    parts = [f"<!doctype html><meta charset='utf-8'><title>datakit dedup</title><style>{_CSS}</style>",
             "<h1>datakit dedup</h1>"]
    summary = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(report[k]))}</td></tr>"
        for k in ("images", "kept", "removed", "groups", "exact_groups", "near_groups", "conflict_groups",
                  "low_information", "signals", "threshold", "crop_threshold", "embedding_similarity", "match_threshold",
                  "candidates", "rejected_by_verify", "keep_policy", "conflict_policy")
        if k in report
    )
    parts.append(f"<table>{summary}</table>")
    parts.append(f"<h2>Label conflicts ({len(conflict_groups)} groups)</h2>")
    by_group = dict(iter(df[df["dup_group"].isin(set(conflict_groups) | set(multi))].groupby("dup_group")))
    links: dict[str, pd.DataFrame] = {}
    if pairs is not None and len(pairs):
        group_of = dict(zip(df["image_id"], df["dup_group"], strict=True))
        links = dict(iter(pairs.assign(_g=pairs["a"].map(group_of)).groupby("_g")))
    parts.extend(_group_html(root, by_group[g], True, links.get(g)) for g in conflict_groups)
    parts.append(f"<h2>Largest groups (top {len(multi)})</h2>")
    parts.extend(_group_html(root, by_group[g], False, links.get(g)) for g in multi)
    atomic_write_text(path, "\n".join(parts) + "\n")


__all__ = ["write_gallery", "resolve"]
