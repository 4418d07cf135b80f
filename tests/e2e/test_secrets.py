"""The search API key stays with the search API (issue 13: B2, B3, B11; reliability.md SEC-08/09).

A canary key is given to `datakit scrape` (run as a subprocess, as a user runs it) and hostile
Brave- and Bing-shaped (key in a header) and Flickr-shaped (key in the query string) endpoints
try to get it out: a redirect to another host, the key echoed in error bodies and headers, the
key written into result URLs. The canary must appear nowhere: stdout, stderr, any file under the test folder, any request
that reached the other host (which also plays the image host).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from aiohttp import web

from tests.e2e.helpers import run_subprocess, write_params
from tests.fixtures.servers import ProviderServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

CANARY = "CANARY-4e1d-key-9b7c"
APIS = {"brave": ("/res/v1/images/search", "BRAVE_API_KEY"), "flickr": ("/services/rest/", "FLICKR_API_KEY"),
        "bing": ("/v7.0/images/search", "BING_API_KEY")}
KEYS = {name: CANARY for name in APIS}


class HostileApi(ProviderServer):
    """The providers' normal routes, plus hostile ones under a prefix (`--endpoint BASE/PREFIX`):

    * ``/redirect``: 302 to the same route on `elsewhere`, query string (Flickr's key) included;
    * ``/echo500``: HTTP 500 whose text quotes the key it received;
    * ``/echotext``: HTTP 200 whose (non-JSON) text quotes the key it received.
    """

    def __init__(self, elsewhere: ProviderServer) -> None:
        super().__init__("127.0.0.1", keys=KEYS)
        self.elsewhere = elsewhere

    def _add_routes(self, app: web.Application) -> None:
        super()._add_routes(app)
        for path, _ in APIS.values():
            app.router.add_get("/redirect" + path, self._away)
            app.router.add_get("/samehost" + path, self._same_host)
            app.router.add_get("/echo500" + path, self._echo(500))
            app.router.add_get("/echotext" + path, self._echo(200))
        app.router.add_get("/headers" + APIS["brave"][0], self._echo_header(self._brave))
        app.router.add_get("/headers" + APIS["flickr"][0], self._echo_header(self._flickr))
        app.router.add_get("/headers" + APIS["bing"][0], self._echo_header(self._bing))

    async def _away(self, request: web.Request) -> web.StreamResponse:
        target = self.elsewhere.url(request.path.removeprefix("/redirect")) + "?" + request.query_string
        raise web.HTTPFound(target)

    async def _same_host(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(request.path.removeprefix("/samehost") + "?" + request.query_string)

    @staticmethod
    def _echo_header(inner):  # noqa: ANN001, ANN205
        async def handler(request: web.Request) -> web.StreamResponse:
            resp = await inner(request)
            key = _key_sent(request)
            resp.headers["X-RateLimit-Echo"] = f"quota for {key}"  # kept in the run's report
            return resp
        return handler

    @staticmethod
    def _echo(status: int):  # noqa: ANN205
        async def handler(request: web.Request) -> web.StreamResponse:
            key = _key_sent(request)
            return web.Response(text=f"upstream failure while checking the key {key} (sorry)", status=status,
                                content_type="text/plain", headers={"X-RateLimit-Note": f"for {key}"})
        return handler


def _key_sent(request: web.Request) -> str:
    return (request.headers.get("X-Subscription-Token") or request.headers.get("Ocp-Apim-Subscription-Key")
            or request.query.get("api_key") or "")


@pytest.fixture()
def servers():
    with ProviderServer("127.0.0.2", keys=KEYS) as elsewhere, \
            HostileApi(elsewhere) as api:
        yield api, elsewhere


def _run(tmp_path: Path, api: HostileApi, provider: str, prefix: str):
    _, var = APIS[provider]
    params = write_params(tmp_path, items=["vest"], attributes=["striped"], per_query=6)
    return run_subprocess("scrape", "--provider", provider, "--endpoint", api.url(prefix), "--allow-private",
                          "--params", params, "--out", tmp_path / "out", "--report", tmp_path / "scrape.json",
                          env={var: CANARY, "COLUMNS": "200"})


def _assert_no_canary(tmp_path: Path, res, elsewhere: ProviderServer) -> None:
    assert CANARY not in res.stdout, res.stdout
    assert CANARY not in res.stderr, res.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written, "the run wrote nothing at all"
    for path in written:
        assert CANARY.encode() not in path.read_bytes(), f"the key is stored in {path}"
        if path.suffix == ".parquet":  # compressed pages could hide it from a byte search
            assert CANARY not in pd.read_parquet(path).to_json(), f"the key is stored in {path}"
    for rec in elsewhere.log:
        seen = json.dumps([rec.path, rec.raw_query, rec.headers])
        assert CANARY not in seen, f"the key reached another host: {seen}"


@pytest.mark.parametrize("provider", sorted(APIS))
def test_key_does_not_follow_a_redirect_to_another_host(tmp_path, servers, provider) -> None:  # B2, SEC-09
    api, elsewhere = servers
    res = _run(tmp_path, api, provider, "/redirect")
    _assert_no_canary(tmp_path, res, elsewhere)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "redirect" in res.stderr and "127.0.0.2" in res.stderr, res.stderr
    assert elsewhere.requests(APIS[provider][0]) == []  # not even a key-less request went there


@pytest.mark.parametrize("provider", sorted(APIS))
def test_same_host_redirect_is_still_followed(tmp_path, servers, provider) -> None:  # B2: no over-blocking
    api, elsewhere = servers
    res = _run(tmp_path, api, provider, "/samehost")
    assert res.returncode == 0, res.stdout + res.stderr
    _assert_no_canary(tmp_path, res, elsewhere)
    assert len(pd.read_parquet(tmp_path / "out" / "manifest.parquet")) == 6


@pytest.mark.parametrize("prefix", ["/echo500", "/echotext"])
@pytest.mark.parametrize("provider", sorted(APIS))
def test_key_echoed_in_an_error_body_is_not_printed(tmp_path, servers, provider, prefix) -> None:  # B3, SEC-08
    api, elsewhere = servers
    res = _run(tmp_path, api, provider, prefix)
    _assert_no_canary(tmp_path, res, elsewhere)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "upstream failure while checking the key ***" in res.stderr, res.stderr  # the body, redacted


@pytest.mark.parametrize("provider", sorted(APIS))
def test_key_echoed_in_a_rate_limit_header_is_not_reported(tmp_path, servers, provider) -> None:  # B3, SEC-08
    api, elsewhere = servers
    res = _run(tmp_path, api, provider, "/headers")
    assert res.returncode == 0, res.stdout + res.stderr
    _assert_no_canary(tmp_path, res, elsewhere)
    report = json.loads((tmp_path / "scrape.json").read_text())
    assert report["rate_limit_headers"]["X-RateLimit-Echo"] == "quota for ***"


@pytest.mark.parametrize("provider", sorted(APIS))
def test_key_in_result_urls_is_neither_stored_nor_sent(tmp_path, servers, provider) -> None:  # B11, SEC-08/09
    api, elsewhere = servers
    api.configure(provider, total=6, overrides={
        1: elsewhere.image_url(f"k1.jpg?token={CANARY}"),
        2: elsewhere.image_url(f"k2.jpg?sig=a%2Fb&api_key={CANARY}&w=640"),
        **{rank: elsewhere.image_url(f"clean-{rank}.jpg") for rank in range(3, 7)},
    })
    res = _run(tmp_path, api, provider, "")
    assert res.returncode == 0, res.stdout + res.stderr
    _assert_no_canary(tmp_path, res, elsewhere)
    out = tmp_path / "out"
    stored = pd.read_parquet(out / "manifest.parquet")
    failed = pd.read_parquet(out / "failures.parquet")
    assert sorted(stored["rank"]) == [3, 4, 5, 6]
    assert sorted(failed["reason"]) == ["credential_in_url"] * 2
    assert all("k1.jpg" in u or "k2.jpg" in u for u in failed["url"])  # still says which result it was
    assert sorted(r.path for r in elsewhere.log) == [f"/img/clean-{rank}.jpg" for rank in range(3, 7)]
