"""`datakit audit`: the command (options, one call into the stage, a summary)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from datakit.cli.app import app
from datakit.console import err, out
from datakit.console import fail as _fail
from datakit.console import write_report as _write_report
from datakit.errors import DatakitError


def _audit_vectors(setting: str, table: Any, root: Path, params: Any) -> tuple[list[str], Any] | None:
    """The vectors `audit.embeddings` asks for: read from an embed folder, computed for the
    audited images (into a temporary folder, with the `embed:` settings), or none."""
    import tempfile

    from datakit.embed import parse_embed, read_embeddings
    from datakit.embed import run as run_embed

    if setting == "none":
        return None
    if setting not in ("auto", "compute"):
        ids, X, _ = read_embeddings(Path(setting))
        return ids, X
    try:
        with tempfile.TemporaryDirectory(prefix="datakit-audit-embed-") as tmp:
            run_embed(table, parse_embed(params.embed), root=root, out_dir=Path(tmp))
            ids, X, _ = read_embeddings(Path(tmp))
    except (ImportError, DatakitError) as exc:
        if setting == "compute":
            raise DatakitError(f"audit.embeddings: compute: {exc}") from None
        err.print(f"audit: no embedding signal ({exc}); near copies from the dhash only")
        return None
    return ids, X


@app.command(
    epilog=(
        "Examples:\n\n  datakit audit data/split                      (a split manifest)\n\n"
        "  datakit audit ~/my_dataset                   (train/ val/ test/ folders of class folders)\n\n"
        "  datakit audit data/split --max-leaks 5 --report reports/audit.json"
    )
)
def audit(
    target: Annotated[Path, typer.Argument(metavar="INPUT", help="A split folder (manifest.parquet with split) or a folder of SPLIT/LABEL/ image folders.", exists=True)],
    params_file: Annotated[Optional[Path], typer.Option("--params", help="params.yaml to read (default: ./params.yaml if present).")] = None,
    radius: Annotated[Optional[int], typer.Option(help="dhash radius for near-duplicate leaks (params: audit.radius).")] = None,
    max_leaks: Annotated[Optional[int], typer.Option(help="Exit 1 above this many cross-split leaks (params: audit.max_leaks, default 0).")] = None,
    trust_hashes: Annotated[bool, typer.Option("--trust-hashes", help="Reuse the manifest's dhash/image_id instead of re-reading every file.")] = False,
    embeddings: Annotated[Optional[str], typer.Option(help="Vectors that nominate candidate pairs (they find re-crops): an embed folder, 'compute' (embed the audited images here), 'auto' (compute when the model can be built) or 'none' (params: audit.embeddings).")] = None,
    report: Annotated[Path, typer.Option(help="Where to write the audit (DVC metrics).")] = Path("reports/audit.json"),
) -> None:
    """Re-check a split independently for leaks and balance; exit 1 above audit.max_leaks.

    Exact (sha256) and near copies across splits, found as dedup finds them: candidates from the
    dhash and each image's nearest neighbours by embedding, kept when one picture overlays the
    other (plus a deepchecks-style average_hash oracle, reported apart); label conflicts,
    per-class counts per split, class proportion deviation, classes missing from a split.
    Works on a split manifest or on SPLIT/LABEL/ folders you already have, and can gate a DVC
    pipeline."""
    from datakit.audit import audit_folder, audit_manifest, folder_table
    from datakit.manifest import MANIFEST, find_project_root, read_manifest
    from datakit.params import load_params, override

    try:
        params = load_params(params_file)
        p = override(params.audit, "audit", radius=radius, max_leaks=max_leaks, embeddings=embeddings)
        manifest_path = target / MANIFEST if target.is_dir() else target
        knobs = {"radius": p.radius, "max_leaks": p.max_leaks, "neighbours": p.neighbours, "similarity": p.similarity,
                 "verify": p.verify, "match_threshold": p.match_threshold}
        if manifest_path.is_file():
            root = find_project_root(manifest_path.parent)
            df = read_manifest(manifest_path, required=("image_id", "path", "label", "split"), root=root,
                               check_files=not trust_hashes)
            vectors = _audit_vectors(p.embeddings, df, root, params)
            rep = audit_manifest(df, root, hashes="manifest" if trust_hashes else "recompute", embeddings=vectors, **knobs)
        else:
            vectors = _audit_vectors(p.embeddings, folder_table(target), target, params)
            rep = audit_folder(target, embeddings=vectors, **knobs)
    except (DatakitError, ValueError) as exc:
        raise _fail(exc) from None
    _write_report(report, rep.to_json())
    out.print(rep.summary(), highlight=False)
    if not rep.ok:
        raise typer.Exit(1)
