"""`datakit suspects`: the scraped images that do not belong, as marks, not deletions.

Scores every kept original image with `scoring.score` (out-of-fold probe + neighbours on the
embeddings, group-aware) and adds to the manifest:

| column | meaning |
|---|---|
| `score` | 0-1, higher = more likely wrong (1 - the probability of its own label) |
| `suggested_label` | the class the evidence points to (its own label when nothing else is confident) |
| `flagged` | the image looks wrong: another class is confidently better, or it is off topic |
| `reason` | `likely_mislabel`, `off_topic`, `ambiguous` (two classes tie), or null |

Rows that are not scored (not kept, derived rows, no vector) get a null score and
`flagged=False`; every row stays. `OUT/suspects.parquet` holds the scored rows by score, and
`OUT/suspects.html` the top suspects per class with their suggestion. The report estimates the
share of wrong labels per label, per query and per provider.
"""

from __future__ import annotations

import html
import time
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from datakit.curation import scoring
from datakit.errors import ManifestError, ParamsError
from datakit.params import parse_section
from datakit.stage import ORIGINAL, StageContext, StageResult, failure_rows, kept, origins

KEY = "suspects"
SUSPECTS = "suspects.parquet"
PAGE = "suspects.html"
COLUMNS = ["score", "suggested_label", "flagged", "reason"]


class SuspectsParams(BaseModel):
    """params.yaml `suspects`."""

    model_config = ConfigDict(extra="forbid")

    folds: int = Field(5, ge=2, le=20, description="out-of-fold probe folds (duplicate groups stay in one fold)")
    neighbours: int = Field(10, ge=1, le=100, description="nearest neighbours whose labels count as evidence")
    dims: int = Field(256, ge=8, le=4096, description="principal directions the probe whitens and uses")
    ridge: float = Field(0.01, gt=0, description="the probe's L2 regularisation (per image)")
    temperature: float = Field(10.0, gt=0, description="softmax temperature of the probe's scores")
    off_topic_quantile: float = Field(0.005, ge=0, le=0.5, description="share of the least similar images that may be off topic")
    ambiguous_margin: float = Field(0.1, ge=0, le=1, description="two classes within this probability tie")
    flag_margin: float = Field(0.2, ge=0, le=1, description="flagged only when another class beats the label by this much probability")
    seed: int = 0
    gallery_per_class: int = Field(12, ge=0, le=200, description="top suspects per class shown on the page")

    def settings(self) -> scoring.Settings:
        """The kernel's settings (every field of scoring.Settings, taken from these params)."""
        from dataclasses import fields

        return scoring.Settings(**{f.name: getattr(self, f.name) for f in fields(scoring.Settings)})


def parse_suspects(data: dict[str, Any] | None, prefix: str = KEY) -> SuspectsParams:
    return parse_section(SuspectsParams, data, prefix)


def _group_noise(table: pd.DataFrame, by: str, y: np.ndarray, conf: np.ndarray, K: int,
                 label_rate: np.ndarray) -> dict[str, dict[str, Any]]:
    """Estimated wrong-label share per value of `by` (query, provider): each label's calibrated
    rate within the group, weighted by the group's images of that label (the label's overall
    rate where the group has no confident image of it)."""
    out: dict[str, dict[str, Any]] = {}
    if by not in table.columns:
        return out
    values = table[by].astype("string").fillna("(none)").to_numpy()
    for value in sorted(set(values)):
        m = values == value
        rate = scoring.noise_rates(y, conf, K, subset=m)
        counts = np.bincount(y[m], minlength=K)
        rate = np.where(np.isnan(rate), label_rate, rate)
        n = int(m.sum())
        est = float(np.nansum(rate * counts) / max(n, 1))
        out[str(value)] = {"images": n, "estimated_noise": round(est, 4), "flagged": int(table.loc[m, "flagged"].sum())}
    return out


def run(manifest: pd.DataFrame, params: SuspectsParams, ctx: StageContext) -> StageResult:
    """Score the kept original images for label noise; every row kept, marks added."""
    from datakit.vectors import lookup, read_embeddings

    t0 = time.time()
    if ctx.embeddings is None:
        raise ManifestError("suspects needs embeddings: run `datakit embed INPUT --out DIR` and pass --embeddings DIR "
                            "(or give an INPUT folder that holds embeddings.parquet)")
    df = manifest.reset_index(drop=True).copy()
    ids, X, _meta = read_embeddings(ctx.embeddings)
    vec, found = lookup(ids, X, df["image_id"])
    eligible = kept(df).to_numpy() & origins(df).eq(ORIGINAL).to_numpy()
    scored = eligible & found
    missing = eligible & ~found
    failures = failure_rows(df, missing, KEY, "no_embedding", "no vector in " + str(ctx.embeddings))
    rows = np.flatnonzero(scored)
    labels = df.loc[rows, "label"].astype(str).to_numpy()
    classes = sorted(set(labels))
    if len(classes) < 2 or len(rows) < 3:
        raise ParamsError(f"suspects: need at least two labels and three scored images (have {len(classes)} labels, "
                          f"{len(rows)} images with vectors)")
    cidx = {c: i for i, c in enumerate(classes)}
    y = np.array([cidx[c] for c in labels])
    groups_col = df["dup_group"] if "dup_group" in df.columns else df["image_id"]
    groups = pd.factorize(groups_col.iloc[rows].fillna(df["image_id"].iloc[rows]).astype(str))[0]
    settings = params.settings()
    ctx.progress.start("suspects", len(rows))
    res = scoring.score(vec[rows], y, len(classes), groups, settings)
    ctx.progress.advance("suspects", len(rows))

    df["score"] = pd.Series(np.nan, index=df.index, dtype="float64")
    df["suggested_label"] = pd.Series(None, index=df.index, dtype="object")
    df["flagged"] = False
    df["reason"] = pd.Series(None, index=df.index, dtype="object")
    df.loc[rows, "score"] = np.round(res.score, 6)
    df.loc[rows, "suggested_label"] = [classes[k] for k in res.suggested]
    df.loc[rows, "flagged"] = res.flagged
    df.loc[rows, "reason"] = res.reason

    table = df.loc[rows].assign(flagged=res.flagged)
    label_rate = res.noise_by_label
    per_label = {
        c: {"images": int((y == k).sum()), "estimated_noise": round(float(label_rate[k]), 4),
            "flagged": int(res.flagged[y == k].sum())}
        for k, c in enumerate(classes)
    }
    report: dict[str, Any] = {
        "images": len(df),
        "scored": len(rows),
        "not_scored": int(len(df) - len(rows)),
        "no_embedding": int(missing.sum()),
        "flagged": int(res.flagged.sum()),
        "flagged_by_reason": {r: int(sum(1 for x, f in zip(res.reason, res.flagged, strict=True) if f and x == r))
                              for r in (scoring.LIKELY_MISLABEL, scoring.OFF_TOPIC)},
        "ambiguous": int(sum(1 for x in res.reason if x == scoring.AMBIGUOUS)),
        "estimated_noise": round(float(np.nansum(label_rate * np.bincount(y, minlength=len(classes))) / len(rows)), 4),
        "noise_by_label": per_label,
        "noise_by_query": _group_noise(table, "query", y, res.confident, len(classes), label_rate),
        "noise_by_provider": _group_noise(table, "provider", y, res.confident, len(classes), label_rate),
        "settings": params.model_dump(),
        "seconds": round(time.time() - t0, 2),
    }
    report["lines"] = noise_lines(report)
    suspects = df.loc[rows, ["image_id", "label", "suggested_label", "score", "flagged", "reason", "path"]
                      + [c for c in ("query", "provider", "page_url", "dup_group") if c in df.columns]]
    suspects = suspects.sort_values(["score", "image_id"], ascending=[False, True]).reset_index(drop=True)
    files: dict[str, Any] = {}
    if ctx.out is not None:
        from datakit.fsutil import atomic_write_text
        from datakit.manifest import write_stage_manifest

        ctx.out.mkdir(parents=True, exist_ok=True)
        write_stage_manifest(suspects, ctx.out / SUSPECTS, ctx.root)
        atomic_write_text(ctx.out / PAGE, page(suspects, ctx, report, params.gallery_per_class))
        files = {"suspects": ctx.out / SUSPECTS, "page": ctx.out / PAGE}
    return StageResult(manifest=df, report=report, failures=failures, files=files, extra={"suspects": suspects})


def noise_lines(report: dict[str, Any], limit: int = 10) -> list[str]:
    """The noisiest queries (or labels when there are no queries) as sentences."""
    groups = report.get("noise_by_query") or report.get("noise_by_label") or {}
    ranked = sorted(groups.items(), key=lambda kv: (-kv[1]["estimated_noise"], kv[0]))[:limit]
    return [f"{name}: ~{v['estimated_noise']:.0%} of {v['images']} results look wrong ({v['flagged']} flagged)"
            for name, v in ranked]


_CSS = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px} h2{font-size:16px;margin-top:24px}
.row{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;width:164px;font-size:11px;text-align:center}
figure img{width:160px;height:160px;object-fit:contain;background:#f4f4f4;border:2px solid #ccc}
figure.flagged img{border-color:#d33}
.meta{color:#666}
"""


def page(suspects: pd.DataFrame, ctx: StageContext, report: dict[str, Any], per_class: int) -> str:
    """A self-contained page: the noisiest queries, then each class's top suspects with the
    suggested label, score and reason."""
    from datakit.images import thumbnail_uri

    parts = [f"<!doctype html><meta charset='utf-8'><title>datakit suspects</title><style>{_CSS}</style>",
             "<h1>datakit suspects</h1>",
             f"<p class='meta'>{report['scored']} images scored, {report['flagged']} flagged, estimated "
             f"{report['estimated_noise']:.1%} wrong labels overall</p><ul>"]
    parts.extend(f"<li>{html.escape(line)}</li>" for line in report["lines"])
    parts.append("</ul>")
    for label, rows in suspects.groupby("label", sort=True):
        top = rows.sort_values("score", ascending=False).head(per_class)
        figs = []
        for r in top.itertuples():
            cls = "flagged" if r.flagged else ""
            figs.append(
                f'<figure class="{cls}"><img src="{thumbnail_uri(ctx.root, r.path, 160)}" alt="">'
                f"<figcaption>{html.escape(str(r.label))} → <b>{html.escape(str(r.suggested_label))}</b><br>"
                f"score {r.score:.2f} · {html.escape(str(r.reason or ''))}</figcaption></figure>"
            )
        parts.append(f"<h2>{html.escape(str(label))}</h2><div class='row'>{''.join(figs)}</div>")
    return "\n".join(parts) + "\n"
