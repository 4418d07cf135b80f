"""`datakit colors`: dominant named colours per image (see datakit.colors).

`register(app)` adds the command to the main Typer app. The command declares its options and
runs the stage (`datakit.colors.run`) through `run_command`, then prints a summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from datakit.cli.common import ParamsOpt, input_argument, load, out_option, report_option, run_command
from datakit.console import fail as _fail
from datakit.console import out
from datakit.errors import DatakitError

COLORS_EPILOG = (
    "Examples:\n\n"
    "  datakit colors data/dedup --out data/colors\n\n"
    "  datakit colors data/scrape --out data/colors --masks --palette fashion\n\n"
    "  datakit colors data/scrape --out data/colors --foreground border --workers 4\n\n"
    "  params.yaml: colors: {foreground: auto, k: 6, merge_delta_e: 9, palette: my_palette.csv, max_colors: 3}"
)


def register(app: typer.Typer) -> None:
    """Add `colors` to `app`."""

    @app.command("colors", epilog=COLORS_EPILOG,
                 short_help="Dominant colours of each image's product, named against a palette (manifest columns + HTML page).")
    def colors(
        input_dir: Annotated[Path, input_argument("An earlier stage's folder (its manifest.parquet).")],
        out_dir: Annotated[Path, out_option("manifest.parquet (+ colour columns), colors.html, masks/.")],
        params_file: ParamsOpt = None,
        foreground: Annotated[Optional[str], typer.Option(help="auto, grabcut, border or none (params: colors.foreground).")] = None,
        palette: Annotated[Optional[str], typer.Option(help="basic, fashion or a CSV file name,r,g,b[,family] (params: colors.palette).")] = None,
        masks: Annotated[Optional[bool], typer.Option("--masks/--no-masks", help="Write the foreground masks as PNGs to OUT/masks/ (params: colors.masks).")] = None,
        workers: Annotated[Optional[int], typer.Option(help="Processes; 0 = one per core (params: colors.workers).")] = None,
        report: Annotated[Optional[Path], report_option("colors")] = None,
    ) -> None:
        """Name the dominant colours of every image's product: foreground (GrabCut or border
        colour), k-means in CIELAB, clusters merged by CIEDE2000, named by the nearest palette colour.

        Reads INPUT/manifest.parquet and params.yaml `colors`. Writes OUT/manifest.parquet with every
        input row plus colors (list of {name, family, hex, weight, delta_e}), color_1, color_1_family,
        color_1_hex, color_1_weight, color_method, color_foreground, color_mask and color_error (an
        unreadable image is recorded there and in OUT/failures.parquet, not fatal); OUT/colors.html
        (swatches next to thumbnails); with --masks, OUT/masks/<image_id>.png."""
        from datakit.colors import parse_colors
        from datakit.colors import run as run_colors
        from datakit.params import section
        from datakit.stage import SCRAPED

        params = load(params_file)
        try:
            if not isinstance(params.colors, dict | None):
                parse_colors(params.colors)  # one line naming `colors` (not a mapping)
            p = section(params, "colors", foreground=foreground, palette=palette, masks=masks, workers=workers)
        except DatakitError as exc:
            raise _fail(exc) from None
        result = run_command("colors", run_colors, input_dir, out_dir, p, needs=(SCRAPED,), report=report)
        r = result.report
        t = Table(title=f"colors: dominant colour ({r['palette']} palette)")
        t.add_column("colour")
        t.add_column("images", justify="right")
        for name, count in sorted(r["dominant"].items(), key=lambda kv: (-kv[1], kv[0])):
            t.add_row(name, str(count))
        out.print(t)
        failed = f" ({', '.join(f'{k} {v}' for k, v in r['failed_by_reason'].items())})" if r["failed"] else ""
        files = result.files
        out.print(
            f"[bold]{r['analysed']}[/] of {r['images']} images analysed, {r['failed']} not{failed}; "
            f"foreground {', '.join(f'{k} {v}' for k, v in r['methods'].items()) or '-'}; "
            f"{r['mean_colors_per_image']} colours per image; {r['images_per_s']} img/s\n"
            f"manifest: {out_dir / 'manifest.parquet'}   page: {files.get('page', '-')}"
            + (f"   masks: {files['masks']}" if "masks" in files else ""),
            highlight=False,
        )


__all__ = ["register", "COLORS_EPILOG"]
