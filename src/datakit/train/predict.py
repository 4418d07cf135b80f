"""Load a trained model (`OUT/model.pt`) and predict images: a manifest's rows or a folder.

model.pt is a plain dict (tensors, strings, numbers, lists) read with `weights_only=True`, so
loading a model never runs pickled code. A fine-tuned model is rebuilt from its registry name
with random weights, then its state is loaded (no download). A linear-probe model is only a head
over embeddings; to predict images its feature extractor is rebuilt from the embed metadata it
carries (backbone, pretrained, seed, preprocess), exactly as `datakit embed` built it, so a
pretrained probe needs the same ImageNet weights file in the torch hub cache.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from datakit.errors import DatakitError
from datakit.models import Preprocess, build, pick_device
from datakit.train.checkpoint import FORMAT, MODEL_FILE
from datakit.train.data import ImageRows, PixelCache, make_loader, read_image
from datakit.train.devices import Inputs
from datakit.train.nets import infer, make_model

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif"})


@dataclass
class LoadedModel:
    payload: dict[str, Any]
    model: nn.Module
    path: Path
    _features: nn.Module | None = field(default=None, repr=False)

    @property
    def labels(self) -> list[str]:
        return list(self.payload["labels"])

    @property
    def mode(self) -> str:
        return str(self.payload["mode"])

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.payload.get("params") or {})

    def features(self) -> nn.Module:
        """The embedding backbone of a linear-probe model (built on first use)."""
        if self._features is None:
            meta = self.payload.get("embed_meta") or {}
            if not meta.get("backbone") or not meta.get("preprocess"):
                raise DatakitError(f"{self.path}: this linear-probe model has no embed metadata (backbone, "
                                   "preprocess), so it can only score embeddings, not images")
            self._features = build(str(meta["backbone"]), pretrained=bool(meta.get("pretrained", True)),
                                   num_classes=None, seed=int(meta.get("seed") or 0)).eval()
        return self._features


def load_model(path: Path) -> LoadedModel:
    """A model folder (holding model.pt) or the file itself."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.exists():
        raise DatakitError(f"no model at {path}: run `datakit train INPUT --out DIR` first")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, foreign or tampered file
        raise DatakitError(f"{path} is not a datakit model file: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise DatakitError(f"{path} is not a datakit model file (format {obj.get('format') if isinstance(obj, dict) else None!r}, "
                           f"expected {FORMAT!r})")
    model = make_model(obj["mode"], obj["backbone"], pretrained=False, n_classes=len(obj["labels"]),
                       dim=obj.get("feature_dim"), seed=0)
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as exc:
        raise DatakitError(f"{path}: the saved weights do not fit {obj['backbone']} ({exc})") from None
    return LoadedModel(obj, model.eval(), path)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def vector_probs(lm: LoadedModel, X: np.ndarray) -> np.ndarray:
    """Class probabilities of embeddings (linear-probe models)."""
    if lm.mode != "linear_probe":
        raise DatakitError("only a linear-probe model scores embeddings")
    with torch.no_grad():
        logits = lm.model(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))).numpy()
    return _softmax(logits)


def image_probs(lm: LoadedModel, root: Path, ids: Sequence[str], paths: Sequence[str], *, device: str = "auto",
                batch_size: int = 64, num_workers: int = 0, cache: PixelCache | None = None,
                amp: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (n, classes), readable mask); unreadable rows get NaN."""
    dev = pick_device(device)
    n = len(ids)
    if lm.mode == "finetune":
        pre = Preprocess.from_dict(lm.payload["preprocess"])
        side = int(lm.payload.get("side") or pre.resize)
        net: nn.Module = lm.model
        if cache is not None and (cache.side, cache.interpolation) != (side, pre.interpolation):
            cache = None
        ds = ImageRows(root, ids, paths, [0] * n, side=side, crop=pre.crop, interpolation=pre.interpolation,
                       cache=cache)
    else:
        pre = Preprocess.from_dict((lm.payload.get("embed_meta") or {}).get("preprocess") or {})
        net = nn.Sequential(lm.features(), lm.model)
        ds = ImageRows(root, ids, paths, [0] * n, side=pre.resize, crop=pre.crop, interpolation=pre.interpolation,
                       geometry="recipe", preprocess=pre.to_dict())
    net = net.to(dev).eval()
    inputs = Inputs(dev, images=True, mean=pre.mean, std=pre.std, channels_last=True)
    if inputs.channels_last:
        net = net.to(memory_format=torch.channels_last)
    loader = make_loader(ds, batch_size, shuffle=False, sampler=None, num_workers=num_workers, cuda=dev.type == "cuda",
                     seed=0)
    logits, rows = infer(net, loader, inputs, amp)
    probs = np.full((n, len(lm.labels)), np.nan, dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    if len(rows):
        probs[rows] = _softmax(logits)
        ok[rows] = True
    net.to("cpu")
    return probs, ok


def top_k(probs: np.ndarray, labels: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
    out = []
    for p in probs:
        if np.isnan(p).any():
            out.append([])
            continue
        order = np.argsort(-p, kind="stable")[:k]
        out.append([(str(labels[j]), round(float(p[j]), 6)) for j in order])
    return out


def list_images(folder: Path) -> list[str]:
    """Image files under `folder` (by extension, recursive, sorted), relative to it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatakitError(f"{folder} is not a folder of images")
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not any(s.startswith(".") for s in p.relative_to(folder).parts))


def predict_folder(model_dir: Path, folder: Path, *, k: int = 3, device: str = "auto", batch_size: int = 64,
                   num_workers: int = 0) -> pd.DataFrame:
    """One row per image file under `folder`: path (relative to it), label, confidence, top_k
    (JSON [[label, p], ...]) and error (why an unreadable file has no label; else empty)."""
    lm = model_dir if isinstance(model_dir, LoadedModel) else load_model(model_dir)
    folder = Path(folder)
    rels = list_images(folder)
    probs, ok = image_probs(lm, folder, rels, rels, device=device, batch_size=batch_size, num_workers=num_workers)
    labels = lm.labels
    tops = top_k(probs, labels, max(1, k))
    best = [top[0] if top else (None, float("nan")) for top in tops]
    errors: list[str | None] = []
    for rel, good in zip(rels, ok, strict=True):
        errors.append(None if good else (read_image(folder, rel)[1] or "unreadable"))
    return pd.DataFrame({
        "path": rels,
        "label": [b[0] for b in best],
        "confidence": [b[1] for b in best],
        "top_k": [json.dumps(t) if t else None for t in tops],
        "error": errors,
    })


__all__ = ["LoadedModel", "image_probs", "list_images", "load_model", "predict_folder", "top_k", "vector_probs"]
