"""`datakit audit`: the command (options, one call into the audit, a summary, the gate's exit code)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from datakit.cli.app import app
from datakit.cli.common import ParamsOpt, input_argument, load, report_option
from datakit.console import fail as _fail
from datakit.console import out
from datakit.console import write_report as _write_report
from datakit.errors import DatakitError


@app.command(
    epilog=(
        "Examples:\n\n  datakit audit data/split                      (a split manifest)\n\n"
        "  datakit audit ~/my_dataset                   (train/ val/ test/ folders of class folders)\n\n"
        "  datakit audit data/split --max-leaks 5 --report reports/audit.json"
    )
)
def audit(
    target: Annotated[Path, input_argument("A split folder (manifest.parquet with split) or a folder of SPLIT/LABEL/ image folders.")],
    params_file: ParamsOpt = None,
    radius: Annotated[Optional[int], typer.Option(help="dhash radius for near-duplicate leaks (params: audit.radius).")] = None,
    max_leaks: Annotated[Optional[int], typer.Option(help="Exit 1 above this many cross-split leaks (params: audit.max_leaks, default 0).")] = None,
    trust_hashes: Annotated[bool, typer.Option("--trust-hashes", help="Reuse the manifest's dhash/image_id instead of re-reading every file.")] = False,
    embeddings: Annotated[Optional[str], typer.Option(help="Vectors that nominate candidate pairs (they find re-crops): an embed folder, 'compute' (embed the audited images here), 'auto' (compute when the model can be built) or 'none' (params: audit.embeddings).")] = None,
    report: Annotated[Optional[Path], report_option("audit")] = None,
) -> None:
    """Re-check a split independently for leaks and balance; exit 1 above audit.max_leaks.

    Exact (sha256) and near copies across splits, found as dedup finds them: candidates from the
    dhash and each image's nearest neighbours by embedding, kept when one picture overlays the
    other (plus a deepchecks-style average_hash oracle, reported apart); label conflicts,
    per-class counts per split, class proportion deviation, classes missing from a split.
    Works on a split manifest or on SPLIT/LABEL/ folders you already have, and can gate a DVC
    pipeline."""
    from datakit.audit import audit_path
    from datakit.cli.embedder import make_embedder
    from datakit.console import RichUi
    from datakit.params import section
    from datakit.stage import stage_report_path

    params = load(params_file)
    try:
        p = section(params, "audit", radius=radius, max_leaks=max_leaks, embeddings=embeddings)
        with RichUi() as ui:
            result = audit_path(target, p, trust_hashes=trust_hashes, embedder=make_embedder(params), progress=ui)
    except (DatakitError, ValueError) as exc:
        raise _fail(exc) from None
    _write_report(stage_report_path("audit", report), result.report)
    out.print(result.extra["audit"].summary(), highlight=False)
    if not result.extra["ok"]:
        raise typer.Exit(1)
