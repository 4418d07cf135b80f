"""The networks: a registry backbone with a new head (finetune) or the linear probe on
embeddings, their optimiser groups, and the metrics every epoch and evaluation reads."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from datakit.models import build, head_parameters
from datakit.train.devices import Inputs, autocast
from datakit.train.params import TrainParams


class ProbeHead(nn.Module):
    """The linear probe: standardise the embedding (train mean / std, buffers), then Linear."""

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.linear = nn.Linear(dim, n_classes)
        # Zero start (the usual for a probe: the loss is convex, so this changes where a short
        # run ends, not the optimum): no random projection of noise dimensions to unlearn.
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((x - self.mean) / self.scale)


def make_model(mode: str, backbone: str, *, pretrained: bool, n_classes: int, dim: int | None, seed: int) -> nn.Module:
    if mode == "finetune":
        return build(backbone, pretrained=pretrained, num_classes=n_classes, seed=seed)
    torch.manual_seed(seed)
    return ProbeHead(int(dim or 0), n_classes)


def param_groups(model: nn.Module, params: TrainParams, lr: float) -> list[dict[str, Any]]:
    if params.mode != "finetune":
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
    head = head_parameters(model, params.backbone)
    head_ids = {id(p) for p in head}
    rest = [p for p in model.parameters() if id(p) not in head_ids]
    groups: list[dict[str, Any]] = [{"params": head, "lr": lr}]
    if params.backbone_lr_scale > 0:
        groups.append({"params": rest, "lr": lr * params.backbone_lr_scale})
    else:
        for p in rest:
            p.requires_grad_(False)
    return groups


# --- metrics ---------------------------------------------------------------------------------


def confusion(y: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    return cm


def scores(cm: np.ndarray) -> tuple[float | None, float | None]:
    """(accuracy, balanced accuracy) of a confusion matrix (rows: actual); balanced accuracy is
    the mean recall over the classes present, as sklearn's balanced_accuracy_score."""
    total = cm.sum()
    if total == 0:
        return None, None
    support = cm.sum(axis=1)
    present = support > 0
    recall = np.diag(cm)[present] / support[present]
    return float(np.trace(cm) / total), float(recall.mean())


@torch.no_grad()
def infer(model: nn.Module, loader: DataLoader, inputs: Inputs, amp: bool) -> tuple[np.ndarray, np.ndarray]:
    """(float32 logits, dataset row of each) over a loader; unreadable images are absent."""
    model.eval()
    outs: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    for batch in loader:
        if batch is None:
            continue
        x, _y, r = batch
        with autocast(inputs.device, amp):
            logits = model(inputs(x))
        outs.append(logits.float().cpu().numpy())
        rows.append(r.numpy())
    if not outs:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return np.concatenate(outs), np.concatenate(rows)


__all__ = ["ProbeHead", "confusion", "infer", "make_model", "param_groups", "scores"]
