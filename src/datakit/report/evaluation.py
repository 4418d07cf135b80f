"""The learning sections of the page: training curves, evaluation (per class, confusion matrix,
learning curve, cross-validation, the most confident mistakes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from datakit.report.charts import svg_line_chart
from datakit.report.parts import RunFiles, Thumbs, card_row, esc, fmt_num, html_table


def training_section(run: RunFiles) -> tuple[str, dict[str, Any]] | None:
    hist = run.table("train", "history.csv")
    rep = run.report("train")
    if hist is None and rep is None:
        return None
    parts = ['<h2 id="training">Training</h2>']
    if rep:
        scalars = [(k, v) for k, v in rep.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)][:10]
        if scalars:
            parts.append(card_row(scalars))
    charts = []
    if hist is not None and "epoch" in hist.columns and len(hist):
        ep = hist["epoch"].astype(float).tolist()
        losses = [(c, ep, hist[c].astype(float).tolist()) for c in ("train_loss", "val_loss") if c in hist.columns]
        accs = [(c, ep, hist[c].astype(float).tolist()) for c in hist.columns
                if c.startswith("val_") and "acc" in c]
        if losses:
            charts.append(svg_line_chart("Loss per epoch", losses, x_label="epoch", y_label="loss"))
        if accs:
            charts.append(svg_line_chart("Validation accuracy per epoch", accs, x_label="epoch", y_label="accuracy",
                                         y_range=(0.0, 1.0)))
    if charts:
        parts.append(f'<div class="charts" id="training-curves">{"".join(charts)}</div>')
    elif hist is None:
        parts.append(f'<p class="meta">no {run.where("train", "history.csv")}</p>')
    return "\n".join(parts), {"epochs": 0 if hist is None else len(hist)}


def confusion(predictions: pd.DataFrame, labels: Sequence[str] | None = None) -> tuple[list[str], list[list[int]]]:
    """Labels and counts (rows actual, columns predicted) from a predictions table."""
    actual, predicted = predictions["actual"].astype(str), predictions["predicted"].astype(str)
    order = list(labels or [])
    order += sorted((set(actual) | set(predicted)) - set(order))
    index = {k: i for i, k in enumerate(order)}
    matrix = [[0] * len(order) for _ in order]
    for a, p in zip(actual, predicted, strict=True):
        matrix[index[a]][index[p]] += 1
    return order, matrix


def _confusion_html(labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> str:
    head = "".join(f'<th class="rot">{esc(k)}</th>' for k in labels)
    rows = []
    for i, (name, row) in enumerate(zip(labels, matrix, strict=True)):
        n = sum(row)
        cells = []
        for j, v in enumerate(row):
            share = v / n if n else 0.0
            color = "#fff" if share > 0.55 else "#222"
            cells.append(f'<td class="{"diag" if i == j else ""}" style="background:rgba(26,95,180,{share:.3f});color:{color}" '
                         f'title="{esc(name)} → {esc(labels[j])}: {v} ({share:.0%} of row)">{v}</td>')
        recall = f"{matrix[i][i] / n:.2f}" if n else "–"
        rows.append(f"<tr><th>{esc(name)}</th>{''.join(cells)}<td>{n}</td><td>{recall}</td></tr>")
    return (f'<table class="cm" id="confusion"><thead><tr><th>actual ↓ / predicted →</th>{head}'
            f'<th class="rot">total</th><th class="rot">recall</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def evaluation_section(run: RunFiles, thumbs: Thumbs, max_mistakes: int) -> tuple[str, dict[str, Any]] | None:
    rep = run.report("evaluate")
    per_class = run.table("evaluate", "per_class.csv")
    preds = run.table("evaluate", "predictions.csv")
    curve = run.table("evaluate", "learning_curve.csv")
    cv = run.table("evaluate", "cv.csv")
    mistakes = run.json_file("evaluate", "mistakes.json")
    if all(x is None for x in (rep, per_class, preds, curve, cv, mistakes)):
        return None
    data: dict[str, Any] = {}
    parts = ['<h2 id="evaluation">Evaluation (test split)</h2>']
    if rep:
        parts.append(card_row([(k, rep.get(k)) for k in ("accuracy", "balanced_accuracy", "macro_f1", "n_test") if k in rep]))
        model = rep.get("model") or {}
        if model:
            parts.append(f'<p class="meta">model: {esc(model.get("backbone"))} ({esc(model.get("mode"))}), '
                         f'best epoch {esc(model.get("best_epoch"))}</p>')
    if per_class is None and rep and isinstance(rep.get("per_class"), dict):
        per_class = pd.DataFrame([{"label": k, **v} for k, v in rep["per_class"].items()])
    if per_class is not None and len(per_class):
        cols = [c for c in ("precision", "recall", "f1", "support") if c in per_class.columns]
        rows = [[r["label"], *(r[c] for c in cols)] for r in per_class.to_dict("records")]
        parts += ["<h3>Per class</h3>", html_table(["label", *cols], rows, table_id="per-class")]
    labels, matrix = None, None
    if preds is not None and {"actual", "predicted"} <= set(preds.columns):
        order = (rep or {}).get("confusion", {}).get("labels") if isinstance((rep or {}).get("confusion"), dict) else None
        labels, matrix = confusion(preds, order)
    elif rep and isinstance(rep.get("confusion"), dict) and rep["confusion"].get("matrix"):
        labels, matrix = rep["confusion"]["labels"], rep["confusion"]["matrix"]
    if labels and matrix:
        data["confusion"] = {"labels": labels, "matrix": matrix}
        parts += ["<h3>Confusion matrix</h3>",
                  '<p class="sub">rows: actual class, columns: predicted; shade: share of the row; framed: correct.</p>',
                  _confusion_html(labels, matrix)]
    charts = []
    if curve is not None and len(curve):
        x = "n_train" if "n_train" in curve.columns else "fraction"
        series = [(c, curve[x].astype(float).tolist(), curve[c].astype(float).tolist())
                  for c in ("accuracy", "balanced_accuracy") if c in curve.columns]
        charts.append(svg_line_chart("Learning curve (test set)", series, x_label=f"{x.replace('_', ' ')}",
                                     y_label="score", y_range=(0.0, 1.0)))
        data["learning_curve_points"] = len(curve)
    if charts:
        lc = (rep or {}).get("learning_curve")
        method = lc.get("method") if isinstance(lc, dict) else None
        how = {"probe": "each point is a linear probe refitted on the embeddings (fast; it measures the embedding "
                        "backbone, not the fine-tuned network)",
               "retrain": "each point is a re-training with the model's own train params"}.get(str(method), "")
        parts += ['<h3>Learning curve</h3>',
                  f'<p class="sub">accuracy on the fixed test set vs the share of train data used{"; " + esc(how) if how else ""}.</p>',
                  f'<div class="charts" id="learning-curve">{"".join(charts)}</div>']
    if cv is not None and len(cv):
        cols = [c for c in ("n_train", "n_eval", "accuracy", "balanced_accuracy") if c in cv.columns]
        rows = [[f"fold {r.get('fold', i)}", *(r[c] for c in cols)] for i, r in enumerate(cv.to_dict("records"))]
        parts += ["<h3>Cross-validation</h3>", html_table(["fold", *cols], rows, table_id="cv")]
    listed = mistakes.get("mistakes", []) if isinstance(mistakes, dict) else (mistakes or [])
    if listed:
        listed = sorted(listed, key=lambda m: -float(m.get("confidence") or 0))[:max_mistakes]
        folder = run.stages.get("evaluate")
        figs = []
        for m in listed:
            fb = folder / m["thumbnail"] if folder is not None and isinstance(m.get("thumbnail"), str) else None
            cap = f"<b>{esc(m.get('actual'))}</b> → {esc(m.get('predicted'))}<br>{fmt_num(float(m.get('confidence') or 0), 2)}"
            figs.append(thumbs.figure(m.get("path"), cap, "wrong", fallback=fb))
        total = mistakes.get("n_mistakes", len(listed)) if isinstance(mistakes, dict) else len(mistakes)
        parts += [f"<h3>Most confident mistakes ({len(listed)} of {total})</h3>",
                  '<p class="sub">actual → predicted, confidence.</p>', f'<div class="row" id="mistakes">{"".join(figs)}</div>']
        data["mistakes_shown"] = len(listed)
    return "\n".join(parts), data
