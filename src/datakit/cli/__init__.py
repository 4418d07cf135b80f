"""The `datakit` command line: one thin command per stage, listed in pipeline order.

Each command module declares its options and calls its stage; errors from the stages
(DatakitError) become one red line and exit code 1, never a traceback with local variables
(API keys live in memory). Model commands import torch only when they run.
"""

from __future__ import annotations

import sys

from datakit.cli import audit as _audit  # noqa: E402,F401
from datakit.cli import augment as _augment  # noqa: E402,F401
from datakit.cli import balance as _balance  # noqa: E402,F401
from datakit.cli import credits as _credits  # noqa: E402,F401
from datakit.cli import curation as _curation  # noqa: E402,F401
from datakit.cli import dedup as _dedup  # noqa: E402,F401
from datakit.cli import embed as _embed  # noqa: E402,F401
from datakit.cli import export as _export  # noqa: E402,F401

# Registration order is the order `datakit --help` lists the commands: the pipeline's.
from datakit.cli import project as _project  # noqa: E402,F401
from datakit.cli import scrape as _scrape  # noqa: E402,F401
from datakit.cli import split as _split  # noqa: E402,F401
from datakit.cli import verify as _verify  # noqa: E402,F401
from datakit.cli.app import app
from datakit.cli.colors import register as _register_colors  # noqa: E402
from datakit.cli.report import register as _register_report  # noqa: E402
from datakit.cli.train import register as _register_train  # noqa: E402

_register_train(app)
_register_report(app)
_register_colors(app)

__all__ = ["app", "run"]


def run() -> None:  # pragma: no cover - console-script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
