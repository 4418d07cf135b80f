"""One training run (`fit`) and the train stage around it (`run`, `train_folder`).

`fit` trains a model on the rows it is given and returns it with the best validation state
loaded; `evaluate` calls it again for learning-curve and fold points. `run` is the stage: it
picks the rows, reads class weights and embeddings, sets up the device (and DDP under torchrun,
`devices.py`), logs to dvclive and writes `OUT/model.pt` and `OUT/history.csv` (rank 0 only,
`checkpoint.py`). The networks and metrics are in `nets.py`.

Modes. `finetune`: AdamW, the new head at `lr` and the backbone at `lr * backbone_lr_scale`
(0 freezes it), cosine schedule over `epochs`, mini-batches of uint8 crops. `linear_probe`: a
standardising linear head on the embedding vectors, fitted full-batch with L-BFGS (the method of
scikit-learn's LogisticRegression; `weight_decay` is the L2 coefficient, by default 1 / n_train,
which is that estimator's objective at C = 1; one epoch is `PROBE_ITERS_PER_EPOCH` iterations),
so it converges in seconds whatever the row count. With `patience: 0` (the probe's default) the
probe is fitted to convergence and the last epoch is kept, as scikit-learn does: the L2 term, not
the val loss, regularises it (picking the epoch of least val loss stopped a 43-class grocery probe
after 10 iterations, 2.7 points below scikit-learn on the test set).

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

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

from datakit.errors import DatakitError
from datakit.manifest import relpath
from datakit.models import pick_device, preprocess_for
from datakit.stage import EMBEDDINGS, SPLIT, StageContext, StageResult, as_rows, failure_rows, load_input
from datakit.train.checkpoint import HISTORY_FILE, MODEL_FILE, live_logger, payload, save_model, write_history
from datakit.train.data import (
    Embeddings,
    ImageRows,
    OnlineAugment,
    PixelCache,
    VectorRows,
    has_image,
    label_list,
    load_embeddings,
    make_loader,
    read_class_weights,
    seed_everything,
    split_rows,
    targets,
)
from datakit.train.devices import Dist, Inputs, all_sum, autocast, barrier, dist_from_env, setup_device, uneven_inputs
from datakit.train.nets import ProbeHead, make_model, param_groups, scores
from datakit.train.params import TrainParams

PROBE_ITERS_PER_EPOCH = 10  # L-BFGS iterations that make one probe "epoch"
PROGRESS_EVERY_S = 10.0  # a line inside a long epoch at most this often (logs under `dvc repro` have no bar)
STAGE = "train"

Log = Callable[[str], None]


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
    failures: pd.DataFrame | None = None  # rows left out: no vector (probe) or unreadable (the pixel cache says why)


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
    failures: pd.DataFrame


def _dropped(frames: list[tuple[pd.DataFrame, Any]], reasons: Callable[[pd.DataFrame], list[str]],
             details: Callable[[pd.DataFrame], list[str | None]]) -> pd.DataFrame:
    """Failures rows (stage `train`) for the rows of each (frame, mask)."""
    parts = [failure_rows(f, m, STAGE, reasons(f[m]), details(f[m])) for f, m in frames if bool(np.any(m))]
    return pd.concat(parts, ignore_index=True) if parts else as_rows([])


def prepare(train: pd.DataFrame, val: pd.DataFrame, labels: list[str], params: TrainParams, *, root: Path,
             augment: OnlineAugment | None, embeddings: Embeddings | None, cache: PixelCache | None,
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
        gone = _dropped([(train, ~found_tr), (val, ~found_va)], lambda f: ["no_vector"] * len(f),
                        lambda f: [None] * len(f))
        return _Prepared(VectorRows(X_tr, y_tr), VectorRows(X_va, y_va) if len(y_va) else None, y_tr, skipped,
                         None, None, embeddings.dim, {}, gone)

    img_tr, img_va = has_image(train), has_image(val)
    skipped["no_image"] = int((~img_tr).sum() + (~img_va).sum())
    train, val = train[img_tr], val[img_va]
    pre = preprocess_for(params.backbone, params.pretrained, params.image_size)
    stats: dict[str, int] = {}
    gone = as_rows([])
    if cache is not None:
        if d.main:
            ids = pd.concat([train["image_id"], val["image_id"]]).astype(str).tolist()
            paths = pd.concat([train["path"], val["path"]]).astype(str).tolist()
            if log:
                log(f"pixel cache: {cache.dir}")
            stats = cache.ensure(root, ids, paths, num_workers=params.num_workers)
        barrier(d)
        cache.load_index()
        bad_tr = train["image_id"].astype(str).isin(cache.failed.keys())
        bad_va = val["image_id"].astype(str).isin(cache.failed.keys())
        skipped["unreadable"] = int(bad_tr.sum() + bad_va.sum())
        gone = _dropped([(train, bad_tr.to_numpy()), (val, bad_va.to_numpy())],
                        lambda f: [cache.failed[str(i)].partition(":")[0] for i in f["image_id"]],
                        lambda f: [cache.failed[str(i)].partition(":")[2].strip() or None for i in f["image_id"]])
        train, val = train[~bad_tr], val[~bad_va]
    online = augment if params.online_augment and augment is not None and augment.active() else None
    y_tr, y_va = targets(train, labels), targets(val, labels)
    common = {"side": pre.resize, "crop": pre.crop, "interpolation": pre.interpolation, "cache": cache, "seed": params.seed}
    ds_tr = ImageRows(root, train["image_id"].astype(str).tolist(), train["path"].astype(str).tolist(), y_tr,
                      augment=online, **common)
    ds_va = ImageRows(root, val["image_id"].astype(str).tolist(), val["path"].astype(str).tolist(), y_va, **common)
    return _Prepared(ds_tr, ds_va if len(y_va) else None, y_tr, skipped, pre.to_dict(), pre.resize, None, stats, gone)


class _EpochTicker:
    """Progress inside an epoch: batches done, images/s and the time left, as a log line at most
    every PROGRESS_EVERY_S seconds (an epoch can take minutes on a CPU)."""

    def __init__(self, epoch: int, epochs: int, n_batches: int, log: Log | None) -> None:
        self.epoch, self.epochs, self.n, self.log = epoch, epochs, n_batches, log
        self.start = self.last = time.monotonic()
        self.done = 0

    def tick(self, images: int) -> None:
        """Called before each batch with the images trained on so far in this epoch."""
        now = time.monotonic()
        if self.log is not None and self.done and now - self.last >= PROGRESS_EVERY_S:
            spent = now - self.start
            eta = spent / self.done * (self.n - self.done)
            self.log(f"epoch {self.epoch:>3}/{self.epochs}  batch {self.done}/{self.n}  "
                     f"{images / spent:.1f} img/s  ETA {eta:.0f}s")
            self.last = now
        self.done += 1


def fit(train: pd.DataFrame, val: pd.DataFrame, labels: list[str], params: TrainParams, *, root: Path,
        device: torch.device | None = None, augment: OnlineAugment | None = None,
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
    prep = prepare(train, val, labels, params, root=root, augment=augment, embeddings=embeddings, cache=cache,
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
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(param_groups(model, params, lr), lr=lr,
                                                             weight_decay=params.weight_decay)
        if params.scheduler == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        if d.enabled:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
            sampler = DistributedSampler(prep.train, num_replicas=d.world, rank=d.rank, shuffle=True, seed=params.seed)
        per_rank = math.ceil(n_train / d.world)
        drop_last = per_rank > 1 and per_rank % params.batch_size == 1  # a batch of one breaks BatchNorm
        train_loader = make_loader(prep.train, params.batch_size, shuffle=True, sampler=sampler,
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
        val_loader = make_loader(part, max(params.batch_size, 64 if images else 1024), shuffle=False, sampler=None,
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
            n_batches = len(train_loader)
            ticker = _EpochTicker(epoch, epochs, n_batches, log)
            with uneven_inputs(net):
                for batch in train_loader:
                    ticker.tick(int(loss_sum[1].item()))
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
            all_sum(loss_sum, d)
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
        rank_samples=rank_samples, failures=prep.failures,
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
    all_sum(stats, d)
    cm = stats[2:].round().long().cpu().numpy().reshape(n, n)
    acc, bal = scores(cm)
    return {"val_loss": float(stats[0] / stats[1]) if stats[1] > 0 else None, "val_accuracy": acc,
            "val_balanced_accuracy": bal}



def cache_folder(params: TrainParams, root: Path) -> Path:
    """Where the pixel cache lives (train.cache_dir, else under the project root)."""
    return Path(params.cache_dir) if params.cache_dir else Path(root) / ".datakit" / "cache" / "train"


def cache_key(params: TrainParams) -> tuple[int, str]:
    """(side, interpolation) of the pixel cache these params read."""
    pre = preprocess_for(params.backbone, params.pretrained, params.image_size)
    return pre.resize, pre.interpolation


def embeddings_path(params: TrainParams, data: Path | None, given: Path | None = None) -> Path:
    """The embeddings table a probe reads: train.embeddings, else the one the caller found
    (`ctx.embeddings`), else DATA/embeddings.parquet."""
    if params.embeddings:
        return Path(params.embeddings)
    if given is not None:
        return Path(given)
    return Path(data or ".") / EMBEDDINGS


@dataclass
class TrainingInputs:
    """What training (and the LR range test) reads besides params: the train and val rows, the
    label list, balance's class weights, the embeddings (linear probe) and the pixel cache (finetune)."""

    train: pd.DataFrame
    val: pd.DataFrame
    labels: list[str]
    class_weights: dict[str, float] | None
    embeddings: Embeddings | None
    cache: PixelCache | None


def training_inputs(manifest: pd.DataFrame, params: TrainParams, ctx: StageContext) -> TrainingInputs:
    """The rows and side inputs of `manifest` as training uses them (INPUT is `ctx.input`, else OUT)."""
    input_dir = Path(ctx.input) if ctx.input is not None else Path(ctx.out or ".")
    train = split_rows(manifest, "train", originals_only=False)
    val = split_rows(manifest, "val", originals_only=True)
    usable = train[has_image(train)] if params.mode == "finetune" else train
    labels = label_list(usable, ("val", val))
    return TrainingInputs(
        train=train, val=val, labels=labels,
        class_weights=read_class_weights(params.class_weights, input_dir, labels),
        embeddings=(load_embeddings(embeddings_path(params, input_dir, ctx.embeddings))
                    if params.mode == "linear_probe" else None),
        cache=(PixelCache(cache_folder(params, ctx.root), *cache_key(params))
               if params.mode == "finetune" and params.cache else None))


def run(manifest: pd.DataFrame, params: TrainParams, ctx: StageContext, *,
        augment: OnlineAugment | None = None) -> StageResult:
    """The train stage: fit on the kept train rows, early-stop on val, write OUT/model.pt,
    OUT/history.csv and OUT/dvclive/ (rank 0 only). `ctx.input` is the dataset folder
    (class_weights.json, embeddings.parquet are read from it), `ctx.out` the model folder;
    `augment` is the online augmentation the caller built (None: none). The result's manifest
    is the input's (train writes none), `report` is reports/train.json, `failures` the rows left
    out (no vector, unreadable), `files` the model and history, `extra["history"]` the epochs."""
    if ctx.out is None:
        raise DatakitError("train: give it an output folder (--out) for model.pt")
    t0 = time.monotonic()
    d = dist_from_env()
    out_dir = Path(ctx.out)
    input_dir = Path(ctx.input) if ctx.input is not None else out_dir
    log = ctx.progress.note if d.main else None
    device = setup_device(params.device, d)
    try:
        got = training_inputs(manifest, params, ctx)
        train, val, labels, weights, embeddings = got.train, got.val, got.labels, got.class_weights, got.embeddings
        live = live_logger(out_dir, params, augment) if d.main and params.dvclive else None
        result = fit(train, val, labels, params, root=ctx.root, device=device, augment=augment, embeddings=embeddings,
                     class_weights=weights, cache=got.cache, live=live, dist=d, log=log)
        if d.main:
            try:
                input_rel: str | None = relpath(ctx.root, input_dir)
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
        barrier(d)
    finally:
        if d.enabled:
            import torch.distributed as tdist

            if tdist.is_initialized():
                tdist.destroy_process_group()
    report = {
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
        "epoch_seconds": [row.get("seconds") for row in result.history],
        ("images_per_s" if params.mode == "finetune" else "vectors_per_s"): result.samples_per_s,
        "cache": result.cache,
        "params": params.model_dump(),
        "torch": str(torch.__version__),
        "model": str(out_dir / MODEL_FILE),
    }
    return StageResult(manifest=manifest, report=report, failures=result.failures,
                       files={"model": out_dir / MODEL_FILE, "history": out_dir / HISTORY_FILE},
                       extra={"history": result.history, "main": d.main})


def train_folder(source: Path, out: Path, params: TrainParams, *, report: Path | None = None,
                 augment: OnlineAugment | None = None, embeddings: Path | None = None,
                 progress: Any = None) -> StageResult:
    """`datakit train`: read SOURCE (a split, augment or balance folder), hold OUT's lock (rank 0),
    run the stage, and on rank 0 write the report and, when rows were left out, OUT/failures.parquet.
    Train writes no manifest: its output is a model (`StageResult.files`)."""
    import contextlib

    from datakit.console import write_report
    from datakit.fsutil import folder_lock
    from datakit.manifest import FAILURES, write_table
    from datakit.stage import STAGE_FAILURE_SCHEMA, NoProgress

    inp = load_input(source, needs=(SPLIT,), required=("label",))
    main = dist_from_env().main
    ctx = StageContext(root=inp.root, out=Path(out), input=inp.folder, embeddings=embeddings,
                       progress=progress or NoProgress())
    Path(out).mkdir(parents=True, exist_ok=True)
    with folder_lock(Path(out), "datakit train") if main else contextlib.nullcontext():
        result = run(inp.manifest, params, ctx, augment=augment)
        if main and result.failures is not None and len(result.failures):
            write_table(result.failures, Path(out) / FAILURES, STAGE_FAILURE_SCHEMA)
    if main and report is not None:
        write_report(report, result.report)
    return result


__all__ = ["FitResult", "cache_folder", "cache_key", "embeddings_path", "fit", "prepare", "run", "train_folder"]
