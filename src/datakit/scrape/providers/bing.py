"""Bing Image Search v7 response format, for compatible endpoints (BING_API_KEY).

Contract: shared/reference/providers.md section 11. Microsoft retired the real API on
2025-08-11, so there is no default endpoint: `--endpoint` (or params) must name a server that
speaks v7. Paging uses `offset = nextOffset` from the previous answer (Bing removes duplicates,
so offset + count would skip or repeat results) and stops on an empty `value`. 401 is a bad
key, 403 an exhausted quota, 429 the per-second limit.
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
    rate_limited,
    redact,
    route,
    unexpected,
)

_KEY_VAR = "BING_API_KEY"
_OPTIONS = ("mkt", "safeSearch", "license", "imageType", "size", "aspect")


def _messages(body: Any) -> str:
    """The messages of a v7 `ErrorResponse` ({"errors": [{"code", "message"}]})."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list):
        parts = []
        for err in errors:
            if isinstance(err, dict):
                code = "/".join(str(err[k]) for k in ("code", "subCode") if err.get(k))
                parts.append(f"{code}: {err.get('message', '')}".strip(": "))
        if parts:
            return "; ".join(parts)
    nested = body.get("error") if isinstance(body, dict) else None  # Azure gateway shape
    if isinstance(nested, dict):
        return f"{nested.get('code', '')}: {nested.get('message', '')}".strip(": ")
    return "no details"


class BingProvider(Provider):
    """A Bing-v7-compatible image search endpoint."""

    name: ClassVar[str] = "bing"
    key_env: ClassVar[tuple[str, ...]] = (_KEY_VAR,)
    default_endpoint: ClassVar[str | None] = None  # the real API was retired on 2025-08-11
    page_size: ClassVar[int] = 150

    def __init__(self, settings: ProviderSettings) -> None:
        if not settings.endpoint:
            raise ParamsError(
                "provider 'bing' needs an endpoint (--endpoint URL or scrape.providers.bing.endpoint): "
                "the Bing Image Search v7 API was retired on 2025-08-11, so datakit only talks to "
                "servers that speak its format"
            )
        super().__init__(settings)
        options = dict(settings.options)
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ParamsError(
                f"scrape.providers.bing: unknown option(s) {unknown}; allowed: {list(_OPTIONS)}"
            )
        self.params = {key: str(value) for key, value in options.items() if value is not None}

    async def _fetch_page(
        self, query: Query, cursor: Any, want: int, page_no: int, http: SearchHttp | None
    ) -> Page:
        if http is None:
            raise ProviderError("bing needs an HTTP client")
        offset = int(cursor or 0)
        params = {
            "q": query.text,
            "count": str(max(1, min(want, self.page_size))),
            "offset": str(offset),
            **self.params,
        }
        resp = await http.get(
            route(self.endpoint, "/v7.0/images/search"),
            params=params,
            headers={"Ocp-Apim-Subscription-Key": self.secrets[_KEY_VAR], "Accept": "application/json"},
            secrets=tuple(self.secrets.values()),
            record_as=f"{page_no:03d}",
        )
        if resp.status != 200:
            raise self._error(resp)
        body = json_object(self.name, resp)
        value = body.get("value")
        if not isinstance(value, list):
            raise unexpected(self.name, resp, "no 'value' list in the JSON")
        hits = [hit for item in value if (hit := self._hit(item)) is not None]
        total = as_int(body.get("totalEstimatedMatches"))
        nxt = as_int(body.get("nextOffset"))
        if nxt is None:
            nxt = offset + len(value)
        more = bool(value) and nxt > offset and (total is None or nxt < total)
        return Page(hits=hits, next=nxt if more else None, total=total)

    @staticmethod
    def _hit(item: Any) -> Hit | None:
        if not isinstance(item, dict):
            return None
        url = as_str(item.get("contentUrl"))
        if url is None:
            return None
        return Hit(
            url=url,
            provider_id=as_str(item.get("imageId")),
            page_url=as_str(item.get("hostPageUrl")),
            title=as_str(item.get("name")),
            declared_width=as_int(item.get("width")),
            declared_height=as_int(item.get("height")),
            declared_type=mime_for(as_str(item.get("encodingFormat"))),
        )

    def _error(self, resp: ApiResponse) -> ProviderError:
        if resp.status == 429:
            return rate_limited(self.name, resp)
        if looks_like_html(resp) or resp.status >= 500:
            return unexpected(self.name, resp, "not an API answer (blocked, or the service is down)")
        detail = redact(_messages(json_body(self.name, resp)), self.secrets)
        if resp.status == 401:
            return ProviderError(
                f"bing rejected the API key in {_KEY_VAR} (HTTP 401): {detail}; check the key set "
                f"in {_KEY_VAR}"
            )
        if resp.status == 403:
            return ProviderError(
                f"bing: the subscription's call quota is exhausted (HTTP 403): {detail}; the hits "
                f"gathered so far are kept"
            )
        if resp.status == 400:
            return ProviderError(f"bing rejected the query (HTTP 400): {detail}")
        return unexpected(self.name, resp, "unexpected status")
