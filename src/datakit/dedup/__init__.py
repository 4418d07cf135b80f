"""`datakit dedup`: exact and near-duplicates (see `stage.py` for the columns it adds).

Modules: `hashing.py` (dhash of a decoded image, crop hashes; pure per image; `distances.py`
compares them), `index.py` (multi-index Hamming search), `vectors.py` (cosine neighbours of
embedding vectors: `cosine.py` shared pieces, `ivf.py` the approximate method), `verify.py`
(the overlay check), `grouping.py` (keep and conflict policies), `stage.py` (the stage:
`run(manifest, DedupParams, ctx) -> StageResult`), `gallery.py`, and `calibrate.py` (with
`edits.py` and `figures.py`) for `datakit dedup calibrate`.

This package file stays import-light: hashing worker processes import `datakit.dedup.hashing`
and should not pay for pandas.
"""

from __future__ import annotations

from typing import Any


def run(*args: Any, **kwargs: Any) -> Any:
    """`datakit.dedup.stage.run` (imported on first use)."""
    from datakit.dedup.stage import run as _run

    return _run(*args, **kwargs)

