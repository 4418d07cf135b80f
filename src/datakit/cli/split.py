"""`datakit split`: the command (options, one call into the stage, a summary)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from datakit.cli.app import app
from datakit.console import fail as _fail
from datakit.console import out
from datakit.console import write_report as _write_report
from datakit.errors import DatakitError


@app.command(
    epilog=(
        "Examples:\n\n  datakit split data/dedup --out data/split\n\n"
        "  datakit split data/dedup-v2 --previous data/split-v1 --out data/split-v2   (old images keep their split)"
    )
)
def split(
    input_dir: Annotated[Path, typer.Argument(metavar="INPUT", help="A dedup folder (its manifest.parquet with dup_group, keep).", exists=True)],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder: manifest.parquet with split_group, split (and fold).", file_okay=False)],
    previous: Annotated[Optional[Path], typer.Option(help="An earlier version's split folder or manifest: its groups keep their split.", exists=True)] = None,
    params_file: Annotated[Optional[Path], typer.Option("--params", help="params.yaml to read (default: ./params.yaml if present).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Split seed (params: split.seed).")] = None,
    report: Annotated[Path, typer.Option(help="Where to write the stage's figures (DVC metrics).")] = Path("reports/split.json"),
) -> None:
    """Assign every kept image to train/val/test (and folds) without leakage.

    A duplicate group (joined with any split.group_by column) never straddles splits, every class
    is in every split, class proportions hold within one group, and --previous keeps an old test
    set the test set. Writes OUT/manifest.parquet with split_group, split (and fold)."""
    from datakit.dedup import load_input
    from datakit.fsutil import folder_lock
    from datakit.manifest import MANIFEST, read_table, write_table
    from datakit.params import load_params, override
    from datakit.split import run as run_split

    try:
        p = override(load_params(params_file).split, "split", seed=seed)
        df, _root = load_input(input_dir)
        prev = read_table(previous / MANIFEST if previous.is_dir() else previous) if previous else None
        out_dir.mkdir(parents=True, exist_ok=True)
        with folder_lock(out_dir, "datakit split"):
            result, rep = run_split(df, p, previous=prev)
            write_table(result, out_dir / MANIFEST)
    except DatakitError as exc:
        raise _fail(exc) from None
    _write_report(report, rep)
    names = list(rep["per_split"])
    t = Table(title="split: images per class and split")
    t.add_column("label")
    for s in names:
        t.add_column(s, justify="right")
    for label, row in rep["per_class"].items():
        t.add_row(label, *(f"{row['counts'][s]} ({row['proportions'][s]:.0%})" for s in names))
    out.print(t)
    merged = f", {len(rep['previous_merges'])} merged groups" if rep["previous_merges"] else ""
    out.print(f"{rep['split_images']} images in {rep['groups']} groups (largest {rep['largest_group']}); "
              f"moved from --previous: {rep['moved_from_previous']}{merged}\nmanifest: {out_dir / MANIFEST}")
