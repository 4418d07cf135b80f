"""`datakit export`: lay a split manifest out as folders that training libraries read directly.

Two layouts:

* ``imagefolder``: ``out/<split>/<label>/<image_id>.<ext>``, the class-per-folder tree that
  torchvision ``ImageFolder``, Keras ``image_dataset_from_directory`` and fastai expect.
* ``hf``: the Hugging Face ``imagefolder`` builder's layout, ``out/<split>/<image_id>.<ext>`` plus
  ``out/<split>/metadata.csv`` (``file_name,label`` and, where the manifest has them, ``image_id``,
  ``source_url`` and ``license``).

Files are hard links to the stored images by default (no extra disk; a hard link across
filesystems is impossible, so those files are copied and the report says so), copies, or relative
symlinks.

Beside the split folders the export writes ``ATTRIBUTION.md`` and ``attribution.csv`` (who made
each exported original image and under which licence: `datakit.licences`, the files `datakit
credits` writes) and, with ``datasheet``, a copy of the dataset's ``DATASHEET.md``; each file is
written atomically, and a file of that name that an earlier export did not write is refused.

Each split is built complete in a hidden temp folder inside ``out`` and renamed into place, so a
killed export leaves the previous version of a split or the new one, never half of either.
``out/.datakit/export.json`` records which split folders datakit wrote; only those are ever
replaced or removed, so pointing ``out`` at a folder that holds other data cannot delete it.

Stage shape: `run(manifest, ExportParams, ctx) -> StageResult` (the split folders in `files`,
the `ExportReport` in `extra`); `export_manifest` reads a split folder with `stage.load_input`
(paths relative to the folder or, for older manifests, to the project root) and runs it. An
export writes no manifest of its own: its output is the folder layout other tools read. Which
rows count as kept is `stage.kept` (a row whose `keep` is missing is not exported).
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from datakit import licences
from datakit.errors import ManifestError, ParamsError, StoreError
from datakit.fsutil import atomic_write_text, check_no_symlink, folder_lock, fsync_dir
from datakit.manifest import IMAGE_ID, LABEL, PATH, PathGuard, check_labels, resolve
from datakit.stage import SPLIT as SPLIT_KIND
from datakit.stage import StageContext, StageResult, kept, load_input

Layout = Literal["imagefolder", "hf"]
LinkMode = Literal["hardlink", "copy", "symlink"]
LAYOUTS: tuple[str, ...] = ("imagefolder", "hf")
LINK_MODES: tuple[str, ...] = ("hardlink", "copy", "symlink")

SPLIT = "split"
KEEP = "keep"
REQUIRED = (IMAGE_ID, PATH, LABEL, SPLIT)
METADATA = "metadata.csv"
# Extra manifest columns copied into the hf metadata.csv when present.
HF_EXTRA = ("image_id", "source_url", "license")
STATE_FILE = "export.json"
DATASHEET = "DATASHEET.md"
_TMP_PREFIX = ".export-"
_TMP_SUFFIX = ".tmp"

# Skip reasons (rows that are in the manifest but not in the export).
SKIP_REASONS: dict[str, str] = {
    "dropped": "keep is False or missing (dedup dropped the row, or no stage kept it)",
    "no_split": "the split column is empty (the row was not placed in any split)",
    "not_selected": "its split was not among the requested splits",
    "no_label": "the label is empty (imagefolder needs a class folder)",
}

# errno values meaning "this filesystem cannot hard-link these two paths": copy instead.
_NO_HARDLINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}
_FORMAT_EXT = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png", "webp": ".webp", "gif": ".gif", "bmp": ".bmp"}


@dataclass
class ExportReport:
    """What one export wrote."""

    out: Path
    layout: str
    link: str  # the mode asked for
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> label -> files
    skipped: dict[str, int] = field(default_factory=dict)  # reason (SKIP_REASONS) -> rows
    links: dict[str, int] = field(default_factory=dict)  # mode actually used -> files
    removed_splits: list[str] = field(default_factory=list)  # stale split folders deleted
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # files beside the splits (ATTRIBUTION.md, ...)
    licences: dict[str, Any] = field(default_factory=dict)  # licences.summary of the credited images

    @property
    def total(self) -> int:
        return sum(sum(by_label.values()) for by_label in self.counts.values())

    @property
    def link_used(self) -> str:
        """The single mode every file got, "mixed" (hardlink fell back to copy for some), or
        the requested mode when nothing was written."""
        used = [m for m, n in self.links.items() if n]
        if not used:
            return self.link
        return used[0] if len(used) == 1 else "mixed"

    def to_dict(self) -> dict[str, object]:
        return {
            "out": str(self.out),
            "layout": self.layout,
            "link": self.link,
            "link_used": self.link_used,
            "links": dict(self.links),
            "total": self.total,
            "counts": {s: dict(c) for s, c in self.counts.items()},
            "skipped": dict(self.skipped),
            "removed_splits": list(self.removed_splits),
            "notes": list(self.notes),
            "files": list(self.files),
            "licences": dict(self.licences),
        }

    def lines(self) -> list[str]:
        """A short human summary (one line per split, then skips and notes)."""
        out = [f"exported {self.total} images to {self.out} ({self.layout}, {self.link_used})"]
        for split, by_label in self.counts.items():
            n = sum(by_label.values())
            parts = ", ".join(f"{label}={c}" for label, c in by_label.items())
            out.append(f"  {split}: {n} ({parts})")
        for reason, n in self.skipped.items():
            out.append(f"  skipped {n} rows: {SKIP_REASONS.get(reason, reason)}")
        if self.files:
            out.append(f"  also: {', '.join(self.files)} ({self.licences.get('images', 0)} original images credited)")
        out.extend(f"  licence: {w}" for w in self.licences.get("warnings", []))
        out.extend(f"  note: {note}" for note in self.notes)
        return out


def _check_names(names: Sequence[str], what: str) -> None:
    """Split names and (imagefolder) labels become folder names: same rules as labels."""
    try:
        check_labels(list(names))
    except ParamsError as exc:
        raise ParamsError(
            str(exc).replace("labels unusable as class names", f"{what} unusable as folder names")
        ) from None


_SAFE_EXT = re.compile(r"\.[a-z0-9]{1,5}")


def _file_name(image_id: str, rel: str, fmt: object) -> str:
    ext = os.path.splitext(rel)[1].lower()
    if not _SAFE_EXT.fullmatch(ext):
        ext = _FORMAT_EXT.get(str(fmt).lower(), "") if isinstance(fmt, str) else ""
    return image_id + ext


def _bad_id(image_id: str) -> bool:
    return (
        not image_id
        or image_id in (".", "..")
        or image_id.startswith(".")
        or any(c in image_id for c in "/\\\x00")
        or any(ord(c) < 32 for c in image_id)
        or len(image_id.encode("utf-8")) > 200
    )


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _read_state(out: Path, key: str = "splits") -> set[str]:
    """The split folders (`key="splits"`) or top-level files (`"files"`) an earlier export wrote."""
    path = out / ".datakit" / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(s) for s in data.get(key, [])}
    except (OSError, ValueError, AttributeError):
        return set()


def _write_state(out: Path, splits: set[str], layout: str, files: set[str] | None = None) -> None:
    files = _read_state(out, "files") if files is None else files
    text = json.dumps({"splits": sorted(splits), "layout": layout, "files": sorted(files)}, indent=2) + "\n"
    atomic_write_text(out / ".datakit" / STATE_FILE, text)


def _read_datasheet(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ParamsError(f"--datasheet {path}: cannot read it as UTF-8 text ({why}); run `datakit report` to write one") from None


def _clean_leftovers(out: Path) -> None:
    """Temp folders of a killed export (only ours: hidden, `.export-*.tmp`)."""
    for p in out.iterdir():
        if p.name.startswith(_TMP_PREFIX) and p.name.endswith(_TMP_SUFFIX) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)


def _place(src: Path, dst: Path, final_dst: Path, mode: str, report: ExportReport) -> None:
    """Put one file at `dst` (inside the temp tree); `final_dst` is where it will end up,
    which is what a relative symlink must be computed against."""
    if mode == "symlink":
        target = os.path.relpath(os.path.abspath(src), os.path.dirname(final_dst))
        os.symlink(target, dst)
        used = "symlink"
    elif mode == "hardlink":
        try:
            os.link(src, dst)
            used = "hardlink"
        except OSError as exc:
            if exc.errno not in _NO_HARDLINK:
                raise
            if not report.links.get("copy"):
                why = "different filesystems" if exc.errno == errno.EXDEV else exc.strerror
                report.notes.append(f"hard links impossible from {src.parent} to {report.out} ({why}); copied instead")
            shutil.copyfile(src, dst)
            used = "copy"
    else:
        shutil.copyfile(src, dst)  # a plain open(): normal permissions, no source metadata
        used = "copy"
    report.links[used] = report.links.get(used, 0) + 1


def _metadata_csv(rows: pd.DataFrame, names: list[str]) -> str:
    cols = ["file_name", "label"] + [c for c in HF_EXTRA if c in rows.columns]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for name, (_, r) in zip(names, rows.iterrows(), strict=True):
        rec = [name, r[LABEL]]
        for c in cols[2:]:
            v = r[c]
            rec.append("" if v is None or (isinstance(v, float) and pd.isna(v)) else v)
        w.writerow(rec)
    return buf.getvalue()


def _new_dir(out: Path, split: str) -> Path:
    """A fresh hidden temp folder in `out` (plain mkdir, so the umask gives normal permissions;
    mkdtemp would make it 0700)."""
    for _ in range(100):
        tmp = out / f"{_TMP_PREFIX}{split}-{secrets.token_hex(6)}{_TMP_SUFFIX}"
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:
            continue
    raise StoreError(f"cannot create a temp folder in {out}")


def _build_split(
    rows: pd.DataFrame, split: str, root: Path, out: Path, layout: str, link: str, report: ExportReport
) -> Path:
    """Build one split complete in a temp folder inside `out`; return that folder."""
    tmp = _new_dir(out, split)
    real_out = os.path.realpath(out)
    final = out / split
    counts: dict[str, int] = {}
    names: list[str] = []
    made: set[str] = set()
    try:
        for r in rows.itertuples(index=False):
            image_id, rel, label = getattr(r, IMAGE_ID), getattr(r, PATH), getattr(r, LABEL)
            name = _file_name(image_id, rel, getattr(r, "format", None))
            sub = label if layout == "imagefolder" else ""
            folder = tmp / sub if sub else tmp
            if sub and sub not in made:
                folder.mkdir()
                made.add(sub)
            dst = folder / name
            check_no_symlink(dst, out)
            if not _inside(os.path.realpath(dst.parent), real_out):
                raise StoreError(f"refusing to write {dst}: it resolves outside {out}")
            _place(resolve(root, rel), dst, final / sub / name if sub else final / name, link, report)
            names.append(name)
            counts[label] = counts.get(label, 0) + 1
        if layout == "hf":
            atomic_write_text(tmp / METADATA, _metadata_csv(rows, names), durable=False)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report.counts[split] = dict(sorted(counts.items()))
    return tmp


def _swap_in(tmp: Path, final: Path) -> None:
    """Replace `final` by `tmp` with renames: the old tree is moved aside, never half-deleted."""
    old: Path | None = None
    if final.is_symlink():
        raise StoreError(f"refusing to replace the symlink {final} (datakit did not create it)")
    if final.exists():
        old = final.parent / f"{_TMP_PREFIX}old-{final.name}-{secrets.token_hex(6)}{_TMP_SUFFIX}"
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export(
    df: pd.DataFrame,
    root: Path,
    out: Path,
    *,
    layout: Layout = "imagefolder",
    link: LinkMode = "hardlink",
    splits: Sequence[str] | None = None,
    datasheet: Path | None = None,
) -> ExportReport:
    """Materialise a split manifest under `out`, with ATTRIBUTION.md and attribution.csv.

    Args:
        df: A split manifest (``image_id``, ``path``, ``label``, ``split``; ``keep`` optional).
            Rows with ``keep == False`` or an empty split are skipped and counted.
        root: The folder the manifest ``path`` values are relative to (``find_project_root``).
        out: Export folder; created if missing. Split folders a previous export wrote are
            replaced whole; any other existing ``out/<split>`` is refused, never overwritten.
        layout: ``"imagefolder"`` (class folders) or ``"hf"`` (flat files + ``metadata.csv``).
        link: ``"hardlink"`` (copy across filesystems), ``"copy"`` or ``"symlink"`` (relative).
        splits: Only these splits (others in ``out`` are left alone). ``None``: every split in
            the manifest, and split folders of an earlier export that no longer exist are removed.
        datasheet: A DATASHEET.md (`datakit report` writes reports/DATASHEET.md) copied to
            ``out/DATASHEET.md``.

    Raises:
        ParamsError: bad layout/link, unknown split asked for, labels or split names that are
            not usable as folder names (collide by case/Unicode, separators, reserved names),
            `out` holding the source images, or an existing ``out/<split>`` not written by export.
        ManifestError: missing columns, duplicate or unsafe ``image_id``, paths outside `root`,
            missing image files.
        StoreError: a symlink planted inside `out`.
    """
    if layout not in LAYOUTS:
        raise ParamsError(f"export layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    if link not in LINK_MODES:
        raise ParamsError(f"export link must be one of {', '.join(LINK_MODES)}, not {link!r}")
    root = Path(root).absolute()
    out = Path(out).absolute()
    report = ExportReport(out=out, layout=layout, link=link)

    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ManifestError(f"not a split manifest: missing columns {', '.join(missing)} (run `datakit split` first)")
    df = df.reset_index(drop=True)

    # Which rows are exported; every other row is counted under one reason.
    skip = pd.Series([None] * len(df), dtype="object")
    skip[(~kept(df)).to_numpy(dtype=bool)] = "dropped"  # the one kept-rows rule
    split_col = df[SPLIT].astype("object")
    no_split = split_col.isna() | (split_col.astype(str).str.strip() == "")
    skip[(skip.isna() & no_split).to_numpy()] = "no_split"
    present = sorted({str(s) for s in split_col[skip.isna()]})
    if splits is not None:
        wanted = list(dict.fromkeys(str(s) for s in splits))
        unknown = [s for s in wanted if s not in present]
        if unknown:
            raise ParamsError(
                f"split {', '.join(map(repr, unknown))} not in the manifest (it has: {', '.join(present) or 'none'})"
            )
        skip[(skip.isna() & ~split_col.astype(str).isin(wanted)).to_numpy()] = "not_selected"
    else:
        wanted = present
    if layout == "imagefolder":
        lab = df[LABEL].astype("object")
        no_label = lab.isna() | (lab.astype(str).str.strip() == "")
        skip[(skip.isna() & no_label).to_numpy()] = "no_label"
    for reason, n in skip.value_counts().items():
        report.skipped[str(reason)] = int(n)

    rows = df[skip.isna().to_numpy()].copy()
    rows[SPLIT] = rows[SPLIT].astype(str)
    rows[IMAGE_ID] = rows[IMAGE_ID].astype(str)
    rows[LABEL] = rows[LABEL].map(lambda v: "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v))
    _check_names(wanted, "split names")
    if layout == "imagefolder":
        _check_names(sorted(set(rows[LABEL])), "labels")
    _check_rows(rows, root, out)
    sheet = _read_datasheet(datasheet)
    extra = [licences.ATTRIBUTION_MD, licences.ATTRIBUTION_CSV] + ([DATASHEET] if sheet is not None else [])

    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out, "export"):
        _clean_leftovers(out)
        ours = _read_state(out)
        our_files = _read_state(out, "files")
        for s in wanted:
            final = out / s
            if (final.exists() or final.is_symlink()) and s not in ours:
                raise ParamsError(
                    f"{final} already exists and was not written by datakit export; delete it or choose another --out"
                )
        for name in extra:
            if ((out / name).exists() or (out / name).is_symlink()) and name not in our_files:
                raise ParamsError(
                    f"{out / name} already exists and was not written by datakit export; delete it or choose another --out"
                )
        built: list[tuple[str, Path]] = []
        try:
            for s in wanted:
                part = rows[rows[SPLIT] == s].sort_values([LABEL, IMAGE_ID], kind="stable")
                built.append((s, _build_split(part, s, root, out, layout, link, report)))
            # Record the new splits before any rename, so a kill mid-swap leaves them ours.
            _write_state(out, ours | set(wanted), layout)
            for s, tmp in built:
                _swap_in(tmp, out / s)
        except BaseException:
            for _, tmp in built:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        keep_recorded = set(wanted)
        if splits is None:
            for stale in sorted(ours - set(wanted)):
                path = out / stale
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                    report.removed_splits.append(stale)
        else:
            keep_recorded |= ours
        # Credits cover every split folder now in `out` that this manifest holds.
        credit = (skip.isna() | skip.eq("not_selected")).to_numpy() & split_col.astype(str).isin(keep_recorded).to_numpy()
        _write_state(out, keep_recorded, layout, our_files | set(extra))
        report.licences = licences.write_attribution(df[credit], out)
        if sheet is not None:
            atomic_write_text(out / DATASHEET, sheet)
        report.files = extra
        fsync_dir(out)
    if report.removed_splits:
        report.notes.append(f"removed split folders of an earlier export: {', '.join(report.removed_splits)}")
    return report


def _check_rows(rows: pd.DataFrame, root: Path, out: Path) -> None:
    """Everything that can be checked before a file is written, all problems at once."""
    problems: list[str] = []
    ids = rows[IMAGE_ID]
    bad = [i for i in ids if _bad_id(i)]
    if bad:
        problems.append(f"image_id unusable as a file name: {', '.join(map(repr, bad[:5]))}")
    dup = ids[ids.str.casefold().duplicated(keep=False)]
    if len(dup):
        problems.append(f"duplicate image_id (ignoring case): {', '.join(sorted(set(dup))[:5])}")
    real_root = os.path.normpath(str(root))
    real_out = os.path.realpath(out)
    guard = PathGuard(root)  # the manifest readers' rule: absolute, `..` above the root, symlinks leading out
    outside, inside_out, gone = [], [], []
    for rel in rows[PATH]:
        if not isinstance(rel, str) or not rel:
            gone.append(repr(rel))
            continue
        src = os.path.normpath(os.path.join(real_root, rel))
        if guard.escapes(rel):
            outside.append(rel)
        elif _inside(os.path.realpath(src), real_out) or _inside(src, str(out)):
            inside_out.append(rel)
        elif not os.path.isfile(src):
            gone.append(rel)
    if outside:
        problems.append(f"paths outside the project root {root}: {', '.join(outside[:5])}")
    if gone:
        problems.append(
            f"image files missing (relative to {root}): {', '.join(gone[:5])}"
            + (f" and {len(gone) - 5} more" if len(gone) > 5 else "")
        )
    if problems:
        raise ManifestError("cannot export: " + "; ".join(problems))
    if inside_out:
        raise ParamsError(
            f"--out {out} holds source images ({', '.join(inside_out[:3])}); choose a folder outside them"
        )


class ExportParams(BaseModel):
    """How a split is laid out (the command's options; export has no params.yaml section)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layout: Layout = "imagefolder"
    link: LinkMode = "hardlink"
    splits: list[str] | None = None  # None: every split in the manifest
    datasheet: Path | None = None  # a DATASHEET.md copied into the export folder


def export_params(**values: object) -> ExportParams:
    """`ExportParams` from option values (None: the default); a bad value is one ParamsError
    naming the option and what is allowed."""
    given = {k: v for k, v in values.items() if v is not None}
    for key, allowed in (("layout", LAYOUTS), ("link", LINK_MODES)):
        if key in given and given[key] not in allowed:
            raise ParamsError(f"export {key} must be one of {', '.join(allowed)}, not {given[key]!r}")
    try:
        return ExportParams(**given)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ParamsError(f"export: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from None


def run(manifest: pd.DataFrame, params: ExportParams, ctx: StageContext) -> StageResult:
    """Export a split manifest (`path` relative to `ctx.root`) into `ctx.out`. The result's
    manifest is the input (export writes none), `files` the split folders written and
    `extra["export"]` the `ExportReport`."""
    if ctx.out is None:
        raise ParamsError("export needs an output folder (--out DIR)")
    rep = export(manifest, ctx.root, ctx.out, layout=params.layout, link=params.link, splits=params.splits,
                 datasheet=params.datasheet)
    return StageResult(manifest, rep.to_dict(), files={s: rep.out / s for s in rep.counts}, extra={"export": rep})


def export_manifest(
    manifest: Path,
    out: Path,
    *,
    root: Path | None = None,
    layout: Layout = "imagefolder",
    link: LinkMode = "hardlink",
    splits: Sequence[str] | None = None,
    datasheet: Path | None = None,
) -> ExportReport:
    """Read a split folder (or manifest file) with `stage.load_input` and export it (the CLI's
    entry). Files are checked for the rows exported only (a dropped row's file may be gone)."""
    inp = load_input(Path(manifest), needs=(SPLIT_KIND,), required=REQUIRED, check_files=False, root=root)
    params = export_params(layout=layout, link=link, splits=list(splits) if splits is not None else None,
                           datasheet=datasheet)
    result = run(inp.manifest, params, StageContext(root=inp.root, out=Path(out), input=inp.folder))
    return result.extra["export"]
