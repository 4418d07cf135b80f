"""datakit train / evaluate / predict: params, metrics, the linear probe, fine-tuning, model.pt."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from datakit.errors import ParamsError
from datakit.images import ImageStore
from datakit.manifest import CORE_COLUMNS, relpath, write_table
from datakit.train.params import parse_evaluate, parse_train

pytestmark = pytest.mark.timeout(300)

COLOURS = {"blue": (30, 40, 200), "green": (30, 180, 40), "red": (200, 30, 30)}
DIM = 16


def make_project(root: Path, *, per: tuple[int, int, int] = (10, 5, 5), size: int = 40, seed: int = 0,
                 smote_row: bool = False, folds: int = 0, embeddings: bool = False) -> Path:
    """`root/balance/manifest.parquet` over solid-colour PNGs (3 classes, noisy, unique bytes);
    paths are relative to `root` (the project root of a folder with no .git/.dvc above it).
    `smote_row` adds a train row with no image (origin smote); `embeddings` writes
    `balance/embeddings.parquet` with well separated class clusters (+ embed.json)."""
    store = ImageStore(root / "raw")
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for split, n in zip(("train", "val", "test"), per, strict=True):
        for label, rgb in COLOURS.items():
            for i in range(n):
                pixels = np.clip(np.array(rgb)[None, None] + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
                buf = io.BytesIO()
                Image.fromarray(pixels).save(buf, "PNG")
                image_id, rel = store.put(buf.getvalue(), "png")
                rows.append({"image_id": image_id, "path": relpath(root, store.folder / rel), "label": label,
                             **{c: None for c in CORE_COLUMNS[3:]}, "width": size, "height": size, "format": "PNG",
                             "bytes": len(buf.getvalue()), "split": split, "keep": True, "origin": "original",
                             "parent_ids": [], "fold": (i % folds) if folds and split != "test" else None})
    if smote_row:
        parents = [r["image_id"] for r in rows if r["split"] == "train" and r["label"] == "red"][:2]
        rows.append({**rows[0], "image_id": "smote-" + "0" * 58, "path": None, "label": "red", "width": None,
                     "height": None, "format": None, "bytes": None, "split": "train", "keep": True,
                     "origin": "smote", "parent_ids": parents, "fold": 0 if folds else None})
    df = pd.DataFrame(rows)
    if not folds:
        df = df.drop(columns=["fold"])
    out = root / "balance"
    out.mkdir(parents=True, exist_ok=True)
    write_table(df, out / "manifest.parquet")
    if embeddings:
        write_embeddings(out, df, seed=seed)
    return out


def write_embeddings(folder: Path, df: pd.DataFrame, *, seed: int = 0, spread: float = 1.0) -> np.ndarray:
    """Class c's vectors: 4 * e_c + N(0, spread) in DIM dimensions (the format `datakit embed` writes)."""
    rng = np.random.default_rng(seed + 1)
    labels = sorted(COLOURS)
    X = rng.normal(0, spread, (len(df), DIM)).astype(np.float32)
    for i, label in enumerate(df["label"]):
        X[i, labels.index(label)] += 4.0
    emb = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1), type=pa.float32()), DIM)
    table = pa.Table.from_arrays([pa.array(df["image_id"].astype(str).tolist(), type=pa.string()), emb],
                                 names=["image_id", "embedding"])
    pq.write_table(table, folder / "embeddings.parquet")
    meta = {"backbone": "resnet18", "pretrained": False, "dim": DIM, "seed": 0,
            "preprocess": {"resize": 37, "crop": 32, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                           "interpolation": "bilinear"}}
    (folder / "embed.json").write_text(json.dumps(meta))
    return X


PROBE = {"mode": "linear_probe", "dvclive": False, "device": "cpu", "epochs": 10}
FINETUNE = {"backbone": "resnet18", "pretrained": False, "image_size": 32, "epochs": 3, "batch_size": 8,
            "num_workers": 0, "dvclive": False, "device": "cpu", "patience": 0, "seed": 0}


def _train(balance: Path, raw: dict[str, Any], out: Path, **kw: Any) -> dict[str, Any]:
    """The train stage as the command runs it (the augmenter built from params.yaml `augment`)."""
    from datakit.augment import parse_augment
    from datakit.cli.train import OnlineAugmenter
    from datakit.train.loop import train_folder

    return train_folder(balance, out, parse_train(raw), augment=OnlineAugmenter(parse_augment(None)), **kw).report


def _evaluate(model: Path, data: Path, params: Any, out: Path) -> dict[str, Any]:
    """The evaluate stage through the one run-a-stage call (writes OUT/manifest.parquet, failures)."""
    from functools import partial

    from datakit.cli.train import OnlineAugmenter
    from datakit.stage import SPLIT, run_stage
    from datakit.train.evaluate import run

    return run_stage("evaluate", partial(run, model=model, augment_from=OnlineAugmenter.from_settings), data, out,
                     params, needs=(SPLIT,), required=("label",)).report


# ------------------------------------------------------------------------------- params


def test_params_defaults_follow_the_mode_and_errors_name_the_key() -> None:
    p = parse_train(None)
    assert (p.mode, p.backbone, p.pretrained, p.epochs, p.lr, p.class_weights) == ("finetune", "resnet18", True, 10, 1e-3, "auto")
    probe = parse_train({"mode": "linear_probe"})
    assert (probe.epochs, probe.batch_size, probe.lr, probe.weight_decay) == (30, 1024, 1.0, None)  # L2: 1 / n_train
    assert (probe.backbone, probe.patience) == ("efficientnet_lite0", 0)  # the embed default; fitted to convergence
    assert parse_train({"mode": "linear_probe", "epochs": 7}).epochs == 7
    for bad, key in [({"backbone": "resnet"}, "train.backbone"), ({"epochs": 0}, "train.epochs"),
                     ({"colour": 1}, "train.colour: unknown key"), ({"mode": "probe"}, "train.mode"),
                     ({"device": "gpu"}, "train.device"), ({"lr": -1}, "train.lr"),
                     ({"backbone_lr_scale": 2}, "train.backbone_lr_scale")]:
        with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
            parse_train(bad)
    with pytest.raises(ParamsError, match=r"evaluate\.learning_curve"):
        parse_evaluate({"learning_curve": [0.0, 0.5]})
    with pytest.raises(ParamsError, match=r"evaluate\.refit"):
        parse_evaluate({"refit": "sometimes"})
    assert parse_evaluate({"learning_curve": [1.0, 0.5, 0.5]}).learning_curve == [0.5, 1.0]


def test_package_import_is_light() -> None:
    code = "import sys, datakit.train, datakit.train.params; print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


# ------------------------------------------------------------------------------ metrics


def test_metrics_match_sklearn_on_known_predictions() -> None:
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    from datakit.train.evaluate import metrics

    actual = ["a"] * 6 + ["b"] * 3 + ["c"] * 1
    predicted = ["a", "a", "a", "a", "b", "c", "b", "b", "a", "c"]
    m = metrics(actual, predicted, ["a", "b", "c", "d"])
    assert m["accuracy"] == pytest.approx(accuracy_score(actual, predicted)) == pytest.approx(0.7)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(actual, predicted))
    assert m["balanced_accuracy"] == pytest.approx((4 / 6 + 2 / 3 + 1) / 3)
    assert m["macro_f1"] == pytest.approx(f1_score(actual, predicted, average="macro"))
    p, r, f, s = precision_recall_fscore_support(actual, predicted, labels=["a", "b", "c", "d"], zero_division=0)
    got = pd.DataFrame(m["per_class"]).set_index("label")
    assert got["precision"].tolist() == pytest.approx(list(p)) and got["recall"].tolist() == pytest.approx(list(r))
    assert got["f1"].tolist() == pytest.approx(list(f)) and got["support"].tolist() == list(s) == [6, 3, 1, 0]
    assert m["confusion"]["matrix"] == confusion_matrix(actual, predicted, labels=["a", "b", "c", "d"]).tolist()


def test_confusion_png_draws_any_size() -> None:
    from datakit.train.evaluate import confusion_png

    for n in (2, 15, 40):
        data = confusion_png([f"class-{i}" for i in range(n)], np.eye(n, dtype=int) * 3, "t")
        im = Image.open(io.BytesIO(data))
        assert im.format == "PNG" and im.width > n * 10


def test_subsample_is_stratified_and_derived_rows_follow_their_parents() -> None:
    from datakit.train.data import subsample

    rows = [{"image_id": f"{c}{i}", "label": c, "origin": "original", "parent_ids": []} for c in "ab" for i in range(10)]
    rows += [{"image_id": f"aug-{c}{i}", "label": c, "origin": "augmented", "parent_ids": [f"{c}{i}"]} for c in "ab" for i in range(10)]
    rows.append({"image_id": "smote-1", "label": "a", "origin": "smote", "parent_ids": ["a0", "a1"]})
    df = pd.DataFrame(rows)
    half = subsample(df, 0.5, seed=3)
    orig = half[half["origin"] == "original"]
    assert orig["label"].value_counts().to_dict() == {"a": 5, "b": 5}
    chosen = set(orig["image_id"])
    derived = half[half["origin"] != "original"]
    assert all(set(p) <= chosen for p in derived["parent_ids"])
    assert len(derived[derived["origin"] == "augmented"]) == 10  # every chosen parent's variant came along
    assert subsample(df, 0.5, seed=3).equals(half) and subsample(df, 1.0, seed=3) is df
    assert subsample(df, 0.01, seed=0)["label"].value_counts().min() >= 1


def test_class_weights_sources(tmp_path: Path) -> None:
    from datakit.train.data import read_class_weights

    labels = ["blue", "green", "red"]
    assert read_class_weights("auto", tmp_path, labels) is None
    (tmp_path / "class_weights.json").write_text(json.dumps({"blue": 0.5, "green": 1.0, "red": 2.0, "other": 9}))
    assert read_class_weights("auto", tmp_path, labels) == {"blue": 0.5, "green": 1.0, "red": 2.0}
    assert read_class_weights("none", tmp_path, labels) is None
    (tmp_path / "w.json").write_text(json.dumps({"blue": 1, "green": 1}))
    with pytest.raises(ParamsError, match=r"train\.class_weights: .*no weight for class\(es\) red"):
        read_class_weights(str(tmp_path / "w.json"), tmp_path, labels)
    with pytest.raises(ParamsError, match=r"train\.class_weights: no such file"):
        read_class_weights(str(tmp_path / "nope.json"), tmp_path, labels)
    (tmp_path / "w.json").write_text(json.dumps({"blue": 1, "green": 0, "red": 1}))
    with pytest.raises(ParamsError, match="positive"):
        read_class_weights(str(tmp_path / "w.json"), tmp_path, labels)


# --------------------------------------------------------------------------- linear probe


def test_linear_probe_learns_uses_smote_rows_reads_weights_and_evaluates(tmp_path: Path) -> None:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    from datakit.train.predict import load_model

    balance = make_project(tmp_path, smote_row=True, folds=3, embeddings=True)
    (balance / "class_weights.json").write_text(json.dumps({"blue": 1.0, "green": 1.0, "red": 0.9}))
    rep = _train(balance, PROBE, tmp_path / "probe")
    assert rep["n_train"] == 31 and rep["n_train_per_class"]["red"] == 11  # the smote row is a train vector
    assert rep["skipped"]["no_vector"] == 0
    assert rep["class_weights"] == {"blue": 1.0, "green": 1.0, "red": 0.9}
    assert rep["val_accuracy"] >= 0.9 and rep["val_balanced_accuracy"] >= 0.9
    lm = load_model(tmp_path / "probe")
    assert lm.mode == "linear_probe" and lm.labels == ["blue", "green", "red"]
    assert lm.payload["embed_meta"]["backbone"] == "resnet18" and lm.payload["feature_dim"] == DIM

    out = tmp_path / "eval"
    rep = _evaluate(tmp_path / "probe", balance, parse_evaluate({"device": "cpu", "num_workers": 0}), out)
    preds = pd.read_csv(out / "predictions.csv")
    assert list(preds.columns) == ["image_id", "path", "actual", "predicted", "confidence"]
    assert len(preds) == rep["n_test"] == 15
    assert rep["accuracy"] == pytest.approx(accuracy_score(preds["actual"], preds["predicted"])) and rep["accuracy"] >= 0.9
    assert rep["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(preds["actual"], preds["predicted"]))
    per_class = pd.read_csv(out / "per_class.csv")
    assert list(per_class.columns) == ["label", "precision", "recall", "f1", "support"]
    assert per_class["label"].tolist() == ["blue", "green", "red"] and per_class["support"].sum() == 15
    curve = pd.read_csv(out / "learning_curve.csv")
    assert list(curve.columns) == ["fraction", "n_train", "accuracy", "balanced_accuracy"]
    assert curve["fraction"].tolist() == [0.1, 0.25, 0.5, 1.0]
    assert curve["n_train"].is_monotonic_increasing and curve["n_train"].iloc[-1] == 31
    assert curve["accuracy"].iloc[-1] >= 0.9
    assert rep["learning_curve"]["method"] == "probe"
    cv = pd.read_csv(out / "cv.csv")
    assert cv["fold"].tolist() == [0, 1, 2] and cv["n_eval"].tolist() == [18, 15, 12]  # every non-test original once
    assert rep["cv"]["folds"] == 3 and rep["cv"]["accuracy_mean"] == pytest.approx(cv["accuracy"].mean())
    assert rep["cv"]["accuracy_std"] == pytest.approx(cv["accuracy"].std(ddof=0))
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    mistakes = json.loads((out / "mistakes.json").read_text())
    assert mistakes["n_mistakes"] == rep["n_mistakes"] == int((preds["actual"] != preds["predicted"]).sum())


def test_evaluate_finds_the_training_data_from_the_model_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default --data is the folder the model was trained on, found from the model folder's
    project root whatever the working directory."""
    from datakit.errors import DatakitError
    from datakit.train.evaluate import default_data

    balance = make_project(tmp_path / "project", per=(3, 1, 1), embeddings=True)
    (tmp_path / "project" / ".git").mkdir()
    _train(balance, {**PROBE, "epochs": 1}, tmp_path / "project" / "models" / "probe")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert default_data(tmp_path / "project" / "models" / "probe") == balance
    shutil.rmtree(balance)
    with pytest.raises(DatakitError, match="give --data INPUT"):
        default_data(tmp_path / "project" / "models" / "probe")


def test_a_probe_on_noise_stays_near_chance(tmp_path: Path) -> None:
    """The probe's accuracy is earned: the same rows with unrelated vectors do not separate."""
    balance = make_project(tmp_path, embeddings=True)
    df = pd.read_parquet(balance / "manifest.parquet")
    df = df.assign(label=np.random.default_rng(5).permutation(df["label"].to_numpy()))  # vectors no longer match labels
    write_table(df, balance / "manifest.parquet")
    rep = _train(balance, {**PROBE, "patience": 0}, tmp_path / "probe")
    assert rep["val_accuracy"] <= 0.75


def test_early_stopping_stops_and_keeps_the_best_epoch(tmp_path: Path) -> None:
    balance = make_project(tmp_path, embeddings=True)
    rep = _train(balance, {**PROBE, "epochs": 50, "patience": 2, "min_delta": 100.0}, tmp_path / "probe")
    assert rep["stopped_early"] and rep["epochs_run"] == 3 and rep["best_epoch"] == 1
    hist = pd.read_csv(tmp_path / "probe" / "history.csv")
    assert list(hist.columns) == ["epoch", "train_loss", "val_loss", "val_accuracy", "val_balanced_accuracy", "lr"]
    assert hist["epoch"].tolist() == [1, 2, 3]
    assert rep["val_loss"] == pytest.approx(hist["val_loss"].iloc[0])


def _git_repo_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh git repo with no commit, as the working directory (outside any `dvc repro`)."""
    git = shutil.which("git")
    if git is None:
        pytest.skip("git not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run([git, "init", "-q", str(repo)], check=True)
    monkeypatch.chdir(repo)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return repo


def test_dvclive_logs_without_turning_a_git_repo_into_a_dvc_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = _git_repo_cwd(tmp_path, monkeypatch)
    balance = make_project(tmp_path / "data", embeddings=True)
    _train(balance, {**PROBE, "epochs": 3, "patience": 0, "dvclive": True}, tmp_path / "probe")
    assert not (repo / ".dvc").exists() and not (repo / ".dvcignore").exists()
    metrics = json.loads((tmp_path / "probe" / "dvclive" / "metrics.json").read_text())
    assert {"train_loss", "val_loss", "val_accuracy", "val_balanced_accuracy", "best_epoch"} <= set(metrics)
    tsv = (tmp_path / "probe" / "dvclive" / "plots" / "metrics" / "val_balanced_accuracy.tsv").read_text().splitlines()
    assert len(tsv) == 4  # header + 3 epochs


def test_linear_probe_without_embeddings_says_how_to_get_them(tmp_path: Path) -> None:
    from datakit.errors import DatakitError

    balance = make_project(tmp_path, per=(3, 1, 1))
    with pytest.raises(DatakitError, match="datakit embed"):
        _train(balance, PROBE, tmp_path / "probe")


# ------------------------------------------------------------------------------ finetune


def test_finetune_learns_colours_skips_smote_rows_and_round_trips(tmp_path: Path) -> None:
    import torch

    from datakit.models import Preprocess
    from datakit.train.data import PixelCache
    from datakit.train.loop import cache_folder
    from datakit.train.predict import load_model, predict_folder

    balance = make_project(tmp_path, smote_row=True)
    rep = _train(balance, FINETUNE, tmp_path / "model")
    assert rep["skipped"]["no_image"] == 1 and rep["n_train"] == 30  # the smote row has no image
    assert rep["cache"] == {"hits": 0, "built": 45, "failed": 0}
    assert rep["epochs_run"] == 3 and rep["images_per_s"] > 0 and rep["device"] == "cpu"
    assert rep["val_accuracy"] >= 0.6  # chance is 1/3; solid colours are learnt in a few steps

    lm = load_model(tmp_path / "model")
    assert lm.labels == ["blue", "green", "red"] and lm.mode == "finetune" and lm.payload["backbone"] == "resnet18"
    assert lm.payload["torch"] == str(torch.__version__) and lm.payload["params"]["image_size"] == 32
    pre = Preprocess.from_dict(lm.payload["preprocess"])
    assert (pre.crop, pre.resize) == (32, 37)
    # re-runs reuse the pixel cache
    cache = PixelCache(cache_folder(parse_train(FINETUNE), tmp_path), 37)
    df = pd.read_parquet(balance / "manifest.parquet").dropna(subset=["path"])
    assert cache.ensure(tmp_path, df["image_id"].tolist(), df["path"].tolist())["built"] == 15  # test rows only
    assert cache.ensure(tmp_path, df["image_id"].tolist(), df["path"].tolist()) == {"hits": 60, "built": 0, "failed": 0}

    # predict a folder of test images named by their colour, plus one broken file
    folder = tmp_path / "new"
    folder.mkdir()
    test = df[df["split"] == "test"]
    for row in test.itertuples():
        shutil.copy(tmp_path / row.path, folder / f"{row.label}-{row.image_id[:8]}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    got = predict_folder(tmp_path / "model", folder, k=2, device="cpu")
    assert list(got.columns) == ["path", "label", "confidence", "top_k", "error"]
    assert len(got) == 16
    bad = got[got["path"] == "broken.png"].iloc[0]
    assert pd.isna(bad["label"]) and bad["error"]
    good = got[got["error"].isna()]
    assert set(good["label"]) <= set(lm.labels)
    assert ((good["confidence"] > 0) & (good["confidence"] <= 1)).all()
    assert all(len(json.loads(t)) == 2 for t in good["top_k"])
    truth = good["path"].str.split("-").str[0]
    assert (good["label"] == truth).mean() >= 0.6
    again = predict_folder(load_model(tmp_path / "model"), folder, k=2, device="cpu")
    pd.testing.assert_frame_equal(got, again)  # a loaded model predicts the same every time


def test_bad_class_weights_file_fails_before_training(tmp_path: Path) -> None:
    balance = make_project(tmp_path, per=(2, 1, 1))
    (tmp_path / "w.json").write_text(json.dumps({"blue": 1.0}))
    with pytest.raises(ParamsError, match=r"train\.class_weights"):
        _train(balance, {**FINETUNE, "class_weights": str(tmp_path / "w.json")}, tmp_path / "model")
    assert not (tmp_path / "model" / "model.pt").exists()


def test_dist_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from datakit.errors import DatakitError
    from datakit.train.devices import dist_from_env

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not dist_from_env().enabled and dist_from_env().main
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    d = dist_from_env()
    assert d.enabled and not d.main and d.local_rank == 1
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(DatakitError, match="WORLD_SIZE"):
        dist_from_env()


def test_predict_table_renders_unreadable_rows() -> None:  # issue 13: NotRenderableError on a NaN cell
    from rich.console import Console

    from datakit.cli.train import predict_table

    df = pd.DataFrame({"path": ["a.png", "[b].jpg"], "label": ["red", None], "confidence": [0.9, float("nan")],
                       "top_k": ['[["red", 0.9]]', None], "error": [None, "not_an_image"]})
    console = Console(width=200, record=True)
    console.print(predict_table(df, Path("photos")))
    text = console.export_text()
    assert "[b].jpg" in text and "not_an_image" in text and "nan" not in text.lower() and "red" in text


# ------------------------------------------------------------------------- stage contract


def test_mode_switch_defaults_live_in_train_section(tmp_path: Path) -> None:
    """A --mode that differs from params.yaml's takes that mode's epochs, batch size, lr and weight
    decay (not the file's fine-tuning ones) unless they are overridden too; the same mode keeps
    the file's values."""
    from datakit.params import load_params
    from datakit.train.params import train_section

    path = tmp_path / "params.yaml"
    path.write_text("train: {epochs: 1, batch_size: 8, lr: 0.01, device: cpu}\n")
    params = load_params(path)
    probe = train_section(params, mode="linear_probe")
    assert (probe.mode, probe.epochs, probe.batch_size, probe.lr, probe.weight_decay) == ("linear_probe", 30, 1024, 1.0, None)
    assert probe.device == "cpu"  # keys the mode does not decide stay the file's
    assert train_section(params, mode="linear_probe", epochs=5).epochs == 5
    same = train_section(params, mode="finetune")
    assert (same.epochs, same.batch_size, same.lr) == (1, 8, 0.01)
    assert train_section(params).epochs == 1 and not train_section(params, mode="linear_probe").augments_online
    with pytest.raises(ParamsError, match=r"train\.epochs"):
        train_section(params, epochs=0)


def test_the_learning_family_imports_no_augment_code() -> None:
    """Online augmentation is handed in by the command: train, evaluate and predict never import
    datakit.augment themselves."""
    code = ("import sys, datakit.train.loop, datakit.train.evaluate, datakit.train.predict; "
            "print(sorted(m for m in sys.modules if m.startswith('datakit.augment') or m == 'albumentations'))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"


def test_train_needs_a_split_input_and_says_which_stage_to_run(tmp_path: Path) -> None:
    from datakit.errors import ManifestError

    balance = make_project(tmp_path, per=(2, 1, 1))
    df = pd.read_parquet(balance / "manifest.parquet").drop(columns=["split"])
    write_table(df, balance / "manifest.parquet")
    with pytest.raises(ManifestError, match=r"has no train/val/test split .*run `datakit split INPUT --out DIR` first") as exc:
        _train(balance, FINETUNE, tmp_path / "model")
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "model" / "model.pt").exists()


def test_rows_left_out_are_failures_rows(tmp_path: Path) -> None:
    """A probe row with no vector and a fine-tune row whose image cannot be decoded are not
    silently skipped: OUT/failures.parquet names them, with a known reason code."""
    from datakit.manifest import is_known_reason

    balance = make_project(tmp_path, per=(4, 2, 2), embeddings=True)
    df = pd.read_parquet(balance / "manifest.parquet")
    gone = df[df["split"] == "train"].iloc[0]
    table = pq.read_table(balance / "embeddings.parquet")
    keep = [i != gone["image_id"] for i in table.column("image_id").to_pylist()]
    pq.write_table(table.filter(pa.array(keep)), balance / "embeddings.parquet")
    rep = _train(balance, PROBE, tmp_path / "probe")
    failures = pd.read_parquet(tmp_path / "probe" / "failures.parquet")
    assert rep["skipped"]["no_vector"] == 1
    assert failures[["image_id", "stage", "reason"]].values.tolist() == [[gone["image_id"], "train", "no_vector"]]

    broken = df[df["split"] == "val"].iloc[0]
    (tmp_path / broken["path"]).write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    rep = _train(balance, {**FINETUNE, "epochs": 1, "cache_dir": str(tmp_path / "cache")}, tmp_path / "model")
    failures = pd.read_parquet(tmp_path / "model" / "failures.parquet")
    assert rep["skipped"]["unreadable"] == 1 and failures["image_id"].tolist() == [broken["image_id"]]
    assert failures["stage"].tolist() == ["train"] and is_known_reason(failures["reason"].iat[0])
    assert failures["path"].tolist() == [broken["path"]]


def test_evaluate_writes_the_scored_test_rows_and_the_unscored_as_failures(tmp_path: Path) -> None:
    from datakit.manifest import read_stage_manifest

    balance = make_project(tmp_path, per=(6, 3, 3), embeddings=True)
    _train(balance, PROBE, tmp_path / "probe")
    df = pd.read_parquet(balance / "manifest.parquet")
    test = df[df["split"] == "test"]
    missing = test.iloc[0]
    table = pq.read_table(balance / "embeddings.parquet")
    keep = [i != missing["image_id"] for i in table.column("image_id").to_pylist()]
    pq.write_table(table.filter(pa.array(keep)), balance / "embeddings.parquet")
    (tmp_path / missing["path"]).write_bytes(b"not an image")  # no vector, and no image to fall back on
    out = tmp_path / "eval"
    rep = _evaluate(tmp_path / "probe", balance, parse_evaluate({"device": "cpu", "num_workers": 0,
                                                                  "learning_curve": [], "cv": False}), out)
    assert rep["n_test"] == len(test) - 1 and rep["n_unscored"] == 1
    scored, _root, meta = read_stage_manifest(out)
    assert meta["stage"] == "evaluate" and len(scored) == len(test)
    assert scored["predicted"].notna().sum() == len(test) - 1
    assert scored.loc[scored["image_id"] == missing["image_id"], "predicted"].isna().all()
    assert set(scored["predicted"].dropna()) <= {"blue", "green", "red"}
    failures = pd.read_parquet(out / "failures.parquet")
    assert failures["image_id"].tolist() == [missing["image_id"]] and failures["stage"].tolist() == ["evaluate"]
    assert failures["reason"].iat[0] in {"not_an_image", "decode_error", "truncated"}


def test_long_epochs_print_progress_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside an epoch: batches done, images/s and the time left, at most every PROGRESS_EVERY_S."""
    from datakit.train import loop

    class Notes:
        def __init__(self) -> None:
            self.lines: list[str] = []

        def start(self, phase: str, total: int) -> None:
            pass

        def advance(self, phase: str, n: int = 1) -> None:
            pass

        def note(self, message: str) -> None:
            self.lines.append(message)

    monkeypatch.setattr(loop, "PROGRESS_EVERY_S", 0.0)
    notes = Notes()
    balance = make_project(tmp_path)
    _train(balance, {**FINETUNE, "epochs": 2}, tmp_path / "model", progress=notes)
    inside = [x for x in notes.lines if " batch " in x]
    assert inside and all(re.search(r"epoch +\d+/2  batch \d+/\d+  [\d.]+ img/s  ETA \d+s", x) for x in inside), notes.lines
    assert sum(x.startswith("epoch") and "train_loss" in x for x in notes.lines) == 2  # the line ending each epoch
    monkeypatch.setattr(loop, "PROGRESS_EVERY_S", 3600.0)
    quiet = Notes()
    _train(balance, {**FINETUNE, "epochs": 1}, tmp_path / "model2", progress=quiet)
    assert not [x for x in quiet.lines if " batch " in x]


def test_dvclive_in_a_dvc_project_with_no_commit_yet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`datakit init` then `dvc repro` before any commit: dvclive 3 asks git for HEAD and fails;
    train must still log (without a DVC experiment)."""
    repo = _git_repo_cwd(tmp_path, monkeypatch)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True,
                   env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    from datakit.train.checkpoint import git_without_commits

    assert git_without_commits()
    balance = make_project(tmp_path / "data", embeddings=True)
    _train(balance, {**PROBE, "epochs": 2, "patience": 0, "dvclive": True}, tmp_path / "probe")
    assert json.loads((tmp_path / "probe" / "dvclive" / "metrics.json").read_text())["train_loss"] is not None
