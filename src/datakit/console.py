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


# Facts about one run rather than about the data: wall times, throughput, what this run fetched
# (a resumed run fetches less). They go to a companion `<name>.run.json`, so that the report a
# pipeline declares (and dvc.lock hashes) is the same whenever the data is: a re-run on another
# day, or on a fresh clone, leaves the lock and git untouched.
RUN_FACT_SUFFIXES = ("seconds", "_per_s")
RUN_FACT_KEYS = frozenset({"downloaded_now"})


def is_run_fact(key: str) -> bool:
    return key in RUN_FACT_KEYS or key.endswith(RUN_FACT_SUFFIXES)


def split_run_facts(report: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the data's figures, the run's facts), at every level of nested dicts."""
    stable: dict[str, Any] = {}
    run: dict[str, Any] = {}
    for key, value in report.items():
        if is_run_fact(str(key)):
            run[key] = value
        elif isinstance(value, dict):
            inner, inner_run = split_run_facts(value)
            stable[key] = inner
            if inner_run:
                run[key] = inner_run
        else:
            stable[key] = value
    return stable, run


def run_facts_path(path: Path) -> Path:
    """reports/train.json -> reports/train.run.json."""
    path = Path(path)
    return path.with_name(f"{path.stem}.run{path.suffix or '.json'}")


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"


def write_report(path: Path, report: dict[str, Any]) -> None:
    """A stage's figures as sorted, indented JSON, written atomically: the data's figures at `path`,
    the run's timings and throughput at `run_facts_path(path)`."""
    from datakit.fsutil import atomic_write_text

    stable, run = split_run_facts(report)
    atomic_write_text(path, _dump(stable))
    if run:
        atomic_write_text(run_facts_path(path), _dump(run))


def read_report(path: Path) -> dict[str, Any]:
    """A report as the stage made it: the figures at `path` with its run facts merged back in."""
    path = Path(path)
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    extra = run_facts_path(path)
    if extra.is_file():
        _merge(data, json.loads(extra.read_text(encoding="utf-8")))
    return data


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
