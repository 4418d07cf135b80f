"""More scrape rows: signals, disk full, DNS/TLS/refused, offline providers, scale of one run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pandas as pd
import pytest
from aiohttp import web
from PIL import Image

from datakit.scrape.fetch import Fetcher, FetchFailed
from datakit.verify import verify
from tests.e2e.helpers import (
    datakit_cmd,
    failures,
    invoke,
    manifest,
    run_subprocess,
    sigterm_after_requests,
    write_params,
)
from tests.e2e.test_fetch import UA, fp
from tests.fixtures import images as F

pytestmark = pytest.mark.timeout(180)


def _urls_file(tmp_path: Path, urls: list[tuple[str, str]]) -> Path:
    path = tmp_path / "urls.csv"
    pd.DataFrame(urls, columns=["url", "label"]).to_csv(path, index=False)
    return path


def test_urls_provider_many_tasks_one_writer(tmp_path, provider_server) -> None:  # CON-04, SRV-09, SRV-13
    urls = [(provider_server.image_url(f"u-{i}.jpg"), "cat" if i % 2 else "dog") for i in range(400)]
    urls += [(provider_server.url("/php/shot.php"), "cat"), (provider_server.image_url("u-1.jpg"), "cat"),
             (provider_server.url("/copy/again/u-2.jpg"), "dog"), (provider_server.url("/changing/c.jpg"), "dog")]
    src = _urls_file(tmp_path, urls)
    params = write_params(tmp_path, fetch={"concurrency": 32, "per_host": 32})
    res = invoke("scrape", "--provider", "urls", "--source", src, "--allow-private", "--params", params,
                 "--out", tmp_path / "out", "--report", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    m, f = manifest(tmp_path / "out"), failures(tmp_path / "out")
    assert len(m) + len(f) == len(urls)
    assert verify(tmp_path / "out").ok
    assert set(f["reason"]) >= {"duplicate_url", "duplicate_bytes"}
    php = m[m["source_url"].str.endswith("/php/shot.php")].iloc[0]
    assert php["format"] == "JPEG" and php["path"].endswith(".jpg") and php["content_type_mismatch"]
    assert set(m["label"]) == {"cat", "dog"}


def test_urls_provider_bad_file_names_rows(tmp_path) -> None:
    src = tmp_path / "urls.csv"
    src.write_text("url,label\nhttp://a/x.jpg,cat\n,dog\nhttp://a/y.jpg,\n")
    res = invoke("scrape", "--provider", "urls", "--source", src, "--out", tmp_path / "out", "--dry-run")
    assert res.exit_code == 1 and "urls.csv" in res.output and "empty url in lines 3" in res.output
    src.write_text("link,label\nhttp://a/x.jpg,cat\n")
    res = invoke("scrape", "--provider", "urls", "--source", src, "--out", tmp_path / "out", "--dry-run")
    assert res.exit_code == 1 and "missing column(s) url" in res.output


def test_folder_provider(tmp_path) -> None:
    src = tmp_path / "photos"
    for label in ("cats", "dogs"):
        (src / label).mkdir(parents=True)
        for i in range(5):
            F.photo(64, 64, seed=hash(label) % 1000 + i).save(src / label / f"{i}.jpg")
    (src / "cats" / "notes.txt").write_text("not an image")
    (src / "cats" / ".DS_Store").write_bytes(b"\0\0")
    res = invoke("scrape", "--provider", "folder", "--source", src, "--params", write_params(tmp_path),
                 "--out", tmp_path / "out", "--report", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    m, f = manifest(tmp_path / "out"), failures(tmp_path / "out")
    assert sorted(m["label"].value_counts().to_dict().items()) == [("cats", 5), ("dogs", 5)]
    assert list(f["reason"]) == ["not_an_image"]
    assert verify(tmp_path / "out").ok


def test_synthetic_demo_run(tmp_path) -> None:
    params = write_params(tmp_path, items=["vest", "hoodie", "shirt"], attributes=["striped", "leopard"], per_query=30)
    res = invoke("scrape", "--provider", "synthetic", "--params", params, "--out", tmp_path / "out",
                 "--report", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    m, f = manifest(tmp_path / "out"), failures(tmp_path / "out")
    assert {"duplicate_bytes"} <= set(f["reason"]) and len(set(f["reason"])) >= 2  # duplicates and broken files
    assert m.groupby("query").size().nunique() > 1  # unequal counts per query
    assert verify(tmp_path / "out").ok
    again = invoke("scrape", "--provider", "synthetic", "--params", params, "--out", tmp_path / "out2",
                   "--report", tmp_path / "r2.json")
    assert again.exit_code == 0
    assert list(manifest(tmp_path / "out2")["image_id"]) == list(m["image_id"])  # deterministic


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_flushes_and_resumes(tmp_path, provider_server, signum: int) -> None:  # RES-05
    st = provider_server.configure("openverse", total=40)
    for rank in range(1, 41):
        st.overrides[rank] = f"/slow/250/sig-{rank}.jpg"
    params = write_params(tmp_path, items=["vest"], attributes=["striped"], per_query=40,
                          fetch={"concurrency": 2, "per_host": 2})
    args = ["scrape", "--provider", "openverse", "--endpoint", provider_server.base_url, "--allow-private",
            "--params", params, "--out", tmp_path / "out", "--report", tmp_path / "r.json"]
    proc = subprocess.Popen(datakit_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not any(r.path.startswith("/slow/") for r in provider_server.log) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.8)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum, err
    assert "interrupted" in err
    m = manifest(tmp_path / "out")  # flushed: what settled is in the manifest
    assert 0 < len(m) < 40 and verify(tmp_path / "out").ok
    done = run_subprocess(*args)
    assert done.returncode == 0, done.stderr
    assert len(manifest(tmp_path / "out")) + len(failures(tmp_path / "out")) == 40


def test_disk_full_is_a_run_level_error(tmp_path) -> None:  # RES-06
    import resource

    params = write_params(tmp_path, items=["vest"], attributes=["striped"], per_query=20)
    args = ["scrape", "--provider", "synthetic", "--params", params, "--out", tmp_path / "out", "--report", tmp_path / "r.json"]
    assert run_subprocess(*args).returncode == 0
    before = (tmp_path / "out" / "manifest.parquet").read_bytes()
    params2 = write_params(tmp_path, items=["vest", "shirt"], attributes=["striped"], per_query=20)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))

    proc = subprocess.run(datakit_cmd("scrape", "--provider", "synthetic", "--params", params2, "--extend",
                                      "--out", tmp_path / "out", "--report", tmp_path / "r.json"),
                          capture_output=True, text=True, preexec_fn=limit, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "cannot write the image store" in proc.stderr
    assert (tmp_path / "out" / "manifest.parquet").read_bytes() == before  # N5: old state untouched
    assert not list((tmp_path / "out").rglob("*.tmp"))


def _fetch_one(url: str, **kw: Any) -> Any:
    async def go() -> Any:
        async with Fetcher(fp(**kw.pop("params", {})), user_agent=UA, **kw) as f:
            try:
                return await f.fetch(url)
            except FetchFailed as exc:
                return exc
    return asyncio.run(go())


def test_connection_refused_retried_then_skipped() -> None:  # NET-01
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t0 = time.monotonic()
    r = _fetch_one(f"http://127.0.0.1:{port}/a.jpg")
    assert isinstance(r, FetchFailed) and r.reason == "connect_error" and r.attempts == 3
    assert time.monotonic() - t0 < 3


class _FailingResolver(aiohttp.abc.AbstractResolver):
    calls = 0

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict[str, Any]]:
        type(self).calls += 1
        raise OSError(socket.EAI_NONAME, "Name or service not known")

    async def close(self) -> None:
        pass


def test_dns_failure_no_retry_storm() -> None:  # NET-08
    r = _fetch_one("http://no-such-host.test/a.jpg", resolver=_FailingResolver(), params={"allow_private": False})
    assert isinstance(r, FetchFailed) and r.reason == "dns_error" and _FailingResolver.calls <= 2


def test_untrusted_tls_certificate(tmp_path) -> None:  # NET-09
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    port_box: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=F.jpeg(), content_type="image/jpeg")

    async def serve() -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/{name}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        port_box.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        return runner

    def thread() -> None:
        asyncio.set_event_loop(loop)
        runner = loop.run_until_complete(serve())
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    t = threading.Thread(target=thread, daemon=True)
    t.start()
    started.wait(10)
    try:
        url = f"https://127.0.0.1:{port_box[0]}/a.jpg"
        r = _fetch_one(url)
        assert isinstance(r, FetchFailed) and r.reason == "tls_error"  # never falls back to no verification
        client_ctx = ssl.create_default_context()
        ca.configure_trust(client_ctx)
        ok = _fetch_one(url, ssl=client_ctx)
        assert not isinstance(ok, FetchFailed)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)


def test_decoding_does_not_starve_downloads(tmp_path, provider_server) -> None:  # NET-15
    big = Image.effect_noise((5000, 5000), 64).convert("RGB")
    provider_server.images.put("big.png", F.encode(big, "PNG", compress_level=1), "image/png")
    urls = [(provider_server.image_url("big.png"), "a")] + [
        (provider_server.url(f"/slow/300/s-{i}.jpg"), "b") for i in range(10)]
    params = write_params(tmp_path, fetch={"deadline_s": 2.5, "concurrency": 16, "per_host": 16, "max_bytes": 200_000_000},
                          image={"max_decode_pixels": 40_000_000})
    res = invoke("scrape", "--provider", "urls", "--source", _urls_file(tmp_path, urls), "--allow-private",
                 "--params", params, "--out", tmp_path / "out", "--report", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    f = failures(tmp_path / "out")
    assert "timeout" not in set(f["reason"])
    m = manifest(tmp_path / "out")
    assert len(m) == 11 and m["downsized"].sum() == 1  # 25 MP stored downsized to <= 4 MP


def test_dependency_versions_are_patched() -> None:  # SEC-13
    import PIL

    def v(s: str) -> tuple[int, ...]:
        return tuple(int(x) for x in s.split(".")[:3] if x.isdigit())

    assert v(aiohttp.__version__) >= (3, 13, 3)
    assert v(PIL.__version__) >= (10, 3, 0)
    assert os.environ.get("DVC_NO_ANALYTICS") == "1"


def test_parallel_workers_settle_everything_and_keep_caps(tmp_path, provider_server) -> None:
    urls = [(provider_server.url(f"/slow/20/w-{i}.jpg"), f"c{i % 3}") for i in range(300)]
    urls += [(provider_server.url("/files/truncated-50.jpg"), "c0"), (provider_server.url("/status/404/x.jpg"), "c1"),
             (provider_server.url("/copy/k/w-7.jpg"), "c2")]
    params = write_params(tmp_path, fetch={"workers": 2, "workers_min_items": 0, "concurrency": 8, "per_host": 4})
    args = ["scrape", "--provider", "urls", "--source", _urls_file(tmp_path, urls), "--allow-private",
            "--params", params, "--out", tmp_path / "out", "--report", tmp_path / "r.json"]
    done = run_subprocess(*args)
    assert done.returncode == 0, done.stderr
    m, f = manifest(tmp_path / "out"), failures(tmp_path / "out")
    assert len(m) + len(f) == len(urls) and verify(tmp_path / "out").ok
    assert {"truncated", "http_404"} <= set(f["reason"])
    assert provider_server.peak_in_flight <= 4  # per_host is global, shared between the workers
    report = __import__("json").loads((tmp_path / "r.json").read_text())
    assert report["workers"] == 2
    n = len(provider_server.log)
    assert run_subprocess(*args).returncode == 0 and len(provider_server.log) == n  # RES-08 with workers


def test_parallel_workers_resume_after_sigterm(tmp_path, provider_server) -> None:  # RES-05 with workers
    urls = [(provider_server.url(f"/slow/100/t-{i}.jpg"), "a" if i % 2 else "b") for i in range(200)]
    params = write_params(tmp_path, fetch={"workers": 2, "workers_min_items": 0, "concurrency": 4, "per_host": 4})
    args = ["scrape", "--provider", "urls", "--source", _urls_file(tmp_path, urls), "--allow-private",
            "--params", params, "--out", tmp_path / "out", "--report", tmp_path / "r.json"]
    code, err = sigterm_after_requests(provider_server, 20, *args)
    assert code == 143, err
    partial = manifest(tmp_path / "out")
    assert 0 < len(partial) < 200 and verify(tmp_path / "out").ok
    settled = len(partial)
    before = len(provider_server.log)
    assert run_subprocess(*args).returncode == 0
    assert len(manifest(tmp_path / "out")) == 200 and verify(tmp_path / "out").ok
    assert len(provider_server.log) - before <= 200 - settled


def test_retry_failed_fetches_transient_failures_again(tmp_path, provider_server) -> None:
    urls = [(provider_server.url("/flaky/4/x.jpg"), "a"), (provider_server.image_url("ok.jpg"), "a"),
            (provider_server.url("/status/404/y.jpg"), "a")]
    src = _urls_file(tmp_path, urls)
    params = write_params(tmp_path)
    args = ["scrape", "--provider", "urls", "--source", src, "--allow-private", "--params", params,
            "--out", tmp_path / "out", "--report", tmp_path / "r.json"]
    assert invoke(*args).exit_code == 0
    assert sorted(failures(tmp_path / "out")["reason"]) == ["http_404", "http_503"]
    n404 = len(provider_server.requests("/status/404/"))
    res = invoke(*args, "--retry-failed")  # the 4th and later tries of /flaky/4 succeed
    assert res.exit_code == 0, res.output
    assert list(failures(tmp_path / "out")["reason"]) == ["http_404"]  # final errors are not retried
    assert len(provider_server.requests("/status/404/")) == n404
    assert len(manifest(tmp_path / "out")) == 2 and verify(tmp_path / "out").ok


def test_verify_reports_every_breach(tmp_path) -> None:
    params = write_params(tmp_path, items=["vest"], attributes=["dotted"], per_query=20)
    out = tmp_path / "out"
    assert invoke("scrape", "--provider", "synthetic", "--params", params, "--out", out, "--report", tmp_path / "r.json").exit_code == 0
    ok = invoke("verify", out, "--report", tmp_path / "verify.json")
    assert ok.exit_code == 0 and "ok" in ok.output
    m = manifest(out)
    root = out  # no project markers: paths are relative to the scrape folder's project root
    files = [p for p in out.rglob("images/*/*") if p.is_file()]
    files[0].unlink()                                   # missing file
    files[1].write_bytes(files[1].read_bytes() + b"x")  # bytes no longer match the id
    orphan = out / "images" / "00" / ("0" * 64 + ".jpg")
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"orphan")                       # object without a row
    (out / "images" / "00" / ".x.tmp").write_bytes(b"")  # leftover temp
    res = invoke("verify", out, "--report", tmp_path / "verify.json")
    assert res.exit_code == 1
    for word in ("file missing", "does not hash", "orphan", "temp file"):
        assert word in res.output, word
    figures = json.loads((tmp_path / "verify.json").read_text())  # --report: the same findings as JSON
    assert figures["ok"] is False and figures["problems"] == len(figures["breaches"]) >= 4
    assert len(m) > 2 and root.exists()
