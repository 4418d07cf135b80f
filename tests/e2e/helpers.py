"""Helpers for end-to-end tests: small params files, CLI runs in-process and as subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from typer.testing import CliRunner

from datakit.cli import app

REPO = Path(__file__).resolve().parents[2]


def write_params(folder: Path, **scrape: Any) -> Path:
    base: dict[str, Any] = {
        "items": ["vest", "hoodie"],
        "attributes": ["striped", "dotted"],
        "per_query": 10,
        "min_per_label": 1,
        "user_agent": "datakit-test/0.1 (+http://127.0.0.1/contact)",
        "fetch": {"backoff_base_s": 0.01, "backoff_cap_s": 0.05, "deadline_s": 10, "retries": 2,
                  "connect_timeout_s": 3, "read_timeout_s": 5},
    }
    for k, v in scrape.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump({"scrape": base}))
    return path


def invoke(*args: str | Path) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def datakit_cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "datakit", *[str(a) for a in args]]


def run_subprocess(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(datakit_cmd(*args), capture_output=True, text=True, timeout=timeout, env=full_env)


def manifest(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "manifest.parquet")


def failures(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "failures.parquet")


def sigterm_after_requests(server: Any, n: int, *args: str | Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Start `datakit ARGS` as a subprocess, SIGTERM it once `server` has logged `n` requests
    (or after 30 s), and return (exit code, stderr)."""
    import signal
    import time

    proc = subprocess.Popen(datakit_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    deadline = time.monotonic() + 30
    while len(server.log) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err
