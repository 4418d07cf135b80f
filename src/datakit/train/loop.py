"""One training run (`fit`) and the train stage around it (`run`).

`fit` trains a model on the rows it is given and returns it with the best validation state
loaded; `evaluate` calls it again for learning-curve and fold points. `run` is the stage: it
picks the rows, reads class weights and embeddings, sets up the device (and DDP under torchrun),
logs to dvclive and writes `OUT/model.pt` and `OUT/history.csv` (rank 0 only).

Modes. `finetune`: AdamW, the new head at `lr` and the backbone at `lr * backbone_lr_scale`
(0 freezes it), cosine schedule over `epochs`, mini-batches of uint8 crops. `linear_probe`: a
standardising linear head on the embedding vectors, fitted full-batch with L-BFGS (the method of
scikit-learn's LogisticRegression; `weight_decay` is the L2 coefficient, by default 1 / n_train,
which is that estimator's objective at C = 1; one epoch is `PROBE_ITERS_PER_EPOCH` iterations),
so it converges in seconds whatever the row count. With `patience: 0` (the probe's default) the
probe is fitted to convergence and the last epoch is kept, as scikit-learn does: the L2 term, not
the val loss, regularises it (picking the epoch of least val loss stopped a 43-class grocery probe
after 10 iterations, 2.7 points below scikit-learn on the test set).

Devices. On CUDA: bf16 autocast (`amp`), channels_last, pinned host memory and non-blocking
copies; images travel as uint8 and are normalised on the device. On the CPU: float32.

DDP. Under `torchrun` (WORLD_SIZE > 1) the process group is `nccl` on CUDA and `gloo` on the
CPU; the train rows are sharded by a DistributedSampler (seeded, reshuffled per epoch), each
rank validates its own slice of the val rows (no padding) and the loss sums and confusion
matrices are all-reduced, so every rank sees the same exact metrics and takes the same
early-stopping decision. Only rank 0 builds the pixel cache and writes files (model.pt, history,
dvclive; the CLI writes the report from rank 0 only); `train_rows_per_rank` in the report is what
rank 0's sampler gave it in one epoch. Ranks may run different numbers of steps (a batch whose
images are all unreadable is skipped) without deadlocking (DDP's `Join`); the collectives'
timeout is torch's unless DATAKIT_DIST_TIMEOUT_S says otherwise (rank 0 building a large pixel
cache keeps the others at a barrier).

Seeding. `seed` fixes python, numpy and torch, the model's initial head, the DataLoader's
shuffling generator and worker seeds; augmentation draws from `sha256(seed, epoch, image_id)`,
so a CPU run is repeatable whatever `num_workers`. CUDA runs are seeded but not bit-identical
(cuDNN picks kernels by speed).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

from datakit.augment import AugmentParams, build_pipeline
from datakit.errors import DatakitError
from datakit.fsutil import atomic_write, atomic_write_text
from datakit.manifest import relpath
from datakit.models import build, head_parameters, pick_device, preprocess_for
from datakit.train.data import (
    Embeddings,
    ImageRows,
    PixelCache,
    VectorRows,
    collate,
    has_image,
    label_list,
    load_embeddings,
    read_class_weights,
    seed_everything,
    seed_worker,
    split_rows,
    targets,
)
from datakit.train.params import TrainParams

FORMAT = "datakit.model/1"
MODEL_FILE = "model.pt"
HISTORY_FILE = "history.csv"
PROBE_ITERS_PER_EPOCH = 10  # L-BFGS iterations that make one probe "epoch"
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_accuracy", "val_balanced_accuracy", "lr", "seconds"]

Log = Callable[[str], None]


# --------------------------------------------------------------------------- devices, DDP


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_from_env() -> Dist:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them (a plain run: rank 0 of 1)."""
    try:
        return Dist(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                    int(os.environ.get("LOCAL_RANK", "0")))
    except ValueError:
        raise DatakitError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)") from None


def setup_device(requested: str, d: Dist) -> torch.device:
    """The device of this process; under DDP also joins the process group (nccl on CUDA,
    gloo on the CPU)."""
    if not d.enabled:
        return pick_device(requested)
    import torch.distributed as tdist

    cuda = requested != "cpu" and torch.cuda.is_available()
    if requested.startswith("cuda") and not torch.cuda.is_available():
        pick_device(requested)  # raises the ModelError that says so
    if cuda:
        torch.cuda.set_device(d.local_rank)
        device = torch.device("cuda", d.local_rank)
    else:
        device = torch.device("cpu")
    if not tdist.is_initialized():
        # DATAKIT_DIST_TIMEOUT_S: how long a collective waits for the slowest rank (torch's default,
        # 10-30 min, is too short when rank 0 first builds the pixel cache of millions of images
        # while the others wait at the barrier)
        timeout = os.environ.get("DATAKIT_DIST_TIMEOUT_S")
        extra: dict[str, Any] = {}
        if timeout:
            try:
                extra["timeout"] = timedelta(seconds=float(timeout))
            except ValueError:
                raise DatakitError(f"DATAKIT_DIST_TIMEOUT_S must be a number of seconds (got {timeout!r})") from None
        tdist.init_process_group(backend="nccl" if cuda else "gloo", **extra)
    return device


def _uneven_inputs(net: nn.Module) -> contextlib.AbstractContextManager[Any]:
    """Under DDP, lets ranks run different numbers of train steps (a rank skips a batch whose
    images are all unreadable): the ranks that finish first shadow the others' gradient
    all-reduces instead of leaving them waiting forever."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(net, DistributedDataParallel):
        from torch.distributed.algorithms.join import Join

        return Join([net])
    return contextlib.nullcontext()


def _barrier(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as tdist

        tdist.barrier()


def _all_sum(values: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.enabled:
        import torch.distributed as tdist

        tdist.all_reduce(values, op=tdist.ReduceOp.SUM)
    return values


class Inputs:
    """Moves a batch to the device: images (uint8 NCHW) normalised there, vectors as they are."""

    def __init__(self, device: torch.device, *, images: bool, mean: Any = None, std: Any = None,
                 channels_last: bool = True) -> None:
        self.device, self.images = device, images
        self.cuda = device.type == "cuda"
        self.channels_last = channels_last and self.cuda and images
        if images:
            self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255.0
            self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=self.cuda)
        if not self.images:
            return x.float()
        x = (x.float() - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ------------------------------------------------------------------------------- models


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


def _param_groups(model: nn.Module, params: TrainParams, lr: float) -> list[dict[str, Any]]:
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


# ------------------------------------------------------------------------------- metrics


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


# ---------------------------------------------------------------------------------- fit


@dataclass
class FitResult:
    model: nn.Module  # unwrapped, on the CPU, best state loaded, eval mode
    labels: list[str]
    history: list[dict[str, Any]]
    best_epoch: int
    best: dict[str, Any]
    epochs_run: int
    stopped_early: bool
    seconds: float
    train_seconds: float
    samples_per_s: float | None
    device: str
    n_train: int
    n_val: int
    n_train_per_class: dict[str, int]
    skipped: dict[str, int]
    preprocess: dict[str, Any] | None
    side: int | None
    feature_dim: int | None
    cache: dict[str, int] = field(default_factory=dict)
    rank_samples: int | None = None  # finetune: rows this process saw in one epoch (under DDP: its shard)


@dataclass
class _Prepared:
    train: Dataset
    val: Dataset | None
    y_train: np.ndarray
    skipped: dict[str, int]
    preprocess: dict[str, Any] | None
    side: int | None
    dim: int | None
    cache: dict[str, int]


def _prepare(train: pd.DataFrame, val: pd.DataFrame, labels: list[str], params: TrainParams, *, root: Path,
             augment: AugmentParams | None, embeddings: Embeddings | None, cache: PixelCache | None,
             d: Dist, log: Log | None) -> _Prepared:
    skipped: dict[str, int] = {}
    if params.mode == "linear_probe":
        if embeddings is None:
            raise DatakitError("train.mode linear_probe needs an embeddings table")
        X_tr, found_tr = embeddings.take(train["image_id"].astype(str).tolist())
        X_va, found_va = embeddings.take(val["image_id"].astype(str).tolist())
        skipped["no_vector"] = int((~found_tr).sum() + (~found_va).sum())
        y_tr = targets(train, labels)[found_tr]
        y_va = targets(val, labels)[found_va]
        return _Prepared(VectorRows(X_tr, y_tr), VectorRows(X_va, y_va) if len(y_va) else None, y_tr, skipped,
                         None, None, embeddings.dim, {})

    img_tr, img_va = has_image(train), has_image(val)
    skipped["no_image"] = int((~img_tr).sum() + (~img_va).sum())
    train, val = train[img_tr], val[img_va]
    pre = preprocess_for(params.backbone, params.pretrained, params.image_size)
    stats: dict[str, int] = {}
    if cache is not None:
        if d.main:
            ids = pd.concat([train["image_id"], val["image_id"]]).astype(str).tolist()
            paths = pd.concat([train["path"], val["path"]]).astype(str).tolist()
            if log:
                log(f"pixel cache: {cache.dir}")
            stats = cache.ensure(root, ids, paths, num_workers=params.num_workers)
        _barrier(d)
        cache.load_index()
        bad_tr = train["image_id"].astype(str).isin(cache.failed.keys())
        bad_va = val["image_id"].astype(str).isin(cache.failed.keys())
        skipped["unreadable"] = int(bad_tr.sum() + bad_va.sum())
        train, val = train[~bad_tr], val[~bad_va]
    make_augment = None
    if params.online_augment and augment is not None and augment.spec():
        make_augment = functools.partial(build_pipeline, augment, size=(pre.crop, pre.crop))
    y_tr, y_va = targets(train, labels), targets(val, labels)
    common = {"side": pre.resize, "crop": pre.crop, "interpolation": pre.interpolation, "cache": cache, "seed": params.seed}
    ds_tr = ImageRows(root, train["image_id"].astype(str).tolist(), train["path"].astype(str).tolist(), y_tr,
                      augment=make_augment, **common)
    ds_va = ImageRows(root, val["image_id"].astype(str).tolist(), val["path"].astype(str).tolist(), y_va, **common)
    return _Prepared(ds_tr, ds_va if len(y_va) else None, y_tr, skipped, pre.to_dict(), pre.resize, None, stats)


def _loader(ds: Dataset, batch_size: int, *, shuffle: bool, sampler: Any, num_workers: int, cuda: bool,
            seed: int, drop_last: bool = False) -> DataLoader:
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=num_workers, pin_memory=cuda, drop_last=drop_last, collate_fn=collate,
                      generator=g, worker_init_fn=seed_worker if num_workers else None, persistent_workers=False)


def fit(train: pd.DataFrame, val: pd.DataFrame, labels: list[str], params: TrainParams, *, root: Path,
        device: torch.device | None = None, augment: AugmentParams | None = None,
        embeddings: Embeddings | None = None, class_weights: dict[str, float] | None = None,
        cache: PixelCache | None = None, live: Any = None, dist: Dist | None = None,
        fixed_epochs: int | None = None, log: Log | None = None) -> FitResult:
    """Train on `train`, early-stop on `val` (kept originals), return the best state.

    `fixed_epochs` trains exactly that many epochs without looking at `val` (fold refits)."""
    t0 = time.monotonic()
    d = dist or Dist()
    device = device or pick_device(params.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    seed_everything(params.seed)
    if fixed_epochs is not None:
        val = val.iloc[0:0]
    prep = _prepare(train, val, labels, params, root=root, augment=augment, embeddings=embeddings, cache=cache,
                    d=d, log=log)
    n_train = len(prep.y_train)
    if n_train == 0:
        raise DatakitError("no train rows left to learn from (every row lacks an image or a vector)")
    images = params.mode == "finetune"
    model = make_model(params.mode, params.backbone, pretrained=params.pretrained, n_classes=len(labels),
                       dim=prep.dim, seed=params.seed)
    if isinstance(model, ProbeHead):
        X = prep.train.X  # type: ignore[attr-defined]
        model.mean.copy_(X.mean(dim=0))
        model.scale.copy_(X.std(dim=0, unbiased=False).clamp_min(1e-6))
    model = model.to(device)
    if cuda and params.channels_last and images:
        model = model.to(memory_format=torch.channels_last)
    lr = params.lr
    epochs = fixed_epochs or params.epochs
    weight = None
    if class_weights:
        weight = torch.tensor([class_weights[c] for c in labels], dtype=torch.float32, device=device)
    pre = prep.preprocess or {}
    inputs = Inputs(device, images=images, mean=pre.get("mean"), std=pre.get("std"), channels_last=params.channels_last)
    net: nn.Module = model
    scheduler: Any = None
    sampler = None
    train_loader: DataLoader | None = None
    if images:
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(_param_groups(model, params, lr), lr=lr,
                                                             weight_decay=params.weight_decay)
        if params.scheduler == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        if d.enabled:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
            sampler = DistributedSampler(prep.train, num_replicas=d.world, rank=d.rank, shuffle=True, seed=params.seed)
        per_rank = math.ceil(n_train / d.world)
        drop_last = per_rank > 1 and per_rank % params.batch_size == 1  # a batch of one breaks BatchNorm
        train_loader = _loader(prep.train, params.batch_size, shuffle=True, sampler=sampler,
                               num_workers=params.num_workers, cuda=cuda, seed=params.seed, drop_last=drop_last)
    else:
        # The probe: full-batch L-BFGS on the (standardised) vectors, as sklearn's
        # LogisticRegression, with weight_decay as the L2 coefficient on the weights. Every rank
        # fits the same probe on all rows (deterministic; nothing to distribute); rank 0 writes.
        X_all = prep.train.X.to(device)  # type: ignore[attr-defined]
        y_all = prep.train.y.to(device)  # type: ignore[attr-defined]
        optimizer = torch.optim.LBFGS(model.parameters(), lr=lr, max_iter=PROBE_ITERS_PER_EPOCH, history_size=20,
                                      line_search_fn="strong_wolfe")
        head_weight = model.linear.weight  # type: ignore[union-attr]
        l2 = params.weight_decay if params.weight_decay is not None else 1.0 / n_train

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(X_all), y_all, weight=weight, label_smoothing=params.label_smoothing)
            loss = loss + 0.5 * l2 * (head_weight**2).sum()
            loss.backward()
            return loss
    val_loader = None
    if prep.val is not None:
        part = Subset(prep.val, range(d.rank, len(prep.val), d.world)) if d.enabled else prep.val
        val_loader = _loader(part, max(params.batch_size, 64 if images else 1024), shuffle=False, sampler=None,
                             num_workers=params.num_workers if images else 0, cuda=cuda, seed=params.seed)
    n = len(labels)
    history: list[dict[str, Any]] = []
    best_value: float | None = None
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch, since, stopped = 0, 0, False
    lower_better = params.monitor == "val_loss"
    train_seconds, samples = 0.0, 0
    rank_samples: int | None = None  # rows this process trained on in epoch 1 (its sampler's share)

    for epoch in range(1, epochs + 1):
        te = time.monotonic()
        net.train()
        loss_sum = torch.zeros(2, dtype=torch.float64, device=device)
        if train_loader is not None:
            if sampler is not None:
                sampler.set_epoch(epoch)
            if isinstance(prep.train, ImageRows):
                prep.train.epoch = epoch
            with _uneven_inputs(net):
                for batch in train_loader:
                    if batch is None:  # every image of the batch unreadable (no pixel cache)
                        continue
                    x, y, _ = batch
                    y = y.to(device, non_blocking=cuda)
                    with autocast(device, params.amp):
                        logits = net(inputs(x))
                    loss = F.cross_entropy(logits.float(), y, weight=weight, label_smoothing=params.label_smoothing)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    loss_sum[0] += loss.detach().double() * len(y)
                    loss_sum[1] += len(y)
            if rank_samples is None:
                rank_samples = int(loss_sum[1].item())
            _all_sum(loss_sum, d)
        else:
            optimizer.step(closure)  # type: ignore[arg-type]
            with torch.no_grad():
                loss_sum[0] = F.cross_entropy(model(X_all), y_all, weight=weight).double() * len(y_all)
            loss_sum[1] = len(y_all)
        train_seconds += time.monotonic() - te
        samples += int(loss_sum[1].item())
        lr_now = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
        row: dict[str, Any] = {"epoch": epoch, "train_loss": float(loss_sum[0] / loss_sum[1]) if loss_sum[1] else None,
                               "val_loss": None, "val_accuracy": None, "val_balanced_accuracy": None, "lr": lr_now}
        if row["train_loss"] is not None and not math.isfinite(row["train_loss"]):
            raise DatakitError(f"training diverged at epoch {epoch}: the train loss is {row['train_loss']}; "
                               f"lower train.lr (now {params.lr})")
        if val_loader is not None:
            row.update(_validate(model, val_loader, inputs, params, weight, n, d))
        row["seconds"] = round(time.monotonic() - te, 3)
        history.append(row)
        if live is not None:
            for key in ("train_loss", "val_loss", "val_accuracy", "val_balanced_accuracy"):
                if row[key] is not None:
                    live.log_metric(key, row[key])
            live.next_step()
        if log:
            log("epoch {epoch:>3}  train_loss {tl}  val_loss {vl}  val_acc {va}  val_bal_acc {vb}  ({s:.1f}s)".format(
                epoch=epoch, tl=_fmt(row["train_loss"]), vl=_fmt(row["val_loss"]), va=_fmt(row["val_accuracy"]),
                vb=_fmt(row["val_balanced_accuracy"]), s=row["seconds"]))
        value = row.get(params.monitor)
        if value is None or (not images and not params.patience):
            # nothing to validate on, or a probe fitted to convergence: the last epoch is kept
            best_epoch, best_state = epoch, None
            continue
        improved = best_value is None or (
            value < best_value - params.min_delta if lower_better else value > best_value + params.min_delta)
        if improved:
            best_value, best_epoch, since = value, epoch, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            since += 1
            if params.patience and since >= params.patience and fixed_epochs is None:
                stopped = True
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model = model.to("cpu").to(memory_format=torch.contiguous_format).eval()
    best = dict(history[best_epoch - 1]) if history else {}
    counts = pd.Series(prep.y_train).map(dict(enumerate(labels))).value_counts()
    return FitResult(
        model=model, labels=list(labels), history=history, best_epoch=best_epoch, best=best,
        epochs_run=len(history), stopped_early=stopped, seconds=round(time.monotonic() - t0, 3),
        train_seconds=round(train_seconds, 3),
        samples_per_s=round(samples / train_seconds, 1) if train_seconds > 0 else None, device=str(device),
        n_train=n_train, n_val=len(prep.val) if prep.val is not None else 0,
        n_train_per_class={c: int(counts.get(c, 0)) for c in labels}, skipped=prep.skipped,
        preprocess=prep.preprocess, side=prep.side, feature_dim=prep.dim, cache=prep.cache,
        rank_samples=rank_samples,
    )


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _validate(model: nn.Module, loader: DataLoader, inputs: Inputs, params: TrainParams,
              weight: torch.Tensor | None, n: int, d: Dist) -> dict[str, Any]:
    model.eval()
    device = inputs.device
    stats = torch.zeros(2 + n * n, dtype=torch.float64, device=device)  # loss sum, weight sum, confusion
    with torch.no_grad():
        for batch in loader:
            if batch is None:
                continue
            x, y, _ = batch
            y = y.to(device, non_blocking=inputs.cuda)
            with autocast(device, params.amp):
                logits = model(inputs(x))
            logits = logits.float()
            stats[0] += F.cross_entropy(logits, y, weight=weight, reduction="sum",
                                        label_smoothing=params.label_smoothing).double()
            stats[1] += (weight[y].sum() if weight is not None else torch.tensor(float(len(y)), device=device)).double()
            idx = y * n + logits.argmax(dim=1)
            stats[2:] += torch.bincount(idx, minlength=n * n).double()
    _all_sum(stats, d)
    cm = stats[2:].round().long().cpu().numpy().reshape(n, n)
    acc, bal = scores(cm)
    return {"val_loss": float(stats[0] / stats[1]) if stats[1] > 0 else None, "val_accuracy": acc,
            "val_balanced_accuracy": bal}


# --------------------------------------------------------------------------------- stage


def cache_folder(params: TrainParams, root: Path) -> Path:
    return Path(params.cache_dir) if params.cache_dir else Path(root) / ".datakit" / "cache" / "train"


def embeddings_path(params: TrainParams, input_dir: Path) -> Path:
    return Path(params.embeddings) if params.embeddings else Path(input_dir) / "embeddings.parquet"


def payload(result: FitResult, params: TrainParams, *, augment: AugmentParams | None,
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
        "augment": augment.model_dump() if augment is not None else None,
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


def _inside_dvc_repo() -> bool:
    if os.environ.get("DVC_ROOT"):  # set by `dvc repro` / `dvc exp run` for the stage's command
        return True
    here = Path.cwd().absolute()
    return any((folder / ".dvc").is_dir() for folder in (here, *here.parents))


def _live(out_dir: Path, params: TrainParams, augment: AugmentParams | None) -> Any:
    """dvclive that only writes OUT/dvclive: no dvc.yaml, no DVC experiment, no report. Works
    outside a DVC repo and inside `dvc repro`. dvclive's own set-up runs `dvc init` in the
    enclosing git repository when it finds no DVC repo; outside a DVC repo that set-up is skipped."""
    from dvclive import Live

    class _Live(Live):  # type: ignore[misc]
        def _init_dvc(self) -> None:
            if _inside_dvc_repo():
                super()._init_dvc()

    live = _Live(dir=str(out_dir / "dvclive"), save_dvc_exp=False, dvcyaml=None, report=None, monitor_system=False)
    flat = {f"train.{k}": v for k, v in params.model_dump().items() if v is None or isinstance(v, (str, int, float, bool))}
    if augment is not None:
        flat["augment.source"] = "transforms" if augment.transforms is not None else f"preset:{augment.preset}"
    live.log_params(flat)
    return live


def run(df: pd.DataFrame, params: TrainParams, *, root: Path, input_dir: Path, out_dir: Path,
        augment: AugmentParams | None = None, log: Log | None = None) -> dict[str, Any]:
    """The train stage: fit on the kept train rows, early-stop on val, write OUT/model.pt,
    OUT/history.csv and OUT/dvclive/ (rank 0); returns the report (reports/train.json)."""
    t0 = time.monotonic()
    d = dist_from_env()
    out_dir = Path(out_dir)
    device = setup_device(params.device, d)
    try:
        train = split_rows(df, "train", originals_only=False)
        val = split_rows(df, "val", originals_only=True)
        usable = train[has_image(train)] if params.mode == "finetune" else train
        labels = label_list(usable, ("val", val))
        weights = read_class_weights(params.class_weights, input_dir, labels)
        embeddings = load_embeddings(embeddings_path(params, input_dir)) if params.mode == "linear_probe" else None
        cache = PixelCache(cache_folder(params, root), *_cache_key(params)) if params.mode == "finetune" and params.cache else None
        live = _live(out_dir, params, augment) if d.main and params.dvclive else None
        result = fit(train, val, labels, params, root=root, device=device, augment=augment, embeddings=embeddings,
                     class_weights=weights, cache=cache, live=live, dist=d, log=log if d.main else None)
        if d.main:
            try:
                input_rel: str | None = relpath(root, Path(input_dir))
            except ValueError:
                input_rel = None
            save_model(out_dir / MODEL_FILE, payload(result, params, augment=augment,
                                                     embed_meta=embeddings.meta if embeddings else None,
                                                     class_weights=weights, input_rel=input_rel))
            write_history(out_dir / HISTORY_FILE, result.history)
            if live is not None:
                live.summary.update({"best_epoch": result.best_epoch, **{
                    f"best_{k}": result.best.get(k) for k in ("val_loss", "val_accuracy", "val_balanced_accuracy")
                    if result.best.get(k) is not None}})
                live.end()
        _barrier(d)
    finally:
        if d.enabled:
            import torch.distributed as tdist

            if tdist.is_initialized():
                tdist.destroy_process_group()
    per_s = result.samples_per_s
    return {
        "mode": params.mode,
        "backbone": params.backbone,
        "pretrained": params.pretrained,
        "device": result.device,
        "world_size": d.world,
        "train_rows_per_rank": result.rank_samples,
        "labels": result.labels,
        "n_train": result.n_train,
        "n_train_per_class": result.n_train_per_class,
        "n_val": result.n_val,
        "skipped": result.skipped,
        "class_weights": weights,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "monitor": params.monitor,
        "train_loss": result.best.get("train_loss"),
        "val_loss": result.best.get("val_loss"),
        "val_accuracy": result.best.get("val_accuracy"),
        "val_balanced_accuracy": result.best.get("val_balanced_accuracy"),
        "seconds": round(time.monotonic() - t0, 3),
        "train_seconds": result.train_seconds,
        ("images_per_s" if params.mode == "finetune" else "vectors_per_s"): per_s,
        "cache": result.cache,
        "params": params.model_dump(),
        "torch": str(torch.__version__),
        "model": str(out_dir / MODEL_FILE),
    }


def _cache_key(params: TrainParams) -> tuple[int, str]:
    pre = preprocess_for(params.backbone, params.pretrained, params.image_size)
    return pre.resize, pre.interpolation


__all__ = ["Dist", "FitResult", "ProbeHead", "confusion", "dist_from_env", "fit", "infer", "make_model", "run",
           "save_model", "scores"]
