"""`datakit train`, `evaluate`, `predict` through the command line (a local Typer app with
`cli_train.register`, the same commands the main app gets)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import typer
import yaml
from typer.testing import CliRunner

from datakit.cli.train import register
from tests.unit.test_train import make_project

pytestmark = pytest.mark.timeout(300)


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False)
    register(app)
    return app


def invoke(*args: str | Path) -> Any:
    return CliRunner().invoke(_app(), [str(a) for a in args], catch_exceptions=False)


def _params(folder: Path, **sections: Any) -> Path:
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(sections))
    return path


TRAIN = {"backbone": "mobilenet_v3_small", "pretrained": False, "image_size": 32, "epochs": 2, "batch_size": 8,
         "num_workers": 0, "device": "cpu", "dvclive": False, "patience": 0}


def test_train_evaluate_predict(tmp_path: Path) -> None:
    balance = make_project(tmp_path, per=(8, 4, 4))
    (balance / "class_weights.json").write_text(json.dumps({"blue": 1.0, "green": 1.0, "red": 1.0}))
    params = _params(tmp_path, augment={"preset": "fashion"}, train=TRAIN,
                     evaluate={"learning_curve": [0.5, 1.0], "retrain_epochs": 1, "num_workers": 0, "device": "cpu",
                               "top_mistakes": 3})
    model, reports = tmp_path / "model", tmp_path / "reports"
    res = invoke("train", balance, "--out", model, "--params", params, "--report", reports / "train.json")
    assert res.exit_code == 0, res.output
    assert "best epoch" in res.output and "per epoch" in res.output
    rep = json.loads((reports / "train.json").read_text())
    assert rep["mode"] == "finetune" and rep["backbone"] == "mobilenet_v3_small" and rep["epochs_run"] == 2
    assert rep["class_weights"] == {"blue": 1.0, "green": 1.0, "red": 1.0} and rep["n_train"] == 24
    assert (model / "model.pt").is_file() and len(pd.read_csv(model / "history.csv")) == 2

    ev = tmp_path / "eval"
    res = invoke("evaluate", model, "--data", balance, "--out", ev, "--params", params, "--report", reports / "evaluate.json")
    assert res.exit_code == 0, res.output
    rep = json.loads((reports / "evaluate.json").read_text())
    assert rep["n_test"] == 12 and set(rep["per_class"]) == {"blue", "green", "red"}
    assert {"accuracy", "balanced_accuracy", "macro_f1", "confusion", "learning_curve"} <= set(rep)
    assert rep["learning_curve"]["method"] == "retrain" and rep["cv"] is None
    preds = pd.read_csv(ev / "predictions.csv")
    assert len(preds) == 12 and rep["accuracy"] == pytest.approx((preds["actual"] == preds["predicted"]).mean())
    assert len(pd.read_csv(ev / "per_class.csv")) == 3 and len(pd.read_csv(ev / "learning_curve.csv")) == 2
    mistakes = json.loads((ev / "mistakes.json").read_text())
    assert mistakes["shown"] == min(3, mistakes["n_mistakes"])
    for m in mistakes["mistakes"]:
        assert (ev / m["thumbnail"]).is_file()
    assert (ev / "confusion.png").is_file()

    folder = tmp_path / "new"
    folder.mkdir()
    for p in preds["path"].head(4):
        shutil.copy(tmp_path / p, folder / Path(p).name)
    res = invoke("predict", model, folder, "--out", tmp_path / "p.csv", "--device", "cpu")
    assert res.exit_code == 0, res.output
    got = pd.read_csv(tmp_path / "p.csv")
    assert len(got) == 4 and set(got["label"]) <= {"blue", "green", "red"}


def test_mode_override_and_probe(tmp_path: Path) -> None:
    balance = make_project(tmp_path, per=(6, 3, 3), embeddings=True, smote_row=True)
    params = _params(tmp_path, train={**TRAIN, "epochs": 1}, evaluate={"learning_curve": [], "device": "cpu"})
    res = invoke("train", balance, "--out", tmp_path / "probe", "--params", params, "--mode", "linear_probe",
                 "--report", tmp_path / "train.json")
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "train.json").read_text())
    # the mode switch takes the probe's own epochs (not the params' fine-tuning epochs: 1)
    assert rep["mode"] == "linear_probe" and rep["params"]["epochs"] == 30 and rep["n_train"] == 19
    assert "vectors/s" in res.output
    res = invoke("evaluate", tmp_path / "probe", "--data", balance, "--out", tmp_path / "ev", "--params", params,
                 "--report", tmp_path / "ev.json")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "ev.json").read_text())["accuracy"] >= 0.8


def test_errors_exit_non_zero_with_the_key(tmp_path: Path) -> None:
    balance = make_project(tmp_path, per=(2, 1, 1))
    bad = _params(tmp_path, train={**TRAIN, "lr": -1})
    res = invoke("train", balance, "--out", tmp_path / "m", "--params", bad)
    assert res.exit_code == 1 and "train.lr" in res.output
    res = invoke("train", balance, "--out", tmp_path / "m", "--params", _params(tmp_path, train={"colour": "red"}))
    assert res.exit_code == 1 and "train.colour: unknown key" in res.output
    res = invoke("train", tmp_path / "raw", "--out", tmp_path / "m", "--params", _params(tmp_path, train=TRAIN))
    assert res.exit_code == 1 and "no manifest" in res.output
    res = invoke("train", balance, "--out", tmp_path / "m", "--params", _params(tmp_path, train={**TRAIN, "mode": "linear_probe"}))
    assert res.exit_code == 1 and "datakit embed" in res.output
    assert not (tmp_path / "m" / "model.pt").exists()
    res = invoke("evaluate", tmp_path / "m", "--data", balance, "--out", tmp_path / "ev",
                 "--params", _params(tmp_path, evaluate={"refit": "maybe"}))
    assert res.exit_code == 1 and "evaluate.refit" in res.output
    res = invoke("evaluate", tmp_path / "m", "--data", balance, "--out", tmp_path / "ev", "--params", _params(tmp_path))
    assert res.exit_code == 1 and "no model" in res.output
    res = invoke("predict", tmp_path / "m", tmp_path)
    assert res.exit_code == 1 and "no model" in res.output


def test_help_teaches_with_examples() -> None:
    for cmd in ("train", "evaluate", "predict"):
        res = invoke(cmd, "--help")
        assert res.exit_code == 0 and "Examples" in res.output and f"datakit {cmd}" in res.output
