"""The embedder the near-duplicate commands hand to their stage: `datakit dedup calibrate`
embeds edited copies and `datakit audit` the audited images, with `datakit embed`'s model.

Dedup and audit may not import the embed stage (another family); the command, the composition
root, builds this callable from it and passes it in. The stage decides whether to call it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

Embedder = Callable[..., tuple[list[str], np.ndarray]]


def make_embedder(params: Any) -> Embedder:
    """`embedder(frame, root, settings=None) -> (image_ids, vectors)`: embeds the images of
    `frame` (`image_id`, `path` relative to `root`, `label`) in a temporary folder with
    `settings` (an `EmbedParams`; default: the `embed:` section of `params`). Errors of the
    model (a missing extra, no weights) come out as they are, for the stage to judge."""

    def embedder(frame: pd.DataFrame, root: Path, settings: Any = None) -> tuple[list[str], np.ndarray]:
        from datakit.embed import run as run_embed
        from datakit.params import section
        from datakit.stage import StageContext
        from datakit.vectors import read_embeddings

        chosen = settings if settings is not None else section(params, "embed")
        with tempfile.TemporaryDirectory(prefix="datakit-embed-") as tmp:
            run_embed(frame, chosen, StageContext(root=Path(root), out=Path(tmp)))
            ids, X, _ = read_embeddings(Path(tmp))
        return ids, X

    return embedder
