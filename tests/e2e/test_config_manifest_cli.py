"""Issue 13 (configuration and manifests) through the command line: misspelt params sections
(B6), a non-UTF-8 params file (B7), a null image_id in verify (B8), manifest paths that escape
the project (B9), unknown split names (B12), the lock holder's command (B10) and predict over an
unreadable file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from datakit.fsutil import folder_lock
from datakit.images import ImageStore
from datakit.manifest import CORE_COLUMNS, write_table
from tests.e2e.helpers import invoke
from tests.fixtures.images import jpeg

pytestmark = pytest.mark.timeout(300)


def _project(tmp: Path, n: int = 6) -> tuple[Path, pd.DataFrame]:
    """`tmp/stage/manifest.parquet`: n stored JPEGs in two classes with a split column; paths
    are relative to `tmp` (the project root of a folder with no .git/.dvc above it)."""
    stage = tmp / "stage"
    store = ImageStore(stage)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        data = jpeg(seed=i)
        image_id, rel = store.put(data, "jpg")
        rows.append({**{c: None for c in CORE_COLUMNS}, "image_id": image_id,
                     "path": (stage / rel).relative_to(tmp).as_posix(), "label": "ab"[i % 2],
                     "width": 96, "height": 64, "format": "JPEG", "bytes": len(data),
                     "split": ("train", "test")[i // 2 % 2], "keep": True})
    df = pd.DataFrame(rows)
    write_table(df, stage / "manifest.parquet")
    return stage, df


def _params(tmp: Path, text: str | bytes) -> Path:
    p = tmp / "params.yaml"
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


# ----------------------------------------------------------------------------- B6, B7


@pytest.mark.parametrize("command", ["dedup", "split"])
def test_misspelt_section_stops_the_stage_naming_file_key_and_closest(tmp_path: Path, command: str) -> None:  # B6
    stage, _ = _project(tmp_path)
    params = _params(tmp_path, "dedupe: {threshold: 2}\nsplit: {seed: 1}\n")
    res = invoke(command, stage, "--params", params, "--out", tmp_path / "out", "--report", tmp_path / "r.json")
    assert res.exit_code == 1
    assert f"{params}: unknown section 'dedupe' (did you mean dedup?); allowed: scrape, dedup" in res.output
    assert not (tmp_path / "out" / "manifest.parquet").exists() and not (tmp_path / "r.json").exists()


def test_scrap_section_never_falls_back_to_the_default_provider(tmp_path: Path) -> None:  # B6
    params = _params(tmp_path, "scrap: {provider: synthetic, items: [vest]}\n")
    res = invoke("scrape", "--params", params, "--out", tmp_path / "out", "--report", tmp_path / "r.json")
    assert res.exit_code == 1 and "unknown section 'scrap' (did you mean scrape?)" in res.output
    assert not (tmp_path / "out" / "manifest.parquet").exists()


def test_non_utf8_params_is_one_line_not_a_traceback(tmp_path: Path) -> None:  # B7
    stage, _ = _project(tmp_path)
    params = _params(tmp_path, "split:\n  seed: 1  # d\xe9faut\n".encode("latin-1"))
    res = invoke("split", stage, "--params", params, "--out", tmp_path / "out", "--report", tmp_path / "r.json")
    assert res.exit_code == 1  # invoke() lets any exception through: a traceback would fail here
    line = res.output.strip()
    assert "\n" not in line and str(params) in line and "not UTF-8" in line and "byte offset 21, line 2" in line


def test_report_names_a_non_utf8_params_file(tmp_path: Path) -> None:  # B7, `datakit report --params`
    params = _params(tmp_path, b"train: {lr: 0.1}  # \xff\n")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "scrape.json").write_text("{}")
    res = invoke("report", "--data", tmp_path, "--reports", tmp_path / "reports", "--params", params,
                 "--out", tmp_path / "r.html")
    assert res.exit_code == 1 and str(params) in res.output and "not UTF-8" in res.output


# ----------------------------------------------------------------------------- B8


def test_verify_reports_a_null_image_id_instead_of_crashing(tmp_path: Path) -> None:  # B8
    stage, df = _project(tmp_path)
    df.loc[3, "image_id"] = None
    write_table(df, stage / "manifest.parquet")
    (tmp_path / df.loc[5, "path"]).write_bytes(b"changed")
    res = invoke("verify", stage, "--report", tmp_path / "verify.json")
    assert res.exit_code == 1
    assert "empty image_id in rows 3" in res.output
    assert "row 5:" in res.output and "does not hash to its image_id" in res.output  # the other rows are still checked
    assert "orphan" not in res.output  # row 3 still names its file


# ----------------------------------------------------------------------------- B9


def _escaping(tmp_path: Path) -> tuple[Path, Path]:
    """A manifest whose rows 1-4 name files outside the project: a `..` path, an absolute path
    to an outside copy of an image (so its sha256 matches), a store symlink pointing at that
    copy, and a symlinked folder leading out."""
    project = tmp_path / "project"
    project.mkdir()
    stage, df = _project(project)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    copy = outside / "copy.jpg"
    shutil.copy(project / df.loc[2, "path"], copy)
    (outside / "sub").mkdir()
    shutil.copy(project / df.loc[4, "path"], outside / "sub" / "x.jpg")
    link = project / df.loc[3, "path"]
    link.unlink()
    link.symlink_to(copy)
    (stage / "linked").symlink_to(outside / "sub", target_is_directory=True)
    df.loc[1, "path"] = "../" * 12 + "etc/passwd"
    df.loc[2, "path"] = str(copy)
    df.loc[4, "path"] = "stage/linked/x.jpg"
    write_table(df, stage / "manifest.parquet")
    return project, stage


@pytest.mark.parametrize("command", ["verify", "dedup", "split", "audit"])
def test_paths_escaping_the_project_are_refused_naming_the_rows(tmp_path: Path, command: str) -> None:  # B9, SEC-10
    project, stage = _escaping(tmp_path)
    if command == "split":  # split reads deduplicated data (its input kind): the rows get their dup groups first
        df = pd.read_parquet(stage / "manifest.parquet")
        write_table(df.assign(dup_group=df["image_id"], keep=True), stage / "manifest.parquet")
    args: list[Any] = [command, stage]
    # verify reports its breaches (a check, not a stage that stops): its figures go elsewhere
    args += ["--report", tmp_path / ("r.json" if command != "verify" else "verify.json")]
    if command in ("dedup", "split"):
        args += ["--out", project / "out"]
    res = invoke(*args)
    assert res.exit_code == 1, res.output
    assert "outside the project" in res.output and "rows 1, 2, 3, 4" in res.output
    assert "row 0" not in res.output and "rows 0" not in res.output
    assert not (project / "out" / "manifest.parquet").exists() and not (tmp_path / "r.json").exists()


# ----------------------------------------------------------------------------- B12


@pytest.mark.parametrize("section, key", [("ratios: {train: .8, validation: .1, test: .1}", "validation"),
                                          ("counts: {valid: 2, test: 1}", "valid")])
def test_unknown_split_name_is_refused_naming_the_key(tmp_path: Path, section: str, key: str) -> None:  # B12, CFG-04
    stage, _ = _project(tmp_path)
    params = _params(tmp_path, f"split: {{{section}}}\n")
    res = invoke("split", stage, "--params", params, "--out", tmp_path / "out", "--report", tmp_path / "r.json")
    assert res.exit_code == 1
    assert f"unknown split {key!r} (did you mean val?)" in res.output and "allowed: train, val, test" in res.output
    assert not (tmp_path / "out" / "manifest.parquet").exists()


# ----------------------------------------------------------------------------- B10


def test_lock_message_names_the_holders_command(tmp_path: Path) -> None:  # B10, CON-01
    stage, _ = _project(tmp_path)
    out = tmp_path / "out"
    with folder_lock(out, "datakit scrape"):
        res = invoke("dedup", stage, "--out", out, "--report", tmp_path / "r.json")
    assert res.exit_code == 1
    assert f"in use by another datakit scrape run (pid {os.getpid()}" in res.output
    assert "datakit dedup run" not in res.output


# ----------------------------------------------------------------------------- predict


def test_predict_lists_an_unreadable_file_instead_of_crashing(tmp_path: Path) -> None:
    pytest.importorskip("torchvision")
    from tests.e2e.test_train_cli import TRAIN
    from tests.e2e.test_train_cli import _params as train_params
    from tests.e2e.test_train_cli import invoke as invoke_train
    from tests.unit.test_train import make_project

    balance = make_project(tmp_path, per=(2, 1, 1), size=32)
    params = train_params(tmp_path, train={**TRAIN, "epochs": 1})
    model = tmp_path / "model"
    res = invoke_train("train", balance, "--out", model, "--params", params, "--report", tmp_path / "t.json")
    assert res.exit_code == 0, res.output
    folder = tmp_path / "new"
    folder.mkdir()
    shutil.copy(tmp_path / pd.read_parquet(balance / "manifest.parquet")["path"].iat[0], folder / "good.png")
    (folder / "broken.jpg").write_bytes(b"<html>not an image [b]</html>")
    res = invoke_train("predict", model, folder, "--out", tmp_path / "p.csv", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "broken.jpg" in res.output and "not_an_image" in res.output and "unreadable: 1" in res.output
    assert "nan" not in res.output.lower()
    got = pd.read_csv(tmp_path / "p.csv").set_index("path")
    assert got.loc["broken.jpg", "error"] == "not_an_image" and got.loc["good.png", "label"] in {"blue", "green", "red"}
