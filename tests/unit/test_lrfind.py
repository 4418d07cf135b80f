"""The learning-rate range test (`datakit train --lr-find`, datakit.train.lrfind): a real sweep on
a linear probe over separable vectors and on a small CNN over colour images (the fixtures of
test_train), the suggestion rules on known curves, the files and what is never written."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from datakit.errors import DatakitError
from datakit.train.params import parse_train
from tests.unit.test_train import FINETUNE, PROBE, make_project

pytestmark = pytest.mark.timeout(300)

SMALL_CNN = {**FINETUNE, "backbone": "mobilenet_v3_small"}


def _sweep(balance: Path, raw: dict[str, Any], out: Path, **plan: Any) -> Any:
    from datakit.augment import parse_augment
    from datakit.cli.train import OnlineAugmenter
    from datakit.train.lrfind import Sweep, find_folder

    params = parse_train(raw)
    augment = OnlineAugmenter(parse_augment(None)) if params.augments_online else None
    return find_folder(balance, out, params, augment=augment, plan=Sweep(**plan))


def _final_train_loss(balance: Path, raw: dict[str, Any], lr: float) -> float:
    """The train loss after a short run of `fit` at `lr` (the rows and pipeline training uses)."""
    from datakit.stage import load_input
    from datakit.train.data import label_list, load_embeddings, split_rows
    from datakit.train.loop import fit

    inp = load_input(balance, needs=(), required=("label", "split"))
    train = split_rows(inp.manifest, "train", originals_only=False)
    val = split_rows(inp.manifest, "val", originals_only=True)
    params = parse_train({**raw, "lr": lr})
    emb = load_embeddings(balance) if params.mode == "linear_probe" else None
    result = fit(train, val, label_list(train), params, root=inp.root, embeddings=emb)
    return float(result.history[-1]["train_loss"])


def _ema(losses: list[float], beta: float) -> list[float]:
    out, avg = [], 0.0
    for i, v in enumerate(losses):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta ** (i + 1)))
    return out


# ------------------------------------------------------------------------------ the probe


def test_probe_sweep_is_geometric_per_step_and_its_suggestion_trains_better_than_1e_7(tmp_path: Path) -> None:
    balance = make_project(tmp_path, embeddings=True)
    out = tmp_path / "lr_find"
    result = _sweep(balance, PROBE, out, steps=60)
    csv = pd.read_csv(out / "lr_find.csv")
    assert list(csv.columns) == ["step", "lr", "loss", "smoothed_loss"]
    assert csv["step"].tolist() == list(range(1, len(csv) + 1)) and len(csv) >= 10
    lr = csv["lr"].to_numpy()
    ratio = lr[1:] / lr[:-1]
    assert lr[0] == pytest.approx(1e-7) and np.allclose(ratio, (10 / 1e-7) ** (1 / 59), rtol=1e-5)
    assert np.isfinite(csv["loss"]).all() and csv["loss"].iloc[0] == pytest.approx(math.log(3), rel=1e-4)
    # the probe's loss is full-batch (no noise): no smoothing, so no lag behind the loss
    assert np.allclose(csv["smoothed_loss"], csv["loss"])
    summary = json.loads((out / "lr_find.json").read_text())
    assert summary == json.loads(json.dumps(result.report))
    assert summary["mode"] == "linear_probe" and summary["method"] == "min_loss_capped_at_1"
    assert summary["steps"] == len(csv) and summary["beta"] == 0.0 and summary["n_train"] == 30
    suggested = summary["suggested_lr"]
    assert lr.min() <= suggested <= min(lr.max(), 1.0)
    assert summary["hint"] == f"train.lr: {summary['hint'].split()[1]} in params.yaml"
    assert yaml.safe_load(summary["hint"].removesuffix(" in params.yaml"))["train.lr"] == pytest.approx(suggested, rel=0.05)
    # a few epochs (L-BFGS with its line search, as training runs it): the suggestion learns, 1e-7 does not
    at_suggested = _final_train_loss(balance, {**PROBE, "epochs": 2}, suggested)
    at_tiny = _final_train_loss(balance, {**PROBE, "epochs": 2}, 1e-7)
    assert at_suggested < 0.5 * at_tiny, (at_suggested, at_tiny)


# ------------------------------------------------------------------------------ fine-tuning


def test_finetune_sweep_stops_when_lr_gets_huge_and_its_suggestion_trains_better(tmp_path: Path) -> None:
    balance = make_project(tmp_path)
    out = tmp_path / "lr_find"
    result = _sweep(balance, SMALL_CNN, out, steps=60)
    rows = result.extra["rows"]
    summary = result.report
    assert summary["stopped_early"] and len(rows) < 60 and "4x its best" in summary["stop_reason"]
    losses = [r["loss"] for r in rows]
    smoothed = [r["smoothed_loss"] for r in rows]
    assert np.allclose(smoothed, _ema(losses, 0.98))  # the bias-corrected moving average, beta 0.98
    assert smoothed[-1] > 4 * min(smoothed[:-1]) and all(s <= 4 * min(smoothed[: i + 1])
                                                         for i, s in enumerate(smoothed[:-1]))
    assert rows[-1]["lr"] > 1e-3  # it stopped where the lr was large, not at the start
    lr = np.array([r["lr"] for r in rows])
    assert np.allclose(lr[1:] / lr[:-1], (10 / 1e-7) ** (1 / 59))
    assert summary["method"] in ("steepest", "min_loss/10") and lr.min() <= summary["suggested_lr"] <= lr.max()
    assert summary["suggested_lr"] <= summary["min_loss_lr"] and summary["batch_size"] == 8
    assert summary["optimizer"].startswith("AdamW") and summary["backbone_lr_scale"] == 0.1
    # three epochs at the suggestion reach a lower train loss than at 1e-7 (a real run of fit)
    raw = {**SMALL_CNN, "epochs": 3, "online_augment": False}
    at_suggested = _final_train_loss(balance, raw, summary["suggested_lr"])
    at_tiny = _final_train_loss(balance, raw, 1e-7)
    assert at_suggested < at_tiny - 0.1, (at_suggested, at_tiny)


def test_outputs_are_written_atomically_and_nothing_else_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each file arrives whole by a rename from a temp file in its folder; no model, history,
    dvclive, failures or train report; the project's pixel cache is the only other write."""
    import datakit.fsutil as fsutil

    balance = make_project(tmp_path, per=(4, 2, 2))
    out = tmp_path / "reports" / "lr_find"
    moved: list[tuple[Path, Path]] = []
    real = os.replace

    def spy(src: Any, dst: Any) -> None:
        moved.append((Path(src), Path(dst)))
        real(src, dst)

    monkeypatch.setattr(fsutil.os, "replace", spy)
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    _sweep(balance, {**SMALL_CNN, "dvclive": True}, out, steps=12)
    into_out = {dst.name: src for src, dst in moved if dst.parent == out}
    assert set(into_out) == {"lr_find.csv", "lr_find.json"}
    assert all(src.parent == out and src.name != dst for dst, src in into_out.items())
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()} - {
        p.relative_to(tmp_path).as_posix() for p in before}
    assert {w for w in written if not w.startswith(".datakit/cache/train/")} == {
        "reports/lr_find/lr_find.csv", "reports/lr_find/lr_find.json", "reports/lr_find/.datakit/lock"}
    assert not list(out.glob("*.tmp")) and not (tmp_path / "reports" / "train.json").exists()


def test_a_train_output_folder_is_refused_and_so_is_torchrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    balance = make_project(tmp_path, per=(3, 1, 1), embeddings=True)
    model = tmp_path / "train"
    model.mkdir()
    (model / "model.pt").write_bytes(b"a trained model")
    with pytest.raises(DatakitError, match=r"holds a trained model \(model.pt\).*--out reports/lr_find"):
        _sweep(balance, PROBE, model)
    assert sorted(p.name for p in model.iterdir()) == ["model.pt"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DatakitError, match="without torchrun"):
        _sweep(balance, PROBE, tmp_path / "lr")
    assert not (tmp_path / "lr" / "lr_find.csv").exists()


def test_sweep_settings_are_checked() -> None:
    from datakit.train.lrfind import Sweep

    for bad, words in [({"start_lr": 0}, "--lr-find-start"), ({"end_lr": 1e-8}, "--lr-find-end"),
                       ({"end_lr": 100}, "at most 10"), ({"steps": 3}, "--lr-find-steps"), ({"beta": 1.0}, "beta")]:
        with pytest.raises(DatakitError, match=words):
            Sweep(**bad).check()
    plan = Sweep(start_lr=1e-4, end_lr=1e-2, steps=21)
    assert plan.lrs()[10] == pytest.approx(1e-3) and plan.lrs()[-1] == pytest.approx(1e-2)
    assert plan.for_mode("finetune").beta == 0.98 and plan.for_mode("linear_probe").beta == 0.0


def test_long_sweeps_print_batches_lr_and_eta(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datakit.train import lrfind

    class Notes:
        def __init__(self) -> None:
            self.lines: list[str] = []
            self.phases: dict[str, list[int]] = {}

        def start(self, phase: str, total: int) -> None:
            self.phases[phase] = [total, 0]

        def advance(self, phase: str, n: int = 1) -> None:
            self.phases[phase][1] += n

        def note(self, message: str) -> None:
            self.lines.append(message)

    monkeypatch.setattr(lrfind, "PROGRESS_EVERY_S", 0.0)
    balance = make_project(tmp_path, embeddings=True, per=(4, 2, 2))
    notes = Notes()
    result = lrfind.find_folder(balance, tmp_path / "lr", parse_train(PROBE), plan=lrfind.Sweep(steps=20),
                                progress=notes)
    inside = [x for x in notes.lines if " batch " in x]
    assert inside and all(re.fullmatch(r"lr_find  batch \d+/20  lr [\d.e+-]+  smoothed loss [\d.]+  "
                                       r"[\d.]+ vectors/s  ETA \d+s", x) for x in inside), notes.lines
    assert notes.phases["lr_find"] == [20, result.report["steps"]]


# ------------------------------------------------------------------------------ the rules


def test_suggestion_rules_on_known_curves() -> None:
    from datakit.train.lrfind import lr_text, suggest

    lrs = np.logspace(-7, 1, 81)
    x = np.log10(lrs)
    # falls along a logistic centred on 1e-3 (steepest there), bottoms out near 1e-1, then climbs
    curve = 2.0 - 1.5 / (1 + np.exp(-(x + 3) * 2.5)) + np.where(x > -1, (x + 1) ** 2, 0.0)
    got = suggest(lrs, curve)
    assert got["method"] == "steepest" and got["steepest_lr"] == pytest.approx(1e-3, rel=0.13)
    assert got["min_loss_lr"] == pytest.approx(lrs[int(np.argmin(curve))]) and got["suggested_lr"] == got["steepest_lr"]
    assert got["min_loss_lr_div10"] == pytest.approx(got["min_loss_lr"] / 10)
    rising = np.linspace(1.0, 3.0, 81)  # never descends: least loss at the start, /10 clamped to the range
    got = suggest(lrs, rising)
    assert got["method"] == "min_loss/10" and got["suggested_lr"] == pytest.approx(1e-7) and "hardly fell" in got["why"]
    probe = suggest(lrs, np.where(x < 0.5, 1 - (x + 7) / 8, 5.0), quasi_newton=True)  # fixed L-BFGS steps: least loss just below 10^0.5
    assert probe["method"] == "min_loss_capped_at_1" and probe["suggested_lr"] == 1.0
    few = suggest(lrs[:5], curve[:5])
    assert few["suggested_lr"] is None and "--lr-find-start" in few["why"]
    assert [lr_text(v) for v in (3e-5, 0.0032, 1.0, 1.5e-4)] == ["3.0e-05", "0.0032", "1.0", "0.00015"]
    assert all(isinstance(yaml.safe_load(lr_text(v)), float) for v in (3e-5, 1.0, 1e-7, 0.25))
