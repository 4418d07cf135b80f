"""Helpers the bench scripts share: running under the project's virtualenv, and reading this
process's memory from /proc (Linux)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def ensure_venv(modules: Sequence[str], script: str, argv: Sequence[str]) -> int | None:
    """None when every module in `modules` imports here. Otherwise re-run `script` with `argv`
    under REPO/.venv's python and return its exit code, or 2 (with a message) when there is none."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if not missing:
        return None
    venv = REPO / ".venv"
    py = venv / "bin" / "python"
    # sys.prefix, not the executable: a venv's python is a symlink to the interpreter it came from
    if py.exists() and Path(sys.prefix).resolve() != venv.resolve():
        return subprocess.run([str(py), str(Path(script).resolve()), *argv]).returncode
    print(f"{', '.join(missing)} not importable: run `make venv` and use .venv/bin/python", file=sys.stderr)
    return 2


def status_kib(field: str) -> int | None:
    """A field of /proc/self/status in KiB (VmRSS, VmHWM), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset this process's VmHWM (Linux >= 4.0); False when not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def mib(kib: float | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)
