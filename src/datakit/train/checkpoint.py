"""What a training run leaves behind: `OUT/model.pt` (weights and everything needed to load and
use them), `OUT/history.csv` (one row per epoch) and the dvclive log under `OUT/dvclive/`."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from datakit.fsutil import atomic_write, atomic_write_text
from datakit.train.data import OnlineAugment
from datakit.train.params import TrainParams

if TYPE_CHECKING:
    from datakit.train.loop import FitResult

FORMAT = "datakit.model/1"
MODEL_FILE = "model.pt"
HISTORY_FILE = "history.csv"
# The data of training, not its wall time: each epoch's seconds go to the run facts of the report
# (reports/train.run.json, `epoch_seconds`), so the same data and params give the same history.csv.
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_accuracy", "val_balanced_accuracy", "lr"]


def payload(result: FitResult, params: TrainParams, *, augment: OnlineAugment | None,
            embed_meta: dict[str, Any] | None, class_weights: dict[str, float] | None,
            input_rel: str | None) -> dict[str, Any]:
    """What model.pt holds: plain types and tensors only (loadable with weights_only=True)."""
    import torchvision

    return {
        "format": FORMAT,
        "mode": params.mode,
        "backbone": params.backbone,
        "pretrained": params.pretrained,
        "labels": list(result.labels),
        "preprocess": result.preprocess if params.mode == "finetune" else (embed_meta or {}).get("preprocess"),
        "side": result.side,
        "feature_dim": result.feature_dim,
        "embed_meta": embed_meta if params.mode == "linear_probe" else None,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()},
        "params": params.model_dump(),
        "augment": augment.settings() if augment is not None else None,
        "class_weights": class_weights,
        "best_epoch": result.best_epoch,
        "val": {k: result.best.get(k) for k in ("val_loss", "val_accuracy", "val_balanced_accuracy")},
        "input": input_rel,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
    }


def save_model(path: Path, obj: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()

    def _write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    atomic_write(Path(path), _write)


def write_history(path: Path, history: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in HISTORY_COLUMNS})
    atomic_write_text(Path(path), buf.getvalue(), durable=False)


def inside_dvc_repo() -> bool:
    if os.environ.get("DVC_ROOT"):  # set by `dvc repro` / `dvc exp run` for the stage's command
        return True
    here = Path.cwd().absolute()
    return any((folder / ".dvc").is_dir() for folder in (here, *here.parents))


def git_without_commits() -> bool:
    """The enclosing git repository has no commit yet (a project fresh from `datakit init`)."""
    import shutil
    import subprocess

    git = shutil.which("git")
    if git is None:
        return False
    inside = subprocess.run([git, "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True)  # noqa: S603
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        return False
    head = subprocess.run([git, "rev-parse", "--verify", "-q", "HEAD"], capture_output=True, text=True)  # noqa: S603
    return head.returncode != 0


def live_logger(out_dir: Path, params: TrainParams, augment: OnlineAugment | None) -> Any:
    """dvclive that only writes OUT/dvclive: no dvc.yaml, no DVC experiment, no report. Works
    outside a DVC repo and inside `dvc repro`. dvclive's own set-up runs `dvc init` in the
    enclosing git repository when it finds no DVC repo; outside a DVC repo that set-up is skipped.
    It is skipped too in a git repository with no commit yet, where dvclive 3 asks git for HEAD
    before checking there is one and fails (`datakit init` then `dvc repro` before any commit)."""
    from dvclive import Live

    class _Live(Live):  # type: ignore[misc]
        def _init_dvc(self) -> None:
            if inside_dvc_repo() and not git_without_commits():
                super()._init_dvc()

    live = _Live(dir=str(out_dir / "dvclive"), save_dvc_exp=False, dvcyaml=None, report=None, monitor_system=False)
    flat = {f"train.{k}": v for k, v in params.model_dump().items() if v is None or isinstance(v, (str, int, float, bool))}
    if augment is not None:
        flat["augment.source"] = augment.describe()
    live.log_params(flat)
    return live


__all__ = ["FORMAT", "HISTORY_COLUMNS", "HISTORY_FILE", "MODEL_FILE", "live_logger", "payload", "save_model",
           "write_history"]
