"""`datakit report`: one static HTML page for a whole pipeline run (issue 6).

The page reads whatever the run produced and says what it did not find, so a pipeline that
stopped at `split` still gets a page. Every part is optional:

| section | read from |
|---|---|
| header | params.yaml (when given), installed versions |
| funnel | `scrape/manifest.parquet` + `scrape/failures.parquet` (returned, stored), `dedup` (unique: `keep`), `split` (kept rows per split), `augment` (train with variants), `balance` (balanced train: the rows `counts_after` counts) |
| duplicates | `dedup/manifest.parquet` (every label-conflict group and the largest groups, capped), `reports/dedup.json` |
| audit | `reports/audit.json` (verdict, leaks against max_leaks, leak pairs as thumbnails) |
| balance | `reports/balance.json` (before / after / weight per class) |
| training | `train/history.csv` (loss and accuracy per epoch), `reports/train.json` |
| evaluation | `reports/evaluate.json`, `evaluate/per_class.csv`, `evaluate/predictions.csv` (confusion matrix), `evaluate/learning_curve.csv`, `evaluate/cv.csv`, `evaluate/mistakes.json` |

The file is self-contained: inline CSS, thumbnails as JPEG data URIs, charts as inline SVG, no
script and no external URL, so it renders offline and can be mailed or archived as one file.
Thumbnails share a byte budget (`max_thumb_bytes`) so the page stays a few megabytes whatever
the dataset size; a missing image is drawn as a grey box, never as a broken <img>.
"""

from __future__ import annotations

import html
import json
import math
import platform
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from datakit import __version__
from datakit.errors import DatakitError
from datakit.fsutil import atomic_write_text

STAGES = ("scrape", "dedup", "split", "audit", "augment", "embed", "balance", "train", "evaluate")
SPLITS = ("train", "val", "test")
AUGMENTED = "augmented"  # augment's variants: balance's counts_after leaves them out
VERSIONS = ("torch", "torchvision", "albumentations", "scikit-learn", "imbalanced-learn", "pandas", "pillow", "dvc")

_CSS = """
body{font:14px system-ui,sans-serif;margin:24px auto;color:#222;max-width:1160px;padding:0 16px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:34px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:14px;margin:18px 0 6px}
a{color:#1a5fb4}
nav a{margin-right:12px}
.meta,.sub{color:#666;font-size:12px}
.absent{background:#fff8e5;border:1px solid #e6c15c;border-radius:6px;padding:8px 12px;margin:12px 0}
.absent li{margin:2px 0}
table{border-collapse:collapse;margin:6px 0}
td,th{padding:3px 10px;text-align:right;border-bottom:1px solid #eee;font-variant-numeric:tabular-nums}
th:first-child,td:first-child{text-align:left}
thead th{border-bottom:2px solid #ccc;background:#fafafa}
tr.total td,tr.total th{font-weight:bold;border-top:2px solid #ccc}
pre{background:#f6f6f6;border:1px solid #e4e4e4;border-radius:6px;padding:8px;max-height:260px;overflow:auto;font-size:12px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:8px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:6px 12px;min-width:110px}
.card b{display:block;font-size:20px}
.card span{color:#666;font-size:12px}
.pass{color:#1b7f2a} .fail{color:#c01c28}
.group{display:inline-block;vertical-align:top;border:1px solid #ddd;border-radius:6px;padding:6px;margin:4px 6px 4px 0}
.group.conflict{border-color:#d33}
.row{display:flex;flex-wrap:wrap;gap:6px;align-items:flex-start}
figure{margin:0;width:92px;font-size:11px;text-align:center;overflow-wrap:anywhere}
figure img,figure .noimg{width:88px;height:88px;object-fit:contain;background:#f4f4f4;border:2px solid #ccc;display:block}
figure .noimg{display:flex;align-items:center;justify-content:center;color:#888;font-size:10px}
figure.kept img{border-color:#2a2}
figure.dropped img{opacity:.8}
figure.wrong img{border-color:#c01c28}
.pair{display:inline-flex;gap:4px;border:1px solid #ddd;border-radius:6px;padding:4px;margin:4px}
.charts{display:flex;flex-wrap:wrap;gap:16px}
svg{background:#fff;border:1px solid #e4e4e4;border-radius:6px}
#stages td,#stages th{text-align:left}
table.cm td{min-width:34px;text-align:center;border:1px solid #fff}
table.cm td.diag{outline:2px solid #333;outline-offset:-2px}
table.cm th.rot{writing-mode:vertical-rl;text-align:left;font-weight:normal;padding:6px 2px}
"""

_COLORS = ("#1a5fb4", "#e66100", "#2ec27e", "#c01c28", "#813d9c", "#986a44")


def stage_folders(data: Path, overrides: Mapping[str, Path] | None = None) -> dict[str, Path]:
    """`data/<stage>` for every stage name in STAGES, with `overrides` (name -> folder) replacing
    some; an unknown name is an error that lists the known ones."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(STAGES))
    if unknown:
        raise DatakitError(f"unknown stage name(s) {', '.join(unknown)}: use one of {', '.join(STAGES)}")
    return {name: Path(overrides.get(name, Path(data) / name)) for name in STAGES}


# ---------------------------------------------------------------------------------------------
# Reading the run


@dataclass
class _Run:
    stages: dict[str, Path]
    reports_dir: Path | None
    root: Path
    _cache: dict[tuple[str, str], Any] = field(default_factory=dict)

    def file(self, stage: str, name: str) -> Path | None:
        folder = self.stages.get(stage)
        if folder is None:
            return None
        path = folder / name
        return path if path.is_file() else None

    def _load(self, key: tuple[str, str], path: Path | None, reader: Any) -> Any:
        if key not in self._cache:
            if path is None:
                self._cache[key] = None
            else:
                try:
                    self._cache[key] = reader(path)
                except (OSError, ValueError) as exc:  # pyarrow/pandas/json errors are ValueErrors
                    raise DatakitError(f"{path}: cannot be read for the report: {exc}") from exc
        return self._cache[key]

    def table(self, stage: str, name: str = "manifest.parquet") -> pd.DataFrame | None:
        path = self.file(stage, name)
        reader = pd.read_parquet if name.endswith(".parquet") else pd.read_csv
        return self._load((stage, name), path, reader)

    def report(self, name: str) -> dict[str, Any] | None:
        path = None
        if self.reports_dir is not None and (self.reports_dir / f"{name}.json").is_file():
            path = self.reports_dir / f"{name}.json"
        return self._load(("reports", name), path, lambda p: json.loads(p.read_text(encoding="utf-8")))

    def json_file(self, stage: str, name: str) -> Any:
        return self._load((stage, name), self.file(stage, name), lambda p: json.loads(p.read_text(encoding="utf-8")))

    def where(self, stage: str, name: str = "manifest.parquet") -> str:
        folder = self.stages.get(stage)
        return html.escape(str(folder / name) if folder is not None else f"<{stage}>/{name}")

    def report_where(self, name: str) -> str:
        return html.escape(str(self.reports_dir / f"{name}.json") if self.reports_dir else f"reports/{name}.json")


# ---------------------------------------------------------------------------------------------
# Small HTML helpers


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def _cards(items: Iterable[tuple[str, Any]], cls: str = "") -> str:
    body = "".join(f'<div class="card {cls}"><b>{_num(v)}</b><span>{_e(k)}</span></div>' for k, v in items)
    return f'<div class="cards">{body}</div>'


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, table_id: str = "", cls: str = "",
           total: Sequence[Any] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    attrs = (f' id="{table_id}"' if table_id else "") + (f' class="{cls}"' if cls else "")

    def tr(cells: Sequence[Any], row_cls: str = "") -> str:
        first, rest = cells[0], cells[1:]
        tds = "".join(f'<td data-col="{_e(h)}">{_num(v)}</td>' for h, v in zip(header[1:], rest, strict=True))
        cls_attr = f' class="{row_cls}"' if row_cls else ""
        return f"<tr{cls_attr}><th>{_e(first)}</th>{tds}</tr>"

    body = "".join(tr(r) for r in rows) + (tr(total, "total") if total is not None else "")
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class _Thumbs:
    """Thumbnails as data URIs, cached per path, within one byte budget for the whole page."""

    def __init__(self, root: Path, max_bytes: int, size: int = 88) -> None:
        from datakit.manifest import PathGuard

        self.root, self.max_bytes, self.size = root, max_bytes, size
        self.guard = PathGuard(root)  # a manifest path leading out of the project is never read (SEC-10)
        self.used = 0
        self.count = 0
        self._cache: dict[str, str] = {}

    def uri(self, rel: Any, fallback: Path | None = None) -> str:
        from datakit.images import thumbnail_uri as _thumb

        if not isinstance(rel, str) or not rel or self.guard.escapes(rel):
            return ""
        if rel not in self._cache:
            if self.used >= self.max_bytes:
                return ""
            src = _thumb(self.root, rel, self.size)
            if not src and fallback is not None and fallback.is_file():
                src = _thumb(fallback.parent, fallback.name, self.size)
            self.used += len(src)
            self._cache[rel] = src
        return self._cache[rel]

    def figure(self, rel: Any, caption: str, cls: str = "", fallback: Path | None = None) -> str:
        src = self.uri(rel, fallback)
        if src:
            self.count += 1
            img = f'<img src="{src}" alt="{_e(Path(str(rel)).name[:16])}">'
        else:
            why = "no image" if not isinstance(rel, str) or not rel else (
                "budget" if self.used >= self.max_bytes else "unreadable")
            img = f'<div class="noimg">{why}</div>'
        return f'<figure class="{cls}">{img}<figcaption>{caption}</figcaption></figure>'


# ---------------------------------------------------------------------------------------------
# SVG charts (drawn here: no plotting library, no script)


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


def svg_line_chart(title: str, series: Sequence[tuple[str, Sequence[float], Sequence[float]]], *, x_label: str,
                   y_label: str, y_range: tuple[float, float] | None = None, width: int = 540, height: int = 290) -> str:
    """An inline SVG line chart: `series` is (name, xs, ys) per line; NaNs are skipped."""
    pts = [(n, [(float(x), float(y)) for x, y in zip(xs, ys, strict=True) if not (math.isnan(float(y)) or math.isnan(float(x)))])
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
             f'role="img" aria-label="{_e(title)}" font-family="system-ui,sans-serif" font-size="11">',
             f'<text x="{left}" y="18" font-size="13" font-weight="bold">{_e(title)}</text>']
    for t in _ticks(y0, y1):
        y = sy(t)
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{_fmt_tick(t)}</text>')
    for t in _ticks(x0, x1, 6):
        x = sx(t)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + ph}" y2="{top + ph + 4}" stroke="#888"/>'
                     f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle" fill="#555">{_fmt_tick(t)}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#bbb"/>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 6}" text-anchor="middle" fill="#333">{_e(x_label)}</text>'
                 f'<text transform="translate(14,{top + ph / 2:.1f}) rotate(-90)" text-anchor="middle" fill="#333">{_e(y_label)}</text>')
    for i, (name, p) in enumerate(pts):
        color = _COLORS[i % len(_COLORS)]
        line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in p)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2"/>')
        parts.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"><title>{_e(name)}: '
                     f'{_fmt_tick(x)}, {y:.4g}</title></circle>' for x, y in p)
        lx, ly = left + pw - 150, top + 14 + 15 * i
        if i == 0:
            parts.append(f'<rect x="{lx - 6}" y="{top + 3}" width="150" height="{15 * len(pts) + 4}" fill="#fff" fill-opacity=".85"/>')
        parts.append(f'<line x1="{lx}" x2="{lx + 18}" y1="{ly - 4}" y2="{ly - 4}" stroke="{color}" stroke-width="2"/>'
                     f'<text x="{lx + 24}" y="{ly}" fill="#333">{_e(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# Sections. Each returns (html, data) or None when its inputs are absent.


def _counts(df: pd.DataFrame | None, key: str, mask: pd.Series | None = None) -> pd.Series | None:
    if df is None or key not in df.columns:
        return None
    sub = df if mask is None else df[mask]
    return sub[key].astype("string").fillna("(none)").value_counts()


def _kept(df: pd.DataFrame) -> pd.Series:
    return df["keep"].fillna(False).astype(bool) if "keep" in df.columns else pd.Series(True, index=df.index)


def funnel(run: _Run, key: str) -> tuple[list[str], dict[str, dict[str, int | None]]]:
    """Columns and {name: {column: count}} for `key` ('label' or 'query'); a column whose stage
    is absent is left out."""
    scrape, failures = run.table("scrape"), run.table("scrape", "failures.parquet")
    dedup, split = run.table("dedup"), run.table("split")
    augment, balance = run.table("augment"), run.table("balance")
    cols: dict[str, pd.Series | None] = {}
    stored = _counts(scrape, key)
    if stored is not None and failures is not None:
        failed = _counts(failures, key)
        cols["returned"] = stored.add(failed, fill_value=0) if failed is not None else stored
        cols["failed"] = failed if failed is not None else pd.Series(dtype="int64")
    cols["stored"] = stored
    if dedup is None and split is not None and "keep" in split.columns:
        dedup = split  # split keeps dedup's columns
    cols["unique"] = _counts(dedup, key, _kept(dedup)) if dedup is not None and "keep" in dedup.columns else None
    if split is not None and "split" in split.columns:
        names = [s for s in SPLITS if s in set(split["split"].dropna())]
        names += sorted(set(split["split"].dropna().astype(str)) - set(names))
        for s in names:
            cols[s] = _counts(split, key, _kept(split) & split["split"].eq(s))
    if augment is not None and "split" in augment.columns:
        cols["train + augmented"] = _counts(augment, key, _kept(augment) & augment["split"].eq("train"))
    if balance is not None and "split" in balance.columns:
        origin = balance["origin"].fillna("original") if "origin" in balance.columns else pd.Series("original", index=balance.index)
        cols["balanced train"] = _counts(balance, key, _kept(balance) & balance["split"].eq("train") & origin.ne(AUGMENTED))
    present = {c: s for c, s in cols.items() if s is not None}
    names_all = sorted(set().union(*(set(s.index) for s in present.values()))) if present else []
    rows = {n: {c: int(s.get(n, 0)) for c, s in present.items()} for n in names_all}
    return list(present), rows


def _funnel_section(run: _Run, notes: list[str]) -> tuple[str, dict[str, Any]] | None:
    cols, by_label = funnel(run, "label")
    if not cols:
        return None
    _, by_query = funnel(run, "query")
    totals = {c: sum(r[c] for r in by_label.values()) for c in cols}
    scrape_rep = run.report("scrape")
    if scrape_rep and "returned" in totals and scrape_rep.get("results") not in (None, totals["returned"]):
        notes.append(f"scrape report says {scrape_rep['results']} results; manifest + failures hold {totals['returned']}")
    bal = run.report("balance")
    if bal and "balanced train" in cols:
        after = {k: int(v) for k, v in (bal.get("counts_after") or {}).items()}
        mine = {k: r["balanced train"] for k, r in by_label.items() if r["balanced train"]}
        if after and after != mine:
            notes.append("balanced train counts differ from reports/balance.json counts_after (report from another run?)")
    label_of: dict[str, str] = {}
    scrape = run.table("scrape")
    if scrape is not None and {"query", "label"} <= set(scrape.columns):
        label_of = {str(q): ", ".join(sorted(set(g.astype(str)))) for q, g in scrape.groupby("query")["label"]}
    parts = ['<h2 id="funnel">Counts at every stage</h2>',
             "<p class=\"sub\">returned by search → stored (scrape manifest) → unique (dedup keep) → kept rows per split"
             + (" → train with augment's variants" if "train + augmented" in cols else "")
             + (" → balanced train (originals and balance's rows, as balance counts them)" if "balanced train" in cols else "")
             + ". Failed = search results that did not become an image.</p>",
             "<h3>Per label</h3>",
             _table(["label", *cols], ([n, *(r[c] for c in cols)] for n, r in by_label.items()), table_id="funnel-label",
                    total=["total", *(totals[c] for c in cols)])]
    if by_query and any(n != "(none)" for n in by_query):
        qcols = ["label", *cols]
        rows = ([n, label_of.get(n, ""), *(r[c] for c in cols)] for n, r in sorted(by_query.items(), key=lambda kv: (label_of.get(kv[0], ""), kv[0])))
        parts += ["<h3>Per query</h3>",
                  _table(["query", *qcols], rows, table_id="funnel-query", total=["total", "", *(totals[c] for c in cols)])]
    if scrape_rep and scrape_rep.get("failures_by_reason"):
        reasons = ", ".join(f"{_e(k)} {v}" for k, v in sorted(scrape_rep["failures_by_reason"].items()))
        parts.append(f'<p class="meta">scrape failures by reason: {reasons}</p>')
    dedup_rep = run.report("dedup")
    if dedup_rep and dedup_rep.get("removed_by_reason"):
        reasons = ", ".join(f"{_e(k)} {v}" for k, v in sorted(dedup_rep["removed_by_reason"].items()))
        parts.append(f'<p class="meta">dedup removed by reason: {reasons}</p>')
    return "\n".join(parts), {"columns": cols, "by_label": by_label, "by_query": by_query, "totals": totals}


def _dup_group(thumbs: _Thumbs, rows: pd.DataFrame, conflict: bool) -> str:
    figs = []
    for r in rows.sort_values(["keep", "image_id"], ascending=[False, True]).itertuples():
        dist = getattr(r, "dup_distance", None)
        d = "" if dist is None or pd.isna(dist) else f" · d={int(dist)}"
        why = getattr(r, "dedup_reason", None)
        cap = f"<b>{_e(r.label)}</b>{d}<br>{_e(why) if isinstance(why, str) else 'kept'}"
        figs.append(thumbs.figure(r.path, cap, "kept" if r.keep else "dropped"))
    title = f"group {_e(str(rows['dup_group'].iat[0])[:12])} · {len(rows)} image{'s' if len(rows) != 1 else ''}"
    if conflict and "conflict_labels" in rows.columns:
        title += f" · labels {_e(rows['conflict_labels'].iat[0])}"
    return f'<div class="group{" conflict" if conflict else ""}"><div class="meta">{title}</div><div class="row">{"".join(figs)}</div></div>'


def _duplicates_section(run: _Run, thumbs: _Thumbs, largest: int, max_conflicts: int) -> tuple[str, dict[str, Any]] | None:
    df = run.table("dedup")
    if df is None or not {"dup_group", "keep", "path", "label"} <= set(df.columns):
        return None
    rep = run.report("dedup") or {}
    conflict_mask = df["label_conflict"].fillna(False).astype(bool) if "label_conflict" in df.columns else pd.Series(False, index=df.index)
    grouped = df[df["dup_group"].notna()]
    sizes = grouped.groupby("dup_group").size().sort_values(ascending=False, kind="stable")
    conflicts_all = sorted(set(df.loc[conflict_mask & df["dup_group"].notna(), "dup_group"]), key=str)
    conflicts = conflicts_all[:max_conflicts]
    multi = [g for g in sizes.index if sizes[g] > 1 and g not in set(conflicts_all)][:largest]
    by_group = dict(iter(grouped[grouped["dup_group"].isin(set(conflicts) | set(multi))].groupby("dup_group")))
    cards = [(k, rep.get(k)) for k in ("images", "kept", "removed", "groups", "exact_groups", "near_groups",
                                        "conflict_groups", "low_information") if k in rep]
    if not cards:
        cards = [("images", len(df)), ("kept", int(_kept(df).sum())), ("groups (>1 image)", int((sizes > 1).sum())),
                 ("conflict groups", len(conflicts_all))]
    parts = ['<h2 id="duplicates">Duplicates</h2>', _cards(cards),
             '<p class="sub">green border: the image kept; a red frame: a group whose images carry different labels'
             f' (policy: {_e(rep.get("conflict_policy", "?"))}).</p>',
             f"<h3>Label conflicts ({len(conflicts_all)} groups{f', first {len(conflicts)} shown' if len(conflicts) < len(conflicts_all) else ''})</h3>"]
    parts.extend(_dup_group(thumbs, by_group[g], True) for g in conflicts)
    if not conflicts:
        parts.append("<p>none</p>")
    parts.append(f"<h3>Largest groups (top {len(multi)})</h3>")
    parts.extend(_dup_group(thumbs, by_group[g], False) for g in multi)
    if not multi:
        parts.append("<p>none</p>")
    return "\n".join(parts), {"conflict_groups": len(conflicts_all), "conflicts_shown": len(conflicts), "largest_shown": len(multi)}


def _pairs(thumbs: _Thumbs, pairs: Sequence[Mapping[str, Any]], limit: int) -> str:
    out = []
    for p in pairs[:limit]:
        a = thumbs.figure(p.get("path_a"), f"{_e(p.get('split_a'))} · <b>{_e(p.get('label_a'))}</b>")
        b = thumbs.figure(p.get("path_b"), f"{_e(p.get('split_b'))} · <b>{_e(p.get('label_b'))}</b>")
        out.append(f'<div class="pair" title="{_e(p.get("kind"))} d={_e(p.get("distance"))}">{a}{b}</div>')
    return "".join(out)


def _audit_section(run: _Run, thumbs: _Thumbs, max_pairs: int) -> tuple[str, dict[str, Any]] | None:
    rep = run.report("audit")
    if rep is None:
        return None
    ok = bool(rep.get("ok"))
    verdict = f'<b class="{"pass" if ok else "fail"}">{"PASS" if ok else "FAIL"}</b>'
    parts = ['<h2 id="audit">Audit</h2>',
             f"<p>Verdict: {verdict} — {rep.get('leaks', 0)} cross-split leaks against max_leaks "
             f"{rep.get('max_leaks', 0)} ({rep.get('exact_leaks', 0)} exact, {rep.get('near_leaks', 0)} near); "
             f"{rep.get('label_conflicts', 0)} label conflicts; {rep.get('n_images', '?')} images checked.</p>",
             _cards([("leaks", rep.get("leaks")), ("max_leaks", rep.get("max_leaks")),
                     ("label conflicts", rep.get("label_conflicts")), ("unreadable", len(rep.get("unreadable") or []))])]
    dev = rep.get("max_deviation") or {}
    missing = {s: v for s, v in (rep.get("missing_classes") or {}).items() if v}
    if dev:
        parts.append("<p>Largest class-share deviation from the whole set: "
                     + ", ".join(f"{_e(s)} {float(v):.3f}" for s, v in dev.items()) + "</p>")
    if missing:
        parts.append('<p class="fail">Classes missing from a split: '
                     + "; ".join(f"{_e(s)}: {_e(', '.join(map(str, v)))}" for s, v in missing.items()) + "</p>")
    leaks = rep.get("leak_pairs") or []
    if leaks:
        parts.append(f"<h3>Leak pairs (first {min(max_pairs, len(leaks))} of {rep.get('leaks', len(leaks))})</h3>")
        parts.append(_pairs(thumbs, leaks, max_pairs))
    conflicts = rep.get("conflict_pairs") or []
    if conflicts:
        parts.append(f"<h3>Label-conflict pairs (first {min(max_pairs, len(conflicts))})</h3>")
        parts.append(_pairs(thumbs, conflicts, max_pairs))
    if rep.get("ahash_only"):
        parts.append(f'<p class="meta">{rep["ahash_only"]} further pairs match only the average-hash oracle '
                     "(coarse, many false positives; not counted as leaks).</p>")
    return "\n".join(parts), {"ok": ok, "leaks": rep.get("leaks"), "max_leaks": rep.get("max_leaks")}


def _balance_section(run: _Run) -> tuple[str, dict[str, Any]] | None:
    rep = run.report("balance")
    if rep is None:
        return None
    before, after = rep.get("counts_before") or {}, rep.get("counts_after") or {}
    weights = rep.get("class_weights") or {}
    labels = sorted(set(before) | set(after))
    rows = [[k, before.get(k, 0), after.get(k, 0), float(weights[k]) if k in weights else None] for k in labels]
    total = ["total", sum(before.values()), sum(after.values()), None]
    parts = ['<h2 id="balance">Balance</h2>',
             f"<p>Strategy <b>{_e(rep.get('strategy'))}</b>; imbalance (largest / smallest class) "
             f"{_num(rep.get('imbalance_before'))} → {_num(rep.get('imbalance_after'))}; rows added: "
             f"{_e(', '.join(f'{k} {v}' for k, v in (rep.get('rows_added') or {}).items()) or 'none')}; "
             f"undersampled: {rep.get('rows_undersampled', 0)}. Counted: kept original train rows.</p>",
             _table(["label", "before", "after", "weight"], rows, table_id="balance-table", total=total)]
    if rep.get("note"):
        parts.append(f'<p class="meta">{_e(rep["note"])}</p>')
    return "\n".join(parts), {"strategy": rep.get("strategy"), "counts_after": after}


def _training_section(run: _Run) -> tuple[str, dict[str, Any]] | None:
    hist = run.table("train", "history.csv")
    rep = run.report("train")
    if hist is None and rep is None:
        return None
    parts = ['<h2 id="training">Training</h2>']
    if rep:
        scalars = [(k, v) for k, v in rep.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)][:10]
        if scalars:
            parts.append(_cards(scalars))
    charts = []
    if hist is not None and "epoch" in hist.columns and len(hist):
        ep = hist["epoch"].astype(float).tolist()
        losses = [(c, ep, hist[c].astype(float).tolist()) for c in ("train_loss", "val_loss") if c in hist.columns]
        accs = [(c, ep, hist[c].astype(float).tolist()) for c in hist.columns
                if c.startswith("val_") and "acc" in c]
        if losses:
            charts.append(svg_line_chart("Loss per epoch", losses, x_label="epoch", y_label="loss"))
        if accs:
            charts.append(svg_line_chart("Validation accuracy per epoch", accs, x_label="epoch", y_label="accuracy",
                                         y_range=(0.0, 1.0)))
    if charts:
        parts.append(f'<div class="charts" id="training-curves">{"".join(charts)}</div>')
    elif hist is None:
        parts.append(f'<p class="meta">no {run.where("train", "history.csv")}</p>')
    return "\n".join(parts), {"epochs": 0 if hist is None else len(hist)}


def confusion(predictions: pd.DataFrame, labels: Sequence[str] | None = None) -> tuple[list[str], list[list[int]]]:
    """Labels and counts (rows actual, columns predicted) from a predictions table."""
    actual, predicted = predictions["actual"].astype(str), predictions["predicted"].astype(str)
    order = list(labels or [])
    order += sorted((set(actual) | set(predicted)) - set(order))
    index = {k: i for i, k in enumerate(order)}
    matrix = [[0] * len(order) for _ in order]
    for a, p in zip(actual, predicted, strict=True):
        matrix[index[a]][index[p]] += 1
    return order, matrix


def _confusion_html(labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> str:
    head = "".join(f'<th class="rot">{_e(k)}</th>' for k in labels)
    rows = []
    for i, (name, row) in enumerate(zip(labels, matrix, strict=True)):
        n = sum(row)
        cells = []
        for j, v in enumerate(row):
            share = v / n if n else 0.0
            color = "#fff" if share > 0.55 else "#222"
            cells.append(f'<td class="{"diag" if i == j else ""}" style="background:rgba(26,95,180,{share:.3f});color:{color}" '
                         f'title="{_e(name)} → {_e(labels[j])}: {v} ({share:.0%} of row)">{v}</td>')
        recall = f"{matrix[i][i] / n:.2f}" if n else "–"
        rows.append(f"<tr><th>{_e(name)}</th>{''.join(cells)}<td>{n}</td><td>{recall}</td></tr>")
    return (f'<table class="cm" id="confusion"><thead><tr><th>actual ↓ / predicted →</th>{head}'
            f'<th class="rot">total</th><th class="rot">recall</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def _evaluation_section(run: _Run, thumbs: _Thumbs, max_mistakes: int) -> tuple[str, dict[str, Any]] | None:
    rep = run.report("evaluate")
    per_class = run.table("evaluate", "per_class.csv")
    preds = run.table("evaluate", "predictions.csv")
    curve = run.table("evaluate", "learning_curve.csv")
    cv = run.table("evaluate", "cv.csv")
    mistakes = run.json_file("evaluate", "mistakes.json")
    if all(x is None for x in (rep, per_class, preds, curve, cv, mistakes)):
        return None
    data: dict[str, Any] = {}
    parts = ['<h2 id="evaluation">Evaluation (test split)</h2>']
    if rep:
        parts.append(_cards([(k, rep.get(k)) for k in ("accuracy", "balanced_accuracy", "macro_f1", "n_test") if k in rep]))
        model = rep.get("model") or {}
        if model:
            parts.append(f'<p class="meta">model: {_e(model.get("backbone"))} ({_e(model.get("mode"))}), '
                         f'best epoch {_e(model.get("best_epoch"))}</p>')
    if per_class is None and rep and isinstance(rep.get("per_class"), dict):
        per_class = pd.DataFrame([{"label": k, **v} for k, v in rep["per_class"].items()])
    if per_class is not None and len(per_class):
        cols = [c for c in ("precision", "recall", "f1", "support") if c in per_class.columns]
        rows = [[r["label"], *(r[c] for c in cols)] for r in per_class.to_dict("records")]
        parts += ["<h3>Per class</h3>", _table(["label", *cols], rows, table_id="per-class")]
    labels, matrix = None, None
    if preds is not None and {"actual", "predicted"} <= set(preds.columns):
        order = (rep or {}).get("confusion", {}).get("labels") if isinstance((rep or {}).get("confusion"), dict) else None
        labels, matrix = confusion(preds, order)
    elif rep and isinstance(rep.get("confusion"), dict) and rep["confusion"].get("matrix"):
        labels, matrix = rep["confusion"]["labels"], rep["confusion"]["matrix"]
    if labels and matrix:
        data["confusion"] = {"labels": labels, "matrix": matrix}
        parts += ["<h3>Confusion matrix</h3>",
                  '<p class="sub">rows: actual class, columns: predicted; shade: share of the row; framed: correct.</p>',
                  _confusion_html(labels, matrix)]
    charts = []
    if curve is not None and len(curve):
        x = "n_train" if "n_train" in curve.columns else "fraction"
        series = [(c, curve[x].astype(float).tolist(), curve[c].astype(float).tolist())
                  for c in ("accuracy", "balanced_accuracy") if c in curve.columns]
        charts.append(svg_line_chart("Learning curve (test set)", series, x_label=f"{x.replace('_', ' ')}",
                                     y_label="score", y_range=(0.0, 1.0)))
        data["learning_curve_points"] = len(curve)
    if charts:
        lc = (rep or {}).get("learning_curve")
        method = lc.get("method") if isinstance(lc, dict) else None
        how = {"probe": "each point is a linear probe refitted on the embeddings (fast; it measures the embedding "
                        "backbone, not the fine-tuned network)",
               "retrain": "each point is a re-training with the model's own train params"}.get(str(method), "")
        parts += ['<h3>Learning curve</h3>',
                  f'<p class="sub">accuracy on the fixed test set vs the share of train data used{"; " + _e(how) if how else ""}.</p>',
                  f'<div class="charts" id="learning-curve">{"".join(charts)}</div>']
    if cv is not None and len(cv):
        cols = [c for c in ("n_train", "n_eval", "accuracy", "balanced_accuracy") if c in cv.columns]
        rows = [[f"fold {r.get('fold', i)}", *(r[c] for c in cols)] for i, r in enumerate(cv.to_dict("records"))]
        parts += ["<h3>Cross-validation</h3>", _table(["fold", *cols], rows, table_id="cv")]
    listed = mistakes.get("mistakes", []) if isinstance(mistakes, dict) else (mistakes or [])
    if listed:
        listed = sorted(listed, key=lambda m: -float(m.get("confidence") or 0))[:max_mistakes]
        folder = run.stages.get("evaluate")
        figs = []
        for m in listed:
            fb = folder / m["thumbnail"] if folder is not None and isinstance(m.get("thumbnail"), str) else None
            cap = f"<b>{_e(m.get('actual'))}</b> → {_e(m.get('predicted'))}<br>{_num(float(m.get('confidence') or 0), 2)}"
            figs.append(thumbs.figure(m.get("path"), cap, "wrong", fallback=fb))
        total = mistakes.get("n_mistakes", len(listed)) if isinstance(mistakes, dict) else len(mistakes)
        parts += [f"<h3>Most confident mistakes ({len(listed)} of {total})</h3>",
                  '<p class="sub">actual → predicted, confidence.</p>', f'<div class="row" id="mistakes">{"".join(figs)}</div>']
        data["mistakes_shown"] = len(listed)
    return "\n".join(parts), data


def _versions() -> list[tuple[str, str]]:
    out = [("datakit", __version__), ("python", platform.python_version())]
    for name in VERSIONS:
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            if name in ("torch", "torchvision"):
                out.append((name, "not installed"))
    return out


# ---------------------------------------------------------------------------------------------


_SECTIONS = {
    "funnel": ("Counts at every stage", "scrape, dedup or split manifests"),
    "duplicates": ("Duplicates", "dedup/manifest.parquet"),
    "audit": ("Audit", "reports/audit.json"),
    "balance": ("Balance", "reports/balance.json"),
    "training": ("Training", "train/history.csv or reports/train.json"),
    "evaluation": ("Evaluation", "evaluate/ (predictions.csv, per_class.csv, learning_curve.csv, mistakes.json) or reports/evaluate.json"),
}


def build_report(stages: Mapping[str, Path], reports_dir: Path | None, out: Path, *, root: Path | None = None,
                 params_file: Path | None = None, title: str = "datakit run report", largest_groups: int = 12,
                 max_conflict_groups: int = 40, max_pairs: int = 8, max_mistakes: int = 16,
                 max_thumb_bytes: int = 3_000_000) -> dict[str, Any]:
    """Write the run's page to `out` and return what it holds.

    `stages` maps stage names (see STAGES; `stage_folders` builds it) to folders, which may not
    exist; `reports_dir` holds the stages' `<stage>.json`; `root` is the folder manifest paths
    are relative to (default: `find_project_root` of the first stage folder that exists).
    Returns {"path", "bytes", "thumbnails", "sections": {name: bool}, "absent": [...], "notes":
    [...], plus each present section's figures under its name}. Raises DatakitError when nothing
    at all is found, or when a file that is there cannot be read."""
    from datakit.manifest import find_project_root

    stages = {k: Path(v) for k, v in stages.items()}
    reports_dir = Path(reports_dir) if reports_dir is not None else None
    existing = [p for p in stages.values() if p.is_dir()]
    has_reports = reports_dir is not None and any(reports_dir.glob("*.json"))
    if not existing and not has_reports:
        raise DatakitError("nothing to report: none of the stage folders "
                           f"({', '.join(str(p) for p in stages.values()) or 'none given'}) exists and "
                           f"{reports_dir or 'no reports folder'} holds no <stage>.json")
    if root is None:
        root = find_project_root(existing[0]) if existing else Path.cwd()
    params_text = None
    if params_file is not None:
        from datakit.params import read_params_text

        params_text = read_params_text(Path(params_file))  # one line naming the file if unreadable or not UTF-8
    run = _Run(stages, reports_dir, Path(root))
    thumbs = _Thumbs(Path(root), max_thumb_bytes)
    notes: list[str] = []
    built: dict[str, tuple[str, dict[str, Any]] | None] = {
        "funnel": _funnel_section(run, notes),
        "duplicates": _duplicates_section(run, thumbs, largest_groups, max_conflict_groups),
        "audit": _audit_section(run, thumbs, max_pairs),
        "balance": _balance_section(run),
        "training": _training_section(run),
        "evaluation": _evaluation_section(run, thumbs, max_mistakes),
    }
    absent = [f"{_SECTIONS[k][0]}: no {_SECTIONS[k][1]}" for k, v in built.items() if v is None]
    if thumbs.used >= max_thumb_bytes:
        notes.append(f"thumbnail budget ({max_thumb_bytes:,} bytes) reached: later images are drawn as boxes")

    nav = " ".join(f'<a href="#{k}">{_e(_SECTIONS[k][0])}</a>' for k, v in built.items() if v is not None)
    stage_rows = [[k, str(v) if v.is_dir() else "–", "found" if run.report(k) is not None else "–"] for k, v in stages.items()]
    header = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
        f"<meta name='viewport' content='width=device-width'><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">generated {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")} · project root {_e(root)}'
        f"{f' · reports {_e(reports_dir)}' if reports_dir else ''}</p>",
        f"<nav>{nav}</nav>",
    ]
    if absent:
        header.append('<div class="absent" id="absent"><b>Not in this run</b><ul>'
                      + "".join(f"<li>{_e(a)}</li>" for a in absent) + "</ul></div>")
    if notes:
        header.append('<div class="absent" id="notes"><b>Notes</b><ul>' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul></div>")
    header.append('<h2 id="run">Run</h2><div class="charts"><div><h3>Versions</h3>'
                  + _table(["package", "version"], _versions(), table_id="versions")
                  + "</div><div><h3>Stages</h3>" + _table(["stage", "folder", "report (<stage>.json)"],
                                                          stage_rows, table_id="stages") + "</div></div>")
    if params_text is not None:
        header.append(f"<h3>{_e(params_file)}</h3><pre id='params'>{_e(params_text)}</pre>")
    body = [v[0] for v in built.values() if v is not None]
    page = "\n".join([*header, *body, "</body></html>"]) + "\n"
    out = Path(out)
    atomic_write_text(out, page)
    result: dict[str, Any] = {
        "path": str(out), "bytes": len(page.encode("utf-8")), "thumbnails": thumbs.count,
        "sections": {k: v is not None for k, v in built.items()}, "absent": absent, "notes": notes,
    }
    result.update({k: v[1] for k, v in built.items() if v is not None})
    return result


__all__ = ["STAGES", "build_report", "confusion", "funnel", "stage_folders", "svg_line_chart"]
