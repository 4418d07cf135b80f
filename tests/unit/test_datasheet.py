"""DATASHEET.md (`datakit report`, `datakit.report.datasheet`): a small real pipeline in a temporary
git + DVC project (scrape synthetic with wrong labels and mixed licences -> embed -> dedup ->
suspects -> curate with three decisions and a licence gate -> split -> augment -> balance), the
split recorded in dvc.lock by `dvc commit`, a DVC remote; then each section's numbers checked
against the manifests, a partial pipeline outside git, determinism, and the CLI's link."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from datakit import licences as lic
from datakit.errors import DatakitError
from datakit.manifest import read_stage_manifest
from datakit.report import DATASHEET, build_report, stage_folders
from datakit.stage import kept, origins, training_rows
from tests.e2e.helpers import invoke, write_params
from tests.e2e.test_dvc import make_env

pytestmark = pytest.mark.timeout(240)


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (cmd, done.stdout, done.stderr)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("datasheet")
    env = make_env(tmp_path_factory.mktemp("datasheet-home"))
    _run(["git", "init", "-q"], tmp, env)
    _run(["git", "config", "user.name", "Ada Datasheet"], tmp, env)  # local: the datasheet's git calls see it too
    _run(["git", "config", "user.email", "ada@datakit.invalid"], tmp, env)
    _run([sys.executable, "-m", "dvc", "init", "-q"], tmp, env)
    mix = {"cc0": 2, "by": 1, "by-sa": 1, "by-nc": 1, "none": 1}
    params = write_params(tmp, items=["vest", "hoodie", "shirt"], attributes=["striped", "dotted"], per_query=12,
                          providers={"synthetic": {"options": {"wrong_item": 0.1, "license_mix": mix}}})
    doc = yaml.safe_load(params.read_text())
    doc.update({"embed": {"batch_size": 16, "workers": 0}, "split": {"ratios": {"train": 0.6, "val": 0.2, "test": 0.2}},
                "augment": {"variants": 1}, "balance": {"strategy": "oversample"},
                "licenses": {"allow": ["CC0/PDM", "BY", "BY-SA", "unknown"]}})  # NC is gated out
    params.write_text(yaml.safe_dump(doc))
    d, r = tmp / "data", tmp / "reports"
    steps = [("scrape", "--provider", "synthetic", "--out", d / "scrape"), ("embed", d / "scrape", "--out", d / "embed"),
             ("dedup", d / "embed", "--out", d / "dedup"),
             ("suspects", d / "dedup", "--embeddings", d / "embed", "--out", d / "suspects")]
    for args in steps:
        res = invoke(*args, "--params", params, "--report", r / f"{args[0]}.json")
        assert res.exit_code == 0, res.output
    sus = read_stage_manifest(d / "suspects" / "manifest.parquet", tmp)[0]
    rows = sus[kept(sus)].sort_values("image_id").head(3)
    other = next(x for x in ("vest", "hoodie", "shirt") if x != rows["label"].iat[0])
    (tmp / "review").mkdir()
    (tmp / "review" / "decisions.csv").write_text(
        "image_id,action,label,reason,decided_at\n"
        f"{rows['image_id'].iat[0]},relabel,{other},,2026-01-02T10:00:00Z\n"
        f"{rows['image_id'].iat[1]},remove,,blurry,2026-01-03T11:00:00Z\n"
        f"{rows['image_id'].iat[2]},accept,,,2026-01-04T12:00:00Z\n")
    for args in (("curate", d / "suspects", "--decisions", tmp / "review" / "decisions.csv", "--out", d / "curate"),
                 ("split", d / "curate", "--out", d / "split"), ("credits", d / "split", "--out", d / "credits"),
                 ("augment", d / "split", "--out", d / "augment"),
                 ("balance", d / "augment", "--out", d / "balance")):
        res = invoke(*args, "--params", params, "--report", r / f"{args[0]}.json")
        assert res.exit_code == 0, res.output
    (tmp / "dvc.yaml").write_text("stages:\n  split:\n    cmd: datakit split data/curate --params params.yaml --out data/split\n"
                                  "    deps: [data/curate]\n    outs: [data/split]\n")
    _run([sys.executable, "-m", "dvc", "commit", "-f", "-q", "split"], tmp, env)  # dvc.lock: the split's hash
    _run([sys.executable, "-m", "dvc", "remote", "add", "-d", "store", str(tmp_path_factory.mktemp("remote"))], tmp, env)
    (tmp / ".gitignore").write_text("/data/\n")
    _run(["git", "add", "-A"], tmp, env)
    _run(["git", "commit", "-q", "-m", "a run"], tmp, env)
    sheet = r / DATASHEET
    result = build_report(stage_folders(d), r, r / "report.html", params_file=params, datasheet=sheet, project=tmp)
    return {"tmp": tmp, "env": env, "sheet": sheet, "text": sheet.read_text(encoding="utf-8"), "result": result}


def _section(text: str, heading: str) -> str:
    """The text of the `## heading` section."""
    m = re.search(rf"^## {re.escape(heading)}.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, heading
    return m.group(1)


def _rows(text: str, after: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table after the line containing `after`: [{header: cell}]."""
    lines = text[text.index(after):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return [dict(zip(rows[0], r, strict=True)) for r in rows[2:]]


def _table(text: str, after: str) -> dict[str, dict[str, str]]:
    """The same table as {first cell: {header: cell}} (the first column left out of the inner dicts)."""
    return {(first := next(iter(r.values()))): {k: v for k, v in r.items() if v is not first} for r in _rows(text, after)}


def _manifest(p: dict[str, Any], stage: str, name: str = "manifest.parquet") -> pd.DataFrame:
    path = p["tmp"] / "data" / stage / name
    return read_stage_manifest(path, p["tmp"])[0] if name == "manifest.parquet" else pd.read_parquet(path)


# ---------------------------------------------------------------------------------------------


def test_motivation_names_classes_queries_creator_and_params(project) -> None:
    text = _section(project["text"], "Motivation")
    assert "Image classification of 3 classes: hoodie, shirt, vest." in text
    assert "= 6 queries, `scrape.per_query` 12; the label is the item." in text
    assert "Ada Datasheet" not in text  # git's user.name differs between clones: the datasheet must not
    assert "_(fill in: the person or team" in text and "_(fill in: who funded" in text
    assert "```yaml" in text and "licenses:" in text and "strategy: oversample" in text and "fetch:" in text
    assert "queries these params do not make" not in text


def test_composition_matches_the_manifests(project) -> None:
    text = _section(project["text"], "Composition")
    split = _manifest(project, "split")
    split = split[kept(split)]
    table = _table(text, "Images per class and split")
    for label in ("hoodie", "shirt", "vest"):
        for s in ("train", "val", "test"):
            assert int(table[label][s]) == int((split["label"].eq(label) & split["split"].eq(s)).sum()), (label, s)
    assert int(table["**total**"]["total"]) == len(split)
    dedup = _manifest(project, "dedup")
    removed = dedup[~kept(dedup)]
    assert f"dedup kept {len(dedup) - len(removed)} of {len(dedup)} images and removed {len(removed)}" in text
    noise = json.loads((project["tmp"] / "reports" / "suspects.json").read_text())["noise_by_label"]
    rows = _table(text, "**Label noise**")
    for label, v in noise.items():
        assert int(rows[label]["scored"]) == v["images"] and int(rows[label]["flagged"]) == v["flagged"]
        assert rows[label]["estimated wrong"] == f"{100 * v['estimated_noise']:.1f} %"
    bal = _manifest(project, "balance")
    train = bal[training_rows(bal)]
    rows = _table(text, "**Rows made for training**")
    for label in ("hoodie", "shirt", "vest"):
        for origin in ("original", "augmented", "oversampled"):
            n = int((train["label"].eq(label) & origins(train).eq(origin)).sum())
            assert int(rows[label].get(origin, 0)) == n, (label, origin)
    assert int(rows["**total**"]["total"]) == len(train)
    assert "`image_id` is the SHA-256" in text and "`license`" in text


def test_collection_counts_and_failures_match(project) -> None:
    text = _section(project["text"], "Collection process")
    scrape, fails = _manifest(project, "scrape"), _manifest(project, "scrape", "failures.parquet")
    assert f"{len(scrape) + len(fails)} search results: {len(scrape)} stored as images, {len(fails)} failed" in text
    assert _table(text, "**Providers:**")["synthetic"] == {"stored": str(len(scrape)), "failed": str(len(fails))}
    queries = _table(text, "**Queries**")
    assert set(queries) == set(scrape["query"])
    for q, n in scrape["query"].value_counts().items():
        assert int(queries[q]["stored"]) == n and int(queries[q]["failed"]) == int(fails["query"].eq(q).sum())
    assert scrape["fetched_at"].isna().all()  # synthetic: rendered files, never downloaded
    assert "No fetch time: every image was read from local files" in text and "_(fill in: when these files were made)_" in text
    reasons = {(r["stage"], r["reason"]): r for r in _rows(text, "**What failed and why**")}
    curate_fails = _manifest(project, "curate", "failures.parquet")
    expected = {**{("scrape", k): v for k, v in fails["reason"].value_counts().items()},
                **{("curate", k): v for k, v in curate_fails["reason"].value_counts().items()}}
    assert {k: int(v["count"]) for k, v in reasons.items()} == expected
    assert expected.get(("curate", lic.REASON), 0) > 0 and expected.get(("curate", "reviewed_remove")) == 1  # both gates dropped rows
    assert reasons[("curate", lic.REASON)]["meaning"].startswith("its licence family is not in licenses.allow")


def test_preprocessing_review_licence_gate_and_augmentation(project) -> None:
    text = _section(project["text"], "Preprocessing, cleaning and labelling")
    cur = _manifest(project, "curate")
    assert (cur["review_action"].value_counts().to_dict() == {"relabel": 1, "remove": 1, "accept": 1})
    assert "1 relabelled, 1 removed, 1 accepted as labelled" in text
    assert "(review/decisions.csv)" in text and "made from 2026-01-02T10:00:00Z to 2026-01-04T12:00:00Z" in text
    gated = cur[cur["curate_reason"].eq(lic.REASON).fillna(False)]
    assert f"(`licenses.allow`: CC0/PDM, BY, BY-SA, unknown): {len(gated)} images marked keep=False" in text
    assert f"NC {len(gated)}" in text
    aug = _manifest(project, "augment")
    assert f"{int(origins(aug).eq('augmented').sum())} variants of" in text and "HorizontalFlip (p=0.5)" in text
    assert "strategy `oversample`" in text and "not in this run: audit" in text.lower()


def test_uses_and_distribution_follow_the_data(project) -> None:
    uses, dist = _section(project["text"], "Uses"), _section(project["text"], "Distribution")
    split = _manifest(project, "split")
    split = split[kept(split)]
    test = split[split["split"].eq("test")]["label"].value_counts()
    assert "Classes with fewer than 20 test images" in uses and all(f"{k} {v}" in uses for k, v in test.items())
    assert "rendered by the `synthetic` provider" in uses and "look wrong before review" in uses
    assert "Licence obligations (see Distribution): Attribution required, Share-alike" in uses
    fams = lic.families(split)
    table = _table(dist, "**Licences**")
    assert "NC" not in table  # the gate took them out
    for fam, row in table.items():
        assert int(row["total"]) == int(fams.eq(fam).sum())
        for s in ("train", "val", "test"):
            assert int(row[s]) == int((fams.eq(fam) & split["split"].eq(s)).sum())
    assert f"See [../data/credits/{lic.ATTRIBUTION_MD}](../data/credits/{lic.ATTRIBUTION_MD})" in dist  # credits' output
    assert "Share-alike:" in dist


def test_maintenance_names_the_data_its_hash_finds_the_commit_and_the_remote(project) -> None:
    tmp, env = project["tmp"], project["env"]
    text = _section(project["text"], "Maintenance")
    head = _run(["git", "rev-parse", "HEAD"], tmp, env)
    lock = yaml.safe_load((tmp / "dvc.lock").read_text())
    md5 = next(o["md5"] for o in lock["stages"]["split"]["outs"] if o["path"] == "data/split")
    assert head not in project["text"]  # the commit holding this datasheet does not exist when it is written
    assert f"| split | data/split | {md5} |" in text and f"`data/split` at DVC hash `{md5}`" in text
    assert "**DVC remote:** `store` (" in text and "(default)" in text
    recipe = f"git log --format=%H -S {md5.removesuffix('.dir')} -- :/dvc.lock | tail -1"
    assert recipe in text and "git checkout <that commit> && dvc pull\n" in text
    # the recipe works: it finds the commit that recorded this split
    found = _run(["bash", "-c", recipe.split("   #")[0]], tmp, env)
    assert found == head
    (tmp / "params.yaml").write_text((tmp / "params.yaml").read_text() + "# edited\n")  # a change after the run
    try:
        build_report({"split": tmp / "data" / "split"}, None, tmp / "x.html", datasheet=tmp / "x.md", project=tmp)
        again = (tmp / "x.md").read_text()
    finally:
        _run(["git", "checkout", "--", "params.yaml"], tmp, env)
        (tmp / "x.md").unlink()
        (tmp / "x.html").unlink()
    assert _section(again, "Maintenance") == text  # the same data: the same recipe, whatever else changed


def test_same_inputs_same_bytes_and_source_date_epoch(project, monkeypatch) -> None:
    tmp = project["tmp"]
    build_report(stage_folders(tmp / "data"), tmp / "reports", tmp / "reports" / "report.html",
                 params_file=tmp / "params.yaml", datasheet=project["sheet"], project=tmp)
    assert project["sheet"].read_text(encoding="utf-8") == project["text"]  # the first build, byte for byte
    assert "Generated" not in project["text"] and str(tmp) not in project["text"]
    out = tmp / "again.md"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    build_report({"split": tmp / "data" / "split"}, None, tmp / "e.html", datasheet=out, project=tmp)
    assert "Generated 1970-01-02 00:00 UTC (SOURCE_DATE_EPOCH)." in out.read_text()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(DatakitError, match="SOURCE_DATE_EPOCH"):
        build_report({"split": tmp / "data" / "split"}, None, tmp / "e.html", datasheet=out, project=tmp)
    for f in (out, tmp / "e.html"):
        f.unlink()


def test_a_partial_pipeline_outside_git_says_what_is_missing(project, tmp_path) -> None:
    tmp = project["tmp"]
    reports = tmp_path / "reports"
    reports.mkdir()
    for name in ("scrape", "dedup"):
        (reports / f"{name}.json").write_bytes((tmp / "reports" / f"{name}.json").read_bytes())
    stages = {k: v for k, v in stage_folders(tmp / "data").items() if k in ("scrape", "dedup")}
    stages["split"] = tmp_path / "no-split"
    res = build_report(stages, reports, tmp_path / "r.html", datasheet=tmp_path / DATASHEET, project=tmp_path)
    text = (tmp_path / DATASHEET).read_text(encoding="utf-8")
    for absent in ("**Splits.** _Not in this run: split", "**Label noise.** _Not in this run: suspects",
                   "**Rows made for training.** _Not in this run", "**Review decisions.** _Not in this run: curate",
                   "**Licence gate.** _Not in this run: curate", "**Parameters.** _Not in this run: the params file"):
        assert absent in text, absent
    dedup = _manifest(project, "dedup")
    table = _table(text, "**Splits.**")
    for label, n in dedup[kept(dedup)]["label"].value_counts().items():
        assert int(table[label]["images"]) == n
    assert "Not a git work tree" in text and "_(fill in: the person or team" in text
    assert "no DVC remote configured" in text and "No dvc.lock" in text and "it needs a split, not in this run" in text
    assert res["datasheet"]["classes"] == sorted(dedup["label"].unique())
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert '<a href="DATASHEET.md">' in html


def test_cli_writes_the_datasheet_next_to_the_page_or_where_asked(project, tmp_path, monkeypatch) -> None:
    from datakit.cli import app

    tmp = project["tmp"]
    monkeypatch.chdir(tmp)  # as `dvc repro` runs the report stage: in the pipeline's folder
    res = CliRunner().invoke(app, ["report", "--data", "data", "--reports", "reports", "--params", "params.yaml",
                                   "--out", str(tmp_path / "page" / "report.html"), "--report", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "page" / DATASHEET).read_text(encoding="utf-8").startswith("# Datasheet")
    assert str(tmp_path / "page" / DATASHEET) in res.output
    res = CliRunner().invoke(app, ["report", "--data", "data", "--reports", "reports", "--out", str(tmp_path / "page" / "report.html"),
                                   "--datasheet", str(tmp_path / "sheets" / "v1.md"), "--report", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "page" / "report.html").read_text(encoding="utf-8")
    assert 'id="datasheet-link"' in html and '<a href="../sheets/v1.md">' in html
    sheet = (tmp_path / "sheets" / "v1.md").read_text(encoding="utf-8")
    assert "[report.html](../page/report.html)" in sheet and "`data/split` at DVC hash" in sheet
    assert json.loads((tmp_path / "r.json").read_text())["datasheet"]["path"] == str(tmp_path / "sheets" / "v1.md")
