"""What every datakit command shares: the two consoles, the error exit and the report writer."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

# Tables stay readable in logs and CI (no terminal: rich would assume 80 columns).
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)


def fail(exc: BaseException | str, code: int = 1) -> typer.Exit:
    """Print `error: <exc>` on stderr; the Exit to raise (`raise fail(exc) from None`)."""
    err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(code)


def write_report(path: Path, report: dict[str, Any]) -> None:
    """A stage's figures as sorted, indented JSON (DVC metrics), written atomically."""
    from datakit.fsutil import atomic_write_text

    atomic_write_text(path, json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")
