"""`datakit verify`: the N1-N3 audit of reliability.md as a product command.

Checks a stage folder's manifest against its image store: every row's file exists and hashes
to its `image_id`, no stored object lacks a row (orphans), no `*.tmp` leftovers, the manifest
and failures tables are readable, and (for scrape folders) the accounting holds:
stored + failures == search results.

The manifest is read through the stage loader (`read_stage_manifest`): its `path`s are relative
to the folder that holds it, so a copied or moved folder is checked against its *own* files (a
file damaged in the copy is reported, the copy's objects are not orphans). Manifests written
before that rule name their files relative to the project root and are still read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from datakit.errors import ManifestError
from datakit.fsutil import TMP_SUFFIX, sha256_file
from datakit.images import stored_objects
from datakit.manifest import FAILURES, MANIFEST, check_rows, read_stage_manifest, read_table, resolve


@dataclass
class VerifyReport:
    folder: Path
    rows: int = 0
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        """The findings as JSON-ready figures (`datakit verify --report`)."""
        return {"folder": str(self.folder), "ok": self.ok, "rows": self.rows, "checked": self.checked,
                "problems": len(self.problems), "breaches": list(self.problems)}



def verify(folder: Path, *, hashes: bool = True) -> VerifyReport:
    """Audit `folder` (a stage output). Never raises for a breach: it lists them all."""
    folder = Path(folder)
    rep = VerifyReport(folder)
    try:
        df, root, _meta = read_stage_manifest(folder / MANIFEST)
    except ManifestError as exc:
        rep.problems.append(str(exc))
        return rep
    rep.rows = len(df)
    df = df.reset_index(drop=True)
    # The checks every manifest reader shares: columns, empty/duplicate ids, paths outside the
    # project (never opened below). The rows they flag are reported there and skipped here.
    found = check_rows(df, root, required=("image_id", "path"), check_files=False)
    rep.problems.extend(f"{folder / MANIFEST}: {problem}" for problem in found.problems)
    if "image_id" not in df.columns or "path" not in df.columns:
        return rep
    referenced: set[Path] = set()
    for i, (image_id, rel) in enumerate(zip(df["image_id"], df["path"], strict=True)):
        if i in found.outside:
            referenced.add((Path(root) / str(rel)).absolute())  # reported above; claimed, never opened
            continue
        if not isinstance(rel, str) or not rel:
            rep.problems.append(f"row {i}: no path")
            continue
        path = resolve(root, rel)
        referenced.add(path.absolute())  # a row with an empty id still claims its file
        if not path.is_file():
            rep.problems.append(f"row {i}: file missing: {rel}")
            continue
        if hashes and i not in found.empty_ids:
            rep.checked += 1
            if sha256_file(path) != image_id:
                rep.problems.append(f"row {i}: {rel} does not hash to its image_id {str(image_id)[:12]}...")
    for path in stored_objects(folder).values():
        if path.absolute() not in referenced:
            rep.problems.append(f"orphan object without a manifest row: {path.relative_to(folder)}")
    tmps = [p for p in folder.rglob("*" + TMP_SUFFIX) if p.is_file()]
    for p in tmps[:20]:
        rep.problems.append(f"leftover temp file: {p.relative_to(folder)}")
    fail_path = folder / FAILURES
    if fail_path.exists():
        try:
            failures = read_table(fail_path, "failures table")
        except ManifestError as exc:
            rep.problems.append(str(exc))
            return rep
        results = _results_count(folder)  # written by scrape when a run completes
        if results is not None and results != len(df) + len(failures):
            rep.problems.append(
                f"accounting: {len(df)} stored + {len(failures)} failures != {results} search results"
            )
    return rep


def _results_count(folder: Path) -> int | None:
    report = folder / ".datakit" / "results.json"
    if not report.exists():
        return None
    try:
        return int(json.loads(report.read_text(encoding="utf-8"))["results"])
    except (ValueError, KeyError, TypeError):
        return None
