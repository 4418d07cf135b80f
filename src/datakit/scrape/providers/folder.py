"""`folder` provider: an existing folder of class subfolders (the Keras / ImageFolder habit).

`--source DIR` where `DIR/<label>/<file>`; every regular, non-hidden file becomes a hit whose
label is its subfolder's name. Files go through the same validation and store as downloads, so
non-images and broken files end up in failures.parquet with a reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from datakit.errors import ParamsError
from datakit.scrape.providers.base import Hit, Page, Provider, ProviderSettings, Query, SearchHttp


class FolderProvider(Provider):
    name: ClassVar[str] = "folder"
    offline: ClassVar[bool] = True
    takes_all: ClassVar[bool] = True

    def __init__(self, settings: ProviderSettings) -> None:
        super().__init__(settings)
        if not settings.source:
            raise ParamsError("provider 'folder' needs --source DIR (a folder of class subfolders)")
        self.root = Path(settings.source)
        if not self.root.is_dir():
            raise ParamsError(f"--source {self.root}: not a folder")
        self._classes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not self._classes:
            raise ParamsError(f"--source {self.root}: no class subfolders (expected DIR/<label>/<image files>)")

    def plan(self, queries: list[Query]) -> list[Query]:
        return [Query(text=name, label=name) for name in self._classes]

    async def _fetch_page(self, query: Query, cursor: Any, want: int, page_no: int, http: SearchHttp | None) -> Page:
        folder = self.root / query.label
        files = sorted(
            p for p in folder.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        hits = [
            Hit(url="", local_path=str(p), provider_id=p.relative_to(self.root).as_posix(),
                page_url=p.absolute().as_uri(), title=p.name)
            for p in files
        ]
        return Page(hits=hits, next=None, total=len(hits))
