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
