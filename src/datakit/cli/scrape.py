"""`datakit scrape`: the command (options, one call into the stage, a summary)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from datakit.cli.app import app
from datakit.cli.common import ParamsOpt, out_option, report_option
from datakit.console import RichUi, out
from datakit.console import fail as _fail
from datakit.errors import DatakitError


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
    out_dir: Annotated[Path, out_option("manifest.parquet, failures.parquet, images/, search/.")],
    provider: Annotated[Optional[str], typer.Option(help="openverse (default, no key), wikimedia, brave, flickr, bing, folder, urls, synthetic.")] = None,
    source: Annotated[Optional[Path], typer.Option(help="folder: DIR of class subfolders; urls: CSV/Parquet with url,label.")] = None,
    endpoint: Annotated[Optional[str], typer.Option(help="Base URL of the search API (mirror, proxy, test server).")] = None,
    allow_private: Annotated[bool, typer.Option("--allow-private", help="Allow downloads from private/loopback addresses and any port (your own servers, tests).")] = False,
    per_query: Annotated[Optional[int], typer.Option(help="Results to keep per query (params: scrape.per_query, default 50).")] = None,
    params_file: ParamsOpt = None,
    extend: Annotated[bool, typer.Option("--extend", help="Allow changed queries/limits on an existing --out (adds to it).")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Fetch again results that failed for transient reasons (timeouts, 429, 5xx).")] = False,
    report: Annotated[Optional[Path], report_option("scrape")] = None,
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
    from datakit.params import load_params, section
    from datakit.scrape import Interrupted, Scraper, context, run
    from datakit.stage import stage_report_path

    if api_key is not None:
        raise _fail(
            "datakit never takes API keys on the command line: they show in `ps`, shell history and "
            "dvc.lock. Export the provider's variable instead (e.g. BRAVE_API_KEY, FLICKR_API_KEY)", 2
        )
    try:
        params = load_params(params_file)
        configure_from_params(params)  # download shards run on the Dask cluster when one is set
        p = section(params, "scrape", per_query=per_query, **({"fetch.allow_private": True} if allow_private else {}))
        name = provider or p.provider
        where = {"source": str(source) if source else None, "endpoint": endpoint}
        if dry_run:  # the plan only: queries and settings, no request, no write
            scraper = Scraper(p, provider=name, out=out_dir, **where)
            out.print(f"provider {name}  endpoint {scraper.provider.endpoint or '-'}  per_query {p.per_query}  "
                      f"label {p.label}  queries {len(scraper.queries)}")
            for q in scraper.queries:
                out.print(f"  {q.text!r} -> label {q.label!r}")
            return
        with RichUi() as ui:
            result = run(p, context(out_dir, ui), provider=name, extend=extend, retry_failed=retry_failed,
                         report=stage_report_path("scrape", report), **where)
    except Interrupted as exc:
        raise _fail(exc, exc.exit_code) from None
    except DatakitError as exc:
        raise _fail(exc) from None
    _print_scrape_summary(result, out_dir)
    short = result.extra["short_labels"]
    if short:
        raise _fail(
            f"labels below scrape.min_per_label={p.min_per_label}: {', '.join(short)} "
            f"(see the table above and {out_dir / 'failures.parquet'})", 3
        )


def _print_scrape_summary(result: Any, out_dir: Path) -> None:
    t = Table(title="scrape: per query", show_lines=False)
    for col in ("query", "returned", "stored", "dup bytes", "dup url", "failed", "failed by reason"):
        t.add_column(col, justify="left" if col in ("query", "failed by reason") else "right")
    for r in result.extra["per_query"].to_dict("records"):
        t.add_row(r["query"], str(r["returned"]), str(r["stored"]), str(r["duplicate_bytes"]),
                  str(r["duplicate_url"]), str(r["failed"]), r["failed_by_reason"])
    out.print(t)
    t2 = Table(title="scrape: per label")
    t2.add_column("label")
    t2.add_column("stored", justify="right")
    for r in result.extra["per_label"].to_dict("records"):
        t2.add_row(r["label"], str(r["stored"]))
    out.print(t2)
    rep = result.report
    rate = f", {rep['images_per_s']} img/s" if "images_per_s" in rep else ""
    out.print(
        f"[bold]{rep['stored']}[/] images stored, {rep['failures']} results not stored "
        f"(of {rep['results']} results from {rep['queries']} queries) in {rep['seconds']:.1f} s{rate}\n"
        f"manifest: {out_dir / 'manifest.parquet'}   failures: {out_dir / 'failures.parquet'}"
    )
