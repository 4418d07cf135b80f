"""`datakit colors`: dominant named colours per image (see datakit.colors).

`register(app)` adds the command to the main Typer app. The command only parses options, loads
params, reads the input manifest, calls `datakit.colors.run`, writes the manifest, the page and
the figures, and prints a summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from datakit.console import fail as _fail
from datakit.console import out
from datakit.console import write_report as _write_report
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
        input_dir: Annotated[Path, typer.Argument(metavar="INPUT", help="An earlier stage's folder (its manifest.parquet).", exists=True)],
        out_dir: Annotated[Path, typer.Option("--out", help="Output folder: manifest.parquet (+ colour columns), colors.html, masks/.", file_okay=False)],
        params_file: Annotated[Optional[Path], typer.Option("--params", help="params.yaml to read (default: ./params.yaml if present).")] = None,
        foreground: Annotated[Optional[str], typer.Option(help="auto, grabcut, border or none (params: colors.foreground).")] = None,
        palette: Annotated[Optional[str], typer.Option(help="basic, fashion or a CSV file name,r,g,b[,family] (params: colors.palette).")] = None,
        masks: Annotated[Optional[bool], typer.Option("--masks/--no-masks", help="Write the foreground masks as PNGs to OUT/masks/ (params: colors.masks).")] = None,
        workers: Annotated[Optional[int], typer.Option(help="Processes; 0 = one per core (params: colors.workers).")] = None,
        report: Annotated[Path, typer.Option(help="Where to write the stage's figures (DVC metrics).")] = Path("reports/colors.json"),
    ) -> None:
        """Name the dominant colours of every image's product: foreground (GrabCut or border
        colour), k-means in CIELAB, clusters merged by CIEDE2000, named by the nearest palette colour.

        Reads INPUT/manifest.parquet and params.yaml `colors`. Writes OUT/manifest.parquet with every
        input row plus colors (list of {name, family, hex, weight, delta_e}), color_1, color_1_family,
        color_1_hex, color_1_weight, color_method, color_foreground, color_mask and color_error (an
        unreadable image is recorded there, not fatal); OUT/colors.html (swatches next to thumbnails);
        with --masks, OUT/masks/<image_id>.png."""
        from datakit.colors import MASKS, PAGE, load_palette, parse_colors, write_page
        from datakit.colors import run as run_colors
        from datakit.console import RichUi
        from datakit.dedup import load_input
        from datakit.fsutil import folder_lock
        from datakit.manifest import MANIFEST, write_table
        from datakit.params import load_params

        try:
            params = load_params(params_file)
            raw = params.colors
            if raw is not None and not isinstance(raw, dict):
                parse_colors(raw)  # raises, naming `colors`
            given = {"foreground": foreground, "palette": palette, "masks": masks, "workers": workers}
            p = parse_colors({**(raw or {}), **{k: v for k, v in given.items() if v is not None}})
            pal = load_palette(p.palette)
            df, root = load_input(input_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            with folder_lock(out_dir, "datakit colors"):
                with RichUi() as ui:
                    result = run_colors(df, p, root=root, masks_dir=out_dir / MASKS if p.masks else None, palette=pal, ui=ui)
                write_table(result.manifest, out_dir / MANIFEST, schema=result.schema())
                write_page(result.manifest, root, result.report, out_dir / PAGE, images=p.page_images, palette=pal)
        except DatakitError as exc:
            raise _fail(exc) from None
        _write_report(report, result.report)
        r = result.report
        t = Table(title=f"colors: dominant colour ({r['palette']} palette)")
        t.add_column("colour")
        t.add_column("images", justify="right")
        for name, count in sorted(r["dominant"].items(), key=lambda kv: (-kv[1], kv[0])):
            t.add_row(name, str(count))
        out.print(t)
        failed = f" ({', '.join(f'{k} {v}' for k, v in r['failed_by_reason'].items())})" if r["failed"] else ""
        out.print(
            f"[bold]{r['analysed']}[/] of {r['images']} images analysed, {r['failed']} not{failed}; "
            f"foreground {', '.join(f'{k} {v}' for k, v in r['methods'].items()) or '-'}; "
            f"{r['mean_colors_per_image']} colours per image; {r['images_per_s']} img/s\n"
            f"manifest: {out_dir / MANIFEST}   page: {out_dir / PAGE}"
            + (f"   masks: {out_dir / MASKS}" if p.masks else ""),
            highlight=False,
        )


__all__ = ["register", "COLORS_EPILOG"]
