"""`datakit dedup`: the command (options, one call into the stage, a summary)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from datakit.cli.app import app
from datakit.cli.common import ParamsOpt, input_argument, load, out_option, report_option, run_command
from datakit.console import err, out
from datakit.console import fail as _fail
from datakit.console import write_report as _write_report
from datakit.errors import DatakitError
from datakit.manifest import MANIFEST


class _DefaultRun(typer.core.TyperGroup):
    """`datakit dedup INPUT ...` means `datakit dedup run INPUT ...`; `datakit dedup calibrate`
    stays a subcommand."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """The group's help, then the default command's (`datakit dedup INPUT --out DIR ...` is
        `dedup run`): its arguments and every option, so `datakit dedup --help` teaches both."""
        super().format_help(ctx, formatter)
        run = self.commands.get("run")
        if run is not None:
            sub = run.make_context("run", [], parent=ctx, resilient_parsing=True)
            run.format_help(sub, formatter)


dedup_app = typer.Typer(
    cls=_DefaultRun,
    no_args_is_help=True,
    help=(
        "Find exact and near-duplicate images (256-bit dhash within a Hamming radius, plus central-crop "
        "hashes for re-cropped copies), group them, keep one per group and flag label conflicts.\n\n"
        "  datakit dedup data/scrape --out data/dedup\n\n"
        "  datakit dedup calibrate data/scrape          (precision/recall per signal on your images; recommends the thresholds)"
    ),
)
app.add_typer(dedup_app, name="dedup", short_help="Find exact, near and re-cropped duplicates; keep one per group; flag label conflicts.")


@dedup_app.command(
    "run",
    epilog=(
        "Examples:\n\n  datakit dedup data/scrape --out data/dedup\n\n"
        "  datakit dedup data/scrape-v2 --against data/dedup-v1 --out data/dedup-v2   (new vs an old version)\n\n"
        "  datakit dedup data/scrape --out data/dedup --threshold 8 --exact"
    ),
)
def dedup_run(
    input_dir: Annotated[Path, input_argument("An earlier stage's folder (its manifest.parquet).")],
    out_dir: Annotated[Path, out_option("manifest.parquet (+ dedup columns), failures.parquet and gallery.html.")],
    params_file: ParamsOpt = None,
    threshold: Annotated[Optional[int], typer.Option(help="Hamming radius on the 256-bit dhash (params: dedup.threshold).")] = None,
    exact: Annotated[Optional[bool], typer.Option("--exact/--fast", help="Reference hashing (bit for bit imagehash) or the fast path.")] = None,
    against: Annotated[Optional[Path], typer.Option(help="Another dedup output: mark images that duplicate its images (its hashes are reused).", exists=True)] = None,
    embeddings: Annotated[Optional[Path], typer.Option(help="An embed folder (or embeddings.parquet): its vectors nominate candidate pairs, re-crops included (default: dedup.embeddings, else INPUT/embeddings.parquet when it exists).")] = None,
    report: Annotated[Optional[Path], report_option("dedup")] = None,
) -> None:
    """Mark duplicates and label conflicts as manifest columns; nothing is deleted.

    Candidate pairs come from dhash and, when INPUT holds datakit embed vectors (run `datakit
    embed` first: the default pipeline does), from each image's nearest neighbours; a candidate
    becomes a duplicate only when one picture overlays the other (re-crop, resize, recompression,
    brightness, a caption), so different shots of look-alike things never chain into one group.

    Reads INPUT/manifest.parquet (and INPUT/failures.parquet: the same bytes returned under
    another label count as a conflict). Writes OUT/manifest.parquet with dhash, dup_group, dup_of,
    dup_distance, keep, dedup_reason, label_conflict, conflict_labels, against_dup,
    OUT/failures.parquet (images that could not be hashed, with the reason) and OUT/gallery.html
    (every conflict, the largest groups, each link with the signal that found it, its dhash
    distance, cosine similarity and overlay score) for a person to scan.
    """
    from functools import partial

    from datakit.dedup.stage import embeddings_for, run
    from datakit.parallel import configure_from_params
    from datakit.params import section

    params = load(params_file)
    try:
        configure_from_params(params)
        p = section(params, "dedup", threshold=threshold, exact=exact)
        vectors = embeddings_for(p, input_dir, embeddings)
    except DatakitError as exc:
        raise _fail(exc) from None
    result = run_command("dedup", partial(run, against=against), input_dir, out_dir, p, report=report,
                         embeddings=vectors)
    r = result.report
    t = Table(title="dedup: per label")
    for col in ("label", "before", "after"):
        t.add_column(col, justify="left" if col == "label" else "right")
    for label, before in r["per_label_before"].items():
        t.add_row(label, str(before), str(r["per_label_after"].get(label, 0)))
    out.print(t)
    out.print(
        f"[bold]{r['images']}[/] images: {r['kept']} kept, {r['removed']} marked keep=False "
        f"({', '.join(f'{k} {v}' for k, v in r['removed_by_reason'].items()) or 'none'}); "
        f"{r['groups']} groups ({r['exact_groups']} exact, {r['near_groups']} near"
        + (f", {r['pairs_only_embedding']} pairs only the embedding found" if r.get("embedding_similarity") else "") + "), "
        + (f"{r['candidates']} candidate pairs, {r['rejected_by_verify']} rejected by the overlay check; " if r.get("verify") else "")
        + f"{r['conflict_groups']} label-conflict groups, {r['low_information']} low-information; "
        f"hashed {r['images_per_s']} img/s\n"
        f"manifest: {out_dir / MANIFEST}   gallery: {result.files['gallery']}"
    )


@dedup_app.command("calibrate", epilog="Examples:\n\n  datakit dedup calibrate data/scrape\n\n  datakit dedup calibrate data/scrape --pairs pairs.csv")
def dedup_calibrate(
    input_dir: Annotated[Path, input_argument("A stage folder whose images to sample (its embeddings.parquet, when present, gives the vectors).")],
    pairs: Annotated[Optional[Path], typer.Option(help="CSV a,b,duplicate (paths or image_ids); default: generate pairs.", exists=True)] = None,
    sample: Annotated[int, typer.Option(help="Images to sample when generating pairs.")] = 100,
    seed: Annotated[int, typer.Option(help="Sampling and edit seed.")] = 0,
    params_file: ParamsOpt = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write every figure printed here as JSON.")] = None,
) -> None:
    """Precision and recall of each dedup signal on your images; recommends dedup.threshold,
    dedup.embedding_similarity and dedup.match_threshold.

    Without --pairs, every sampled image is compared with edited copies of itself (re-crop 4-16 %
    per axis, symmetric and one-sided; resize 50-90 %; JPEG q30-90; brightness +-20 %; a caption /
    price tag; PNG; a stack of two), with as many of its nearest other images of INPUT (look-alikes: by
    cosine when INPUT has vectors, else by dhash; they decide precision) and with random other
    sampled images. Every pair gets its dhash distance (full and crop hashes), cosine (copies are
    embedded here with the table's embed.json settings, or embed: params) and overlay score."""
    from datakit.cli.embedder import make_embedder
    from datakit.dedup.calibrate import run as run_calibrate
    from datakit.stage import load_input

    params = load(params_file)
    try:
        inp = load_input(input_dir)
        cal = run_calibrate(inp.manifest, inp.root, params, input_dir=input_dir, pairs=pairs, sample=sample, seed=seed,
                            progress=lambda msg: err.print(f"calibrate: {msg}", highlight=False),
                            embedder=make_embedder(params))
    except DatakitError as exc:
        raise _fail(exc) from None

    def num(v: Any, fmt: str = ".3f") -> str:
        return "-" if v is None or v != v else format(v, fmt)

    c = cal.to_dict()["pairs"]
    out.print(f"[bold]dedup calibrate[/]: {c['duplicates']} duplicate pairs (edited copies), {c['look_alikes']} "
              f"look-alike pairs (nearest other images), {c['unrelated']} unrelated pairs")
    titles = {"dhash": "dhash: full-hash distance <= radius", "dhash crops": "dhash crop hashes: full vs crop distance <= radius",
              "embedding": "embedding: cosine >= floor", "overlay": "overlay check: score >= threshold"}
    for name, tab in cal.tables.items():
        t = Table(title=titles[name])
        for col in ("threshold", "recall", "recall (re-crops)", "recall (other edits)", "precision (look-alikes)",
                    "precision (all)", "false look-alikes"):
            t.add_column(col, justify="right")
        for r in tab.itertuples():
            t.add_row(num(r.threshold, "g"), num(r.recall), num(r.recall_crops), num(r.recall_other),
                      num(r.precision_look_alikes), num(r.precision_all), str(r.false_look_alikes))
        out.print(t)
    t = Table(title="recall per edit at the current params")
    for col in cal.per_edit.columns:
        t.add_column(col, justify="left" if col == "edit" else "right")
    for r in cal.per_edit.itertuples(index=False):
        t.add_row(*[str(v) if isinstance(v, (str, int)) else num(v, ".2f") for v in r])
    out.print(t)
    rec = cal.recommended
    p = params.dedup
    cur = cal.rules["current"]
    out.print(f"recommended dedup.threshold: [bold]{num(rec['threshold'], 'd')}[/] (smallest radius finding >= 0.99 of "
              f"the copies that are not re-cropped; current {cur.radius})")
    if rec["embedding_similarity"] is not None:
        out.print(f"recommended dedup.embedding_similarity: [bold]{num(rec['embedding_similarity'], '.2f')}[/] (highest "
                  f"cosine keeping >= 0.99 of the copies as candidates; current {p.embedding_similarity:g})")
    out.print(f"recommended dedup.match_threshold: [bold]{num(rec['match_threshold'], '.3f')}[/] (halfway between the "
              f"lowest overlay score with precision >= 0.995 against the look-alikes and the highest keeping its recall: recall {num(rec['match_recall'])}, precision "
              f"{num(rec['match_precision'])}, {rec['match_false_look_alikes'] if rec['match_false_look_alikes'] is not None else '-'} "
              f"of {rec['look_alikes']} look-alikes above it; current {p.match_threshold:g})")
    t = Table(title="the whole rule: candidates and the overlay check")
    for col in ("params", "rule", "recall", "recall (re-crops)", "precision (look-alikes)", "precision (all)", "false look-alikes"):
        t.add_column(col, justify="left" if col in ("params", "rule") else "right")
    for name, fig in cal.end_to_end.items():
        t.add_row(name, cal.rules[name].describe(), num(fig["recall"]), num(fig["recall_crops"]),
                  num(fig["precision_look_alikes"]), num(fig["precision_all"]), str(fig["false_look_alikes"]))
    out.print(t)
    for note in cal.notes:
        out.print(f"note: {note}", highlight=False)
    if json_out is not None:
        _write_report(json_out, cal.to_dict())
        out.print(f"figures: {json_out}")
