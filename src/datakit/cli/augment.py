"""`datakit augment`: the command (options, one call into the stage, a summary)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from datakit.cli.app import app
from datakit.console import fail as _fail
from datakit.console import out
from datakit.console import write_report as _write_report
from datakit.errors import DatakitError


@app.command(
    epilog=(
        "Examples:\n\n  datakit augment data/split --out data/augment\n\n"
        "  params.yaml: augment: {preset: no-flip, variants: 3}       (text, characters)\n\n"
        "  params.yaml: augment: {transforms: [{name: HorizontalFlip, p: 0.5}, {name: Affine, rotate: [-10, 10]}]}"
    )
)
def augment(
    input_dir: Annotated[Path, typer.Argument(metavar="INPUT", help="A split folder (manifest.parquet with split).", exists=True)],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder: manifest.parquet (originals + variants) and images/ of the variants.", file_okay=False)],
    params_file: Annotated[Optional[Path], typer.Option("--params", help="params.yaml to read (default: ./params.yaml if present).")] = None,
    report: Annotated[Path, typer.Option(help="Where to write the resolved pipeline and counts (DVC metrics).")] = Path("reports/augment.json"),
) -> None:
    """Write augmented variants of the kept train images (val and test are never touched).

    K variants per image become new rows with origin=augmented, parent_ids and the sampled
    transform parameters, in their parent's group and split. The pipeline comes from params.yaml
    `augment` (a preset: fashion, no-flip, aerial, none; or a list of albumentations transforms)
    and is seeded per image."""
    from datakit.augment import parse_augment, resolved_config
    from datakit.augment import run as run_augment
    from datakit.dedup import load_input
    from datakit.fsutil import folder_lock
    from datakit.images import ImageStore
    from datakit.manifest import MANIFEST, write_table
    from datakit.parallel import configure_from_params
    from datakit.params import load_params

    try:
        params = load_params(params_file)
        configure_from_params(params)
        p = parse_augment(params.augment)
        df, root = load_input(input_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with folder_lock(out_dir, "datakit augment"):
            failures: list[dict[str, Any]] = []
            result = run_augment(df, p, root=root, store=ImageStore(out_dir), failures=failures)
            write_table(result, out_dir / MANIFEST)
    except DatakitError as exc:
        raise _fail(exc) from None
    variants = result[result["origin"] == "augmented"]
    rep = {
        "pipeline": resolved_config(p),
        "originals": int((result["origin"] != "augmented").sum()),
        "variants": int(len(variants)),
        "variants_per_label": {str(k): int(v) for k, v in variants["label"].value_counts().sort_index().items()},
        "failures": len(failures),
        "failures_by_reason": {r: sum(1 for f in failures if f["reason"] == r) for r in sorted({f["reason"] for f in failures})},
    }
    _write_report(report, rep)
    out.print(f"{rep['variants']} variants of {variants['parent_ids'].map(lambda x: x[0]).nunique() if len(variants) else 0} "
              f"train images written ({rep['failures']} failed: {rep['failures_by_reason'] or 'none'})\n"
              f"manifest: {out_dir / MANIFEST}   pipeline: {report}")
