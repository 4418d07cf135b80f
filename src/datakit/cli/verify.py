"""`datakit verify`: the command (options, one call into the check, a summary)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from datakit.cli.app import app
from datakit.cli.common import ParamsOpt, load, report_option
from datakit.console import err, out


@app.command(epilog="Example:\n\n  datakit verify data/scrape")
def verify(
    folder: Annotated[Path, typer.Argument(help="A stage folder holding manifest.parquet.", exists=True, file_okay=False)],
    no_hash: Annotated[bool, typer.Option("--no-hash", help="Skip re-hashing files (faster, weaker).")] = False,
    params_file: ParamsOpt = None,
    report: Annotated[Optional[Path], report_option("verify")] = None,
) -> None:
    """Check a stage folder's manifest against its files; exit 1 on any breach.

    Every row's file exists and hashes to its image_id, no orphan objects, no *.tmp leftovers,
    and (scrape) stored + failures == results. The folder's own files are checked wherever it
    lies (a copied or moved folder included). verify has no params section: --params is only
    checked, as every command checks it. The findings go to --report as JSON."""
    from datakit.console import write_report
    from datakit.stage import stage_report_path
    from datakit.verify import verify as run_verify

    load(params_file)
    rep = run_verify(folder, hashes=not no_hash)
    write_report(stage_report_path("verify", report), rep.to_dict())
    if rep.ok:
        out.print(f"[green]ok[/]: {rep.rows} rows, {rep.checked} files hashed, no orphans, no temp files")
        return
    from rich.markup import escape

    for problem in rep.problems[:50]:
        err.print(f"[red]breach:[/] {escape(problem)}", highlight=False, soft_wrap=True)  # one line per breach
    if len(rep.problems) > 50:
        err.print(f"... and {len(rep.problems) - 50} more")
    raise typer.Exit(1)
