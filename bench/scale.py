#!/usr/bin/env python3
"""Throughput of the data stages with 1 and 2 workers, and what 1M / 100M images would cost.

Stages, each on the same photo-like 400x300 JPEG corpus (`bench/_corpus.py`, ~0.12 MP, ~25 KB):

| stage | what is timed | unit |
|---|---|---|
| hash | `datakit.dedup.hashing.hash_paths` (fast path, 1 + 9 crop hashes) | images/s |
| augment | `datakit.augment.run`, preset fashion, 2 variants per image, JPEG q92 into a store | parent images/s |
| embed | `datakit.embed.run`, resnet18 (random weights), 224 px, CPU, batch 32 | images/s |
| search | `near_pairs` radius 28 (full hashes) + `cross_pairs` radius 24 (full vs 9 crop hashes) on random hashes with planted near copies | hashes/s at that N |

Each stage runs on: `pool` (datakit's local executor: in process for 1 worker, a forkserver
process pool for 2) and `dask` (a `LocalCluster` of 1 or 2 single-threaded worker processes).
Start-up (the pool's forkserver, the cluster, imports, model and pipeline building on each
worker) is warmed up first and not counted. The search runs in process (1 thread) and
partitioned on the 2-worker cluster (block_rows = N: one block of full hashes, nine of crop
hashes, 10 tasks). Every result is checked against the local one (same hashes, same pairs, same
augment manifest).

Capacity table: the per-core figure of a stage is its `dask x1` rate (one single-threaded
process; `pool x1` runs in the calling process, where OpenCV may use more than one thread).
Hash, augment and embed are linear in the image count. The search is not: multi-index hashing
on m = r + 1 substrings puts random hashes into 2^(256/m) buckets per table, so candidate pairs
grow as N^2 while building the tables grows as N; its one-core seconds are fitted as
t(N) = a N + b N^2 through the two largest measured sizes and extrapolated. Random hashes are a
floor for real photos, whose dhash bits are less uniform (fuller buckets). Wall-clock columns
divide core-hours by the core counts in `--cores` (linear scaling: the tasks are independent;
the 2-worker columns show what this machine gave).

    .venv/bin/python bench/scale.py                         # ~3 min on 2 cores
    .venv/bin/python bench/scale.py --n 400 --embed-n 64 --search-n 20000,40000   # smoke run
    .venv/bin/python bench/scale.py --json bench-out/scale.json

Options: `--n` (images for hash and augment, default 2000), `--embed-n` (default 192),
`--search-n` (comma-separated hash counts, default 50000,100000), `--cores` (cluster sizes for
the wall-clock columns, default 64,512), `--work DIR` (default bench-out/scale), `--json PATH`.
The machine is shared: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(REPO / "src"))


def _reexec_in_venv() -> None:
    venv_python = REPO / ".venv" / "bin" / "python"
    if venv_python.exists() and Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        os.execv(str(venv_python), [str(venv_python), *sys.argv])  # noqa: S606 - our own interpreter


# --------------------------------------------------------------------------------------------
# set-up


def corpus_manifest(folder: Path, root: Path, n: int) -> Any:
    """A split-like manifest over the first `n` corpus images (all train, kept)."""
    import pandas as pd
    from _corpus import ensure_corpus, label_of

    from datakit.images import content_id

    paths = ensure_corpus(folder, n, log=lambda m: print(m, flush=True))
    rows = []
    for i, p in enumerate(paths):
        data = p.read_bytes()
        rows.append({"image_id": content_id(data), "path": os.path.relpath(p, root), "label": label_of(i),
                     "width": 400, "height": 300, "bytes": len(data), "split": "train", "keep": True,
                     "dup_group": f"g{i}"})
    return pd.DataFrame(rows)


def settings(kind: str, workers: int) -> Any:
    from datakit.parallel import ComputeParams

    if kind == "dask":
        return ComputeParams(scheduler=f"local:{workers}")
    return ComputeParams(workers=workers)


def warm(kind: str, workers: int) -> None:
    """Start the cluster (once per size) or the pool's forkserver (once per process) and import
    datakit's stage modules on every worker: start-up is not what is measured."""
    from datakit import parallel

    with parallel.executor(params=settings(kind, workers), preload=["datakit.augment", "datakit.dedup.hashing"]) as ex:
        ex.map(_import_stage_modules, list(range(4 * workers)))


def _import_stage_modules(_: int) -> int:
    import datakit.augment  # noqa: F401
    import datakit.dedup.hashing  # noqa: F401
    import datakit.embed  # noqa: F401
    import datakit.models  # noqa: F401

    return os.getpid()


def timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


# --------------------------------------------------------------------------------------------
# stages


def bench_hash(paths: list[Path], kind: str, workers: int) -> tuple[float, list[Any]]:
    from datakit import parallel
    from datakit.dedup.hashing import hash_paths

    with parallel.using(settings(kind, workers)):
        hash_paths(paths[: 8 * workers])  # warm: the module's weight caches on every worker
        secs, res = timed(lambda: hash_paths(paths, workers=workers))
    return len(paths) / secs, [getattr(r, "dhash", None) for r in res]


def bench_augment(df: Any, root: Path, work: Path, kind: str, workers: int) -> tuple[float, str]:
    import hashlib

    from datakit import parallel
    from datakit.augment import AugmentParams, run
    from datakit.stage import StageContext

    p = AugmentParams(variants=2, seed=0)
    out_dir = work / "augment-out"
    with parallel.using(settings(kind, workers)):
        shutil.rmtree(out_dir, ignore_errors=True)
        run(df.head(16 * workers), p, StageContext(root=root, out=out_dir))  # warm: pipelines built
        shutil.rmtree(out_dir, ignore_errors=True)
        secs, res = timed(lambda: run(df, p, StageContext(root=root, out=out_dir)))
        out = res.manifest
    digest = hashlib.sha256(out.drop(columns=["parent_ids"]).to_json().encode()).hexdigest()[:16]
    return len(df) / secs, digest


def bench_embed(df: Any, root: Path, work: Path, kind: str, workers: int) -> tuple[float, float | None]:
    import torch

    from datakit import parallel
    from datakit.embed import EmbedParams, run
    from datakit.stage import StageContext

    p = EmbedParams(backbone="resnet18", pretrained=False, batch_size=32, workers=0, device="cpu")
    threads = torch.get_num_threads()
    try:
        if kind != "dask":
            torch.set_num_threads(workers)  # the local path: one process, `workers` intra-op threads
        with parallel.using(settings(kind, workers)):
            if kind == "dask":
                shutil.rmtree(work / "embed-out", ignore_errors=True)
                run(df.head(32 * workers), p, StageContext(root=root, out=work / "embed-out"))  # warm: model on every worker
            shutil.rmtree(work / "embed-out", ignore_errors=True)
            secs, res = timed(lambda: run(df, p, StageContext(root=root, out=work / "embed-out")))
            rep = res.report
    finally:
        torch.set_num_threads(threads)
    return rep["computed"] / secs, rep["images_per_s"]


def bench_search(n: int, mode: str) -> tuple[float, int]:
    """Seconds for the dedup stage's two searches on n hashes (+ 9n crop hashes)."""
    import numpy as np
    from dedup_index import make_hashes

    from datakit import parallel
    from datakit.dedup.index import cross_pairs, near_pairs

    full, _ = make_hashes(n, 1, 0.01, 0.001)
    # crop hashes: each image's full hash with up to 8 bits per word flipped (a crop moves ~20-50 bits)
    noise = np.random.default_rng(2).integers(0, 2**64, size=(9 * n, 4), dtype=np.uint64)
    crops = full[np.repeat(np.arange(n), 9)] ^ (noise & np.uint64(0x0101010101010101))
    if mode == "local":
        secs, (a, b) = timed(lambda: (near_pairs(full, 28, workers=1), cross_pairs(full, crops, 24, workers=1)))
    else:
        # one block of full hashes, nine of crop hashes: 10 tasks, each as large as the plain
        # search's own side (at scale the blocks hold 262,144 rows, the default block_rows)
        with parallel.using(parallel.ComputeParams(scheduler="local:2", block_rows=n)):
            secs, (a, b) = timed(lambda: (near_pairs(full, 28), cross_pairs(full, crops, 24)))
    return secs, len(a[0]) + len(b[0])


# --------------------------------------------------------------------------------------------
# report


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def _hours(n: float, per_s: float) -> float:
    return n / per_s / 3600.0


def _fmt_h(h: float) -> str:
    if h < 1 / 60:
        return f"{h * 3600:.0f} s"
    if h < 1:
        return f"{h * 60:.1f} min"
    if h < 100:
        return f"{h:.1f} h"
    return f"{h:,.0f} h"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--embed-n", type=int, default=192)
    ap.add_argument("--search-n", default="50000,100000")
    ap.add_argument("--cores", default="64,512")
    ap.add_argument("--work", type=Path, default=REPO / "bench-out" / "scale")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    os.environ.pop("DATAKIT_DASK_SCHEDULER", None)
    import torch

    from datakit import parallel

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"datakit bench/scale.py: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, torch {torch.__version__}; load average {_load()}", flush=True)
    df = corpus_manifest(work / "corpus", work, max(args.n, args.embed_n))
    paths = [work / p for p in df["path"]]
    results: dict[str, dict[str, float]] = {}
    checks: dict[str, bool] = {}

    runs = [("pool", 1), ("pool", 2), ("dask", 1), ("dask", 2)]
    hashes: dict[str, list[Any]] = {}
    digests: dict[str, str] = {}
    for kind, w in runs:
        warm(kind, w)
        label = f"{kind} x{w}"
        rate, hashes[label] = bench_hash(paths[: args.n], kind, w)
        results.setdefault("hash", {})[label] = rate
        print(f"  hash     {label:8s} {rate:8.1f} images/s", flush=True)
        rate, digests[label] = bench_augment(df.head(args.n // 4), work, work, kind, w)
        results.setdefault("augment", {})[label] = rate
        print(f"  augment  {label:8s} {rate:8.1f} images/s (2 variants each)", flush=True)
        rate, model_rate = bench_embed(df.head(args.embed_n), work, work, kind, w)
        results.setdefault("embed", {})[label] = rate
        print(f"  embed    {label:8s} {rate:8.1f} images/s (model alone {model_rate} images/s)", flush=True)
    checks["hash identical"] = len({json.dumps(h) for h in hashes.values()}) == 1
    checks["augment identical"] = len(set(digests.values())) == 1

    search: dict[str, dict[int, float]] = {"local x1": {}, "dask x2": {}}
    for n in [int(x) for x in args.search_n.split(",") if x]:
        secs1, pairs1 = bench_search(n, "local")
        secs2, pairs2 = bench_search(n, "dask")
        checks[f"search pairs identical at {n}"] = pairs1 == pairs2
        search["local x1"][n], search["dask x2"][n] = secs1, secs2
        print(f"  search   N={n:,}: 1 thread {secs1:.2f} s ({n / secs1:,.0f} hashes/s), dask x2 partitioned "
              f"{secs2:.2f} s ({n / secs2:,.0f} hashes/s), {pairs1} pairs", flush=True)
    parallel.shutdown()

    # ---------------------------------------------------------------------------- tables
    print(f"\nthroughput (images/s; load average now {_load()})")
    print(f"{'stage':10s}" + "".join(f"{k + ' x' + str(w):>12s}" for k, w in runs) + f"{'dask x2/x1':>12s}")
    for stage in ("hash", "augment", "embed"):
        r = results[stage]
        print(f"{stage:10s}" + "".join(f"{r[f'{k} x{w}']:12.1f}" for k, w in runs)
              + f"{r['dask x2'] / r['dask x1']:12.2f}")
    ns = sorted(search["local x1"])
    n_big = ns[-1]
    t_big = search["local x1"][n_big]
    print(f"{'search':10s}  N={n_big:,}: 1 thread {t_big:.2f} s, dask x2 partitioned {search['dask x2'][n_big]:.2f} s "
          f"(x{t_big / search['dask x2'][n_big]:.2f})")
    print("checks: " + ", ".join(f"{k}: {'ok' if v else 'MISMATCH'}" for k, v in checks.items()))

    # search seconds on one core: t(N) = a N + b N^2 through the two largest sizes (sorting the
    # substring tables is linear, the candidate pairs quadratic); N^2 from the largest alone if
    # only one size was measured or the fit is not increasing
    a, b = 0.0, t_big / n_big**2
    if len(ns) >= 2:
        n1, n2 = ns[-2], ns[-1]
        t1, t2 = search["local x1"][n1], search["local x1"][n2]
        b_fit = (t2 / n2 - t1 / n1) / (n2 - n1)
        a_fit = t1 / n1 - b_fit * n1
        if b_fit > 0 and a_fit >= 0:
            a, b = a_fit, b_fit
    cores = [int(c) for c in args.cores.split(",") if c]
    per_core = {st: results[st]["dask x1"] for st in ("hash", "augment", "embed")}
    print(f"\ncapacity: per-core figures = the dask x1 column; search: t(N) = {a:.3g} N + {b:.3g} N^2 core-seconds "
          f"(fitted at N = {', '.join(f'{n:,}' for n in ns[-2:])}); wall = core-hours / cores (linear scaling)")
    print(f"{'stage':10s}{'per core':>16s}{'images':>8s}{'core-hours':>12s}" + "".join(f"{f'wall, {c} cores':>18s}" for c in cores))
    table = []
    for n, name in ((1_000_000, "1M"), (100_000_000, "100M")):
        for stage in ("hash", "augment", "embed", "search"):
            if stage == "search":
                core_h = (a * n + b * n * n) / 3600.0
                rate_txt = f"{n_big / t_big:,.0f}/s @{n_big // 1000}k"
            else:
                core_h = _hours(n, per_core[stage])
                rate_txt = f"{per_core[stage]:,.1f} img/s"
            walls = [core_h / c for c in cores]
            table.append({"stage": stage, "images": n, "core_hours": core_h, "wall_hours": dict(zip(cores, walls, strict=True))})
            print(f"{stage:10s}{rate_txt:>16s}{name:>8s}{_fmt_h(core_h):>12s}" + "".join(f"{_fmt_h(w):>18s}" for w in walls))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"throughput": results, "search_seconds": {k: {str(n): v for n, v in d.items()} for k, d in search.items()},
                                         "search_model": {"a": a, "b": b}, "checks": checks, "capacity": table}, indent=2))
        print(f"\nfigures: {args.json}")


if __name__ == "__main__":
    _reexec_in_venv()
    main()
