"""`datakit balance`: the command (options, one call into the stage, a summary).

The composition root for balance: the augment pipeline reaches the stage as a `make_variant`
callable (`datakit.augment.variant_maker`) and the embeddings as `ctx.embeddings`, so the stage
imports neither augment nor embed."""

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
        "Examples:\n\n  datakit balance data/augment --out data/balance\n\n"
        "  params.yaml: balance: {strategy: oversample, target: auto}\n\n"
        "  params.yaml: balance: {strategy: undersample, target: {vest: 100, hoodie: 100}}"
    )
)
def balance(
    input_dir: Annotated[Path, input_argument("A split or augment folder (manifest.parquet with split).")],
    out_dir: Annotated[Path, out_option("manifest.parquet, failures.parquet, class_weights.json, report.html and images/ of new rows.")],
    params_file: ParamsOpt = None,
    embeddings: Annotated[Optional[Path], typer.Option(help="An embed folder or embeddings.parquet (default: balance.embeddings, else INPUT/embeddings.parquet when present); smote needs one.")] = None,
    report: Annotated[Optional[Path], report_option("balance")] = None,
) -> None:
    """Even out the classes training sees: oversample, undersample, class weights, SMOTE on embeddings or pixels.

    The counts are the rows training uses: kept train rows of every origin (augment's variants
    included). balance.strategy: oversample (repeat minority originals through the augment
    pipeline, so copies differ), undersample (rows marked keep=False, never deleted; augment
    variants go first), class_weights (OUT/class_weights.json for the trainer), smote (SMOTE on
    datakit embed vectors: synthetic vectors for a linear probe, no images), smote_pixels (SMOTE
    on small pixel arrays: blended images, the weaker option). Targets take imbalanced-learn's
    forms (auto, a ratio, a per-class dict). OUT/report.html shows counts before/after and
    thumbnails of what each origin added. Val and test are never touched."""
    from functools import partial

    from datakit.augment import variant_maker
    from datakit.balance import run as run_balance
    from datakit.cli.common import load, run_command
    from datakit.console import fail
    from datakit.errors import DatakitError
    from datakit.params import section
    from datakit.stage import SCRAPED, SPLIT, find_embeddings

    try:
        params = load(params_file)
        p = section(params, "balance", embeddings=str(embeddings) if embeddings else None)
        make_variant = variant_maker(section(params, "augment"))
        table = find_embeddings(p.embeddings, input_dir)
    except DatakitError as exc:
        raise fail(exc) from None
    rep = run_command("balance", partial(run_balance, make_variant=make_variant), input_dir, out_dir, p,
                      needs=(SCRAPED, SPLIT), report=report, embeddings=table).report
    t = Table(title=f"balance ({p.strategy}): training rows per class", caption=f"counted: {rep['counts']}")
    for col in ("label", "before", "after", "weight"):
        t.add_column(col, justify="left" if col == "label" else "right")
    for label, before in rep["counts_before"].items():
        t.add_row(label, str(before), str(rep["counts_after"].get(label, before)), f"{rep['class_weights'].get(label, 0):.3f}")
    out.print(t)
    out.print(f"imbalance (largest/smallest class) {rep['imbalance_before']} -> {rep['imbalance_after']}; "
              f"added {rep['rows_added'] or 'none'}, undersampled {rep['rows_undersampled']}, "
              f"failures {rep['failures_by_reason'] or 'none'}\n"
              f"manifest: {out_dir / 'manifest.parquet'}   weights: {out_dir / 'class_weights.json'}   page: {out_dir / 'report.html'}")
