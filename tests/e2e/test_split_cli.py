"""`datakit split` end to end: scrape (synthetic) -> dedup -> split, and a second version."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from tests.e2e.helpers import invoke, write_params

pytestmark = pytest.mark.timeout(300)


def _pipeline(tmp, name: str, items: list[str]) -> pd.DataFrame:
    """The flagship order: scrape -> embed (pretrained EfficientNet-Lite0 from the wheel, 128 px) -> dedup."""
    params = write_params(tmp, items=items, attributes=["striped", "dotted", "leopard"], per_query=30)
    doc = yaml.safe_load(params.read_text())
    doc["embed"] = {"image_size": 128, "workers": 0}
    params.write_text(yaml.safe_dump(doc))
    for args in (("scrape", "--provider", "synthetic", "--out", tmp / f"scrape-{name}"),
                 ("embed", tmp / f"scrape-{name}", "--out", tmp / f"embed-{name}"),
                 ("dedup", tmp / f"embed-{name}", "--out", tmp / f"dedup-{name}")):
        res = invoke(*args, "--params", params, "--report", tmp / "reports" / f"{args[0]}-{name}.json")
        assert res.exit_code == 0, res.output
    return pd.read_parquet(tmp / f"dedup-{name}" / "manifest.parquet")


def test_split_keeps_groups_whole_and_covers_every_class(tmp_path) -> None:
    _pipeline(tmp_path, "v1", ["vest", "hoodie", "shirt"])
    res = invoke("split", tmp_path / "dedup-v1", "--out", tmp_path / "split-v1", "--report", tmp_path / "split.json")
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(tmp_path / "split-v1" / "manifest.parquet")
    kept = df[df["keep"]]
    assert kept["split"].notna().all()
    assert (df.groupby("dup_group")["split"].nunique(dropna=True) <= 1).all()  # SPL-02, copies included
    assert (kept.groupby("label")["split"].nunique() == 3).all()  # SPL-09
    rep = json.loads((tmp_path / "split.json").read_text())
    for row in rep["per_class"].values():
        assert abs(row["proportions"]["train"] - 0.8) * row["n"] <= row["bound_images"] + 1e-9  # SPL-08


def test_new_version_moves_no_old_image(tmp_path) -> None:  # SPL-13
    _pipeline(tmp_path, "v1", ["vest", "hoodie"])
    assert invoke("split", tmp_path / "dedup-v1", "--out", tmp_path / "split-v1", "--report", tmp_path / "s1.json").exit_code == 0
    v2 = _pipeline(tmp_path, "v2", ["vest", "hoodie", "shirt"])
    res = invoke("split", tmp_path / "dedup-v2", "--previous", tmp_path / "split-v1", "--out", tmp_path / "split-v2",
                 "--report", tmp_path / "s2.json")
    assert res.exit_code == 0, res.output
    old = pd.read_parquet(tmp_path / "split-v1" / "manifest.parquet").set_index("image_id")["split"]
    new = pd.read_parquet(tmp_path / "split-v2" / "manifest.parquet").set_index("image_id")["split"]
    common = old.index.intersection(new.index)
    assert len(common) > 50 and len(v2) > len(common)
    rep = json.loads((tmp_path / "s2.json").read_text())
    moved = (old[common] != new[common]) & old[common].notna()
    assert int(moved.sum()) == rep["moved_from_previous"]
    assert moved.sum() <= sum(len(v) for v in rep["previous_merges"].values())  # only reported merges may move


def test_same_seed_same_bytes_different_seed_differs(tmp_path) -> None:  # SPL-11/12
    _pipeline(tmp_path, "v1", ["vest", "hoodie"])
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert invoke("split", tmp_path / "dedup-v1", "--out", tmp_path / f"s-{name}", "--seed", seed,
                      "--report", tmp_path / f"{name}.json").exit_code == 0
    a, b, c = (pd.read_parquet(tmp_path / f"s-{n}" / "manifest.parquet")["split"] for n in "abc")
    assert a.equals(b) and not a.equals(c)


def test_infeasible_class_is_named(tmp_path) -> None:  # SPL-10
    params = write_params(tmp_path, items=["vest"], attributes=["striped"], per_query=2, min_per_label=0)
    for args in (("scrape", "--provider", "synthetic", "--out", tmp_path / "scrape"),
                 ("dedup", tmp_path / "scrape", "--out", tmp_path / "dedup")):
        assert invoke(*args, "--params", params, "--report", tmp_path / f"{args[0]}.json").exit_code == 0
    res = invoke("split", tmp_path / "dedup", "--out", tmp_path / "split", "--report", tmp_path / "s.json")
    assert res.exit_code == 1 and "vest" in res.output


def test_export_imagefolder_after_split(tmp_path) -> None:
    _pipeline(tmp_path, "v1", ["vest", "hoodie"])
    assert invoke("split", tmp_path / "dedup-v1", "--out", tmp_path / "split", "--report", tmp_path / "s.json").exit_code == 0
    res = invoke("export", tmp_path / "split", "--out", tmp_path / "export", "--report", tmp_path / "export.json")
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(tmp_path / "split" / "manifest.parquet")
    kept = df[df["keep"] & df["split"].notna()]
    for split_name in ("train", "val", "test"):
        for label in ("vest", "hoodie"):
            files = list((tmp_path / "export" / split_name / label).iterdir())
            assert len(files) == len(kept[(kept["split"] == split_name) & (kept["label"] == label)]) > 0


def test_audit_passes_a_datakit_split_and_fails_a_planted_leak(tmp_path) -> None:  # SPL-04, gate
    _pipeline(tmp_path, "v1", ["vest", "hoodie"])
    assert invoke("split", tmp_path / "dedup-v1", "--out", tmp_path / "split", "--report", tmp_path / "s.json").exit_code == 0
    res = invoke("audit", tmp_path / "split", "--report", tmp_path / "audit.json")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "audit.json").read_text())["leaks"] == 0
    assert invoke("export", tmp_path / "split", "--out", tmp_path / "folders", "--link", "copy", "--report", tmp_path / "export2.json").exit_code == 0
    train_file = next((tmp_path / "folders" / "train" / "vest").iterdir())
    (tmp_path / "folders" / "test" / "vest" / "planted.jpg").write_bytes(train_file.read_bytes())
    res = invoke("audit", tmp_path / "folders", "--report", tmp_path / "audit2.json")
    assert res.exit_code == 1
    assert "planted.jpg" in res.output and train_file.name in res.output


def test_augment_touches_only_train_and_audit_still_passes(tmp_path) -> None:  # SPL-05
    _pipeline(tmp_path, "v1", ["vest", "hoodie"])
    assert invoke("split", tmp_path / "dedup-v1", "--out", tmp_path / "split", "--report", tmp_path / "s.json").exit_code == 0
    params = tmp_path / "aug.yaml"
    params.write_text("augment: {preset: fashion, variants: 2, seed: 3}\n")
    res = invoke("augment", tmp_path / "split", "--out", tmp_path / "augment", "--params", params,
                 "--report", tmp_path / "augment.json")
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(tmp_path / "augment" / "manifest.parquet")
    parents = df[(df["origin"] != "augmented") & df["keep"].fillna(False).astype(bool) & (df["split"] == "train")]
    variants = df[df["origin"] == "augmented"]
    assert len(variants) == 2 * len(parents)
    assert set(variants["split"]) == {"train"}
    by_id = df.set_index("image_id")
    for _, v in variants.iterrows():
        parent = by_id.loc[v["parent_ids"][0]]
        assert (v["split"], v["label"], v["dup_group"]) == (parent["split"], parent["label"], parent["dup_group"])
    rep = json.loads((tmp_path / "augment.json").read_text())
    assert rep["variants"] == len(variants) and rep["pipeline"]["albumentations_version"].startswith("2.0")
    res = invoke("audit", tmp_path / "augment", "--report", tmp_path / "audit.json")
    assert res.exit_code == 0, res.output  # variants never reach val/test


def test_bad_augment_params_name_the_key(tmp_path) -> None:
    params = tmp_path / "aug.yaml"
    params.write_text("augment: {transforms: [{name: HorizntalFlip}]}\n")
    (tmp_path / "in").mkdir()
    res = invoke("augment", tmp_path / "in", "--out", tmp_path / "out", "--params", params)
    assert res.exit_code == 1 and "augment.transforms[0].name" in res.output and "HorizontalFlip" in res.output


@pytest.mark.parametrize("strategy", ["oversample", "undersample", "class_weights"])
def test_balance_only_touches_train(tmp_path, strategy: str) -> None:
    _pipeline(tmp_path, "v1", ["vest", "hoodie"])
    assert invoke("split", tmp_path / "dedup-v1", "--out", tmp_path / "split", "--report", tmp_path / "s.json").exit_code == 0
    from datakit.manifest import read_stage_manifest, write_stage_manifest

    split_df, root, _ = read_stage_manifest(tmp_path / "split")
    # make the classes uneven: drop most hoodies from train
    hoodies = split_df[(split_df["label"] == "hoodie") & (split_df["split"] == "train") & split_df["keep"]]
    split_df.loc[hoodies.index[: len(hoodies) * 2 // 3], "keep"] = False
    write_stage_manifest(split_df, tmp_path / "split" / "manifest.parquet", root, stage="split")
    params = tmp_path / "bal.yaml"
    params.write_text(f"balance: {{strategy: {strategy}, target: auto, seed: 1}}\naugment: {{preset: fashion}}\n")
    res = invoke("balance", tmp_path / "split", "--out", tmp_path / "balance", "--params", params,
                 "--report", tmp_path / "balance.json")
    assert res.exit_code == 0, res.output
    out = pd.read_parquet(tmp_path / "balance" / "manifest.parquet")
    before = split_df[split_df["split"] != "train"].set_index("image_id")
    after = out[out["split"] != "train"].set_index("image_id")
    assert set(before.index) == set(after.index)  # val/test untouched
    assert (after.loc[before.index, "keep"].fillna(False) == before["keep"].fillna(False)).all()
    assert len(out) >= len(split_df)  # never drops a row
    rep = json.loads((tmp_path / "balance.json").read_text())
    weights = json.loads((tmp_path / "balance" / "class_weights.json").read_text())
    assert set(weights) == {"vest", "hoodie"}
    if strategy != "class_weights":
        assert rep["imbalance_after"] < rep["imbalance_before"]


def _scrape_and_dedup(tmp_path) -> None:
    params = write_params(tmp_path, items=["vest", "hoodie"], attributes=["striped"], per_query=6, min_per_label=0)
    for args in (("scrape", "--provider", "synthetic", "--out", tmp_path / "scrape"),
                 ("dedup", tmp_path / "scrape", "--out", tmp_path / "dedup")):
        res = invoke(*args, "--params", params, "--report", tmp_path / f"{args[0]}.json")
        assert res.exit_code == 0, res.output


def test_wrong_kind_of_input_is_one_clear_line(tmp_path) -> None:  # issue 14
    _scrape_and_dedup(tmp_path)
    res = invoke("split", tmp_path / "scrape", "--out", tmp_path / "s", "--report", tmp_path / "s.json")
    assert res.exit_code == 1 and not (tmp_path / "s" / "manifest.parquet").exists()
    assert "has not been deduplicated" in res.output and "run `datakit dedup" in res.output, res.output
    for command in ("augment", "balance"):  # a dedup folder is not split
        res = invoke(command, tmp_path / "dedup", "--out", tmp_path / command, "--report", tmp_path / f"{command}.json")
        assert res.exit_code == 1 and not (tmp_path / command / "manifest.parquet").exists()
        assert "has no train/val/test split" in res.output and "run `datakit split" in res.output, res.output


def test_no_dedup_splits_raw_data_on_request(tmp_path) -> None:
    _scrape_and_dedup(tmp_path)
    assert "--no-dedup" in invoke("split", "--help").output
    params = tmp_path / "split.yaml"
    params.write_text("split: {tiny_classes: train}\n")
    res = invoke("split", tmp_path / "scrape", "--no-dedup", "--out", tmp_path / "s", "--params", params,
                 "--report", tmp_path / "s.json")
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(tmp_path / "s" / "manifest.parquet")
    scraped = pd.read_parquet(tmp_path / "scrape" / "manifest.parquet")
    assert df["split"].notna().all() and len(df) == len(scraped)
    assert (df["split_group"] == df["image_id"]).all()  # no dedup: every image is its own group


def test_augment_writes_failures_and_a_variant_per_readable_parent(tmp_path) -> None:  # issue 14, rule 4
    _scrape_and_dedup(tmp_path)
    split_params = tmp_path / "split.yaml"
    split_params.write_text("split: {tiny_classes: train}\naugment: {variants: 1, preset: fashion}\n")
    res = invoke("split", tmp_path / "dedup", "--out", tmp_path / "split", "--params", split_params,
                 "--report", tmp_path / "s.json")
    assert res.exit_code == 0, res.output
    from datakit.manifest import is_known_reason, read_stage_manifest

    df, root, _ = read_stage_manifest(tmp_path / "split")
    gone = df[(df["split"] == "train") & df["keep"]].iloc[0]
    (root / gone["path"]).write_bytes(b"not an image any more")  # present (the input check passes), unreadable
    res = invoke("augment", tmp_path / "split", "--out", tmp_path / "augment", "--params", split_params,
                 "--report", tmp_path / "augment.json")
    assert res.exit_code == 0, res.output
    failed = pd.read_parquet(tmp_path / "augment" / "failures.parquet")
    assert failed[["image_id", "stage"]].values.tolist() == [[gone["image_id"], "augment"]]
    assert is_known_reason(failed["reason"].iat[0]) and failed["detail"].iat[0]
    rep = json.loads((tmp_path / "augment.json").read_text())
    assert rep["failures"] == 1 and rep["variants"] == rep["parents"] - 1 > 0
