"""The decisions file: a person's review, as versioned data (`review/decisions.csv`).

One row per image, keyed by `image_id` (the sha256 of its bytes), so a decision survives a
re-scrape that finds the same picture again:

| column | meaning |
|---|---|
| `image_id` | the image decided on |
| `action` | `accept` (the label is right), `relabel` (to `label`), `remove` |
| `label` | the label after the decision (the new one for `relabel`) |
| `reason` | where it was decided (`suspect:likely_mislabel`, `conflict`, `duplicates`, ...) |
| `decided_at` | UTC time, ISO 8601 |

The latest decision on an image replaces the earlier one; undo deletes it. Every change rewrites
the file atomically (temp file, fsync, rename), so a crash or a closed page never leaves half a
file; the review server serialises writes, and a folder lock keeps a second server away.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from datakit.errors import ManifestError
from datakit.fsutil import atomic_write_text

FIELDS = ["image_id", "action", "label", "reason", "decided_at"]
ACTIONS = ("accept", "relabel", "remove")
DEFAULT = Path("review") / "decisions.csv"


@dataclass(frozen=True)
class Decision:
    image_id: str
    action: str
    label: str
    reason: str = ""
    decided_at: str = ""


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read(path: Path) -> dict[str, Decision]:
    """The decisions in `path` by image_id ({} when the file does not exist). A malformed row
    is an error naming the file and the line."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read the decisions file ({exc})") from None
    out: dict[str, Decision] = {}
    reader = csv.DictReader(io.StringIO(text))
    missing = [f for f in ("image_id", "action", "label") if f not in (reader.fieldnames or [])]
    if text.strip() and missing:
        raise ManifestError(f"{path}: the decisions file needs the columns {', '.join(FIELDS)} (missing {', '.join(missing)})")
    for line, row in enumerate(reader, start=2):
        iid = (row.get("image_id") or "").strip()
        action = (row.get("action") or "").strip()
        label = (row.get("label") or "").strip()
        if not iid:
            raise ManifestError(f"{path}: line {line}: empty image_id")
        if action not in ACTIONS:
            raise ManifestError(f"{path}: line {line}: unknown action {action!r} (allowed: {', '.join(ACTIONS)})")
        if action == "relabel" and not label:
            raise ManifestError(f"{path}: line {line}: relabel needs a label")
        out[iid] = Decision(iid, action, label, (row.get("reason") or "").strip(), (row.get("decided_at") or "").strip())
    return out


def render(decisions: dict[str, Decision]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(FIELDS)
    for d in sorted(decisions.values(), key=lambda d: (d.decided_at, d.image_id)):
        w.writerow([d.image_id, d.action, d.label, d.reason, d.decided_at])
    return buf.getvalue()


def write(path: Path, decisions: dict[str, Decision]) -> None:
    """Replace the file atomically (a reader sees the old file or the new one, never half)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(path), render(decisions))
