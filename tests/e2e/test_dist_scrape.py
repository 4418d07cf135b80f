"""Download shards as Dask tasks (DATAKIT_DASK_SCHEDULER=local:2): the same manifest bytes as the
local worker processes, per-host politeness still global, and per-shard journals that resume."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from datakit.verify import verify
from tests.e2e.helpers import failures, manifest, run_subprocess, sigterm_after_requests, write_params

pytest.importorskip("distributed")
pytestmark = pytest.mark.timeout(120)

PER_HOST = 3


def _scrape(tmp_path: Path, name: str, urls_file: Path, env: dict[str, str]) -> tuple[Path, dict]:
    """One run in its own project folder `tmp_path/name` (manifest paths are project-relative,
    so the two runs' manifests can be compared byte for byte)."""
    project = tmp_path / name
    project.mkdir(exist_ok=True)
    params = write_params(project, fetch={"workers": 2, "workers_min_items": 0, "concurrency": 8, "per_host": PER_HOST})
    out, report = project / "out", project / "report.json"
    args = ["scrape", "--provider", "urls", "--source", urls_file, "--allow-private", "--params", params,
            "--out", out, "--report", report]
    done = run_subprocess(*args, env=env)
    assert done.returncode == 0, done.stderr
    return out, json.loads(report.read_text())


def test_dask_shards_match_local_workers_and_keep_per_host_global(tmp_path, provider_server, public_server) -> None:
    urls = []
    for i in range(60):
        server = provider_server if i % 2 else public_server
        urls.append((server.url(f"/slow/30/d-{i}.jpg"), f"c{i % 3}"))
    urls += [(provider_server.url("/files/truncated-50.jpg"), "c0"), (public_server.url("/status/404/x.jpg"), "c1"),
             (provider_server.url("/copy/k/d-7.jpg"), "c2")]
    urls_file = tmp_path / "urls.csv"
    pd.DataFrame(urls, columns=["url", "label"]).to_csv(urls_file, index=False)

    # one fetch time for both runs (reproducible-builds convention), so the manifests can match byte for byte
    epoch = {"SOURCE_DATE_EPOCH": "1764547200"}
    local, local_report = _scrape(tmp_path, "local", urls_file, {"DATAKIT_DASK_SCHEDULER": "", **epoch})
    assert local_report["workers"] == 2
    for server in (provider_server, public_server):
        server.reset_stats()

    dist_env = {"DATAKIT_DASK_SCHEDULER": "local:2", **epoch}
    dist, dist_report = _scrape(tmp_path, "dist", urls_file, dist_env)
    assert dist_report["workers"] == 2 and dist_report["download_executor"] == "dask"
    assert "download_executor" not in local_report  # no scheduler: the local worker processes
    # politeness stays global: the two shards together never exceed per_host on either host
    assert 0 < provider_server.peak_in_flight <= PER_HOST
    assert 0 < public_server.peak_in_flight <= PER_HOST

    # the same bytes wherever the shards ran
    assert (dist / "manifest.parquet").read_bytes() == (local / "manifest.parquet").read_bytes()
    assert (dist / "failures.parquet").read_bytes() == (local / "failures.parquet").read_bytes()
    m, f = manifest(dist), failures(dist)
    assert len(m) + len(f) == len(urls) and verify(dist).ok
    assert {"truncated", "http_404"} <= set(f["reason"])
    assert set(m["fetched_at"]) == {"2025-12-01T00:00:00Z"}  # every stored image was downloaded, at "the" time

    # settled results live in the per-shard journals: a second run fetches nothing again
    n = len(provider_server.log) + len(public_server.log)
    _scrape(tmp_path, "dist", urls_file, dist_env)
    assert len(provider_server.log) + len(public_server.log) == n
    assert (dist / "manifest.parquet").read_bytes() == (local / "manifest.parquet").read_bytes()


def test_dask_shards_stop_on_sigterm_and_resume(tmp_path, provider_server) -> None:  # RES-05 on Dask
    urls = [(provider_server.url(f"/slow/100/t-{i}.jpg"), "a" if i % 2 else "b") for i in range(120)]
    urls_file = tmp_path / "urls.csv"
    pd.DataFrame(urls, columns=["url", "label"]).to_csv(urls_file, index=False)
    params = write_params(tmp_path, fetch={"workers": 2, "workers_min_items": 0, "concurrency": 4, "per_host": 4})
    args = ["scrape", "--provider", "urls", "--source", urls_file, "--allow-private", "--params", params,
            "--out", tmp_path / "out", "--report", tmp_path / "r.json"]
    env = {**os.environ, "DATAKIT_DASK_SCHEDULER": "local:2"}
    code, err = sigterm_after_requests(provider_server, 20, *args, env=env)
    assert code == 143, err
    assert not list((tmp_path / "out" / ".datakit").glob("stop-*"))
    partial = manifest(tmp_path / "out")
    assert 0 < len(partial) < len(urls) and verify(tmp_path / "out").ok
    time.sleep(0.5)  # nothing keeps fetching once the run has stopped
    before = len(provider_server.log)
    time.sleep(0.5)
    assert len(provider_server.log) == before
    assert run_subprocess(*args, env={"DATAKIT_DASK_SCHEDULER": "local:2"}).returncode == 0
    assert len(manifest(tmp_path / "out")) == len(urls) and verify(tmp_path / "out").ok
    assert len(provider_server.log) - before <= len(urls) - len(partial)
