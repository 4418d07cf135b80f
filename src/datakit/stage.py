"""Stage I/O: the one place for what every stage shares (ARCHITECTURE.md, "The stage contract").

```
run(manifest: DataFrame, params: <Stage>Params, ctx: StageContext) -> StageResult
```

- `load_input` reads an earlier stage's folder: the manifest validated (columns, ids, paths
  inside the project, files present), its `path` values relative to one project root, and its
  *kind* checked: a stage that needs deduplicated or split data says which stage to run first.
- `kept` is the one rule for which rows count as kept; `ORIGINAL`/`AUGMENTED`/... and
  `derived_row`/`child_row` the one rule for rows a stage derives from another.
- `StageContext` carries the root, the output folder (and its image store), the embeddings table
  and one progress protocol; `StageResult(manifest, report, failures, files)` is what every stage
  returns, and `write_result` its one writer (atomic manifest with folder-relative paths,
  `failures.parquet`, `reports/<stage>.json`). `run_stage` does load → lock → run → write.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa

from datakit.errors import ManifestError
from datakit.manifest import (
    CORE_COLUMNS,
    FAILURES,
    MANIFEST,
    check_rows,
    is_known_reason,
    read_stage_manifest,
    relpath,
    resolve,
    write_stage_manifest,
    write_table,
)

# --- row origins: which rows are the scraped images and which a stage derived -------------------
ORIGIN = "origin"
ORIGINAL = "original"  # a scraped (or ingested) image
AUGMENTED = "augmented"  # an augment variant of an original train image
OVERSAMPLED = "oversampled"  # a balance variant made to even out a class
SMOTE = "smote"  # a balance vector interpolated between two images (no file)

# Columns that describe a parent's bytes or pixels; a derived row has other bytes, so they are
# emptied rather than copied.
PIXEL_COLUMNS = (
    "orig_width",
    "orig_height",
    "downsized",
    "has_gps",
    "content_type",
    "content_type_mismatch",
    "dhash",
    "dhash_crops",
    "low_information",
)


def kept(df: pd.DataFrame) -> pd.Series:
    """The one rule for which rows count: a manifest with no `keep` column keeps every row; a
    row whose `keep` is False *or missing* is not kept (a decision no stage made is not a yes)."""
    if "keep" not in df.columns:
        return pd.Series(True, index=df.index)
    return df["keep"].astype("boolean").fillna(False).astype(bool)


def origins(df: pd.DataFrame) -> pd.Series:
    """Each row's origin; rows without one are `ORIGINAL`."""
    if ORIGIN not in df.columns:
        return pd.Series(ORIGINAL, index=df.index)
    return df[ORIGIN].fillna(ORIGINAL).astype(str)


def training_rows(df: pd.DataFrame) -> pd.Series:
    """The rows a trainer learns from: kept rows of the train split, whatever their origin."""
    train = df["split"].eq("train") if "split" in df.columns else pd.Series(False, index=df.index)
    return train & kept(df)


def derived_row(parent: dict[str, Any], *, image_id: str, origin: str, parent_ids: list[str],
                made_with: dict[str, Any]) -> dict[str, Any]:
    """A manifest row derived from `parent` with no file of its own yet: the parent's columns,
    minus those that describe the parent's bytes (path, size, format, pixel facts: null), plus
    the new identity and its provenance (`origin`, `parent_ids`, `augment_params`)."""
    row = dict(parent)
    for col in PIXEL_COLUMNS:
        if col in row:
            row[col] = None
    row.update(
        image_id=image_id,
        path=None,
        width=None,
        height=None,
        format=None,
        bytes=None,
        origin=origin,
        parent_ids=parent_ids,
        augment_params=json.dumps(made_with, sort_keys=True),
    )
    return row


def child_row(parent: dict[str, Any], *, root: Path, store: Any, image_id: str, rel: str,
              width: int, height: int, fmt: str, nbytes: int, origin: str, parent_ids: list[str],
              made_with: dict[str, Any]) -> dict[str, Any]:
    """A manifest row for a new image derived from `parent` and stored at `store.folder / rel`:
    `derived_row` plus the new file."""
    row = derived_row(parent, image_id=image_id, origin=origin, parent_ids=parent_ids, made_with=made_with)
    row.update(path=relpath(root, Path(store.folder) / rel), width=int(width), height=int(height), format=fmt,
               bytes=int(nbytes))
    return row


# --- input kinds ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Kind:
    """What a stage needs from its input, as columns an earlier stage writes."""

    name: str
    columns: tuple[str, ...]
    run_first: str  # the command that makes an input of this kind


SCRAPED = Kind("images", tuple(CORE_COLUMNS), "datakit scrape --out DIR")
DEDUPLICATED = Kind("deduplicated", ("dup_group", "keep"), "datakit dedup INPUT --out DIR")
SPLIT = Kind("split", ("split",), "datakit split INPUT --out DIR")
KINDS = {k.name: k for k in (SCRAPED, DEDUPLICATED, SPLIT)}

_WHAT = {"deduplicated": "has not been deduplicated", "split": "has no train/val/test split",
         "images": "is not an image manifest"}


def check_kind(df: pd.DataFrame, where: Path, needs: Iterable[Kind]) -> None:
    """A clear error when `df` (read from `where`) lacks what an earlier stage would have added."""
    for kind in needs:
        missing = [c for c in kind.columns if c not in df.columns]
        if missing:
            raise ManifestError(
                f"{where} {_WHAT.get(kind.name, 'is not ' + kind.name)} (no {', '.join(missing)} column"
                f"{'s' if len(missing) > 1 else ''}): run `{kind.run_first}` first"
            )


@dataclass
class Input:
    """An earlier stage's output, read and checked."""

    folder: Path  # the stage folder (or the manifest file's folder)
    manifest: pd.DataFrame  # `path` relative to `root`
    root: Path  # the project root every in-memory path is relative to
    stage: str | None  # the stage that wrote it, when recorded

    @property
    def failures_path(self) -> Path:
        return self.folder / FAILURES


def load_input(source: Path, *, needs: Iterable[Kind] = (SCRAPED,), required: Iterable[str] = (),
               check_files: bool = True, root: Path | None = None) -> Input:
    """Read the manifest of `source` (a stage folder or a manifest file) and check it: its kind
    (`needs`), the extra `required` columns, ids, paths inside the project and (with
    `check_files`) that every image file exists. Every problem is one ManifestError naming the
    file; a wrong kind names the stage to run first."""
    source = Path(source)
    path = source / MANIFEST if source.is_dir() else source
    if not path.exists():
        if source.is_dir():
            raise ManifestError(f"{source} has no {MANIFEST}: it is not a datakit stage folder (or its stage has not finished)")
        raise ManifestError(f"no manifest at {source}")
    df, root, meta = read_stage_manifest(path, root)
    where = path.parent if path.name == MANIFEST else path
    needs = list(needs)
    # Columns first as a kind ("run dedup first"), then the row checks.
    if all(c in df.columns for c in CORE_COLUMNS) or SCRAPED not in needs:
        check_kind(df, where, [k for k in needs if k is not SCRAPED])
    wanted = list(dict.fromkeys([*([*CORE_COLUMNS] if SCRAPED in needs else ["image_id", "path"]), *required]))
    found = check_rows(df, root, required=wanted, check_files=check_files)
    if found.problems:
        raise ManifestError(f"invalid manifest {path}: " + "; ".join(found.problems))
    return Input(folder=path.parent, manifest=df, root=root, stage=meta.get("stage"))


# --- progress --------------------------------------------------------------------------------------
class Progress(Protocol):
    """The one progress protocol: phases with a total, advanced as work finishes, and notes."""

    def start(self, phase: str, total: int) -> None: ...

    def advance(self, phase: str, n: int = 1) -> None: ...

    def note(self, message: str) -> None: ...


class NoProgress:
    """Progress that shows nothing (library use, tests)."""

    def start(self, phase: str, total: int) -> None:
        pass

    def advance(self, phase: str, n: int = 1) -> None:
        pass

    def note(self, message: str) -> None:
        pass


# --- context and result -------------------------------------------------------------------------------
@dataclass
class StageContext:
    """What a stage gets besides its manifest and params."""

    root: Path  # manifest paths in memory are relative to it
    out: Path | None = None  # the stage's output folder (None: nothing is stored)
    input: Path | None = None  # the input folder, when the stage read one
    embeddings: Path | None = None  # the embeddings table (`embeddings.parquet`), when there is one
    progress: Progress = field(default_factory=NoProgress)
    _store: Any = None

    def resolve(self, rel: str) -> Path:
        """The file a manifest `path` names."""
        return resolve(self.root, rel)

    def relpath(self, target: Path) -> str:
        """A file as a manifest `path` (relative to the root)."""
        return relpath(self.root, target)

    @property
    def store(self) -> Any:
        """The content-addressed image store of the output folder (for stages that make images)."""
        if self._store is None:
            if self.out is None:
                raise ManifestError("this stage stores images: give it an output folder")
            from datakit.images import ImageStore

            self._store = ImageStore(self.out)
        return self._store


# Failures a later stage records: one row per image it dropped or could not process.
STAGE_FAILURE_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("path", pa.string()),
        ("label", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)


def failure_rows(df: pd.DataFrame, mask: Any, stage: str, reason: str | Iterable[str],
                 detail: str | Iterable[str | None] | None = None) -> pd.DataFrame:
    """Failures rows for the rows of `df` selected by `mask` (one reason, or one per row)."""
    rows = df.loc[mask]
    n = len(rows)
    reasons = [reason] * n if isinstance(reason, str) else list(reason)
    details = [detail] * n if detail is None or isinstance(detail, str) else list(detail)
    return pd.DataFrame({
        "image_id": rows["image_id"].tolist() if "image_id" in rows else [None] * n,
        "path": rows["path"].tolist() if "path" in rows else [None] * n,
        "label": rows["label"].tolist() if "label" in rows else [None] * n,
        "stage": [stage] * n,
        "reason": reasons,
        "detail": details,
    })


@dataclass
class StageResult:
    """What every stage returns: its manifest, its figures, the images it dropped or failed
    (with reasons; None when the stage cannot drop any) and any other files it wrote."""

    manifest: pd.DataFrame
    report: dict[str, Any]
    failures: pd.DataFrame | None = None
    files: dict[str, Path] = field(default_factory=dict)
    schema: pa.Schema | None = None  # column types for the manifest, when the stage fixes them
    extra: dict[str, Any] = field(default_factory=dict)  # stage-specific objects for the caller (not written)


def write_result(result: StageResult, ctx: StageContext, stage: str, report: Path | None = None) -> None:
    """The one writer: OUT/manifest.parquet (atomic, paths relative to OUT), OUT/failures.parquet
    (when the stage records failures), and the report as JSON (`report`, when given)."""
    if ctx.out is None:
        raise ManifestError(f"{stage}: no output folder to write to")
    out = Path(ctx.out)
    out.mkdir(parents=True, exist_ok=True)
    if result.failures is not None:
        bad = sorted({r for r in result.failures.get("reason", []) if not (isinstance(r, str) and is_known_reason(r))})
        if bad:
            raise ManifestError(f"{stage}: unknown failure reason(s) {', '.join(map(repr, bad))} (add them to manifest.REASONS)")
        write_table(result.failures, out / FAILURES,
                    STAGE_FAILURE_SCHEMA if set(result.failures.columns) <= set(STAGE_FAILURE_SCHEMA.names) else None)
    write_stage_manifest(result.manifest, out / MANIFEST, ctx.root, result.schema, stage)
    if report is not None:
        from datakit.console import write_report

        write_report(report, result.report)


def run_stage(stage: str, run: Callable[[pd.DataFrame, Any, StageContext], StageResult], source: Path | None,
              out: Path, params: Any, *, needs: Iterable[Kind] = (SCRAPED,), required: Iterable[str] = (),
              check_files: bool = True, report: Path | None = None, embeddings: Path | None = None,
              progress: Progress | None = None, manifest: pd.DataFrame | None = None,
              root: Path | None = None) -> StageResult:
    """Load `source` (or take `manifest` with `root`), hold OUT's lock, run the stage and write
    its result: the one way every command runs a stage."""
    from datakit.fsutil import folder_lock

    if manifest is None:
        if source is None:
            raise ManifestError(f"{stage}: no input")
        inp = load_input(source, needs=needs, required=required, check_files=check_files)
        manifest, root = inp.manifest, inp.root
    elif root is None:
        from datakit.manifest import find_project_root

        root = find_project_root(Path(out))
    ctx = StageContext(root=Path(root), out=Path(out), input=Path(source) if source else None,
                       embeddings=embeddings, progress=progress or NoProgress())
    Path(out).mkdir(parents=True, exist_ok=True)
    with folder_lock(Path(out), f"datakit {stage}"):
        result = run(manifest, params, ctx)
        write_result(result, ctx, stage, report)
    return result


# --- the embeddings table --------------------------------------------------------------------------
EMBEDDINGS = "embeddings.parquet"


def embeddings_file(location: Path) -> Path:
    """The embeddings table a folder (an embed stage's output) or a file names."""
    location = Path(location)
    return location / EMBEDDINGS if location.is_dir() or location.suffix != ".parquet" else location


def find_embeddings(setting: str | Path | None, source: Path | None) -> Path | None:
    """Where the embeddings are for a stage reading `source`: an explicit folder/file (`setting`),
    or with `auto`/None the input folder's own table when it has one; `none` means no vectors."""
    if setting is None or str(setting) == "auto":
        if source is None:
            return None
        folder = Path(source) if Path(source).is_dir() else Path(source).parent
        found = folder / EMBEDDINGS
        return found if found.exists() else None
    if str(setting) == "none":
        return None
    path = embeddings_file(Path(setting))
    if not path.exists():
        raise ManifestError(f"no embeddings table at {path}: run `datakit embed INPUT --out DIR` first")
    return path


def stage_report_path(stage: str, report: Path | None) -> Path:
    """`reports/<stage>.json` unless the command was given `--report`."""
    return Path(report) if report is not None else Path("reports") / f"{stage}.json"


def as_rows(rows: Iterable[dict[str, Any]], schema: pa.Schema = STAGE_FAILURE_SCHEMA) -> pd.DataFrame:
    """A failures frame from row dicts (empty with the schema's columns when there are none)."""
    rows = list(rows)
    if not rows:
        return schema.empty_table().to_pandas()
    return pd.DataFrame(rows)
