"""`datakit export`: the command (options, one call into the stage, a summary)."""

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
    epilog=(
        "Examples:\n\n  datakit export data/split --out export/imagefolder        (torchvision / Keras / fastai)\n\n"
        "  datakit export data/split --out export/hf --layout hf --link copy   (Hugging Face imagefolder)"
    )
)
def export(
    input_dir: Annotated[Path, input_argument("A split folder (manifest.parquet with a split column).")],
    out_dir: Annotated[Path, out_option("the class folders (OUT/<split>/...).")],
    layout: Annotated[str, typer.Option(help="imagefolder: OUT/<split>/<label>/<file>; hf: OUT/<split>/<file> + metadata.csv.")] = "imagefolder",
    link: Annotated[str, typer.Option(help="hardlink (default; shares storage with the store, so never edit exported files), copy or symlink.")] = "hardlink",
    splits: Annotated[Optional[list[str]], typer.Option("--split", help="Only these splits (repeatable).")] = None,
    datasheet: Annotated[Optional[Path], typer.Option(
        help="A DATASHEET.md to copy into OUT (datakit report writes reports/DATASHEET.md).", exists=True, dir_okay=False)] = None,
    params_file: ParamsOpt = None,
    report: Annotated[Optional[Path], report_option("export")] = None,
) -> None:
    """Write a split as class folders (torchvision ImageFolder, Keras, fastai, Hugging Face).

    Rows not kept (keep False or missing) or with no split are skipped and counted. Each split
    folder is rebuilt beside the old one and swapped in, so a killed export never leaves half a
    folder. OUT also gets ATTRIBUTION.md and attribution.csv (title, creator, licence and source
    of every exported original image, as `datakit credits` writes them) and, with --datasheet, a
    copy of DATASHEET.md. export has no params section: --params is only checked, as every command checks it.
    What was written (per split and label, skips, link modes) goes to --report as JSON."""
    from datakit.console import write_report
    from datakit.export import export_manifest
    from datakit.stage import stage_report_path

    load(params_file)
    try:
        rep = export_manifest(input_dir, out_dir, layout=layout, link=link, splits=splits,  # type: ignore[arg-type]
                              datasheet=datasheet)
    except DatakitError as exc:
        raise _fail(exc) from None
    write_report(stage_report_path("export", report), rep.to_dict())
    for line in rep.lines():
        out.print(line, highlight=False)
