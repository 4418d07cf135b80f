"""`datakit balance`: even out the classes of what training sees (see `datakit.balance.stage`).

- `params`: `balance:` in params.yaml and the one reading of `balance.target`;
- `stage`: `run(manifest, params, ctx, *, make_variant, vectors) -> StageResult`;
- `smote`: memory-bounded exact k-NN and SMOTE interpolation (pixels or vectors);
- `page`: OUT/report.html, what balancing added, for a person to check.

Balance never imports another stage: the augment pipeline reaches it as a `make_variant`
callable and the embeddings as vectors (or `ctx.embeddings`), both from the CLI.
"""

from datakit.balance.params import KEY, TARGET_FORMS, BalanceParams, class_weights, normalise_target, parse_balance
from datakit.balance.stage import BALANCE_ORIGINS, COUNTS, SMOTE_PIXELS, UNDERSAMPLED, MakeVariant, run

__all__ = [
    "BALANCE_ORIGINS",
    "COUNTS",
    "KEY",
    "SMOTE_PIXELS",
    "TARGET_FORMS",
    "UNDERSAMPLED",
    "BalanceParams",
    "MakeVariant",
    "class_weights",
    "normalise_target",
    "parse_balance",
    "run",
]
