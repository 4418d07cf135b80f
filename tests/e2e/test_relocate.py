"""Relocatable stage folders (issue 14): a scrape folder copied with `cp -r` is checked against
its own files, wherever it lies and whatever the working directory; an old-format scrape folder
(paths relative to the project root) still verifies and resumes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from datakit.manifest import MANIFEST, read_stage_manifest, write_table
from datakit.verify import verify
from tests.e2e.helpers import REPO, datakit_cmd, invoke, manifest, write_params

pytestmark = pytest.mark.timeout(180)


def _run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(datakit_cmd(*args), capture_output=True, text=True, timeout=150, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("relocate")
    (tmp / "project" / ".git").mkdir(parents=True)  # the project root the manifest paths were made against
    params = write_params(tmp / "project", per_query=17)  # 17: every kind of messy result (near copies: dedup groups)
    res = invoke("scrape", "--provider", "synthetic", "--params", params, "--out", tmp / "project" / "data" / "scrape",
                 "--report", tmp / "project" / "reports" / "scrape.json")
    assert res.exit_code == 0, res.output
    return tmp / "project" / "data" / "scrape"


def test_the_manifest_stores_paths_relative_to_its_folder(scraped: Path) -> None:
    raw = pq.read_table(scraped / MANIFEST)
    meta = {k.decode(): v.decode() for k, v in (raw.schema.metadata or {}).items() if k.startswith(b"datakit.")}
    assert meta["datakit.paths"] == "folder" and meta["datakit.stage"] == "scrape"
    paths = raw.column("path").to_pylist()
    assert paths and all(p.startswith("images/") for p in paths)  # not data/scrape/images/...
    failures = pq.read_schema(scraped / "failures.parquet")  # the one writer keeps the failures' integer types
    assert all(str(failures.field(c).type) == "int32" for c in ("rank", "attempts")), failures
    assert set(pq.read_table(scraped / "failures.parquet").column("stage").to_pylist()) == {"scrape"}
    df, root, _ = read_stage_manifest(scraped / MANIFEST)
    assert root == scraped.parents[1]  # in memory: relative to the project root again
    assert all(p.startswith("data/scrape/images/") for p in df["path"])
    assert all((root / p).is_file() for p in df["path"])


def test_a_copied_folder_verifies_against_its_own_files(scraped: Path, tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere" / "scrape2"
    copy.parent.mkdir()
    subprocess.run([shutil.which("cp") or "/bin/cp", "-r", str(scraped), str(copy)], check=True)  # as the issue did
    n = len(manifest(scraped))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    res = _run("verify", copy, cwd=elsewhere)  # another working directory, an absolute path
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{n} rows, {n} files hashed, no orphans" in res.stdout
    res = _run("verify", "scrape2", cwd=copy.parent)  # a relative path from the copy's parent
    assert res.returncode == 0, res.stdout + res.stderr

    # damage one file of the copy: verify names it; the original is untouched and still clean
    rel = read_stage_manifest(copy / MANIFEST)[0]["path"].iloc[2]
    df, root, _ = read_stage_manifest(copy / MANIFEST)
    damaged = root / df["path"].iloc[2]
    assert copy in damaged.parents
    damaged.write_bytes(damaged.read_bytes()[:-40] + b"\0" * 40)
    res = _run("verify", copy, cwd=elsewhere)
    assert res.returncode == 1
    breaches = [line for line in (res.stderr + res.stdout).splitlines() if "breach" in line]
    assert len(breaches) == 1, breaches
    assert damaged.name in breaches[0] and "does not hash to its image_id" in breaches[0] and "orphan" not in res.stderr
    assert rel.endswith(damaged.name)
    assert verify(scraped).ok  # the original's files were never touched or blamed

    # a file missing from the copy is named too (not found in the original instead)
    victim = root / df["path"].iloc[3]
    victim.unlink()
    rep = verify(copy)
    assert any("file missing" in p and victim.name in p for p in rep.problems), rep.problems
    assert verify(scraped).ok


def test_dedup_reads_a_copied_folder_from_another_cwd(scraped: Path, tmp_path: Path) -> None:
    copy = tmp_path / "moved" / "scrape"
    shutil.copytree(scraped, copy)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    out = tmp_path / "moved" / "dedup"
    res = _run("dedup", copy, "--out", out, "--report", tmp_path / "dedup.json", cwd=elsewhere)
    assert res.returncode == 0, res.stdout + res.stderr
    df, root, _ = read_stage_manifest(out / MANIFEST)
    assert len(df) == len(manifest(scraped))
    files = [root / p for p in df["path"]]
    assert all(f.is_file() and copy in f.parents for f in files)  # the copy's images, not the original's

    # the report reads the moved folders through the stage loader: the duplicate gallery shows the copy's images
    from datakit.report import build_report

    page = tmp_path / "report.html"
    result = build_report({"scrape": copy, "dedup": out}, None, page)
    assert result["sections"]["duplicates"] and result["duplicates"]["largest_shown"] > 0
    assert result["thumbnails"] > 0 and ">unreadable<" not in page.read_text()


def test_an_old_format_scrape_folder_still_verifies_and_resumes(scraped: Path, tmp_path: Path) -> None:
    project = tmp_path / "old"
    (project / ".git").mkdir(parents=True)
    folder = project / "data" / "scrape"
    shutil.copytree(scraped, folder)
    df, root, _ = read_stage_manifest(folder / MANIFEST)
    assert root == project
    write_table(df, folder / MANIFEST)  # as written before issue 14: root-relative, no `datakit.paths`
    assert pq.read_table(folder / MANIFEST).column("path").to_pylist()[0].startswith("data/scrape/images/")
    assert verify(folder).ok
    (folder / ".datakit" / "journal.jsonl").write_text("")  # lost journal: resume takes results back from the tables
    for extra in folder.glob(".datakit/journal-*.jsonl"):
        extra.unlink()
    params = write_params(project, per_query=17)
    res = invoke("scrape", "--provider", "synthetic", "--params", params, "--out", folder, "--report", project / "r.json")
    assert res.exit_code == 0, res.output
    assert "taken back from" in res.output or len(manifest(folder)) == len(df)
    again, _, meta = read_stage_manifest(folder / MANIFEST)
    assert meta.get("paths") == "folder"  # rewritten in the new format
    assert sorted(again["image_id"]) == sorted(df["image_id"]) and sorted(again["path"]) == sorted(df["path"])
    assert verify(folder).ok
