"""The manifest: one Parquet table per stage output, one row per image (ARCHITECTURE.md).

Column names live here as constants. `write_table` is atomic (temp file, fsync, `os.replace`);
`read_manifest` validates and reports every problem at once, naming the file and the rows.
`failures.parquet` holds one row per URL or file that did not become an image, with a reason
code from `REASONS`.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from datakit import faults
from datakit.errors import ManifestError, ParamsError
from datakit.fsutil import atomic_write

MANIFEST = "manifest.parquet"
FAILURES = "failures.parquet"

# Core columns (ARCHITECTURE.md): written by scrape or ingest, kept by every later stage.
IMAGE_ID = "image_id"
PATH = "path"
LABEL = "label"
CORE_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("path", pa.string()),
        ("label", pa.string()),
        ("query", pa.string()),
        ("item", pa.string()),
        ("attribute", pa.string()),
        ("provider", pa.string()),
        ("provider_id", pa.string()),
        ("source_url", pa.string()),
        ("page_url", pa.string()),
        ("license", pa.string()),
        ("license_url", pa.string()),
        ("creator", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("format", pa.string()),
        ("bytes", pa.int64()),
    ]
)
CORE_COLUMNS = CORE_SCHEMA.names

# Extra columns scrape adds (stages add columns; they never rewrite others' columns).
SCRAPE_SCHEMA = pa.schema(
    list(CORE_SCHEMA)
    + [
        ("rank", pa.int32()),
        ("title", pa.string()),
        ("orig_width", pa.int32()),
        ("orig_height", pa.int32()),
        ("downsized", pa.bool_()),
        ("has_gps", pa.bool_()),
        ("content_type", pa.string()),
        ("content_type_mismatch", pa.bool_()),
        ("fetched_at", pa.string()),  # ISO 8601 UTC download time ("2026-12-05T14:03:12Z"); null: a local file
    ]
)

FAILURE_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("query", pa.string()),
        ("label", pa.string()),
        ("item", pa.string()),
        ("attribute", pa.string()),
        ("provider", pa.string()),
        ("provider_id", pa.string()),
        ("page_url", pa.string()),
        ("rank", pa.int32()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("attempts", pa.int32()),
        ("http_status", pa.int32()),
        ("content_type", pa.string()),
        ("image_id", pa.string()),  # set for duplicate_bytes: the image it duplicates
    ]
)

# Fixed reason codes (img2dataset-style status; never silent). `http_<code>` is also allowed.
REASONS: dict[str, str] = {
    "connect_error": "the host refused or dropped the connection",
    "dns_error": "the host name did not resolve",
    "tls_error": "the TLS certificate was not trusted",
    "timeout": "the download did not finish within its deadline",
    "payload_error": "the connection broke mid-body",
    "incomplete": "the body was shorter than its Content-Length",
    "rate_limited": "the host kept answering 429 / asked to wait longer than allowed",
    "too_large": "the body (decoded) is larger than fetch.max_bytes",
    "bad_encoding": "the Content-Encoding could not be decoded",
    "too_many_redirects": "more redirects than fetch.max_redirects",
    "bad_scheme": "a URL or redirect to a scheme other than http/https",
    "bad_url": "the URL is malformed, relative, or carries credentials",
    "credential_in_url": "the search API put its own key into the result URL: not sent to the image host",
    "blocked_address": "the host resolves to a private, loopback or otherwise non-global address",
    "blocked_port": "the URL uses a port outside fetch.allowed_ports",
    "bad_response": "the server's response was malformed (headers too large, bad status line)",
    "robots_optout": "the host opted out of AI use (X-Robots-Tag: noai / noimageai / ...)",
    "empty": "the response had no body (0 bytes, 204, 304)",
    "not_an_image": "the bytes are not an image (HTML, text, random bytes)",
    "unsupported_format": "an image format outside the allow-list (SVG, TIFF, HEIC, EPS, ...)",
    "truncated": "the image is cut off: a full decode failed",
    "decode_error": "the image could not be decoded",
    "too_many_pixels": "width x height above image.max_decode_pixels (decompression bomb)",
    "decode_cost": "decoding would cost too much: too many JPEG scans, pixels x scans too high, or past the deadline",
    "too_small": "shorter side below image.min_side",
    "aspect": "aspect ratio above image.max_aspect",
    "transform_error": "the image decoded but could not be normalised or downsized",
    "duplicate_url": "the same URL was already fetched for an earlier result",
    "duplicate_bytes": "the same bytes are already stored (see image_id)",
    "missing_file": "the local file named by the source does not exist",
    "no_image": "the row names no image file (colors: path is null)",
    "analysis_error": "the image decoded but could not be analysed (colors: e.g. an OpenCV error)",
    "no_embedding": "the embeddings table has no vector for this image (embed this input first)",
    "reviewed_remove": "a person removed it in `datakit review` (review/decisions.csv)",
    "licence_not_allowed": "its licence family is not in licenses.allow (curate's licence gate; see datakit.licences)",
    "smote_too_few": "a class had fewer than two readable images to interpolate between",
    "undersampled": "balance marked the row keep=False to bring its class down to balance.target",
    "no_vector": "the embeddings table has no vector for this image (run datakit embed on this manifest)",
}


def is_known_reason(reason: str) -> bool:
    return reason in REASONS or (reason.startswith("http_") and reason[5:].isdigit())


def _table(df: pd.DataFrame, schema: pa.Schema | None) -> pa.Table:
    """Arrow table with known columns typed by `schema` and any extra columns inferred."""
    if schema is None:
        return pa.Table.from_pandas(df, preserve_index=False)
    fields = [f for f in schema if f.name in df.columns]
    extra = [c for c in df.columns if c not in schema.names]
    arrays = []
    names = []
    for f in fields:
        col = df[f.name].astype("object")
        col = col.where(col.notna(), None)  # NaN/NA -> null, whatever pandas inferred
        arrays.append(pa.array(col.tolist(), type=f.type))
        names.append(f.name)
    for c in extra:
        arrays.append(pa.array(df[c].tolist()))
        names.append(c)
    return pa.Table.from_arrays(arrays, names=names)


def write_table(df: pd.DataFrame, path: Path, schema: pa.Schema | None = None,
                metadata: dict[str, str] | None = None) -> None:
    """Write `df` to Parquet atomically (temp in the same folder, fsync, os.replace);
    `metadata` goes into the file's schema metadata (`datakit.*` keys)."""
    table = _table(df.reset_index(drop=True), schema)
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({META_PREFIX + k.encode(): v.encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(merged)
    def _write(tmp: str) -> None:
        pq.write_table(table, tmp, compression="zstd")
        faults.point("manifest_written")  # temp complete, not yet in place

    atomic_write(Path(path), _write)


def empty_frame(schema: pa.Schema) -> pd.DataFrame:
    return schema.empty_table().to_pandas()


def find_project_root(start: Path) -> Path:
    """The folder manifest `path`s are relative to, for a stage folder `start`: the nearest
    ancestor holding `.dvc`, `dvc.yaml` or `.git`; else the current directory when `start` lies
    inside it; else the parent of `start`, so that sibling stage folders (`x/scrape`, `x/dedup`)
    share one root. The same rule on every machine keeps paths portable across clones."""
    start = Path(start).absolute()
    for folder in (start, *start.parents):
        if any((folder / marker).exists() for marker in (".dvc", "dvc.yaml", ".git")):
            return folder
    cwd = Path.cwd().absolute()
    if cwd in start.parents:
        return cwd
    return start.parent


def _fmt_rows(rows: Iterable[int], limit: int = 10) -> str:
    rows = list(rows)
    shown = ", ".join(str(r) for r in rows[:limit])
    return shown + (f" (and {len(rows) - limit} more)" if len(rows) > limit else "")


def read_table(path: Path, what: str = "manifest") -> pd.DataFrame:
    """Read a Parquet table, turning every failure into a ManifestError naming the file."""
    return read_table_meta(path, what)[0]


def read_table_meta(path: Path, what: str = "manifest") -> tuple[pd.DataFrame, dict[str, str]]:
    """`read_table` plus the file's `datakit.*` schema metadata (prefix removed)."""
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"no {what} at {path}")
    try:
        table = pq.read_table(path)
        df = table.to_pandas()
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise ManifestError(
            f"corrupt {what} {path}: {exc}. It was not written by a finished datakit stage; "
            f"re-run the stage that writes it (its earlier version, if any, is in DVC/git)"
        ) from exc
    meta: dict[str, str] = {}
    for key, value in (table.schema.metadata or {}).items():
        if key.startswith(META_PREFIX):
            meta[key[len(META_PREFIX):].decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return df, meta


# Manifest paths are stored relative to the manifest's own folder (`datakit.paths: folder`), so a
# stage folder can be copied, moved or `dvc pull`ed anywhere and still name its images. In memory
# every stage works with paths relative to one project root (`read_stage_manifest` rebases on
# read, `write_stage_manifest` on write). Manifests written before this rule carry no key: their
# paths are relative to `find_project_root` of their folder, and they still read.
META_PREFIX = b"datakit."
PATHS_FOLDER = "folder"


def rebase_paths(paths: Iterable[object], src: Path, dst: Path) -> list[object]:
    """Paths relative to `src` made relative to `dst` (forward slashes). Non-strings, empty
    strings and strings with NUL pass unchanged (the row checks report them); an absolute path
    turns into a relative one that climbs, which the root check then refuses."""
    src_s = os.path.normpath(os.path.abspath(src))
    dst_s = os.path.normpath(os.path.abspath(dst))
    values = list(paths)
    if src_s == dst_s:
        return values
    cache: dict[str, str] = {}
    out: list[object] = []
    for p in values:
        if not isinstance(p, str) or not p or "\0" in p:
            out.append(p)
            continue
        folder, _, name = p.rpartition("/")
        new = cache.get(folder)
        if new is None:
            full = os.path.normpath(os.path.join(src_s, folder)) if folder else src_s
            new = cache[folder] = os.path.relpath(full, dst_s).replace(os.sep, "/")
        out.append(name if new == "." else f"{new}/{name}")
    return out


def write_stage_manifest(df: pd.DataFrame, path: Path, root: Path, schema: pa.Schema | None = None,
                         stage: str | None = None) -> None:
    """Write a stage's manifest: `path` values (relative to `root` in memory) are stored relative
    to the manifest's folder, and the stage name is recorded (`datakit.stage`)."""
    path = Path(path)
    out = df
    if PATH in df.columns:
        out = df.copy()
        out[PATH] = rebase_paths(df[PATH], root, path.parent)
    meta = {"paths": PATHS_FOLDER}
    if stage:
        meta["stage"] = stage
    write_table(out, path, schema, metadata=meta)


def read_stage_manifest(path: Path, root: Path | None = None, what: str = "manifest") -> tuple[pd.DataFrame, Path, dict[str, str]]:
    """Read a manifest without checking it: (frame with `path` relative to the project root, that
    root, the file's `datakit.*` metadata). The root is `root` or `find_project_root` of the
    manifest's folder."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    df, meta = read_table_meta(path, what)
    root = Path(root) if root is not None else find_project_root(path.parent)
    if meta.get("paths") == PATHS_FOLDER and PATH in df.columns:
        df[PATH] = rebase_paths(df[PATH], path.parent, root)
    return df, root, meta


class PathGuard:
    """Decides whether a manifest `path` stays inside the project root (SEC-10).

    A path escapes when it is absolute, when its `..` parts climb above the root, or when a
    symlink on the way (a folder or the file itself) leads outside the root's real location.
    A manifest comes from a teammate, a remote or a download: were such paths followed,
    `verify`, `dedup`, `split` or `audit` would read any file the user can read. Symlinks into
    the project's own DVC cache (`cache.dir` in .dvc/config, with `cache.type: symlink`) stay
    allowed, wherever that cache lives."""

    def __init__(self, root: Path) -> None:
        self.root = os.path.normpath(os.path.abspath(root))
        self.allowed = [os.path.realpath(self.root), *_dvc_cache_dirs(Path(self.root))]
        self._real_dirs: dict[str, str] = {}

    def escapes(self, rel: str) -> bool:
        if "\0" in rel or os.path.isabs(rel) or os.path.splitdrive(rel)[0]:
            return True
        full = os.path.join(self.root, rel)
        if not _inside(os.path.normpath(full), self.root):
            return True
        return not any(_inside(self._real(full), folder) for folder in self.allowed)

    def _real(self, full: str) -> str:
        """realpath(full), with the realpath of each folder computed once (store folders are shared)."""
        folder, name = os.path.split(full)
        real = self._real_dirs.get(folder)
        if real is None:
            real = self._real_dirs[folder] = os.path.realpath(folder)
        if name in ("", ".", "..") or os.path.islink(full):
            return os.path.realpath(full)
        return os.path.join(real, name)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _dvc_cache_dirs(root: Path) -> list[str]:
    """The real `cache.dir` of a DVC project (.dvc/config, .dvc/config.local), if set."""
    import configparser

    found: list[str] = []
    for name in ("config", "config.local"):
        cfg = configparser.ConfigParser(interpolation=None)
        try:
            cfg.read(root / ".dvc" / name, encoding="utf-8")
            folder = cfg.get("cache", "dir", fallback=None)
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
        if folder:
            found.append(os.path.realpath(os.path.join(root / ".dvc", os.path.expanduser(folder.strip().strip("'\"")))))
    return found


def escaping_rows(root: Path, paths: Iterable[object], index: Iterable[int]) -> list[int]:
    """The rows (labels from `index`) whose `path` leaves `root` (see PathGuard); rows with no
    path are left to the missing-file check."""
    guard = PathGuard(root)
    return [i for i, p in zip(index, paths, strict=True) if isinstance(p, str) and p and guard.escapes(p)]


def escaping_message(rows: Iterable[int], root: Path) -> str:
    return (f"paths outside the project root {root} in rows {_fmt_rows(rows)} (absolute, `..` above the root, "
            f"or a symlink leading out): datakit reads no file a manifest names outside its project")


@dataclass
class RowCheck:
    """What `check_rows` found: one line per problem, the rows with an empty `image_id`, and the
    rows whose `path` leaves the project root (never to be opened)."""

    problems: list[str] = field(default_factory=list)
    empty_ids: set[int] = field(default_factory=set)
    outside: set[int] = field(default_factory=set)


def check_rows(df: pd.DataFrame, root: Path, *, required: Iterable[str] = CORE_COLUMNS,
               check_files: bool = True) -> RowCheck:
    """The manifest checks every reader shares (`read_manifest`, `datakit verify`): required
    columns, empty or duplicate `image_id`s, paths outside the project root, and (with
    `check_files`) missing image files. Row numbers are the frame's index labels."""
    found = RowCheck()
    missing = [c for c in required if c not in df.columns]
    if missing:
        found.problems.append(f"missing columns: {', '.join(missing)}")
    if IMAGE_ID in df.columns:
        ids = df[IMAGE_ID]
        empty = ids.isna() | (ids.astype("string") == "")
        if empty.any():
            found.problems.append(f"empty image_id in rows {_fmt_rows(df.index[empty])}")
            found.empty_ids.update(df.index[empty])
        dup = ids.duplicated(keep=False) & ~empty
        if dup.any():
            found.problems.append(f"duplicate image_id in rows {_fmt_rows(df.index[dup])}")
    if PATH in df.columns:
        outside = escaping_rows(root, df[PATH], df.index)
        if outside:
            found.problems.append(escaping_message(outside, root))
            found.outside.update(outside)
        if check_files:
            # `origin == "smote"` rows are vectors without an image (balance on embeddings): no file to check.
            vector_only = df["origin"].eq("smote").to_numpy() if "origin" in df.columns else [False] * len(df)
            gone = [i for i, p, v in zip(df.index, df[PATH], vector_only, strict=True)
                    if not v and i not in found.outside and (not isinstance(p, str) or not (Path(root) / p).is_file())]
            if gone:
                found.problems.append(f"image files missing for rows {_fmt_rows(gone)} (paths are relative to {root})")
    return found


def read_manifest(
    path: Path,
    *,
    required: Iterable[str] = CORE_COLUMNS,
    check_files: bool = True,
    root: Path | None = None,
) -> pd.DataFrame:
    """Read and validate a manifest (`check_rows`). Collects every problem (missing columns,
    empty or duplicate `image_id`s, paths outside the project root, missing image files) and
    raises one ManifestError listing them all."""
    return read_manifest_root(path, required=required, check_files=check_files, root=root)[0]


def read_manifest_root(
    path: Path,
    *,
    required: Iterable[str] = CORE_COLUMNS,
    check_files: bool = True,
    root: Path | None = None,
) -> tuple[pd.DataFrame, Path]:
    """`read_manifest`, also returning the project root its `path` values are now relative to."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    df, root, _meta = read_stage_manifest(path, root)
    found = check_rows(df, root, required=required, check_files=check_files)
    if found.problems:
        raise ManifestError(f"invalid manifest {path}: " + "; ".join(found.problems))
    return df, root


def resolve(root: Path, rel: str) -> Path:
    """The file a manifest `path` names. Every image read goes through here (and images.py),
    so that a later packed store (`shard#member`) changes one function, not every stage.
    Manifests are checked by `check_rows` when read; as a last guard an absolute path or one
    whose `..` parts climb above `root` is refused here too (ManifestError)."""
    if not isinstance(rel, str) or "\0" in rel or os.path.isabs(rel) or os.path.splitdrive(rel)[0]:
        raise ManifestError(f"manifest path {rel!r} is not a relative path inside the project root {root}")
    base = os.path.normpath(os.path.abspath(root))
    if not _inside(os.path.normpath(os.path.join(base, rel)), base):
        raise ManifestError(f"manifest path {rel!r} leads outside the project root {root}")
    return Path(root) / rel


def relpath(root: Path, target: Path) -> str:
    return os.path.relpath(Path(target).absolute(), Path(root).absolute()).replace(os.sep, "/")


_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def check_labels(labels: list[str]) -> None:
    """Refuse label sets that would collide as folder names (CFG-07): case, Unicode
    normalisation, reserved names, trailing dots or spaces, > 255 bytes."""
    problems: list[str] = []
    by_key: dict[str, set[str]] = {}
    for label in dict.fromkeys(labels):
        if not label or not label.strip():
            problems.append("an empty label")
            continue
        if label != label.strip() or label.endswith("."):
            problems.append(f"{label!r} ends with a space or dot")
        if len(label.encode("utf-8")) > 255:
            problems.append(f"{label[:20]!r}... is longer than 255 bytes")
        if any(c in label for c in "/\\\x00") or any(ord(c) < 32 for c in label):
            problems.append(f"{label!r} contains a path separator or control character")
        if label.lower().split(".")[0] in _WINDOWS_RESERVED:
            problems.append(f"{label!r} is a reserved file name on Windows")
        key = unicodedata.normalize("NFC", label).casefold()
        by_key.setdefault(key, set()).add(label)
    for names in by_key.values():
        if len(names) > 1:
            problems.append(f"labels {sorted(names)} collide (case or Unicode form)")
    if problems:
        raise ParamsError("labels unusable as class names: " + "; ".join(problems))
