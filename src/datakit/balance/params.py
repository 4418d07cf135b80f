"""`balance:` in params.yaml, and the one reading of `balance.target`.

`normalise_target` turns every allowed form of the target, through imbalanced-learn's own
`check_sampling_strategy`, into the final per-class count; every later step of the stage reads
only that dict. `class_weights` are sklearn's "balanced" weights for the trainer.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from imblearn.utils import check_sampling_strategy
from pydantic import BaseModel, ConfigDict, Field, field_validator

from datakit.errors import ParamsError
from datakit.params import parse_section

KEY = "balance"
TARGET_FORMS = (
    "'auto', 'minority', 'not minority', 'not majority', 'all' (over-sampling), "
    "'majority', 'not minority', 'not majority', 'all', 'auto' (under-sampling), "
    "a ratio 0 < r <= 1 (minority / majority after resampling), "
    "an int n (every class brought to n), or a {label: count} mapping"
)


class BalanceParams(BaseModel):
    """params.yaml `balance:`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Literal["none", "oversample", "undersample", "class_weights", "smote_pixels", "smote"] = Field(
        "class_weights", description="how the train split is balanced"
    )
    # int before float so that `200` stays a count and `0.5` a ratio (pydantic smart union).
    target: str | int | float | dict[str, int] = Field(
        "auto", description="imblearn sampling_strategy: 'auto', a ratio, an int count or {label: count}"
    )
    seed: int = 0
    pixels_size: int = Field(32, ge=4, le=512, description="side of the images smote_pixels interpolates")
    k_neighbors: int = Field(5, ge=1, description="neighbours SMOTE interpolates towards")
    embeddings: str | None = Field(None, description="smote: an embed folder or embeddings.parquet (default: INPUT/embeddings.parquet)")

    @field_validator("target")
    @classmethod
    def _target_shape(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError(f"expected one of {TARGET_FORMS}")
        if isinstance(v, float) and not 0.0 < v <= 1.0:
            raise ValueError(f"a ratio must be in (0, 1] (allowed forms: {TARGET_FORMS})")
        if isinstance(v, int) and v < 1:
            raise ValueError(f"a count must be at least 1 (allowed forms: {TARGET_FORMS})")
        if isinstance(v, dict) and any(n < 0 for n in v.values()):
            raise ValueError("per-class counts must be >= 0")
        return v


def parse_balance(data: dict[str, Any] | None, prefix: str = KEY) -> BalanceParams:
    """Validate a `balance:` mapping; any error is a ParamsError naming `balance.<key>`."""
    return parse_section(BalanceParams, data, prefix, forms={"target": f"expected one of {TARGET_FORMS}"})


def normalise_target(
    target: str | int | float | dict[str, int],
    counts: dict[str, int],
    kind: Literal["over", "under"],
) -> dict[str, int]:
    """The per-class count after resampling, for every class in `counts`.

    Strings, a binary float ratio and dicts go straight through imblearn's
    `check_sampling_strategy` (which answers "samples to add" for over-sampling and "samples to
    keep" for under-sampling). A float ratio with more than two classes - which imblearn only
    accepts as a dict - is turned into one: over-sampling brings every class up to
    `int(ratio * majority)`, under-sampling cuts every class down to `int(minority / ratio)`.
    An int `n` means every class up to n (over) or down to n (under). Errors are ParamsError
    naming `balance.target`.
    """
    counts = {str(k): int(v) for k, v in counts.items() if int(v) > 0}
    if not counts:
        return {}
    if kind not in ("over", "under"):
        raise ValueError(f"kind must be 'over' or 'under' (got {kind!r})")
    strategy: Any = target
    if isinstance(target, bool):
        raise ParamsError(f"{KEY}.target: expected one of {TARGET_FORMS} (got {target!r})")
    if isinstance(target, int):
        if target < 1:
            raise ParamsError(f"{KEY}.target: a count must be at least 1 (got {target!r})")
        if kind == "over":
            strategy = {c: max(n, target) for c, n in counts.items()}
        else:
            strategy = {c: min(n, target) for c, n in counts.items()}
    elif isinstance(target, float):
        if not 0.0 < target <= 1.0:
            raise ParamsError(
                f"{KEY}.target: a ratio must be in (0, 1] (got {target!r}; allowed forms: {TARGET_FORMS})"
            )
        if len(counts) > 2:
            if kind == "over":
                goal = int(target * max(counts.values()))
                strategy = {c: max(n, goal) for c, n in counts.items()}
            else:
                goal = int(min(counts.values()) / target)
                strategy = {c: min(n, goal) for c, n in counts.items()}
    elif isinstance(target, dict):
        strategy = {str(k): v for k, v in target.items()}
        unknown = sorted(set(strategy) - set(counts))
        if unknown:
            raise ParamsError(
                f"{KEY}.target: unknown class(es) {', '.join(map(repr, unknown))} "
                f"(train classes: {', '.join(sorted(counts))})"
            )
        bad = {
            k: v for k, v in strategy.items() if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0
        }
        if bad:
            raise ParamsError(f"{KEY}.target: per-class counts must be whole numbers >= 0 (got {bad!r})")
    elif not isinstance(target, str):
        raise ParamsError(f"{KEY}.target: expected one of {TARGET_FORMS} (got {target!r})")

    labels = sorted(counts)
    y = np.repeat(np.array(labels, dtype=object), [counts[c] for c in labels])
    if len(labels) < 2:
        return dict(counts)  # one class: nothing to balance (imblearn refuses a single class)
    try:
        resolved = check_sampling_strategy(strategy, y, "over-sampling" if kind == "over" else "under-sampling")
    except ValueError as exc:
        detail = " ".join(str(exc).split())
        if isinstance(target, str) and "needs to be one of" in detail:
            detail = f"unknown form {target!r}"
        raise ParamsError(f"{KEY}.target: {detail} ({kind}-sampling; allowed forms: {TARGET_FORMS})") from None
    out = dict(counts)
    for label, n in resolved.items():
        label = str(label)
        out[label] = counts[label] + int(n) if kind == "over" else int(n)
    return out


def class_weights(counts: dict[str, int]) -> dict[str, float]:
    """sklearn's "balanced" weights: n / (n_classes * n_c)."""
    counts = {c: n for c, n in counts.items() if n > 0}
    total = sum(counts.values())
    return {c: total / (len(counts) * n) for c, n in sorted(counts.items())}


def imbalance(counts: dict[str, int]) -> float | None:
    """Largest class over smallest (1.0: balanced)."""
    values = [n for n in counts.values() if n > 0]
    return round(max(values) / min(values), 3) if values else None
