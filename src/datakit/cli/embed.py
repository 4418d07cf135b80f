"""`datakit embed`: the command (options, one call into the stage, a summary)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from datakit.cli.app import app
from datakit.console import RichUi, out
from datakit.console import fail as _fail
from datakit.console import write_report as _write_report
from datakit.errors import DatakitError


@app.command(
    epilog=(
        "Examples:\n\n  datakit embed data/augment --out data/embed\n\n"
        "  datakit embed data/scrape --out data/embed-scrape --backbone resnet50\n\n"
        "  datakit embed data/augment --out data/embed --reuse data/embed-scrape   (only new images cost model time)\n\n"
        "  params.yaml: embed: {backbone: efficientnet_lite0, pretrained: true}   (the default: ImageNet weights offline, extra `weights`)"
    )
)
def embed(
    input_dir: Annotated[Path, typer.Argument(metavar="INPUT", help="Any stage folder (manifest.parquet with path).", exists=True)],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder: embeddings.parquet, embed.json, manifest.parquet (the input's), failures.parquet.", file_okay=False)],
    params_file: Annotated[Optional[Path], typer.Option("--params", help="params.yaml to read (default: ./params.yaml if present).")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="A backbone of the registry (params: embed.backbone): efficientnet_lite0 (default; lite1, lite2), resnet18, resnet50, mobilenet_v3_small, efficientnet_b0, convnext_tiny, vit_b_16, ...")] = None,
    pretrained: Annotated[Optional[bool], typer.Option("--pretrained/--random-weights", help="ImageNet weights, or seeded random weights for offline tests (params: embed.pretrained).")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N (params: embed.device).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per forward pass (params: embed.batch_size).")] = None,
    reuse: Annotated[Optional[list[Path]], typer.Option(help="An earlier embed folder whose vectors (same backbone, weights, preprocessing) are reused. Repeatable.")] = None,
    report: Annotated[Path, typer.Option(help="Where to write the stage's figures (DVC metrics).")] = Path("reports/embed.json"),
) -> None:
    """CNN embeddings for every image: a table keyed by image_id, for SMOTE, linear probes and dedup.

    A backbone with its ImageNet head removed turns each image into one vector (default
    efficientnet_lite0: 1280 floats, ImageNet weights from the `weights` extra, no network).
    Batched, on the GPU when there is one (bf16), on the CPU traced and frozen; resumable (a killed
    run re-embeds only what is missing) and incremental (vectors of an earlier table with the same
    backbone, weights and preprocessing are reused). Torchvision backbones' weights come from the
    torch hub cache or download.pytorch.org; embed.pretrained: false gives random weights (tests)."""
    from datakit.dedup import load_input
    from datakit.embed import EMBEDDINGS, parse_embed
    from datakit.embed import run as run_embed
    from datakit.fsutil import folder_lock
    from datakit.manifest import FAILURE_SCHEMA, FAILURES, MANIFEST, write_table
    from datakit.parallel import configure_from_params
    from datakit.params import load_params

    try:
        params = load_params(params_file)
        configure_from_params(params)
        raw = dict(params.embed or {})
        for k, v in (("backbone", backbone), ("pretrained", pretrained), ("device", device), ("batch_size", batch_size)):
            if v is not None:
                raw[k] = v
        p = parse_embed(raw)
        df, root = load_input(input_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with folder_lock(out_dir, "datakit embed"), RichUi() as ui:
            failures: list[dict[str, Any]] = []
            ui.start("embed", len(df))

            def progress(phase: str, done: int, total: int) -> None:
                ui.start(phase, total) if phase not in ui.tasks else None
                ui.progress.update(ui.tasks[phase], completed=done, total=total)

            rep = run_embed(df, p, root=root, out_dir=out_dir, reuse=reuse or (), failures=failures, progress=progress)
            write_table(df, out_dir / MANIFEST)
            write_table(pd_frame(failures), out_dir / FAILURES, FAILURE_SCHEMA)
    except DatakitError as exc:
        raise _fail(exc) from None
    _write_report(report, rep)
    out.print(
        f"[bold]{rep['embedded']}[/] of {rep['images']} images embedded with {rep['backbone']} "
        f"({'pretrained' if rep['pretrained'] else 'random weights'}, {rep['dim']}-d) on {rep['device']}: "
        f"{rep['computed']} computed, {rep['reused']} reused, {rep['failures']} failed"
        + (f"; {rep['images_per_s']} img/s in the model" if rep["images_per_s"] else "")
        + f"\nembeddings: {out_dir / EMBEDDINGS}   failures: {out_dir / FAILURES}"
    )


def pd_frame(rows: list[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows, columns=["image_id", "label", "path", "reason", "detail"]) if rows else pd.DataFrame(
        columns=["image_id", "label", "reason", "detail"])
