"""`datakit report` end to end: a small real pipeline through the CLI (scrape synthetic -> dedup ->
split -> audit -> balance class_weights) plus made-up train/evaluate files, the page's numbers
checked against the manifests, then the page opened in headless Chromium (DevTools protocol):
a screenshot that is not blank, no console error, no broken image, no request leaving the page."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import typer
import yaml
from PIL import Image, ImageStat
from typer.testing import CliRunner

from datakit.cli.report import register
from datakit.manifest import read_stage_manifest
from datakit.report import STAGES, build_report, stage_folders
from tests.e2e.browser import open_page
from tests.e2e.helpers import invoke, write_params

pytestmark = pytest.mark.timeout(120)

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1200,2000", "--remote-debugging-port=0"]
BROKEN_IMAGES_JS = "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length"


# ---------------------------------------------------------------------------------------------
# The run


def _report_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """test app"""

    register(app)
    return app


def _fake_train_and_evaluate(tmp: Path) -> None:
    """Files in the formats `datakit train` / `datakit evaluate` write, with made-up numbers but
    real image paths (the test rows of the split)."""
    split = read_stage_manifest(tmp / "split" / "manifest.parquet", tmp)[0]  # paths relative to the project root
    test = split[split["keep"] & split["split"].eq("test")].sort_values("image_id").reset_index(drop=True)
    labels = sorted(split["label"].unique())
    predicted = [labels[(labels.index(a) + 1) % len(labels)] if i % 3 == 0 else a for i, a in enumerate(test["label"])]
    preds = pd.DataFrame({"image_id": test["image_id"], "path": test["path"], "actual": test["label"],
                          "predicted": predicted, "confidence": [round(0.5 + 0.4 * ((i * 7) % 10) / 10, 3) for i in range(len(test))]})
    ev = tmp / "evaluate"
    ev.mkdir()
    preds.to_csv(ev / "predictions.csv", index=False)
    rows = []
    for k in labels:
        tp = int(((preds.actual == k) & (preds.predicted == k)).sum())
        p_n, a_n = int((preds.predicted == k).sum()), int((preds.actual == k).sum())
        prec, rec = (tp / p_n if p_n else 0.0), (tp / a_n if a_n else 0.0)
        rows.append({"label": k, "precision": prec, "recall": rec, "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0, "support": a_n})
    per_class = pd.DataFrame(rows)
    per_class.to_csv(ev / "per_class.csv", index=False)
    acc = float((preds.actual == preds.predicted).mean())
    (tmp / "reports" / "evaluate.json").write_text(json.dumps({
        "accuracy": acc, "balanced_accuracy": float(per_class.recall.mean()), "macro_f1": float(per_class.f1.mean()),
        "n_test": len(preds), "per_class": {r["label"]: {k: r[k] for k in ("precision", "recall", "f1", "support")} for r in rows}}))
    pd.DataFrame({"fraction": [0.25, 0.5, 0.75, 1.0], "n_train": [10, 20, 30, 40], "accuracy": [0.4, 0.55, 0.62, acc],
                  "balanced_accuracy": [0.38, 0.5, 0.6, acc - 0.01]}).to_csv(ev / "learning_curve.csv", index=False)
    wrong = preds[preds.actual != preds.predicted].sort_values("confidence", ascending=False)
    (ev / "mistakes.json").write_text(json.dumps(wrong.to_dict("records")))
    tr = tmp / "train"
    tr.mkdir()
    pd.DataFrame({"epoch": [1, 2, 3, 4, 5], "train_loss": [1.6, 1.1, 0.8, 0.6, 0.5], "val_loss": [1.5, 1.2, 1.0, 0.95, 0.97],
                  "val_accuracy": [0.35, 0.5, 0.6, 0.64, 0.63], "val_balanced_accuracy": [0.33, 0.48, 0.58, 0.62, 0.61],
                  "lr": [1e-3] * 5, "seconds": [1.0] * 5}).to_csv(tr / "history.csv", index=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("report")
    (tmp / ".git").mkdir()  # the project root: manifest paths are relative to it
    params = write_params(tmp, items=["vest", "hoodie", "shirt"], attributes=["striped", "dotted"], per_query=12,
                          providers={"synthetic": {"options": {"cross_query": 0.2}}})  # label conflicts for the gallery
    doc = yaml.safe_load(params.read_text())
    doc["split"] = {"ratios": {"train": 0.6, "val": 0.2, "test": 0.2}}
    doc["balance"] = {"strategy": "class_weights"}
    params.write_text(yaml.safe_dump(doc))
    r = tmp / "reports"
    for args in (("scrape", "--provider", "synthetic", "--out", tmp / "scrape"),
                 ("dedup", tmp / "scrape", "--out", tmp / "dedup"),
                 ("split", tmp / "dedup", "--out", tmp / "split"),
                 ("balance", tmp / "split", "--out", tmp / "balance")):
        res = invoke(*args, "--params", params, "--report", r / f"{args[0]}.json")
        assert res.exit_code == 0, res.output
    res = invoke("audit", tmp / "split", "--params", params, "--report", r / "audit.json")
    assert res.exit_code in (0, 1) and (r / "audit.json").is_file(), res.output  # 1: leaks above max_leaks
    _fake_train_and_evaluate(tmp)
    page = tmp / "out" / "report.html"
    res = CliRunner().invoke(_report_app(), ["report", "--data", str(tmp), "--reports", str(r), "--out", str(page),
                                             "--report", str(tmp / "out" / "report.json"),
                                             "--params", str(params)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return {"tmp": tmp, "page": page, "params": params, "output": res.output}


class _Tables(HTMLParser):
    """Cell texts of every table with an id: {id: [[cell, ...], ...]}."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._id: str | None = None
        self._depth = 0
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._depth += 1
            tid = dict(attrs).get("id")
            if tid:
                self._id = tid
                self.tables[tid] = []
        elif tag == "tr" and self._id:
            self.tables[self._id].append([])
        elif tag in ("td", "th") and self._id:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._id and self._cell is not None:
            self.tables[self._id][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._depth -= 1
            if self._depth == 0:
                self._id = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _table(page: Path, tid: str) -> dict[str, dict[str, str]]:
    """{first cell: {column header: cell}} of the table `tid`."""
    p = _Tables()
    p.feed(page.read_text(encoding="utf-8"))
    head, *rows = p.tables[tid]
    return {r[0]: dict(zip(head[1:], r[1:], strict=True)) for r in rows}


# ---------------------------------------------------------------------------------------------
# The numbers


def test_cli_prints_the_page_path_and_page_is_self_contained(run) -> None:
    page = run["page"]
    assert str(page) in run["output"]
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>") and len(text.encode()) < 5_000_000
    for section in ("funnel", "duplicates", "audit", "balance", "training", "evaluation"):
        assert f'id="{section}"' in text, section
    assert 'id="absent"' not in text  # every part present
    assert not re.search(r"(src|href)=[\"']?(https?:|//)", text)  # nothing loaded from elsewhere
    assert "<script" not in text and text.count("data:image/jpeg;base64,") >= 5
    assert "class_weights" in text and "per_query: 12" in text  # params in the header


def test_cli_writes_what_the_page_holds_as_json(run) -> None:
    figures = json.loads((run["tmp"] / "out" / "report.json").read_text())
    assert figures["path"] == str(run["page"]) and figures["sections"]["funnel"] and figures["thumbnails"] > 0


def test_funnel_matches_the_manifests(run) -> None:
    tmp, page = run["tmp"], run["page"]
    scrape = pd.read_parquet(tmp / "scrape" / "manifest.parquet")
    failures = pd.read_parquet(tmp / "scrape" / "failures.parquet")
    dedup = pd.read_parquet(tmp / "dedup" / "manifest.parquet")
    split = pd.read_parquet(tmp / "split" / "manifest.parquet")
    balance = json.loads((tmp / "reports" / "balance.json").read_text())
    scrape_rep = json.loads((tmp / "reports" / "scrape.json").read_text())
    by_label = _table(page, "funnel-label")
    for label in scrape["label"].unique():
        row = by_label[label]
        stored = int((scrape["label"] == label).sum())
        assert int(row["stored"]) == stored
        assert int(row["returned"]) == stored + int((failures["label"] == label).sum())
        assert int(row["unique"]) == int((dedup["keep"] & (dedup["label"] == label)).sum())
        for s in ("train", "val", "test"):
            assert int(row[s]) == int((split["keep"] & split["split"].eq(s) & (split["label"] == label)).sum()), (label, s)
        assert int(row["balanced train"]) == balance["counts_after"][label]
    total = by_label["total"]
    assert int(total["stored"]) == len(scrape) and int(total["returned"]) == scrape_rep["results"]
    assert sum(int(total[s]) for s in ("train", "val", "test")) == int(split["keep"].sum())
    dedup_rep = json.loads((tmp / "reports" / "dedup.json").read_text())
    n_conflicts = dedup.loc[dedup["label_conflict"], "dup_group"].nunique()
    assert n_conflicts == dedup_rep["conflict_groups"] > 0
    text = page.read_text(encoding="utf-8")
    assert f"Label conflicts ({n_conflicts} groups)" in text and text.count('class="group conflict"') == n_conflicts
    by_query = _table(page, "funnel-query")
    assert set(by_query) - {"total"} == set(scrape["query"])
    for q, n in scrape["query"].value_counts().items():
        assert int(by_query[q]["stored"]) == n


def test_balance_confusion_and_per_class(run) -> None:
    tmp, page = run["tmp"], run["page"]
    bal = _table(page, "balance-table")
    rep = json.loads((tmp / "reports" / "balance.json").read_text())
    for label, n in rep["counts_before"].items():
        assert int(bal[label]["before"]) == n and int(bal[label]["after"]) == rep["counts_after"][label]
    preds = pd.read_csv(tmp / "evaluate" / "predictions.csv")
    cm = _table(page, "confusion")
    labels = sorted(preds["actual"].unique())
    for a in labels:
        for p in labels:
            assert int(cm[a][p]) == int(((preds.actual == a) & (preds.predicted == p)).sum()), (a, p)
        assert int(cm[a]["total"]) == int((preds.actual == a).sum())
    per_class = _table(page, "per-class")
    assert set(per_class) == set(labels)
    text = page.read_text(encoding="utf-8")
    assert 'id="learning-curve"' in text and 'id="training-curves"' in text and text.count("<polyline") == 6
    n_wrong = int((preds.actual != preds.predicted).sum())
    assert f"Most confident mistakes ({min(16, n_wrong)} of {n_wrong})" in text


def test_a_run_that_stopped_at_split_gets_a_page_naming_what_is_absent(run, tmp_path) -> None:
    tmp = run["tmp"]
    reports = tmp_path / "reports"
    reports.mkdir()
    for name in ("scrape", "dedup", "split"):
        shutil.copy(tmp / "reports" / f"{name}.json", reports)
    stages = {k: v for k, v in stage_folders(tmp).items() if k in ("scrape", "dedup", "split")}
    result = build_report(stages, reports, tmp_path / "r.html")
    assert result["sections"] == {"funnel": True, "duplicates": True, "audit": False, "balance": False,
                                  "training": False, "evaluation": False}
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert 'id="absent"' in text and "Audit: no reports/audit.json" in text and "Evaluation: no" in text
    assert "balanced train" not in result["funnel"]["columns"] and result["funnel"]["totals"]["stored"] > 0


def test_mistakes_in_evaluates_own_format_fall_back_to_its_thumbnails(tmp_path) -> None:
    ev = tmp_path / "evaluate"
    (ev / "mistakes").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 30, 30)).save(ev / "mistakes" / "001-abc.jpg")
    (ev / "mistakes.json").write_text(json.dumps({"n_mistakes": 3, "shown": 1, "mistakes": [
        {"rank": 1, "image_id": "abc", "path": "gone/abc.jpg", "actual": "a", "predicted": "b", "confidence": 0.9,
         "thumbnail": "mistakes/001-abc.jpg"}]}))
    result = build_report({"evaluate": ev}, None, tmp_path / "r.html", root=tmp_path)
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert result["sections"]["evaluation"] and "Most confident mistakes (1 of 3)" in text
    assert result["thumbnails"] == 1 and 'class="noimg"' not in text


def test_cli_errors_are_one_line_and_exit_1(run, tmp_path) -> None:
    app = _report_app()
    cases = [(["--data", str(run["tmp"]), "--stage", "bogus=x"], "unknown stage name"),
             (["--data", str(run["tmp"]), "--stage", "evaluate"], "expected NAME=PATH"),
             (["--data", str(tmp_path / "none"), "--reports", str(tmp_path / "none")], "nothing to report"),
             (["--data", str(run["tmp"]), "--params", str(tmp_path / "missing.yaml")], "params file not found")]
    for args, message in cases:
        res = CliRunner().invoke(app, ["report", *args, "--out", str(tmp_path / "x.html")])
        assert res.exit_code == 1 and message in res.output, (args, res.output)
        assert "Traceback" not in res.output
    res = CliRunner().invoke(app, ["report", "--help"])
    assert res.exit_code == 0 and "Examples" in res.output and "--stage" in res.output
    assert set(STAGES) >= {"scrape", "evaluate"}


# ---------------------------------------------------------------------------------------------
# Headless Chromium through the DevTools protocol


def _problems(events: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Console errors (console.error/assert, uncaught exceptions, error log entries) and requests
    to anything but data:, file: and about: URLs."""
    errors, external = [], []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append("console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            errors.append("exception: " + str(d.get("exception", {}).get("description") or d.get("text")))
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            errors.append("log: " + p["entry"].get("text", ""))
        elif m == "Network.requestWillBeSent":
            url = p.get("request", {}).get("url", "")
            if not url.startswith(("data:", "file:", "about:")):
                external.append(url)
    return errors, external


async def _drive(workdir: Path, url: str, screenshot: Path) -> dict[str, Any]:
    import base64

    async with open_page(workdir, CHROMIUM_FLAGS) as cdp:
        await cdp.call("Log.enable")
        await cdp.call("Emulation.setDeviceMetricsOverride", width=1200, height=2000, deviceScaleFactor=1, mobile=False)
        cdp.events.clear()
        await cdp.call("Page.navigate", url=url)
        await cdp.wait_for("Page.loadEventFired", 20)
        await asyncio.sleep(0.3)  # late console messages
        broken = await cdp.call("Runtime.evaluate", expression=BROKEN_IMAGES_JS, returnByValue=True)
        count = await cdp.call("Runtime.evaluate", expression="document.images.length", returnByValue=True)
        shot = await cdp.call("Page.captureScreenshot", format="png")
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        errors, external = _problems(cdp.events)
        return {"errors": errors, "external": external, "broken_images": broken["result"]["value"],
                "images": count["result"]["value"]}


def check_page(page: Path, screenshot: Path, workdir: Path, timeout: float = 40) -> dict[str, Any]:
    """Open `page` in headless Chromium; write a 1200x2000 screenshot; return console errors,
    external requests, the number of images and of broken images."""
    return asyncio.run(asyncio.wait_for(_drive(workdir, page.absolute().as_uri(), screenshot), timeout))


def _not_blank(png: Path) -> bool:
    with Image.open(png) as im:
        gray = im.convert("L")
        colors = im.convert("RGB").getcolors(maxcolors=1_000_000) or []
        return im.size == (1200, 2000) and ImageStat.Stat(gray).stddev[0] > 10 and len(colors) > 50


def test_page_renders_in_chromium_without_errors(run, tmp_path) -> None:
    shot = run["tmp"] / "out" / "report.png"
    result = check_page(run["page"], shot, tmp_path)
    assert result["errors"] == [] and result["external"] == [], result
    assert result["broken_images"] == 0 and result["images"] >= 5, result
    assert shot.is_file() and _not_blank(shot)


def test_the_browser_check_catches_a_broken_page(tmp_path) -> None:
    page = tmp_path / "broken.html"
    page.write_text("<!doctype html><meta charset='utf-8'><h1>broken</h1>"
                    "<img src='data:image/png;base64,AAAA' alt=''><script>console.error('x')</script>")
    result = check_page(page, tmp_path / "broken.png", tmp_path)
    assert result["broken_images"] == 1, result
    assert any("console.error: x" in e for e in result["errors"]), result
    assert (tmp_path / "broken.png").is_file()
