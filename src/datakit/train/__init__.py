"""`datakit train`: fine-tune a registry backbone on images, or fit a linear probe on embeddings.

Importing this package is cheap (no torch): `params` holds the typed `train:` / `evaluate:`
params; `data` (rows, pixel cache, datasets, embeddings), `loop` (fit, early stopping, DDP,
model.pt) and `predict` (load a model, predict a folder) import torch when they are imported.

| module | what |
|---|---|
| `params.py` | `TrainParams`, `EvaluateParams`, `parse_train`, `parse_evaluate` |
| `data.py` | which rows train/validate, the uint8 pixel cache, image and vector datasets, class weights |
| `loop.py` | `fit` (one training run, best state kept) and `run` (the stage: files, dvclive, DDP) |
| `predict.py` | `load_model(path)`, `predict_folder(model_dir, folder)` |
"""

from __future__ import annotations

from typing import Any

from datakit.train.params import EvaluateParams, TrainParams, parse_evaluate, parse_train

MODEL_FILE = "model.pt"
HISTORY_FILE = "history.csv"


def __getattr__(name: str) -> Any:  # lazy: `from datakit.train import run` imports torch only then
    if name in ("run", "fit"):
        from datakit.train import loop

        return getattr(loop, name)
    if name in ("load_model", "predict_folder"):
        from datakit.train import predict

        return getattr(predict, name)
    raise AttributeError(f"module 'datakit.train' has no attribute {name!r}")


__all__ = ["EvaluateParams", "HISTORY_FILE", "MODEL_FILE", "TrainParams", "parse_evaluate", "parse_train"]
