"""Self-test of the loopback server fixture: each route does what tests/fixtures/servers.py says.

If a hostile route stopped misbehaving, the reliability tests built on it would pass for the
wrong reason; these checks keep the fixture honest.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import pytest
from PIL import Image, ImageOps

from tests.fixtures.servers import (
    FILES,
    GZIP_BOMB_DECODED,
    ROBOTS_VARIANTS,
    ProviderServer,
    file_bytes,
    render,
    serve,
    size_for,
)

pytestmark = pytest.mark.timeout(30)

T = TypeVar("T")
UA = "datakit-tests/0.1 (https://example.org/datakit)"


def run(fn: Callable[[aiohttp.ClientSession], Awaitable[T]], **session_kw: Any) -> T:
    """Run `fn(session)` on a fresh event loop (the server lives in its own thread)."""

    async def main() -> T:
        async with aiohttp.ClientSession(**session_kw) as session:
            return await fn(session)

    return asyncio.run(main())


def get(url: str, *, headers: dict[str, str] | None = None, **kw: Any) -> tuple[int, dict[str, str], bytes]:
    """GET without following redirects; (status, headers, body)."""

    async def fn(session: aiohttp.ClientSession) -> tuple[int, dict[str, str], bytes]:
        async with session.get(url, headers=headers, allow_redirects=False, **kw) as resp:
            return resp.status, dict(resp.headers), await resp.read()

    return run(fn)


# ----------------------------------------------------------------------------- images


def test_generated_images_are_deterministic_and_distinct(provider_server: ProviderServer) -> None:
    s1, h1, a = get(provider_server.url("/img/cat-1.jpg"))
    s2, _, b = get(provider_server.url("/img/cat-1.jpg"))
    _, _, c = get(provider_server.url("/img/cat-2.jpg"))
    assert (s1, s2, h1["Content-Type"]) == (200, 200, "image/jpeg")
    assert a == b == render("cat-1.jpg") and a != c
    with Image.open(io.BytesIO(a)) as im:
        assert im.format == "JPEG" and im.size == size_for("cat-1.jpg")
    _, headers, png = get(provider_server.url("/img/dog@40x30.png"))
    with Image.open(io.BytesIO(png)) as im:
        assert (im.format, im.size, headers["Content-Type"]) == ("PNG", (40, 30), "image/png")
    assert get(provider_server.url("/img/readme.txt"))[0] == 404


def test_custom_catalogue_entry(provider_server: ProviderServer) -> None:
    provider_server.images.put("custom.jpg", b"\xff\xd8hello", "image/jpeg")
    assert get(provider_server.url("/img/custom.jpg"))[2] == b"\xff\xd8hello"


def test_same_bytes_at_two_urls(provider_server: ProviderServer) -> None:  # SRV-13
    a = get(provider_server.url("/copy/a/shirt.jpg"))[2]
    b = get(provider_server.url("/copy/b/shirt.jpg"))[2]
    assert a == b == get(provider_server.url("/img/shirt.jpg"))[2]


@pytest.mark.parametrize("name", sorted(FILES))
def test_files_are_served_with_their_type(provider_server: ProviderServer, name: str) -> None:
    status, headers, body = get(provider_server.url(f"/files/{name}"))
    assert status == 200
    assert body == file_bytes(name)
    assert headers["Content-Type"].startswith(FILES[name][1].split(";")[0])


def test_bad_files_are_as_bad_as_claimed() -> None:
    assert len(file_bytes("tiny.jpg")) < 100  # IMG-01
    for name in ("truncated-50.jpg", "truncated-90.jpg", "truncated-99.jpg", "truncated.png"):
        with Image.open(io.BytesIO(file_bytes(name))) as im, pytest.raises(OSError):
            im.load()  # IMG-02/03: opens, but a full decode fails
    assert not file_bytes("no-eoi.jpg").endswith(b"\xff\xd9")
    # a bad CRC in IDAT: Pillow's load() ignores it; verify() raises SyntaxError, not OSError
    with Image.open(io.BytesIO(file_bytes("bad-crc.png"))) as im, pytest.raises(SyntaxError):
        im.verify()
    # IMG-04: tiny files, huge canvases
    assert len(file_bytes("bomb-20000.png")) < 100_000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(file_bytes("bomb-20000.png")))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Image.open(io.BytesIO(file_bytes("bomb-10000.png"))) as im:
            assert im.size == (10000, 10000)
    assert any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught)


def test_odd_modes_and_formats() -> None:
    with Image.open(io.BytesIO(file_bytes("image.tif"))) as im:
        assert im.format == "TIFF"  # IMG-06
    with Image.open(io.BytesIO(file_bytes("cmyk.jpg"))) as im:
        assert im.mode == "CMYK"  # IMG-09
    with Image.open(io.BytesIO(file_bytes("gray16.png"))) as im:
        assert im.mode.startswith("I")
        low, high = im.getextrema()
        assert isinstance(high, int) and high > 255  # really 16-bit values
    with Image.open(io.BytesIO(file_bytes("logo-rgba.png"))) as im:
        assert im.mode == "RGBA"
        assert im.getchannel("A").getextrema() == (0, 255)  # IMG-10
    with Image.open(io.BytesIO(file_bytes("animated.gif"))) as im:
        assert getattr(im, "n_frames", 1) == 4 and getattr(im, "is_animated", False)  # IMG-12
    assert b"<script" in file_bytes("script.svg")  # SRV-10


def test_exif_orientation_twins() -> None:  # IMG-07
    with Image.open(io.BytesIO(file_bytes("orient6.jpg"))) as tagged, \
            Image.open(io.BytesIO(file_bytes("orient6-rotated.jpg"))) as twin:
        assert tagged.getexif().get(0x0112) == 6
        assert twin.getexif().get(0x0112) is None
        assert tagged.size == (256, 192) and twin.size == (192, 256)
        upright = ImageOps.exif_transpose(tagged)
        assert upright.size == twin.size
        # the bright corner block ends up in the same place
        assert upright.convert("RGB").getpixel((170, 10)) == pytest.approx(
            twin.convert("RGB").getpixel((170, 10)), abs=40)


# ----------------------------------------------------------------------------- network faults


def test_hang_never_sends_headers(provider_server: ProviderServer) -> None:  # NET-03
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        get(provider_server.url("/hang/a.jpg"), timeout=aiohttp.ClientTimeout(total=0.5))
    assert time.monotonic() - started < 3
    assert provider_server.requests("/hang/")[0].status is None


def test_trickle_sends_a_byte_at_a_time(provider_server: ProviderServer) -> None:  # NET-04
    async def fn(session: aiohttp.ClientSession) -> bytes:
        got = b""
        async with session.get(provider_server.url("/trickle/a.jpg?interval=0.2")) as resp:
            assert resp.status == 200
            with pytest.raises(asyncio.TimeoutError):
                async with asyncio.timeout(1.1):
                    async for chunk in resp.content.iter_any():
                        got += chunk
        return got

    got = run(fn)
    assert 3 <= len(got) <= 8
    assert got == render("a.jpg")[: len(got)]


def test_reset_mid_body(provider_server: ProviderServer) -> None:  # NET-05
    with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ClientOSError,
                        aiohttp.ServerDisconnectedError)):
        get(provider_server.url("/reset/a.jpg"))


def test_short_body_is_a_payload_error(provider_server: ProviderServer) -> None:  # NET-06
    with pytest.raises(aiohttp.ClientPayloadError):
        get(provider_server.url("/short/a.jpg"))


def test_halfclose_looks_fine_to_http(provider_server: ProviderServer) -> None:  # NET-07
    status, headers, body = get(provider_server.url("/halfclose/a.jpg"))
    full = render("a.jpg")
    assert status == 200 and "Content-Length" not in headers
    assert body == full[: len(full) // 2]
    with Image.open(io.BytesIO(body)) as im, pytest.raises(OSError):
        im.load()


def test_flaky_fails_twice_then_serves(provider_server: ProviderServer) -> None:  # NET-10
    url = provider_server.url("/flaky/2/a.jpg")
    assert [get(url)[0] for _ in range(4)] == [503, 503, 200, 200]
    provider_server.reset_counters()
    assert get(url)[0] == 503


@pytest.mark.parametrize("code", [403, 404, 410, 451])
def test_fixed_status(provider_server: ProviderServer, code: int) -> None:  # NET-11
    assert get(provider_server.url(f"/status/{code}/a.jpg"))[0] == code


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("seconds", lambda v: v == "3"),
        ("date", lambda v: v.endswith("GMT")),
        ("past", lambda v: v.endswith("GMT")),
        ("garbage", lambda v: not v[:1].isdigit()),
        ("huge", lambda v: int(v) >= 10**9),
        ("none", lambda v: v is None),
    ],
)
def test_ratelimit_retry_after_forms(provider_server: ProviderServer, kind: str,  # NET-12
                                     check: Callable[[str | None], bool]) -> None:
    status, headers, _ = get(provider_server.url(f"/ratelimit/{kind}/a.jpg?after=3"))
    assert status == 429
    assert check(headers.get("Retry-After"))


def test_ratelimit_then_ok(provider_server: ProviderServer) -> None:
    url = provider_server.url("/ratelimit/seconds/a.jpg?fails=1")
    assert [get(url)[0] for _ in range(3)] == [429, 200, 200]


def test_slow_and_peak_concurrency(provider_server: ProviderServer) -> None:  # NET-14
    async def fn(session: aiohttp.ClientSession) -> list[int]:
        async def one(i: int) -> int:
            async with session.get(provider_server.url(f"/slow/300/s{i}.jpg")) as resp:
                await resp.read()
                return resp.status

        return await asyncio.gather(*(one(i) for i in range(5)))

    started = time.monotonic()
    assert run(fn) == [200] * 5
    assert 0.3 <= time.monotonic() - started < 2
    assert provider_server.peak_in_flight == 5
    assert provider_server.in_flight == 0
    provider_server.reset_stats()
    assert provider_server.peak_in_flight == 0 and provider_server.log == []


# ----------------------------------------------------------------------------- hostile servers


def test_huge_declared_length(provider_server: ProviderServer) -> None:  # SRV-01
    async def fn(session: aiohttp.ClientSession) -> tuple[int, int | None, bytes]:
        async with session.get(provider_server.url("/huge-length/a.jpg")) as resp:
            return resp.status, resp.content_length, await resp.content.read(512)

    status, length, start = run(fn)
    assert (status, length) == (200, 10 << 30)
    assert start == render("a.jpg")[:512]


def test_endless_body(provider_server: ProviderServer) -> None:  # SRV-02
    async def fn(session: aiohttp.ClientSession) -> int:
        total = 0
        async with session.get(provider_server.url("/endless/a.jpg")) as resp:
            assert resp.headers.get("Transfer-Encoding") == "chunked"
            while total < 4 << 20:
                chunk = await resp.content.read(1 << 16)
                assert chunk, "the endless body ended"
                total += len(chunk)
        return total

    assert run(fn) >= 4 << 20


def test_gzip_bomb(provider_server: ProviderServer) -> None:  # SRV-03
    status, headers, wire = run(
        lambda s: _raw(s, provider_server.url("/gzip-bomb/a.jpg")), auto_decompress=False
    )
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert len(wire) < 100_000
    assert len(gzip.decompress(wire)) == GZIP_BOMB_DECODED


async def _raw(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, str], bytes]:
    async with session.get(url) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def test_redirect_loop_and_chain(provider_server: ProviderServer) -> None:  # SRV-05
    status, headers, _ = get(provider_server.url("/loop/a.jpg"))
    assert status == 302 and headers["Location"] == "/loop/a.jpg"
    with pytest.raises(aiohttp.TooManyRedirects):
        run(lambda s: _raw(s, provider_server.url("/chain/11/a.jpg")))  # aiohttp allows 10
    status, _, body = run(lambda s: _raw(s, provider_server.url("/chain/3/a.jpg")))
    assert status == 200 and body == render("a.jpg")
    assert provider_server.hits["/chain/0/a.jpg"] == 1


@pytest.mark.parametrize("scheme", ["file", "ftp", "data", "javascript"])
def test_redirect_to_other_schemes(provider_server: ProviderServer, scheme: str) -> None:  # SRV-06
    status, headers, _ = get(provider_server.url(f"/redirect-scheme/{scheme}"))
    assert status == 302 and headers["Location"].startswith(f"{scheme}:")
    if scheme == "file":
        assert headers["Location"] == "file:///etc/passwd"


def test_public_host_redirects_to_private(provider_server: ProviderServer,
                                          public_server: ProviderServer) -> None:
    assert public_server.base_url.startswith("http://127.0.0.2:")
    target = provider_server.url("/img/a.jpg")
    status, headers, _ = get(public_server.url("/redirect"), params={"to": target})
    assert status == 302 and headers["Location"] == target
    status, _, body = run(lambda s: _raw(s, public_server.url(f"/redirect?to={target}")))
    assert status == 200 and body == render("a.jpg")
    assert public_server.hits["/redirect"] == 2 and provider_server.hits["/img/a.jpg"] == 1
    assert public_server.log[0].host == "127.0.0.2"


def test_oversized_headers(provider_server: ProviderServer) -> None:  # SRV-07
    with pytest.raises(aiohttp.ClientResponseError):
        get(provider_server.url("/big-header/a.jpg"))
    with pytest.raises(aiohttp.ClientResponseError):
        get(provider_server.url("/many-headers/a.jpg"))


def test_wrong_content_types(provider_server: ProviderServer) -> None:  # SRV-08/09
    _, headers, body = get(provider_server.url("/html-as-jpeg/a.jpg"))
    assert headers["Content-Type"] == "image/jpeg" and body.startswith(b"<!DOCTYPE html>")
    _, headers, body = get(provider_server.url("/php/photo.php"))
    assert headers["Content-Type"].startswith("text/html") and body == render("photo.jpg")
    _, headers, body = get(provider_server.url("/octet/a.png"))
    assert headers["Content-Type"] == "application/octet-stream" and body.startswith(b"\x89PNG")


@pytest.mark.parametrize("variant", sorted(ROBOTS_VARIANTS))
def test_robots_headers(provider_server: ProviderServer, variant: str) -> None:  # SRV-11
    status, headers, body = get(provider_server.url(f"/robots/{variant}/a.jpg"),
                                headers={"User-Agent": UA})
    assert status == 200 and body == render("a.jpg")
    assert headers.get("X-Robots-Tag") == ROBOTS_VARIANTS[variant]
    assert provider_server.log[-1].header("user-agent") == UA


def test_empty_and_odd_successes(provider_server: ProviderServer) -> None:  # SRV-12
    assert get(provider_server.url("/empty/a.jpg"))[::2] == (200, b"")
    assert get(provider_server.url("/nocontent/a.jpg"))[::2] == (204, b"")
    status, headers, body = get(provider_server.url("/partial/a.jpg"))
    assert status == 206 and headers["Content-Range"].startswith("bytes 0-")
    assert get(provider_server.url("/not-modified/a.jpg"))[0] == 304


def test_changing_body_between_attempts(provider_server: ProviderServer) -> None:  # SRV-14
    with pytest.raises(aiohttp.ClientPayloadError):
        get(provider_server.url("/changing/a.jpg"))
    status, _, body = get(provider_server.url("/changing/a.jpg"))
    assert status == 200 and body == render("a-v2.jpg") != render("a.jpg")


# ----------------------------------------------------------------------------- provider contracts


def test_openverse_contract(provider_server: ProviderServer) -> None:
    base = provider_server.url("/v1/images/")
    provider_server.configure("openverse", total=1000)
    status, headers, body = get(base + "?q=x&page_size=21")
    assert status == 401 and b"page_size" in body
    assert get(base + "?q=x&page_size=21", headers={"Authorization": "Bearer t"})[0] == 200
    assert get(base + "?q=x&page=21")[0] == 400
    status, _, body = get(base + "?q=x&license=by,xyz")
    assert status == 400 and b'"license": ["License \'xyz\' does not exist."]' in body
    assert get(base + "?q=x&li=by")[0] == 400  # deprecated parameter
    status, headers, body = get(base + "?q=x")
    page = json.loads(body)
    assert (page["result_count"], page["page_count"], len(page["results"])) == (240, 12, 20)
    assert headers["X-RateLimit-Limit-anon_burst"] == "20/min"
    assert "X-RateLimit-Available-anon_sustained" in headers
    item = page["results"][0]
    assert item["url"].startswith(provider_server.base_url + "/img/")
    assert {"id", "foreign_landing_url", "creator", "license", "license_version", "license_url",
            "provider", "source", "filetype", "width", "height", "thumbnail", "tags",
            "attribution"} <= set(item)
    last = json.loads(get(base + "?q=x&page=12")[2])
    assert last["page_count"] == 12 and len(last["results"]) == 20
    assert get(base + "?q=x&page=13")[0] == 400  # past page_count

    provider_server.set_mode("openverse", "throttle", times=1, retry_after=9)
    status, headers, body = get(base + "?q=x")
    assert status == 429 and headers["Retry-After"] == "9"
    assert json.loads(body)["detail"] == "Request was throttled. Expected available in 9 seconds."
    assert get(base + "?q=x")[0] == 200  # `times=1` is over


def test_wikimedia_contract(provider_server: ProviderServer) -> None:
    base = provider_server.url("/w/api.php?action=query&format=json&generator=search"
                               "&gsrnamespace=6&prop=imageinfo&iiprop=url|extmetadata")
    status, headers, body = get(base + "&gsrsearch=x")  # aiohttp's default User-Agent
    assert status == 403 and headers["Content-Type"].startswith("text/plain")
    ua = {"User-Agent": UA}
    fv1 = json.loads(get(base + "&gsrsearch=x&gsrlimit=5", headers=ua)[2])
    assert fv1["batchcomplete"] == "" and isinstance(fv1["query"]["pages"], dict)
    assert fv1["continue"] == {"gsroffset": 5, "continue": "gsroffset||"}
    provider_server.configure("wikimedia", zero={"none"})
    assert "query" not in json.loads(get(base + "&gsrsearch=none", headers=ua)[2])
    provider_server.set_mode("wikimedia", "maxlag", retry_after=4)
    status, headers, body = get(base + "&gsrsearch=x&maxlag=5&formatversion=2", headers=ua)
    assert status == 200 and json.loads(body)["error"]["code"] == "maxlag"
    assert headers["Retry-After"] == "4" and headers["MediaWiki-API-Error"] == "maxlag"
    provider_server.set_mode("wikimedia", "throttle")
    status, headers, _ = get(base + "&gsrsearch=x", headers=ua)
    assert status == 429 and "Retry-After" in headers


def test_brave_contract(provider_server: ProviderServer) -> None:
    base = provider_server.url("/res/v1/images/search")
    key = {"X-Subscription-Token": provider_server.providers["brave"].key or ""}
    status, _, body = get(base + "?q=x", headers={"X-Subscription-Token": "wrong"})
    assert status == 422 and json.loads(body)["error"]["code"] == "SUBSCRIPTION_TOKEN_INVALID"
    status, _, body = get(base + "?q=x&count=0", headers=key)
    assert status == 422 and json.loads(body)["error"]["code"] == "VALIDATION"
    provider_server.configure("brave", total=500)
    status, headers, body = get(base + "?q=x&count=500", headers=key)
    assert status == 200 and len(json.loads(body)["results"]) == 200
    assert headers["X-RateLimit-Remaining"].count(",") == 1
    assert headers["X-RateLimit-Policy"] == "1;w=1, 15000;w=2592000"
    provider_server.set_mode("brave", "throttle")
    status, _, body = get(base + "?q=x", headers=key)
    assert status == 429 and json.loads(body)["error"]["code"] == "RATE_LIMITED"


def test_flickr_contract(provider_server: ProviderServer) -> None:
    key = provider_server.providers["flickr"].key
    base = provider_server.url(f"/services/rest/?method=flickr.photos.search&format=json&text=x"
                               f"&api_key={key}")
    status, _, body = get(base.replace(f"api_key={key}", "api_key=nope") + "&nojsoncallback=1")
    assert status == 200 and json.loads(body) == {
        "stat": "fail", "code": 100, "message": "Invalid API Key (Key not found)"}
    status, headers, body = get(base + "&per_page=3&extras=license")
    assert body.startswith(b"jsonFlickrApi(") and body.endswith(b")")
    photos = json.loads(body[len(b"jsonFlickrApi("):-1])["photos"]
    assert isinstance(photos["photo"][0]["license"], str)
    provider_server.configure("flickr", total=10000)
    page = json.loads(get(base + "&nojsoncallback=1&per_page=1000")[2])["photos"]
    assert page["perpage"] == 500
    last = json.loads(get(base + "&nojsoncallback=1&per_page=500&page=8")[2])["photos"]["photo"]
    deeper = json.loads(get(base + "&nojsoncallback=1&per_page=500&page=9")[2])["photos"]["photo"]
    assert [p["id"] for p in deeper] == [p["id"] for p in last]  # past 4,000: the last page again
    provider_server.set_mode("flickr", "unavailable")
    assert json.loads(get(base + "&nojsoncallback=1")[2])["code"] == 105


def test_bing_contract(provider_server: ProviderServer) -> None:
    base = provider_server.url("/v7.0/images/search?q=x")
    status, _, body = get(base)
    assert status == 401 and json.loads(body)["_type"] == "ErrorResponse"
    key = {"Ocp-Apim-Subscription-Key": provider_server.providers["bing"].key or ""}
    provider_server.configure("bing", total=400)
    page = json.loads(get(base + "&count=500", headers=key)[2])
    assert len(page["value"]) == 150 and page["nextOffset"] == 152
    assert json.loads(get(base + "&offset=400", headers=key)[2])["value"] == []
    provider_server.set_mode("bing", "quota", times=1)
    assert get(base, headers=key)[0] == 403
    provider_server.set_mode("bing", "throttle", retry_after=2)
    status, headers, _ = get(base, headers=key)
    assert status == 429 and headers["Retry-After"] == "2"


def test_set_mode_rejects_unknown_modes(provider_server: ProviderServer) -> None:
    with pytest.raises(ValueError, match="maxlag"):
        provider_server.set_mode("openverse", "maxlag")


def test_serve_context_manager_binds_the_asked_host() -> None:
    with serve("127.0.0.2") as server:
        assert server.base_url.startswith("http://127.0.0.2:")
        assert get(server.url("/img/a.jpg"))[0] == 200
    with pytest.raises(aiohttp.ClientConnectionError):
        get(server.url("/img/a.jpg"), timeout=aiohttp.ClientTimeout(total=2))
