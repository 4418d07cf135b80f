#!/usr/bin/env python3
"""Hashing throughput of `datakit dedup` against the plain imagehash loop, on the same files.

Peer: ``imagehash.dhash(Image.open(p), hash_size=16)`` for each path (the loop most dedup
scripts run). datakit: ``datakit.dedup.hashing.hash_paths`` (reads the file, the safe decode
checks, the 256-bit dhash, 9 crop hashes and the low-information flag), on its default fast
path and on ``--exact``. Both are timed in one process (per-core figure) and with two worker
processes (the plain loop then runs in a 2-process ``multiprocessing.Pool`` over the same
chunks); the pool start-up is included.

Corpora, generated once into ``WORK`` (git-ignored ``bench-out/dedup-hash`` by default):

* ``small``: photo-like JPEGs from ``bench/_corpus.py`` at 0.19-0.25 MP, quality 75, which
  gives ~28 KB per file: the shape of the real clothing photos in
  shared/reference/perf-baselines.md (0.22 MP, 27 KB mean), where the plain loop ran at
  759 img/s/core;
* ``large``: 12 MP (4000x3000) JPEGs, quality 85 (few: 20 by default; plain loop 9.6 img/s/core
  in perf-baselines.md).

Goal (issue 3): datakit fast path >= 3.5x the plain loop per core. Runs are interleaved and
the median of ``--repeat`` runs is printed, with the ratio measured in this run.

    .venv/bin/python bench/dedup_hash.py                    # 2,000 small + 20 large, 3 repeats
    .venv/bin/python bench/dedup_hash.py --small 500 --large 0 --repeat 1   # smoke run
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import imagehash  # noqa: E402
from _corpus import make_jpeg  # noqa: E402

from datakit.dedup import hashing  # noqa: E402

CORPUS_VERSION = 1


def _small_size(i: int) -> tuple[int, int]:
    rng = np.random.default_rng([CORPUS_VERSION, 17, i])
    mp_ = rng.uniform(0.19e6, 0.25e6)
    aspect = rng.choice([4 / 3, 3 / 4, 1.0, 3 / 2, 2 / 3])
    w = int(round((mp_ * aspect) ** 0.5))
    return min(w, 1000), int(round(mp_ / w))


def _large_jpeg(i: int) -> bytes:
    """A 12 MP picture: a photo-like 0.2 MP scene enlarged, sharp detail and grain added."""
    rng = np.random.default_rng([CORPUS_VERSION, 12, i])
    small = Image.open(io.BytesIO(make_jpeg(50_000 + i, 500, 375, quality=95)))
    big = small.resize((4000, 3000), Image.Resampling.BICUBIC).filter(ImageFilter.UnsharpMask(4, 80, 2))
    noise = rng.normal(0, 3.0, (3000, 4000, 1)).astype(np.float32)
    arr = np.clip(np.asarray(big, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()


def ensure(folder: Path, n: int, make: Callable[[int], bytes], label: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / ".stamp.json"
    try:
        have = json.loads(stamp.read_text())
    except (OSError, ValueError):
        have = {}
    count = int(have.get("count", 0)) if have.get("version") == CORPUS_VERSION else 0
    paths = [folder / f"{i:06d}.jpg" for i in range(n)]
    if count < n:
        print(f"corpus {label}: generating {n - count} pictures into {folder}", flush=True)
        for i in range(count, n):
            tmp = paths[i].with_suffix(".tmp")
            tmp.write_bytes(make(i))
            os.replace(tmp, paths[i])
        stamp.write_text(json.dumps({"version": CORPUS_VERSION, "count": n}))
    return paths


# ---------------------------------------------------------------------------------------------
# the runs


def plain_loop(paths: list[str]) -> list[str]:
    return [str(imagehash.dhash(Image.open(p), hash_size=16)) for p in paths]


def plain_pool(paths: list[str], workers: int) -> list[str]:
    size = max(1, min(64, -(-len(paths) // (4 * workers))))  # the chunking hash_paths uses
    chunks = [paths[i:i + size] for i in range(0, len(paths), size)]
    ctx = mp.get_context("forkserver")
    with ctx.Pool(workers) as pool:
        return [h for part in pool.map(plain_loop, chunks) for h in part]


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and its finished children)."""
    c0 = os.times()
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    c1 = os.times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system) + (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
    return wall, cpu


def _pixels(path: Path) -> int:
    with Image.open(path) as im:
        return im.size[0] * im.size[1]


def run_set(label: str, paths: list[Path], repeat: int, pool_workers: int) -> dict[str, float]:
    sp = [str(p) for p in paths]
    n = len(paths)
    runs: dict[str, Callable[[], object]] = {
        "plain imagehash loop": lambda: plain_loop(sp),
        "datakit fast": lambda: hashing.hash_paths(paths, workers=1),
        "datakit --exact": lambda: hashing.hash_paths(paths, exact=True, workers=1),
        f"plain loop, {pool_workers} processes": lambda: plain_pool(sp, pool_workers),
        f"datakit fast, {pool_workers} processes": lambda: hashing.hash_paths(paths, workers=pool_workers),
    }
    # warm the page cache and the imports once
    plain_loop(sp[: min(n, 50)])
    hashing.hash_paths(paths[: min(n, 50)], workers=1)
    times: dict[str, list[float]] = {k: [] for k in runs}
    cpus: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeat):
        for name, fn in runs.items():
            wall, cpu = timed(fn)
            times[name].append(wall)
            cpus[name].append(cpu)
    kb = statistics.mean(p.stat().st_size for p in paths) / 1024
    mpx = statistics.mean(_pixels(p) for p in paths[:200]) / 1e6
    print(f"\n{label}: {n} JPEGs, mean {mpx:.2f} MP, {kb:.0f} KB; median of {repeat} run(s)")
    print(f"{'run':<34} {'img/s':>9} {'wall s':>8} {'CPU ms/img':>11}")
    print("-" * 66)
    rate: dict[str, float] = {}
    for name in runs:
        wall = statistics.median(times[name])
        rate[name] = n / wall
        cpu = "-" if "processes" in name else f"{1000 * statistics.median(cpus[name]) / n:.3f}"  # workers are not our children
        print(f"{name:<34} {rate[name]:9.1f} {wall:8.2f} {cpu:>11}")
    plain = rate["plain imagehash loop"]
    print(f"datakit fast / plain, per core         {rate['datakit fast'] / plain:5.2f}x   (goal >= 3.5)")
    print(f"datakit --exact / plain, per core      {rate['datakit --exact'] / plain:5.2f}x")
    print(f"datakit fast, {pool_workers} processes / plain, 1 core  {rate[f'datakit fast, {pool_workers} processes'] / plain:5.2f}x")
    print(f"datakit fast / plain, both {pool_workers} processes   "
          f"{rate[f'datakit fast, {pool_workers} processes'] / rate[f'plain loop, {pool_workers} processes']:5.2f}x")
    return rate


def agreement(paths: list[Path]) -> None:
    """How many bits the fast path moves the hash, against the exact path, on these files."""
    fast = hashing.hash_paths(paths, workers=1)
    exact = hashing.hash_paths(paths, exact=True, workers=1)
    d = np.array([hashing.hamming(f.dhash, e.dhash) for f, e in zip(fast, exact, strict=True)
                  if isinstance(f, hashing.HashResult) and isinstance(e, hashing.HashResult)])
    print(f"fast vs exact dhash on these files: mean {d.mean():.2f} bits, p99 {np.percentile(d, 99):.0f}, max {d.max()} (of 256)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--large", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="processes for the pool figures")
    ap.add_argument("--work", type=Path, default=ROOT / "bench-out" / "dedup-hash")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"hashing throughput: datakit {hashing.__name__} vs imagehash {imagehash.__version__}; {cores} CPUs")
    out: dict[str, object] = {}
    if args.small:
        small = ensure(args.work / "small", args.small,
                       lambda i: make_jpeg(200_000 + i, *_small_size(i), quality=75), "small")
        out["small"] = run_set("0.2 MP photos", small, args.repeat, args.workers)
        agreement(small[:500])
    if args.large:
        large = ensure(args.work / "large", args.large, _large_jpeg, "large")
        out["large"] = run_set("12 MP photos", large, args.repeat, args.workers)
        agreement(large)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
