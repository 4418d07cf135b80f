"""The `datakit` Typer app (commands register on import: see `datakit.cli`).

Each command parses options, loads params, calls the stage, writes outputs and prints a
summary. Errors from the stages (DatakitError) become one red line and exit code 1; they
never show a traceback with local variables (API keys live in memory).
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from datakit import __version__

# `datakit --help` lists the commands in pipeline order (typer would list sub-apps such as
# `dedup` after every plain command).
PIPELINE_ORDER = ("init", "scrape", "embed", "dedup", "suspects", "review", "curate", "split", "audit", "augment", "balance", "train", "evaluate",
                  "predict", "report", "colors", "export", "credits", "verify")


class _PipelineOrder(typer.core.TyperGroup):
    def list_commands(self, ctx: Any) -> list[str]:
        names = list(self.commands)
        rank = {n: i for i, n in enumerate(PIPELINE_ORDER)}
        return sorted(names, key=lambda n: (rank.get(n, len(rank)), names.index(n)))


app = typer.Typer(
    cls=_PipelineOrder,
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
