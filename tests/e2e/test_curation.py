"""Label noise end to end: scrape (synthetic) -> embed (pretrained EfficientNet-Lite0) -> dedup,
five wrong labels planted -> `datakit suspects` ranks them first -> a person reviews five
suspects by keyboard in headless Chromium (reloading mid-way) -> the decisions file holds
exactly those five decisions -> `dvc repro` applies them before split."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from datakit.manifest import read_stage_manifest, write_stage_manifest
from tests.e2e.browser import open_page
from tests.e2e.helpers import invoke, write_params
from tests.e2e.test_dvc import make_env

pytestmark = [pytest.mark.timeout(900)]

PLANTED = 5


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("curation")
    home = tmp_path_factory.mktemp("curation-home")
    env = make_env(home)
    _run(["git", "init", "-q"], tmp, env)
    _run([sys.executable, "-m", "dvc", "init", "-q"], tmp, env)
    params = write_params(tmp, items=["vest", "hoodie", "t-shirt", "shirt"], attributes=["striped", "dotted"], per_query=10)
    doc = yaml.safe_load(params.read_text())
    doc["embed"] = {"batch_size": 16, "workers": 0}
    doc["split"] = {"ratios": {"train": 0.6, "val": 0.2, "test": 0.2}}
    params.write_text(yaml.safe_dump(doc))
    r = tmp / "reports"
    for args in (("scrape", "--provider", "synthetic", "--out", tmp / "data/scrape", "--report", r / "scrape.json"),
                 ("embed", tmp / "data/scrape", "--out", tmp / "data/embed", "--report", r / "embed.json"),
                 ("dedup", tmp / "data/embed", "--out", tmp / "data/dedup", "--report", r / "dedup.json")):
        res = invoke(*args[:1], *args[1:], "--params", params)
        assert res.exit_code == 0, res.output
    # plant wrong labels: five kept images get another item's label
    df, root, _ = read_stage_manifest(tmp / "data/dedup")
    rng = np.random.default_rng(3)
    candidates = df.index[df["keep"].astype(bool)].to_numpy()
    planted = rng.choice(candidates, PLANTED, replace=False)
    truth = {}
    items = ["vest", "hoodie", "t-shirt", "shirt"]
    for i in planted:
        truth[df.at[i, "image_id"]] = df.at[i, "label"]
        df.at[i, "label"] = items[(items.index(df.at[i, "label"]) + 1 + int(rng.integers(3))) % 4]
    write_stage_manifest(df, tmp / "data/dedup/manifest.parquet", root)
    res = invoke("suspects", tmp / "data/dedup", "--embeddings", tmp / "data/embed", "--out", tmp / "data/suspects",
                 "--params", params, "--report", r / "suspects.json")
    assert res.exit_code == 0, res.output
    return {"tmp": tmp, "params": params, "truth": truth, "env": env}


def test_planted_labels_rank_first(project) -> None:
    tmp, truth = project["tmp"], project["truth"]
    table = pd.read_parquet(tmp / "data/suspects/suspects.parquet")
    assert list(table.columns[:6]) == ["image_id", "label", "suggested_label", "score", "flagged", "reason"]
    assert table["score"].is_monotonic_decreasing
    # synthetic garments are drawn alike (a striped shirt looks much like a striped hoodie), so
    # some honest images rank high too; the planted ones must still lead
    ranks = sorted(int(table.index[table["image_id"] == i][0]) for i in truth)
    assert ranks[-1] < 2 * PLANTED and sum(ranks) / PLANTED < PLANTED, (ranks, table.head(12))
    flagged = table[table["flagged"]]
    assert len(set(flagged["image_id"]) & set(truth)) >= PLANTED - 2
    suggested = dict(zip(table["image_id"], table["suggested_label"], strict=True))
    assert sum(suggested[i] == label for i, label in truth.items()) >= PLANTED - 1
    manifest = pd.read_parquet(tmp / "data/suspects/manifest.parquet")
    dedup = pd.read_parquet(tmp / "data/dedup/manifest.parquet")
    assert len(manifest) == len(dedup) and {"score", "flagged", "suggested_label", "reason"} <= set(manifest.columns)
    rep = json.loads((tmp / "reports/suspects.json").read_text())
    assert rep["flagged"] == int(manifest["flagged"].sum()) and set(rep["noise_by_query"]) == set(dedup["query"])
    assert 0 < rep["estimated_noise"] < 0.5 and rep["lines"]  # drawn garments look alike: high, but not everything


def _start_review(tmp: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "datakit", "review", "data/suspects", "--decisions",
                             "review/decisions.csv", "--port", "0", "--no-open"], cwd=tmp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+/", line)
        if found:
            return proc, found.group(0)
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"review did not start: {proc.stderr.read()}")


async def _review(url: str, workdir: Path, plan: list[tuple[str, str]]) -> dict:
    async with open_page(workdir) as page:
        await page.goto(url)
        key_of = await page.wait("typeof S !== 'undefined' && S && S.keys")

        async def current() -> str:
            return await page.wait("document.getElementById('current').dataset.key")

        async def do(key: str) -> None:
            before = await page.eval("document.getElementById('progress').dataset.reviewed")
            await page.press(key)
            await page.wait(f"document.getElementById('progress').dataset.reviewed !== '{before}'")

        seen = []
        for n, (action, label) in enumerate(plan):
            seen.append(await current())
            if n == 2:  # a wrong key, undone, then the right one
                await do("x")
                await do("u")
                assert await current() == seen[-1]
            key = {"accept": "a", "remove": "x"}.get(action) or key_of[label]
            await do(key)
            if n == 2:  # close and reopen mid-way: the page resumes at the next undecided item
                await page.call("Page.reload", ignoreCache=True)
                await page.wait("document.readyState === 'complete' && typeof S !== 'undefined' && S && S.keys")
        return {"seen": seen, "errors": page.errors(), "requests": page.requests(),
                "progress": await page.eval("document.getElementById('progress').textContent")}


def test_review_five_by_keyboard_then_dvc_repro_applies_them(project, tmp_path) -> None:
    tmp, env, truth = project["tmp"], project["env"], project["truth"]
    (tmp / "review").mkdir()
    (tmp / "review/decisions.csv").write_text("image_id,action,label,reason,decided_at\n")
    (tmp / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "curate": {"cmd": "datakit curate data/suspects --decisions review/decisions.csv --out data/curate --report reports/curate.json",
                   "deps": ["data/suspects", "review/decisions.csv"], "outs": ["data/curate"],
                   "metrics": [{"reports/curate.json": {"cache": False}}]},
        "split": {"cmd": "datakit split data/curate --params params.yaml --out data/split --report reports/split.json",
                  "deps": ["data/curate"], "params": ["split"], "outs": ["data/split"]},
    }}))
    dvc = [sys.executable, "-m", "dvc"]
    _run([*dvc, "repro"], tmp, env)
    assert json.loads((tmp / "reports/curate.json").read_text())["decisions"] == 0

    proc, url = _start_review(tmp, env)
    try:
        state = json.loads(urllib.request.urlopen(url + "api/state", timeout=10).read())  # noqa: S310 - our loopback server
        queue = state["queues"]["suspects"][:5]
        assert len(queue) == 5
        plan: list[tuple[str, str]] = []
        for n, item in enumerate(queue):
            im = item["images"][0]
            other = next(c for c in state["classes"] if c != im["label"])
            plan.append([("relabel", truth.get(im["image_id"], other)), ("remove", ""), ("accept", ""),
                         ("relabel", truth.get(im["image_id"], other)), ("remove", "")][n])
        result = asyncio.run(asyncio.wait_for(_review(url, tmp_path, plan), 300))
    finally:
        proc.terminate()
        proc.wait(20)
    assert result["errors"] == [], result
    assert all(u.startswith(url) for u in result["requests"]), result["requests"]
    assert result["seen"] == [item["key"] for item in queue]
    decided = pd.read_csv(tmp / "review/decisions.csv", dtype=str, keep_default_na=False)
    assert len(decided) == 5
    got = {r.image_id: (r.action, r.label if r.action == "relabel" else "") for r in decided.itertuples()}
    want = {item["images"][0]["image_id"]: p for item, p in zip(queue, plan, strict=True)}
    assert got == want

    _run([*dvc, "repro"], tmp, env)
    rep = json.loads((tmp / "reports/curate.json").read_text())
    actions = [a for a, _ in want.values()]
    assert (rep["decisions"], rep["applied"], rep["unknown_images"]) == (5, 5, 0)
    assert (rep["relabelled"], rep["removed"], rep["accepted"]) == (actions.count("relabel"), actions.count("remove"), 1)
    split, _, _ = read_stage_manifest(tmp / "data/split")
    by_id = split.set_index("image_id")
    for iid, (action, label) in want.items():
        if action == "remove":
            assert not bool(by_id.at[iid, "keep"]) and pd.isna(by_id.at[iid, "split"])
        elif action == "relabel":
            assert by_id.at[iid, "label"] == label and by_id.at[iid, "split"] in ("train", "val", "test")
    curated = pd.read_parquet(tmp / "data/curate/failures.parquet")
    assert sorted(curated["image_id"]) == sorted(i for i, (a, _) in want.items() if a == "remove")
    assert set(curated["reason"]) == {"reviewed_remove"}
    status = _run([*dvc, "status"], tmp, env)
    assert "up to date" in status.stdout
