"""Openverse (`GET /v1/images/`): the zero-setup default; anonymous, 20 per page, 240 deep.

Contract: shared/reference/providers.md section 2. Anonymous callers may ask for at most 20
results per page (more is a 401), `page` runs 1..20 and no query reaches past result 240.
Pages are numbered, so a short last page is fetched with a page size that divides the offset
(50 results = pages of 20, 20 and then page 3 of size 10).
"""

from __future__ import annotations

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
)
from datakit.scrape.providers.shared import (
    as_int,
    as_str,
    json_body,
    json_object,
    looks_like_html,
    mime_for,
    page_window,
    rate_limited,
    route,
    unexpected,
)

_OPTIONS = ("license_type", "license", "mature", "extension", "source")


def license_name(code: str | None, version: str | None) -> str | None:
    """Openverse's lower-case code and version as a readable name ("by-sa", "2.0" -> "CC BY-SA 2.0")."""
    if not code:
        return None
    code = code.strip().lower()
    version = (version or "").strip()
    if code == "cc0":
        name = "CC0"
    elif code == "pdm":
        name = "Public Domain Mark"
    elif code.endswith("sampling+"):
        name = "CC " + code.replace("nc-", "NC-").replace("sampling+", "Sampling+")
    else:
        name = "CC " + code.upper()
    return f"{name} {version}" if version else name


def _detail(body: Any) -> str:
    """Openverse's error detail, flattened: {"detail": {"license": ["..."]}} -> "license: ..."."""
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, dict):
        parts = []
        for key, value in detail.items():
            text = "; ".join(map(str, value)) if isinstance(value, list) else str(value)
            parts.append(f"{key}: {text}")
        return ", ".join(parts)
    return str(detail)


class OpenverseProvider(Provider):
    """Search Openverse anonymously; every hit carries its CC licence, creator and landing page."""

    name: ClassVar[str] = "openverse"
    default_endpoint: ClassVar[str | None] = "https://api.openverse.org"
    max_results: ClassVar[int | None] = 240
    page_size: ClassVar[int] = 20
    max_page: ClassVar[int] = 20

    def __init__(self, settings: ProviderSettings) -> None:
        super().__init__(settings)
        options = dict(settings.options)
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ParamsError(
                f"scrape.providers.openverse: unknown option(s) {unknown}; allowed: {list(_OPTIONS)}"
            )
        mature = options.get("mature", False)
        if not isinstance(mature, bool):
            raise ParamsError(f"scrape.providers.openverse.mature must be true or false, got {mature!r}")
        self.params: dict[str, str] = {
            "license_type": self._csv(options.get("license_type", "commercial,modification"), "license_type"),
            "mature": "true" if mature else "false",
        }
        for key in ("license", "extension", "source"):
            if options.get(key) is not None:
                self.params[key] = self._csv(options[key], key)
        if not self.params["license_type"]:
            del self.params["license_type"]

    @staticmethod
    def _csv(value: Any, key: str) -> str:
        if isinstance(value, str):
            return ",".join(p.strip().lower() for p in value.split(",") if p.strip())
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return ",".join(v.strip().lower() for v in value if v.strip())
        raise ParamsError(
            f"scrape.providers.openverse.{key} must be a comma list or a list of strings, got {value!r}"
        )

    async def _fetch_page(
        self, query: Query, cursor: Any, want: int, page_no: int, http: SearchHttp | None
    ) -> Page:
        if http is None:
            raise ProviderError("openverse needs an HTTP client")
        offset = int(cursor or 0)
        page, size = page_window(offset, want, self.page_size, self.max_page)
        params = {"q": query.text, "page": str(page), "page_size": str(size), **self.params}
        resp = await http.get(
            route(self.endpoint, "/v1/images/"),
            params=params,
            headers={"Accept": "application/json"},
            secrets=tuple(self.secrets.values()),
            record_as=f"{page_no:03d}",
        )
        if resp.status != 200:
            raise self._error(resp)
        body = json_object(self.name, resp)
        results = body.get("results")
        if not isinstance(results, list):
            raise unexpected(self.name, resp, "no 'results' list in the JSON")
        hits = [hit for item in results if (hit := self._hit(item)) is not None]
        total = as_int(body.get("result_count"))
        end = offset + len(results)
        reachable = min(total, self.max_results or total) if total is not None else self.max_results
        more = bool(results) and len(results) >= size and (reachable is None or end < reachable)
        return Page(hits=hits, next=end if more else None, total=total)

    def _hit(self, item: Any) -> Hit | None:
        if not isinstance(item, dict):
            return None
        url = as_str(item.get("url"))
        if url is None:
            return None
        code = as_str(item.get("license"))
        return Hit(
            url=url,
            provider_id=as_str(item.get("id")),
            page_url=as_str(item.get("foreign_landing_url")),
            license=license_name(code, as_str(item.get("license_version"))),
            license_url=as_str(item.get("license_url")),
            creator=as_str(item.get("creator")),
            title=as_str(item.get("title")),
            declared_width=as_int(item.get("width")),
            declared_height=as_int(item.get("height")),
            declared_type=mime_for(as_str(item.get("filetype"))),
        )

    def _error(self, resp: ApiResponse) -> ProviderError:
        if resp.status == 429:
            detail = ""
            if not looks_like_html(resp):
                try:
                    detail = _detail(resp.json())
                except ProviderError:
                    detail = ""
            return rate_limited(self.name, resp, detail)
        if looks_like_html(resp) or resp.status >= 500:
            return unexpected(self.name, resp, "not an API answer (blocked, or the service is down)")
        body = json_body(self.name, resp)
        if resp.status == 401:
            return ProviderError(
                f"openverse refused the request (HTTP 401): {_detail(body)} "
                f"(anonymous requests may ask for at most 20 results per page)"
            )
        if resp.status == 400:
            return ProviderError(f"openverse rejected the query (HTTP 400): {_detail(body)}")
        return unexpected(self.name, resp, "unexpected status")
