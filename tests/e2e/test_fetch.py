"""The downloader against hostile loopback servers (reliability.md 2.1, 2.2, 2.4)."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import aiohttp
import pytest

from datakit.params import FetchParams
from datakit.scrape.fetch import Fetcher, FetchFailed, parse_retry_after, robots_optout
from datakit.scrape.policy import AddressPolicy

pytestmark = pytest.mark.timeout(60)
UA = "datakit-test/0 (+http://127.0.0.1/)"


def fp(**kw: Any) -> FetchParams:
    base = dict(allow_private=True, deadline_s=10, retries=2, backoff_base_s=0.01, backoff_cap_s=0.05,
                concurrency=16, per_host=8, connect_timeout_s=3, read_timeout_s=5)
    base.update(kw)
    return FetchParams(**base)


async def _fetch_all(urls: list[str], params: FetchParams, **kw: Any) -> list[Any]:
    async with Fetcher(params, user_agent=UA, **kw) as f:
        async def one(u: str) -> Any:
            try:
                return await f.fetch(u)
            except FetchFailed as exc:
                return exc
        return await asyncio.gather(*(one(u) for u in urls))


def fetch(url: str, params: FetchParams | None = None, **kw: Any) -> Any:
    return asyncio.run(_fetch_all([url], params or fp(), **kw))[0]


def reason(result: Any) -> str:
    return result.reason if isinstance(result, FetchFailed) else "ok"


def test_plain_image(provider_server) -> None:
    r = fetch(provider_server.image_url("a-1.jpg"))
    assert reason(r) == "ok" and r.data[:3] == b"\xff\xd8\xff" and r.attempts == 1
    assert provider_server.log[0].header("User-Agent") == UA


def test_trickle_body_stopped_by_wall_clock_deadline(provider_server) -> None:  # NET-04
    t0 = time.monotonic()
    r = fetch(provider_server.url("/trickle/a.jpg?interval=0.2"), fp(deadline_s=1.5, read_timeout_s=5))
    elapsed = time.monotonic() - t0
    assert reason(r) == "timeout"
    assert elapsed < 1.5 + 1.0


def test_headers_never_sent(provider_server) -> None:  # NET-03
    assert reason(fetch(provider_server.url("/hang/a.jpg"), fp(deadline_s=1, read_timeout_s=0.5))) == "timeout"


def test_pool_wait_does_not_count_toward_deadline(provider_server) -> None:  # NET-14
    urls = [provider_server.url(f"/slow/400/p-{i}.jpg") for i in range(12)]
    t0 = time.monotonic()
    results = asyncio.run(_fetch_all(urls, fp(concurrency=2, per_host=2, deadline_s=1.0)))
    assert [reason(r) for r in results] == ["ok"] * 12
    assert time.monotonic() - t0 >= 12 / 2 * 0.4 * 0.9  # really queued behind 2 slots


def test_concurrency_caps_hold(provider_server) -> None:  # CON-05
    urls = [provider_server.url(f"/slow/150/c-{i}.jpg") for i in range(24)]
    results = asyncio.run(_fetch_all(urls, fp(concurrency=16, per_host=3)))
    assert all(reason(r) == "ok" for r in results)
    assert provider_server.peak_in_flight <= 3


def test_reset_mid_body_retried_then_skipped(provider_server) -> None:  # NET-05
    r = fetch(provider_server.url("/reset/a.jpg"))
    assert reason(r) in ("payload_error", "incomplete", "connect_error")
    assert r.attempts == 3


def test_short_body_is_incomplete(provider_server) -> None:  # NET-06
    r = fetch(provider_server.url("/short/a.jpg"))
    assert reason(r) == "incomplete" and r.attempts == 3


def test_early_close_without_length_returns_bytes_for_the_validator(provider_server) -> None:  # NET-07
    from datakit.images import ImageRejected, check_bytes

    r = fetch(provider_server.url("/halfclose/a.jpg"))
    assert reason(r) == "ok"
    with pytest.raises(ImageRejected) as info:
        check_bytes(r.data)
    assert info.value.reason in ("truncated", "decode_error")


def test_transient_503_retried(provider_server) -> None:  # NET-10
    r = fetch(provider_server.url("/flaky/2/a.jpg"))
    assert reason(r) == "ok" and r.attempts == 3


@pytest.mark.parametrize("code", [403, 404, 410, 451])
def test_final_4xx_exactly_one_request(provider_server, code: int) -> None:  # NET-11
    r = fetch(provider_server.url(f"/status/{code}/a.jpg"))
    assert reason(r) == f"http_{code}" and r.attempts == 1
    assert len(provider_server.requests(f"/status/{code}/")) == 1


def test_retry_after_honoured(provider_server) -> None:  # NET-12
    t0 = time.monotonic()
    r = fetch(provider_server.url("/ratelimit/seconds/a.jpg?fails=1&after=1"))
    assert reason(r) == "ok" and r.attempts == 2
    assert time.monotonic() - t0 >= 0.9


def test_huge_retry_after_skips_instead_of_sleeping(provider_server) -> None:  # NET-12
    t0 = time.monotonic()
    r = fetch(provider_server.url("/ratelimit/huge/a.jpg"), fp(retry_after_cap_s=5))
    assert reason(r) == "rate_limited"
    assert time.monotonic() - t0 < 3


@pytest.mark.parametrize("value,expected", [
    ("120", 120.0), ("0", 0.0), ("garbage", None), ("", None), (None, None), ("-5", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("1" * 30, 1e9),
])
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_rate_limit_is_per_host(provider_server, public_server) -> None:  # NET-13
    slow = [provider_server.url(f"/ratelimit/seconds/s-{i}.jpg?fails=1&after=2") for i in range(3)]
    fast = [public_server.image_url(f"f-{i}.jpg") for i in range(10)]

    async def go() -> tuple[float, list[Any]]:
        async with Fetcher(fp(), user_agent=UA) as f:
            t0 = time.monotonic()
            a = [asyncio.create_task(f.fetch(u)) for u in slow]
            await asyncio.sleep(0.2)  # the 429s arrive first
            b = await asyncio.gather(*(f.fetch(u) for u in fast))
            fast_time = time.monotonic() - t0
            await asyncio.gather(*a)
            return fast_time, b

    fast_time, results = asyncio.run(go())
    assert all(reason(r) == "ok" for r in results)
    assert fast_time < 1.5  # B was not held behind A's 2 s back-off


def test_declared_huge_length_refused_before_body(provider_server) -> None:  # SRV-01
    t0 = time.monotonic()
    assert reason(fetch(provider_server.url("/huge-length/a.jpg"))) == "too_large"
    assert time.monotonic() - t0 < 2


def test_endless_body_capped(provider_server) -> None:  # SRV-02
    assert reason(fetch(provider_server.url("/endless/a.jpg"), fp(max_bytes=1 << 20))) == "too_large"


def test_gzip_bomb_capped_on_decoded_bytes(provider_server) -> None:  # SRV-03
    assert reason(fetch(provider_server.url("/gzip-bomb/a.png"), fp(max_bytes=1 << 20))) == "too_large"


def test_redirects(provider_server) -> None:  # SRV-05, SRV-06
    assert reason(fetch(provider_server.url("/loop/a.jpg"))) == "too_many_redirects"
    assert reason(fetch(provider_server.url("/chain/3/a.jpg"))) == "ok"
    assert reason(fetch(provider_server.url("/chain/11/a.jpg"))) == "too_many_redirects"
    for scheme in ("file", "ftp", "data", "javascript"):
        assert reason(fetch(provider_server.url(f"/redirect-scheme/{scheme}"))) == "bad_scheme"


def test_oversized_headers(provider_server) -> None:  # SRV-07
    assert reason(fetch(provider_server.url("/big-header/a.jpg"))) == "bad_response"


@pytest.mark.parametrize("variant,expected", [
    ("noai", "robots_optout"), ("noimageai", "robots_optout"), ("noindex", "robots_optout"),
    ("scoped-datakit", "robots_optout"), ("scoped-other", "ok"), ("none", "ok"),
])
def test_robots_optout(provider_server, variant: str, expected: str) -> None:  # SRV-11
    assert reason(fetch(provider_server.url(f"/robots/{variant}/a.jpg"))) == expected


def test_robots_parser() -> None:
    assert robots_optout(["noai"]) and robots_optout(["datakit: noimageai"])
    assert not robots_optout(["otherbot: noai"]) and not robots_optout(["max-image-preview:large"])
    assert robots_optout(["otherbot: noindex, datakit: noai"])


@pytest.mark.parametrize("path,expected", [
    ("/empty/a.jpg", "empty"), ("/nocontent/a.jpg", "empty"), ("/partial/a.jpg", "http_206"),
])
def test_empty_and_odd_success(provider_server, path: str, expected: str) -> None:  # SRV-12
    assert reason(fetch(provider_server.url(path))) == expected


@pytest.mark.parametrize("url", ["gopher://127.0.0.1/x", "file:///etc/passwd", "ftp://127.0.0.1/a",
                                 "mailto:a@b.c", "/relative.jpg", " http://127.0.0.1/x", "http://u:p@127.0.0.1/x"])
def test_bad_urls_never_connect(provider_server, url: str) -> None:  # SEC-06, SEC-07
    assert reason(fetch(url)) in ("bad_scheme", "bad_url")
    assert provider_server.log == []


# ---------------------------------------------------------------- SSRF (the policy in force)

def strict(*servers: Any) -> FetchParams:
    """127.0.0.2 plays the public internet; 127.0.0.1 is "inside"."""
    return fp(allow_private=False, allow_networks=["127.0.0.2/32"], allowed_ports=[80, 443, *(s.port for s in servers)])


@pytest.mark.parametrize("host", ["127.0.0.1", "2130706433", "0x7f000001", "127.1", "0177.0.0.1", "[::ffff:127.0.0.1]"])
def test_internal_addresses_blocked_before_connecting(provider_server, public_server, host: str) -> None:  # SEC-01/02
    r = fetch(f"http://{host}:{provider_server.port}/img/a.jpg", strict(provider_server, public_server))
    assert reason(r) == "blocked_address"
    assert provider_server.log == []


@pytest.mark.parametrize("host", ["169.254.169.254", "10.0.0.1", "192.168.1.1", "172.16.0.1", "100.64.0.1", "0.0.0.0",
                                  "[fe80::1]", "[fc00::1]", "[64:ff9b::7f00:1]", "0251.0376.0251.0376"])
def test_other_internal_ranges_blocked(host: str) -> None:  # SEC-01/02 (tripwire: nothing connects)
    assert reason(fetch(f"http://{host}/a.jpg", fp(allow_private=False))) == "blocked_address"


def test_public_host_allowed_by_policy(provider_server, public_server) -> None:
    assert reason(fetch(public_server.image_url("a.jpg"), strict(provider_server, public_server))) == "ok"


def test_redirect_hop_into_the_network_blocked(provider_server, public_server) -> None:  # SEC-04
    target = provider_server.image_url("secret.jpg")
    r = fetch(public_server.url(f"/redirect?to={target}"), strict(provider_server, public_server))
    assert reason(r) == "blocked_address"
    assert len(public_server.log) == 1 and provider_server.log == []


class _Resolver(aiohttp.abc.AbstractResolver):
    """Test resolver: names map to chosen addresses, which may change per call (rebinding)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.calls = 0

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict[str, Any]]:
        seq = self.answers[host]
        ip = seq[min(self.calls, len(seq) - 1)]
        self.calls += 1
        return [{"hostname": host, "host": ip, "port": port, "family": socket.AF_INET, "proto": 0,
                 "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        pass


def test_hostname_resolving_inside_is_blocked(provider_server, public_server) -> None:  # SEC-03
    res = _Resolver({"evil.test": ["127.0.0.1"]})
    r = fetch(f"http://evil.test:{provider_server.port}/img/a.jpg", strict(provider_server, public_server), resolver=res)
    assert reason(r) == "blocked_address" and provider_server.log == []


def test_dns_rebinding_is_blocked(provider_server, public_server) -> None:  # SEC-05
    assert provider_server.port != public_server.port or True
    res = _Resolver({"rebind.test": ["127.0.0.2", "127.0.0.1"]})
    policy = AddressPolicy(allow_networks=["127.0.0.2/32"], allowed_ports=[provider_server.port, public_server.port])

    async def go() -> list[str]:
        params = strict(provider_server, public_server)
        out = []
        async with Fetcher(params, user_agent=UA, resolver=res, policy=policy) as f:
            for port in (public_server.port, provider_server.port):
                f._session.connector._cached_hosts.clear()  # type: ignore[union-attr]  # force a fresh lookup
                try:
                    await f.fetch(f"http://rebind.test:{port}/img/a.jpg")
                    out.append("ok")
                except FetchFailed as exc:
                    out.append(exc.reason)
        return out

    assert asyncio.run(go()) == ["ok", "blocked_address"]
    assert provider_server.log == []


def test_proxy_environment_ignored(provider_server, monkeypatch) -> None:  # SEC-14
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    assert reason(fetch(provider_server.image_url("a.jpg"))) == "ok"
