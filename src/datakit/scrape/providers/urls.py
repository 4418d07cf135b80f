"""`urls` provider: a CSV or Parquet list of image URLs with labels.

`--source FILE` with columns `url` and `label` (required) and optionally `page_url`, `license`,
`license_url`, `creator`, `title`, `provider_id`. One query per distinct label, rows in file
order. Bad files are errors that name the file, the column and the rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from datakit.errors import ParamsError
from datakit.scrape.providers.base import Hit, Page, Provider, ProviderSettings, Query, SearchHttp

OPTIONAL = ("page_url", "license", "license_url", "creator", "title", "provider_id")


def _rows(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:10])
    return shown + (f" (and {len(rows) - 10} more)" if len(rows) > 10 else "")


class UrlsProvider(Provider):
    name: ClassVar[str] = "urls"
    takes_all: ClassVar[bool] = True

    def __init__(self, settings: ProviderSettings) -> None:
        super().__init__(settings)
        if not settings.source:
            raise ParamsError("provider 'urls' needs --source FILE (CSV or Parquet with url,label)")
        path = Path(settings.source)
        if not path.is_file():
            raise ParamsError(f"--source {path}: file not found")
        try:
            if path.suffix.lower() in (".parquet", ".pq"):
                df = pd.read_parquet(path)
            else:
                df = pd.read_csv(path, dtype=str, keep_default_na=False)
        except Exception as exc:  # noqa: BLE001 - any reader failure is a bad source file
            raise ParamsError(f"--source {path}: cannot read it as {'Parquet' if path.suffix == '.parquet' else 'CSV'}: {exc}") from None
        missing = [c for c in ("url", "label") if c not in df.columns]
        if missing:
            raise ParamsError(f"--source {path}: missing column(s) {', '.join(missing)} (found: {', '.join(map(str, df.columns))})")
        df = df.reset_index(drop=True)
        problems = []
        for col in ("url", "label"):
            bad = [i + 2 if path.suffix.lower() not in (".parquet", ".pq") else i
                   for i, v in enumerate(df[col]) if not isinstance(v, str) or not v.strip()]
            if bad:
                problems.append(f"empty {col} in {'lines' if path.suffix.lower() not in ('.parquet', '.pq') else 'rows'} {_rows(bad)}")
        if problems:
            raise ParamsError(f"--source {path}: " + "; ".join(problems))
        self.path = path
        self.df = df
        self._labels = list(dict.fromkeys(df["label"].tolist()))

    def plan(self, queries: list[Query]) -> list[Query]:
        return [Query(text=label, label=label) for label in self._labels]

    async def _fetch_page(self, query: Query, cursor: Any, want: int, page_no: int, http: SearchHttp | None) -> Page:
        sub = self.df[self.df["label"] == query.label]
        hits = []
        for i, row in sub.iterrows():
            extra = {c: (str(row[c]) if c in sub.columns and isinstance(row[c], str) and row[c] else None) for c in OPTIONAL}
            hits.append(Hit(
                url=row["url"].strip(), provider_id=extra["provider_id"] or f"{self.path.name}:{i}",
                page_url=extra["page_url"], license=extra["license"], license_url=extra["license_url"],
                creator=extra["creator"], title=extra["title"],
            ))
        return Page(hits=hits, next=None, total=len(hits))
