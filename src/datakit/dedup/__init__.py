"""`datakit dedup`: exact and near-duplicates (see `stage.py` for the columns it adds).

Modules: `hashing.py` (dhash of a decoded image, crop hashes; pure per image), `index.py`
(multi-index Hamming search), `grouping.py` (union-find, keep and conflict policies),
`stage.py` (the stage: `run(manifest, params) -> manifest`), `calibrate.py`, `gallery.py`.

This package file stays import-light: hashing worker processes import `datakit.dedup.hashing`
and should not pay for pandas.
"""

from __future__ import annotations

from typing import Any


def run(*args: Any, **kwargs: Any) -> Any:
    """`datakit.dedup.stage.run` (imported on first use)."""
    from datakit.dedup.stage import run as _run

    return _run(*args, **kwargs)


def load_input(*args: Any, **kwargs: Any) -> Any:
    """`datakit.dedup.stage.load_input` (imported on first use)."""
    from datakit.dedup.stage import load_input as _load_input

    return _load_input(*args, **kwargs)
