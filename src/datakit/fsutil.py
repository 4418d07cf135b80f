"""Atomic file writes, the output-folder lock, and the time written files may carry.

Every file datakit writes goes to a temp file in the same folder and is moved into place with
`os.replace`, so a reader sees the old version or the new one, never half of either
(reliability.md RES-02/03, RES-11: files are replaced, never truncated in place, which also keeps
DVC's hardlinked cache safe).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from datakit.errors import DatakitError, LockedError, StoreError

TMP_SUFFIX = ".tmp"


def source_date_epoch(hint: str = "") -> datetime | None:
    """SOURCE_DATE_EPOCH (the reproducible-builds convention: the time an output carries instead
    of the clock's) as a UTC datetime; None when unset or empty. A malformed value is a
    DatakitError naming the variable (`hint`: what unsetting it does)."""
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return None
    try:
        if not raw.isdigit():
            raise ValueError(raw)
        return datetime.fromtimestamp(int(raw), UTC)
    except (ValueError, OverflowError, OSError):
        raise DatakitError(f"SOURCE_DATE_EPOCH={raw!r}: expected whole seconds since 1970-01-01 UTC"
                           + (f" ({hint})" if hint else "")) from None

# mkstemp creates files with mode 0600; datasets are shared, so finished files get the mode a
# plain open() would have given them. Read once, at import (os.umask is process-wide).
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


def make_shareable(path: str) -> None:
    """Give a temp file the permissions of a normally created file."""
    os.chmod(path, FILE_MODE)


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _replace(src: str, dst: Path) -> None:
    # Windows refuses to replace a file another program holds open (CON-08): retry briefly,
    # then give up loudly rather than fall back to a non-atomic copy.
    for attempt in range(5):
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if attempt == 4:
                raise
            time.sleep(0.05 * (attempt + 1))


def check_no_symlink(path: Path, root: Path) -> None:
    """Refuse to write through a symlink planted anywhere between `root` and `path` (SEC-11)."""
    root = root.absolute()
    cur = path.absolute().parent
    while True:
        if cur.is_symlink():
            raise StoreError(f"refusing to write through the symlink {cur} (datakit did not create it)")
        if cur == root or cur.parent == cur:
            break
        cur = cur.parent


def atomic_write(path: Path, write: Callable[[str], None], *, durable: bool = True) -> None:
    """Write `path` atomically: `write(tmp_name)` fills a temp file in the same folder,
    which is fsynced (if `durable`) and renamed over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        make_shareable(tmp)
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        _replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Atomically replace `path` with `data`."""

    def _write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    atomic_write(path, _write, durable=durable)


def atomic_write_text(path: Path, text: str, *, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def remove_temp_files(root: Path) -> list[Path]:
    """Startup recovery: delete leftover `*.tmp` files under `root` (a killed writer's)."""
    removed = []
    if not root.exists():
        return removed
    for p in root.rglob("*" + TMP_SUFFIX):
        if p.is_file():
            p.unlink()
            removed.append(p)
    return removed


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _lock_holder(fd: int) -> str:
    """`<command> run (pid N on host H)` from a held lock file; older lock files held only
    `pid N on host H` (shown as a datakit run)."""
    try:
        text = os.pread(fd, 1000, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    try:
        info = json.loads(text)
        return f"{info['command']} run (pid {info['pid']} on host {info['host']})"
    except (ValueError, TypeError, KeyError):
        return f"datakit run ({text or 'holder unknown'})"


@contextmanager
def folder_lock(folder: Path, what: str = "datakit") -> Iterator[int]:
    """Hold an OS lock on `folder/.datakit/lock` for the duration (CON-01/02/07).

    The kernel releases the lock when the holder dies, so a killed run never needs manual
    cleanup. A second run fails fast, naming the holder's pid and host. The lock belongs to
    the open descriptor (yielded): processes started with a copy of it (scrape's download
    workers) hold it until the last of them exits, whichever dies first.
    """
    import fcntl

    state = folder / ".datakit"
    state.mkdir(parents=True, exist_ok=True)
    lock_path = state / "lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(
                f"{folder} is in use by another {_lock_holder(fd)}; wait for it to finish or choose another --out"
            ) from None
        except OSError as exc:
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise StoreError(
                    f"the filesystem of {folder} cannot lock files ({exc.strerror}); "
                    f"use a local disk for --out"
                ) from exc
            raise
        os.ftruncate(fd, 0)
        # The holder's own command, for the message a second run prints (not the second run's).
        os.pwrite(fd, json.dumps({"command": what, "pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        yield fd  # a child process that inherits this descriptor holds the lock too (scrape's workers)
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (the store's content ids)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
