"""The pipeline's headline figures as one flat JSON of named scalars: what DVC shows as metrics.

Each stage's own report (`reports/<stage>.json`) keeps every figure, nested as the stage made it;
DVC cannot show dicts and lists, and a table of every key is ~380 columns wide. `datakit report`
therefore also writes `reports/metrics.json`: eleven scalars, in pipeline order, named so that a
column of `dvc metrics show` / `dvc exp show` reads on its own. A stage that did not run leaves its
keys out (no nulls: DVC shows "-").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

METRICS_FILE = "metrics.json"


def _get(report: dict[str, Any] | None, *keys: str) -> Any:
    value: Any = report
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


# (metric name, stage report, path inside it, digits to round to (None: an integer count)):
# images scraped, duplicates removed, estimated share of wrong labels and images flagged, images
# per split, cross-split leaks, and the test set's accuracy, balanced accuracy and macro F1.
HEADLINE: list[tuple[str, str, tuple[str, ...], int | None]] = [
    ("scraped", "scrape", ("stored",), None),
    ("duplicates", "dedup", ("removed",), None),
    ("label_noise", "suspects", ("estimated_noise",), 4),
    ("flagged", "suspects", ("flagged",), None),
    ("n_train", "split", ("per_split", "train"), None),
    ("n_val", "split", ("per_split", "val"), None),
    ("n_test", "split", ("per_split", "test"), None),
    ("leaks", "audit", ("leaks",), None),
    ("accuracy", "evaluate", ("accuracy",), 4),
    ("balanced_accuracy", "evaluate", ("balanced_accuracy",), 4),
    ("macro_f1", "evaluate", ("macro_f1",), 4),
]


def headline(report_of: Callable[[str], dict[str, Any] | None]) -> dict[str, int | float]:
    """The headline scalars from the stage reports `report_of(stage)` returns (None: not run)."""
    out: dict[str, int | float] = {}
    for name, stage, path, digits in HEADLINE:
        value = _get(report_of(stage), *path)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            continue
        out[name] = int(value) if digits is None else round(float(value), digits)
    return out
