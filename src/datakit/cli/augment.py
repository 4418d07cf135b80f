"""`datakit augment`: the command (options, one call into the stage, a summary)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

from datakit.cli.app import app
from datakit.cli.common import ParamsOpt, input_argument, out_option, report_option
from datakit.console import out


@app.command(
    epilog=(
        "Examples:\n\n  datakit augment data/split --out data/augment\n\n"
        "  params.yaml: augment: {preset: no-flip, variants: 3}       (text, characters)\n\n"
        "  params.yaml: augment: {transforms: [{name: HorizontalFlip, p: 0.5}, {name: Affine, rotate: [-10, 10]}]}"
    )
)
def augment(
    input_dir: Annotated[Path, input_argument("A split folder (manifest.parquet with split).")],
    out_dir: Annotated[Path, out_option("manifest.parquet (originals + variants), failures.parquet and images/ of the variants.")],
    params_file: ParamsOpt = None,
    report: Annotated[Optional[Path], report_option("augment")] = None,
) -> None:
    """Write augmented variants of the kept train images (val and test are never touched).

    K variants per image become new rows with origin=augmented, parent_ids and the sampled
    transform parameters, in their parent's group and split. The pipeline comes from params.yaml
    `augment` (a preset: fashion, no-flip, aerial, none; or a list of albumentations transforms)
    and is seeded per image. INPUT must be split (`datakit split` first)."""
    from datakit.augment import run as run_augment
    from datakit.cli.common import load, run_command
    from datakit.console import fail
    from datakit.errors import DatakitError
    from datakit.parallel import configure_from_params
    from datakit.params import section
    from datakit.stage import SCRAPED, SPLIT, stage_report_path

    try:
        params = load(params_file)
        configure_from_params(params)
        p = section(params, "augment")
    except DatakitError as exc:
        raise fail(exc) from None
    rep = run_command("augment", run_augment, input_dir, out_dir, p, needs=(SCRAPED, SPLIT), report=report).report
    out.print(f"{rep['variants']} variants of {rep['parents_with_variants']} train images written "
              f"({rep['failures']} failed: {rep['failures_by_reason'] or 'none'})\n"
              f"manifest: {out_dir / 'manifest.parquet'}   pipeline: {stage_report_path('augment', report)}")
