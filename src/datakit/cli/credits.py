"""`datakit credits`: the command (options, one call into the stage, a summary)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from datakit.cli.app import app
from datakit.cli.common import ParamsOpt, input_argument, load, out_option, report_option
from datakit.console import fail as _fail
from datakit.console import out
from datakit.errors import DatakitError


@app.command(
    "credits",
    epilog=(
        "Examples:\n\n  datakit credits data/split --out credits\n\n"
        "  datakit credits data/split --out credits --split train   (one split)\n\n"
        "  params.yaml: licenses: {allow: [CC0/PDM, BY, BY-SA]}   (curate drops the rest before split)"
    ),
    short_help="Write ATTRIBUTION.md and attribution.csv (title, creator, licence, source per image) and a licence summary.",
)
def credits_command(
    input_dir: Annotated[Path, input_argument("A split folder (manifest.parquet with a split column).")],
    out_dir: Annotated[Path, out_option("ATTRIBUTION.md and attribution.csv.")],
    splits: Annotated[Optional[list[str]], typer.Option("--split", help="Only these splits (repeatable).")] = None,
    params_file: ParamsOpt = None,
    report: Annotated[Optional[Path], report_option("credits")] = None,
) -> None:
    """Credit every kept original image: ATTRIBUTION.md (per split and licence family: title,
    creator, licence with link, source page; the licence summary and the obligations on top) and
    attribution.csv (one row per image). Licence families: CC0/PDM, BY, BY-SA, NC, ND, other,
    unknown (no licence information: Brave and Bing give none). Augmented images carry their
    parent's licence and are not listed twice. The summary goes to --report as JSON."""
    from datakit.console import write_report
    from datakit.credits import credits_folder
    from datakit.stage import stage_report_path

    load(params_file)  # checked, as every command checks it; credits has no section of its own
    try:
        result = credits_folder(input_dir, out_dir, splits=splits)
    except DatakitError as exc:
        raise _fail(exc) from None
    summ = result.report
    write_report(stage_report_path("credits", report), summ)
    counts = ", ".join(f"{f} {n}" for f, n in summ["families"].items() if n)
    out.print(f"credited {summ['images']} images ({counts or 'none'})", highlight=False)
    for line in summ["warnings"]:
        out.print(f"  [yellow]![/] {line}", highlight=False)
    out.print(f"files: {out_dir / 'ATTRIBUTION.md'}, {out_dir / 'attribution.csv'}", highlight=False)
