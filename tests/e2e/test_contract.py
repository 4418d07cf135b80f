"""The stage contract through the real command line (the `datakit` script of this virtualenv, as
DVC runs it): a misspelt params section, a wrong kind of input, a project folder moved elsewhere,
the commands in pipeline order and the options every stage command shares."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from tests.e2e.helpers import write_params

pytestmark = pytest.mark.timeout(120)

# The flow's order (stages added later, such as curation's, slot in between).
PIPELINE = ("scrape", "embed", "dedup", "split", "audit", "augment", "balance", "train", "evaluate", "predict",
            "report", "colors", "export", "verify")
# Every command takes --params and --report (the same help text) but `review`, an interactive page
# that records a person's decisions; all but these take an --out folder.
NO_PARAMS_OR_REPORT = {"review", "predict", "init"}  # predict labels new images outside the pipeline: options and a CSV
NO_OUT_FOLDER = {"audit", "verify", "report", "predict", "review", "init"}  # a gate, a check, a page, a CSV, a server


def _datakit() -> list[str]:
    script = Path(sys.executable).with_name("datakit")
    return [str(script)] if script.exists() else [sys.executable, "-m", "datakit"]


def datakit(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "DVC_NO_ANALYTICS": "1"}
    return subprocess.run([*_datakit(), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=100,
                          env=env)


def _lines(res: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (res.stdout + res.stderr).splitlines() if line.strip()]


@pytest.fixture(scope="module")
def scraped(tmp_path_factory) -> Path:
    """A small project scraped with the synthetic provider, run from its own folder with
    relative paths as DVC does: data/scrape."""
    root = tmp_path_factory.mktemp("project")
    write_params(root, items=["vest", "hoodie"], attributes=["striped", "dotted"], per_query=8)
    res = datakit("scrape", "--provider", "synthetic", "--out", "data/scrape", "--params", "params.yaml",
                  "--report", "reports/scrape.json", cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr
    return root


@pytest.fixture(scope="module")
def project(scraped) -> Path:
    """The same project deduplicated: data/dedup."""
    res = datakit("dedup", "data/scrape", "--out", "data/dedup", "--params", "params.yaml",
                  "--report", "reports/dedup.json", cwd=scraped)
    assert res.returncode == 0, res.stdout + res.stderr
    return scraped


def test_a_misspelt_section_is_one_line_naming_it_and_the_closest(tmp_path) -> None:  # CFG-06
    params = tmp_path / "params.yaml"
    params.write_text("dedupe:\n  threshold: 3\n")
    res = datakit("scrape", "--provider", "synthetic", "--params", params, "--out", "data/scrape", cwd=tmp_path)
    assert res.returncode != 0
    lines = _lines(res)
    assert len(lines) == 1, lines
    assert "'dedupe'" in lines[0] and "did you mean dedup?" in lines[0], lines
    assert not (tmp_path / "data" / "scrape" / "manifest.parquet").exists()


def test_settings_for_an_unknown_provider_are_refused(tmp_path) -> None:  # CFG-06 one level down
    """`scrape.providers` is keyed by provider name: a misspelt name would leave its settings
    unused without a word."""
    params = write_params(tmp_path, per_query=2, providers={"synthetc": {"options": {}}})
    res = datakit("scrape", "--provider", "synthetic", "--params", params, "--out", "data/scrape", cwd=tmp_path)
    assert res.returncode != 0, res.stdout
    lines = _lines(res)
    assert len(lines) == 1 and "scrape.providers" in lines[0] and "synthetc" in lines[0], lines
    assert "did you mean synthetic?" in lines[0], lines


def test_split_of_a_folder_never_deduplicated_says_to_run_dedup_first(scraped, tmp_path) -> None:
    res = datakit("split", scraped / "data" / "scrape", "--params", scraped / "params.yaml", "--out", tmp_path / "split",
                  "--report", tmp_path / "split.json", cwd=tmp_path)
    assert res.returncode != 0
    lines = _lines(res)
    assert len(lines) == 1, lines
    assert "datakit dedup" in lines[0] and "first" in lines[0], lines
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "split" / "manifest.parquet").exists()


def test_a_moved_project_folder_still_works(project, tmp_path) -> None:
    """Copy data/ elsewhere, hide the original, split the copy from another working directory and
    verify the result: every manifest path resolves inside the copy."""
    moved = tmp_path / "elsewhere" / "data"
    shutil.copytree(project / "data", moved)
    hidden = project / "data-hidden"
    (project / "data").rename(hidden)
    try:
        other = tmp_path / "cwd"
        other.mkdir()
        res = datakit("split", moved / "dedup", "--params", project / "params.yaml", "--out", moved / "split",
                      "--report", other / "split.json", cwd=other)
        assert res.returncode == 0, res.stdout + res.stderr
        res = datakit("verify", moved / "split", cwd=other)
        assert res.returncode == 0, res.stdout + res.stderr
        # and relative to the copy's own parent, as a DVC checkout elsewhere would run it
        res = datakit("verify", "data/split", cwd=moved.parent)
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        hidden.rename(project / "data")


def test_help_lists_the_commands_in_pipeline_order(tmp_path) -> None:
    res = datakit("--help", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    text = res.stdout
    panel = text[text.index("Commands"):]
    listed = re.findall(r"^[│|]\s(\w+)\s{2,}", panel, flags=re.M)
    assert [c for c in listed if c in PIPELINE] == list(PIPELINE), listed
    from datakit.cli.app import PIPELINE_ORDER

    assert listed == list(PIPELINE_ORDER), listed  # every command has its place in the flow


def _commands() -> dict[str, object]:
    from datakit.cli import app

    group = typer.main.get_command(app)
    found = {}
    for name, cmd in group.commands.items():
        sub = getattr(cmd, "commands", None)  # `dedup` is a group whose default command is `run`
        found[name] = sub["run"] if sub and "run" in sub else cmd
    return found


def _option(cmd: object, flag: str) -> object | None:
    for p in getattr(cmd, "params", []):
        if getattr(p, "param_type_name", "") == "option" and flag in p.opts:
            return p
    return None


def test_every_stage_command_shares_params_out_and_report() -> None:
    """--params and --report mean the same everywhere (the same help, the stage's name aside);
    --out is an output folder wherever a stage writes one."""
    commands = _commands()
    assert set(commands) >= set(PIPELINE)
    problems: list[str] = []
    helps: dict[str, dict[str, str]] = {"--params": {}, "--report": {}}
    for name in commands:
        cmd = commands[name]
        for flag in ("--params", "--report") if name not in NO_PARAMS_OR_REPORT else ():
            opt = _option(cmd, flag)
            if opt is None:
                problems.append(f"datakit {name}: no {flag}")
                continue
            helps[flag][name] = (opt.help or "").replace(f"reports/{name}.json", "reports/<stage>.json")
            if flag == "--report" and opt.default not in (None, Path(f"reports/{name}.json")):
                problems.append(f"datakit {name}: --report defaults to {opt.default}, not reports/{name}.json")
        out = _option(cmd, "--out")
        if name not in NO_OUT_FOLDER:
            if out is None:
                problems.append(f"datakit {name}: no --out")
            elif not (out.help or "").startswith("Output folder: "):
                problems.append(f"datakit {name}: --out help {out.help!r} is not cli.common.out_option's")
    for flag, by_name in helps.items():
        variants: dict[str, list[str]] = {}
        for name, text in by_name.items():
            variants.setdefault(text, []).append(name)
        if len(variants) > 1:
            common = max(variants, key=lambda t: len(variants[t]))
            for text, names in variants.items():
                if text != common:
                    problems.append(f"datakit {', '.join(names)}: {flag} help {text!r} differs from {common!r}")
    assert not problems, "\n".join(problems)


def test_dedup_help_shows_the_options_of_dedup_input_out() -> None:
    """`datakit dedup INPUT --out DIR` runs `dedup run`: `datakit dedup --help` teaches its options too."""
    from typer.testing import CliRunner

    from datakit.cli import app

    res = CliRunner().invoke(app, ["dedup", "--help"], terminal_width=200)
    assert res.exit_code == 0
    for text in ("calibrate", "INPUT", "--out", "--threshold", "--embeddings", "--against", "--params", "--report"):
        assert text in res.output, text
