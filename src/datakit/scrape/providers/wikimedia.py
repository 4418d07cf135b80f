"""Wikimedia Commons (MediaWiki Action API, `generator=search` in the File namespace).

Contract: shared/reference/providers.md section 3. No key, but a descriptive User-Agent is
mandatory (a generic one gets a 403 text page). One request fetches up to 50 files with their
image info and licence metadata; pages arrive in no particular order, so hits are sorted by
`index`. The `continue` object is merged into the next request. Errors come back as HTTP 200
with an `error` object; `maxlag` means "replicas are lagging, come back in Retry-After seconds".
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from datakit.errors import ParamsError, ProviderError
from datakit.scrape.providers.base import (
    ApiResponse,
    Hit,
    Page,
    Provider,
    ProviderSettings,
    Query,
    SearchHttp,
    TransientProviderError,
)
from datakit.scrape.providers.shared import (
    as_int,
    as_str,
    header,
    json_object,
    looks_like_html,
    rate_limited,
    retry_after_seconds,
    route,
    snippet,
    strip_html,
    unexpected,
)

_META_KEYS = (
    "LicenseShortName|LicenseUrl|License|UsageTerms|AttributionRequired|Artist|Credit|ObjectName"
    "|Copyrighted|Restrictions"
)
_OPTIONS = ("filetype",)


def _meta(extmetadata: Any, key: str) -> str | None:
    """The string value of one extmetadata entry ({"Artist": {"value": "..."}})."""
    if not isinstance(extmetadata, dict):
        return None
    entry = extmetadata.get(key)
    if isinstance(entry, dict):
        entry = entry.get("value")
    return as_str(entry) if isinstance(entry, str) else None


def _title(page_title: str | None) -> str | None:
    """"File:Breton striped shirt.jpg" -> "Breton striped shirt"."""
    if not page_title:
        return None
    name = page_title.split(":", 1)[1] if page_title.startswith("File:") else page_title
    return re.sub(r"\.[A-Za-z0-9]{2,5}$", "", name).strip() or None


class WikimediaProvider(Provider):
    """Search files on Wikimedia Commons; every hit carries its licence, author and file page."""

    name: ClassVar[str] = "wikimedia"
    default_endpoint: ClassVar[str | None] = "https://commons.wikimedia.org"
    page_size: ClassVar[int] = 50  # more than 50 per call stops returning scaled image info

    def __init__(self, settings: ProviderSettings) -> None:
        super().__init__(settings)
        unknown = sorted(set(settings.options) - set(_OPTIONS))
        if unknown:
            raise ParamsError(
                f"scrape.providers.wikimedia: unknown option(s) {unknown}; allowed: {list(_OPTIONS)}"
            )
        filetype = settings.options.get("filetype", "bitmap")
        if not isinstance(filetype, str) or not re.fullmatch(r"[a-z,|-]*", filetype):
            raise ParamsError(
                f"scrape.providers.wikimedia.filetype must be a CirrusSearch file type such as "
                f"'bitmap' (or '' for none), got {filetype!r}"
            )
        self.filetype = filetype

    async def _fetch_page(
        self, query: Query, cursor: Any, want: int, page_no: int, http: SearchHttp | None
    ) -> Page:
        if http is None:
            raise ProviderError("wikimedia needs an HTTP client")
        search = query.text.strip()
        if self.filetype:
            search = f"{search} filetype:{self.filetype}"
        params: dict[str, str] = {
            "action": "query",
            "format": "json",
            "formatversion": "2",
            "generator": "search",
            "gsrsearch": search,
            "gsrnamespace": "6",
            "gsrlimit": str(max(1, min(want, self.page_size))),
            "prop": "imageinfo",
            "iiprop": "url|size|mime|extmetadata",
            "iiextmetadatafilter": _META_KEYS,
            "iiextmetadatalanguage": "en",
            "maxlag": "5",
        }
        if isinstance(cursor, dict):
            params.update({str(k): str(v) for k, v in cursor.items()})
        resp = await http.get(
            route(self.endpoint, "/w/api.php"),
            params=params,
            headers={"User-Agent": self.settings.user_agent, "Accept": "application/json"},
            secrets=tuple(self.secrets.values()),
            record_as=f"{page_no:03d}",
        )
        if resp.status != 200:
            raise self._http_error(resp)
        body = json_object(self.name, resp)
        if "error" in body:
            raise self._api_error(resp, body["error"])
        if "query" not in body:  # zero hits: the API leaves the whole key out
            if "batchcomplete" not in body and "continue" not in body:
                raise unexpected(self.name, resp, "neither 'query' nor 'batchcomplete' in the JSON")
            return Page(hits=[], next=None, total=0)
        pages = body["query"].get("pages") if isinstance(body["query"], dict) else None
        if isinstance(pages, dict):  # formatversion=1: an object keyed by page id
            pages = list(pages.values())
        if not isinstance(pages, list):
            raise unexpected(self.name, resp, "no 'query.pages' in the JSON")
        ranked = sorted(
            (p for p in pages if isinstance(p, dict)),
            key=lambda p: (as_int(p.get("index")) is None, as_int(p.get("index")) or 0),
        )
        hits = [hit for page in ranked if (hit := self._hit(page)) is not None]
        cont = body.get("continue")
        nxt = dict(cont) if isinstance(cont, dict) and cont else None
        return Page(hits=hits, next=nxt)

    def _hit(self, page: dict[str, Any]) -> Hit | None:
        infos = page.get("imageinfo")
        if not isinstance(infos, list) or not infos or not isinstance(infos[0], dict):
            return None  # deleted or hidden file
        info = infos[0]
        url = as_str(info.get("url"))
        if url is None:
            return None
        meta = info.get("extmetadata")
        pageid = page.get("pageid")
        return Hit(
            url=url,
            provider_id=str(pageid) if pageid is not None else as_str(page.get("title")),
            page_url=as_str(info.get("descriptionurl")),
            license=strip_html(_meta(meta, "LicenseShortName")),
            license_url=_meta(meta, "LicenseUrl"),
            creator=strip_html(_meta(meta, "Artist")),
            title=strip_html(_meta(meta, "ObjectName")) or _title(as_str(page.get("title"))),
            declared_width=as_int(info.get("width")),
            declared_height=as_int(info.get("height")),
            declared_type=as_str(info.get("mime")),
        )

    def _http_error(self, resp: ApiResponse) -> ProviderError:
        if resp.status == 429:
            return rate_limited(self.name, resp)
        if resp.status == 403 and looks_like_html(resp):
            return unexpected(
                self.name, resp, f"an HTML block page (the User-Agent sent was {self.settings.user_agent!r})"
            )
        if resp.status == 403:
            return ProviderError(
                f"wikimedia refused the request (HTTP 403): {snippet(resp)!r}. Wikimedia blocks "
                f"generic User-Agents; the one sent was {self.settings.user_agent!r} and must name "
                f"the tool and a contact URL or e-mail, e.g. 'datakit/1.0 (https://example.org; "
                f"me@example.org)'"
            )
        if looks_like_html(resp) or resp.status >= 500:
            return unexpected(self.name, resp, "not an API answer (blocked, or the service is down)")
        return unexpected(self.name, resp, "unexpected status")

    def _api_error(self, resp: ApiResponse, error: Any) -> ProviderError:
        code = as_str(error.get("code")) if isinstance(error, dict) else None
        info = as_str(error.get("info")) if isinstance(error, dict) else None
        code = code or header(resp, "MediaWiki-API-Error") or "unknown"
        if code == "maxlag":
            wait = retry_after_seconds(resp)
            if wait is None and isinstance(error, dict):
                lag = error.get("lag")
                wait = float(lag) if isinstance(lag, (int, float)) else None
            return TransientProviderError(
                f"wikimedia is lagging (maxlag): {info or 'try again later'}", retry_after=wait
            )
        return ProviderError(f"wikimedia API error {code}: {info or 'no details'}")
