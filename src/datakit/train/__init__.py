"""The learning family: `datakit train` (fine-tune a registry backbone on images, or fit a linear
probe on embeddings), `datakit evaluate` and `datakit predict`.

Importing this package is cheap (no torch): `params` holds the typed `train:` / `evaluate:`
params; the other modules import torch when they are imported. Members import each other; from
outside the family they take only core modules, and what they need from another family (the
online augmentation) is handed in by the caller (`data.OnlineAugment`).

| module | what |
|---|---|
| `params.py` | `TrainParams`, `EvaluateParams`, `parse_train`, `parse_evaluate`, `train_section` (mode-switch defaults) |
| `data.py` | which rows train/validate, the uint8 pixel cache, image and vector datasets, loaders, class weights |
| `devices.py` | the device, DDP under torchrun, batches moved onto the device |
| `nets.py` | the networks (backbone + head, linear probe), optimiser groups, metrics, inference |
| `loop.py` | `fit` (one training run, best state kept), `run` (the stage) and `train_folder` (the command's run) |
| `lrfind.py` | the learning-rate range test (`datakit train --lr-find`): `find_folder`, lr_find.csv/json, a suggested lr |
| `checkpoint.py` | model.pt, history.csv, dvclive |
| `evaluate.py` | `run` (the evaluate stage: test metrics, mistakes, learning curve, k-fold CV), `metrics` |
| `predict.py` | `load_model(path)`, `predict_folder(model_dir, folder)` |
"""

from __future__ import annotations

from typing import Any

from datakit.train.params import EvaluateParams, TrainParams, parse_evaluate, parse_train, train_section

MODEL_FILE = "model.pt"
HISTORY_FILE = "history.csv"


def __getattr__(name: str) -> Any:  # lazy: `from datakit.train import run` imports torch only then
    if name in ("run", "fit", "train_folder"):
        from datakit.train import loop

        return getattr(loop, name)
    if name == "lr_find":
        from datakit.train import lrfind

        return lrfind.find_folder
    if name in ("load_model", "predict_folder"):
        from datakit.train import predict

        return getattr(predict, name)
    raise AttributeError(f"module 'datakit.train' has no attribute {name!r}")


__all__ = ["EvaluateParams", "HISTORY_FILE", "MODEL_FILE", "TrainParams", "parse_evaluate", "parse_train",
           "train_section"]
