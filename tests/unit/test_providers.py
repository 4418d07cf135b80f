"""The HTTP providers against the loopback provider server (tests/fixtures/servers.py).

Each test runs a provider's public `search()` through a deliberately simple `SearchHttp`
(one aiohttp GET, no retries) and checks what went over the wire and what came back: paging and
caps as the providers' contracts say, zero results, key errors that name the environment
variable and never the key, HTML or broken JSON refused instead of read as "no results", and
licence fields mapped.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from datakit.errors import ParamsError, ProviderError
from datakit.scrape.providers import REGISTRY, get_provider
from datakit.scrape.providers.base import (
    ApiResponse,
    Hit,
    Provider,
    ProviderSettings,
    Query,
    TransientProviderError,
)
from datakit.scrape.providers.flickr import LICENSES
from datakit.scrape.providers.shared import page_window, strip_html
from tests.fixtures.servers import ProviderServer

pytestmark = pytest.mark.timeout(30)

UA = "datakit-tests/0.1 (https://example.org/datakit; datakit@example.org)"
CANARY = "CANARY-KEY-123"
KEY_VARS = {"brave": "BRAVE_API_KEY", "flickr": "FLICKR_API_KEY", "bing": "BING_API_KEY"}
HTTP_PROVIDERS = ("openverse", "wikimedia", "brave", "flickr", "bing")


# ----------------------------------------------------------------------------- a minimal SearchHttp


@dataclass
class Call:
    url: str
    params: dict[str, Any]
    secrets: tuple[str, ...]
    record_as: str | None


@dataclass
class LoopbackHttp:
    """The SearchHttp protocol in its simplest form: one GET, no retries, loopback only.

    `override` rewrites request parameters (None deletes one) so tests can reach response
    shapes the provider never asks for itself (formatversion=1, JSONP).
    """

    session: aiohttp.ClientSession
    override: dict[str, str | None] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    async def get(
        self,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        secrets: tuple[str, ...] = (),
        record_as: str | None = None,
    ) -> ApiResponse:
        host = urlsplit(url).hostname or ""
        assert ipaddress.ip_address(host).is_loopback, f"test tried to leave loopback: {url}"
        query = {k: v for k, v in (params or {}).items()}
        for key, value in self.override.items():
            if value is None:
                query.pop(key, None)
            else:
                query[key] = value
        self.calls.append(Call(url, dict(query), secrets, record_as))
        async with self.session.get(url, params=query, headers=headers, allow_redirects=False) as resp:
            body = await resp.read()
            shown = str(resp.url)
            for secret in secrets:
                shown = shown.replace(secret, "***")
            return ApiResponse(resp.status, dict(resp.headers), body, shown)


def search(
    provider: Provider,
    text: str,
    n: int,
    override: dict[str, str | None] | None = None,
    calls: list[Call] | None = None,
) -> tuple[list[Hit], LoopbackHttp]:
    """Run `provider.search` on its own event loop; return the hits and the client used.
    `calls`, when given, collects the client's calls even if the search raises."""

    async def main() -> tuple[list[Hit], LoopbackHttp]:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            http = LoopbackHttp(session, override or {}, calls if calls is not None else [])
            hits = await provider.search(Query(text=text, label=text), n, http)
            return hits, http

    return asyncio.run(main())


def make(name: str, server: ProviderServer, **options: Any) -> Provider:
    settings = ProviderSettings(endpoint=server.base_url, options=options, user_agent=UA)
    return get_provider(name)(settings)


def fetch_json(url: str, headers: dict[str, str] | None = None) -> Any:
    assert url.startswith("http://127."), url
    request = urllib.request.Request(url, headers={"User-Agent": UA, **(headers or {})})  # noqa: S310
    with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - loopback http only
        return json.loads(resp.read())


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch, provider_server: ProviderServer) -> ProviderServer:
    """Put the server's accepted keys into the environment variables the providers read."""
    for name, var in KEY_VARS.items():
        monkeypatch.setenv(var, provider_server.providers[name].key or "")
    return provider_server


def ranks(hits: list[Hit]) -> list[int]:
    """The catalogue rank encoded in each generated image name (…-0007.jpg -> 7)."""
    return [int(h.url.rsplit("-", 1)[1].split(".")[0].split("_")[0]) for h in hits]


# ----------------------------------------------------------------------------- registry


def test_registry_holds_the_five_http_providers() -> None:
    for name in HTTP_PROVIDERS:
        assert get_provider(name) is REGISTRY[name]
        assert REGISTRY[name].name == name
    assert all(cls.name == name for name, cls in REGISTRY.items())


def test_unknown_provider_lists_the_allowed_names() -> None:
    with pytest.raises(ParamsError) as err:
        get_provider("altavista")
    for name in HTTP_PROVIDERS:
        assert name in str(err.value)


@pytest.mark.parametrize("name", sorted(KEY_VARS))
def test_missing_key_names_the_variable(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_VARS[name], raising=False)
    settings = ProviderSettings(endpoint="http://127.0.0.1:9")
    with pytest.raises(ParamsError, match=KEY_VARS[name]):
        get_provider(name)(settings)


@pytest.mark.parametrize("name", HTTP_PROVIDERS)
def test_unknown_option_is_refused(name: str, keys: ProviderServer) -> None:
    with pytest.raises(ParamsError, match="no_such_option"):
        make(name, keys, no_such_option=1)


# ----------------------------------------------------------------------------- pure helpers


@given(
    full_pages=st.integers(min_value=0, max_value=11),
    want=st.integers(min_value=1, max_value=300),
)
def test_page_window_starts_exactly_at_the_offset(full_pages: int, want: int) -> None:
    offset = full_pages * 20
    page, size = page_window(offset, want, 20, 20)
    assert (page - 1) * size == offset
    assert 1 <= size <= 20 and 1 <= page <= 20
    assert size >= min(want, 20)


def test_strip_html_keeps_the_text_only() -> None:
    html = '<a href="//commons.wikimedia.org/wiki/User:X" title="User:X">Jane &amp; <b>Co</b></a>\n'
    assert strip_html(html) == "Jane & Co"
    assert strip_html("<span></span>") is None


# ----------------------------------------------------------------------------- Openverse


def test_openverse_fifty_results_take_three_pages(provider_server: ProviderServer) -> None:
    provider_server.configure("openverse", total=100)
    hits, http = search(make("openverse", provider_server), "red shirt", 50)

    assert [h.rank for h in hits] == list(range(1, 51))
    assert ranks(hits) == list(range(1, 51))
    sent = [(r.query["page"], r.query["page_size"]) for r in provider_server.requests("/v1/images/")]
    # 20 + 20 + 10: the last page is page 5 of size 10, i.e. results 41..50 (page 3 of size 10
    # would be results 21..30 again)
    assert sent == [("1", "20"), ("2", "20"), ("5", "10")]
    first = provider_server.requests("/v1/images/")[0]
    assert first.query["license_type"] == "commercial,modification"
    assert first.query["mature"] == "false"
    assert first.header("Authorization") is None
    assert [c.record_as for c in http.calls] == ["001", "002", "003"]


def test_openverse_stops_at_240(provider_server: ProviderServer) -> None:
    provider_server.configure("openverse", total=5000)
    hits, _ = search(make("openverse", provider_server), "sky", 1000)

    assert len(hits) == 240
    logged = provider_server.requests("/v1/images/")
    assert len(logged) == 12
    assert all(r.query["page_size"] == "20" and r.status == 200 for r in logged)
    assert max(int(r.query["page"]) for r in logged) == 12


def test_openverse_short_catalogue_ends_on_the_short_page(provider_server: ProviderServer) -> None:
    provider_server.configure("openverse", total=45)
    hits, _ = search(make("openverse", provider_server), "moss", 100)
    assert ranks(hits) == list(range(1, 46))
    assert len(provider_server.requests("/v1/images/")) == 3


def test_openverse_full_last_page_ends_without_another_request(provider_server: ProviderServer) -> None:
    provider_server.configure("openverse", total=40)  # page 3 would be a 400 past page_count
    hits, _ = search(make("openverse", provider_server), "moss", 100)
    assert len(hits) == 40
    assert len(provider_server.requests("/v1/images/")) == 2


def test_openverse_zero_results(provider_server: ProviderServer) -> None:
    provider_server.configure("openverse", zero={"nothing at all"})
    hits, _ = search(make("openverse", provider_server), "nothing at all", 50)
    assert hits == []
    assert len(provider_server.requests("/v1/images/")) == 1


def test_openverse_licence_and_metadata_fields(provider_server: ProviderServer) -> None:
    hits, _ = search(make("openverse", provider_server), "blue tee", 20)
    raw = fetch_json(provider_server.url("/v1/images/?q=blue+tee&page=1&page_size=20"
                                         "&license_type=commercial,modification"))["results"]
    assert len(hits) == len(raw) == 20
    names = {"by": "CC BY", "by-sa": "CC BY-SA", "cc0": "CC0", "pdm": "Public Domain Mark"}
    for hit, item in zip(hits, raw, strict=True):
        assert hit.provider_id == item["id"]
        assert hit.url == item["url"]
        assert hit.page_url == item["foreign_landing_url"]
        assert hit.license == f"{names[item['license']]} {item['license_version']}"
        assert hit.license_url == item["license_url"]
        assert hit.creator == item["creator"]
        assert hit.title == item["title"]
        assert hit.declared_width == item["width"]
        assert hit.declared_type == ("image/jpeg" if item["filetype"] == "jpg" else None)
    assert any(h.declared_width is None for h in hits)  # the contract allows null sizes
    assert any(h.creator is None for h in hits)


def test_openverse_options_reach_the_request(provider_server: ProviderServer) -> None:
    provider = make("openverse", provider_server, license_type="all-cc", mature=True,
                    extension=["jpg", "png"])
    search(provider, "cat", 5)
    sent = provider_server.requests("/v1/images/")[0].query
    assert (sent["license_type"], sent["mature"], sent["extension"]) == ("all-cc", "true", "jpg,png")


def test_openverse_bad_licence_code_is_a_provider_error(provider_server: ProviderServer) -> None:
    with pytest.raises(ProviderError, match="License 'xyz' does not exist"):
        search(make("openverse", provider_server, license="by,xyz"), "cat", 5)


def test_openverse_throttled_is_rate_limited(provider_server: ProviderServer) -> None:
    provider_server.set_mode("openverse", "throttle", retry_after=7)
    with pytest.raises(ProviderError, match="rate limited") as err:
        search(make("openverse", provider_server), "cat", 5)
    assert "7" in str(err.value)


# ----------------------------------------------------------------------------- Wikimedia


def test_wikimedia_one_request_of_fifty_sorted_by_index(provider_server: ProviderServer) -> None:
    provider_server.configure("wikimedia", total=200)
    hits, _ = search(make("wikimedia", provider_server), "striped shirt", 50)

    logged = provider_server.requests("/w/api.php")
    assert len(logged) == 1
    q = logged[0].query
    assert q["gsrlimit"] == "50"
    assert q["gsrsearch"] == "striped shirt filetype:bitmap"
    assert (q["gsrnamespace"], q["formatversion"], q["maxlag"], q["generator"]) == ("6", "2", "5", "search")
    assert logged[0].header("User-Agent") == UA
    # the server hands pages out scrambled; the provider restores rank order from `index`
    raw = fetch_json(provider_server.url("/w/api.php?action=query&format=json&formatversion=2"
                                         "&generator=search&gsrsearch=striped+shirt&gsrnamespace=6"
                                         "&gsrlimit=50&prop=imageinfo&iiprop=url"))
    assert [p["index"] for p in raw["query"]["pages"]] != list(range(1, 51))
    assert ranks(hits) == list(range(1, 51))


def test_wikimedia_follows_continue(provider_server: ProviderServer) -> None:
    provider_server.configure("wikimedia", total=120)
    hits, _ = search(make("wikimedia", provider_server), "boat", 500)

    assert ranks(hits) == list(range(1, 121))
    logged = provider_server.requests("/w/api.php")
    assert [r.query.get("gsroffset") for r in logged] == [None, "50", "100"]
    assert all(r.query.get("continue") == "gsroffset||" for r in logged[1:])


def test_wikimedia_zero_results_have_no_query_key(provider_server: ProviderServer) -> None:
    provider_server.configure("wikimedia", zero={"qqqzzz"})
    hits, _ = search(make("wikimedia", provider_server), "qqqzzz", 10)
    assert hits == []


def test_wikimedia_licence_and_artist(provider_server: ProviderServer) -> None:
    hits, _ = search(make("wikimedia", provider_server), "harbour", 8)
    assert hits[0].creator == "Example & Co 1"  # <a …>Example &amp; Co 1</a>
    assert hits[0].license == "CC BY-SA 4.0"
    assert hits[0].license_url == "https://creativecommons.org/licenses/by-sa/4.0"
    assert hits[3].license == "Public domain" and hits[3].license_url is None
    assert hits[0].page_url and "/wiki/File:Harbour_1.jpg" in hits[0].page_url
    assert hits[0].declared_type == "image/jpeg"
    assert hits[0].title == "harbour 1"
    assert hits[0].provider_id and hits[0].provider_id.isdigit()


def test_wikimedia_formatversion_1_is_read_too(provider_server: ProviderServer) -> None:
    provider_server.configure("wikimedia", total=30)
    hits, _ = search(make("wikimedia", provider_server), "tree", 30, override={"formatversion": "1"})
    assert provider_server.requests("/w/api.php")[0].query["formatversion"] == "1"
    assert ranks(hits) == list(range(1, 31))


def test_wikimedia_files_without_imageinfo_are_skipped(provider_server: ProviderServer) -> None:
    provider_server.configure("wikimedia", total=10, options={"no_imageinfo": {3}})
    hits, _ = search(make("wikimedia", provider_server), "lamp", 10)
    assert ranks(hits) == [1, 2, 4, 5, 6, 7, 8, 9, 10]


def test_wikimedia_generic_user_agent_is_explained(provider_server: ProviderServer) -> None:
    provider = get_provider("wikimedia")(
        ProviderSettings(endpoint=provider_server.base_url, user_agent="python-requests/2.32")
    )
    with pytest.raises(ProviderError, match="User-Agent") as err:
        search(provider, "cat", 5)
    assert "403" in str(err.value)


def test_wikimedia_maxlag_is_transient_with_retry_after(provider_server: ProviderServer) -> None:
    provider_server.set_mode("wikimedia", "maxlag", retry_after=3)
    with pytest.raises(TransientProviderError) as err:
        search(make("wikimedia", provider_server), "cat", 5)
    assert err.value.retry_after == 3


def test_wikimedia_429_is_rate_limited(provider_server: ProviderServer) -> None:
    provider_server.set_mode("wikimedia", "throttle")
    with pytest.raises(ProviderError, match="rate limited"):
        search(make("wikimedia", provider_server), "cat", 5)


# ----------------------------------------------------------------------------- Brave


def test_brave_one_request(keys: ProviderServer) -> None:
    keys.configure("brave", total=300)
    hits, http = search(make("brave", keys), "striped t-shirt", 50)

    logged = keys.requests("/res/v1/images/search")
    assert len(logged) == 1
    assert logged[0].query["count"] == "50"
    assert logged[0].query["safesearch"] == "strict"
    assert logged[0].header("X-Subscription-Token") == keys.providers["brave"].key
    assert ranks(hits) == list(range(1, 51))
    assert all(h.license is None for h in hits)  # Brave gives no licence data
    assert [h.declared_width is None for h in hits[:4]] == [False, False, False, True]
    assert http.calls[0].secrets == (keys.providers["brave"].key,)


def test_brave_caps_at_200_in_one_request(keys: ProviderServer) -> None:
    keys.configure("brave", total=1000)
    hits, _ = search(make("brave", keys), "jeans", 1000)
    assert len(hits) == 200
    logged = keys.requests("/res/v1/images/search")
    assert [r.query["count"] for r in logged] == ["200"]


def test_brave_zero_results(keys: ProviderServer) -> None:
    keys.configure("brave", zero={"zzz"})
    assert search(make("brave", keys), "zzz", 10)[0] == []


def test_brave_monthly_quota(keys: ProviderServer) -> None:
    keys.set_mode("brave", "quota")
    with pytest.raises(ProviderError, match="quota"):
        search(make("brave", keys), "cat", 10)


def test_brave_rate_limited(keys: ProviderServer) -> None:
    keys.set_mode("brave", "throttle")
    with pytest.raises(ProviderError, match="rate limited"):
        search(make("brave", keys), "cat", 10)


# ----------------------------------------------------------------------------- Flickr


def test_flickr_json_request_and_fields(keys: ProviderServer) -> None:
    keys.configure("flickr", total=18234)
    hits, _ = search(make("flickr", keys), "striped tee", 50)

    logged = keys.requests("/services/rest/")
    assert len(logged) == 1
    q = logged[0].query
    assert (q["format"], q["nojsoncallback"], q["method"]) == ("json", "1", "flickr.photos.search")
    assert q["license"] == "4,5,9,10,11,12"
    assert (q["per_page"], q["page"]) == ("50", "1")
    assert len(hits) == 50
    allowed = {LICENSES[i][0] for i in ("4", "5", "9", "10", "11", "12")}
    assert {h.license for h in hits} == allowed
    assert all(h.license_url for h in hits)
    # url_o -> url_k -> url_h -> url_l -> url_c -> url_z, by what each photo has
    assert [h.url.rsplit("_", 1)[1] for h in hits[:4]] == ["o.png", "k.jpg", "l.jpg", "z.jpg"]
    assert hits[0].declared_type == "image/png" and hits[1].declared_type == "image/jpeg"
    assert hits[4].declared_width is not None  # rank 5 carries its sizes as strings
    # page link: path alias when there is one, else the owner id
    assert hits[1].page_url == f"https://www.flickr.com/photos/user2/{hits[1].provider_id}"
    assert hits[0].page_url and "@N0" in hits[0].page_url
    assert hits[0].creator == "Owner 1"


def test_flickr_stops_at_4000(keys: ProviderServer) -> None:
    keys.configure("flickr", total=10000)
    hits, _ = search(make("flickr", keys), "dog", 6000)
    assert len(hits) == 4000
    assert len({h.provider_id for h in hits}) == 4000
    logged = keys.requests("/services/rest/")
    assert [r.query["page"] for r in logged] == [str(p) for p in range(1, 9)]
    assert all(r.query["per_page"] == "500" for r in logged)


def test_flickr_full_last_page_ends_without_another_request(keys: ProviderServer) -> None:
    keys.configure("flickr", total=1000)
    hits, _ = search(make("flickr", keys), "dog", 3000)
    assert len(hits) == 1000
    assert [r.query["page"] for r in keys.requests("/services/rest/")] == ["1", "2"]


def test_flickr_reads_jsonp_when_the_server_wraps_it(keys: ProviderServer) -> None:
    hits, _ = search(make("flickr", keys), "cat", 10, override={"nojsoncallback": None})
    assert "nojsoncallback" not in keys.requests("/services/rest/")[0].query
    assert len(hits) == 10


def test_flickr_zero_results(keys: ProviderServer) -> None:
    keys.configure("flickr", zero={"zzz"})
    assert search(make("flickr", keys), "zzz", 10)[0] == []


@pytest.mark.parametrize("code", [105, 201])
def test_flickr_unavailable_is_transient(keys: ProviderServer, code: int) -> None:
    keys.set_mode("flickr", "unavailable", code=code)
    with pytest.raises(TransientProviderError, match=str(code)):
        search(make("flickr", keys), "cat", 10)


# ----------------------------------------------------------------------------- Bing v7


def test_bing_pages_with_next_offset(keys: ProviderServer) -> None:
    keys.configure("bing", total=400)
    hits, _ = search(make("bing", keys), "t-shirt", 300)

    logged = keys.requests("/v7.0/images/search")
    first = fetch_json(keys.url("/v7.0/images/search?q=t-shirt&count=150&offset=0"),
                       {"Ocp-Apim-Subscription-Key": keys.providers["bing"].key or ""})
    assert first["nextOffset"] != 150  # Bing skips duplicates: offset+count would be wrong
    assert [r.query["offset"] for r in logged] == ["0", str(first["nextOffset"])]
    assert logged[0].query["count"] == "150"
    assert len(hits) == 300
    assert ranks(hits)[150] == first["nextOffset"] + 1
    assert hits[0].declared_type == "image/jpeg" and hits[0].provider_id


def test_bing_stops_on_empty_value(keys: ProviderServer) -> None:
    keys.configure("bing", total=40)
    hits, _ = search(make("bing", keys), "hat", 100)
    assert len(hits) == 40
    assert len(keys.requests("/v7.0/images/search")) == 1  # nextOffset past totalEstimatedMatches

    # a server whose estimate is too high: the provider asks again and stops on `value: []`
    keys.reset_stats()
    keys.configure("bing", options={"estimated_total": 1000})
    hits, _ = search(make("bing", keys), "hat", 100)
    assert len(hits) == 40
    assert len(keys.requests("/v7.0/images/search")) == 2


def test_bing_needs_an_endpoint(keys: ProviderServer) -> None:
    with pytest.raises(ParamsError, match="endpoint"):
        get_provider("bing")(ProviderSettings())


def test_bing_quota_exhausted(keys: ProviderServer) -> None:
    keys.set_mode("bing", "quota")
    with pytest.raises(ProviderError, match="quota"):
        search(make("bing", keys), "cat", 10)


def test_bing_rate_limited(keys: ProviderServer) -> None:
    keys.set_mode("bing", "throttle")
    with pytest.raises(ProviderError, match="rate limited"):
        search(make("bing", keys), "cat", 10)


# ----------------------------------------------------------------------------- across providers


@pytest.mark.parametrize("name", sorted(KEY_VARS))
def test_bad_key_names_the_variable_and_never_the_key(
    name: str, keys: ProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_VARS[name], CANARY)
    calls: list[Call] = []
    with pytest.raises(ProviderError) as err:
        search(make(name, keys), "cat", 10, calls=calls)
    message = str(err.value)
    assert KEY_VARS[name] in message
    assert CANARY not in message
    # the canary really was sent (so the check above means something) and was marked secret
    sent = keys.log[-1]
    assert CANARY in (sent.raw_query + " " + " ".join(sent.headers.values()))
    assert calls and all(CANARY in call.secrets and CANARY not in call.url for call in calls)


@pytest.mark.parametrize("mode", ["html", "captcha", "broken_json", "wrong_json", "empty", "server_error"])
@pytest.mark.parametrize("name", HTTP_PROVIDERS)
def test_garbage_is_an_error_never_zero_results(name: str, mode: str, keys: ProviderServer) -> None:
    keys.set_mode(name, mode)
    with pytest.raises(ProviderError, match="unexpected response"):
        search(make(name, keys), "cat", 10)


@pytest.mark.parametrize("name", HTTP_PROVIDERS)
def test_every_hit_points_at_the_server_and_ranks_from_one(name: str, keys: ProviderServer) -> None:
    hits, _ = search(make(name, keys), "mug", 7)
    assert [h.rank for h in hits] == list(range(1, 8))
    assert all(h.url.startswith(keys.base_url + "/img/") for h in hits)
    assert all(h.query == Query(text="mug", label="mug") for h in hits)


@pytest.mark.parametrize("name", HTTP_PROVIDERS)
def test_overrides_put_hostile_urls_in_results(name: str, keys: ProviderServer) -> None:
    keys.configure(name, overrides={2: "/status/404/x.jpg"})
    hits, _ = search(make(name, keys), "mug", 3)
    assert hits[1].url == keys.url("/status/404/x.jpg")
