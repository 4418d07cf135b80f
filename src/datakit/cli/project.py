"""`datakit init`: a new project (pipeline, params, review file, git and DVC) in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from datakit.cli.app import app
from datakit.console import fail as _fail
from datakit.console import out
from datakit.errors import DatakitError


@app.command(
    epilog=(
        "Examples:\n\n  datakit init my-dataset && cd my-dataset && dvc repro\n\n"
        "  datakit init . --provider synthetic     (offline: rendered garments, to try the whole flow)\n\n"
        "  datakit init . --plots-only             (an existing project: refresh the offline `dvc plots show` setup)"
    ),
    short_help="Start a project: dvc.yaml (the whole pipeline), a commented params.yaml, git and DVC.",
)
def init(
    folder: Annotated[Path, typer.Argument(help="The project folder (created if missing).", file_okay=False)] = Path("."),
    provider: Annotated[Optional[str], typer.Option(help="scrape.provider in the new params.yaml (default openverse).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing dvc.yaml / params.yaml / review/decisions.csv.")] = False,
    git: Annotated[bool, typer.Option("--git/--no-git", help="Run `git init` when the folder is not a repository.")] = True,
    dvc: Annotated[bool, typer.Option("--dvc/--no-dvc", help="Run `dvc init` when the folder has no .dvc/.")] = True,
    plots_only: Annotated[bool, typer.Option(
        "--plots-only", help="Only (re)install the offline plot page and plot templates in FOLDER/.dvc/ (overwrites them).")] = False,
    link: Annotated[bool, typer.Option(
        "--link", help="With --plots-only: symlink the templates and point plots.html_template at datakit's own "
                       "files instead of copying (a source checkout of datakit).")] = False,
) -> None:
    """Write the flagship pipeline (scrape -> embed -> dedup -> suspects -> curate -> split -> audit
    -> augment -> balance -> train -> evaluate -> report) as dvc.yaml, every knob in a commented
    params.yaml, an empty review/decisions.csv, .gitignore/.dvcignore lines for datakit's caches;
    then `git init` and `dvc init` when needed; and sets DVC up for plots that render offline
    (.dvc/plots/: a page with vega inlined as plots.html_template, and datakit's plot templates
    such as `epochs`). Existing files are kept unless --force."""
    from datakit.project import NEXT, init_project, install_plot_templates

    if link and not plots_only:
        raise _fail(DatakitError("--link goes with --plots-only"))
    if plots_only:
        try:
            written, _ = install_plot_templates(folder / ".dvc", overwrite=True, link=link)
        except (DatakitError, OSError) as exc:
            raise _fail(exc) from None
        out.print(f"wrote {', '.join(written)} in {folder}" if written else f"plot templates in {folder / '.dvc'} are up to date",
                  highlight=False)
        return
    try:
        res = init_project(folder, provider=provider, force=force, git=git, dvc=dvc)
    except (DatakitError, OSError) as exc:
        raise _fail(exc) from None
    if res.written:
        out.print(f"wrote {', '.join(res.written)} in {folder}", highlight=False)
    if res.kept:
        out.print(f"kept (exists; --force overwrites): {', '.join(res.kept)}", highlight=False)
    if res.ran:
        out.print(f"ran: {', '.join(res.ran)}", highlight=False)
    out.print("next:" + "".join(f"\n  {line}" for line in ([f"cd {folder}"] if str(folder) != "." else []) + NEXT),
              highlight=False)
