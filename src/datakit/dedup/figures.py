"""The figures of `datakit dedup calibrate` from measured pairs: precision and recall of each
signal per threshold, the recommended thresholds, and the whole dedup rule (`Rule`) as params.

A measured pair has `kind` (an edit, `LOOK_ALIKE`, `UNRELATED` or "file"), `duplicate`, `crop`
(the copy was re-cropped), `full` (dhash distance), `crop_distance`, `cosine` and `score` (the
overlay check); see `datakit.dedup.calibrate.measure`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

TARGET_RECALL = 0.99
MIN_PRECISION = 0.995
RADII = tuple(range(0, 41, 4))
SIMILARITIES = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
SCORES = (0.9, 0.93, 0.95, 0.96, 0.965, 0.97, 0.975, 0.98, 0.99)
LOOK_ALIKE = "look-alike"
UNRELATED = "unrelated"
SUSPECT_SCORE = 0.99  # look-alikes overlaying this well are likely real copies inside the dataset


def hard_negatives(d: pd.DataFrame) -> pd.Series:
    """The negatives that decide precision: the look-alikes, or every non-duplicate of a pairs file."""
    hard = d["kind"] == LOOK_ALIKE
    return hard if hard.any() else ~d["duplicate"]


def figures(hit: pd.Series, d: pd.DataFrame) -> dict[str, Any]:
    dup = d["duplicate"]
    tp = int((hit & dup).sum())
    fp_hard = int((hit & hard_negatives(d)).sum())
    fp_all = int((hit & ~dup).sum())
    crop, plain = dup & d["crop"], dup & ~d["crop"]
    return {
        "recall": tp / int(dup.sum()) if dup.any() else None,
        "recall_crops": int((hit & crop).sum()) / int(crop.sum()) if crop.any() else None,
        "recall_other": int((hit & plain).sum()) / int(plain.sum()) if plain.any() else None,
        "precision_look_alikes": tp / (tp + fp_hard) if tp + fp_hard else None,
        "precision_all": tp / (tp + fp_all) if tp + fp_all else None,
        "false_look_alikes": fp_hard,
        "false_pairs": fp_all,
    }


SIGNALS: dict[str, tuple[str, str, tuple[float, ...]]] = {
    # name -> (column, direction, thresholds)
    "dhash": ("full", "<=", RADII),
    "dhash crops": ("crop_distance", "<=", RADII),
    "embedding": ("cosine", ">=", SIMILARITIES),
    "overlay": ("score", ">=", SCORES),
}


def signal_table(d: pd.DataFrame, signal: str) -> pd.DataFrame:
    col, op, thresholds = SIGNALS[signal]
    rows = []
    for t in thresholds:
        hit = d[col] <= t if op == "<=" else d[col] >= t
        rows.append({"threshold": t, **figures(hit.fillna(False), d)})
    return pd.DataFrame(rows)


def recommend_radius(d: pd.DataFrame, target: float = TARGET_RECALL, max_radius: int = 40) -> int | None:
    """The smallest radius at which the full dhash finds >= `target` of the copies that were
    not re-cropped (else the smallest radius reaching its best recall up to `max_radius`)."""
    plain = d.loc[d["duplicate"] & ~d["crop"], "full"].to_numpy()
    if not len(plain):
        return None
    recall = np.array([(plain <= r).mean() for r in range(max_radius + 1)])
    good = np.nonzero(recall >= target)[0]
    return int(good[0]) if len(good) else int(np.argmax(recall))


def recommend_similarity(d: pd.DataFrame, target: float = TARGET_RECALL) -> float | None:
    """The highest cosine (0.01 steps) that keeps >= `target` of all copies."""
    cos = np.sort(d.loc[d["duplicate"], "cosine"].dropna().to_numpy())
    if not len(cos):
        return None
    misses = int(math.floor((1.0 - target) * len(cos) + 1e-9))
    return math.floor(float(cos[misses]) * 100 + 1e-9) / 100


def lowest_precise_match(d: pd.DataFrame, min_precision: float = MIN_PRECISION) -> float | None:
    """The lowest overlay score (0.005 steps from 0.8) at which precision against the
    look-alikes is >= `min_precision`."""
    dup = d.loc[d["duplicate"], "score"].to_numpy()
    neg = d.loc[hard_negatives(d) & ~d["duplicate"], "score"].to_numpy()
    for k in range(0, 201, 5):
        t = round(0.8 + 0.001 * k, 3)
        tp, fp = int((dup >= t).sum()), int((neg >= t).sum())
        if tp and tp / (tp + fp) >= min_precision:
            return t
    return None


def recommend_match(d: pd.DataFrame, min_precision: float = MIN_PRECISION) -> tuple[float | None, float | None, float | None]:
    """(threshold, recall, precision): halfway (rounded down to 0.005) between the lowest score
    with precision >= `min_precision` against the look-alikes and the highest that still keeps
    that recall of the copies: a margin both ways for images the sample did not hold (a real
    run checks many more look-alike candidates than it finds copies)."""
    low = lowest_precise_match(d, min_precision)
    if low is None:
        return None, None, None
    dup = d.loc[d["duplicate"], "score"].to_numpy()
    neg = d.loc[hard_negatives(d) & ~d["duplicate"], "score"].to_numpy()
    high = same_recall_ceiling(d, low, float((dup >= low).mean()))
    t = low if high is None else round(np.floor((low + high) / 2 * 200) / 200, 3)
    tp, fp = int((dup >= t).sum()), int((neg >= t).sum())
    return t, tp / len(dup), tp / (tp + fp)


def same_recall_ceiling(d: pd.DataFrame, threshold: float | None, recall: float | None) -> float | None:
    """The highest overlay score (0.005 steps) that still keeps `recall` of the copies: between
    it and the recommended (lowest) threshold recall is the same and precision only gains."""
    if threshold is None or recall is None:
        return None
    dup = d.loc[d["duplicate"], "score"].to_numpy()
    best = threshold
    for k in range(round(threshold * 1000), 1001, 5):
        t = round(k / 1000, 3)
        if (dup >= t).mean() >= recall - 1e-12:
            best = t
        else:
            break
    return best


@dataclass(frozen=True)
class Rule:
    """The dedup rule as params: candidates (dhash radius, crop join, cosine floor), then the overlay check."""

    radius: int
    crop_radius: int | None  # None: no crop join
    similarity: float | None  # None: no embedding signal
    match: float | None  # None: no overlay check

    def hits(self, d: pd.DataFrame) -> pd.Series:
        cand = d["full"] <= self.radius
        if self.crop_radius is not None:
            cand |= d["crop_distance"] <= self.crop_radius
        if self.similarity is not None:
            cand |= (d["cosine"] >= self.similarity).fillna(False)
        if self.match is not None:
            cand &= d["score"] >= self.match
        return cand

    def describe(self) -> str:
        parts = [f"dhash <= {self.radius}"]
        if self.crop_radius is not None:
            parts.append(f"crop hashes <= {self.crop_radius}")
        if self.similarity is not None:
            parts.append(f"cosine >= {self.similarity:g}")
        text = " or ".join(parts)
        return f"({text}) and overlay >= {self.match:g}" if self.match is not None else text


__all__ = ["LOOK_ALIKE", "MIN_PRECISION", "RADII", "SCORES", "SIGNALS", "SIMILARITIES", "TARGET_RECALL", "UNRELATED",
           "Rule", "figures", "hard_negatives", "lowest_precise_match", "recommend_match", "recommend_radius",
           "recommend_similarity", "same_recall_ceiling", "signal_table"]
