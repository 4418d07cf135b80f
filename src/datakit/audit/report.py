"""The audit's report: what `datakit audit` found, as JSON (`reports/audit.json`) and as a few
terminal lines; `ok` is the gate (leaks <= max_leaks)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

DEFAULT_RADIUS = 28
"""dhash radius (of 256 bits) for near-copy candidates: dedup's widest (without vectors), so
every pair dedup could group is a candidate here too; each candidate must still pass the overlay
check, so the radius does not trade precision away."""
AHASH_SIZE = 8
AHASH_THRESHOLD = 0.1
"""deepchecks' ``similarity_threshold``: similar when fewer than ceil(t * size**2 / 2) bits differ."""
MAX_LISTED = 1000
"""Pairs listed per kind in the report (the counts are always complete)."""


def ahash_bits(threshold: float = AHASH_THRESHOLD, size: int = AHASH_SIZE) -> int:
    """deepchecks' ``min_pixel_diff``: pairs strictly below this many differing bits are similar."""
    return int(math.ceil(threshold * size * size / 2))



@dataclass
class AuditReport:
    """What the audit found. `leaks` counts exact + near cross-split pairs."""

    n_images: int
    splits: list[str]
    classes: list[str]
    radius: int
    max_leaks: int
    hashes: str
    exact_leaks: int = 0
    near_leaks: int = 0
    ahash_leaks: int | None = None  # None: not computed (hashes="manifest")
    ahash_only: int | None = None  # oracle pairs that neither exact nor dhash found
    label_conflicts: int = 0
    leak_pairs: list[dict[str, Any]] = field(default_factory=list)
    ahash_pairs: list[dict[str, Any]] = field(default_factory=list)
    conflict_pairs: list[dict[str, Any]] = field(default_factory=list)
    leaked_images: dict[str, int] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # class -> split -> n
    split_sizes: dict[str, int] = field(default_factory=dict)
    deviation: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> class -> dev
    max_deviation: dict[str, float] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)  # split -> classes absent
    unreadable: list[dict[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    low_information: int = 0
    signals: list[str] = field(default_factory=lambda: ["dhash"])
    verified: bool = False
    match_threshold: float | None = None
    candidates: int = 0
    rejected_by_verify: int = 0

    @property
    def leaks(self) -> int:
        return self.exact_leaks + self.near_leaks

    @property
    def ok(self) -> bool:
        return self.leaks <= self.max_leaks

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "leaks": self.leaks,
            "max_leaks": self.max_leaks,
            "n_images": self.n_images,
            "splits": self.splits,
            "classes": self.classes,
            "settings": {
                "hashes": self.hashes,
                "dhash_radius": self.radius,
                "signals": self.signals,
                "verified": self.verified,
                "match_threshold": self.match_threshold,
                "ahash_size": AHASH_SIZE,
                "ahash_below_bits": ahash_bits(),
            },
            "exact_leaks": self.exact_leaks,
            "near_leaks": self.near_leaks,
            "ahash_leaks": self.ahash_leaks,
            "ahash_only": self.ahash_only,
            "label_conflicts": self.label_conflicts,
            "candidates": self.candidates,
            "rejected_by_verify": self.rejected_by_verify,
            "leaked_images": self.leaked_images,
            "leak_pairs": self.leak_pairs,
            "leak_pairs_listed": len(self.leak_pairs),
            "ahash_pairs": self.ahash_pairs,
            "conflict_pairs": self.conflict_pairs,
            "counts": self.counts,
            "split_sizes": self.split_sizes,
            "deviation": self.deviation,
            "max_deviation": self.max_deviation,
            "missing_classes": self.missing,
            "unreadable": self.unreadable,
            "skipped": self.skipped,
            "low_information": self.low_information,
        }

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"audit: {self.n_images} images, splits {', '.join(self.splits)}; "
            f"{self.leaks} cross-split leaks ({self.exact_leaks} exact, {self.near_leaks} near: {'+'.join(self.signals)}"
            + (f", overlay >= {self.match_threshold}" if self.verified else "") + ")"
            f"; max allowed {self.max_leaks}: {'OK' if self.ok else 'FAIL'}",
        ]
        if self.ahash_leaks is not None:
            lines.append(f"  average_hash oracle: {self.ahash_leaks} pairs ({self.ahash_only} not found by sha256/dhash)")
        for p in self.leak_pairs[:10]:
            how = f"d={p['distance']:<3}" + (f" overlay={p['match']:.3f}" if p.get("match") is not None else "")
            lines.append(f"  {p['kind']:5} {how} {p['split_a']}:{p['path_a']}  <->  {p['split_b']}:{p['path_b']}")
        if len(self.leak_pairs) > 10:
            lines.append(f"  ... {self.leaks - 10} more in the report")
        if self.label_conflicts:
            lines.append(f"  label conflicts: {self.label_conflicts}")
        for s, cls in self.missing.items():
            if cls:
                lines.append(f"  split {s} lacks classes: {', '.join(cls)}")
        if self.unreadable:
            lines.append(f"  unreadable files: {len(self.unreadable)}")
        return "\n".join(lines)
