"""Duplicate groups, the kept image of each group, and label conflicts (pure: no files).

Groups are connected components of the "near-duplicate" graph (union-find), so a chain
A~B~C lands in one group whatever the input order (SPL-03). Every row gets a group; a group's
id is the smallest `image_id` among its members, so ids depend on content, not on row order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from datakit.graph import UnionFind, components  # noqa: F401

KeepPolicy = Literal["largest", "first", "best_quality"]
ConflictPolicy = Literal["drop_group", "keep_majority", "keep_all"]


@dataclass
class Decision:
    """What grouping decided for one row."""

    group: str
    keep: bool
    dup_of: str | None
    reason: str  # why kept / why not
    label_conflict: bool
    conflict_labels: str | None


def _score(policy: KeepPolicy, order: int, width: int, height: int, nbytes: int) -> tuple[float, ...]:
    """Higher is better; ties broken by input order (earlier wins)."""
    area = float(width) * float(height)
    if policy == "first":
        return (-order,)
    if policy == "largest":
        return (area, float(nbytes), -order)
    # best_quality: resolution first, then fewer compression losses (bytes per pixel)
    bpp = nbytes / area if area else 0.0
    return (round(area, -3), bpp, -order)


def decide(
    image_ids: Sequence[str],
    labels: Sequence[str],
    widths: Sequence[int],
    heights: Sequence[int],
    nbytes: Sequence[int],
    roots: np.ndarray,
    *,
    keep: KeepPolicy = "largest",
    conflicts: ConflictPolicy = "drop_group",
    extra_labels: dict[int, set[str]] | None = None,
) -> list[Decision]:
    """Choose the kept image of every group and apply the label-conflict policy.

    Args:
        roots: component root per row (from `components`).
        extra_labels: labels an image also carried elsewhere (e.g. the same bytes returned
            under another query), which make its group a conflict too.
    """
    n = len(image_ids)
    members: dict[int, list[int]] = {}
    for idx, root in enumerate(roots.tolist()):
        members.setdefault(root, []).append(idx)
    out: list[Decision | None] = [None] * n
    extra_labels = extra_labels or {}

    def best(rows: list[int]) -> int:
        return max(rows, key=lambda r: _score(keep, r, widths[r], heights[r], nbytes[r]))

    for rows in members.values():
        group = min(image_ids[r] for r in rows)
        group_labels: set[str] = set()
        for r in rows:
            group_labels.add(labels[r])
            group_labels |= extra_labels.get(r, set())
        conflict = len(group_labels) > 1
        names = "|".join(sorted(group_labels)) if conflict else None
        if not conflict or conflicts == "keep_all":
            # keep_all: one image per label survives; others are plain duplicates
            by_label: dict[str, list[int]] = {}
            for r in rows:
                by_label.setdefault(labels[r], []).append(r)
            for lab_rows in by_label.values():
                winner = best(lab_rows)
                for r in lab_rows:
                    if r == winner:
                        why = f"{keep} of {len(rows)}" if len(rows) > 1 else "unique"
                        out[r] = Decision(group, True, None, why, conflict, names)
                    else:
                        out[r] = Decision(group, False, image_ids[winner], "duplicate", conflict, names)
            continue
        if conflicts == "keep_majority":
            counts = Counter(labels[r] for r in rows)
            ranked = counts.most_common()
            if len(ranked) > 1 and ranked[0][1] > ranked[1][1]:
                major = ranked[0][0]
                winner = best([r for r in rows if labels[r] == major])
                for r in rows:
                    if r == winner:
                        out[r] = Decision(group, True, None, f"majority label of {len(rows)}", True, names)
                    elif labels[r] == major:
                        out[r] = Decision(group, False, image_ids[winner], "duplicate", True, names)
                    else:
                        out[r] = Decision(group, False, image_ids[winner], "label_conflict_minority", True, names)
                continue
        # drop_group (default), or keep_majority without a strict majority
        for r in rows:
            out[r] = Decision(group, False, None, "label_conflict", True, names)
    return [d for d in out if d is not None]
