"""`datakit scrape`: queries -> search hits -> downloads -> validated, content-addressed images.

The stage entry is `run(params, ctx, *, provider, ...) -> StageResult`: acquisition takes no
input manifest, so the contract's `run(manifest, params, ctx)` loses its first argument here;
`ctx.out` is the output folder, `ctx.root` the project root the in-memory `path`s are relative
to, `ctx.progress` the progress protocol. The manifest (paths stored relative to the folder, so a
scrape folder can be copied or moved and still names its own images) and the failures table are
written by the one writer, `datakit.stage.write_result`.

Layout of the output folder::

    manifest.parquet      one row per stored image (core columns, ARCHITECTURE.md)
    failures.parquet      one row per result that did not become an image, with a reason
    images/ab/<id>.<ext>  content-addressed images (extension from the detected format)
    search/<provider>/<query>/  raw search responses and the parsed hits (`hits.json`)
    .datakit/             run state: lock, run.json (inputs), journal.jsonl (settled results)

Accounting (reliability.md N1): every search result settles exactly once, as a stored image
or a failure row, so `stored + failures == results`. The journal is appended as results
settle; a killed run is resumed by running the same command again: settled results are never
fetched again (RES-01/08), and temp files are removed (RES-02). Damaged bookkeeping never costs
stored data (issue 13 B5): a damaged journal line is skipped and reported, results it named are
taken back from the manifest and failures tables, and a stored object whose bytes hash to its
name is always kept; only a file that does not hash to its name is removed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from datakit.errors import DatakitError, ParamsError, ProviderError, StoreError
from datakit.fsutil import atomic_write_text, folder_lock, is_disk_full, remove_temp_files, sha256_file
from datakit.images import ImageLimits, ImageStore
from datakit.manifest import (
    FAILURE_SCHEMA,
    FAILURES,
    MANIFEST,
    SCRAPE_SCHEMA,
    check_labels,
    find_project_root,
    read_stage_manifest,
    read_table,
    relpath,
)
from datakit.params import ScrapeParams
from datakit.scrape.download import Journal, Work, download, download_parallel
from datakit.scrape.fetch import fetch_time
from datakit.scrape.providers.base import Hit, Provider, ProviderSettings, Query, TransientProviderError
from datakit.scrape.queries import build_queries, slug
from datakit.scrape.searchhttp import SearchClient
from datakit.stage import NoProgress, Progress, StageContext, StageResult, write_result

STATE = ".datakit"
RUN_FILE = "run.json"
RESULTS_FILE = "results.json"


class Interrupted(DatakitError):
    """SIGINT/SIGTERM: settled results were saved; run the same command again to resume."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}; settled results are saved, re-run the same command to resume")
        self.exit_code = 128 + signum


STAGE = "scrape"


@dataclass
class _Item:
    order: int
    key: str
    query: Query
    hit: Hit


def hit_key(provider: str, query: Query, hit: Hit) -> str:
    """Stable identity of one search result (same search -> same key on every re-run)."""
    ident = hit.url or hit.provider_id or hit.local_path or ""
    raw = f"{provider}\x00{query.text}\x00{hit.rank}\x00{ident}"
    return hashlib.sha1(raw.encode("utf-8"), usedforsecurity=False).hexdigest()


def _hit_to_json(hit: Hit) -> dict[str, Any]:
    d = asdict(hit)
    d.pop("data", None)
    d.pop("query", None)
    return d


def _hit_from_json(d: dict[str, Any], query: Query) -> Hit:
    fields = {k: v for k, v in d.items() if k in Hit.__dataclass_fields__ and k not in ("data", "query")}
    hit = Hit(**fields)
    hit.query = query
    return hit


def _source(hit: Hit) -> str | None:
    """The `source_url` / `url` a result gets in the manifest or the failures table."""
    return hit.url or (Path(hit.local_path).absolute().as_uri() if hit.local_path else None) or hit.page_url


def _plain(value: Any) -> Any:
    """A table cell as a plain JSON value (numpy scalars -> Python, NA -> None)."""
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value.item() if hasattr(value, "item") else value



# manifest columns that a stored result's journal record carries
_OK_FIELDS = ("format", "width", "height", "orig_width", "orig_height", "bytes", "downsized", "has_gps",
              "content_type", "content_type_mismatch", "fetched_at")

TRANSIENT_REASONS = frozenset({"timeout", "connect_error", "dns_error", "payload_error", "incomplete", "rate_limited",
                               "http_429", "http_500", "http_502", "http_503", "http_504", "http_408"})


def _signature(provider: str, queries: list[Query], p: ScrapeParams, settings: ProviderSettings) -> dict[str, Any]:
    """The inputs a resumed run must share with the run that started the folder (RES-07)."""
    return {
        "provider": provider,
        "queries": [[q.text, q.label] for q in queries],
        "per_query": p.per_query,
        "seed": p.seed,
        "endpoint": settings.endpoint,
        "source": str(Path(settings.source).absolute()) if settings.source else None,
        "options": settings.options,
    }


class Scraper:
    """One scrape run over one output folder. `run()` does everything; the CLI only prints.

    `root` is the project root the returned manifest's `path`s are relative to (the stage
    context's; by default the core rule, `find_project_root` of `out`). The files store them
    relative to `out` whatever the root."""

    def __init__(self, params: ScrapeParams, *, provider: str, out: Path, source: str | None = None,
                 endpoint: str | None = None, extend: bool = False, retry_failed: bool = False,
                 progress: Progress | None = None, root: Path | None = None) -> None:
        self.p = params
        self.provider_name = provider
        self.out = Path(out)
        self.root = Path(root) if root is not None else find_project_root(self.out)
        self.extend = extend
        self.retry_failed = retry_failed
        self.ui: Progress = progress or NoProgress()
        from datakit.params import unknown_key_message
        from datakit.scrape.providers import REGISTRY, get_provider  # the registry imports every provider

        cls = get_provider(provider)
        for name in params.providers:  # settings under a misspelt name would be left unused without a word
            if name not in REGISTRY:
                raise ParamsError(f"scrape.providers: {unknown_key_message(name, sorted(REGISTRY), 'provider')}")
        pp = params.providers.get(provider)
        self.settings = ProviderSettings(
            endpoint=endpoint or (pp.endpoint if pp else None),
            source=source,
            options=dict(pp.options) if pp else {},
            user_agent=params.user_agent,
            seed=params.seed,
        )
        self.provider: Provider = cls(self.settings)  # validates keys (CFG-01) before any request
        self.queries = self.provider.plan(build_queries(params))
        if not self.queries:
            raise ParamsError(f"provider {provider!r} produced no queries")
        check_labels([q.label for q in self.queries])
        self.limits: ImageLimits = params.image.limits()

    # -- search -------------------------------------------------------------------------
    def _search_dir(self, query: Query) -> Path:
        digest = hashlib.sha1(query.text.encode("utf-8"), usedforsecurity=False).hexdigest()[:8]
        return self.out / "search" / self.provider_name / f"{slug(query.text, 60)}-{digest}"

    async def _search_all(self) -> list[list[Hit]]:
        n = 10**9 if getattr(self.provider, "takes_all", False) else self.p.per_query
        results: list[list[Hit]] = []
        self.ui.start("search", len(self.queries))
        client_ctx = None
        if not self.provider.offline:
            client_ctx = SearchClient(user_agent=self.p.user_agent, retries=3,
                                      retry_after_cap_s=self.p.fetch.retry_after_cap_s,
                                      backoff_base_s=self.p.fetch.backoff_base_s)
        http = await client_ctx.__aenter__() if client_ctx else None
        self.search_requests = 0
        try:
            for query in self.queries:
                folder = self._search_dir(query)
                saved = folder / "hits.json"
                if saved.exists() and not self.provider.offline:
                    rows = json.loads(saved.read_text(encoding="utf-8"))
                    results.append([_hit_from_json(d, query) for d in rows])
                    self.ui.advance("search")
                    continue
                if http is not None:
                    def record(name: str, body: bytes, _folder: Path = folder) -> None:
                        atomic_write_text(_folder / f"{name}.json", body.decode("utf-8", "replace"), durable=False)
                    http.record = record
                hits = await self._search_one(query, n, http)
                if not self.provider.offline:
                    atomic_write_text(saved, json.dumps([_hit_to_json(h) for h in hits], ensure_ascii=False, indent=0))
                results.append(hits)
                self.ui.advance("search")
        finally:
            if client_ctx is not None:
                self.search_requests = client_ctx.requests
                self.rate_limits = dict(client_ctx.rate_limits)
                await client_ctx.__aexit__(None, None, None)
        return results

    async def _search_one(self, query: Query, n: int, http: Any) -> list[Hit]:
        for attempt in range(4):
            try:
                return await self.provider.search(query, n, http)
            except TransientProviderError as exc:
                if attempt == 3:
                    raise ProviderError(f"{self.provider_name}: {exc} (gave up after 4 tries)") from None
                await asyncio.sleep(min(exc.retry_after or 2.0 ** attempt, self.p.fetch.retry_after_cap_s))
        raise AssertionError("unreachable")

    # -- download -----------------------------------------------------------------------
    def _workers(self, n_todo: int) -> int:
        f = self.p.fetch
        if n_todo < f.workers_min_items:
            return 1
        return f.workers or min(8, os.cpu_count() or 1)

    async def _download_all(self, items: list[_Item], journal: Journal, store: ImageStore) -> dict[str, Any]:
        todo = [Work(it.key, it.hit.url, it.hit.data, it.hit.local_path) for it in items if it.key not in journal.entries]
        if any(w.data is None and w.local_path is None for w in todo):
            fetch_time()  # a malformed SOURCE_DATE_EPOCH stops the run here, before any worker starts
        self.ui.start("download", len(items))
        self.ui.advance("download", len(items) - len(todo))

        def settled(n: int) -> None:
            self.ui.advance("download", n)

        workers = self._workers(len(todo))
        if workers > 1:
            journal.close()
            try:
                stats = await download_parallel(todo, workers, fetch=self.p.fetch, user_agent=self.p.user_agent,
                                                limits=self.limits, store=store, state=self.out / STATE,
                                                on_settled=settled, lock_fd=getattr(self, "_lock_fd", None))
            finally:
                journal.reload()
        else:
            stats = await download(todo, fetch=self.p.fetch, user_agent=self.p.user_agent, limits=self.limits,
                                   store=store, journal=journal, on_settled=settled,
                                   threads=max(2, os.cpu_count() or 2))
            stats["workers"] = 1
        stats["downloaded_now"] = len(todo)
        return stats

    # -- assembly -----------------------------------------------------------------------
    def _assemble(self, items: list[_Item], dup_url: dict[str, str], journal: Journal) -> tuple[pd.DataFrame, pd.DataFrame]:
        rows: list[dict[str, Any]] = []
        fails: list[dict[str, Any]] = []
        first_of: dict[str, int] = {}
        by_key = {it.key: it for it in items}
        for it in items:  # items are in (query, rank) order: the first result of an image wins
            q, h = it.query, it.hit
            base = {
                "query": q.text, "label": h.label or q.label, "item": q.item, "attribute": q.attribute,
                "provider": self.provider_name, "provider_id": h.provider_id, "page_url": h.page_url,
                "rank": h.rank,
            }
            src = _source(h)
            if it.key in dup_url:
                first = by_key[dup_url[it.key]]
                fails.append({**base, "url": src, "reason": "duplicate_url",
                              "detail": f"same URL as rank {first.hit.rank} of {first.query.text!r}", "attempts": 0})
                continue
            rec = journal.entries.get(it.key)
            if rec is None:
                continue  # not settled (interrupted run): absent, fetched on resume
            if rec["status"] != "ok":
                fails.append({**base, "url": src, "reason": rec["reason"], "detail": rec.get("detail"),
                              "attempts": rec.get("attempts"), "http_status": rec.get("http_status"),
                              "content_type": rec.get("content_type")})
                continue
            image_id = rec["image_id"]
            if image_id in first_of:
                fails.append({**base, "url": src, "reason": "duplicate_bytes", "image_id": image_id,
                              "detail": "identical bytes already stored", "attempts": rec.get("attempts"),
                              "http_status": rec.get("http_status"), "content_type": rec.get("content_type")})
                continue
            first_of[image_id] = len(rows)
            rows.append({
                **base, "image_id": image_id, "path": relpath(self.root, self.out / rec["rel"]),
                "source_url": src, "license": h.license, "license_url": h.license_url, "creator": h.creator,
                "width": rec["width"], "height": rec["height"], "format": rec["format"], "bytes": rec["bytes"],
                "title": h.title, "orig_width": rec["orig_width"], "orig_height": rec["orig_height"],
                "downsized": rec["downsized"], "has_gps": rec["has_gps"], "content_type": rec.get("content_type"),
                "content_type_mismatch": bool(rec.get("content_type_mismatch", False)),
                "fetched_at": rec.get("fetched_at"),  # None: read from a local file, or journaled before it existed
            })
        manifest = pd.DataFrame(rows, columns=SCRAPE_SCHEMA.names)
        failures = pd.DataFrame(fails, columns=FAILURE_SCHEMA.names)
        return manifest, failures

    # -- the whole run ------------------------------------------------------------------
    def context(self) -> StageContext:
        """The stage context this run writes through (`write_result`)."""
        return StageContext(root=self.root, out=self.out, progress=self.ui)

    def run(self, report: Path | None = None) -> StageResult:
        """Search, download and write OUT's manifest and failures (and the figures to `report`,
        when given, once the run is complete). Returns the StageResult, the CLI's per-query and
        per-label tables and short labels in its `extra`."""
        self.out.mkdir(parents=True, exist_ok=True)
        self._report_path = report
        with folder_lock(self.out, "datakit scrape") as self._lock_fd:
            try:
                return asyncio.run(self._run())
            except OSError as exc:
                if is_disk_full(exc):  # a run-level error, never a per-image skip (RES-06)
                    raise StoreError(f"cannot write the image store in {self.out}: {exc.strerror or exc}") from exc
                raise

    async def _run(self) -> StageResult:
        t0 = time.monotonic()
        state = self.out / STATE
        state.mkdir(exist_ok=True)
        remove_temp_files(self.out)
        sig = _signature(self.provider_name, self.queries, self.p, self.settings)
        run_file = state / RUN_FILE
        if run_file.exists():
            old = json.loads(run_file.read_text(encoding="utf-8"))
            if old != sig:
                changed = sorted(k for k in set(old) | set(sig) if old.get(k) != sig.get(k))
                if not self.extend:
                    raise ParamsError(
                        f"{self.out} was started with different inputs ({', '.join(changed)} changed). "
                        f"Re-run with --extend to add to it, or choose a new --out"
                    )
        atomic_write_text(run_file, json.dumps(sig, indent=1, ensure_ascii=False))
        done_marker = state / RESULTS_FILE
        if done_marker.exists():
            done_marker.unlink()

        journal = Journal(state)
        for message in journal.set_damaged_aside():
            self.ui.note(f"warning: {message}")
        store = ImageStore(self.out, durable=self.p.fetch.durable)
        if self.retry_failed:
            journal.drop({k for k, r in journal.entries.items() if r["status"] != "ok" and r.get("reason") in TRANSIENT_REASONS})

        main = asyncio.current_task()
        caught: list[int] = []
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            caught.append(signum)
            if main is not None:
                main.cancel()

        installed = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, on_signal, signum)
                installed.append(signum)
            except (RuntimeError, ValueError, NotImplementedError):
                pass
        items: list[_Item] = []
        dup_url: dict[str, str] = {}
        stats: dict[str, Any] = {}
        try:
            try:
                all_hits = await self._search_all()
                seen_url: dict[str, str] = {}
                for query, hits in zip(self.queries, all_hits, strict=True):
                    for hit in hits:
                        key = hit_key(self.provider_name, query, hit)
                        items.append(_Item(len(items), key, query, hit))
                        if hit.url:
                            if hit.url in seen_url:
                                dup_url[key] = seen_url[hit.url]  # fetched once (SRV-13)
                            else:
                                seen_url[hit.url] = key
                work = [it for it in items if it.key not in dup_url]
                self._rebuild_from_tables(work, journal, store)
                self._recover_orphans(journal, store)
                stats = await self._download_all(work, journal, store)
            except asyncio.CancelledError:
                if not caught:
                    raise
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
            journal.close()
        manifest, failures = self._assemble(items, dup_url, journal)
        if caught:  # what settled is written (the same writer), then the interruption is reported
            write_result(StageResult(manifest, {}, typed_failures(failures), schema=SCRAPE_SCHEMA), self.context(), STAGE)
            raise Interrupted(caught[0])
        result = self._summarise(items, manifest, failures, stats, time.monotonic() - t0)
        write_result(result, self.context(), STAGE, getattr(self, "_report_path", None))
        atomic_write_text(done_marker, json.dumps({"results": len(items)}))  # written last
        return result

    def _rebuild_from_tables(self, items: list[_Item], journal: Journal, store: ImageStore) -> None:
        """Results the journal does not name (a damaged or lost journal line) that the tables of
        an earlier run settled are taken back from `manifest.parquet` / `failures.parquet`
        rather than fetched again, provided a stored image still hashes to its name (B5).
        The rebuilt records are journaled again, so they stay settled."""
        missing = {(it.query.text, it.hit.rank, _source(it.hit)): it for it in items if it.key not in journal.entries}
        if not missing:
            return
        tables = {}
        for name in (MANIFEST, FAILURES):
            path = self.out / name
            if path.exists():
                try:  # the manifest through the stage loader (either path format; only ids are used)
                    tables[name] = read_stage_manifest(path, self.root)[0] if name == MANIFEST else read_table(path, name)
                except DatakitError as exc:
                    self.ui.note(f"warning: cannot rebuild settled results from it: {exc}")
        manifest = tables.get(MANIFEST)
        failures = tables.get(FAILURES)
        if manifest is None and failures is None:
            return
        objects = store.objects()
        checked: dict[str, bool] = {}

        def intact(image_id: Any) -> bool:
            if not isinstance(image_id, str) or image_id not in objects:
                return False
            if image_id not in checked:
                checked[image_id] = sha256_file(objects[image_id]) == image_id
            return checked[image_id]

        def slot(row: dict[str, Any], url_col: str) -> tuple[Any, Any, Any]:
            rank = _plain(row.get("rank"))
            return row.get("query"), int(rank) if rank is not None else None, _plain(row.get(url_col))

        stored: dict[str, dict[str, Any]] = {}  # image_id -> the fields of its ok record
        rebuilt: list[dict[str, Any]] = []
        for row in (manifest.to_dict("records") if manifest is not None else []):
            image_id = _plain(row.get("image_id"))
            if not intact(image_id):
                continue
            fields = {"status": "ok", "image_id": image_id,
                      "rel": objects[image_id].relative_to(self.out).as_posix(),
                      **{k: _plain(row.get(k)) for k in _OK_FIELDS}}
            stored.setdefault(image_id, fields)
            it = missing.pop(slot(row, "source_url"), None)
            if it is not None:
                rebuilt.append({"key": it.key, **fields})
        for row in (failures.to_dict("records") if failures is not None else []):
            reason = _plain(row.get("reason"))
            if reason == "duplicate_url" or (self.retry_failed and reason in TRANSIENT_REASONS):
                continue  # recomputed every run / to be fetched again
            it = missing.get(slot(row, "url"))
            if it is None:
                continue
            if reason == "duplicate_bytes":
                fields = stored.get(_plain(row.get("image_id")))
                if fields is None:
                    continue
                rec = {"key": it.key, **fields}
            else:
                rec = {"key": it.key, "status": "fail", "reason": reason,
                       **{k: _plain(row.get(k)) for k in ("detail", "attempts", "http_status", "content_type")}}
            del missing[slot(row, "url")]
            rebuilt.append(rec)
        for rec in rebuilt:
            rec["rebuilt"] = True
            journal.add(rec)
        if rebuilt:
            self.ui.note(f"warning: {len(rebuilt)} settled result(s) the journal did not name were taken back from "
                         f"{MANIFEST} / {FAILURES} (their images hash to their names); nothing is fetched again for them")

    def _recover_orphans(self, journal: Journal, store: ImageStore) -> None:
        """Stored objects no settled result names (a killed run wrote them just before their
        journal line, or the journal was damaged). One rule, always (RES-02, B5): an object
        whose bytes hash to its name is good data and is kept, and a result that fetches the
        same bytes adopts it; only a file whose bytes do not match its name is removed."""
        known = {r["image_id"] for r in journal.entries.values() if r.get("status") == "ok"}
        kept = 0
        for image_id, path in store.objects().items():
            if image_id in known:
                continue
            if sha256_file(path) == image_id:
                kept += 1
                continue
            self.ui.note(f"warning: removed {path.relative_to(self.out)}: its bytes do not hash to its name")
            path.unlink()
        if kept:
            self.ui.note(f"note: kept {kept} stored image(s) no settled result names yet (their bytes match their "
                         f"names); results that fetch the same bytes take them over")

    def _summarise(self, items: list[_Item], manifest: pd.DataFrame, failures: pd.DataFrame,
                   stats: dict[str, Any], seconds: float) -> StageResult:
        qs = [q.text for q in self.queries]
        returned = Counter(it.query.text for it in items)
        stored = Counter(manifest["query"]) if len(manifest) else Counter()
        per_query = []
        for q in qs:
            f = failures[failures["query"] == q]
            reasons = Counter(f["reason"])
            per_query.append({
                "query": q, "returned": returned.get(q, 0), "stored": stored.get(q, 0),
                "duplicate_bytes": reasons.pop("duplicate_bytes", 0), "duplicate_url": reasons.pop("duplicate_url", 0),
                "failed": sum(reasons.values()),
                "failed_by_reason": ", ".join(f"{r} {n}" for r, n in sorted(reasons.items())),
            })
        labels = list(dict.fromkeys([q.label for q in self.queries] + sorted(set(manifest["label"])) if len(manifest) else [q.label for q in self.queries]))
        per_label_counts = Counter(manifest["label"]) if len(manifest) else Counter()
        per_label = [{"label": lab, "stored": per_label_counts.get(lab, 0)} for lab in labels]
        short = [r["label"] for r in per_label if r["stored"] < self.p.min_per_label]
        by_reason = dict(sorted(Counter(failures["reason"]).items()))
        report = {
            "provider": self.provider_name,
            "queries": len(self.queries),
            "results": len(items),
            "stored": int(len(manifest)),
            "failures": int(len(failures)),
            "failures_by_reason": by_reason,
            "per_label": {r["label"]: r["stored"] for r in per_label},
            "labels_below_minimum": short,
            "min_per_label": self.p.min_per_label,
            "search_requests": getattr(self, "search_requests", 0),
            "seconds": round(seconds, 3),
            **stats,
        }
        if stats.get("download_seconds"):
            report["images_per_s"] = round(stats.get("downloaded_now", 0) / max(stats["download_seconds"], 1e-9), 1)
        if getattr(self, "rate_limits", None):
            report["rate_limit_headers"] = self.rate_limits
        return StageResult(manifest, report, typed_failures(failures), schema=SCRAPE_SCHEMA,
                           extra={"per_query": pd.DataFrame(per_query), "per_label": pd.DataFrame(per_label),
                                  "short_labels": short})


def typed_failures(failures: pd.DataFrame) -> pd.DataFrame:
    """The failures table as the one writer stores it: FAILURE_SCHEMA's columns (a result has a
    URL, a query, a rank... rather than a manifest path), plus the `stage` column every stage's
    failures carry. Integer columns become nullable Int32, so the writer (which infers the types of
    columns outside the stage failure schema) stores them as int32, as before, rather than as
    doubles where a value is missing."""
    out = failures.copy()
    for f in FAILURE_SCHEMA:
        if f.name in out.columns and pa.types.is_integer(f.type):
            out[f.name] = pd.array([None if v is None or pd.isna(v) else int(v) for v in out[f.name]], dtype="Int32")
    out["stage"] = STAGE
    return out


def context(out: Path, progress: Progress | None = None) -> StageContext:
    """The stage context of a scrape into `out`: acquisition reads no input folder, so its root is
    the core rule's for the output folder (`find_project_root`)."""
    return StageContext(root=find_project_root(Path(out)), out=Path(out), progress=progress or NoProgress())


def run(params: ScrapeParams, ctx: StageContext, *, provider: str | None = None, source: str | None = None,
        endpoint: str | None = None, extend: bool = False, retry_failed: bool = False,
        report: Path | None = None) -> StageResult:
    """Acquisition's stage entry: search `provider` (default `params.provider`) for every query
    and store the images in `ctx.out`, written with `write_result` (paths relative to the folder).
    No input manifest: acquisition starts the pipeline."""
    if ctx.out is None:
        raise ParamsError("scrape needs an output folder (--out DIR)")
    scraper = Scraper(params, provider=provider or params.provider, out=ctx.out, source=source, endpoint=endpoint,
                      extend=extend, retry_failed=retry_failed, progress=ctx.progress, root=ctx.root)
    return scraper.run(report)
