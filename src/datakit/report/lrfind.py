"""The report's "Learning-rate range test" section: the loss against the learning rate that
`datakit train --lr-find` swept (log x axis), the suggested lr and how it was chosen.

Shown only when a sweep's `lr_find.csv` is found: in `<reports>/lr_find/` (where the README's
command writes it: a folder of its own, versioned with the reports, not the train stage's DVC
output) or else in the train folder. `lr_find.json` beside it supplies the suggestion.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from datakit.errors import DatakitError
from datakit.report.charts import svg_line_chart
from datakit.report.parts import RunFiles, card_row, esc

CSV_FILE = "lr_find.csv"
JSON_FILE = "lr_find.json"
FOLDER = "lr_find"  # under the reports folder
COLUMNS = ("lr", "loss", "smoothed_loss")


def find_sweep(run: RunFiles) -> Path | None:
    """The sweep's lr_find.csv: `<reports>/lr_find/` first, then the train folder."""
    if run.reports_dir is not None and (run.reports_dir / FOLDER / CSV_FILE).is_file():
        return run.reports_dir / FOLDER / CSV_FILE
    return run.file("train", CSV_FILE)


def _read(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    try:
        frame = pd.read_csv(path)
        meta_path = path.with_name(JSON_FILE)
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise DatakitError(f"{path}: cannot be read for the report: {exc}") from exc
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DatakitError(f"{path}: not an LR range test (no {', '.join(missing)} column; "
                           f"expected step, lr, loss, smoothed_loss as `datakit train --lr-find` writes)")
    return frame, meta if isinstance(meta, dict) else {}


def _lr(value: Any) -> str:
    return "–" if not isinstance(value, (int, float)) else f"{value:.2g}"


def lr_find_section(run: RunFiles) -> tuple[str, dict[str, Any]] | None:
    path = find_sweep(run)
    if path is None:
        return None
    frame, meta = _read(path)
    frame = frame[frame["lr"].astype(float) > 0]
    lr = frame["lr"].astype(float).tolist()
    smoothed = frame["smoothed_loss"].astype(float).tolist()
    loss = frame["loss"].astype(float).tolist()
    finite = [v for v in smoothed if math.isfinite(v)]
    suggested = meta.get("suggested_lr")
    parts = ['<h2 id="lr_find">Learning-rate range test</h2>',
             f'<p class="sub">{esc(path)}: the training loss while the learning rate grows geometrically '
             "(<code>datakit train --lr-find</code>; a fresh model, nothing saved)</p>"]
    parts.append(card_row([("suggested lr", _lr(suggested)), ("method", meta.get("method") or "–"),
                           ("batches", len(frame)), ("lr swept to", _lr(max(lr) if lr else None)),
                           ("stopped early", "yes" if meta.get("stopped_early") else "no")]))
    if finite:
        every = [v for v in finite + loss if math.isfinite(v)]
        low, first = min(every), finite[0]
        top = max(first, min(finite)) * 1.15  # a diverging tail is drawn on the top edge
        same = meta.get("beta") == 0 or smoothed == loss  # the probe's full-batch loss is not smoothed
        series = ([("loss (full batch)", lr, loss)] if same
                  else [("smoothed loss", lr, smoothed), ("batch loss", lr, loss)])
        chart = svg_line_chart("Loss vs learning rate", series, x_label="learning rate (log scale)",
                               y_label="training loss", y_range=(max(0.0, low - 0.05 * (top - low)), top), log_x=True,
                               marks=[("suggested", float(suggested))] if isinstance(suggested, (int, float)) else [])
        parts.append(f'<div class="charts" id="lr-find-curve">{chart}</div>')
    said = [esc(meta["why"])] if meta.get("why") else []
    if isinstance(suggested, (int, float)) and meta.get("hint"):
        said.append(f"to use it: <code>{esc(meta['hint'])}</code>")
    if meta.get("stop_reason"):
        said.append(f"stopped: {esc(meta['stop_reason'])}")
    if said:
        parts.append(f'<p id="lr-find-hint">{"; ".join(said)}</p>')
    return "\n".join(parts), {"path": str(path), "steps": len(frame), "suggested_lr": suggested,
                              "method": meta.get("method")}


def with_lr_find(built: dict[str, Any], run: RunFiles) -> dict[str, Any]:
    """The page's sections with this one after "training" when a sweep was found (an optional
    diagnostic: never listed as absent)."""
    section = lr_find_section(run)
    if section is None:
        return built
    out: dict[str, Any] = {}
    for key, value in built.items():
        out[key] = value
        if key == "training":
            out["lr_find"] = section
    out.setdefault("lr_find", section)
    return out


__all__ = ["find_sweep", "lr_find_section", "with_lr_find"]
