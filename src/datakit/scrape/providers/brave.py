"""Brave Search image search: web-scale results behind a subscription key (BRAVE_API_KEY).

Contract: shared/reference/providers.md section 4. One request returns at most 200 results and
there is no offset, so a query is a single call. Results carry no licence information. A bad
key is a 422 `SUBSCRIPTION_TOKEN_INVALID` (not 401); a 403 from this host is an edge block.
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
    header,
    json_body,
    json_object,
    looks_like_html,
    rate_limited,
    redact,
    route,
    unexpected,
)

_OPTIONS = ("safesearch", "country", "search_lang", "spellcheck")
_KEY_VAR = "BRAVE_API_KEY"


class BraveProvider(Provider):
    """Brave image search: one request of up to 200 results, no licence data."""

    name: ClassVar[str] = "brave"
    key_env: ClassVar[tuple[str, ...]] = (_KEY_VAR,)
    default_endpoint: ClassVar[str | None] = "https://api.search.brave.com"
    max_results: ClassVar[int | None] = 200
    page_size: ClassVar[int] = 200

    def __init__(self, settings: ProviderSettings) -> None:
        super().__init__(settings)
        options = dict(settings.options)
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ParamsError(
                f"scrape.providers.brave: unknown option(s) {unknown}; allowed: {list(_OPTIONS)}"
            )
        safesearch = options.get("safesearch", "strict")
        if safesearch not in ("off", "strict"):
            raise ParamsError(
                f"scrape.providers.brave.safesearch must be 'off' or 'strict', got {safesearch!r}"
            )
        self.params: dict[str, str] = {"safesearch": safesearch}
        for key in ("country", "search_lang"):
            if options.get(key) is not None:
                self.params[key] = str(options[key])
        if "spellcheck" in options:
            self.params["spellcheck"] = "true" if options["spellcheck"] else "false"

    async def _fetch_page(
        self, query: Query, cursor: Any, want: int, page_no: int, http: SearchHttp | None
    ) -> Page:
        if http is None:
            raise ProviderError("brave needs an HTTP client")
        params = {"q": query.text, "count": str(max(1, min(want, self.page_size))), **self.params}
        resp = await http.get(
            route(self.endpoint, "/res/v1/images/search"),
            params=params,
            headers={"X-Subscription-Token": self.secrets[_KEY_VAR], "Accept": "application/json"},
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
        return Page(hits=hits, next=None, total=len(results))

    @staticmethod
    def _hit(item: Any) -> Hit | None:
        if not isinstance(item, dict):
            return None
        props = item.get("properties")
        props = props if isinstance(props, dict) else {}
        url = as_str(props.get("url"))
        if url is None:
            return None
        return Hit(
            url=url,
            page_url=as_str(item.get("url")),
            title=as_str(item.get("title")),
            declared_width=as_int(props.get("width")),
            declared_height=as_int(props.get("height")),
        )

    def _error(self, resp: ApiResponse) -> ProviderError:
        if looks_like_html(resp):
            why = "an HTML page (edge/WAF block, not a key problem)" if resp.status == 403 else "an HTML page"
            return unexpected(self.name, resp, why)
        if resp.status >= 500:
            return unexpected(self.name, resp, "server error")
        body = json_body(self.name, resp)
        err = body.get("error") if isinstance(body, dict) else None
        err = err if isinstance(err, dict) else {}
        code = as_str(err.get("code")) or ""
        detail = redact(as_str(err.get("detail")) or "", self.secrets)
        if code == "SUBSCRIPTION_TOKEN_INVALID" or resp.status == 401:
            return ProviderError(
                f"brave rejected the API key in {_KEY_VAR} (HTTP {resp.status} {code or 'unauthorized'}): "
                f"{detail or 'invalid subscription token'}; check the key set in {_KEY_VAR}"
            )
        if resp.status == 429:
            remaining = header(resp, "X-RateLimit-Remaining") or ""
            windows = [as_int(part) for part in remaining.split(",")]
            if len(windows) >= 2 and windows[-1] == 0:
                return ProviderError(
                    f"brave: the plan's monthly quota is exhausted (HTTP 429 {code}, "
                    f"X-RateLimit-Remaining: {remaining}); the hits gathered so far are kept"
                )
            return rate_limited(self.name, resp, f"{code} {detail}".strip())
        if resp.status == 422:
            problems = err.get("meta", {}).get("errors") if isinstance(err.get("meta"), dict) else None
            extra = ""
            if isinstance(problems, list):
                extra = "; ".join(
                    f"{'.'.join(map(str, p.get('loc', [])))}: {p.get('msg', '')}"
                    for p in problems
                    if isinstance(p, dict)
                )
            return ProviderError(
                f"brave rejected the query (HTTP 422 {code or 'VALIDATION'}): "
                f"{detail}{' (' + extra + ')' if extra else ''}"
            )
        return unexpected(self.name, resp, f"unexpected status {code}".strip())
