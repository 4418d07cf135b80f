"""`datakit embed`: the command (options, one call into the stage, a summary)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from datakit.cli.app import app
from datakit.cli.common import ParamsOpt, input_argument, out_option, report_option
from datakit.console import out


@app.command(
    epilog=(
        "Examples:\n\n  datakit embed data/augment --out data/embed\n\n"
        "  datakit embed data/scrape --out data/embed-scrape --backbone resnet50\n\n"
        "  datakit embed data/augment --out data/embed --reuse data/embed-scrape   (only new images cost model time)\n\n"
        "  params.yaml: embed: {backbone: efficientnet_lite0, pretrained: true}   (the default: ImageNet weights offline, extra `weights`)"
    )
)
def embed(
    input_dir: Annotated[Path, input_argument("Any stage folder (manifest.parquet with path).")],
    out_dir: Annotated[Path, out_option("embeddings.parquet, embed.json, manifest.parquet (the input's), failures.parquet.")],
    params_file: ParamsOpt = None,
    backbone: Annotated[Optional[str], typer.Option(help="A backbone of the registry (params: embed.backbone): efficientnet_lite0 (default; lite1, lite2), resnet18, resnet50, mobilenet_v3_small, efficientnet_b0, convnext_tiny, vit_b_16, ...")] = None,
    pretrained: Annotated[Optional[bool], typer.Option("--pretrained/--random-weights", help="ImageNet weights, or seeded random weights for offline tests (params: embed.pretrained).")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N (params: embed.device).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per forward pass (params: embed.batch_size).")] = None,
    reuse: Annotated[Optional[list[Path]], typer.Option(help="An earlier embed folder whose vectors (same backbone, weights, preprocessing) are reused. Repeatable.")] = None,
    report: Annotated[Optional[Path], report_option("embed")] = None,
) -> None:
    """CNN embeddings for every image: a table keyed by image_id, for SMOTE, linear probes and dedup.

    A backbone with its ImageNet head removed turns each image into one vector (default
    efficientnet_lite0: 1280 floats, ImageNet weights from the `weights` extra, no network).
    Batched, on the GPU when there is one (bf16), on the CPU traced and frozen; resumable (a killed
    run re-embeds only what is missing) and incremental (vectors of an earlier table with the same
    backbone, weights and preprocessing are reused). Torchvision backbones' weights come from the
    torch hub cache or download.pytorch.org; embed.pretrained: false gives random weights (tests)."""
    from functools import partial

    from datakit.cli.common import load, run_command
    from datakit.console import fail
    from datakit.embed import run as run_embed
    from datakit.errors import DatakitError
    from datakit.manifest import FAILURES
    from datakit.parallel import configure_from_params
    from datakit.params import section
    from datakit.stage import SCRAPED, stage_report_path
    from datakit.vectors import EMBEDDINGS

    try:
        params = load(params_file)
        configure_from_params(params)
        p = section(params, "embed", backbone=backbone, pretrained=pretrained, device=device, batch_size=batch_size)
    except DatakitError as exc:
        raise fail(exc) from None
    result = run_command("embed", partial(run_embed, reuse=tuple(reuse or ())), input_dir, out_dir, p,
                         needs=(SCRAPED,), report=report)
    rep = result.report
    out.print(
        f"[bold]{rep['embedded']}[/] of {rep['images']} images embedded with {rep['backbone']} "
        f"({'pretrained' if rep['pretrained'] else 'random weights'}, {rep['dim']}-d) on {rep['device']}: "
        f"{rep['computed']} computed, {rep['reused']} reused, {rep['failures']} failed"
        + (f"; {rep['images_per_s']} img/s in the model" if rep["images_per_s"] else "")
        + f"\nembeddings: {out_dir / EMBEDDINGS}   failures: {out_dir / FAILURES}   report: {stage_report_path('embed', report)}"
    )
