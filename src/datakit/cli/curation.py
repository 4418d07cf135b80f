"""`datakit suspects`, `datakit review`, `datakit curate`: find the images that do not belong,
let a person decide, apply the decisions before split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from datakit.cli.app import app
from datakit.cli.common import ParamsOpt, input_argument, out_option, report_option
from datakit.console import err, out
from datakit.console import fail as _fail
from datakit.errors import DatakitError


@app.command(
    epilog=(
        "Examples:\n\n  datakit suspects data/dedup --embeddings data/embed --out data/suspects\n\n"
        "  datakit review data/suspects            (decide in the browser; writes review/decisions.csv)\n\n"
        "  params.yaml: suspects: {folds: 5, neighbours: 10}"
    ),
    short_help="Score every image for a wrong label (off topic, mislabelled, ambiguous); estimate noise per query.",
)
def suspects(
    input_dir: Annotated[Path, input_argument("A dedup folder (its manifest.parquet; duplicate groups stay in one fold).")],
    out_dir: Annotated[Path, out_option("manifest.parquet (+ score, suggested_label, flagged, reason), suspects.parquet, suspects.html.")],
    embeddings: Annotated[Optional[Path], typer.Option(help="An embed folder or embeddings.parquet (default: INPUT's own table).", exists=True)] = None,
    params_file: ParamsOpt = None,
    report: Annotated[Optional[Path], report_option("suspects")] = None,
) -> None:
    """Find the scraped images whose label looks wrong; marks, not deletions.

    Out-of-fold probabilities of a linear probe on the embeddings (folds keep duplicate groups
    together) averaged with the labels of each image's nearest neighbours. Per image: score (0-1,
    higher = more likely wrong), suggested_label, flagged, reason (likely_mislabel, off_topic,
    ambiguous). The report estimates the share of wrong labels per label, query and provider
    (calibrated confident joint). Review the suspects with `datakit review OUT`."""

    from datakit.cli.common import load, run_command
    from datakit.curation.suspects import parse_suspects
    from datakit.curation.suspects import run as run_suspects
    from datakit.stage import DEDUPLICATED, SCRAPED, find_embeddings

    try:
        p = parse_suspects(load(params_file).suspects)
        vectors = find_embeddings(embeddings, input_dir)
    except DatakitError as exc:
        raise _fail(exc) from None
    result = run_command("suspects", run_suspects, input_dir, out_dir, p, needs=(SCRAPED, DEDUPLICATED),
                         report=report, embeddings=vectors)
    rep = result.report
    t = Table(title="suspects: estimated wrong labels per label")
    for col in ("label", "images", "flagged", "estimated"):
        t.add_column(col, justify="left" if col == "label" else "right")
    for label, v in rep["noise_by_label"].items():
        t.add_row(label, str(v["images"]), str(v["flagged"]), f"{v['estimated_noise']:.0%}")
    out.print(t)
    for line in rep["lines"][:5]:
        out.print("  " + line, highlight=False)
    out.print(f"[bold]{rep['scored']}[/] images scored: {rep['flagged']} flagged "
              f"({', '.join(f'{k} {v}' for k, v in rep['flagged_by_reason'].items())}), {rep['ambiguous']} ambiguous; "
              f"estimated {rep['estimated_noise']:.1%} wrong labels overall, in {rep['seconds']} s\n"
              f"manifest: {out_dir / 'manifest.parquet'}   page: {out_dir / 'suspects.html'}   "
              f"next: datakit review {out_dir}")


@app.command(
    epilog=(
        "Keys: a accept · x remove · s skip · u undo · 1-9 (and more letters, shown) relabel · Tab next queue\n\n"
        "Example:\n\n  datakit review data/suspects --decisions review/decisions.csv"
    ),
    short_help="Review suspects, label conflicts and near-duplicates in your browser; decisions go to a CSV.",
)
def review(
    folder: Annotated[Path, typer.Argument(help="A suspects folder (or any folder with dedup columns).", exists=True, file_okay=False)],
    decisions: Annotated[Path, typer.Option(help="The decisions file (a DVC dependency of `curate`).")] = Path("review/decisions.csv"),
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 8765,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="Open the page in the default browser.")] = True,
) -> None:
    """Serve a keyboard-first review page on 127.0.0.1 until Ctrl-C.

    Queues: suspects by score, label-conflict groups, near-duplicate groups. Every decision is
    saved at once (atomically) to --decisions, keyed by image_id; closing the page loses nothing
    and reopening resumes. Apply the decisions with `datakit curate` (or `dvc repro`)."""
    import asyncio

    from datakit.curation.review import Server, load, serve
    from datakit.fsutil import folder_lock

    try:
        data = load(folder)
        decisions.parent.mkdir(parents=True, exist_ok=True)
        with folder_lock(decisions.parent, "datakit review"):
            server = Server(data, decisions)

            def ready(url: str) -> None:
                n = {k: len(v) for k, v in data.queues.items()}
                err.print(f"review: {url}  ({n['suspects']} suspects, {n['conflicts']} conflict groups, "
                          f"{n['duplicates']} duplicate groups); decisions: {decisions}; Ctrl-C to stop", highlight=False)
                if open_browser:
                    import webbrowser

                    webbrowser.open(url)

            try:
                asyncio.run(serve(server, port, ready))
            except KeyboardInterrupt:
                pass
    except (DatakitError, OSError) as exc:
        raise _fail(exc) from None


@app.command(
    epilog="Example:\n\n  datakit curate data/suspects --decisions review/decisions.csv --out data/curate",
    short_help="Apply the review decisions (relabel, remove) and the licence gate before split; every row stays, with its reason.",
)
def curate(
    input_dir: Annotated[Path, input_argument("A suspects (or dedup) folder.")],
    out_dir: Annotated[Path, out_option("manifest.parquet with the decisions applied, failures.parquet (removed rows).")],
    decisions: Annotated[Path, typer.Option(help="The decisions file `datakit review` writes (missing: no decisions).")] = Path("review/decisions.csv"),
    allow_license: Annotated[Optional[list[str]], typer.Option(
        "--allow-license", help="Licence families to keep, instead of licenses.allow (repeatable): "
                                "CC0/PDM, BY, BY-SA, NC, ND, other, unknown.")] = None,
    params_file: ParamsOpt = None,
    report: Annotated[Optional[Path], report_option("curate")] = None,
) -> None:
    """Apply a person's decisions: relabel (label_before_review keeps the old one), remove
    (keep=False, reason reviewed_remove), accept (reviewed=True). Decisions that name images no
    longer present are reported, not fatal. Then the licence gate: images whose licence family
    is not in licenses.allow get keep=False (reason licence_not_allowed)."""
    from functools import partial

    from datakit.cli.common import load, run_command
    from datakit.curation.curate import run as run_curate
    from datakit.params import section
    from datakit.stage import SCRAPED

    try:
        gate = section(load(params_file), "licenses", allow=allow_license)
    except DatakitError as exc:
        raise _fail(exc) from None
    result = run_command("curate", partial(run_curate, decisions=decisions), input_dir, out_dir, gate,
                         needs=(SCRAPED,), report=report)
    rep = result.report
    lic = rep["licenses"]
    out.print(f"{rep['decisions']} decisions: {rep['relabelled']} relabelled, {rep['removed']} removed, "
              f"{rep['accepted']} accepted"
              + (f"; {rep['unknown_images']} name images not in {input_dir} (reported, ignored)" if rep["unknown_images"] else "")
              + (f"\nlicence gate (allow {', '.join(lic['allow'])}): {lic['dropped']} dropped ("
                 + ", ".join(f"{f} {n}" for f, n in lic["dropped_by_family"].items()) + ")" if lic["dropped"] else "")
              + f"\nmanifest: {out_dir / 'manifest.parquet'}", highlight=False)
