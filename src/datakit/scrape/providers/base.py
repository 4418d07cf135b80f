"""The provider interface: a provider turns one query into ranked hits.

A provider never downloads images. HTTP providers ask a search API through the
`SearchHttp` client they are handed (one credentialed session, retries, raw-response
recording, key redaction); offline providers (`synthetic`, `folder`) return hits that
carry their bytes or a local path. The public `search()` validates and pages; each
provider implements only the `_fetch_page` hook.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from datakit.errors import ParamsError, ProviderError
from datakit.scrape.secrets import redact, scrub_hit


@dataclass(frozen=True)
class Query:
    """One search: the text sent to the provider and the label its images get."""

    text: str
    label: str
    item: str | None = None
    attribute: str | None = None


@dataclass
class Hit:
    """One search result: where the image is and what the provider said about it."""

    url: str  # image URL (http/https), or "" for hits that carry data or a local path
    provider_id: str | None = None
    page_url: str | None = None
    license: str | None = None
    license_url: str | None = None
    creator: str | None = None
    title: str | None = None
    declared_width: int | None = None
    declared_height: int | None = None
    declared_type: str | None = None
    data: bytes | None = None  # offline providers: the file's bytes
    local_path: str | None = None  # folder provider: the file on disk
    label: str | None = None  # overrides the query's label (urls/folder providers)
    # filled by Provider.search:
    query: Query | None = None
    rank: int = 0


@dataclass
class Page:
    """What one `_fetch_page` call returns: hits in rank order and the cursor of the next page."""

    hits: list[Hit]
    next: Any | None = None  # None: no more pages
    total: int | None = None  # provider's own count, when it gives one


@dataclass
class ApiResponse:
    status: int
    headers: dict[str, str]
    body: bytes  # as the server sent it: may quote the key (B3), so never print it raw
    url: str  # redacted: never contains a secret
    secrets: tuple[str, ...] = field(default=(), repr=False)  # what `snippet` redacts

    def snippet(self, limit: int = 120) -> str:
        """The start of the body as one printable line, every secret redacted (the only way a
        message may quote a server's text)."""
        text = self.body[: limit + 200].decode("utf-8", "replace")
        return " ".join(redact(text, self.secrets).split())[:limit]

    def json(self) -> Any:
        import json

        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            raise ProviderError(
                f"unexpected response from {self.url} (HTTP {self.status}): not JSON: {self.snippet(80)!r}"
            ) from None


class SearchHttp(Protocol):
    """What providers may use to talk to a search API (see scrape/searchhttp.py)."""

    async def get(
        self,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        secrets: tuple[str, ...] = (),
        record_as: str | None = None,
    ) -> ApiResponse:
        """GET with retries on 429/5xx/connection errors. Returns the final response (any
        status) for the provider to interpret. `secrets` are values to redact from every URL,
        message and record. `record_as` names the raw-response file under `search/`."""
        ...


class TransientProviderError(ProviderError):
    """The provider said "try again later" inside a 200 (Wikimedia maxlag, Flickr 105)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class ProviderSettings:
    """What a provider is built from (params.yaml `scrape.providers.<name>` plus CLI)."""

    endpoint: str | None = None
    source: str | None = None  # --source: folder or url list
    options: dict[str, Any] = field(default_factory=dict)
    user_agent: str = "datakit"
    seed: int = 0


class Provider(ABC):
    """Base class. Subclasses set the class attributes and implement `_fetch_page`."""

    name: ClassVar[str]
    key_env: ClassVar[tuple[str, ...]] = ()  # environment variables holding credentials
    default_endpoint: ClassVar[str | None] = None
    max_results: ClassVar[int | None] = None  # deepest result the provider can return
    page_size: ClassVar[int] = 50
    offline: ClassVar[bool] = False  # True: no search HTTP, hits carry data/local paths

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings
        self.endpoint = (settings.endpoint or self.default_endpoint or "").rstrip("/")
        self.secrets: dict[str, str] = {}
        for var in self.key_env:
            value = os.environ.get(var, "").strip()
            if not value:
                raise ParamsError(
                    f"provider {self.name!r} needs an API key in the environment variable {var} "
                    f"(set it in your shell; never in params.yaml or on the command line)"
                )
            self.secrets[var] = value

    def plan(self, queries: list[Query]) -> list[Query]:
        """The queries this provider will run. Source-driven providers replace them."""
        return queries

    async def search(self, query: Query, n: int, http: SearchHttp | None) -> list[Hit]:
        """Up to `n` hits for `query`, ranked 1..n, pages fetched until `n` or exhausted."""
        if n < 1:
            raise ParamsError(f"per_query must be >= 1, got {n}")
        cap = min(n, self.max_results) if self.max_results else n
        hits: list[Hit] = []
        seen_ids: set[str] = set()
        cursor: Any = None
        page_no = 0
        while len(hits) < cap:
            page_no += 1
            page = await self._fetch_page_safely(query, cursor, cap - len(hits), page_no, http)
            fresh = 0
            for hit in page.hits:
                key = hit.provider_id or hit.url or hit.local_path or ""
                if key and key in seen_ids:  # deep pages that repeat (Flickr past 4,000)
                    continue
                seen_ids.add(key)
                fresh += 1
                hit.query = query
                hits.append(hit)
                if len(hits) >= cap:
                    break
            if page.next is None or fresh == 0:
                break
            cursor = page.next
        for rank, hit in enumerate(hits, start=1):
            hit.rank = rank
        return hits

    async def _fetch_page_safely(
        self, query: Query, cursor: Any, want: int, page_no: int, http: SearchHttp | None
    ) -> Page:
        """`_fetch_page` behind the one secrets gate every provider shares (SEC-08, issue 13
        B3/B11): a provider error quoting the server's text loses every key it holds, and a hit
        carrying a key (in its URL, title, ...) is scrubbed before anything stores or fetches it."""
        secrets = tuple(self.secrets.values())
        try:
            page = await self._fetch_page(query, cursor, want, page_no, http)
        except ProviderError as exc:
            if secrets:
                exc.args = tuple(redact(a, secrets) if isinstance(a, str) else a for a in exc.args)
                exc.__cause__ = None
                exc.__suppress_context__ = True
            raise
        if secrets:
            for hit in page.hits:
                scrub_hit(hit, secrets)
        return page

    @abstractmethod
    async def _fetch_page(
        self, query: Query, cursor: Any, want: int, page_no: int, http: SearchHttp | None
    ) -> Page:
        """Fetch one page. `cursor` is None for the first page, else the previous `Page.next`.
        `want` is how many more hits are needed (use it to size the page). Raise ProviderError
        for anything that must stop the run; never return a garbage page as zero results."""
