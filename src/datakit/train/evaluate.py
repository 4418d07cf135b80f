"""`datakit evaluate`: a trained model on the held-out test split, honestly (issue 6).

The test set is every kept `test` row of original origin (never an augmented, oversampled or
synthetic row). What is written:

| file | what |
|---|---|
| `OUT/predictions.csv` | image_id, path, actual, predicted, confidence (DVC's confusion plot reads actual/predicted) |
| `OUT/per_class.csv` | label, precision, recall, f1, support (every class of the model and of the test set) |
| `OUT/confusion.png` | the confusion matrix (rows actual, columns predicted; shade = share of the row) |
| `OUT/mistakes.json` | the most confident mistakes, with a thumbnail each under `OUT/mistakes/` |
| `OUT/learning_curve.csv` | fraction, n_train, accuracy, balanced_accuracy on the same test set |
| `OUT/cv.csv` | fold, n_train, n_eval, accuracy, balanced_accuracy (when the manifest has `fold`) |
| `OUT/manifest.parquet` | the test rows with `predicted` and `confidence` (null where unscored) |
| `OUT/failures.parquet` | test rows that could not be scored (unreadable, no vector), with the reason |
| `reports/evaluate.json` | accuracy, balanced_accuracy, macro_f1, n_test, per_class, confusion, curve and CV summaries |

Metrics are scikit-learn's: accuracy, balanced accuracy (mean recall over the classes present in
the test set), per-class precision/recall/F1 (zero_division=0) and macro F1 over the classes
present in the test labels or predictions.

Learning curve and k-fold points are refits, done the cheap way when possible (`evaluate.refit`):

* `probe` - a linear probe (`train.mode: linear_probe`, the model's own train params when it is
  one) re-fitted on the embeddings table (`INPUT/embeddings.parquet`) of a stratified, seeded
  subsample of the train rows: seconds on a CPU. For a fine-tuned model this measures how the
  *embedding backbone* scales with data, not the fine-tuned network itself.
* `retrain` - the model's own train params re-run per point (fine-tuning, no dvclive): honest
  for the fine-tuned model, and as costly as that many trainings (`retrain_epochs` caps it).
* `auto` - `probe` when an embeddings table is there (always for a linear-probe model), else
  `retrain`.

A fraction keeps that share of the original train images of every class (at least one) and the
derived rows (augmented, oversampled, SMOTE) whose parents were all kept; each point early-stops
on the val split like training did. k-fold CV (`split.folds`) trains on the kept non-test rows
of the other folds (derived rows follow their parents' fold) for a fixed number of epochs (the
model's best epoch, or the probe's epochs for a probe refit of a fine-tuned model), with no
early stopping, and scores the originals of the held-out fold; the summary is mean +- std
(population std, numpy's default) over folds.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from datakit.errors import DatakitError, ParamsError
from datakit.fsutil import atomic_write, atomic_write_text
from datakit.stage import ORIGINAL, StageContext, StageResult, as_rows, failure_rows, kept, origins
from datakit.train.data import OnlineAugment
from datakit.train.params import EvaluateParams, TrainParams, parse_train

PREDICTIONS = "predictions.csv"
PER_CLASS = "per_class.csv"
CONFUSION = "confusion.png"
MISTAKES = "mistakes.json"
LEARNING_CURVE = "learning_curve.csv"
CV = "cv.csv"

STAGE = "evaluate"

Log = Callable[[str], None]
AugmentFrom = Callable[[dict[str, Any]], OnlineAugment]  # model.pt's `augment` settings -> the augmenter


# ------------------------------------------------------------------------------- metrics


def metrics(actual: Sequence[str], predicted: Sequence[str], labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1, per-class precision/recall/F1/support and the
    confusion matrix (rows actual, columns predicted, in `labels` order: every model and test
    class; default the sorted union of both sequences)."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    a = [str(x) for x in actual]
    p = [str(x) for x in predicted]
    order = list(labels) if labels is not None else sorted(set(a) | set(p))
    if not a:
        return {"accuracy": None, "balanced_accuracy": None, "macro_f1": None, "n": 0,
                "per_class": [{"label": c, "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0} for c in order],
                "confusion": {"labels": order, "matrix": [[0] * len(order) for _ in order]}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true" is expected here
        bal = balanced_accuracy_score(a, p)
        prec, rec, f1, sup = precision_recall_fscore_support(a, p, labels=order, zero_division=0)
        macro = f1_score(a, p, average="macro", zero_division=0)
    cm = confusion_matrix(a, p, labels=order)
    return {
        "accuracy": float(accuracy_score(a, p)),
        "balanced_accuracy": float(bal),
        "macro_f1": float(macro),
        "n": len(a),
        "per_class": [
            {"label": c, "precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]), "support": int(sup[i])}
            for i, c in enumerate(order)
        ],
        "confusion": {"labels": order, "matrix": cm.astype(int).tolist()},
    }


# ------------------------------------------------------------------------------- drawing


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def confusion_png(labels: Sequence[str], matrix: Sequence[Sequence[int]], title: str = "") -> bytes:
    """The confusion matrix as a PNG (Pillow only): rows actual, columns predicted, each cell
    shaded by its share of the row and labelled with its count."""
    import io

    m = np.asarray(matrix, dtype=np.int64).reshape(len(labels), len(labels))
    n = len(labels)
    cell = 40 if n <= 12 else 28 if n <= 30 else 16
    font = _font(12 if cell >= 28 else 9)
    shown = [str(c) if len(str(c)) <= 24 else str(c)[:23] + "…" for c in labels]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max([int(measure.textlength(s, font=font)) for s in shown] + [40])
    margin_l, margin_t = text_w + 70, text_w + 60
    title = title or "confusion matrix"
    title_font = _font(14)
    W = max(margin_l + n * cell + 20, int(measure.textlength(title, font=title_font)) + 20)
    H = margin_t + n * cell + 24
    im = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(im)
    draw.text((10, 8), title, fill="black", font=title_font)
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros(m.shape, dtype=float), where=rows > 0)
    for i in range(n):
        for j in range(n):
            x0, y0 = margin_l + j * cell, margin_t + i * cell
            s = float(share[i, j])
            colour = (int(255 - 215 * s), int(255 - 165 * s), int(255 - 60 * s))
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=colour, outline=(210, 210, 210))
            if cell >= 28 and m[i, j]:
                txt = str(int(m[i, j]))
                tw = measure.textlength(txt, font=font)
                draw.text((x0 + (cell - tw) / 2, y0 + cell / 2 - 7), txt, fill="white" if s > 0.55 else "black", font=font)
    for i, s in enumerate(shown):  # row labels (actual)
        tw = measure.textlength(s, font=font)
        draw.text((margin_l - 8 - tw, margin_t + i * cell + cell / 2 - 7), s, fill="black", font=font)
    for j, s in enumerate(shown):  # column labels (predicted), rotated
        tw = int(measure.textlength(s, font=font)) + 4
        strip = Image.new("RGB", (tw, 16), "white")
        ImageDraw.Draw(strip).text((2, 1), s, fill="black", font=font)
        rot = strip.rotate(90, expand=True)
        im.paste(rot, (margin_l + j * cell + (cell - rot.width) // 2, margin_t - 8 - rot.height))
    draw.text((margin_l, H - 18), "columns: predicted", fill=(90, 90, 90), font=font)
    draw.text((8, margin_t - 20), "rows: actual", fill=(90, 90, 90), font=font)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _write_bytes(path: Path, data: bytes) -> None:
    def _w(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    atomic_write(path, _w, durable=False)


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame.to_csv(index=False, lineterminator="\n"), durable=False)


# ---------------------------------------------------------------------------------- run


class _Scorer:
    """Class probabilities for manifest rows from a loaded model (vectors or images)."""

    def __init__(self, lm: Any, root: Path, params: EvaluateParams, embeddings: Any, cache_dir: Path | None,
                 *, images: bool = True) -> None:
        self.lm, self.root, self.params, self.embeddings, self.cache_dir = lm, root, params, embeddings, cache_dir
        self.images = images  # False: rows without a vector stay unscored (probe refits)

    def probs(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        from datakit.train.data import PixelCache, has_image
        from datakit.train.predict import image_probs, vector_probs

        n = len(rows)
        probs = np.full((n, len(self.lm.labels)), np.nan, dtype=np.float32)
        ok = np.zeros(n, dtype=bool)
        todo = np.ones(n, dtype=bool)
        if self.lm.mode == "linear_probe" and self.embeddings is not None:
            X, found = self.embeddings.take(rows["image_id"].astype(str).tolist())
            if found.any():
                probs[found] = vector_probs(self.lm, X)
                ok[found] = True
            todo = ~found
        todo &= has_image(rows).to_numpy()
        if todo.any() and self.images:
            sub = rows[todo]
            cache = None
            if self.lm.mode == "finetune" and self.cache_dir is not None:
                from datakit.models import Preprocess

                pre = Preprocess.from_dict(self.lm.payload["preprocess"])
                cache = PixelCache(self.cache_dir, int(self.lm.payload.get("side") or pre.resize), pre.interpolation)
                cache.ensure(self.root, sub["image_id"].astype(str).tolist(), sub["path"].astype(str).tolist(),
                             num_workers=self.params.num_workers)
            p, good = image_probs(self.lm, self.root, sub["image_id"].astype(str).tolist(), sub["path"].astype(str).tolist(),
                                  device=self.params.device, batch_size=self.params.batch_size,
                                  num_workers=self.params.num_workers, cache=cache)
            idx = np.flatnonzero(todo)
            probs[idx[good]] = p[good]
            ok[idx[good]] = True
        return probs, ok


def _predicted(probs: np.ndarray, labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    idx = probs.argmax(axis=1)
    return [str(labels[i]) for i in idx], probs.max(axis=1)


def default_data(model_dir: Path) -> Path:
    """The dataset folder a model was trained on: model.pt records it relative to the project
    root, which is found from the model folder (not the working directory), so the default holds
    wherever the command runs."""
    from datakit.manifest import find_project_root
    from datakit.train.predict import load_model

    recorded = load_model(model_dir).payload.get("input")
    folder = find_project_root(Path(model_dir)) / recorded if recorded else None
    if folder is None or not folder.is_dir():
        raise DatakitError(f"{model_dir}/model.pt does not name a dataset folder that exists here "
                           f"({recorded!r}); give --data INPUT")
    return folder


def run(manifest: pd.DataFrame, params: EvaluateParams, ctx: StageContext, *, model: Path,
        augment_from: AugmentFrom | None = None) -> StageResult:
    """Evaluate `model` (a folder holding model.pt) on the test split of `manifest` (read from
    `ctx.input`, whose embeddings table refits use); write the OUT files (see the module
    docstring) into `ctx.out`. `augment_from` rebuilds the online augmentation a retrain refit
    uses from the settings model.pt recorded (None: refits without it). The result's manifest is
    the test rows with `predicted`/`confidence`; failures the test rows that could not be scored."""
    from datakit.train.data import load_embeddings, split_rows
    from datakit.train.loop import cache_folder, embeddings_path
    from datakit.train.predict import load_model

    if ctx.out is None:
        raise DatakitError("evaluate: give it an output folder (--out)")
    t0 = time.monotonic()
    out_dir = Path(ctx.out)
    log = ctx.progress.note
    root = ctx.root
    data_dir = Path(ctx.input) if ctx.input is not None else out_dir
    df = manifest
    lm = load_model(model)
    tparams = parse_train(lm.params or {"mode": lm.mode}, prefix=f"{lm.path} params")
    emb_file = embeddings_path(tparams, data_dir, ctx.embeddings)
    if not emb_file.exists() and tparams.embeddings and (data_dir / "embeddings.parquet").exists():
        emb_file = data_dir / "embeddings.parquet"
    embeddings = load_embeddings(emb_file) if emb_file.exists() else None
    if lm.mode == "linear_probe" and embeddings is None and params.refit == "probe":
        raise DatakitError(f"evaluate.refit probe needs the embeddings table {emb_file}")
    cache_dir = cache_folder(tparams, root) if tparams.cache else None
    scorer = _Scorer(lm, root, params, embeddings, cache_dir)

    test = split_rows(df, "test", originals_only=True).reset_index(drop=True)
    if test.empty:
        raise DatakitError(f"{data_dir}: no kept original rows in the test split to evaluate on")
    probs, ok = scorer.probs(test)
    scored = test[ok].reset_index(drop=True)
    predicted, confidence = _predicted(probs[ok], lm.labels)
    actual = scored["label"].astype(str).tolist()
    order = list(lm.labels) + sorted(set(actual) - set(lm.labels))
    m = metrics(actual, predicted, order)
    log(f"test: {len(scored)} images scored ({int((~ok).sum())} unreadable), accuracy {m['accuracy']:.4f}, "
        f"balanced accuracy {m['balanced_accuracy']:.4f}")

    out_dir.mkdir(parents=True, exist_ok=True)
    preds = pd.DataFrame({"image_id": scored["image_id"].astype(str), "path": scored["path"].astype(str),
                          "actual": actual, "predicted": predicted, "confidence": np.round(confidence.astype(float), 6)})
    _write_csv(out_dir / PREDICTIONS, preds)
    _write_csv(out_dir / PER_CLASS, pd.DataFrame(m["per_class"], columns=["label", "precision", "recall", "f1", "support"]))
    _write_bytes(out_dir / CONFUSION, confusion_png(order, m["confusion"]["matrix"],
                                                    f"{lm.payload['backbone']} ({lm.mode}): test accuracy "
                                                    f"{m['accuracy']:.3f}, balanced {m['balanced_accuracy']:.3f}"))
    mistakes = _mistakes(preds, root, out_dir, params)

    curve = _learning_curve(lm, df, test[ok].reset_index(drop=True), params, tparams, root=root, embeddings=embeddings,
                            out_dir=out_dir, log=log, augment_from=augment_from)
    cv = _cross_validation(lm, df, params, tparams, root=root, embeddings=embeddings, out_dir=out_dir, log=log,
                           augment_from=augment_from)
    report = {
        "accuracy": m["accuracy"],
        "balanced_accuracy": m["balanced_accuracy"],
        "macro_f1": m["macro_f1"],
        "n_test": len(scored),
        "n_unscored": int((~ok).sum()),
        "per_class": {r["label"]: {k: r[k] for k in ("precision", "recall", "f1", "support")} for r in m["per_class"]},
        "confusion": m["confusion"],
        "n_mistakes": mistakes,
        "learning_curve": curve,
        "cv": cv,
        "model": {"mode": lm.mode, "backbone": lm.payload["backbone"], "best_epoch": lm.payload.get("best_epoch"),
                  "labels": lm.labels, "path": str(lm.path)},
        "params": params.model_dump(),
        "seconds": round(time.monotonic() - t0, 3),
    }
    labelled = test.assign(predicted=None, confidence=np.nan)
    labelled.loc[ok, "predicted"] = predicted
    labelled.loc[ok, "confidence"] = np.round(confidence.astype(float), 6)
    return StageResult(manifest=labelled, report=report, failures=_unscored(test, ~ok, root),
                       files={name: out_dir / name for name in (PREDICTIONS, PER_CLASS, CONFUSION, MISTAKES)},
                       extra={"model": lm})


def _unscored(test: pd.DataFrame, mask: np.ndarray, root: Path) -> pd.DataFrame:
    """Failures rows for the test rows that got no prediction, with why: the image could not be
    read (its reason code) or, for a probe without an image to fall back on, no vector."""
    from datakit.train.data import has_image, read_image

    if not mask.any():
        return as_rows([])
    rows = test[mask]
    reasons: list[str] = []
    details: list[str | None] = []
    for path, image in zip(rows["path"], has_image(rows), strict=True):
        why = read_image(root, str(path))[1] if image else None
        reason, _, detail = (why or ("decode_error" if image else "no_vector")).partition(":")
        reasons.append(reason)
        details.append(detail.strip() or None)
    return failure_rows(test, mask, STAGE, reasons, details)


def _mistakes(preds: pd.DataFrame, root: Path, out_dir: Path, params: EvaluateParams) -> int:
    from datakit.train.data import read_image

    wrong = preds[preds["actual"] != preds["predicted"]].sort_values(["confidence", "image_id"], ascending=[False, True])
    listed = []
    thumbs = out_dir / "mistakes"
    for rank, row in enumerate(wrong.head(params.top_mistakes).itertuples(index=False), 1):
        entry: dict[str, Any] = {"rank": rank, "image_id": row.image_id, "path": row.path, "actual": row.actual,
                                 "predicted": row.predicted, "confidence": float(row.confidence), "thumbnail": None}
        if params.thumbnails:
            im, _ = read_image(root, row.path)
            if im is not None:
                import io

                im = im.convert("RGB")
                im.thumbnail((params.thumb_size, params.thumb_size))
                buf = io.BytesIO()
                im.save(buf, "JPEG", quality=85)
                name = f"{rank:03d}-{row.image_id[:12]}.jpg"
                _write_bytes(thumbs / name, buf.getvalue())
                entry["thumbnail"] = f"mistakes/{name}"
        listed.append(entry)
    atomic_write_text(out_dir / MISTAKES, json.dumps(
        {"n_mistakes": len(wrong), "shown": len(listed), "order": "confidence, highest first", "mistakes": listed},
        indent=2, ensure_ascii=False) + "\n", durable=False)
    return len(wrong)


def _method(params: EvaluateParams, lm: Any, embeddings: Any) -> str:
    if lm.mode == "linear_probe" or params.refit == "probe":
        if embeddings is None:
            raise ParamsError("evaluate.refit: a probe refit needs an embeddings table (INPUT/embeddings.parquet); "
                              "set refit: retrain or run `datakit embed`")
        return "probe"
    if params.refit == "retrain":
        return "retrain"
    return "probe" if embeddings is not None else "retrain"


def _refit_params(method: str, lm: Any, tparams: TrainParams, params: EvaluateParams) -> TrainParams:
    if method == "probe" and lm.mode != "linear_probe":
        return parse_train({"mode": "linear_probe", "seed": tparams.seed, "class_weights": "none", "dvclive": False,
                            "device": params.device, "patience": tparams.patience})
    changes: dict[str, Any] = {"dvclive": False}
    if method == "retrain" and params.retrain_epochs:
        changes["epochs"] = params.retrain_epochs
    return tparams.model_copy(update=changes)


class _Refit:
    """Fit a fresh model on some train rows and score other rows with it (curve and CV points)."""

    def __init__(self, method: str, lm: Any, tparams: TrainParams, params: EvaluateParams, *, root: Path,
                 embeddings: Any, augment_from: AugmentFrom | None = None) -> None:
        from datakit.train.data import PixelCache
        from datakit.train.loop import cache_folder, cache_key

        self.method, self.lm, self.root, self.embeddings, self.params = method, lm, root, embeddings, params
        self.p = _refit_params(method, lm, tparams, params)
        self.weights = lm.payload.get("class_weights")
        aug = lm.payload.get("augment")
        self.augment = augment_from(aug) if aug and augment_from is not None else None
        self.cache = (PixelCache(cache_folder(self.p, root), *cache_key(self.p))
                      if method == "retrain" and self.p.cache else None)

    def score(self, train: pd.DataFrame, val: pd.DataFrame, evaluate_on: pd.DataFrame,
              fixed_epochs: int | None = None) -> tuple[int, dict[str, Any]]:
        from datakit.train.loop import fit
        from datakit.train.predict import LoadedModel

        res = fit(train, val, list(self.lm.labels), self.p, root=self.root, augment=self.augment,
                  embeddings=self.embeddings if self.method == "probe" else None,
                  class_weights=self.weights, cache=self.cache, fixed_epochs=fixed_epochs)
        fake = LoadedModel({"mode": self.p.mode, "labels": self.lm.labels, "preprocess": res.preprocess,
                            "side": res.side, "embed_meta": None, "backbone": self.p.backbone}, res.model, self.lm.path)
        scorer = _Scorer(fake, self.root, self.params, self.embeddings, self.cache.dir.parent if self.cache else None,
                         images=self.method == "retrain")
        probs, ok = scorer.probs(evaluate_on)
        predicted, _ = _predicted(probs[ok], self.lm.labels)
        m = metrics(evaluate_on["label"].astype(str)[ok].tolist(), predicted)
        return res.n_train, {"accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"], "n_eval": int(ok.sum())}


def _learning_curve(lm: Any, df: pd.DataFrame, test: pd.DataFrame, params: EvaluateParams, tparams: TrainParams, *,
                    root: Path, embeddings: Any, out_dir: Path, log: Log | None,
                    augment_from: AugmentFrom | None = None) -> dict[str, Any] | None:
    from datakit.train.data import split_rows, subsample

    if not params.learning_curve:
        return None
    method = _method(params, lm, embeddings)
    refit = _Refit(method, lm, tparams, params, root=root, embeddings=embeddings, augment_from=augment_from)
    train = split_rows(df, "train", originals_only=False)
    val = split_rows(df, "val", originals_only=True)
    points = []
    for frac in params.learning_curve:
        sub = subsample(train, frac, params.seed)
        n_train, s = refit.score(sub, val, test)
        points.append({"fraction": frac, "n_train": n_train, "accuracy": s["accuracy"],
                       "balanced_accuracy": s["balanced_accuracy"]})
        if log:
            log(f"learning curve ({method}): fraction {frac:g}, {n_train} train rows -> accuracy "
                f"{_f(s['accuracy'])}, balanced {_f(s['balanced_accuracy'])}")
    _write_csv(out_dir / LEARNING_CURVE, pd.DataFrame(points, columns=["fraction", "n_train", "accuracy", "balanced_accuracy"]))
    return {"method": method, "points": points}


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _cross_validation(lm: Any, df: pd.DataFrame, params: EvaluateParams, tparams: TrainParams, *, root: Path,
                      embeddings: Any, out_dir: Path, log: Log | None,
                      augment_from: AugmentFrom | None = None) -> dict[str, Any] | None:
    if not params.cv or "fold" not in df.columns:
        return None
    rows = df[kept(df) & df["split"].ne("test") & df["fold"].notna()]
    folds = sorted({int(f) for f in rows["fold"]})
    if len(folds) < 2:
        return None
    method = _method(params, lm, embeddings)
    refit = _Refit(method, lm, tparams, params, root=root, embeddings=embeddings, augment_from=augment_from)
    if method == "probe" and lm.mode != "linear_probe":
        epochs = refit.p.epochs
    elif method == "retrain" and params.retrain_epochs:
        epochs = params.retrain_epochs
    else:
        epochs = int(lm.payload.get("best_epoch") or refit.p.epochs)
    fold_of = rows["fold"].astype(int)
    points = []
    for k in folds:
        tr = rows[fold_of != k]
        ev = rows[(fold_of == k) & origins(rows).eq(ORIGINAL)].reset_index(drop=True)
        n_train, s = refit.score(tr, tr.iloc[0:0], ev, fixed_epochs=epochs)
        points.append({"fold": k, "n_train": n_train, "n_eval": s["n_eval"], "accuracy": s["accuracy"],
                       "balanced_accuracy": s["balanced_accuracy"]})
        if log:
            log(f"cv ({method}): fold {k} -> accuracy {_f(s['accuracy'])}, balanced {_f(s['balanced_accuracy'])}")
    _write_csv(out_dir / CV, pd.DataFrame(points, columns=["fold", "n_train", "n_eval", "accuracy", "balanced_accuracy"]))
    acc = np.array([p["accuracy"] for p in points if p["accuracy"] is not None], dtype=float)
    bal = np.array([p["balanced_accuracy"] for p in points if p["balanced_accuracy"] is not None], dtype=float)
    return {
        "method": method, "folds": len(points), "epochs": epochs,
        "accuracy_mean": float(acc.mean()) if len(acc) else None, "accuracy_std": float(acc.std()) if len(acc) else None,
        "balanced_accuracy_mean": float(bal.mean()) if len(bal) else None,
        "balanced_accuracy_std": float(bal.std()) if len(bal) else None,
        "points": points,
    }


__all__ = ["confusion_png", "default_data", "metrics", "run"]
