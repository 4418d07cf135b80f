"""`datakit credits`: who made each image and under which licence, for a split.

Writes OUT/ATTRIBUTION.md (for people: the licence summary per split and the obligations at the
top, then per split and licence family one line per image: title, creator, licence with its
link, source page) and OUT/attribution.csv (for tools: image_id, split, label, title, creator,
license, license_url, family, page_url, source_url, provider), each atomically. The report (the
`licences.summary`) counts the kept original images per licence family, overall and per split,
with the obligations as plain-English warnings.

Only kept original images are credited: an augmented image carries the licence of the image it
was made from, and ATTRIBUTION.md says so. The family rules and both files live in
`datakit.licences` (core), so `datakit export` writes the very same files beside its layouts.

Stage shape: `run(manifest, CreditsParams, ctx) -> StageResult` (the two files in `files`, the
summary as `report`); like export it writes no manifest of its own.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict

from datakit import licences
from datakit.errors import ParamsError
from datakit.fsutil import folder_lock
from datakit.stage import SPLIT, StageContext, StageResult, load_input

KEY = "credits"


class CreditsParams(BaseModel):
    """The command's options (credits has no params.yaml section)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    splits: list[str] | None = None  # None: every split
    source: str | None = None  # how ATTRIBUTION.md names the input (as the user typed it)


def _select(manifest: pd.DataFrame, splits: list[str] | None) -> pd.DataFrame:
    if not splits:
        return manifest
    names = manifest["split"].map(licences.cell_text) if "split" in manifest.columns else pd.Series("", index=manifest.index)
    present = sorted(set(names[names != ""]))
    unknown = [s for s in dict.fromkeys(splits) if s not in present]
    if unknown:
        raise ParamsError(f"split {', '.join(map(repr, unknown))} not in the manifest (it has: {', '.join(present) or 'none'})")
    return manifest[names.isin(splits).to_numpy()]


def run(manifest: pd.DataFrame, params: CreditsParams, ctx: StageContext) -> StageResult:
    """Write ATTRIBUTION.md and attribution.csv for the kept original images of `manifest` (of
    `params.splits` only, when given) into `ctx.out`."""
    if ctx.out is None:
        raise ParamsError("credits needs an output folder (--out DIR)")
    out = Path(ctx.out)
    out.mkdir(parents=True, exist_ok=True)
    summ = licences.write_attribution(_select(manifest, params.splits), out, params.source)
    files = {name: out / name for name in (licences.ATTRIBUTION_MD, licences.ATTRIBUTION_CSV)}
    return StageResult(manifest, summ, files=files)


def credits_folder(source: Path, out: Path, *, splits: list[str] | None = None) -> StageResult:
    """Read a split folder (or manifest file) and credit its images into `out` (the CLI's entry;
    image files are not read, so they need not be present)."""
    inp = load_input(Path(source), needs=(SPLIT,), required=("label",), check_files=False)
    params = CreditsParams(splits=splits or None, source=str(source))
    Path(out).mkdir(parents=True, exist_ok=True)
    with folder_lock(Path(out), f"datakit {KEY}"):
        return run(inp.manifest, params, StageContext(root=inp.root, out=Path(out), input=inp.folder))
