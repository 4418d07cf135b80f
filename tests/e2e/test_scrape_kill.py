"""Damaged bookkeeping and killed processes (issue 13, B5 and B4; reliability.md RES-01/02, CON-02).

B5: a damaged journal line must never make recovery delete an image whose bytes hash to its
name. B4: download workers die with the main process, and the folder lock covers them, so a
re-run never starts beside workers of a run whose main process was SIGKILLed (the OOM killer).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from datakit.verify import verify
from tests.e2e.helpers import datakit_cmd, failures, manifest, run_subprocess, write_params
from tests.fixtures.servers import serve

pytestmark = pytest.mark.timeout(180)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _urls_file(folder: Path, urls: list[tuple[str, str]]) -> Path:
    path = folder / "urls.csv"
    pd.DataFrame(urls, columns=["url", "label"]).to_csv(path, index=False)
    return path


def _flat(text: str) -> str:
    """stderr with rich's line wrapping undone."""
    return re.sub(r"\s+", " ", text)


def _objects(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (out / "images").glob("*/*") if p.is_file()}


# ------------------------------------------------------------------------------------ B5


def test_res02_damaged_journal_line_keeps_verified_images(tmp_path) -> None:
    """B5: cut one line in the middle of a worker journal of a finished scrape, stop the image
    host, re-run: nothing stored is deleted, the manifest comes back whole, and stderr names
    the damaged file and line."""
    out = tmp_path / "out"
    with serve() as server:
        urls = [(server.image_url(f"b5-{i}.jpg"), "a" if i % 2 else "b") for i in range(120)]
        urls.append((server.url("/status/404/gone.jpg"), "a"))
        params = write_params(tmp_path, fetch={"workers": 2, "workers_min_items": 0, "concurrency": 8, "per_host": 8})
        args = ["scrape", "--provider", "urls", "--source", _urls_file(tmp_path, urls), "--allow-private",
                "--params", params, "--out", out, "--report", tmp_path / "r.json"]
        first = run_subprocess(*args)
        assert first.returncode == 0, first.stderr
    # the image host is gone from here on: nothing can be fetched again
    before_m, before_f = manifest(out), failures(out)
    before = _objects(out)
    assert len(before) == 120 and len(before_m) == 120 and list(before_f["reason"]) == ["http_404"]

    journal = out / ".datakit" / "journal-w0.jsonl"
    lines = journal.read_bytes().split(b"\n")
    assert len(lines) > 20
    middle = len(lines) // 3
    lines[middle] = lines[middle][: len(lines[middle]) // 2]  # one line cut short, the rest intact
    journal.write_bytes(b"\n".join(lines))

    second = run_subprocess(*args)
    assert second.returncode == 0, second.stderr
    assert _objects(out) == before, "a stored image whose bytes match its name was deleted"
    after_m = manifest(out)
    key = ["image_id", "source_url", "label", "path"]
    pd.testing.assert_frame_equal(after_m[key].sort_values("image_id").reset_index(drop=True),
                                  before_m[key].sort_values("image_id").reset_index(drop=True))
    assert list(failures(out)["reason"]) == ["http_404"]
    rep = verify(out)
    assert rep.ok, rep.problems
    said = _flat(second.stderr)
    assert "journal-w0.jsonl: damaged journal line" in said and f"line {middle + 1} skipped" in said, said


def test_res02_orphans_kept_when_they_hash_to_their_name(tmp_path) -> None:
    """With the journal and the manifest both gone and the host down, recovery keeps every
    object whose bytes hash to its name and removes only a file that does not."""
    out = tmp_path / "out"
    with serve() as server:
        urls = [(server.image_url(f"orph-{i}.png"), "a") for i in range(12)]
        params = write_params(tmp_path, min_per_label=0)
        args = ["scrape", "--provider", "urls", "--source", _urls_file(tmp_path, urls), "--allow-private",
                "--params", params, "--out", out, "--report", tmp_path / "r.json"]
        assert run_subprocess(*args).returncode == 0
    good = _objects(out)
    assert len(good) == 12
    for p in (out / ".datakit").glob("journal*.jsonl"):
        p.unlink()
    (out / "manifest.parquet").unlink()
    liar = out / "images" / "00" / ("0" * 64 + ".png")
    liar.parent.mkdir(exist_ok=True)
    liar.write_bytes(b"these bytes do not hash to the name")
    done = run_subprocess(*args)
    assert done.returncode == 0, done.stderr
    assert _objects(out) == good  # every good object kept, the liar removed
    assert not liar.exists()
    assert f"{liar.name}: its bytes do not hash to its name" in _flat(done.stderr)


# ------------------------------------------------------------------------------------ B4


def _children(pid: int) -> set[int]:
    kids: set[int] = set()
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                kids |= {int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()}
            except OSError:
                pass
    except OSError:
        pass
    return kids


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie nobody has reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


@linux_only
def test_con02_sigkill_of_main_only_takes_the_workers_with_it(tmp_path) -> None:
    """B4: SIGKILL only the main process (what the OOM killer does). Its download workers are
    gone within a few seconds; the re-run then settles every URL without fetching a settled
    one twice and without exceeding per_host."""
    out = tmp_path / "out"
    with serve() as server:
        urls = [(server.url(f"/slow/150/k-{i}.jpg"), "a" if i % 2 else "b") for i in range(160)]
        params = write_params(tmp_path, fetch={"workers": 2, "workers_min_items": 0, "concurrency": 4, "per_host": 4})
        args = ["scrape", "--provider", "urls", "--source", _urls_file(tmp_path, urls), "--allow-private",
                "--params", params, "--out", out, "--report", tmp_path / "r.json"]
        proc = subprocess.Popen(datakit_cmd(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        workers: set[int] = set()
        while time.monotonic() < deadline and (len(server.log) < 12 or len(workers) < 2):
            workers |= {c for c in _children(proc.pid) if "multiprocessing" in _cmdline(c) and "spawn_main" in _cmdline(c)}
            time.sleep(0.05)
        assert len(workers) == 2, f"expected 2 download workers, found {workers}"
        os.kill(proc.pid, signal.SIGKILL)  # the main process only
        proc.wait()
        killed_at = time.monotonic()
        while any(_alive(w) for w in workers) and time.monotonic() - killed_at < 5:
            time.sleep(0.02)
        orphans = [w for w in workers if _alive(w)]
        try:
            assert not orphans, f"download workers {orphans} outlived their SIGKILLed parent"
        finally:
            for w in orphans:
                os.kill(w, signal.SIGKILL)
        settled_paths = {r.path for r in server.log if r.status == 200}
        n_before = len(server.log)
        server.peak_in_flight = 0
        again = run_subprocess(*args)
        assert again.returncode == 0, again.stderr
        later = server.log[n_before:]
        assert server.peak_in_flight <= 4
    m, f = manifest(out), failures(out)
    assert len(m) + len(f) == len(urls) and len(f) == 0
    rep = verify(out)
    assert rep.ok, rep.problems
    # a URL answered before the kill is fetched again only if its result was not yet journaled
    again_paths = [r.path for r in later]
    assert len(again_paths) == len(set(again_paths))
    assert len(set(again_paths) & settled_paths) <= 8  # at most the in-flight ones (4 per worker)


@linux_only
def test_con02_lock_covers_download_workers(tmp_path) -> None:
    """B4: a worker started under the folder lock holds it too: while a worker of an earlier
    run is alive, however its parent died, a new run on the folder is refused."""
    import multiprocessing as mp

    from datakit.errors import LockedError
    from datakit.fsutil import folder_lock
    from datakit.scrape.download import start_worker

    out = tmp_path / "out"
    ctx = mp.get_context("spawn")
    with folder_lock(out, "datakit scrape") as lock_fd:
        proc = start_worker(ctx, time.sleep, (60,), name="datakit-test-worker", lock_fd=lock_fd)
    try:
        time.sleep(0.5)
        assert proc.is_alive()
        with pytest.raises(LockedError):  # the parent let go, the worker still holds the lock
            with folder_lock(out, "datakit scrape"):
                pass
    finally:
        proc.kill()
        proc.join(10)
    with folder_lock(out, "datakit scrape"):  # the last holder is gone: free at once
        pass
