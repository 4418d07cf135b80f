"""What every stage command shares: the option declarations (`--params`, `--out`, `--report`
mean the same everywhere) and the one run-a-stage call."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from datakit.console import RichUi
from datakit.console import fail as _fail
from datakit.errors import DatakitError

ParamsOpt = Annotated[Optional[Path], typer.Option("--params", help="params.yaml to read (default: ./params.yaml if present).")]


def out_option(what: str) -> Any:
    """`--out DIR`: the stage's output folder, `what` saying what lands there."""
    return typer.Option("--out", help=f"Output folder: {what}", file_okay=False)


def report_option(stage: str) -> Any:
    """`--report FILE`: where the stage's figures go (default reports/<stage>.json; its timings beside it)."""
    return typer.Option("--report", help=f"Where to write the stage's figures as JSON (default reports/{stage}.json; "
                        "its wall times and throughput go beside it, to NAME.run.json).")


def input_argument(what: str) -> Any:
    return typer.Argument(metavar="INPUT", help=what, exists=True)


def run_command(stage: str, run: Callable[..., Any], source: Path | None, out: Path, params: Any, *,
                needs: Iterable[Any] | None = None, required: Iterable[str] = (), check_files: bool = True,
                report: Path | None = None, embeddings: Path | None = None, progress: bool = True,
                **kwargs: Any) -> Any:
    """Run a stage through `datakit.stage.run_stage` with a progress bar on stderr; a DatakitError
    becomes one red line and exit 1."""
    from datakit.stage import SCRAPED, run_stage, stage_report_path

    try:
        if progress:
            with RichUi() as ui:
                return run_stage(stage, run, source, out, params, needs=needs if needs is not None else (SCRAPED,),
                                 required=required, check_files=check_files, report=stage_report_path(stage, report),
                                 embeddings=embeddings, progress=ui, **kwargs)
        return run_stage(stage, run, source, out, params, needs=needs if needs is not None else (SCRAPED,),
                         required=required, check_files=check_files, report=stage_report_path(stage, report),
                         embeddings=embeddings, **kwargs)
    except DatakitError as exc:
        raise _fail(exc) from None


def load(params_file: Path | None) -> Any:
    """params.yaml (or the default), a DatakitError becoming one red line and exit 1."""
    from datakit.params import load_params

    try:
        return load_params(params_file)
    except DatakitError as exc:
        raise _fail(exc) from None
