"""`datakit dedup calibrate` end to end on a small synthetic scrape with (fast, random) vectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.e2e.helpers import invoke, write_params

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("calibrate")
    params = write_params(tmp, items=["vest", "hoodie"], attributes=["striped", "dotted"], per_query=6)
    data = yaml.safe_load(params.read_text())
    data["embed"] = {"backbone": "resnet18", "pretrained": False, "image_size": 32, "workers": 0}
    params.write_text(yaml.safe_dump(data))
    assert invoke("scrape", "--provider", "synthetic", "--params", params, "--out", tmp / "scrape",
                  "--report", tmp / "scrape.json").exit_code == 0
    res = invoke("embed", tmp / "scrape", "--out", tmp / "embed", "--params", params, "--report", tmp / "embed.json")
    assert res.exit_code == 0, res.output
    return tmp, params


def test_calibrate_reports_every_signal_and_recommends_the_thresholds(embedded) -> None:
    tmp, params = embedded
    res = invoke("dedup", "calibrate", tmp / "embed", "--params", params, "--sample", "5", "--json", tmp / "cal.json")
    assert res.exit_code == 0, res.output
    for title in ("dhash: full-hash distance", "dhash crop hashes", "embedding: cosine", "overlay check",
                  "recall per edit at the current params", "the whole rule"):
        assert title in res.output, title
    for knob in ("dedup.threshold", "dedup.embedding_similarity", "dedup.match_threshold"):
        assert f"recommended {knob}" in res.output
    fig = json.loads((tmp / "cal.json").read_text())
    assert fig["pairs"]["duplicates"] == 5 * 8 and fig["pairs"]["look_alikes"] > 0
    assert set(fig["signals"]) == {"dhash", "dhash crops", "embedding", "overlay"}
    assert {r["edit"] for r in fig["recall_per_edit"]} == {"crop_sym", "crop_one", "resize", "jpeg", "brightness",
                                                          "caption", "png", "stack"}
    assert set(fig["end_to_end"]) == {"current", "recommended"}
    assert "cosine >= 0.75" in fig["end_to_end"]["current"]["rule"]  # INPUT has vectors: the embedding signal is on
    assert 0 <= fig["end_to_end"]["current"]["recall"] <= 1
    rec = fig["recommended"]
    assert isinstance(rec["threshold"], int) and 0 < rec["embedding_similarity"] <= 1


def test_calibrate_without_vectors_and_with_a_pairs_file(embedded) -> None:
    tmp, params = embedded
    import pandas as pd

    ids = pd.read_parquet(tmp / "scrape" / "manifest.parquet")["image_id"].tolist()
    (tmp / "pairs.csv").write_text(f"a,b,duplicate\n{ids[0]},{ids[0]},1\n{ids[0]},{ids[1]},0\n{ids[2]},{ids[3]},no\n")
    res = invoke("dedup", "calibrate", tmp / "scrape", "--params", params, "--pairs", tmp / "pairs.csv",
                 "--json", tmp / "pairs.json")
    assert res.exit_code == 0, res.output
    fig = json.loads((tmp / "pairs.json").read_text())
    assert fig["pairs"]["duplicates"] == 1
    # no embeddings table in INPUT: the dedup rule is dhash (28) plus the crop join
    assert fig["end_to_end"]["current"]["rule"].startswith("(dhash <= 28 or crop hashes <= 24)")
    (tmp / "bad.csv").write_text(f"a,b,duplicate\n{ids[0]},{ids[1]},0\n{ids[0]},nowhere.jpg,1\n")
    res = invoke("dedup", "calibrate", tmp / "scrape", "--params", params, "--pairs", tmp / "bad.csv")
    assert res.exit_code == 1 and "line 3" in res.output and "nowhere.jpg" in res.output
