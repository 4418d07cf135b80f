"""`datakit init`: a new project from nothing, then `dvc repro` runs the whole pipeline there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from datakit.project import strip_code_deps, template
from tests.e2e.helpers import REPO
from tests.e2e.test_dvc import TINY, make_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_templates_are_the_repositorys_own_pipeline_and_params() -> None:
    assert template("dvc.yaml") == strip_code_deps((REPO / "dvc.yaml").read_text())
    assert template("params.yaml") == (REPO / "params.yaml").read_text()
    spec = yaml.safe_load(template("dvc.yaml"))
    assert list(spec["stages"]) == list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    assert "${src}" not in template("dvc.yaml") and "vars" not in spec


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def test_init_then_dvc_repro(tmp_path) -> None:
    (tmp_path / "home").mkdir()
    env = make_env(tmp_path / "home")
    project = tmp_path / "my-dataset"
    res = _run([sys.executable, "-m", "datakit", "init", str(project), "--provider", "synthetic"], tmp_path, env)
    assert "wrote dvc.yaml, params.yaml, review/decisions.csv, .gitignore, .dvcignore" in res.stdout
    assert "ran: git init, dvc init" in res.stdout and "dvc repro" in res.stdout
    assert (project / ".git").is_dir() and (project / ".dvc").is_dir()
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["scrape"]["provider"] == "synthetic"
    assert "# " in (project / "params.yaml").read_text()  # commented, as shipped
    # DVC set up for plots that render offline (tests/e2e/test_plots_offline.py opens them in Chromium)
    assert "html_template = plots/datakit.html" in (project / ".dvc" / "config").read_text()
    assert (project / ".dvc" / "plots" / "datakit.html").is_file() and (project / ".dvc" / "plots" / "epochs.json").is_file()
    assert {"dvc_plots/", "*.run.json", ".datakit/"} <= set((project / ".gitignore").read_text().split())
    # a second init keeps what is there
    again = _run([sys.executable, "-m", "datakit", "init", str(project)], tmp_path, env)
    assert "kept (exists; --force overwrites): dvc.yaml, params.yaml, review/decisions.csv" in again.stdout

    for section, values in TINY.items():  # small enough for a test, every class in every split
        params.setdefault(section, {}).update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run([sys.executable, "-m", "dvc", "repro"], project, env).stdout
    for stage in yaml.safe_load((project / "dvc.yaml").read_text())["stages"]:
        assert f"Running stage '{stage}'" in out, stage
    assert (project / "reports" / "report.html").is_file()
    assert json.loads((project / "reports" / "evaluate.json").read_text())["n_test"] > 0
    assert (project / "dvc.lock").is_file()
    # the headline metrics are what DVC shows; the timings are beside the reports and ignored by git
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert {"scraped", "n_test", "accuracy"} <= set(metrics) and all(isinstance(v, int | float) for v in metrics.values())
    assert (project / "reports" / "DATASHEET.md").is_file() and (project / "data" / "credits" / "ATTRIBUTION.md").is_file()
    assert (project / "reports" / "train.run.json").is_file()
    untracked = _run(["git", "status", "--porcelain", "--untracked-files=all"], project, env).stdout
    assert ".run.json" not in untracked and "dvc_plots" not in untracked, untracked
