"""Flickr (`flickr.photos.search`): licence-filterable photos behind an API key (FLICKR_API_KEY).

Contract: shared/reference/providers.md section 5. The key travels as the `api_key` query
parameter (SearchHttp redacts it from every URL and record). Errors are HTTP 200 with
`stat: "fail"`: code 100 is a bad key, 105/201 "service not currently available" is worth a
retry. Pages are numbered (up to 500 per page) and only the first 4,000 results of a search are
reachable; deeper pages repeat the last one. The licence is a numeric id, mapped below.
"""

from __future__ import annotations

import json
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
    looks_like_html,
    mime_for,
    page_window,
    rate_limited,
    redact,
    route,
    unexpected,
)

_KEY_VAR = "FLICKR_API_KEY"
_OPTIONS = ("license", "safe_search", "sort", "content_type")

LICENSES: dict[str, tuple[str, str | None]] = {
    "0": ("All Rights Reserved", None),
    "1": ("CC BY-NC-SA 2.0", "https://creativecommons.org/licenses/by-nc-sa/2.0/"),
    "2": ("CC BY-NC 2.0", "https://creativecommons.org/licenses/by-nc/2.0/"),
    "3": ("CC BY-NC-ND 2.0", "https://creativecommons.org/licenses/by-nc-nd/2.0/"),
    "4": ("CC BY 2.0", "https://creativecommons.org/licenses/by/2.0/"),
    "5": ("CC BY-SA 2.0", "https://creativecommons.org/licenses/by-sa/2.0/"),
    "6": ("CC BY-ND 2.0", "https://creativecommons.org/licenses/by-nd/2.0/"),
    "7": ("No known copyright restrictions", "https://www.flickr.com/commons/usage/"),
    "8": ("United States Government Work", "http://www.usa.gov/copyright.shtml"),
    "9": ("CC0 1.0", "https://creativecommons.org/publicdomain/zero/1.0/"),
    "10": ("Public Domain Mark 1.0", "https://creativecommons.org/publicdomain/mark/1.0/"),
    "11": ("CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/"),
    "12": ("CC BY-SA 4.0", "https://creativecommons.org/licenses/by-sa/4.0/"),
    "13": ("CC BY-ND 4.0", "https://creativecommons.org/licenses/by-nd/4.0/"),
    "14": ("CC BY-NC 4.0", "https://creativecommons.org/licenses/by-nc/4.0/"),
    "15": ("CC BY-NC-SA 4.0", "https://creativecommons.org/licenses/by-nc-sa/4.0/"),
    "16": ("CC BY-NC-ND 4.0", "https://creativecommons.org/licenses/by-nc-nd/4.0/"),
}
"""Flickr licence id -> (name, URL), from `flickr.photos.licenses.getInfo` (June 2025)."""

SIZES = ("o", "k", "h", "l", "c", "z")
"""Image sizes asked for as `url_<size>` extras, largest first: original, 2048, 1600, 1024, 800, 640."""

EXTRAS = "license,owner_name,path_alias,original_format," + ",".join(f"url_{s}" for s in SIZES)
DEEPEST = 4000


def _decode(resp: ApiResponse) -> dict[str, Any]:
    """The JSON object of a Flickr answer, unwrapping JSONP (`jsonFlickrApi(...)`) if present."""
    if looks_like_html(resp):
        raise unexpected("flickr", resp, "an HTML page instead of JSON (blocked or outage?)")
    text = resp.body.decode("utf-8", "replace").strip()
    if not text:
        raise unexpected("flickr", resp, "empty body")
    if text.startswith("jsonFlickrApi(") and text.endswith(")"):
        text = text[len("jsonFlickrApi(") : -1]
    try:
        body = json.loads(text)
    except ValueError:
        raise unexpected("flickr", resp, "not JSON") from None
    if not isinstance(body, dict):
        raise unexpected("flickr", resp, f"JSON {type(body).__name__} instead of an object")
    return body


class FlickrProvider(Provider):
    """Flickr photo search, Creative Commons and public-domain licences only by default."""

    name: ClassVar[str] = "flickr"
    key_env: ClassVar[tuple[str, ...]] = (_KEY_VAR,)
    default_endpoint: ClassVar[str | None] = "https://api.flickr.com"
    max_results: ClassVar[int | None] = DEEPEST
    page_size: ClassVar[int] = 500

    def __init__(self, settings: ProviderSettings) -> None:
        super().__init__(settings)
        options = dict(settings.options)
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ParamsError(
                f"scrape.providers.flickr: unknown option(s) {unknown}; allowed: {list(_OPTIONS)}"
            )
        raw = options.get("license", "4,5,9,10,11,12")
        ids = [str(v).strip() for v in (raw if isinstance(raw, (list, tuple)) else str(raw).split(","))]
        ids = [v for v in ids if v]
        bad = [v for v in ids if v not in LICENSES]
        if bad or not ids:
            raise ParamsError(
                f"scrape.providers.flickr.license must list Flickr licence ids "
                f"{sorted(LICENSES, key=int)}, got {raw!r}"
            )
        self.params: dict[str, str] = {
            "license": ",".join(ids),
            "safe_search": str(options.get("safe_search", 1)),
            "content_type": str(options.get("content_type", 1)),
            "sort": str(options.get("sort", "relevance")),
        }

    async def _fetch_page(
        self, query: Query, cursor: Any, want: int, page_no: int, http: SearchHttp | None
    ) -> Page:
        if http is None:
            raise ProviderError("flickr needs an HTTP client")
        offset = int(cursor or 0)
        page, per_page = page_window(offset, want, self.page_size)
        params = {
            "method": "flickr.photos.search",
            "api_key": self.secrets[_KEY_VAR],
            "text": query.text,
            "media": "photos",
            "extras": EXTRAS,
            "per_page": str(per_page),
            "page": str(page),
            "format": "json",
            "nojsoncallback": "1",
            **self.params,
        }
        resp = await http.get(
            route(self.endpoint, "/services/rest/"),
            params=params,
            headers={"Accept": "application/json"},
            secrets=tuple(self.secrets.values()),
            record_as=f"{page_no:03d}",
        )
        if resp.status == 429:
            raise rate_limited(self.name, resp)
        if resp.status != 200:
            raise unexpected(self.name, resp, "unexpected status")
        body = _decode(resp)
        if body.get("stat") != "ok":
            raise self._api_error(resp, body)
        photos = body.get("photos")
        items = photos.get("photo") if isinstance(photos, dict) else None
        if not isinstance(photos, dict) or not isinstance(items, list):
            raise unexpected(self.name, resp, "no 'photos.photo' list in the JSON")
        hits = [hit for item in items if (hit := self._hit(item)) is not None]
        total = as_int(photos.get("total"))
        end = offset + len(items)
        reachable = min(total, DEEPEST) if total is not None else DEEPEST
        more = bool(items) and len(items) >= per_page and end < reachable
        return Page(hits=hits, next=end if more else None, total=total)

    @staticmethod
    def _hit(item: Any) -> Hit | None:
        if not isinstance(item, dict):
            return None
        found = next(((s, u) for s in SIZES if (u := as_str(item.get(f"url_{s}"))) is not None), None)
        if found is None:
            return None
        size, url = found
        ident = as_str(str(item.get("id", "")))
        owner = as_str(item.get("pathalias")) or as_str(item.get("owner"))
        lic = LICENSES.get(str(item.get("license", "")).strip())
        declared_type = mime_for(as_str(item.get("originalformat"))) if size == "o" else "image/jpeg"
        return Hit(
            url=url,
            provider_id=ident,
            page_url=f"https://www.flickr.com/photos/{owner}/{ident}" if owner and ident else None,
            license=lic[0] if lic else None,
            license_url=lic[1] if lic else None,
            creator=as_str(item.get("ownername")),
            title=as_str(item.get("title")),
            declared_width=as_int(item.get(f"width_{size}")),
            declared_height=as_int(item.get(f"height_{size}")),
            declared_type=declared_type,
        )

    def _api_error(self, resp: ApiResponse, body: dict[str, Any]) -> ProviderError:
        code = as_int(body.get("code"))
        message = redact(as_str(body.get("message")) or "no message", self.secrets)
        if code == 100:
            return ProviderError(
                f"flickr rejected the API key in {_KEY_VAR}: {message} (Flickr error 100); check "
                f"the key, or whether Flickr has disabled it"
            )
        if code in (105, 201):
            return TransientProviderError(f"flickr is unavailable (error {code}): {message}")
        if code is None:
            return unexpected(self.name, resp, "no 'stat: ok' and no error code")
        return ProviderError(f"flickr error {code}: {message}")
