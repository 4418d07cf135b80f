"""The audit as a stage: `run(manifest, AuditParams, ctx)` on a split manifest, `audit_folder` on
SPLIT/LABEL/ folders a user already has, and `audit_path`, which tells the two apart for the
command. The audit changes nothing: its result is the report and the gate decision."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from datakit.audit import fingerprint
from datakit.audit.checks import audit_records
from datakit.audit.report import AuditReport
from datakit.errors import DatakitError, ManifestError
from datakit.manifest import MANIFEST
from datakit.params import AuditParams
from datakit.stage import SPLIT, NoProgress, Progress, StageContext, StageResult, as_rows, kept, load_input

STAGE = "audit"
HASHES = ("recompute", "manifest")

Embedder = Callable[..., tuple[list[str], np.ndarray]]
"""`embedder(frame, root) -> (image_ids, vectors)`: `datakit embed`'s model, handed in by the
command (see `datakit.cli.embedder`); the audit decides whether to call it."""


def audit_vectors(params: AuditParams, table: pd.DataFrame, root: Path, *, embedder: Embedder | None = None,
                  given: Path | None = None, progress: Progress | None = None) -> tuple[list[str], np.ndarray] | None:
    """The vectors `audit.embeddings` asks for: `given` (a table the caller resolved), an embed
    folder or table named in params, the audited images embedded now (`compute`; `auto`: when
    the model can be built, else the dhash alone, with a note), or none (`none`)."""
    from datakit.vectors import read_embeddings

    setting = params.embeddings
    if given is not None or setting not in ("auto", "compute", "none"):
        ids, X, _ = read_embeddings(Path(given if given is not None else setting))
        return ids, X
    if setting == "none":
        return None
    try:
        if embedder is None:
            raise DatakitError("no model to embed the images with")
        return embedder(table, root)
    except (ImportError, DatakitError) as exc:
        if setting == "compute":
            raise DatakitError(f"audit.embeddings: compute: {exc}") from None
        (progress or NoProgress()).note(f"audit: no embedding signal ({exc}); near copies from the dhash only")
        return None


def run(manifest: pd.DataFrame, params: AuditParams, ctx: StageContext, *, hashes: str = "recompute",
        embedder: Embedder | None = None, workers: int = 1) -> StageResult:
    """Audit a split manifest (`image_id`, `path`, `label`, `split`); only kept rows count
    (`stage.kept`), rows with no split are left out and listed in `skipped`.

    Args:
        hashes: ``"recompute"`` (default): read every file again (sha256, dhash, average hash);
            ``"manifest"``: trust the `dhash` column and take `image_id` as the sha256, read no
            file (the average-hash oracle and the overlay check are then skipped).
        embedder: computes vectors when `params.embeddings` asks for it (`auto`, `compute`).
        workers: processes for reading files (1 = in this process).

    Returns the input manifest unchanged, the audit JSON as the report, the files it could not
    read or decode as failures rows (also listed in the report: the audit drops nothing), and in
    `extra` the `AuditReport` (`audit`) and the gate (`ok`: leaks <= `params.max_leaks`).
    """
    if hashes not in HASHES:
        raise ValueError(f"hashes must be 'recompute' or 'manifest', got {hashes!r}")
    df = manifest
    missing = [c for c in ("image_id", "path", "label", "split") if c not in df.columns]
    if hashes == "manifest" and "dhash" not in df.columns:
        missing.append("dhash")
    if missing:
        raise ManifestError(f"the manifest lacks column(s) {', '.join(missing)}")
    root = Path(ctx.root)
    if hashes == "recompute":
        from datakit.manifest import escaping_message, escaping_rows

        outside = escaping_rows(root, df["path"], df.index)  # numbered as the manifest's rows
        if outside:
            raise ManifestError(escaping_message(outside, root))
    vectors = audit_vectors(params, df, root, embedder=embedder, given=ctx.embeddings, progress=ctx.progress)
    t = df[kept(df)]
    no_split = t["split"].isna()
    skipped = [str(x) for x in t.loc[no_split, "image_id"]]
    t = t.loc[~no_split, ["image_id", "path", "label", "split"] + [c for c in ("dhash", "low_information")
                                                                 if c in t.columns]].reset_index(drop=True)
    t["path"] = t["path"].astype(str)
    files: list[str] | None = None
    if hashes == "manifest":
        t["sha256"] = t["image_id"].astype(str)
        t["dhash"] = t["dhash"].where(t["dhash"].notna(), None)
        t["ahash"] = None
        if "low_information" not in t.columns:
            t["low_information"] = False
        bad: list[dict[str, str]] = []
    else:
        t = t.drop(columns=[c for c in ("dhash", "low_information") if c in t.columns])
        files = [str(ctx.resolve(p)) for p in t["path"]]
        ctx.progress.start("fingerprint", len(files))
        bad = fingerprint.fill(t, fingerprint.fingerprints(files, workers))
        ctx.progress.advance("fingerprint", len(files))
    rep = audit_records(t, params, hashes=hashes, unreadable=bad, skipped=skipped, embeddings=vectors,
                        files=files if params.verify else None, workers=workers)
    label_of = dict(zip(t["image_id"].astype(str), t["label"], strict=True))
    failures = as_rows({"image_id": b["image_id"], "path": b["path"], "label": label_of.get(b["image_id"]),
                        "stage": STAGE, "reason": b["reason"], "detail": b["detail"]} for b in bad)
    return StageResult(manifest, rep.to_json(), failures, extra={"audit": rep, "ok": rep.ok})


def folder_files(folder: Path) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(split, label, relative path) for `folder/<split>/<label>/**/<file>`; stray files."""
    rows: list[tuple[str, str, str]] = []
    stray: list[str] = []
    for split_dir in sorted(folder.iterdir()):
        if split_dir.name.startswith("."):
            continue
        if not split_dir.is_dir():
            stray.append(split_dir.name)
            continue
        for label_dir in sorted(split_dir.iterdir()):
            if label_dir.name.startswith("."):
                continue
            rel_label = label_dir.relative_to(folder).as_posix()
            if not label_dir.is_dir():
                stray.append(rel_label)
                continue
            for f in sorted(label_dir.rglob("*")):
                rel = f.relative_to(folder)
                if any(part.startswith(".") for part in rel.parts) or not f.is_file():
                    continue
                rows.append((split_dir.name, label_dir.name, rel.as_posix()))
    return rows, stray


def audit_folder(folder: Path, params: AuditParams | None = None, *, workers: int = 1, embedder: Embedder | None = None,
                 progress: Progress | None = None) -> AuditReport:
    """Audit a layout a user already has: ``folder/<split>/<label>/<image files>``.

    Every folder under `folder` is a split, every folder under a split a class; files below a
    class folder (any depth) are its images, hidden files and folders excepted. The image id is
    the sha256 of the bytes (the vectors are keyed by it: `folder_table` lists the files to
    embed). Files that cannot be read or decoded are listed in `unreadable` and left out of
    every count; files not inside a class folder are listed in `skipped`. A folder with no
    image inside SPLIT/LABEL/ folders is an error: it has not been split.
    """
    params = params or AuditParams()
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    rows, stray = folder_files(folder)
    if not rows:
        found = f" (files outside SPLIT/LABEL/ folders: {', '.join(stray[:3])}{', ...' if len(stray) > 3 else ''})" if stray else ""
        raise ManifestError(f"{folder} has no images in SPLIT/LABEL/ folders and no {MANIFEST}{found}: give a split "
                            "stage folder or train/, val/, test/ folders of class folders (run `datakit split INPUT "
                            "--out DIR` first)")
    vectors = audit_vectors(params, folder_table(folder), folder, embedder=embedder, progress=progress)
    t = pd.DataFrame(rows, columns=["split", "label", "path"])
    t["image_id"] = None
    prints = fingerprint.fingerprints([str(folder / p) for p in t["path"]], workers)
    bad = fingerprint.fill(t, prints)
    t["image_id"] = t["sha256"]
    good = t["sha256"].notna() & t["dhash"].notna()
    for b in bad:
        b.pop("image_id", None)
    table = t[good].reset_index(drop=True)
    return audit_records(table, params, hashes="recompute", unreadable=bad, skipped=stray, embeddings=vectors,
                         files=[str(folder / p) for p in table["path"]] if params.verify else None, workers=workers)


def folder_table(folder: Path) -> pd.DataFrame:
    """The images of a SPLIT/LABEL folder as a manifest-like table (`image_id` = sha256 of the
    bytes, `path` relative to `folder`, `label`, `split`): what to embed before `audit_folder`.
    Unreadable files are left out."""
    rows, _ = folder_files(Path(folder))
    out = []
    for split, label, rel in rows:
        try:
            data = (Path(folder) / rel).read_bytes()
        except OSError:
            continue
        out.append({"image_id": hashlib.sha256(data).hexdigest(), "path": rel, "label": label, "split": split})
    return pd.DataFrame(out, columns=["image_id", "path", "label", "split"]).drop_duplicates("image_id")


def audit_path(target: Path, params: AuditParams, *, trust_hashes: bool = False, embedder: Embedder | None = None,
               progress: Progress | None = None) -> StageResult:
    """Audit what `target` is: a split stage folder (or its manifest file) through `run`, or a
    folder of SPLIT/LABEL/ image folders through `audit_folder` (`trust_hashes` reads the
    manifest's hashes instead of the files; a folder of images has none). A stage folder without
    a split is refused with the stage to run first."""
    target = Path(target)
    if target.is_file() or (target / MANIFEST).is_file():
        inp = load_input(target, needs=(SPLIT,), required=("label",), check_files=not trust_hashes)
        ctx = StageContext(root=inp.root, input=inp.folder, progress=progress or NoProgress())
        return run(inp.manifest, params, ctx, hashes="manifest" if trust_hashes else "recompute", embedder=embedder)
    if trust_hashes:
        raise ManifestError(f"--trust-hashes needs a split manifest: {target} has no {MANIFEST}")
    rep = audit_folder(target, params, embedder=embedder, progress=progress)
    listed = pd.DataFrame(folder_files(target)[0], columns=["split", "label", "path"])
    return StageResult(listed, rep.to_json(), extra={"audit": rep, "ok": rep.ok})


__all__ = ["Embedder", "audit_folder", "audit_path", "audit_vectors", "folder_files", "folder_table", "run"]
