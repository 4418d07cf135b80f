"""`datakit split`: the command (options, one call into the stage, a summary)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from datakit.cli.app import app
from datakit.cli.common import ParamsOpt, input_argument, out_option, report_option
from datakit.console import out


@app.command(
    epilog=(
        "Examples:\n\n  datakit split data/dedup --out data/split\n\n"
        "  datakit split data/dedup-v2 --previous data/split-v1 --out data/split-v2   (old images keep their split)\n\n"
        "  datakit split data/scrape --no-dedup --out data/split   (raw data: copies may straddle splits)"
    )
)
def split(
    input_dir: Annotated[Path, input_argument("A dedup folder (its manifest.parquet with dup_group, keep).")],
    out_dir: Annotated[Path, out_option("manifest.parquet with split_group, split (and fold).")],
    previous: Annotated[Optional[Path], typer.Option(help="An earlier version's split folder or manifest: its groups keep their split.", exists=True)] = None,
    no_dedup: Annotated[bool, typer.Option("--no-dedup", help="Split an input that was never deduplicated (each image its own group): near-copies may then land in different splits and leak.")] = False,
    params_file: ParamsOpt = None,
    seed: Annotated[Optional[int], typer.Option(help="Split seed (params: split.seed).")] = None,
    report: Annotated[Optional[Path], report_option("split")] = None,
) -> None:
    """Assign every kept image to train/val/test (and folds) without leakage.

    A duplicate group (joined with any split.group_by column) never straddles splits, every class
    is in every split, class proportions hold within one group, and --previous keeps an old test
    set the test set. INPUT must be deduplicated (`datakit dedup` first) unless --no-dedup.
    Writes OUT/manifest.parquet with split_group, split (and fold)."""
    from functools import partial

    from datakit.cli.common import load, run_command
    from datakit.console import fail
    from datakit.errors import DatakitError
    from datakit.params import section
    from datakit.split import run as run_split
    from datakit.stage import DEDUPLICATED, SCRAPED

    try:
        sp = section(load(params_file), "split", seed=seed)
    except DatakitError as exc:
        raise fail(exc) from None
    result = run_command("split", partial(run_split, previous=previous), input_dir, out_dir, sp,
                         needs=(SCRAPED,) if no_dedup else (SCRAPED, DEDUPLICATED), report=report)
    rep = result.report
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
              f"moved from --previous: {rep['moved_from_previous']}{merged}\nmanifest: {out_dir / 'manifest.parquet'}")

