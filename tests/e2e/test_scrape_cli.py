"""`datakit scrape` end to end through the CLI against loopback provider servers."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from datakit.fsutil import folder_lock
from datakit.verify import verify
from tests.e2e.helpers import datakit_cmd, failures, invoke, manifest, run_subprocess, write_params

pytestmark = pytest.mark.timeout(180)


def image_requests(server) -> list:
    return [r for r in server.log if not r.path.startswith(("/v1/images", "/w/api.php", "/res/v1", "/services", "/v7.0"))]


def scrape(tmp_path: Path, server, *extra: str, provider: str = "openverse", params: Path | None = None):
    params = params or write_params(tmp_path)
    return invoke("scrape", "--provider", provider, "--endpoint", server.base_url, "--allow-private",
                  "--params", params, "--out", tmp_path / "out", "--report", tmp_path / "reports" / "scrape.json", *extra)


def test_openverse_scrape_accounts_for_every_result(tmp_path, provider_server) -> None:
    st = provider_server.configure("openverse", total=30)
    st.overrides.update({
        2: "/files/truncated-50.jpg", 3: "/html-as-jpeg/x.jpg", 4: "/files/bomb-10000.png", 5: "/status/404/x.jpg",
        6: "/files/script.svg", 7: "/copy/dup/openverse-striped-vest-0001.jpg", 8: "/files/image.tif",
        9: "/files/orient6.jpg",
    })
    res = scrape(tmp_path, provider_server, "--per-query", "25")
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    m, f = manifest(out), failures(out)
    report = json.loads((tmp_path / "reports" / "scrape.json").read_text())
    assert report["results"] == 4 * 25
    assert len(m) + len(f) == report["results"]  # N1: stored + failures == results
    assert verify(out).ok
    reasons = set(f["reason"])
    assert {"truncated", "not_an_image", "too_many_pixels", "http_404", "unsupported_format"} <= reasons
    assert "duplicate_bytes" in reasons
    # provenance and licence per image
    row = m.iloc[0]
    assert row["provider"] == "openverse" and row["license"] and row["license_url"].startswith("https://creativecommons.org/")
    assert row["page_url"] and row["source_url"].startswith(provider_server.base_url)
    assert set(m["label"]) == {"vest", "hoodie"}
    # paging exactly as the contract: 25 = 20 + 5, anonymous page_size <= 20
    calls = provider_server.requests("/v1/images/")
    assert len(calls) == 4 * 2 and all(int(c.query["page_size"]) <= 20 for c in calls)
    # raw responses saved with the dataset
    saved = list((out / "search" / "openverse").rglob("*.json"))
    assert len([p for p in saved if p.name != "hits.json"]) == 8 and len([p for p in saved if p.name == "hits.json"]) == 4
    # stored extension follows the detected format; rotated image stored with rotated dimensions
    assert all(p.endswith((".jpg", ".png", ".webp", ".gif")) for p in m["path"])


def test_rerun_after_success_makes_no_request(tmp_path, provider_server) -> None:  # RES-08, N4
    assert scrape(tmp_path, provider_server).exit_code == 0
    before = (tmp_path / "out" / "manifest.parquet").read_bytes()
    n = len(provider_server.log)
    assert scrape(tmp_path, provider_server).exit_code == 0
    assert len(provider_server.log) == n  # no search call, no image GET
    assert (tmp_path / "out" / "manifest.parquet").read_bytes() == before


def test_changed_inputs_need_extend(tmp_path, provider_server) -> None:  # RES-07
    assert scrape(tmp_path, provider_server).exit_code == 0
    res = scrape(tmp_path, provider_server, "--per-query", "12")
    assert res.exit_code == 1 and "--extend" in res.output and "per_query" in res.output
    assert scrape(tmp_path, provider_server, "--per-query", "12", "--extend").exit_code == 0


def test_search_api_html_is_an_error_not_zero_results(tmp_path, provider_server) -> None:  # NET-16
    provider_server.set_mode("openverse", "captcha")
    res = scrape(tmp_path, provider_server)
    assert res.exit_code == 1 and "unexpected response" in res.output
    assert image_requests(provider_server) == []


def test_throttled_search_waits_and_continues(tmp_path, provider_server) -> None:  # NET-12 on the API
    provider_server.set_mode("openverse", "throttle", times=1, retry_after=1)
    res = scrape(tmp_path, provider_server)
    assert res.exit_code == 0, res.output


def test_class_with_zero_results_fails_the_run(tmp_path, provider_server) -> None:  # NET-17
    provider_server.configure("openverse", zero={"striped hoodie", "dotted hoodie"})
    res = scrape(tmp_path, provider_server)
    assert res.exit_code == 3
    assert "hoodie" in res.output and "min_per_label" in res.output
    assert (tmp_path / "out" / "manifest.parquet").exists()  # what was gathered is kept


def test_literal_internal_urls_blocked_without_allow_private(tmp_path, provider_server) -> None:  # SEC-01
    params = write_params(tmp_path)
    res = invoke("scrape", "--provider", "openverse", "--endpoint", provider_server.base_url, "--params", params,
                 "--out", tmp_path / "out", "--report", tmp_path / "r.json")
    assert res.exit_code == 3  # nothing stored: every label short
    f = failures(tmp_path / "out")
    assert set(f["reason"]) == {"blocked_port"} or set(f["reason"]) <= {"blocked_address", "blocked_port"}
    assert image_requests(provider_server) == []


def test_dry_run_makes_no_request_and_no_write(tmp_path, provider_server) -> None:  # CFG-10
    res = scrape(tmp_path, provider_server, "--dry-run")
    assert res.exit_code == 0 and "'striped vest' -> label 'vest'" in res.output
    assert provider_server.log == [] and not (tmp_path / "out").exists()


def test_help_teaches() -> None:
    res = invoke("scrape", "--help")
    assert res.exit_code == 0
    for word in ("manifest.parquet", "failures.parquet", "--provider", "Examples"):
        assert word in res.output
    top = invoke("--help")
    assert "scrape" in top.output and "verify" in top.output


CANARY = "CANARY-KEY-7f3a9c"


def test_api_key_never_leaks(tmp_path, provider_server, monkeypatch) -> None:  # SEC-08, SEC-09, CFG-01/02
    provider_server.providers["brave"].key = CANARY
    monkeypatch.setenv("BRAVE_API_KEY", CANARY)
    provider_server.configure("brave", total=12)
    provider_server.providers["brave"].overrides.update({1: "/status/500/x.jpg", 2: "/files/truncated-50.jpg",
                                                         3: f"/redirect?to={provider_server.image_url('r.jpg')}"})
    res = scrape(tmp_path, provider_server, provider="brave")
    assert res.exit_code == 0, res.output
    assert CANARY not in res.output
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path
    for rec in image_requests(provider_server):  # the image session carries no credentials
        assert CANARY not in json.dumps(rec.headers) and CANARY not in rec.raw_query
    # a wrong key: the error names the variable, never the value
    monkeypatch.setenv("BRAVE_API_KEY", CANARY + "-wrong")
    res = scrape(tmp_path / "b", provider_server, provider="brave") if (tmp_path / "b").mkdir() is None else None
    assert res.exit_code == 1 and "BRAVE_API_KEY" in res.output and CANARY not in res.output
    # the key is refused on the command line
    res = invoke("scrape", "--provider", "brave", "--api-key", CANARY, "--out", tmp_path / "c")
    assert res.exit_code == 2 and CANARY not in res.output


def test_missing_key_fails_before_any_request(tmp_path, provider_server, monkeypatch) -> None:  # CFG-01
    monkeypatch.delenv("FLICKR_API_KEY", raising=False)
    res = scrape(tmp_path, provider_server, provider="flickr")
    assert res.exit_code == 1 and "FLICKR_API_KEY" in res.output
    assert provider_server.log == []


def test_second_run_on_same_folder_fails_fast(tmp_path, provider_server) -> None:  # CON-01
    out = tmp_path / "out"
    out.mkdir()
    with folder_lock(out):
        t0 = time.monotonic()
        res = scrape(tmp_path, provider_server)
        assert res.exit_code == 1 and "in use by another" in res.output and f"pid {os.getpid()}" in res.output
        assert time.monotonic() - t0 < 5
    assert provider_server.log == []


def test_killed_lock_holder_releases_the_lock(tmp_path) -> None:  # CON-02
    out = tmp_path / "out"
    code = ("import sys, time; from pathlib import Path; from datakit.fsutil import folder_lock\n"
            f"with folder_lock(Path({str(out)!r})):\n    print('locked', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([os.sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    proc.kill()
    proc.wait()
    t0 = time.monotonic()
    with folder_lock(out):
        pass
    assert time.monotonic() - t0 < 1


@pytest.mark.parametrize("fault", ["after_store:5", "after_journal:7", "manifest_written"])
def test_crash_at_each_commit_step_then_resume(tmp_path, provider_server, fault: str) -> None:  # RES-02
    params = write_params(tmp_path)
    args = ["scrape", "--provider", "openverse", "--endpoint", provider_server.base_url, "--allow-private",
            "--params", params, "--out", tmp_path / "out", "--report", tmp_path / "r.json"]
    first = run_subprocess(*args, env={"DATAKIT_FAULT": fault})
    assert first.returncode == -9, first.stderr
    second = run_subprocess(*args)
    assert second.returncode == 0, second.stderr
    rep = verify(tmp_path / "out")
    assert rep.ok, rep.problems
    m = manifest(tmp_path / "out")
    assert m["image_id"].is_unique and len(m) + len(failures(tmp_path / "out")) == 40


def test_sigkill_at_random_moments_then_resume(tmp_path, provider_server) -> None:  # RES-01
    provider_server.configure("openverse", total=60)
    params = write_params(tmp_path, items=["vest"], attributes=["striped"], per_query=50,
                          fetch={"concurrency": 4, "per_host": 4})
    st = provider_server.providers["openverse"]
    for rank in range(1, 51):  # slow images, so the kills land mid-download
        st.overrides[rank] = f"/slow/200/openverse-r{rank}.jpg"
    args = ["scrape", "--provider", "openverse", "--endpoint", provider_server.base_url, "--allow-private",
            "--params", params, "--out", tmp_path / "out", "--report", tmp_path / "r.json"]
    journal = tmp_path / "out" / ".datakit" / "journal.jsonl"

    def settled() -> set[str]:
        if not journal.exists():
            return set()
        return {json.loads(x)["key"] for x in journal.read_text().splitlines() if x.strip().endswith("}")}

    settled_before: set[str] = set()
    for extra in (0.05, 0.3, 0.6):  # kill a little after new results settle, at different moments
        proc = subprocess.Popen(datakit_cmd(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(settled()) <= len(settled_before) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(extra)
        proc.kill()
        proc.wait()
        settled_before = settled()
    assert settled_before, "no result settled before the kills: slow the server down"
    gets_before = len(image_requests(provider_server))
    done = run_subprocess(*args)
    assert done.returncode == 0, done.stderr
    rep = verify(tmp_path / "out")
    assert rep.ok, rep.problems
    m, f = manifest(tmp_path / "out"), failures(tmp_path / "out")
    assert m["image_id"].is_unique and len(m) + len(f) == 50
    # settled URLs were not fetched again: the final run fetched only what was unsettled
    gets_after = len(image_requests(provider_server)) - gets_before
    assert gets_after <= 50 - len(settled_before)
