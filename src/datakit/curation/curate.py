"""`datakit curate`: apply a person's decisions (review/decisions.csv) before split.

- `relabel`: `label` becomes the decided one; the old one stays in `label_before_review`.
- `remove`: `keep=False`, `curate_reason=reviewed_remove`, and a failures row with that reason.
- `accept`: the row is marked `reviewed=True` and left as it is.

Then the licence gate (`licenses.allow` in params.yaml, `datakit.licences`): a kept row whose
licence family is not allowed gets `keep=False`, `curate_reason=licence_not_allowed` and a
failures row naming its family and licence; the report counts them per family. Every family
allowed (the default) drops nothing.

Every row stays (decisions are columns). Decisions that name images not in the input (a later
scrape lost them) are counted and listed in the report, never fatal. The decisions file is a
DVC dependency of this stage, so `dvc repro` after a review re-runs curate and everything after it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from datakit import licences
from datakit.curation import decisions as dec
from datakit.licences import LicensesParams
from datakit.stage import StageContext, StageResult, failure_rows, kept

KEY = "curate"


def run(manifest: pd.DataFrame, params: LicensesParams | None, ctx: StageContext, *, decisions: Path) -> StageResult:
    """Apply the decisions in `decisions` to `manifest`, then the licence gate of `params` (the
    `licenses:` section; None: every licence allowed)."""
    df = manifest.reset_index(drop=True).copy()
    decided = dec.read(decisions)
    before_kept = kept(df)
    labels_before = df["label"].astype(str).copy()
    pos = {iid: i for i, iid in enumerate(df["image_id"])}
    unknown = sorted(iid for iid in decided if iid not in pos)
    df["reviewed"] = False
    df["review_action"] = pd.Series(None, index=df.index, dtype="object")
    df["label_before_review"] = pd.Series(None, index=df.index, dtype="object")
    df["curate_reason"] = pd.Series(None, index=df.index, dtype="object")
    if "keep" not in df.columns:
        df["keep"] = True
    removed = pd.Series(False, index=df.index)
    for iid, d in decided.items():
        i = pos.get(iid)
        if i is None:
            continue
        df.at[i, "reviewed"] = True
        df.at[i, "review_action"] = d.action
        if d.action == "relabel" and d.label != df.at[i, "label"]:
            df.at[i, "label_before_review"] = df.at[i, "label"]
            df.at[i, "label"] = d.label
        elif d.action == "remove":
            if bool(before_kept.iat[i]):
                removed.iat[i] = True
            df.at[i, "keep"] = False
            df.at[i, "curate_reason"] = "reviewed_remove"
    failures = failure_rows(df, removed, KEY, "reviewed_remove", "removed in review")
    gate = params if params is not None else LicensesParams()
    fams, denied = licences.gate(df, gate)
    if denied.any():
        df.loc[denied, "keep"] = False
        df.loc[denied, "curate_reason"] = licences.REASON
        names = df.loc[denied, "license"] if "license" in df.columns else pd.Series(None, index=df.index[denied])
        details = [f"licence family {f} ({n if isinstance(n, str) and n.strip() else 'no licence'}) not in licenses.allow"
                   for f, n in zip(fams[denied], names, strict=True)]
        gated = failure_rows(df, denied, KEY, licences.REASON, details)
        failures = gated if failures.empty else pd.concat([failures, gated], ignore_index=True)
    relabelled = df["label_before_review"].notna()
    per_class: dict[str, dict[str, int]] = {}
    for label in sorted(set(labels_before) | set(df["label"].astype(str))):
        per_class[label] = {
            "removed": int((removed & labels_before.eq(label)).sum()),
            "relabelled_from": int((relabelled & labels_before.eq(label)).sum()),
            "relabelled_to": int((relabelled & df["label"].astype(str).eq(label)).sum()),
        }
    report = {
        "images": len(df),
        "decisions": len(decided),
        "applied": len(decided) - len(unknown),
        "accepted": int(sum(1 for d in decided.values() if d.action == "accept" and d.image_id in pos)),
        "relabelled": int(relabelled.sum()),
        "removed": int(removed.sum()),
        "unknown_images": len(unknown),
        "unknown_image_ids": unknown[:50],
        "per_class": per_class,
        "decisions_file": str(decisions),
        "licenses": {
            "allow": list(gate.allow),
            "dropped": int(denied.sum()),
            "dropped_by_family": {f: int(n) for f, n in fams[denied].value_counts().reindex(licences.FAMILIES).dropna().items()},
            "kept_by_family": {f: int((kept(df) & fams.eq(f)).sum()) for f in licences.FAMILIES},
        },
    }
    return StageResult(manifest=df, report=report, failures=failures)
