"""Where the CPU-heavy data stages run: this machine's cores, or a Dask cluster.

One abstraction for every stage that maps a pure function over many images (dedup's hashing and
its near-duplicate search, augment, embed): an `Executor` with an ordered `map` / `map_chunks`.

| `compute.scheduler` (or `DATAKIT_DASK_SCHEDULER`) | executor |
|---|---|
| null, `pool` | a process pool on this machine (forkserver), or in process for one chunk |
| `local:N` | a Dask `LocalCluster` of N single-threaded worker processes, started once per process |
| `tcp://host:8786` (any Dask address: `tls://`, `ucx://`, `ws://`) | a client of that Dask scheduler |
| `path/to/scheduler.json` | a client from a Dask scheduler file (`dask scheduler --scheduler-file`) |

`DATAKIT_DASK_SCHEDULER`, when set and not empty, wins over params.yaml: `dvc repro` can be
pointed at a cluster without touching a tracked parameter (the outputs do not depend on where
they were computed, so the address does not belong in `dvc.lock`).

Rules the stages keep so the result is the same wherever it runs (same manifest bytes for the
same inputs and seed): task functions are top-level (importable by name on a worker), take plain
picklable arguments, draw no randomness from global state, and the results are put back in input
order. Workers of a cluster must see the project at the same path (a shared filesystem) and have
the same datakit installed (`pip install 'datakit[dist]'`, plus the `train` extra for embed).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import math
import multiprocessing as mp
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from datakit.errors import DatakitError, ParamsError

KEY = "compute"
ENV_SCHEDULER = "DATAKIT_DASK_SCHEDULER"
_REMOTE_SCHEMES = ("tcp://", "tls://", "ucx://", "ws://", "wss://", "inproc://")

T = TypeVar("T")
R = TypeVar("R")


class ComputeParams(BaseModel):
    """params.yaml `compute:`: where the data stages run (the results never depend on it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheduler: str | None = Field(
        None, description="null/pool: local processes; local:N: a Dask LocalCluster of N workers; "
                          "tcp://host:8786 or a scheduler .json file: an existing Dask cluster")
    chunk_size: int = Field(0, ge=0, le=1_000_000, description="images per task (0: each stage's default)")
    workers: int = Field(0, ge=0, le=1024, description="local pool processes when a stage sets none (0: one per core)")
    block_rows: int = Field(262_144, ge=2, le=1 << 31,
                            description="near-duplicate search on a cluster: hashes per partition (memory per task ~ 2 blocks)")

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, v: str | None) -> str | None:
        return check_scheduler(v)

    @property
    def distributed(self) -> bool:
        """True when the stages run on Dask (a LocalCluster or a remote scheduler)."""
        return self.scheduler is not None


def check_scheduler(v: str | None) -> str | None:
    """Normalise a scheduler value: None for the local pool, else a Dask target (validated)."""
    if v is None:
        return None
    v = str(v).strip()
    if v in ("", "pool", "none", "null"):
        return None
    if v.startswith("local:") or v == "local":
        n = v.partition(":")[2] or str(_cores())
        if not n.isdigit() or not 1 <= int(n) <= 1024:
            raise ValueError(f"local:N needs a worker count 1..1024 (got {v!r})")
        return f"local:{int(n)}"
    if v.startswith(_REMOTE_SCHEMES):
        rest = v.split("://", 1)[1]
        if not rest:
            raise ValueError(f"a scheduler address needs a host (got {v!r})")
        return v
    if v.endswith(".json"):
        return v
    raise ValueError(f"expected null, pool, local:N, a Dask address (tcp://host:8786) or a scheduler .json file (got {v!r})")


def parse_compute(data: dict[str, Any] | None, prefix: str = KEY) -> ComputeParams:
    """Validate a `compute:` mapping; errors name `compute.<key>`."""
    from datakit.params import parse_section

    return parse_section(ComputeParams, data, prefix)


# ------------------------------------------------------------------ the settings in force

_configured: ComputeParams | None = None


def configure(params: ComputeParams | dict[str, Any] | None) -> ComputeParams:
    """Set this process's compute settings (the CLI does it from params.yaml); returns them."""
    global _configured
    _configured = params if isinstance(params, ComputeParams) or params is None else parse_compute(params)
    return current()


def configure_from_params(params: Any) -> ComputeParams:
    """`configure` from a loaded params.yaml (`datakit.params.Params`): its `compute:` section."""
    return configure(parse_compute(getattr(params, KEY, None)))


def current(params: ComputeParams | None = None) -> ComputeParams:
    """The settings in force: `params` (or what `configure` set, or the defaults), with
    `DATAKIT_DASK_SCHEDULER` overriding the scheduler when set and not empty."""
    base = params or _configured or ComputeParams()
    env = os.environ.get(ENV_SCHEDULER, "").strip()
    if env:
        try:
            sched = check_scheduler(env)
        except ValueError as exc:
            raise ParamsError(f"{ENV_SCHEDULER}: {exc}") from None
        if sched != base.scheduler:
            base = base.model_copy(update={"scheduler": sched})
    return base


@contextlib.contextmanager
def using(params: ComputeParams | dict[str, Any] | None) -> Iterator[ComputeParams]:
    """`configure` for a block (tests, benchmarks); the previous settings come back after."""
    global _configured
    before = _configured
    try:
        yield configure(params)
    finally:
        _configured = before


# ------------------------------------------------------------------------------ executors


def cores() -> int:
    """CPU cores this process may use (its affinity mask on Linux)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


_cores = cores


def pool_context(preload: Sequence[str] = ()) -> mp.context.BaseContext:
    """forkserver where there is one (no fork of a possibly threaded parent; workers fork from a
    server that has already imported `preload`, so they start in milliseconds), else spawn."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        if preload:
            ctx.set_forkserver_preload(list(preload))
        return ctx
    return mp.get_context("spawn")


def auto_chunk(n_items: int, workers: int, *, chunk_size: int = 0, min_chunk: int = 1, max_chunk: int = 64) -> int:
    """Items per task: `chunk_size` when given, else about four tasks per worker, clamped to
    [min_chunk, max_chunk] (small tasks balance load; large ones amortise the hand-off)."""
    if chunk_size > 0:
        return chunk_size
    return max(1, min_chunk, min(max_chunk, math.ceil(max(n_items, 1) / (4 * max(workers, 1)))))


def chunked(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


class Executor:
    """Runs picklable top-level functions over items; results always come back in input order.

    `kind` is "inline" (this process), "pool" (local processes) or "dask"; `workers` is how
    many tasks run at once (what chunk sizes are planned for)."""

    kind = "inline"

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, int(workers))

    # the one primitive: an ordered, bounded stream of results
    def imap(self, fn: Callable[..., R], items: Iterable[Any], *args: Any) -> Iterator[R]:
        """`fn(item, *args)` for every item, yielded in input order as they finish; at most a
        few tasks per worker are in flight, so a long stream never piles up in memory."""
        for item in items:
            yield fn(item, *args)

    def map(self, fn: Callable[..., R], items: Iterable[Any], *args: Any) -> list[R]:
        return list(self.imap(fn, items, *args))

    def map_chunks(self, fn: Callable[..., list[R]], items: Sequence[Any], chunk_size: int = 0, *args: Any,
                   min_chunk: int = 1, max_chunk: int = 64) -> list[R]:
        """`fn(chunk, *args)` returns one result per item of its chunk; the flat list, in order."""
        size = auto_chunk(len(items), self.workers, chunk_size=chunk_size, min_chunk=min_chunk, max_chunk=max_chunk)
        out: list[R] = []
        for part in self.imap(fn, chunked(items, size), *args):
            out.extend(part)
        return out

    def share(self, obj: T) -> T:
        """A handle for a large argument used by many tasks (Dask: scattered once to the cluster)."""
        return obj

    def close(self) -> None:
        """Release what this executor started for itself (shared clusters stay up)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PoolExecutor(Executor):
    """A process pool on this machine, started on first use (forkserver where available:
    workers fork from a server that has already imported `preload`, so they start in
    milliseconds and never inherit a threaded parent)."""

    kind = "pool"

    def __init__(self, workers: int, *, preload: Sequence[str] = ()) -> None:
        super().__init__(workers)
        self.preload = list(preload)
        self._pool: ProcessPoolExecutor | None = None

    def _context(self) -> mp.context.BaseContext:
        return pool_context(self.preload)

    def imap(self, fn: Callable[..., R], items: Iterable[Any], *args: Any) -> Iterator[R]:
        it = iter(items)
        first = list(itertools.islice(it, 2))
        if len(first) < 2 or self.workers == 1:  # one task: no processes to start
            for item in itertools.chain(first, it):
                yield fn(item, *args)
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=self._context())
        yield from _windowed(lambda item: self._pool.submit(fn, item, *args),  # type: ignore[union-attr]
                             itertools.chain(first, it), 4 * self.workers, lambda f: f.result())

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _windowed(submit: Callable[[Any], Any], items: Iterable[Any], window: int,
              result: Callable[[Any], R]) -> Iterator[R]:
    """Submit ahead up to `window` tasks, yield results in order; pending tasks are cancelled
    when the consumer stops early or a task fails."""
    pending: deque[Any] = deque()
    it = iter(items)
    try:
        for item in itertools.islice(it, window):
            pending.append(submit(item))
        while pending:
            fut = pending.popleft()
            value = result(fut)
            for item in itertools.islice(it, 1):
                pending.append(submit(item))
            yield value
    finally:
        for fut in pending:
            fut.cancel()


class DaskExecutor(Executor):
    """Tasks on a Dask cluster through a (cached) client; `workers` is the cluster's thread count."""

    kind = "dask"

    def __init__(self, scheduler: str) -> None:
        self.scheduler = scheduler
        self.client = _client(scheduler)
        try:
            threads = sum(int(w.get("nthreads", 1)) for w in self.client.scheduler_info()["workers"].values())
        except (KeyError, TypeError, AttributeError):  # pragma: no cover - an unusual scheduler
            threads = 0
        super().__init__(max(1, threads))

    def imap(self, fn: Callable[..., R], items: Iterable[Any], *args: Any) -> Iterator[R]:
        client = self.client
        yield from _windowed(lambda item: client.submit(fn, item, *args, pure=False), items,
                             max(8, 4 * self.workers), lambda f: f.result())

    def share(self, obj: T) -> T:
        return self.client.scatter(obj, broadcast=False, hash=False)  # type: ignore[no-any-return]


_clients: dict[str, Any] = {}
_clusters: dict[str, Any] = {}
_lock = threading.Lock()


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise DatakitError(
            f"compute.scheduler / {ENV_SCHEDULER} names a Dask scheduler, but dask.distributed is not installed: "
            "pip install 'datakit[dist]'"
        ) from None
    return distributed


def _client(scheduler: str) -> Any:
    """One client per scheduler for the life of the process (a local:N cluster is started once)."""
    with _lock:
        client = _clients.get(scheduler)
        if client is not None and client.status == "running":
            return client
        distributed = _import_distributed()
        try:
            if scheduler.startswith("local:"):
                cluster = _clusters.get(scheduler)
                if cluster is None or getattr(cluster, "status", None) is None or cluster.status.name != "running":
                    import dask

                    # distributed starts workers with MALLOC_TRIM_THRESHOLD_=65536, which makes glibc
                    # hand every large numpy temporary back to the kernel and fault it in again: the
                    # search and augment tasks ran ~2x slower than the same code in this process
                    with _quiet(), dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
                        cluster = distributed.LocalCluster(
                            n_workers=int(scheduler.split(":", 1)[1]), threads_per_worker=1, processes=True,
                            dashboard_address=":0", host="127.0.0.1", silence_logs=logging.WARNING)
                    _clusters[scheduler] = cluster
                client = distributed.Client(cluster, set_as_default=False)
            elif scheduler.endswith(".json"):
                client = distributed.Client(scheduler_file=scheduler, set_as_default=False)
            else:  # connect timeout: dask's distributed.comm.timeouts.connect (30 s by default)
                client = distributed.Client(scheduler, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise DatakitError(f"cannot reach the Dask scheduler {scheduler}: {type(exc).__name__}: {exc}") from None
        _clients[scheduler] = client
        return client


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """distributed logs every worker start and stop at INFO: only warnings while datakit starts
    or stops its own LocalCluster."""
    log = logging.getLogger("distributed")
    level = log.level
    if level == logging.NOTSET or level < logging.WARNING:
        log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def shutdown() -> None:
    """Close every cached client and every LocalCluster this process started."""
    with _lock, _quiet():
        for client in _clients.values():
            with contextlib.suppress(Exception):
                client.close()
        _clients.clear()
        for cluster in _clusters.values():
            with contextlib.suppress(Exception):
                cluster.close()
        _clusters.clear()


atexit.register(shutdown)


def executor(scheduler: str | None = None, *, workers: int = 0, params: ComputeParams | None = None,
             preload: Sequence[str] = ()) -> Executor:
    """The executor for a stage.

    Args:
        scheduler: an explicit target (as `compute.scheduler`); None: the settings in force
            (`current(params)`: params.yaml via `configure`, overridden by DATAKIT_DASK_SCHEDULER).
        workers: the stage's own process count (e.g. `dedup.workers`); 0: `compute.workers`,
            else one per core. 1 runs in this process. Ignored on Dask (the cluster decides).
        preload: modules the local pool's forkserver imports once for all its workers.
    """
    settings = current(params)
    target = check_scheduler(scheduler) if scheduler is not None else settings.scheduler
    if target is not None:
        return DaskExecutor(target)
    n = workers if workers > 0 else (settings.workers if settings.workers > 0 else _cores())
    if n <= 1:
        return Executor(1)
    return PoolExecutor(n, preload=preload)


__all__ = ["ENV_SCHEDULER", "ComputeParams", "DaskExecutor", "Executor", "PoolExecutor", "auto_chunk",
           "check_scheduler", "chunked", "configure", "configure_from_params", "current", "executor", "parse_compute", "shutdown", "using"]
