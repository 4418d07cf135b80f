"""`datakit report`: one static HTML page for a pipeline run (see datakit.report).

`register(app)` adds the command to the main Typer app. The command only declares its options,
calls `datakit.report.build_report` and prints the page's path (notes on stderr). The report is a
side branch, not a stage: it reads every stage folder (through the stage loader) and writes one
page, no manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from datakit.cli.common import ParamsOpt, report_option
from datakit.console import err, out
from datakit.console import fail as _fail
from datakit.errors import DatakitError

REPORT_EPILOG = (
    "Examples:\n\n"
    "  datakit report                                   (data/<stage>/, reports/*.json -> reports/report.html)\n\n"
    "  datakit report --data demo-out --reports demo-out/reports --out demo-out/report.html\n\n"
    "  datakit report --params params.yaml --stage train=models/baseline --stage evaluate=eval/baseline\n\n"
    "  Stage names: scrape, dedup, split, audit, augment, embed, balance, train, evaluate."
)



def parse_stage_overrides(values: list[str] | None) -> dict[str, Path]:
    """`name=path` strings to {name: Path}; a value without `=` is an error naming it."""
    parsed: dict[str, Path] = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise DatakitError(f"--stage {value!r}: expected NAME=PATH, e.g. --stage evaluate=eval/baseline")
        parsed[name.strip()] = Path(path.strip())
    return parsed


def register(app: typer.Typer) -> None:
    """Add `report` to `app`."""

    @app.command("report", epilog=REPORT_EPILOG, short_help="One static HTML page per pipeline run: counts per stage, galleries, audit, confusion matrix, curves.")
    def report(
        data: Annotated[Path, typer.Option(help="Folder holding the stage folders (scrape/, dedup/, split/, ... train/, evaluate/).", file_okay=False)] = Path("data"),
        reports: Annotated[Path, typer.Option(help="Folder holding the stages' figures (<stage>.json).", file_okay=False)] = Path("reports"),
        out_file: Annotated[Path, typer.Option("--out", help="The HTML page to write (one self-contained file).", dir_okay=False)] = Path("reports/report.html"),
        datasheet: Annotated[Optional[Path], typer.Option("--datasheet", help="The datasheet to write (Markdown; default: DATASHEET.md next to --out).", dir_okay=False)] = None,
        params_file: ParamsOpt = None,
        stage: Annotated[Optional[list[str]], typer.Option("--stage", help="NAME=PATH: a stage folder somewhere else than DATA/NAME (repeatable).")] = None,
        metrics: Annotated[Optional[Path], typer.Option("--metrics", help="Where to write the headline figures: a flat JSON of eleven named scalars (images scraped, duplicates removed, label noise, split sizes, leaks, accuracy ...) for `dvc metrics show` and `dvc exp show` (default: metrics.json in --reports).", dir_okay=False)] = None,
        report: Annotated[Optional[Path], report_option("report")] = None,
    ) -> None:
        """Write one static HTML page for a pipeline run: counts at every stage per label and query,
        duplicate and label-conflict galleries, the audit, balance, training curves, the confusion
        matrix, the learning curve and the most confident mistakes. Beside it, DATASHEET.md: the
        dataset version's datasheet (motivation, composition, collection, cleaning, uses,
        licences, and the dvc.lock hashes that find the commit holding this exact version).
        And --metrics: the headline figures as flat scalars, what DVC shows as metrics.

        Every part is optional: what is absent is named on the page. The page embeds its images and
        charts (no script, no external URL), so it opens offline. The params file is shown in the
        header; what the page holds (sections, counts) goes to --report as JSON."""
        from datakit.console import write_report
        from datakit.report import DATASHEET, build_report, params_file_for, stage_folders
        from datakit.report.metrics import METRICS_FILE
        from datakit.stage import stage_report_path

        try:
            stages = stage_folders(data, parse_stage_overrides(stage))
            sheet = datasheet if datasheet is not None else out_file.parent / DATASHEET
            result = build_report(stages, reports, out_file, params_file=params_file_for(params_file), datasheet=sheet,
                                  project=Path.cwd())
        except DatakitError as exc:
            raise _fail(exc) from None
        write_report(stage_report_path("report", report), result)
        write_report(metrics if metrics is not None else reports / METRICS_FILE, result["metrics"])
        for line in result["absent"]:
            err.print(f"not in this run: {line}", highlight=False, markup=False)
        for line in result["notes"]:
            err.print(f"note: {line}", highlight=False, markup=False)
        out.print(str(out_file), highlight=False, markup=False, soft_wrap=True)
        out.print(str(sheet), highlight=False, markup=False, soft_wrap=True)


__all__ = ["register", "parse_stage_overrides"]
