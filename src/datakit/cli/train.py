"""`datakit train`, `datakit evaluate`, `datakit predict`: the model commands (extra `train`).

`register(app)` adds them to the main Typer app; torch is imported inside the commands only, so
`datakit --help` and the data stages stay fast and work without the extra installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from datakit.cli.common import ParamsOpt, input_argument, load, out_option, report_option
from datakit.console import err, out
from datakit.console import fail as _fail
from datakit.errors import DatakitError
from datakit.stage import NoProgress

_NO_TORCH = ("{cmd} needs torch and torchvision (the `train` extra): pip install 'datakit[train]' "
             "(or the CUDA build of torch from download.pytorch.org for a GPU)")


class _Notes(NoProgress):
    """Progress for the model commands: one plain line per note (epochs, refit points) on stderr."""

    def note(self, message: str) -> None:
        err.print(message, highlight=False, markup=False)


@dataclass(frozen=True)
class OnlineAugmenter:
    """The online augmentation `datakit train` hands the trainer (`datakit.train.data.OnlineAugment`),
    built here from params.yaml `augment` so the learning family imports no augment code. Pickled
    into DataLoader workers; each builds its own pipeline."""

    params: Any  # datakit.augment.AugmentParams

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> OnlineAugmenter:
        """The augmenter of the settings a model.pt recorded (evaluate's retrain refits)."""
        from datakit.augment import AugmentParams

        return cls(AugmentParams.model_validate(settings))

    def active(self) -> bool:
        return bool(self.params.spec())

    def pipeline(self, size: tuple[int, int]) -> Any:
        from datakit.augment import build_pipeline

        return build_pipeline(self.params, size=size)

    def apply(self, pipeline: Any, pixels: Any, seed: int) -> Any:
        from datakit.augment import apply

        return apply(pipeline, pixels, seed)[0]

    def settings(self) -> dict[str, Any]:
        return self.params.model_dump()

    def describe(self) -> str:
        return "transforms" if self.params.transforms is not None else f"preset:{self.params.preset}"


def _need_torch(cmd: str) -> None:
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError:
        raise _fail(_NO_TORCH.format(cmd=cmd)) from None


def _num(v: Any, digits: int = 4) -> str:
    return "-" if v is None or (isinstance(v, float) and v != v) else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _text(v: Any) -> str:
    """A table cell: missing values (None, and the NaN pandas stores for them) are empty."""
    return "" if v is None or (isinstance(v, float) and v != v) else str(v)


def predict_table(df: Any, folder: Path, limit: int = 30) -> Table:
    """The first `limit` predictions; an unreadable file shows its reason in red instead of a label."""
    from rich.markup import escape

    t = Table(title=escape(f"predict: {len(df)} images in {folder}" + (f" (first {limit})" if len(df) > limit else "")))
    for col in ("path", "label", "confidence", "top_k"):
        t.add_column(col, justify="right" if col == "confidence" else "left", overflow="fold")
    for r in df.head(limit).itertuples(index=False):
        label = _text(r.label)
        shown = escape(label) if label else f"[red]{escape(_text(r.error) or 'unreadable')}[/]"
        t.add_row(escape(_text(r.path)), shown, _num(r.confidence, 3), escape(_text(r.top_k)))
    return t


TRAIN_EPILOG = (
    "Examples:\n\n"
    "  datakit train data/balance --out models/baseline                 (params.yaml `train:`)\n\n"
    "  datakit train data/balance --out models/probe --mode linear_probe   (needs data/balance/embeddings.parquet)\n\n"
    "  datakit train data/balance --out models/smoke --no-pretrained --epochs 1 --device cpu\n\n"
    "  torchrun --nproc_per_node 4 -m datakit train data/balance --out models/ddp   (DDP; rank 0 writes)\n\n"
    "  datakit train data/balance --params params.yaml --out reports/lr_find --lr-find   (LR range test, no training)\n\n"
    "  params.yaml: train: {backbone: efficientnet_b0, epochs: 20, lr: 0.001, backbone_lr_scale: 0.1, patience: 3}"
)

EVALUATE_EPILOG = (
    "Examples:\n\n"
    "  datakit evaluate models/baseline --data data/balance --out eval/baseline\n\n"
    "  datakit evaluate models/probe --data data/balance --out eval/probe --report reports/evaluate-probe.json\n\n"
    "  params.yaml: evaluate: {learning_curve: [0.1, 0.25, 0.5, 1.0], refit: auto, top_mistakes: 25}"
)

PREDICT_EPILOG = (
    "Examples:\n\n"
    "  datakit predict models/baseline ~/new_photos                      (a table of the first rows)\n\n"
    "  datakit predict models/baseline ~/new_photos --out predictions.csv --top-k 5"
)


def _lr_find(input_dir: Path, out_dir: Path, p: Any, augment: Any, report: Optional[Path],
             sweep: tuple[float, float, int]) -> None:
    """`datakit train --lr-find`: the range test, its suggestion and the line to set it. The
    train report is written only when --report names a file (reports/train.json is training's)."""
    from datakit.console import write_report
    from datakit.train.lrfind import Sweep, find_folder, lr_text

    start, end, steps = sweep
    try:
        result = find_folder(input_dir, out_dir, p, augment=augment, plan=Sweep(start_lr=start, end_lr=end, steps=steps),
                             progress=_Notes())
    except DatakitError as exc:
        raise _fail(exc) from None
    rep = result.report
    if report is not None:
        write_report(report, rep)
    stop = f"stopped early: {rep['stop_reason']}" if rep["stopped_early"] else "ran every batch"
    reached = lr_text(rep["lr_reached"]) if rep["lr_reached"] is not None else "-"
    lines = [f"lr range test ({rep['mode']}, {rep['backbone']}, {rep['device']}): {rep['steps']} of "
             f"{rep['steps_planned']} batches, lr {lr_text(rep['start_lr'])} .. {reached}; {stop}"]
    if rep["suggested_lr"] is not None:
        alt = "" if rep["method"] == "min_loss/10" else f" (least loss / 10: {lr_text(rep['min_loss_lr_div10'])})"
        lines.append(f"suggested lr {lr_text(rep['suggested_lr'])}: {rep['why']}{alt}")
        lines.append(f"set it: {rep['hint']}")
    else:
        lines.append(f"no suggestion: {rep['why']}")
    lines.append(f"curve: {result.files['csv']}   summary: {result.files['json']}"
                 + (f"   report: {report}" if report is not None else ""))
    out.print("\n".join(lines), highlight=False, markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add `train`, `evaluate` and `predict` to `app`."""

    @app.command(epilog=TRAIN_EPILOG)
    def train(
        input_dir: Annotated[Path, input_argument("A balance (or split/augment) folder: manifest.parquet with split; class_weights.json and embeddings.parquet are read from it when present.")],
        out_dir: Annotated[Path, out_option("model.pt, history.csv, dvclive/ (and failures.parquet when rows were left out).")],
        params_file: ParamsOpt = None,
        report: Annotated[Optional[Path], report_option("train")] = None,
        mode: Annotated[Optional[str], typer.Option(help="Override train.mode: finetune or linear_probe (a switch also takes that mode's epochs, batch_size, lr and weight_decay unless given).")] = None,
        backbone: Annotated[Optional[str], typer.Option(help="Override train.backbone (efficientnet_lite0: ImageNet weights offline; resnet18, resnet50, mobilenet_v3_small, efficientnet_b0, ...; default: finetune resnet18, linear_probe efficientnet_lite0).")] = None,
        epochs: Annotated[Optional[int], typer.Option(help="Override train.epochs.")] = None,
        batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Override train.batch_size.")] = None,
        device: Annotated[Optional[str], typer.Option(help="Override train.device: auto, cpu, cuda, cuda:N.")] = None,
        seed: Annotated[Optional[int], typer.Option(help="Override train.seed.")] = None,
        pretrained: Annotated[Optional[bool], typer.Option("--pretrained/--no-pretrained", help="Override train.pretrained (--no-pretrained: random weights, smoke runs only).")] = None,
        lr_find: Annotated[bool, typer.Option("--lr-find", help="Do not train: an LR range test on a fresh model built as training would build it; writes OUT/lr_find.csv (step, lr, loss, smoothed_loss) and OUT/lr_find.json, prints a suggested train.lr. No model, history or train report; give it a folder of its own (e.g. --out reports/lr_find), not the train stage's output.")] = False,
        lr_find_steps: Annotated[int, typer.Option("--lr-find-steps", help="--lr-find: batches in the sweep (it stops early once the smoothed loss exceeds 4x its best).")] = 200,
        lr_find_start: Annotated[float, typer.Option("--lr-find-start", help="--lr-find: the first lr.")] = 1e-7,
        lr_find_end: Annotated[float, typer.Option("--lr-find-end", help="--lr-find: the last lr (at most 10, train.lr's limit).")] = 10.0,
    ) -> None:
        """Train a classifier: fine-tune a backbone on the images, or a linear probe on embeddings.

        finetune: a registry backbone (resnet18/50, mobilenet_v3_*, efficientnet_*, ...) with a new
        head; the head learns at lr, the backbone at lr x backbone_lr_scale; train images are
        augmented on the fly with params.yaml `augment` (the pipeline of the offline stage).
        linear_probe: a linear head on INPUT/embeddings.parquet (datakit embed), SMOTE rows
        included; seconds on a CPU. Class weights come from INPUT/class_weights.json
        (class_weights: auto). Early stopping on the val split keeps the best epoch. On CUDA: bf16
        autocast, channels_last; under torchrun: DDP. Images are decoded once into a uint8 cache.
        --lr-find: the learning-rate range test instead of training (the lr swept geometrically,
        the suggestion from the steepest descent of the smoothed loss)."""
        from datakit.params import section
        from datakit.stage import stage_report_path
        from datakit.train.params import train_section

        params = load(params_file)
        try:
            p = train_section(params, mode=mode, backbone=backbone, epochs=epochs, batch_size=batch_size,
                              device=device, seed=seed, pretrained=pretrained)
            augment = OnlineAugmenter(section(params, "augment")) if p.augments_online else None
        except DatakitError as exc:
            raise _fail(exc) from None
        _need_torch("datakit train")
        if lr_find:
            _lr_find(input_dir, out_dir, p, augment, report, (lr_find_start, lr_find_end, lr_find_steps))
            return
        from datakit.train.loop import train_folder

        report = stage_report_path("train", report)
        try:
            result = train_folder(input_dir, out_dir, p, report=report, augment=augment, progress=_Notes())
        except DatakitError as exc:
            raise _fail(exc) from None
        if not result.extra["main"]:
            return
        rep = result.report
        hist = Table(title=f"train ({p.mode}, {p.backbone}, {rep['device']}): per epoch")
        for col in ("epoch", "train_loss", "val_loss", "val_acc", "val_bal_acc", "seconds"):
            hist.add_column(col, justify="right")
        for r in result.extra["history"][-25:]:
            mark = " *" if int(r["epoch"]) == rep["best_epoch"] else ""
            hist.add_row(str(r["epoch"]) + mark, *(_num(r[k]) for k in (
                "train_loss", "val_loss", "val_accuracy", "val_balanced_accuracy")), str(r["seconds"]))
        out.print(hist)
        speed = rep.get("images_per_s", rep.get("vectors_per_s"))
        unit = "images/s" if "images_per_s" in rep else "vectors/s"
        skipped = {k: v for k, v in rep["skipped"].items() if v}
        out.print(f"best epoch {rep['best_epoch']} of {rep['epochs_run']}{' (stopped early)' if rep['stopped_early'] else ''}: "
                  f"val accuracy {_num(rep['val_accuracy'])}, balanced {_num(rep['val_balanced_accuracy'])}; "
                  f"{rep['n_train']} train rows, {rep['n_val']} val; {_num(speed, 1)} {unit}; "
                  f"skipped {skipped or 'none'}\n"
                  f"model: {result.files['model']}   history: {result.files['history']}   report: {report}",
                  highlight=False)

    @app.command(epilog=EVALUATE_EPILOG)
    def evaluate(
        model_dir: Annotated[Path, typer.Argument(metavar="MODEL_DIR", help="A train output folder (model.pt).", exists=True)],
        out_dir: Annotated[Path, out_option("predictions.csv, per_class.csv, confusion.png, mistakes.json, learning_curve.csv, cv.csv; manifest.parquet (the test rows with predicted, confidence), failures.parquet.")],
        data: Annotated[Optional[Path], typer.Option("--data", help="The dataset folder whose test split is scored (default: the folder the model was trained on).")] = None,
        params_file: ParamsOpt = None,
        report: Annotated[Optional[Path], report_option("evaluate")] = None,
        device: Annotated[Optional[str], typer.Option(help="Override evaluate.device: auto, cpu, cuda, cuda:N.")] = None,
    ) -> None:
        """Score a trained model on the held-out test split (kept originals only).

        Accuracy, balanced accuracy, per-class precision/recall/F1, the confusion matrix, the most
        confident mistakes with thumbnails, a learning curve (accuracy vs share of the train data)
        and, when split.folds made folds, a k-fold mean +- std. Curve and fold points are refits:
        a linear probe on the embeddings table when there is one (seconds), else re-training with
        the model's train params (evaluate.refit)."""
        from functools import partial

        from datakit.cli.common import run_command
        from datakit.params import section
        from datakit.stage import SPLIT, stage_report_path

        try:
            p = section(load(params_file), "evaluate", device=device)
        except DatakitError as exc:
            raise _fail(exc) from None
        _need_torch("datakit evaluate")
        from datakit.train.evaluate import default_data
        from datakit.train.evaluate import run as run_evaluate

        try:
            data = data if data is not None else default_data(model_dir)
        except DatakitError as exc:
            raise _fail(exc) from None
        result = run_command("evaluate", partial(run_evaluate, model=model_dir, augment_from=OnlineAugmenter.from_settings),
                             data, out_dir, p, needs=(SPLIT,), required=("label",), report=report)
        report = stage_report_path("evaluate", report)
        rep = result.report
        t = Table(title=f"evaluate: {rep['n_test']} test images")
        for col in ("label", "precision", "recall", "f1", "support"):
            t.add_column(col, justify="left" if col == "label" else "right")
        for label, r in rep["per_class"].items():
            t.add_row(label, _num(r["precision"], 3), _num(r["recall"], 3), _num(r["f1"], 3), str(r["support"]))
        out.print(t)
        curve = rep.get("learning_curve")
        if curve:
            c = Table(title=f"learning curve ({curve['method']} refits, same test set)")
            for col in ("fraction", "n_train", "accuracy", "balanced_accuracy"):
                c.add_column(col, justify="right")
            for pt in curve["points"]:
                c.add_row(f"{pt['fraction']:g}", str(pt["n_train"]), _num(pt["accuracy"]), _num(pt["balanced_accuracy"]))
            out.print(c)
        cv = rep.get("cv")
        cv_line = ""
        if cv:
            cv_line = (f"\n{cv['folds']}-fold CV ({cv['method']}): accuracy {_num(cv['accuracy_mean'])} +- "
                       f"{_num(cv['accuracy_std'])}, balanced {_num(cv['balanced_accuracy_mean'])} +- "
                       f"{_num(cv['balanced_accuracy_std'])}")
        out.print(f"accuracy {_num(rep['accuracy'])}, balanced accuracy {_num(rep['balanced_accuracy'])}, "
                  f"macro F1 {_num(rep['macro_f1'])}; {rep['n_mistakes']} mistakes{cv_line}\n"
                  f"outputs: {out_dir}   report: {report}", highlight=False)

    @app.command(epilog=PREDICT_EPILOG)
    def predict(
        model_dir: Annotated[Path, typer.Argument(metavar="MODEL_DIR", help="A train output folder (model.pt).", exists=True)],
        folder: Annotated[Path, typer.Argument(metavar="FOLDER", help="A folder of images (searched recursively: jpg, png, webp, gif).", exists=True, file_okay=False)],
        out_file: Annotated[Optional[Path], typer.Option("--out", help="Write every prediction to this CSV: path, label, confidence, top_k, error.", dir_okay=False)] = None,
        top_k: Annotated[int, typer.Option("--top-k", min=1, help="How many classes top_k lists per image.")] = 3,
        device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
        batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
        workers: Annotated[int, typer.Option(min=0, help="DataLoader worker processes decoding images.")] = 0,
    ) -> None:
        """Label new images with a trained model (the most likely class, its probability, top-k)."""
        _need_torch("datakit predict")
        from datakit.fsutil import atomic_write_text
        from datakit.train.predict import predict_folder

        try:
            df = predict_folder(model_dir, folder, k=top_k, device=device, batch_size=batch_size, num_workers=workers)
            if out_file is not None:
                atomic_write_text(out_file, df.to_csv(index=False, lineterminator="\n"))
        except DatakitError as exc:
            raise _fail(exc) from None
        out.print(predict_table(df, folder))
        counts = df["label"].value_counts().to_dict()
        unreadable = int(df["error"].notna().sum())
        out.print(f"per label: {counts or 'none'}; unreadable: {unreadable}"
                  + (f"\npredictions: {out_file}" if out_file is not None else ""), highlight=False)


__all__ = ["OnlineAugmenter", "predict_table", "register"]
