"""The `datakit` command line: one thin command per stage.

Each command parses options, loads params, calls the stage, writes outputs and prints a
summary. Errors from the stages (DatakitError) become one red line and exit code 1; they
never show a traceback with local variables (API keys live in memory).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from datakit import __version__
from datakit.console import err, out
from datakit.console import fail as _fail
from datakit.console import write_report as _write_report
from datakit.errors import DatakitError

app = typer.Typer(
    name="datakit",
    help=(
        "Build image-classification datasets from web image search: scrape, dedup, split, "
        "augment, balance, train, evaluate, each stage versioned by DVC.\n\n"
        "Every stage reads an earlier stage's folder (its manifest.parquet) and writes its own:\n\n"
        "  datakit scrape --provider synthetic --out data/scrape\n\n"
        "  datakit verify data/scrape\n\n"
        "Parameters come from params.yaml (one key per stage); options override them for one run. "
        "API keys come from environment variables only."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"datakit {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    """datakit command line."""



class RichUi:
    """Progress bars for long work (stderr), quiet when stderr is not a terminal."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description:<9}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=err, transient=False, disable=not err.is_terminal,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> RichUi:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def start(self, phase: str, total: int) -> None:
        if phase in self.tasks:
            self.progress.update(self.tasks[phase], total=total, completed=0)
        else:
            self.tasks[phase] = self.progress.add_task(phase, total=total)

    def advance(self, phase: str, n: int = 1) -> None:
        if phase in self.tasks:
            self.progress.advance(self.tasks[phase], n)

    def note(self, message: str) -> None:
        err.print(message)



@app.command(
    epilog=(
        "Examples:\n\n"
        "  datakit scrape --provider synthetic --out data/scrape    (offline demo data)\n\n"
        "  datakit scrape --provider openverse --per-query 50 --out data/scrape\n\n"
        "  datakit scrape --provider folder --source ~/photos --out data/scrape   (DIR/<label>/<files>)\n\n"
        "  datakit scrape --provider urls --source urls.csv --out data/scrape     (columns url,label)\n\n"
        "  BRAVE_API_KEY=... datakit scrape --provider brave --out data/scrape"
    )
)
def scrape(
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (manifest.parquet, failures.parquet, images/, search/).", file_okay=False)],
    provider: Annotated[Optional[str], typer.Option(help="openverse (default, no key), wikimedia, brave, flickr, bing, folder, urls, synthetic.")] = None,
    source: Annotated[Optional[Path], typer.Option(help="folder: DIR of class subfolders; urls: CSV/Parquet with url,label.")] = None,
    endpoint: Annotated[Optional[str], typer.Option(help="Base URL of the search API (mirror, proxy, test server).")] = None,
    allow_private: Annotated[bool, typer.Option("--allow-private", help="Allow downloads from private/loopback addresses and any port (your own servers, tests).")] = False,
    per_query: Annotated[Optional[int], typer.Option(help="Results to keep per query (params: scrape.per_query, default 50).")] = None,
    params_file: Annotated[Optional[Path], typer.Option("--params", help="params.yaml to read (default: ./params.yaml if present).")] = None,
    extend: Annotated[bool, typer.Option("--extend", help="Allow changed queries/limits on an existing --out (adds to it).")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Fetch again results that failed for transient reasons (timeouts, 429, 5xx).")] = False,
    report: Annotated[Path, typer.Option(help="Where to write the stage's figures (DVC metrics).")] = Path("reports/scrape.json"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the queries and settings; no request, no write.")] = False,
    api_key: Annotated[Optional[str], typer.Option("--api-key", hidden=True)] = None,
) -> None:
    """Search image providers for every query and store the images, with provenance and licence.

    Reads params.yaml `scrape` (items x attributes -> queries, per_query, label, fetch limits).
    Writes OUT/manifest.parquet (one row per stored image), OUT/failures.parquet (one row per
    result that did not become an image, with a reason), OUT/images/ and the raw search
    responses in OUT/search/. Re-running the same command resumes a killed run.
    """
    from datakit.parallel import configure_from_params
    from datakit.params import load_params, override
    from datakit.scrape import Interrupted, Scraper

    if api_key is not None:
        raise _fail(
            "datakit never takes API keys on the command line: they show in `ps`, shell history and "
            "dvc.lock. Export the provider's variable instead (e.g. BRAVE_API_KEY, FLICKR_API_KEY)", 2
        )
    try:
        params = load_params(params_file)
        configure_from_params(params)  # download shards run on the Dask cluster when one is set
        p = override(params.scrape, "scrape", per_query=per_query)
        if allow_private:
            p = override(p, "scrape", **{"fetch.allow_private": True})
        name = provider or p.provider
        scraper = Scraper(p, provider=name, out=out_dir, source=str(source) if source else None, endpoint=endpoint,
                          extend=extend, retry_failed=retry_failed)
        if dry_run:
            out.print(f"provider {name}  endpoint {scraper.provider.endpoint or '-'}  per_query {p.per_query}  "
                      f"label {p.label}  queries {len(scraper.queries)}")
            for q in scraper.queries:
                out.print(f"  {q.text!r} -> label {q.label!r}")
            return
        with RichUi() as ui:
            scraper.ui = ui
            result = scraper.run()
    except Interrupted as exc:
        raise _fail(exc, exc.exit_code) from None
    except DatakitError as exc:
        raise _fail(exc) from None
    _write_report(report, result.report)
    _print_scrape_summary(result, out_dir)
    if result.short_labels:
        raise _fail(
            f"labels below scrape.min_per_label={p.min_per_label}: {', '.join(result.short_labels)} "
            f"(see the table above and {out_dir / 'failures.parquet'})", 3
        )


def _print_scrape_summary(result: Any, out_dir: Path) -> None:
    t = Table(title="scrape: per query", show_lines=False)
    for col in ("query", "returned", "stored", "dup bytes", "dup url", "failed", "failed by reason"):
        t.add_column(col, justify="left" if col in ("query", "failed by reason") else "right")
    for r in result.per_query.to_dict("records"):
        t.add_row(r["query"], str(r["returned"]), str(r["stored"]), str(r["duplicate_bytes"]),
                  str(r["duplicate_url"]), str(r["failed"]), r["failed_by_reason"])
    out.print(t)
    t2 = Table(title="scrape: per label")
    t2.add_column("label")
    t2.add_column("stored", justify="right")
    for r in result.per_label.to_dict("records"):
        t2.add_row(r["label"], str(r["stored"]))
    out.print(t2)
    rep = result.report
    rate = f", {rep['images_per_s']} img/s" if "images_per_s" in rep else ""
    out.print(
        f"[bold]{rep['stored']}[/] images stored, {rep['failures']} results not stored "
        f"(of {rep['results']} results from {rep['queries']} queries) in {rep['seconds']:.1f} s{rate}\n"
        f"manifest: {out_dir / 'manifest.parquet'}   failures: {out_dir / 'failures.parquet'}"
    )


class _DefaultRun(typer.core.TyperGroup):
    """`datakit dedup INPUT ...` means `datakit dedup run INPUT ...`; `datakit dedup calibrate`
    stays a subcommand."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


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
    input_dir: Annotated[Path, typer.Argument(metavar="INPUT", help="An earlier stage's folder (its manifest.parquet).", exists=True)],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder: manifest.parquet (+ dedup columns) and gallery.html.", file_okay=False)],
    params_file: Annotated[Optional[Path], typer.Option("--params", help="params.yaml to read (default: ./params.yaml if present).")] = None,
    threshold: Annotated[Optional[int], typer.Option(help="Hamming radius on the 256-bit dhash (params: dedup.threshold).")] = None,
    exact: Annotated[Optional[bool], typer.Option("--exact/--fast", help="Reference hashing (bit for bit imagehash) or the fast path.")] = None,
    against: Annotated[Optional[Path], typer.Option(help="Another dedup output: mark images that duplicate its images (its hashes are reused).", exists=True)] = None,
    embeddings: Annotated[Optional[Path], typer.Option(help="An embed folder (or embeddings.parquet): its vectors nominate candidate pairs, re-crops included (default: dedup.embeddings, else INPUT/embeddings.parquet when it exists).")] = None,
    report: Annotated[Path, typer.Option(help="Where to write the stage's figures (DVC metrics).")] = Path("reports/dedup.json"),
) -> None:
    """Mark duplicates and label conflicts as manifest columns; nothing is deleted.

    Candidate pairs come from dhash and, when INPUT holds datakit embed vectors (run `datakit
    embed` first: the default pipeline does), from each image's nearest neighbours; a candidate
    becomes a duplicate only when one picture overlays the other (re-crop, resize, recompression,
    brightness, a caption), so different shots of look-alike things never chain into one group.

    Reads INPUT/manifest.parquet (and INPUT/failures.parquet: the same bytes returned under
    another label count as a conflict). Writes OUT/manifest.parquet with dhash, dup_group, dup_of,
    dup_distance, keep, dedup_reason, label_conflict, conflict_labels, against_dup, and
    OUT/gallery.html (every conflict, the largest groups, each link with the signal that found
    it, its dhash distance, cosine similarity and overlay score) for a person to scan.
    """
    from datakit.dedup import load_input
    from datakit.dedup import run as run_dedup
    from datakit.dedup.gallery import write_gallery
    from datakit.fsutil import folder_lock
    from datakit.manifest import MANIFEST, read_table, write_table
    from datakit.parallel import configure_from_params
    from datakit.params import load_params, override

    try:
        params = load_params(params_file)
        configure_from_params(params)
        p = override(params.dedup, "dedup", threshold=threshold, exact=exact)
        df, root = load_input(input_dir)
        other = read_table(Path(against) / MANIFEST if Path(against).is_dir() else Path(against)) if against else None
        out_dir.mkdir(parents=True, exist_ok=True)
        with folder_lock(out_dir, "datakit dedup"):
            vectors = None
            wanted = p.signals is None or "embedding" in p.signals
            if wanted:
                from datakit.embed import EMBEDDINGS, read_embeddings

                source = embeddings or (Path(p.embeddings) if p.embeddings else Path(input_dir) / EMBEDDINGS)
                # the default uses vectors whenever they exist; naming the signal requires them
                if p.signals is not None or embeddings or p.embeddings or source.exists():
                    ids, X, _ = read_embeddings(source)
                    vectors = (ids, X)
            result = run_dedup(df, p, root=root, input_dir=input_dir if input_dir.is_dir() else None, against=other,
                               embeddings=vectors)
            write_table(result.manifest, out_dir / MANIFEST)
            write_gallery(result.manifest, root, result.report, out_dir / "gallery.html", largest=p.gallery_groups,
                          pairs=result.pairs)
    except DatakitError as exc:
        raise _fail(exc) from None
    _write_report(report, result.report)
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
        f"manifest: {out_dir / MANIFEST}   gallery: {out_dir / 'gallery.html'}"
    )


@dedup_app.command("calibrate", epilog="Examples:\n\n  datakit dedup calibrate data/scrape\n\n  datakit dedup calibrate data/scrape --pairs pairs.csv")
def dedup_calibrate(
    input_dir: Annotated[Path, typer.Argument(metavar="INPUT", help="A stage folder whose images to sample (its embeddings.parquet, when present, gives the vectors).", exists=True)],
    pairs: Annotated[Optional[Path], typer.Option(help="CSV a,b,duplicate (paths or image_ids); default: generate pairs.", exists=True)] = None,
    sample: Annotated[int, typer.Option(help="Images to sample when generating pairs.")] = 100,
    seed: Annotated[int, typer.Option(help="Sampling and edit seed.")] = 0,
    params_file: Annotated[Optional[Path], typer.Option("--params", help="params.yaml to read (default: ./params.yaml if present).")] = None,
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
    from datakit.dedup import load_input
    from datakit.dedup.calibrate import run as run_calibrate
    from datakit.params import load_params

    try:
        params = load_params(params_file)
        df, root = load_input(input_dir)
        cal = run_calibrate(df, root, params, input_dir=input_dir, pairs=pairs, sample=sample, seed=seed,
                            progress=lambda msg: err.print(f"calibrate: {msg}", highlight=False))
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


@app.command(
    epilog=(
        "Examples:\n\n  datakit split data/dedup --out data/split\n\n"
        "  datakit split data/dedup-v2 --previous data/split-v1 --out data/split-v2   (old images keep their split)"
    )
)
def split(
    input_dir: Annotated[Path, typer.Argument(metavar="INPUT", help="A dedup folder (its manifest.parquet with dup_group, keep).", exists=True)],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder: manifest.parquet with split_group, split (and fold).", file_okay=False)],
    previous: Annotated[Optional[Path], typer.Option(help="An earlier version's split folder or manifest: its groups keep their split.", exists=True)] = None,
    params_file: Annotated[Optional[Path], typer.Option("--params", help="params.yaml to read (default: ./params.yaml if present).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Split seed (params: split.seed).")] = None,
    report: Annotated[Path, typer.Option(help="Where to write the stage's figures (DVC metrics).")] = Path("reports/split.json"),
) -> None:
    """Assign every kept image to train/val/test (and folds) without leakage.

    A duplicate group (joined with any split.group_by column) never straddles splits, every class
    is in every split, class proportions hold within one group, and --previous keeps an old test
    set the test set. Writes OUT/manifest.parquet with split_group, split (and fold)."""
    from datakit.dedup import load_input
    from datakit.fsutil import folder_lock
    from datakit.manifest import MANIFEST, read_table, write_table
    from datakit.params import load_params, override
    from datakit.split import run as run_split

    try:
        p = override(load_params(params_file).split, "split", seed=seed)
        df, _root = load_input(input_dir)
        prev = read_table(previous / MANIFEST if previous.is_dir() else previous) if previous else None
        out_dir.mkdir(parents=True, exist_ok=True)
        with folder_lock(out_dir, "datakit split"):
            result, rep = run_split(df, p, previous=prev)
            write_table(result, out_dir / MANIFEST)
    except DatakitError as exc:
        raise _fail(exc) from None
    _write_report(report, rep)
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
              f"moved from --previous: {rep['moved_from_previous']}{merged}\nmanifest: {out_dir / MANIFEST}")


@app.command(
    epilog=(
        "Examples:\n\n  datakit export data/split --out export/imagefolder        (torchvision / Keras / fastai)\n\n"
        "  datakit export data/split --out export/hf --layout hf --link copy   (Hugging Face imagefolder)"
    )
)
def export(
    input_dir: Annotated[Path, typer.Argument(metavar="INPUT", help="A split folder (manifest.parquet with a split column).", exists=True)],
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write the class folders.", file_okay=False)],
    layout: Annotated[str, typer.Option(help="imagefolder: OUT/<split>/<label>/<file>; hf: OUT/<split>/<file> + metadata.csv.")] = "imagefolder",
    link: Annotated[str, typer.Option(help="hardlink (default; shares storage with the store, so never edit exported files), copy or symlink.")] = "hardlink",
    splits: Annotated[Optional[list[str]], typer.Option("--split", help="Only these splits (repeatable).")] = None,
) -> None:
    """Write a split as class folders (torchvision ImageFolder, Keras, fastai, Hugging Face).

    Rows with keep=False or no split are skipped and counted. Each split folder is rebuilt beside
    the old one and swapped in, so a killed export never leaves half a folder."""
    from datakit.export import export_manifest

    try:
        rep = export_manifest(input_dir, out_dir, layout=layout, link=link, splits=splits)  # type: ignore[arg-type]
    except DatakitError as exc:
        raise _fail(exc) from None
    for line in rep.lines():
        out.print(line, highlight=False)


def _audit_vectors(setting: str, table: Any, root: Path, params: Any) -> tuple[list[str], Any] | None:
    """The vectors `audit.embeddings` asks for: read from an embed folder, computed for the
    audited images (into a temporary folder, with the `embed:` settings), or none."""
    import tempfile

    from datakit.embed import parse_embed, read_embeddings
    from datakit.embed import run as run_embed

    if setting == "none":
        return None
    if setting not in ("auto", "compute"):
        ids, X, _ = read_embeddings(Path(setting))
        return ids, X
    try:
        with tempfile.TemporaryDirectory(prefix="datakit-audit-embed-") as tmp:
            run_embed(table, parse_embed(params.embed), root=root, out_dir=Path(tmp))
            ids, X, _ = read_embeddings(Path(tmp))
    except (ImportError, DatakitError) as exc:
        if setting == "compute":
            raise DatakitError(f"audit.embeddings: compute: {exc}") from None
        err.print(f"audit: no embedding signal ({exc}); near copies from the dhash only")
        return None
    return ids, X


@app.command(
    epilog=(
        "Examples:\n\n  datakit audit data/split                      (a split manifest)\n\n"
        "  datakit audit ~/my_dataset                   (train/ val/ test/ folders of class folders)\n\n"
        "  datakit audit data/split --max-leaks 5 --report reports/audit.json"
    )
)
def audit(
    target: Annotated[Path, typer.Argument(metavar="INPUT", help="A split folder (manifest.parquet with split) or a folder of SPLIT/LABEL/ image folders.", exists=True)],
    params_file: Annotated[Optional[Path], typer.Option("--params", help="params.yaml to read (default: ./params.yaml if present).")] = None,
    radius: Annotated[Optional[int], typer.Option(help="dhash radius for near-duplicate leaks (params: audit.radius).")] = None,
    max_leaks: Annotated[Optional[int], typer.Option(help="Exit 1 above this many cross-split leaks (params: audit.max_leaks, default 0).")] = None,
    trust_hashes: Annotated[bool, typer.Option("--trust-hashes", help="Reuse the manifest's dhash/image_id instead of re-reading every file.")] = False,
    embeddings: Annotated[Optional[str], typer.Option(help="Vectors that nominate candidate pairs (they find re-crops): an embed folder, 'compute' (embed the audited images here), 'auto' (compute when the model can be built) or 'none' (params: audit.embeddings).")] = None,
    report: Annotated[Path, typer.Option(help="Where to write the audit (DVC metrics).")] = Path("reports/audit.json"),
) -> None:
    """Re-check a split independently for leaks and balance; exit 1 above audit.max_leaks.

    Exact (sha256) and near copies across splits, found as dedup finds them: candidates from the
    dhash and each image's nearest neighbours by embedding, kept when one picture overlays the
    other (plus a deepchecks-style average_hash oracle, reported apart); label conflicts,
    per-class counts per split, class proportion deviation, classes missing from a split.
    Works on a split manifest or on SPLIT/LABEL/ folders you already have, and can gate a DVC
    pipeline."""
    from datakit.audit import audit_folder, audit_manifest, folder_table
    from datakit.manifest import MANIFEST, find_project_root, read_manifest
    from datakit.params import load_params, override

    try:
        params = load_params(params_file)
        p = override(params.audit, "audit", radius=radius, max_leaks=max_leaks, embeddings=embeddings)
        manifest_path = target / MANIFEST if target.is_dir() else target
        knobs = {"radius": p.radius, "max_leaks": p.max_leaks, "neighbours": p.neighbours, "similarity": p.similarity,
                 "verify": p.verify, "match_threshold": p.match_threshold}
        if manifest_path.is_file():
            root = find_project_root(manifest_path.parent)
            df = read_manifest(manifest_path, required=("image_id", "path", "label", "split"), root=root,
                               check_files=not trust_hashes)
            vectors = _audit_vectors(p.embeddings, df, root, params)
            rep = audit_manifest(df, root, hashes="manifest" if trust_hashes else "recompute", embeddings=vectors, **knobs)
        else:
            vectors = _audit_vectors(p.embeddings, folder_table(target), target, params)
            rep = audit_folder(target, embeddings=vectors, **knobs)
    except (DatakitError, ValueError) as exc:
        raise _fail(exc) from None
    _write_report(report, rep.to_json())
    out.print(rep.summary(), highlight=False)
    if not rep.ok:
        raise typer.Exit(1)


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


@app.command(
    epilog=(
        "Examples:\n\n  datakit balance data/augment --out data/balance\n\n"
        "  params.yaml: balance: {strategy: oversample, target: auto}\n\n"
        "  params.yaml: balance: {strategy: undersample, target: {vest: 100, hoodie: 100}}"
    )
)
def balance(
    input_dir: Annotated[Path, typer.Argument(metavar="INPUT", help="A split or augment folder (manifest.parquet with split).", exists=True)],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder: manifest.parquet and images/ of new rows.", file_okay=False)],
    params_file: Annotated[Optional[Path], typer.Option("--params", help="params.yaml to read (default: ./params.yaml if present).")] = None,
    embeddings: Annotated[Optional[Path], typer.Option(help="smote: an embed folder or embeddings.parquet (default: balance.embeddings, else INPUT/embeddings.parquet).")] = None,
    report: Annotated[Path, typer.Option(help="Where to write counts before/after and class weights (DVC metrics).")] = Path("reports/balance.json"),
) -> None:
    """Even out the train classes: oversample, undersample, class weights, SMOTE on embeddings or pixels.

    balance.strategy: oversample (repeat minority images through the augment pipeline, so copies
    differ), undersample (rows marked keep=False, never deleted), class_weights (OUT/class_weights.json
    for the trainer), smote (SMOTE on datakit embed vectors: synthetic vectors for a linear probe,
    no images), smote_pixels (SMOTE on small pixel arrays: blended images, the weaker option).
    Targets take imbalanced-learn's forms (auto, a ratio, a per-class dict). OUT/report.html shows
    counts before/after and thumbnails of what each origin added.
    Only original train rows count; val and test are never touched."""
    from datakit.augment import parse_augment
    from datakit.balance import parse_balance
    from datakit.balance import run as run_balance
    from datakit.balance_report import write_balance_page
    from datakit.dedup import load_input
    from datakit.embed import EMBEDDINGS, read_embeddings, write_embeddings
    from datakit.fsutil import atomic_write_text, folder_lock
    from datakit.images import ImageStore
    from datakit.manifest import MANIFEST, write_table
    from datakit.params import load_params

    try:
        params = load_params(params_file)
        p = parse_balance(params.balance)
        aug = parse_augment(params.augment)
        df, root = load_input(input_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with folder_lock(out_dir, "datakit balance"):
            failures: list[dict[str, Any]] = []
            table = embeddings or (Path(p.embeddings) if p.embeddings else Path(input_dir) / EMBEDDINGS)
            vectors = None
            if p.strategy == "smote" or embeddings or p.embeddings or table.exists():
                ids, X, meta = read_embeddings(table)
                vectors = (ids, X)
            new_vectors: dict[str, Any] = {}
            result, rep = run_balance(df, p, root=root, store=ImageStore(out_dir), augment=aug, failures=failures,
                                      embeddings=vectors, new_vectors=new_vectors)
            if vectors is not None:
                # Carry the table forward (plus any synthetic rows) so the trainer finds it beside the manifest.
                import numpy as np

                keep_ids = set(result["image_id"].astype(str))
                rows = [k for k, iid in enumerate(vectors[0]) if iid in keep_ids]
                all_ids = [vectors[0][k] for k in rows] + list(new_vectors)
                X_all = np.concatenate([vectors[1][rows], np.stack(list(new_vectors.values()))]) if new_vectors else vectors[1][rows]
                write_embeddings(out_dir / EMBEDDINGS, all_ids, X_all)
                atomic_write_text(out_dir / "embed.json", json.dumps({**meta, "synthetic_rows": len(new_vectors)}, indent=2, sort_keys=True) + "\n")
            write_balance_page(result, root, rep, out_dir / "report.html")
            write_table(result, out_dir / MANIFEST)
            atomic_write_text(out_dir / "class_weights.json", json.dumps(rep["class_weights"], indent=2, sort_keys=True) + "\n")
    except DatakitError as exc:
        raise _fail(exc) from None
    _write_report(report, rep)
    t = Table(title=f"balance ({p.strategy}): train images per class")
    for col in ("label", "before", "after", "weight"):
        t.add_column(col, justify="left" if col == "label" else "right")
    for label, before in rep["counts_before"].items():
        t.add_row(label, str(before), str(rep["counts_after"].get(label, before)), f"{rep['class_weights'].get(label, 0):.3f}")
    out.print(t)
    out.print(f"imbalance (largest/smallest class) {rep['imbalance_before']} -> {rep['imbalance_after']}; "
              f"added {rep['rows_added'] or 'none'}, undersampled {rep['rows_undersampled']}\n"
              f"manifest: {out_dir / MANIFEST}   weights: {out_dir / 'class_weights.json'}   page: {out_dir / 'report.html'}")


@app.command(epilog="Example:\n\n  datakit verify data/scrape")
def verify(
    folder: Annotated[Path, typer.Argument(help="A stage folder holding manifest.parquet.", exists=True, file_okay=False)],
    no_hash: Annotated[bool, typer.Option("--no-hash", help="Skip re-hashing files (faster, weaker).")] = False,
) -> None:
    """Check a stage folder's manifest against its files; exit 1 on any breach.

    Every row's file exists and hashes to its image_id, no orphan objects, no *.tmp leftovers,
    and (scrape) stored + failures == results."""
    from datakit.verify import verify as run_verify

    rep = run_verify(folder, hashes=not no_hash)
    if rep.ok:
        out.print(f"[green]ok[/]: {rep.rows} rows, {rep.checked} files hashed, no orphans, no temp files")
        return
    from rich.markup import escape

    for problem in rep.problems[:50]:
        err.print(f"[red]breach:[/] {escape(problem)}", highlight=False, soft_wrap=True)  # one line per breach
    if len(rep.problems) > 50:
        err.print(f"... and {len(rep.problems) - 50} more")
    raise typer.Exit(1)


def _register_more() -> None:
    """Commands that live in their own modules (torch is imported only when they run)."""
    from datakit.cli_colors import register as register_colors
    from datakit.cli_report import register as register_report
    from datakit.cli_train import register as register_train

    register_train(app)
    register_report(app)
    register_colors(app)


_register_more()


def run() -> None:  # pragma: no cover - console-script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
