"""Credits and licences end to end: synthetic scrape with a licence mix -> dedup -> curate (the
licence gate) -> split -> `datakit credits` and `datakit export` (ATTRIBUTION.md,
attribution.csv, --datasheet)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from datakit.licences import CSV_COLUMNS, FAMILIES, family
from tests.e2e.helpers import invoke, write_params

pytestmark = pytest.mark.timeout(300)

MIX = {"by": 0.3, "by-sa": 0.2, "cc0": 0.15, "pdm": 0.05, "by-nc": 0.1, "by-nd": 0.1, "none": 0.1}
ALLOW = ["CC0/PDM", "BY", "BY-SA", "unknown"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("credits")
    params = write_params(tmp, items=["vest", "hoodie"], attributes=["striped", "dotted", "leopard"], per_query=24,
                          providers={"synthetic": {"options": {"license_mix": MIX}}})
    doc = yaml.safe_load(params.read_text())
    doc["licenses"] = {"allow": ALLOW}
    params.write_text(yaml.safe_dump(doc))
    steps = (("scrape", "--provider", "synthetic", "--out", tmp / "scrape"),
             ("dedup", tmp / "scrape", "--out", tmp / "dedup"),
             ("curate", tmp / "dedup", "--decisions", tmp / "decisions.csv", "--out", tmp / "curate"),
             ("split", tmp / "curate", "--out", tmp / "split"))
    for args in steps:
        res = invoke(*args, "--params", params, "--report", tmp / "reports" / f"{args[0]}.json")
        assert res.exit_code == 0, res.output
    return tmp


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_curate_drops_the_families_not_allowed_with_a_reason(project: Path) -> None:
    before = pd.read_parquet(project / "dedup" / "manifest.parquet")
    kept_before = before[before["keep"].fillna(False).astype(bool)]
    fams = pd.Series([family(n, u) for n, u in zip(kept_before["license"], kept_before["license_url"], strict=True)],
                     index=kept_before.index)
    denied = set(kept_before.loc[~fams.isin(ALLOW), "image_id"])
    assert denied and {"NC", "ND", "unknown", "BY"} <= set(fams)  # the mix reached the manifest
    failures = pd.read_parquet(project / "curate" / "failures.parquet")
    gated = failures[failures["reason"] == "licence_not_allowed"]
    assert set(gated["image_id"]) == denied and len(gated) == len(denied)
    assert gated["detail"].str.contains(r"licence family (?:NC|ND) \(CC BY-N", regex=True).all()
    curated = pd.read_parquet(project / "curate" / "manifest.parquet").set_index("image_id")
    assert not curated.loc[sorted(denied), "keep"].any()
    assert (curated.loc[sorted(denied), "curate_reason"] == "licence_not_allowed").all()
    rep = json.loads((project / "reports" / "curate.json").read_text())["licenses"]
    assert rep["allow"] == ALLOW and rep["dropped"] == len(denied)
    assert rep["dropped_by_family"] == {f: int((fams[~fams.isin(ALLOW)] == f).sum()) for f in ("NC", "ND") if (fams == f).any()}


def test_credits_writes_one_line_per_kept_original_with_its_licence(project: Path) -> None:
    out = project / "credits"
    res = invoke("credits", project / "split", "--out", out, "--report", project / "reports" / "credits.json")
    assert res.exit_code == 0, res.output
    split = pd.read_parquet(project / "split" / "manifest.parquet")
    kept = split[split["keep"].fillna(False).astype(bool)].set_index("image_id")
    rows = _csv(out / "attribution.csv")
    assert tuple(rows[0]) == CSV_COLUMNS
    assert sorted(r["image_id"] for r in rows) == sorted(kept.index)
    for r in rows:
        src = kept.loc[r["image_id"]]
        assert r["split"] == src["split"] and r["label"] == src["label"] and r["page_url"] == src["page_url"]
        assert r["license"] == (src["license"] if isinstance(src["license"], str) else "") and r["family"] == family(src["license"], src["license_url"])
        assert r["family"] in ALLOW  # the gate ran before split
    assert [r["split"] for r in rows] == sorted((r["split"] for r in rows), key=["train", "val", "test"].index)

    md = (out / "ATTRIBUTION.md").read_text(encoding="utf-8")
    head, _, body = md.partition("\n## train")
    assert "| split | CC0/PDM | BY | BY-SA | unknown | total |" in head
    assert "Share-alike:" in head and "Attribution required:" in head
    assert "have no licence information (from synthetic " in head and "check them before use" in head
    assert "Brave" not in head  # the demo's unknown licences come from the synthetic mix, not from Brave or Bing
    assert "Non-commercial" not in head and "No derivatives" not in head  # none left after the gate
    assert "carries the licence and the obligations of the image it was made from" in head
    assert "## val" in body and "## test" in body and "### BY-SA (" in body
    for r in rows:
        assert sum(f"`{r['image_id']}`" in line for line in body.splitlines()) == 1
    line = next(x for x in body.splitlines() if f"`{rows[0]['image_id']}`" in x)
    if rows[0]["license"]:
        assert f"[{rows[0]['license']}]({rows[0]['license_url']})" in line
    assert "datakit synthetic" in body and "source page `synthetic://" in body  # not a web link: shown as text

    summary = json.loads((project / "reports" / "credits.json").read_text())
    assert summary["images"] == len(rows) and set(summary["families"]) == set(FAMILIES)
    for name in ("train", "val", "test"):
        assert sum(summary["by_split"][name].values()) == sum(r["split"] == name for r in rows)
    assert summary["families"]["NC"] == summary["families"]["ND"] == 0 and summary["families"]["unknown"] > 0

    one = invoke("credits", project / "split", "--out", project / "credits-train", "--split", "train",
                 "--report", project / "reports" / "credits-train.json")
    assert one.exit_code == 0, one.output
    assert {r["split"] for r in _csv(project / "credits-train" / "attribution.csv")} == {"train"}


def test_credits_refuses_a_folder_without_a_split_and_an_unknown_split(project: Path) -> None:
    res = invoke("credits", project / "dedup", "--out", project / "c1")
    assert res.exit_code == 1 and "datakit split" in res.output
    res = invoke("credits", project / "split", "--out", project / "c2", "--split", "holdout")
    assert res.exit_code == 1 and "'holdout' not in the manifest" in res.output


def test_export_writes_the_credits_and_copies_the_datasheet(project: Path) -> None:
    invoke("credits", project / "split", "--out", project / "credits", "--report", project / "reports" / "c.json")
    sheet = project / "DATASHEET.md"
    sheet.write_text("# Datasheet\n\nMotivation: a test.\n", encoding="utf-8")
    out = project / "export"
    res = invoke("export", project / "split", "--out", out, "--link", "copy", "--datasheet", sheet,
                 "--report", project / "reports" / "export.json")
    assert res.exit_code == 0, res.output
    assert "ATTRIBUTION.md, attribution.csv, DATASHEET.md" in res.output
    assert (out / "DATASHEET.md").read_bytes() == sheet.read_bytes()
    assert _csv(out / "attribution.csv") == _csv(project / "credits" / "attribution.csv")
    exported = {p.stem for p in out.glob("*/*/*") if p.is_file()}
    assert {r["image_id"] for r in _csv(out / "attribution.csv")} == exported
    assert "## train" in (out / "ATTRIBUTION.md").read_text(encoding="utf-8")
    rep = json.loads((project / "reports" / "export.json").read_text())
    assert rep["files"] == ["ATTRIBUTION.md", "attribution.csv", "DATASHEET.md"] and rep["licences"]["images"] == len(exported)
    # Again (its own files are replaced), then into a folder where a user's ATTRIBUTION.md waits: refused.
    assert invoke("export", project / "split", "--out", out, "--link", "copy",
                  "--report", project / "reports" / "export-2.json").exit_code == 0
    mine = project / "other"
    mine.mkdir()
    (mine / "ATTRIBUTION.md").write_text("my own notes", encoding="utf-8")
    res = invoke("export", project / "split", "--out", mine, "--report", project / "reports" / "export-3.json")
    assert res.exit_code == 1 and "not written by datakit export" in res.output
    assert (mine / "ATTRIBUTION.md").read_text(encoding="utf-8") == "my own notes" and not (mine / "train").exists()
