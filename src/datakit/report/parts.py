"""What every section of the report page shares: the run's files (read once, manifests through
the stage loader) and small HTML helpers (escaping, numbers, cards, tables, thumbnails)."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from datakit.errors import DatakitError
from datakit.images import thumbnail_uri as _thumb
from datakit.manifest import MANIFEST, PathGuard, read_stage_manifest, read_table

SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------------------------------
# Reading the run


@dataclass
class RunFiles:
    """The files of one pipeline run (stage folders, the reports folder), each read once."""

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

    def table(self, stage: str, name: str = MANIFEST) -> pd.DataFrame | None:
        """A table of a stage folder: its manifest through the stage loader (`path` relative to
        this run's root, whichever way the file stores it), other Parquet tables and CSVs as they are."""
        path = self.file(stage, name)
        if name == MANIFEST:
            reader: Any = lambda p: read_stage_manifest(p, self.root)[0]  # noqa: E731
        else:
            reader = (lambda p: read_table(p, name)) if name.endswith(".parquet") else pd.read_csv
        return self._load((stage, name), path, reader)

    def report(self, name: str) -> dict[str, Any] | None:
        path = None
        if self.reports_dir is not None and (self.reports_dir / f"{name}.json").is_file():
            path = self.reports_dir / f"{name}.json"
        return self._load(("reports", name), path, lambda p: json.loads(p.read_text(encoding="utf-8")))

    def json_file(self, stage: str, name: str) -> Any:
        return self._load((stage, name), self.file(stage, name), lambda p: json.loads(p.read_text(encoding="utf-8")))

    def where(self, stage: str, name: str = MANIFEST) -> str:
        folder = self.stages.get(stage)
        return html.escape(str(folder / name) if folder is not None else f"<{stage}>/{name}")

    def report_where(self, name: str) -> str:
        return html.escape(str(self.reports_dir / f"{name}.json") if self.reports_dir else f"reports/{name}.json")


# ---------------------------------------------------------------------------------------------
# Small HTML helpers


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def fmt_num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return esc(value)


def card_row(items: Iterable[tuple[str, Any]], cls: str = "") -> str:
    body = "".join(f'<div class="card {cls}"><b>{fmt_num(v)}</b><span>{esc(k)}</span></div>' for k, v in items)
    return f'<div class="cards">{body}</div>'


def html_table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, table_id: str = "", cls: str = "",
           total: Sequence[Any] | None = None) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    attrs = (f' id="{table_id}"' if table_id else "") + (f' class="{cls}"' if cls else "")

    def tr(cells: Sequence[Any], row_cls: str = "") -> str:
        first, rest = cells[0], cells[1:]
        tds = "".join(f'<td data-col="{esc(h)}">{fmt_num(v)}</td>' for h, v in zip(header[1:], rest, strict=True))
        cls_attr = f' class="{row_cls}"' if row_cls else ""
        return f"<tr{cls_attr}><th>{esc(first)}</th>{tds}</tr>"

    body = "".join(tr(r) for r in rows) + (tr(total, "total") if total is not None else "")
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Thumbs:
    """Thumbnails as data URIs, cached per path, within one byte budget for the whole page."""

    def __init__(self, root: Path, max_bytes: int, size: int = 88) -> None:
        self.root, self.max_bytes, self.size = root, max_bytes, size
        self.guard = PathGuard(root)  # a manifest path leading out of the project is never read (SEC-10)
        self.used = 0
        self.count = 0
        self._cache: dict[str, str] = {}

    def uri(self, rel: Any, fallback: Path | None = None) -> str:
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
            img = f'<img src="{src}" alt="{esc(Path(str(rel)).name[:16])}">'
        else:
            why = "no image" if not isinstance(rel, str) or not rel else (
                "budget" if self.used >= self.max_bytes else "unreadable")
            img = f'<div class="noimg">{why}</div>'
        return f'<figure class="{cls}">{img}<figcaption>{caption}</figcaption></figure>'
