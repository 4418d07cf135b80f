"""Download, validate and store search results; the journal of settled results.

`download()` runs in the current event loop. `download_parallel()` shards the work over worker
processes (one interpreter, one GIL, one event loop per core), each running `download()` with
its share of the global and per-host caps, so the request rate to any one host never exceeds
`fetch.per_host` however many workers run. Every worker appends to its own journal file; the
parent reads them all.

Cheap images are validated inline on the event loop (a full decode of a typical web image costs
well under a millisecond, cheaper than a thread hand-off); costly ones go to a thread so a 40 MP
decode never starves other downloads (NET-15). Cost is judged from the headers (pixels x JPEG
scans, `images.decode_work`), not from the byte size: a 90 KB progressive JPEG can hold seconds
of decoding (issue 13 B1).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import math
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datakit import faults
from datakit.errors import DatakitError, StoreError
from datakit.fsutil import atomic_write_bytes, atomic_write_text, is_disk_full
from datakit.images import MIME, ImageLimits, ImageRejected, ImageStore, check_bytes, decode_work
from datakit.params import FetchParams
from datakit.scrape.fetch import Fetcher, FetchFailed, fetch_time

INLINE_MAX_BYTES = 256 * 1024  # validate on the loop only below this size
INLINE_MAX_WORK = 2_000_000  # ... and this many pixel passes (a few ms of decoding); else in a thread


@dataclass(frozen=True)
class Work:
    """One result to settle: a URL to fetch, or bytes / a local file to validate."""

    key: str
    url: str = ""
    data: bytes | None = None
    local_path: str | None = None


def _record(line: bytes) -> dict[str, Any] | None:
    """One journal line as a record, or None when it is not a whole, well-formed one."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("key"), str) or rec.get("status") not in ("ok", "fail"):
        return None
    if rec["status"] == "ok" and not (isinstance(rec.get("image_id"), str) and isinstance(rec.get("rel"), str)):
        return None
    return rec


class Journal:
    """Append-only record of settled results in `folder/journal*.jsonl`: one JSON line each,
    written by one writer per process and flushed to the OS per line, so SIGKILL loses nothing
    already written.

    Reading never throws good lines away (RES-02, issue 13 B5): a damaged line is skipped and
    reported in `damaged` (file, line number), and the lines after it still count. The only
    thing cut off is a torn last line (no newline: a kill mid-write) of this writer's own file,
    so that later appends stay parseable; other writers' files are only read.
    """

    def __init__(self, folder: Path, name: str = "journal.jsonl") -> None:
        self.folder = Path(folder)
        self.path = self.folder / name
        self.entries: dict[str, dict[str, Any]] = {}
        self.damaged: dict[Path, list[int]] = {}  # file -> 1-based numbers of lines skipped
        self.reload()
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def reload(self) -> None:
        self.damaged = {}
        for path in sorted(self.folder.glob("journal*.jsonl")):
            raw = path.read_bytes()
            lines = raw.split(b"\n")
            tail = lines.pop()  # b"" when the file ends with a newline
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                rec = _record(line)
                if rec is None:
                    self.damaged.setdefault(path, []).append(number)
                    continue
                self.entries[rec["key"]] = rec
            if not tail.strip():
                continue
            rec = _record(tail)
            if rec is not None:
                self.entries[rec["key"]] = rec  # whole, only its newline is missing
            if path == self.path:
                with open(path, "r+b") as fh:
                    if rec is not None:
                        fh.seek(0, os.SEEK_END)
                        fh.write(b"\n")
                    else:  # torn by a kill mid-write: that result was never settled
                        fh.truncate(len(raw) - len(tail))

    def set_damaged_aside(self) -> list[str]:
        """Move the damaged lines found by the last `reload` out of the journals, into
        `<journal>.damaged` next to them, so they are reported once rather than on every run.
        Only while no other writer runs (the caller holds the folder lock, before any worker
        starts). Returns one message per damaged file, naming it and its lines."""
        messages = []
        for path, numbers in self.damaged.items():
            lines = path.read_bytes().split(b"\n")
            bad = set(numbers)
            kept = [line for n, line in enumerate(lines, 1) if n not in bad]
            aside = path.with_name(path.name + ".damaged")
            with open(aside, "ab") as fh:
                for n in numbers:
                    fh.write(f"# {path.name} line {n}\n".encode() + lines[n - 1] + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            atomic_write_bytes(path, b"\n".join(kept))
            shown = ", ".join(str(n) for n in numbers[:10]) + (f" (and {len(numbers) - 10} more)" if len(numbers) > 10 else "")
            messages.append(
                f"{path}: damaged journal line{'s' if len(numbers) > 1 else ''} {shown} skipped (moved to {aside.name}); "
                f"the lines after {'them' if len(numbers) > 1 else 'it'} still count, and no stored image is deleted for it"
            )
        self.damaged = {}
        return messages

    def add(self, rec: dict[str, Any]) -> None:
        self.entries[rec["key"]] = rec
        self._fh.write(json.dumps(rec, separators=(",", ":"), ensure_ascii=False) + "\n")
        self._fh.flush()

    def drop(self, keys: set[str]) -> None:
        """Forget entries (--retry-failed): all journals are folded into one, atomically."""
        for k in keys:
            self.entries.pop(k, None)
        self._fh.close()
        text = "".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n" for r in self.entries.values())
        atomic_write_text(self.path, text)
        for other in self.folder.glob("journal*.jsonl"):
            if other != self.path:
                other.unlink()
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        if self._fh.closed:
            return
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()


def process_bytes(store: ImageStore, limits: ImageLimits, data: bytes | None, local_path: str | None) -> dict[str, Any]:
    """Validate completely and store atomically; a record for the journal."""
    if data is None and local_path is not None:
        try:
            data = Path(local_path).read_bytes()
        except FileNotFoundError:
            return {"status": "fail", "reason": "missing_file", "detail": local_path}
    assert data is not None
    try:
        checked = check_bytes(data, limits)
    except ImageRejected as exc:
        return {"status": "fail", "reason": exc.reason, "detail": exc.detail[:300]}
    image_id, rel = store.put(checked.data, checked.ext)
    faults.point("after_store")
    return {
        "status": "ok", "image_id": image_id, "rel": rel, "format": checked.format,
        "width": checked.width, "height": checked.height, "orig_width": checked.orig_width,
        "orig_height": checked.orig_height, "bytes": len(checked.data), "downsized": checked.downsized,
        "has_gps": checked.has_gps,
    }


async def download(work: list[Work], *, fetch: FetchParams, user_agent: str, limits: ImageLimits,
                   store: ImageStore, journal: Journal, on_settled: Callable[[int], None] = lambda n: None,
                   threads: int = 2) -> dict[str, Any]:
    """Settle every item of `work` in this event loop; returns counters."""
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="datakit-decode")
    window = asyncio.Semaphore(max(2 * fetch.concurrency, 8))  # items in memory at once (CON-06)
    fatal: list[BaseException] = []

    async def validate(data: bytes | None, local_path: str | None) -> dict[str, Any]:
        if data is not None and len(data) <= INLINE_MAX_BYTES and decode_work(data) <= INLINE_MAX_WORK:
            return process_bytes(store, limits, data, None)
        return await loop.run_in_executor(pool, process_bytes, store, limits, data, local_path)

    async def one(w: Work, fetcher: Fetcher | None) -> None:
        rec: dict[str, Any] = {"key": w.key}
        try:
            if w.data is not None or w.local_path is not None:
                rec.update(await validate(w.data, w.local_path))
                rec["attempts"] = 1 if w.data is not None else 0
            else:
                assert fetcher is not None
                try:
                    got = await fetcher.fetch(w.url)
                except FetchFailed as exc:
                    rec.update({"status": "fail", "reason": exc.reason, "detail": exc.detail[:300],
                                "attempts": exc.attempts, "http_status": exc.status, "content_type": exc.content_type})
                else:
                    fetched_at = fetch_time()  # when the body arrived; local files were never fetched
                    res = await validate(got.data, None)
                    rec.update(res)
                    rec.update({"attempts": got.attempts, "http_status": got.status, "content_type": got.content_type})
                    if res["status"] == "ok":
                        rec["fetched_at"] = fetched_at
                    if res["status"] == "ok" and got.content_type:
                        ct = got.content_type.split(";")[0].strip().lower()
                        rec["content_type_mismatch"] = ct != MIME.get(res["format"], "")
        except OSError as exc:
            if is_disk_full(exc) or isinstance(exc, PermissionError):
                fatal.append(exc)  # a run-level error, not a per-image skip (RES-06)
                return
            raise
        except StoreError as exc:
            fatal.append(exc)
            return
        journal.add(rec)
        faults.point("after_journal")
        on_settled(1)

    async def guarded(w: Work, fetcher: Fetcher | None) -> None:
        try:
            await one(w, fetcher)
        finally:
            window.release()

    t0 = time.monotonic()
    stats: dict[str, Any] = {}
    fetcher: Fetcher | None = None
    try:
        if any(not (w.data is not None or w.local_path is not None) for w in work):
            fetch_time()  # a malformed SOURCE_DATE_EPOCH stops the run before any request
            fetcher = Fetcher(fetch, user_agent=user_agent)
            await fetcher.__aenter__()
        tasks: set[asyncio.Task[None]] = set()
        for w in work:
            if fatal:
                break
            await window.acquire()
            task = asyncio.create_task(guarded(w, fetcher))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*list(tasks))
    finally:
        if fetcher is not None:
            await fetcher.__aexit__(None, None, None)
            stats = {"requests": fetcher.stats.requests, "retries": fetcher.stats.retries,
                     "bytes_downloaded": fetcher.stats.bytes, "peak_in_flight": fetcher.stats.peak_in_flight}
        pool.shutdown(wait=True)
    if fatal:
        exc = fatal[0]
        if isinstance(exc, DatakitError):
            raise exc
        raise StoreError(f"cannot write the image store in {store.folder}: {getattr(exc, 'strerror', None) or exc}") from exc
    stats["download_seconds"] = round(time.monotonic() - t0, 3)
    return stats


class _HeldFd:
    """A descriptor a spawned process gets a copy of (pickled with `multiprocessing`'s own fd
    passing): the folder lock's, so that the lock covers the workers (issue 13 B4)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Any, ...]:
        from multiprocessing import reduction

        return _held_fd, (reduction.DupFd(self.fd),)


def _held_fd(dup: Any) -> int:
    return dup.detach()


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker process end when the process that started it ends, however it ends
    (SIGKILL by the OOM killer included; issue 13 B4). Linux: the kernel sends SIGKILL on
    the parent's death (prctl PR_SET_PDEATHSIG). Everywhere: a thread waits on the pipe whose
    other end only the parent holds, and ends the process when it closes."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the pipe watch below still applies
    if os.getppid() != parent_pid:  # the parent was gone before the line above took effect
        os._exit(1)
    parent = mp.parent_process()
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is None:
        return

    def watch() -> None:
        from multiprocessing.connection import wait

        wait([sentinel])
        os._exit(1)  # the parent's end closed: it is gone; settled results are journaled already

    threading.Thread(target=watch, name="datakit-parent-watch", daemon=True).start()


def _worker_boot(parent_pid: int, lock: int | None, target: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Every download worker starts here. `lock` is its copy of the folder lock's descriptor,
    never closed: the lock is free again only once the parent and every worker are gone."""
    _die_with_parent(parent_pid)
    return target(*args)


def start_worker(ctx: Any, target: Callable[..., Any], args: tuple[Any, ...], *, name: str,
                 lock_fd: int | None = None) -> Any:
    """Start `target(*args)` in a process of the multiprocessing context `ctx` that dies with
    this process and, given the folder lock's descriptor `lock_fd`, holds that lock too."""
    held = _HeldFd(lock_fd) if lock_fd is not None else None
    proc = ctx.Process(target=_worker_boot, name=name, args=(os.getpid(), held, target, args))
    proc.start()
    return proc


def _share(total: int, n: int) -> int:
    return max(1, math.floor(total / n))


def _worker_main(index: int, work: list[Work], fetch: FetchParams, user_agent: str, limits: ImageLimits,
                 out: str, state: str, durable: bool, messages: Any) -> None:
    """Entry point of one download worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    store = ImageStore(Path(out), durable=durable)
    journal = Journal(Path(state), f"journal-w{index}.jsonl")
    pending = [0]
    last = [time.monotonic()]

    def settled(n: int) -> None:
        pending[0] += n
        now = time.monotonic()
        if now - last[0] > 0.2:
            messages.put(("settled", pending[0]))
            pending[0] = 0
            last[0] = now

    async def main() -> dict[str, Any]:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await download(work, fetch=fetch, user_agent=user_agent, limits=limits, store=store,
                              journal=journal, on_settled=settled, threads=1)

    try:
        stats = asyncio.run(main())
    except asyncio.CancelledError:
        messages.put(("settled", pending[0]))
        messages.put(("stopped", index))
        return
    except DatakitError as exc:
        messages.put(("fatal", str(exc)))
        raise SystemExit(1) from None
    except OSError as exc:
        if is_disk_full(exc):
            messages.put(("fatal", f"cannot write the image store in {out}: {exc.strerror}"))
            raise SystemExit(1) from None
        raise
    finally:
        journal.close()
    messages.put(("settled", pending[0]))
    messages.put(("done", stats))


async def download_parallel(work: list[Work], workers: int, *, fetch: FetchParams, user_agent: str,
                            limits: ImageLimits, store: ImageStore, state: Path,
                            on_settled: Callable[[int], None] = lambda n: None,
                            lock_fd: int | None = None) -> dict[str, Any]:
    """`download()` over `workers` shards; caps are divided so their sum stays within
    `fetch.concurrency` and `fetch.per_host`. The shards run as local processes, or as tasks on
    the Dask cluster when one is configured (`compute.scheduler` / DATAKIT_DASK_SCHEDULER).
    Local worker processes die with this one and hold the folder lock `lock_fd` with it."""
    share = fetch.model_copy(update={
        "concurrency": _share(fetch.concurrency, workers),
        "per_host": _share(fetch.per_host, workers),
    })
    from datakit import parallel

    if parallel.current().scheduler is not None:
        return await _download_dask(work, workers, share=share, user_agent=user_agent, limits=limits,
                                    store=store, state=state, on_settled=on_settled)
    ctx = mp.get_context("spawn")  # never fork a process that runs an event loop
    messages = ctx.Queue()
    shards = [work[i::workers] for i in range(workers)]
    t0 = time.monotonic()
    procs = [
        start_worker(ctx, _worker_main, (i, shard, share, user_agent, limits, str(store.folder), str(state),
                                         store.durable, messages), name=f"datakit-download-{i}", lock_fd=lock_fd)
        for i, shard in enumerate(shards) if shard
    ]
    totals: dict[str, Any] = {"requests": 0, "retries": 0, "bytes_downloaded": 0, "peak_in_flight": 0}
    fatal: list[str] = []

    def drain() -> None:
        while True:
            try:
                kind, value = messages.get_nowait()
            except queue.Empty:
                return
            if kind == "settled":
                on_settled(value)
            elif kind == "done":
                for k in ("requests", "retries", "bytes_downloaded"):
                    totals[k] += value.get(k, 0)
                totals["peak_in_flight"] += value.get("peak_in_flight", 0)
            elif kind == "fatal":
                fatal.append(value)

    def stop_all() -> None:
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: the worker flushes its journal and exits
        for p in procs:
            p.join(30)  # one that hangs still dies with this process (_die_with_parent)
        drain()

    dead: list[Any] = []
    try:
        while any(p.is_alive() for p in procs):
            drain()
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                break  # a worker died (OOM killer, crash) or met a run-level error: stop the rest now
            await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        stop_all()
        raise
    stop_all()
    if fatal:
        raise StoreError(fatal[0])
    dead = dead or [p for p in procs if p.exitcode not in (0, None)]  # the first to die, not those stopped
    if dead:
        code = dead[0].exitcode or 0
        how = f"killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() else f"exit {code}"
        raise DatakitError(
            f"download worker {dead[0].name} died ({how}); the other workers were stopped and every settled "
            f"result is kept: re-run the same command to resume"
        )
    totals["download_seconds"] = round(time.monotonic() - t0, 3)
    totals["workers"] = len(procs)
    return totals


# ------------------------------------------------------------------ shards on a Dask cluster


def _shard_task(index: int, work: list[Work], fetch: FetchParams, user_agent: str, limits: ImageLimits,
                out: str, state: str, durable: bool, stop: str) -> dict[str, Any]:
    """One download shard as a Dask task: the same `download()` and the same per-shard journal
    as a local worker process. It stops early (settled results kept) once the file `stop`
    exists, which the parent creates when it is interrupted. Run-level errors come back as
    {"fatal": message} rather than as exceptions that would have to unpickle in the parent."""
    store = ImageStore(Path(out), durable=durable)
    journal = Journal(Path(state), f"journal-w{index}.jsonl")
    stop_path = Path(stop)

    async def main() -> dict[str, Any]:
        job = asyncio.ensure_future(download(work, fetch=fetch, user_agent=user_agent, limits=limits,
                                             store=store, journal=journal, threads=1))
        while not job.done():
            await asyncio.wait({job}, timeout=0.25)
            if not job.done() and stop_path.exists():
                # cancel the in-flight downloads together with `download()` itself: none of them
                # may go on to fail against the closing fetcher and journal that as a failure
                for task in asyncio.all_tasks():
                    if task is not asyncio.current_task():
                        task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job
                return {"stopped": True}
        return job.result()

    try:
        return asyncio.run(main())
    except DatakitError as exc:
        return {"fatal": str(exc)}
    except OSError as exc:
        if is_disk_full(exc):
            return {"fatal": f"cannot write the image store in {out}: {exc.strerror}"}
        raise
    finally:
        journal.close()


class _JournalProgress:
    """Counts the lines appended to the shard journals since it was made (the parent's view of
    how many results the remote shards have settled)."""

    def __init__(self, paths: list[Path]) -> None:
        self.offsets = {p: (p.stat().st_size if p.exists() else 0) for p in paths}

    def poll(self) -> int:
        n = 0
        for path, offset in self.offsets.items():
            try:
                with open(path, "rb") as fh:
                    size = fh.seek(0, os.SEEK_END)
                    if size < offset:  # a torn tail was cut off when the shard opened its journal
                        offset = size
                    fh.seek(offset)
                    chunk = fh.read()
            except FileNotFoundError:
                continue
            end = chunk.rfind(b"\n") + 1  # whole lines only
            n += chunk.count(b"\n", 0, end)
            self.offsets[path] = offset + end
        return n


async def _download_dask(work: list[Work], workers: int, *, share: FetchParams, user_agent: str,
                         limits: ImageLimits, store: ImageStore, state: Path,
                         on_settled: Callable[[int], None]) -> dict[str, Any]:
    """`download_parallel` with each shard a task on the configured Dask cluster (workers must
    see `store` and `state` at the same paths: a shared filesystem)."""
    from datakit import parallel

    ex = parallel.executor()
    client = ex.client  # type: ignore[attr-defined]
    out, folder = str(Path(store.folder).resolve()), Path(state).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    stop = folder / f"stop-{token}"
    shards = [(i, work[i::workers]) for i in range(workers)]
    shards = [(i, shard) for i, shard in shards if shard]
    progress = _JournalProgress([folder / f"journal-w{i}.jsonl" for i, _ in shards])
    t0 = time.monotonic()
    futures = [client.submit(_shard_task, i, shard, share, user_agent, limits, out, str(folder), store.durable,
                             str(stop), key=f"datakit-download-{token}-{i}", pure=False, retries=0)
               for i, shard in shards]
    try:
        try:
            while not all(f.done() for f in futures):
                if n := progress.poll():
                    on_settled(n)
                await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            stop.touch()  # the shards cancel their downloads; what they settled stays in the journals
            deadline = time.monotonic() + 30
            while not all(f.done() for f in futures) and time.monotonic() < deadline:
                time.sleep(0.1)
            client.cancel(futures)
            if n := progress.poll():
                on_settled(n)
            raise
    finally:
        stop.unlink(missing_ok=True)
    if n := progress.poll():
        on_settled(n)
    totals: dict[str, Any] = {"requests": 0, "retries": 0, "bytes_downloaded": 0, "peak_in_flight": 0}
    fatal: list[str] = []
    failed: list[BaseException] = []
    for f in futures:
        try:
            value = f.result()
        except Exception as exc:  # noqa: BLE001 - a worker died or the task raised: reported below
            failed.append(exc)
            continue
        if "fatal" in value:
            fatal.append(value["fatal"])
            continue
        for k in ("requests", "retries", "bytes_downloaded", "peak_in_flight"):
            totals[k] += value.get(k, 0)
    if fatal:
        raise StoreError(fatal[0])
    if failed:
        exc = failed[0]
        raise DatakitError(
            f"{len(failed)} download shard(s) failed on the Dask cluster ({type(exc).__name__}: {exc}); "
            f"settled results are kept, re-run the same command to resume"
        )
    totals["download_seconds"] = round(time.monotonic() - t0, 3)
    totals["workers"] = len(shards)
    totals["download_executor"] = "dask"
    return totals
