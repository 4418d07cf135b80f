"""`fetched_at` in the scrape manifest (issue 16, the datasheet's collection dates): the time datakit
downloaded each image over HTTP, ISO 8601 UTC to the second; null for images read from local
files (folder, synthetic: their manifests stay free of wall-clock values); SOURCE_DATE_EPOCH
replaces the clock; a resumed run keeps the time of every image it already had, whether the
journal, an old journal without the field, or the manifest tables it rebuilds from name it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datakit.errors import DatakitError
from datakit.report import DATASHEET, build_report
from datakit.scrape.fetch import fetch_time
from datakit.verify import verify
from tests.e2e.helpers import datakit_cmd, invoke, manifest, sigterm_after_requests, write_params
from tests.fixtures import images as F
from tests.fixtures.servers import serve

pytestmark = pytest.mark.timeout(180)

STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
EPOCH = "1000000000"  # SOURCE_DATE_EPOCH of the resumed run
EPOCH_STAMP = "2001-09-09T01:46:40Z"
N = 24


def _env(source_date_epoch: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}  # the clock unless asked otherwise
    if source_date_epoch is not None:
        env["SOURCE_DATE_EPOCH"] = source_date_epoch
    return env


def _scrape(args: list[Any], source_date_epoch: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(datakit_cmd(*args), capture_output=True, text=True, timeout=120, env=_env(source_date_epoch))


def _seconds(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _image_paths(log: list[Any]) -> set[str]:
    return {r.path for r in log}


def test_fetch_time_clock_and_source_date_epoch(monkeypatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert fetch_time(lambda: 1796479392.9) == "2026-12-05T14:03:12Z"  # second precision, truncated
    now = time.time()
    assert abs(_seconds(fetch_time()) - now) < 2
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "")
    assert fetch_time(lambda: 0.0) == "1970-01-01T00:00:00Z"  # empty: as if unset
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    assert fetch_time(lambda: 1796479392.0) == EPOCH_STAMP  # never the clock
    for bad in ("yesterday", "-5", "1.5", "99999999999999999999"):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", bad)
        with pytest.raises(DatakitError, match="SOURCE_DATE_EPOCH"):
            fetch_time()


@pytest.fixture(scope="module")
def resumed(tmp_path_factory) -> dict[str, Any]:
    """An HTTP scrape of N images from the loopback server, SIGTERMed after a few, then resumed
    with SOURCE_DATE_EPOCH set (and two download workers): the first run's images carry its real
    times, the rest the epoch's."""
    tmp = tmp_path_factory.mktemp("fetched-at")
    out = tmp / "out"
    with serve() as server:
        urls = [(server.url(f"/slow/150/fa-{i}.jpg"), "a" if i % 2 else "b") for i in range(N)]
        source = tmp / "urls.csv"
        pd.DataFrame(urls, columns=["url", "label"]).to_csv(source, index=False)
        params = write_params(tmp, min_per_label=0, fetch={"concurrency": 2, "per_host": 2})
        args = ["scrape", "--provider", "urls", "--source", source, "--allow-private", "--params", params,
                "--out", out, "--report", tmp / "r.json"]
        start = time.time()
        code, err = sigterm_after_requests(server, 6, *args, env=_env())
        end = time.time()
        assert code == 143, err
        first = manifest(out)
        first_requests = _image_paths(server.log)
        before = len(server.log)
        write_params(tmp, min_per_label=0, fetch={"concurrency": 2, "per_host": 2, "workers": 2, "workers_min_items": 0})
        done = _scrape(args, EPOCH)
        assert done.returncode == 0, done.stderr
        resumed_requests = [r.path for r in server.log[before:]]
    assert json.loads((tmp / "r.json").read_text())["workers"] == 2
    return {"tmp": tmp, "out": out, "args": args, "start": start, "end": end, "first": first,
            "first_requests": first_requests, "resumed_requests": resumed_requests, "final": manifest(out)}


def test_http_fetch_records_the_time_and_a_resume_keeps_it(resumed) -> None:
    first, final = resumed["first"], resumed["final"]
    assert 0 < len(first) < N and len(final) == N and verify(resumed["out"]).ok
    assert pq.read_schema(resumed["out"] / "manifest.parquet").field("fetched_at").type == pa.string()
    # the first run: the real download time of every image it stored, within the run
    assert all(isinstance(s, str) and STAMP.fullmatch(s) for s in first["fetched_at"])
    assert all(int(resumed["start"]) <= _seconds(s) <= resumed["end"] for s in first["fetched_at"])
    # the resume fetched none of them again and kept their times; the rest got SOURCE_DATE_EPOCH's
    had = dict(zip(first["source_url"], first["fetched_at"], strict=True))
    assert not {p for p in resumed["resumed_requests"] if any(u.endswith(p) for u in had)}
    for url, stamp in zip(final["source_url"], final["fetched_at"], strict=True):
        assert stamp == had.get(url, EPOCH_STAMP), url
    assert (final["fetched_at"] == EPOCH_STAMP).sum() == N - len(first)
    # the journals carry it too (the workers' files included)
    recs = [json.loads(line) for p in (resumed["out"] / ".datakit").glob("journal*.jsonl")
            for line in p.read_text().splitlines() if line.strip()]
    assert {r["fetched_at"] for r in recs if r["status"] == "ok"} == set(final["fetched_at"])


def _rerun(resumed: dict[str, Any], tmp_path: Path, change: Any) -> tuple[pd.DataFrame, subprocess.CompletedProcess[str]]:
    """Copy the finished folder, `change(copy)`, re-run with the image host gone (nothing can be
    fetched) and with a SOURCE_DATE_EPOCH no kept time may take."""
    out = tmp_path / "out"
    shutil.copytree(resumed["out"], out)
    change(out)
    swap = {resumed["out"]: out, resumed["tmp"] / "r.json": tmp_path / "r.json"}
    args = [swap.get(a, a) if isinstance(a, Path) else a for a in resumed["args"]]
    done = _scrape(args, "1")
    assert done.returncode == 0, done.stderr
    return manifest(out), done


def test_rebuilt_from_the_manifest_when_the_journal_is_lost(resumed, tmp_path) -> None:
    def lose_journals(out: Path) -> None:
        for p in (out / ".datakit").glob("journal*.jsonl"):
            p.unlink()

    m, done = _rerun(resumed, tmp_path, lose_journals)
    assert "taken back from manifest.parquet" in " ".join(done.stderr.split())
    pd.testing.assert_series_equal(m["fetched_at"], resumed["final"]["fetched_at"])


def test_old_journal_and_old_manifest_without_the_field_resume_as_null(resumed, tmp_path) -> None:
    def old_journals(out: Path) -> None:
        for p in (out / ".datakit").glob("journal*.jsonl"):
            recs = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
            p.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "fetched_at"}) + "\n" for r in recs))

    m, _ = _rerun(resumed, tmp_path / "journal", old_journals)
    assert len(m) == N and m["fetched_at"].isna().all()
    assert list(m["image_id"]) == list(resumed["final"]["image_id"])

    def old_manifest_only(out: Path) -> None:  # a manifest written before the column, no journal
        path = out / "manifest.parquet"
        table = pq.read_table(path)
        pq.write_table(table.drop(["fetched_at"]), path)
        for p in (out / ".datakit").glob("journal*.jsonl"):
            p.unlink()

    m, _ = _rerun(resumed, tmp_path / "manifest", old_manifest_only)
    assert len(m) == N and m["fetched_at"].isna().all()
    assert sorted(m["image_id"]) == sorted(resumed["final"]["image_id"])


def test_datasheet_gives_the_first_and_last_fetch_dates(resumed, tmp_path) -> None:
    real = sorted(s for s in resumed["final"]["fetched_at"] if s != EPOCH_STAMP)
    last = datetime.fromtimestamp(_seconds(real[-1]), UTC).strftime("%Y-%m-%d %H:%M UTC")
    build_report({"scrape": resumed["out"]}, None, tmp_path / "r.html", datasheet=tmp_path / DATASHEET,
                 project=tmp_path)
    text = (tmp_path / DATASHEET).read_text(encoding="utf-8")
    assert f"`fetched_at` from 2001-09-09 01:46 UTC to {last}" in text, text
    assert "no fetch time" not in text


def test_local_files_have_no_fetch_time_and_stay_deterministic(tmp_path) -> None:
    src = tmp_path / "photos"
    for n, label in enumerate(("cats", "dogs")):
        (src / label).mkdir(parents=True)
        for i in range(3):
            F.photo(64, 64, seed=10 * n + i).save(src / label / f"{i}.jpg")
    params = write_params(tmp_path, items=["vest"], attributes=["striped"], per_query=8)
    folder = _scrape(["scrape", "--provider", "folder", "--source", src, "--params", params,
                      "--out", tmp_path / "folder", "--report", tmp_path / "f.json"])
    assert folder.returncode == 0, folder.stderr
    m = manifest(tmp_path / "folder")
    assert len(m) == 6 and m["fetched_at"].isna().all()
    runs = {}
    for name, epoch in (("plain", None), ("epoch", EPOCH), ("malformed", "not-a-time")):  # the clock is never read
        done = _scrape(["scrape", "--provider", "synthetic", "--params", params, "--out", tmp_path / name,
                        "--report", tmp_path / f"{name}.json"], epoch)
        assert done.returncode == 0, done.stderr
        runs[name] = (tmp_path / name / "manifest.parquet").read_bytes()
    synthetic = manifest(tmp_path / "plain")
    assert len(synthetic) > 0 and synthetic["fetched_at"].isna().all()
    assert runs["plain"] == runs["epoch"] == runs["malformed"]


def test_malformed_source_date_epoch_stops_an_http_scrape_before_any_request(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "2026-12-05")
    with serve() as server:
        source = tmp_path / "urls.csv"
        pd.DataFrame([(server.image_url("x.jpg"), "a")], columns=["url", "label"]).to_csv(source, index=False)
        res = invoke("scrape", "--provider", "urls", "--source", source, "--allow-private",
                     "--params", write_params(tmp_path), "--out", tmp_path / "out")
        assert res.exit_code == 1 and "SOURCE_DATE_EPOCH='2026-12-05'" in " ".join(res.output.split()), res.output
        assert server.log == []
