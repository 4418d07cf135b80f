"""The learning-rate range test (`datakit train --lr-find`): sweep the learning rate
geometrically over a few hundred batches, record the training loss at each, and suggest a
`train.lr` (Smith, "Cyclical Learning Rates for Training Neural Networks", 2015/2017; the
fastai-style variant: start ~1e-7, end ~10, stop once the smoothed loss exceeds 4x its best).

What is swept is a fresh copy of the model exactly as `fit` builds it: the same rows and data
pipeline (`loop.prepare`: pixel cache, online augmentation, vectors), the same network and
initial weights (`nets.make_model`, the seed), the same optimiser type and weight decay, class
weights, label smoothing, AMP and device. Nothing is restored and nothing is saved but the
sweep's own two files: no model.pt, no history, no dvclive, no train report.

finetune: AdamW mini-batches of `batch_size`; each step sets the head group's lr to the swept
value and the backbone group's to `lr * backbone_lr_scale` (the ratio training uses); no
scheduler. The data is cycled (a new augmentation draw per pass) when the sweep is longer than
an epoch.

linear_probe: the probe trains full-batch with L-BFGS, whose strong-Wolfe line search picks the
step itself (`train.lr` is only its first trial step). The sweep therefore takes one L-BFGS
iteration per step at a *fixed* step of the swept lr (no line search), on all train vectors:
the curve shows the steps at which the quasi-Newton direction still descends. Training keeps its
line search, so the probe is forgiving of the value chosen.

Outputs (in the folder given, atomically): `lr_find.csv` (step, lr, loss, smoothed_loss) and
`lr_find.json` (the suggestion, how it was chosen, the range, the batches, whether and why the
sweep stopped early). The smoothed loss is the bias-corrected exponential moving average
(`beta`) of the batch losses.

Suggestion (finetune): the lr of the steepest descent of the smoothed loss against log10(lr),
looked for between the first few steps (the average settling) and the minimum of the smoothed
loss; also reported: the lr of that minimum divided by 10 (the other classic rule). When the
loss did not descend before its minimum the suggestion falls back to minimum/10 and says so.
linear_probe: the lr of the least loss, at most 1 (L-BFGS's own step scale): training's line
search starts its trial there (a start far below costs its evaluations, and a probe at 1e-7
barely moves in a few epochs).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from datakit.errors import DatakitError
from datakit.fsutil import atomic_write_text
from datakit.models import pick_device
from datakit.stage import SPLIT, NoProgress, StageContext, StageResult, load_input
from datakit.train.data import (
    ImageRows,
    OnlineAugment,
    make_loader,
    seed_everything,
)
from datakit.train.devices import Dist, Inputs, autocast, dist_from_env
from datakit.train.loop import prepare, training_inputs
from datakit.train.nets import ProbeHead, make_model, param_groups
from datakit.train.params import TrainParams

CSV_FILE = "lr_find.csv"
JSON_FILE = "lr_find.json"
CSV_COLUMNS = ("step", "lr", "loss", "smoothed_loss")
TRAIN_OUTPUTS = ("model.pt", "history.csv")  # a folder holding these is a train stage's output
PROGRESS_EVERY_S = 10.0  # a progress line at most this often
MIN_STEPS_FOR_SUGGESTION = 10


@dataclass(frozen=True)
class Sweep:
    """How the range test sweeps: lr from `start_lr` to `end_lr` over `steps` batches,
    geometrically; stop when the smoothed loss exceeds `diverge` x its best."""

    start_lr: float = 1e-7
    end_lr: float = 10.0
    steps: int = 200
    diverge: float = 4.0
    beta: float | None = None  # None: 0.98 on mini-batches (finetune), 0 on the probe's full batch

    def for_mode(self, mode: str) -> Sweep:
        """The sweep with its smoothing decided: a mini-batch loss is noisy (beta 0.98, fastai's);
        the probe's full-batch loss is not, and an average would only lag behind it."""
        if self.beta is not None:
            return self
        return replace(self, beta=0.98 if mode == "finetune" else 0.0)

    def check(self) -> Sweep:
        """Itself, or a DatakitError naming the bad setting."""
        if not (self.start_lr > 0 and math.isfinite(self.start_lr)):
            raise DatakitError(f"--lr-find-start must be a positive number (got {self.start_lr})")
        if not (self.end_lr > self.start_lr and self.end_lr <= 10):
            raise DatakitError(f"--lr-find-end must be above --lr-find-start ({self.start_lr:g}) and at most 10, "
                               f"train.lr's limit (got {self.end_lr:g})")
        if not 10 <= self.steps <= 100_000:
            raise DatakitError(f"--lr-find-steps must be between 10 and 100000 (got {self.steps})")
        if not self.diverge > 1:
            raise DatakitError(f"the divergence factor must be above 1 (got {self.diverge})")
        if self.beta is not None and not 0 <= self.beta < 1:
            raise DatakitError(f"the smoothing beta must be in [0, 1) (got {self.beta})")
        return self

    def lrs(self) -> np.ndarray:
        """The lr of every step: start * (end / start) ** (i / (steps - 1))."""
        return self.start_lr * (self.end_lr / self.start_lr) ** (np.arange(self.steps) / (self.steps - 1))


# ------------------------------------------------------------------------------ the curve


def suggest(lrs: np.ndarray, smoothed: np.ndarray, *, quasi_newton: bool = False) -> dict[str, Any]:
    """The suggested lr and how it was chosen (see the module docstring). `quasi_newton` (the
    probe's L-BFGS): the lr of the least loss, at most 1 (the quasi-Newton step's own scale):
    its line search starts there, and a start far below costs iterations."""
    n = len(lrs)
    if n < MIN_STEPS_FOR_SUGGESTION:
        return {"suggested_lr": None, "method": None, "steepest_lr": None, "min_loss_lr": None,
                "min_loss_lr_div10": None,
                "why": f"only {n} step(s) before the loss diverged: start lower (--lr-find-start)"}
    i_min = int(np.argmin(smoothed))
    min_lr = float(lrs[i_min])
    div10 = max(min_lr / 10, float(lrs[0]))
    skip = max(1, n // 20)  # the first steps: the average is still settling
    steepest: float | None = None
    if i_min - skip >= 2:
        grad = np.gradient(smoothed, np.log10(lrs))
        i_steep = skip + int(np.argmin(grad[skip : i_min + 1]))
        if grad[i_steep] < 0:
            steepest = float(lrs[i_steep])
    if quasi_newton:
        suggested, method = min(min_lr, 1.0), "min_loss_capped_at_1"
        why = (f"L-BFGS: the fixed step of the least loss ({min_lr:.3g}), at most 1; training's line search "
               "starts from it and adapts the step")
    elif steepest is not None:
        suggested, method = steepest, "steepest"
        why = f"steepest descent of the smoothed loss (per decade of lr) before its minimum at lr {min_lr:.3g}"
    else:
        suggested, method = div10, "min_loss/10"
        why = f"the smoothed loss fell to its minimum too early for a descent to measure; its lr {min_lr:.3g} / 10"
    if float(smoothed[0] - smoothed[i_min]) <= 0.01 * max(abs(float(smoothed[0])), 1e-12):
        why += "; the loss hardly fell over the whole range: check the data and the model before trusting it"
    return {"suggested_lr": suggested, "method": method, "steepest_lr": steepest, "min_loss_lr": min_lr,
            "min_loss_lr_div10": div10, "why": why}


def lr_text(lr: float) -> str:
    """`lr` to two significant digits, written so YAML reads a float (`3.0e-05`, not `3e-05`,
    a string to YAML 1.1; `1.0`, not the integer `1`)."""
    text = f"{lr:.2g}"
    if "." not in text:
        mant, e, exp = text.partition("e")
        text = f"{mant}.0{e}{exp}"
    return text


def hint(summary: dict[str, Any]) -> str:
    """The line that says how to use the suggestion."""
    lr = summary.get("suggested_lr")
    if lr is None:
        return summary.get("why") or "no suggestion"
    return f"train.lr: {lr_text(lr)} in params.yaml"


# ------------------------------------------------------------------------------ stepping


class _Steps:
    """One sweep step at a time: `step(lr)` trains one batch at `lr`, returns (loss, samples)."""

    def step(self, lr: float) -> tuple[float, int]:
        raise NotImplementedError


class _Finetune(_Steps):
    """AdamW mini-batches on the images (the pixel cache, online augmentation), as `fit`."""

    def __init__(self, model: torch.nn.Module, train: Any, params: TrainParams, device: torch.device,
                 inputs: Inputs, weight: torch.Tensor | None, n_train: int) -> None:
        self.model, self.params, self.device, self.inputs, self.weight = model, params, device, inputs, weight
        groups = param_groups(model, params, params.lr)
        self.scales = [g["lr"] / params.lr for g in groups]
        self.optimizer = torch.optim.AdamW(groups, lr=params.lr, weight_decay=params.weight_decay)
        drop_last = n_train > 1 and n_train % params.batch_size == 1  # a batch of one breaks BatchNorm
        self.train = train
        self.loader = make_loader(train, params.batch_size, shuffle=True, sampler=None, num_workers=params.num_workers,
                                  cuda=device.type == "cuda", seed=params.seed, drop_last=drop_last)
        self.epoch = 0
        self._it: Iterator[Any] | None = None
        model.train()

    def _batch(self) -> Any:
        for _ in range(3):  # a pass with no readable batch at all ends the sweep
            if self._it is None:
                self.epoch += 1
                if isinstance(self.train, ImageRows):
                    self.train.epoch = self.epoch  # a new augmentation draw per pass, as training
                self._it = iter(self.loader)
            for batch in self._it:
                if batch is not None:
                    return batch
            self._it = None
        raise DatakitError("the LR range test found no readable train batch")

    def step(self, lr: float) -> tuple[float, int]:
        for group, scale in zip(self.optimizer.param_groups, self.scales, strict=True):
            group["lr"] = lr * scale
        x, y, _ = self._batch()
        y = y.to(self.device, non_blocking=self.inputs.cuda)
        with autocast(self.device, self.params.amp):
            logits = self.model(self.inputs(x))
        loss = F.cross_entropy(logits.float(), y, weight=self.weight, label_smoothing=self.params.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach()), len(y)


class _Probe(_Steps):
    """One fixed-step L-BFGS iteration (no line search) per step on all train vectors, with the
    L2 term training uses; the recorded loss is the cross-entropy before the step."""

    def __init__(self, model: ProbeHead, X: torch.Tensor, y: torch.Tensor, params: TrainParams,
                 weight: torch.Tensor | None) -> None:
        self.model, self.X, self.y, self.params, self.weight = model, X, y, params, weight
        self.l2 = params.weight_decay if params.weight_decay is not None else 1.0 / len(y)
        self.optimizer = torch.optim.LBFGS(model.parameters(), lr=params.lr, max_iter=1, history_size=20,
                                           line_search_fn=None)
        self._ce = math.nan

    def _closure(self) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        ce = F.cross_entropy(self.model(self.X), self.y, weight=self.weight, label_smoothing=self.params.label_smoothing)
        self._ce = float(ce.detach())
        loss = ce + 0.5 * self.l2 * (self.model.linear.weight ** 2).sum()
        loss.backward()
        return loss

    def step(self, lr: float) -> tuple[float, int]:
        self.optimizer.param_groups[0]["lr"] = lr
        self.optimizer.step(self._closure)  # type: ignore[arg-type]
        return self._ce, len(self.y)


# ------------------------------------------------------------------------------ the sweep


@dataclass
class _Ticker:
    """A progress note at most every PROGRESS_EVERY_S: batches, lr, loss, samples/s, ETA."""

    steps: int
    unit: str
    progress: Any
    start: float = 0.0
    last: float = 0.0
    samples: int = 0

    def __post_init__(self) -> None:
        self.start = self.last = time.monotonic()

    def tick(self, done: int, lr: float, smoothed: float, samples: int) -> None:
        self.samples += samples
        self.progress.advance("lr_find")
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S and done < self.steps:
            spent = now - self.start
            self.progress.note(f"lr_find  batch {done}/{self.steps}  lr {lr:.2e}  smoothed loss {smoothed:.4f}  "
                               f"{self.samples / spent:.1f} {self.unit}/s  ETA {spent / done * (self.steps - done):.0f}s")
            self.last = now


def sweep(steps: _Steps, plan: Sweep, ticker: _Ticker) -> tuple[list[dict[str, Any]], str | None]:
    """Run the steps; returns the rows (step, lr, loss, smoothed_loss) and why it stopped early
    (None: it ran every step)."""
    rows: list[dict[str, Any]] = []
    avg, best, beta = 0.0, math.inf, plan.beta or 0.0
    for i, lr in enumerate(plan.lrs()):
        loss, n = steps.step(float(lr))
        if not math.isfinite(loss):
            return rows, f"the loss became {loss} at lr {lr:.3g}"
        avg = beta * avg + (1 - beta) * loss
        smoothed = avg / (1 - beta ** (i + 1))
        rows.append({"step": i + 1, "lr": float(lr), "loss": loss, "smoothed_loss": smoothed})
        ticker.tick(i + 1, float(lr), smoothed, n)
        best = min(best, smoothed)
        if i > 0 and smoothed > plan.diverge * best:
            return rows, f"the smoothed loss rose above {plan.diverge:g}x its best at lr {lr:.3g}"
    return rows, None


def run(manifest: pd.DataFrame, params: TrainParams, ctx: StageContext, *, augment: OnlineAugment | None = None,
        plan: Sweep | None = None) -> StageResult:
    """The range test on the rows training would use; writes OUT/lr_find.csv and OUT/lr_find.json
    (atomically) and returns them as `files`, the summary as `report`, the rows as
    `extra["rows"]`. Single process only (under torchrun: an error)."""
    plan = (plan or Sweep()).check().for_mode(params.mode)
    if ctx.out is None:
        raise DatakitError("train --lr-find: give it an output folder (--out) for lr_find.csv")
    if dist_from_env().enabled:
        raise DatakitError("train --lr-find runs in one process: start it without torchrun")
    t0 = time.monotonic()
    device = pick_device(params.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    got = training_inputs(manifest, params, ctx)  # exactly what training reads
    labels, class_weights = got.labels, got.class_weights
    seed_everything(params.seed)
    prep = prepare(got.train, got.val.iloc[0:0], labels, params, root=ctx.root, augment=augment,
                   embeddings=got.embeddings, cache=got.cache, d=Dist(), log=ctx.progress.note)
    n_train = len(prep.y_train)
    if n_train == 0:
        raise DatakitError("no train rows left to learn from (every row lacks an image or a vector)")
    images = params.mode == "finetune"
    model = make_model(params.mode, params.backbone, pretrained=params.pretrained, n_classes=len(labels),
                       dim=prep.dim, seed=params.seed)
    weight = (torch.tensor([class_weights[c] for c in labels], dtype=torch.float32, device=device)
              if class_weights else None)
    steps: _Steps
    if isinstance(model, ProbeHead):
        X = prep.train.X  # type: ignore[attr-defined]
        model.mean.copy_(X.mean(dim=0))
        model.scale.copy_(X.std(dim=0, unbiased=False).clamp_min(1e-6))
        model = model.to(device)
        steps = _Probe(model, X.to(device), prep.train.y.to(device), params, weight)  # type: ignore[attr-defined]
    else:
        model = model.to(device)
        if cuda and params.channels_last:
            model = model.to(memory_format=torch.channels_last)
        pre = prep.preprocess or {}
        inputs = Inputs(device, images=True, mean=pre.get("mean"), std=pre.get("std"), channels_last=params.channels_last)
        steps = _Finetune(model, prep.train, params, device, inputs, weight, n_train)
    ctx.progress.start("lr_find", plan.steps)
    ctx.progress.note(f"lr_find: {plan.steps} batches, lr {plan.start_lr:.1e} -> {plan.end_lr:.1e} "
                      f"({params.mode}, {params.backbone}, {device})")
    rows, stopped = sweep(steps, plan, _Ticker(plan.steps, "img" if images else "vectors", ctx.progress))
    lrs = np.array([r["lr"] for r in rows], dtype=np.float64)
    smoothed = np.array([r["smoothed_loss"] for r in rows], dtype=np.float64)
    summary: dict[str, Any] = {
        **suggest(lrs, smoothed, quasi_newton=not images),
        "mode": params.mode,
        "backbone": params.backbone,
        "optimizer": ("AdamW (head lr; backbone lr x backbone_lr_scale)" if images
                      else "L-BFGS, fixed step, no line search (training keeps its strong-Wolfe line search)"),
        "weight_decay": params.weight_decay,
        "backbone_lr_scale": params.backbone_lr_scale if images else None,
        "batch_size": params.batch_size if images else n_train,
        "start_lr": plan.start_lr,
        "end_lr": plan.end_lr,
        "lr_reached": float(lrs[-1]) if len(lrs) else None,
        "steps_planned": plan.steps,
        "steps": len(rows),
        "stopped_early": stopped is not None,
        "stop_reason": stopped,
        "diverge": plan.diverge,
        "beta": plan.beta,
        "n_train": n_train,
        "skipped": prep.skipped,
        "device": str(device),
        "seed": params.seed,
        "seconds": round(time.monotonic() - t0, 3),
    }
    summary["hint"] = hint(summary)
    out = Path(ctx.out)
    files = write_outputs(out, rows, summary)
    return StageResult(manifest=manifest, report=summary, failures=prep.failures, files=files, extra={"rows": rows})


def write_outputs(out: Path, rows: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, Path]:
    """OUT/lr_find.csv and OUT/lr_find.json, each written atomically (csv first: the json
    describes it)."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=list(CSV_COLUMNS))
    atomic_write_text(out / CSV_FILE, frame.to_csv(index=False, lineterminator="\n", float_format="%.8g"))
    atomic_write_text(out / JSON_FILE, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return {"csv": out / CSV_FILE, "json": out / JSON_FILE}


def find_folder(source: Path, out: Path, params: TrainParams, *, augment: OnlineAugment | None = None,
                plan: Sweep | None = None, embeddings: Path | None = None, progress: Any = None) -> StageResult:
    """`datakit train --lr-find`: read SOURCE as training does, hold OUT's lock, sweep, write the
    two files. OUT must not be a train stage's output (a folder holding model.pt or history.csv):
    DVC would see that output changed (and the next `dvc repro` rerun training and delete the
    sweep), so the sweep gets a folder of its own (e.g. reports/lr_find)."""
    from datakit.fsutil import folder_lock

    plan = (plan or Sweep()).check()
    out = Path(out)
    held = [name for name in TRAIN_OUTPUTS if (out / name).exists()]
    if held:
        raise DatakitError(f"{out} holds a trained model ({', '.join(held)}): the LR range test writes no "
                           f"model and does not touch a train output; give it its own folder, e.g. --out reports/lr_find")
    inp = load_input(source, needs=(SPLIT,), required=("label",))
    ctx = StageContext(root=inp.root, out=out, input=inp.folder, embeddings=embeddings, progress=progress or NoProgress())
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out, "datakit train --lr-find"):
        return run(inp.manifest, params, ctx, augment=augment, plan=plan)


__all__ = ["CSV_FILE", "JSON_FILE", "Sweep", "find_folder", "hint", "lr_text", "run", "suggest", "sweep",
           "write_outputs"]
