"""`datakit train --lr-find` through the real entry point, and the report's "Learning-rate range
test" section (present exactly when a sweep's lr_find.csv exists), drawn in Chromium."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from datakit.report import build_report, stage_folders
from tests.e2e.browser import open_page
from tests.e2e.helpers import datakit_cmd, invoke
from tests.unit.test_train import make_project

pytestmark = pytest.mark.timeout(600)

TRAIN = {"backbone": "mobilenet_v3_small", "pretrained": False, "image_size": 32, "epochs": 2, "batch_size": 8,
         "num_workers": 0, "device": "cpu", "dvclive": False, "patience": 0}


def _datakit(cwd: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(datakit_cmd(*args), cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A colour-image dataset, a trained model in data/train, and the sweep in reports/lr_find,
    all made by the command line as a user types it (cwd: the project)."""
    root = tmp_path_factory.mktemp("lrfind")
    balance = make_project(root, per=(8, 4, 4))
    (root / "params.yaml").write_text(yaml.safe_dump({"train": TRAIN}))
    trained = _datakit(root, "train", balance, "--params", "params.yaml", "--out", "data/train",
                       "--report", "reports/train.json")
    assert trained.returncode == 0, trained.stderr
    before = sorted(p.name for p in (root / "data" / "train").iterdir())
    swept = _datakit(root, "train", balance, "--params", "params.yaml", "--out", "reports/lr_find", "--lr-find",
                     "--lr-find-steps", "40")
    return {"root": root, "balance": balance, "swept": swept, "train_before": before,
            "train_report": (root / "reports" / "train.json").read_text()}


def test_lr_find_prints_the_suggestion_writes_its_files_and_trains_nothing(project: dict[str, Any]) -> None:
    root, swept = project["root"], project["swept"]
    assert swept.returncode == 0, swept.stderr
    sweep = root / "reports" / "lr_find"
    summary = json.loads((sweep / "lr_find.json").read_text())
    curve = pd.read_csv(sweep / "lr_find.csv")
    assert list(curve.columns) == ["step", "lr", "loss", "smoothed_loss"] and len(curve) == summary["steps"] <= 40
    assert summary["mode"] == "finetune" and summary["backbone"] == "mobilenet_v3_small" and summary["device"] == "cpu"
    text = " ".join(swept.stdout.split())
    assert f"{summary['steps']} of 40 batches" in text and "suggested lr" in text, swept.stdout
    hint = re.search(r"set it: (train\.lr: \S+) in params\.yaml", text)
    assert hint is not None, swept.stdout
    assert yaml.safe_load(hint.group(1))["train.lr"] == pytest.approx(summary["suggested_lr"], rel=0.05)
    assert curve["lr"].min() <= summary["suggested_lr"] <= curve["lr"].max()
    assert "lr_find: 40 batches" in swept.stderr  # the progress notes
    # nothing of training was written or changed: no model beside the sweep, the train folder and
    # its report as they were
    assert sorted(p.name for p in sweep.iterdir()) == [".datakit", "lr_find.csv", "lr_find.json"]
    assert sorted(p.name for p in (root / "data" / "train").iterdir()) == project["train_before"]
    assert (root / "reports" / "train.json").read_text() == project["train_report"]


def test_lr_find_refuses_the_train_output_folder(project: dict[str, Any]) -> None:
    root = project["root"]
    res = _datakit(root, "train", project["balance"], "--params", "params.yaml", "--out", "data/train", "--lr-find")
    assert res.returncode == 1 and "holds a trained model" in " ".join(res.stdout.split() + res.stderr.split())
    assert not (root / "data" / "train" / "lr_find.csv").exists()


def test_report_has_the_section_exactly_when_a_sweep_exists(project: dict[str, Any], tmp_path: Path) -> None:
    root = project["root"]
    page = tmp_path / "report.html"
    res = invoke("report", "--data", root / "data", "--reports", root / "reports", "--out", page,
                 "--report", tmp_path / "report.json")
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "report.json").read_text())
    summary = json.loads((root / "reports" / "lr_find" / "lr_find.json").read_text())
    assert got["sections"]["lr_find"] and got["lr_find"]["steps"] == summary["steps"]
    assert got["lr_find"]["suggested_lr"] == summary["suggested_lr"]
    html = page.read_text()
    assert html.index('id="training"') < html.index('id="lr_find"') and '<a href="#lr_find">' in html
    assert summary["hint"] in html
    drawn = asyncio.run(asyncio.wait_for(_draw(page, tmp_path), 60))
    assert drawn["errors"] == [] and drawn["lines"] == 2 and drawn["points"] >= 2 * summary["steps"], drawn
    assert drawn["mark"] and drawn["width"] > 300 and "1.0e-07" in drawn["ticks"], drawn

    # no sweep: no section, and not listed among what the run lacks
    bare = tmp_path / "bare"
    shutil.copytree(root / "reports", bare, ignore=shutil.ignore_patterns("lr_find"))
    result = build_report(stage_folders(root / "data"), bare, tmp_path / "bare.html")
    assert result["sections"]["training"] and "lr_find" not in result["sections"]
    assert not any("range test" in a for a in result["absent"]) and 'id="lr_find"' not in (tmp_path / "bare.html").read_text()

    # a sweep written into the train folder (before a model existed) is found there too
    alone = tmp_path / "train"
    alone.mkdir()
    for name in ("lr_find.csv", "lr_find.json"):
        shutil.copy(root / "reports" / "lr_find" / name, alone / name)
    result = build_report({"train": alone}, None, tmp_path / "alone.html", root=tmp_path)
    assert result["sections"]["lr_find"] and not result["sections"]["training"]
    assert result["lr_find"]["path"] == str(alone / "lr_find.csv")


async def _draw(page: Path, workdir: Path) -> dict[str, Any]:
    """What Chromium drew of the section: its polylines and their points, the suggestion's mark,
    the chart's width and the x tick labels; console errors."""
    async with open_page(workdir) as cdp:
        await cdp.goto(page.absolute().as_uri())
        js = """(() => {
            const svg = document.querySelector('#lr-find-curve svg');
            if (!svg) return null;
            const lines = [...svg.querySelectorAll('polyline')];
            return {lines: lines.length,
                    points: lines.reduce((n, l) => n + l.points.numberOfItems, 0),
                    mark: !!svg.querySelector('line.mark'),
                    width: svg.getBoundingClientRect().width,
                    ticks: [...svg.querySelectorAll('text')].map(t => t.textContent)};
        })()"""
        found = await cdp.eval(js)
        assert found is not None, "no chart in #lr-find-curve"
        return {**found, "errors": cdp.errors()}
