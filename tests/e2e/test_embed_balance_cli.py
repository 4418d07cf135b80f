"""End to end through the CLI: scrape (synthetic) -> embed -> dedup with the embedding signal ->
split -> balance (smote on embeddings, smote_pixels, oversample): every strategy ends the train
split balanced, val/test are untouched, the balance page shows what was added."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from datakit.manifest import read_manifest, read_stage_manifest
from datakit.vectors import read_embeddings
from tests.e2e.helpers import invoke, write_params

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("embed")
    (tmp / ".git").mkdir()  # the project root: manifest paths are relative to it
    params = write_params(tmp, items=["vest", "hoodie", "shirt"], attributes=["striped", "dotted"], per_query=12)
    doc = yaml.safe_load(params.read_text())
    doc["embed"] = {"backbone": "resnet18", "pretrained": False, "image_size": 32, "batch_size": 16, "workers": 0}
    # the embedding signal on but nearly inert (random weights), the dhash as wide as without vectors
    doc["dedup"] = {"signals": ["dhash", "embedding"], "embedding_similarity": 0.99999, "threshold": 28, "crops": True}
    doc["split"] = {"ratios": {"train": 0.6, "val": 0.2, "test": 0.2}}
    params.write_text(yaml.safe_dump(doc))
    r = tmp / "reports"
    assert invoke("scrape", "--provider", "synthetic", "--params", params, "--out", tmp / "scrape", "--report", r / "scrape.json").exit_code == 0
    res = invoke("embed", tmp / "scrape", "--out", tmp / "embed", "--params", params, "--report", r / "embed.json")
    assert res.exit_code == 0, res.output
    res = invoke("dedup", tmp / "embed", "--out", tmp / "dedup", "--params", params, "--report", r / "dedup.json")
    assert res.exit_code == 0, res.output
    res = invoke("split", tmp / "dedup", "--out", tmp / "split", "--params", params, "--report", r / "split.json")
    assert res.exit_code == 0, res.output
    return tmp, params


def test_embed_outputs(project) -> None:
    tmp, _ = project
    rep = json.loads((tmp / "reports" / "embed.json").read_text())
    scrape = pd.read_parquet(tmp / "scrape" / "manifest.parquet")
    ids, X, meta = read_embeddings(tmp / "embed")
    assert rep["embedded"] == len(scrape) == len(ids) and X.shape == (len(scrape), 512)
    assert meta["pretrained"] is False and meta["preprocess"]["crop"] == 32
    # the input's manifest, unchanged (paths are stored relative to each folder: compare them in memory)
    assert read_stage_manifest(tmp / "embed")[0].equals(read_stage_manifest(tmp / "scrape")[0])
    assert len(pd.read_parquet(tmp / "embed" / "failures.parquet")) == rep["failures"]  # one row per unreadable image
    dedup = json.loads((tmp / "reports" / "dedup.json").read_text())
    assert dedup["signals"] == ["dhash", "embedding"] and "pairs_via_embedding" in dedup


def test_embed_rerun_computes_nothing(project) -> None:
    tmp, params = project
    res = invoke("embed", tmp / "scrape", "--out", tmp / "embed", "--params", params, "--report", tmp / "reports" / "embed2.json")
    assert res.exit_code == 0 and json.loads((tmp / "reports" / "embed2.json").read_text())["computed"] == 0


def test_dedup_embedding_signal_without_a_table_is_a_clear_error(project) -> None:
    tmp, params = project
    res = invoke("dedup", tmp / "scrape", "--out", tmp / "dedup-x", "--params", params, "--report", tmp / "reports" / "x.json")
    assert res.exit_code == 1 and "embeddings.parquet" in res.output and "datakit embed" in res.output


def _balance(tmp: Path, params: Path, strategy: str, **extra) -> tuple[pd.DataFrame, dict, Path]:
    doc = yaml.safe_load(params.read_text())
    doc["balance"] = {"strategy": strategy, "pixels_size": 8, **extra}
    doc["augment"] = {"preset": "fashion"}
    p = tmp / f"params-{strategy}.yaml"
    p.write_text(yaml.safe_dump(doc))
    out = tmp / f"balance-{strategy}"
    res = invoke("balance", tmp / "split", "--out", out, "--params", p, "--embeddings", tmp / "embed",
                 "--report", tmp / "reports" / f"balance-{strategy}.json")
    assert res.exit_code == 0, res.output
    return read_manifest(out), json.loads((tmp / "reports" / f"balance-{strategy}.json").read_text()), out


@pytest.mark.parametrize("strategy", ["smote", "smote_pixels", "oversample", "undersample"])
def test_every_strategy_balances_train_only(project, strategy) -> None:
    tmp, params = project
    split = pd.read_parquet(tmp / "split" / "manifest.parquet")
    df, rep, out = _balance(tmp, params, strategy)
    after = rep["counts_after"]
    assert len(set(after.values())) == 1, after  # balanced: every class the same count
    assert rep["imbalance_after"] == 1.0 and rep["imbalance_before"] > 1.0
    # val/test untouched, originals all present
    assert set(split["image_id"]) <= set(df["image_id"])
    for s in ("val", "test"):
        a = df[df["split"] == s].set_index("image_id").sort_index()
        b = split[split["split"] == s].set_index("image_id").sort_index()
        assert a.index.equals(b.index) and (a["keep"] == b["keep"]).all()
    page = (out / "report.html").read_text()
    assert f"datakit balance: {strategy}" in page and "before" in page
    if strategy in ("smote_pixels", "oversample"):
        assert page.count("data:image/jpeg;base64,") >= 4  # children and their parents as thumbnails
    if strategy == "smote":
        ids, X, meta = read_embeddings(out)
        new = df[df["origin"] == "smote"]
        assert len(new) > 0 and new["path"].isna().all() and set(new["image_id"]) <= set(ids)
        assert meta["synthetic_rows"] == len(new) and "vector" in page


@pytest.mark.parametrize("strategy", ["oversample", "undersample"])
def test_balance_evens_out_the_rows_training_uses(project, strategy) -> None:  # issue 14
    """After augment, what the trainer learns from is every kept train row (variants included):
    balance evens those out, and every row it marks is a failures row with its reason."""
    from datakit.manifest import read_stage_manifest, write_stage_manifest
    from datakit.stage import training_rows

    tmp, params = project
    doc = yaml.safe_load(params.read_text())
    doc["augment"] = {"preset": "fashion", "variants": 2}
    doc["balance"] = {"strategy": strategy, "seed": 1}
    p = tmp / f"params-after-augment-{strategy}.yaml"
    p.write_text(yaml.safe_dump(doc))
    aug = tmp / f"augment-{strategy}"
    res = invoke("augment", tmp / "split", "--out", aug, "--params", p, "--report", tmp / "reports" / "augment.json")
    assert res.exit_code == 0, res.output
    # uneven variants per class, as a demo's were: the shirts lose theirs
    df, root, _ = read_stage_manifest(aug)
    df = df[~((df["origin"] == "augmented") & (df["label"] == "shirt"))]
    write_stage_manifest(df, aug / "manifest.parquet", root, stage="augment")
    before = df.loc[training_rows(df), "label"].value_counts()
    assert before.max() > before.min()
    out = tmp / f"balance-after-augment-{strategy}"
    res = invoke("balance", aug, "--out", out, "--params", p, "--report", tmp / "reports" / f"balance-aug-{strategy}.json")
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp / "reports" / f"balance-aug-{strategy}.json").read_text())
    bal, _, _ = read_stage_manifest(out)
    after = bal.loc[training_rows(bal), "label"].value_counts().sort_index()
    assert after.nunique() == 1 and after.to_dict() == rep["counts_after"], (after, rep)
    assert rep["counts_before"] == before.sort_index().to_dict() and rep["counts"].startswith("rows training uses")
    if strategy == "undersample":
        failed = pd.read_parquet(out / "failures.parquet")
        marked = bal[bal["balance_reason"] == "undersampled"]
        assert len(marked) > 0 and sorted(failed["image_id"]) == sorted(marked["image_id"])
        assert set(failed["reason"]) == {"undersampled"}
