"""Crash injection for the resume tests (reliability.md RES-02): `DATAKIT_FAULT=<point>[:N]`
makes the process SIGKILL itself the N-th time (default 1st) it passes `<point>`."""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def point(name: str) -> None:
    spec = os.environ.get("DATAKIT_FAULT")
    if not spec:
        return
    want, _, nth = spec.partition(":")
    if want != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= (int(nth) if nth.isdigit() else 1):
        os.kill(os.getpid(), signal.SIGKILL)
