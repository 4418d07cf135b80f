"""`datakit balance`: the command (options, one call into the stage, a summary)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from datakit.cli.app import app
from datakit.console import fail as _fail
from datakit.console import out
from datakit.console import write_report as _write_report
from datakit.errors import DatakitError


@app.command(
    epilog=(
        "Examples:\n\n  datakit balance data/augment --out data/balance\n\n"
        "  params.yaml: balance: {strategy: oversample, target: auto}\n\n"
        "  params.yaml: balance: {strategy: undersample, target: {vest: 100, hoodie: 100}}"
    )
)
def balance(
    input_dir: Annotated[Path, typer.Argument(metavar="INPUT", help="A split or augment folder (manifest.parquet with split).", exists=True)],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder: manifest.parquet and images/ of new rows.", file_okay=False)],
    params_file: Annotated[Optional[Path], typer.Option("--params", help="params.yaml to read (default: ./params.yaml if present).")] = None,
    embeddings: Annotated[Optional[Path], typer.Option(help="smote: an embed folder or embeddings.parquet (default: balance.embeddings, else INPUT/embeddings.parquet).")] = None,
    report: Annotated[Path, typer.Option(help="Where to write counts before/after and class weights (DVC metrics).")] = Path("reports/balance.json"),
) -> None:
    """Even out the train classes: oversample, undersample, class weights, SMOTE on embeddings or pixels.

    balance.strategy: oversample (repeat minority images through the augment pipeline, so copies
    differ), undersample (rows marked keep=False, never deleted), class_weights (OUT/class_weights.json
    for the trainer), smote (SMOTE on datakit embed vectors: synthetic vectors for a linear probe,
    no images), smote_pixels (SMOTE on small pixel arrays: blended images, the weaker option).
    Targets take imbalanced-learn's forms (auto, a ratio, a per-class dict). OUT/report.html shows
    counts before/after and thumbnails of what each origin added.
    Only original train rows count; val and test are never touched."""
    from datakit.augment import parse_augment
    from datakit.balance import parse_balance
    from datakit.balance import run as run_balance
    from datakit.balance_report import write_balance_page
    from datakit.dedup import load_input
    from datakit.embed import EMBEDDINGS, read_embeddings, write_embeddings
    from datakit.fsutil import atomic_write_text, folder_lock
    from datakit.images import ImageStore
    from datakit.manifest import MANIFEST, write_table
    from datakit.params import load_params

    try:
        params = load_params(params_file)
        p = parse_balance(params.balance)
        aug = parse_augment(params.augment)
        df, root = load_input(input_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with folder_lock(out_dir, "datakit balance"):
            failures: list[dict[str, Any]] = []
            table = embeddings or (Path(p.embeddings) if p.embeddings else Path(input_dir) / EMBEDDINGS)
            vectors = None
            if p.strategy == "smote" or embeddings or p.embeddings or table.exists():
                ids, X, meta = read_embeddings(table)
                vectors = (ids, X)
            new_vectors: dict[str, Any] = {}
            result, rep = run_balance(df, p, root=root, store=ImageStore(out_dir), augment=aug, failures=failures,
                                      embeddings=vectors, new_vectors=new_vectors)
            if vectors is not None:
                # Carry the table forward (plus any synthetic rows) so the trainer finds it beside the manifest.
                import numpy as np

                keep_ids = set(result["image_id"].astype(str))
                rows = [k for k, iid in enumerate(vectors[0]) if iid in keep_ids]
                all_ids = [vectors[0][k] for k in rows] + list(new_vectors)
                X_all = np.concatenate([vectors[1][rows], np.stack(list(new_vectors.values()))]) if new_vectors else vectors[1][rows]
                write_embeddings(out_dir / EMBEDDINGS, all_ids, X_all)
                atomic_write_text(out_dir / "embed.json", json.dumps({**meta, "synthetic_rows": len(new_vectors)}, indent=2, sort_keys=True) + "\n")
            write_balance_page(result, root, rep, out_dir / "report.html")
            write_table(result, out_dir / MANIFEST)
            atomic_write_text(out_dir / "class_weights.json", json.dumps(rep["class_weights"], indent=2, sort_keys=True) + "\n")
    except DatakitError as exc:
        raise _fail(exc) from None
    _write_report(report, rep)
    t = Table(title=f"balance ({p.strategy}): train images per class")
    for col in ("label", "before", "after", "weight"):
        t.add_column(col, justify="left" if col == "label" else "right")
    for label, before in rep["counts_before"].items():
        t.add_row(label, str(before), str(rep["counts_after"].get(label, before)), f"{rep['class_weights'].get(label, 0):.3f}")
    out.print(t)
    out.print(f"imbalance (largest/smallest class) {rep['imbalance_before']} -> {rep['imbalance_after']}; "
              f"added {rep['rows_added'] or 'none'}, undersampled {rep['rows_undersampled']}\n"
              f"manifest: {out_dir / MANIFEST}   weights: {out_dir / 'class_weights.json'}   page: {out_dir / 'report.html'}")
