#!/usr/bin/env python3
"""Near-duplicate search benchmark: `datakit.dedup.index.near_pairs` on synthetic 256-bit hashes.

What it does, in one run:

1. for each N (1,000,000; with ``--big`` also 10,000,000) starts a fresh child process that
   generates N random 256-bit hashes of which ``--cluster-frac`` (1%) are clusters of near
   copies (2-10 members, each a seed with 1-10 flipped bits; repeated bit picks cancel, so a
   few members are exact copies) plus ``--exact-frac`` (0.1%) exact copies of other rows, at
   random positions;
2. times ``near_pairs(hashes, radius)`` (default radius 10, ``--workers`` threads) and reads
   the child's peak resident memory during that call (Linux VmHWM after resetting it through
   /proc/self/clear_refs; ``ru_maxrss`` of the fresh child where that is unavailable); the
   child's RSS before the call (interpreter, numpy, the input hashes) is printed beside it;
3. checks recall against numpy brute force: ``--sample`` query rows (half drawn from the
   clustered rows, half uniformly) are each compared with all N rows; every true neighbour
   must be in the result and nothing else may be (recall 1.0, 0 extra pairs);
4. the peer, measured in the same run: that brute force, with the same number of threads,
   extrapolated to the full self-join (time per query x N / 2); printed as the ratio
   brute / datakit;
5. optionally (``--faiss auto``, the default) a second peer: faiss ``IndexBinaryMultiHash``
   (11 tables of 23 bits at radius 10: exact by the same pigeonhole argument) doing a
   ``range_search`` self-join on the same hashes, from a virtualenv the script creates under
   ``WORK/.bench-faiss-venv`` with ``pip install faiss-cpu`` (skipped with a note when pip
   or the wheel is unavailable; ``--faiss skip`` never tries). Its pair count is checked
   against datakit's. By default only for N <= ``--faiss-max-n`` (1,000,000): faiss's
   per-table hash maps need several GB at 10M.

Goals (issue 3): 1M at radius 10 in <= 15 s and <= 1 GiB on 2 cores, recall 1.0; 10M in
<= 4 min.

Run from the repository root with datakit's environment (``make venv``); the script re-runs
itself with ``.venv/bin/python`` when started from another interpreter:

    .venv/bin/python bench/dedup_index.py                     # N = 1,000,000, radius 10, + faiss
    .venv/bin/python bench/dedup_index.py --big               # also N = 10,000,000
    .venv/bin/python bench/dedup_index.py --n 200000 --faiss skip   # quick smoke run
    .venv/bin/python bench/dedup_index.py --radius 6 --workers 1 --json bench-out/dedup-index.json

Options: ``--n`` (comma-separated sizes; default 1000000), ``--big`` (adds 10000000),
``--radius``, ``--workers`` (threads for datakit and for the brute-force peer; faiss gets the
same through OMP_NUM_THREADS), ``--sample`` (brute-force query rows, default 200),
``--cluster-frac``, ``--exact-frac``, ``--seed``, ``--faiss auto|skip``, ``--faiss-max-n``,
``--work DIR`` (default ``bench-out/``, git-ignored: the faiss venv and the hash files handed
to it), ``--json PATH`` (all figures), ``--timeout`` (seconds per child, default 900).
"""

# The bench starts the child processes it measures, with command lines it builds itself:
# ruff: noqa: S603

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import venv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from _common import ensure_venv, mib, reset_peak, status_kib  # noqa: E402

REPO = BENCH_DIR.parent
GOAL_SECONDS = {1_000_000: 15.0, 10_000_000: 240.0}
GOAL_MEMORY_MIB = {1_000_000: 1024.0}
FAISS_SPEC = "faiss-cpu>=1.8,<2"


# --------------------------------------------------------------------------------------------
# data


def make_hashes(n: int, seed: int, cluster_frac: float, exact_frac: float) -> tuple[Any, Any]:
    """Random 256-bit hashes with planted near-copy clusters and exact copies.

    Args:
        n: Rows.
        seed: Random seed (the same seed gives the same hashes).
        cluster_frac: Share of rows that belong to clusters of near copies (2-10 members,
            each member a copy of the cluster's seed row with 1-10 bit flips).
        exact_frac: Share of rows overwritten with exact copies of other rows.

    Returns:
        ``(hashes, clustered)``: the ``(n, 4)`` uint64 array and the indices of clustered rows.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64, size=(n, 4), dtype=np.uint64)
    n_clustered = int(n * cluster_frac)
    sizes = rng.integers(2, 11, size=max(1, n_clustered // 2))
    sizes = sizes[np.cumsum(sizes) <= n_clustered]
    total = int(sizes.sum())
    rows = rng.choice(n, size=total + int(n * exact_frac) * 2, replace=False)
    clustered, spare = rows[:total], rows[total:]
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    seed_row = np.repeat(clustered[starts], sizes)
    member = np.ones(total, dtype=bool)
    member[starts] = False  # the seed keeps its own random bits
    targets, sources = clustered[member], seed_row[member]
    flips = np.zeros((len(targets), 4), dtype=np.uint64)
    k = rng.integers(1, 11, size=len(targets))
    for step in range(10):
        use = k > step
        bit = rng.integers(0, 256, size=int(use.sum()))
        np.bitwise_xor.at(flips, (np.flatnonzero(use), bit // 64), np.left_shift(np.uint64(1), (bit % 64).astype(np.uint64)))
    h[targets] = h[sources] ^ flips
    half = len(spare) // 2
    h[spare[:half]] = h[spare[half:]]
    return h, np.sort(clustered)


# --------------------------------------------------------------------------------------------
# child: one N


def _brute(h: Any, queries: Any, radius: int, workers: int) -> tuple[list[set[tuple[int, int, int]]], float]:
    """Neighbours of each query row among all rows, by numpy brute force (threads over queries)."""
    import numpy as np

    block = 1 << 20

    def one(q: int) -> set[tuple[int, int, int]]:
        found: set[tuple[int, int, int]] = set()
        row = h[q]
        for s in range(0, len(h), block):
            x = h[s : s + block] ^ row
            d = np.bitwise_count(x).sum(axis=1, dtype=np.int32)
            for k in np.flatnonzero(d <= radius).tolist():
                if k + s != q:
                    found.add((q, k + s, int(d[k])))
        return found

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        out = list(pool.map(one, queries.tolist()))
    return out, time.perf_counter() - t0


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Generate, time near_pairs, measure memory, check recall; returns the figures."""
    import numpy as np

    from datakit.dedup.index import near_pairs

    n = args.child
    t0 = time.perf_counter()
    h, clustered = make_hashes(n, args.seed, args.cluster_frac, args.exact_frac)
    gen_s = time.perf_counter() - t0
    if args.save:
        np.save(args.save, h.view(np.uint8).reshape(n, 32))
    near_pairs(h[:2000], args.radius, workers=args.workers)  # imports and first-call costs out of the timing
    rss_before = status_kib("VmRSS")
    hwm_ok = reset_peak()
    t0 = time.perf_counter()
    i, j, d = near_pairs(h, args.radius, workers=args.workers)
    seconds = time.perf_counter() - t0
    peak = status_kib("VmHWM") if hwm_ok else None
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rng = np.random.default_rng(args.seed + 1)
    k = min(args.sample // 2, len(clustered))
    queries = np.unique(np.concatenate([rng.choice(clustered, size=k, replace=False) if k else clustered[:0],
                                        rng.integers(0, n, size=args.sample - k)]))
    truth_sets, brute_s = _brute(h, queries, args.radius, args.workers)
    truth = set().union(*truth_sets) if truth_sets else set()
    qmask_i = np.isin(i, queries)
    qmask_j = np.isin(j, queries)
    found: set[tuple[int, int, int]] = set()
    for a, b, dd in zip(i[qmask_i].tolist(), j[qmask_i].tolist(), d[qmask_i].tolist(), strict=True):
        found.add((a, b, dd))
    for a, b, dd in zip(j[qmask_j].tolist(), i[qmask_j].tolist(), d[qmask_j].tolist(), strict=True):
        found.add((a, b, dd))
    recall = len(found & truth) / len(truth) if truth else 1.0
    brute_selfjoin = brute_s / len(queries) * n / 2
    return {
        "n": n, "radius": args.radius, "workers": args.workers, "generate_s": round(gen_s, 2),
        "seconds": round(seconds, 3), "pairs": int(len(i)),
        "peak_rss_mib": mib(peak), "rss_before_mib": mib(rss_before),
        "peak_source": "VmHWM" if hwm_ok else "ru_maxrss",
        "input_mib": round(h.nbytes / 2**20, 1), "sample_queries": int(len(queries)),
        "sample_true_pairs": len(truth), "recall": recall, "extra_pairs": len(found - truth),
        "brute_seconds_per_query": round(brute_s / len(queries), 5),
        "brute_selfjoin_s": round(brute_selfjoin, 1), "ratio_brute": round(brute_selfjoin / seconds, 1),
    }


# --------------------------------------------------------------------------------------------
# faiss peer

FAISS_RUNNER = r"""
import json, resource, sys, time
import numpy as np
import faiss
path, radius, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
x = np.load(path)
assert x.shape == (n, 32)
nhash = radius + 1
b = min(24, 256 // nhash)
t0 = time.perf_counter()
index = faiss.IndexBinaryMultiHash(256, nhash, b)
index.nflip = 0
index.add(x)
t1 = time.perf_counter()
lims, dist, ids = index.range_search(x, radius + 1)  # faiss returns distances < radius
t2 = time.perf_counter()
pairs = (int(lims[-1]) - n) // 2  # every row finds itself once, every pair twice
print(json.dumps({"faiss_version": faiss.__version__, "nhash": nhash, "b": b, "build_s": round(t1 - t0, 3),
                  "search_s": round(t2 - t1, 3), "seconds": round(t2 - t0, 3), "pairs": pairs,
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def faiss_python(work: Path) -> tuple[Path | None, str]:
    """The faiss venv's python (created and installed on first use), or None and why not."""
    env_dir = work / ".bench-faiss-venv"
    py = env_dir / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", "import faiss"], capture_output=True).returncode == 0:
        return py, "ready"
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
        res = subprocess.run([str(py), "-m", "pip", "install", "--quiet", FAISS_SPEC, "numpy"],
                             capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"venv/pip failed: {exc}"
    if res.returncode != 0:
        return None, "pip install faiss-cpu failed: " + (res.stderr.strip().splitlines() or ["?"])[-1]
    return py, "installed"


def run_faiss(py: Path, hashes: Path, radius: int, n: int, workers: int, timeout: float) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=str(workers))
    try:
        res = subprocess.run([str(py), "-c", FAISS_RUNNER, str(hashes), str(radius), str(n)], capture_output=True,
                             text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["?"])[-1]}
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------------------------
# driver




def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--n", default="1000000", help="comma-separated sizes (default 1000000)")
    p.add_argument("--big", action="store_true", help="also N = 10,000,000")
    p.add_argument("--radius", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--sample", type=int, default=200, help="brute-force query rows (default 200)")
    p.add_argument("--cluster-frac", type=float, default=0.01)
    p.add_argument("--exact-frac", type=float, default=0.001)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--faiss", choices=["auto", "skip"], default="auto")
    p.add_argument("--faiss-max-n", type=int, default=1_000_000)
    p.add_argument("--work", type=Path, default=REPO / "bench-out")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--save", type=str, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def run_child(args: argparse.Namespace, n: int, save: Path | None) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(n), "--radius", str(args.radius),
           "--workers", str(args.workers), "--sample", str(args.sample), "--cluster-frac", str(args.cluster_frac),
           "--exact-frac", str(args.exact_frac), "--seed", str(args.seed)]
    if save is not None:
        cmd += ["--save", str(save)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"n": n, "error": f"timed out after {args.timeout:.0f} s"}
    if res.returncode != 0:
        return {"n": n, "error": res.stderr.strip()[-2000:]}
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def _fmt_s(x: float) -> str:
    if x >= 3600:
        return f"{x / 3600:.1f} h"
    if x >= 120:
        return f"{x / 60:.1f} min"
    return f"{x:.2f} s"


def report(row: dict[str, Any]) -> None:
    n = row["n"]
    if "error" in row:
        print(f"N={n:,}: FAILED: {row['error']}")
        return
    goal_s = GOAL_SECONDS.get(n)
    goal_m = GOAL_MEMORY_MIB.get(n)
    ok_s = "" if goal_s is None else f" (goal <= {_fmt_s(goal_s)}: {'ok' if row['seconds'] <= goal_s else 'MISSED'})"
    ok_m = "" if goal_m is None else f" (goal <= {goal_m:.0f} MiB: {'ok' if row['peak_rss_mib'] <= goal_m else 'MISSED'})"
    print(f"N={n:,} radius={row['radius']} workers={row['workers']}")
    print(f"  datakit near_pairs   {_fmt_s(row['seconds'])}{ok_s}, {row['pairs']:,} pairs")
    print(f"  peak RSS             {row['peak_rss_mib']:.0f} MiB{ok_m} [{row['peak_source']}; before the call "
          f"{row['rss_before_mib']:.0f} MiB, of which input hashes {row['input_mib']:.0f} MiB]")
    print(f"  recall               {row['recall']:.4f} on {row['sample_queries']} query rows "
          f"({row['sample_true_pairs']} true pairs; {row['extra_pairs']} extra) "
          f"{'ok' if row['recall'] == 1.0 and row['extra_pairs'] == 0 else 'MISSED'}")
    print(f"  peer: numpy brute    {_fmt_s(row['brute_selfjoin_s'])} extrapolated self-join "
          f"({row['brute_seconds_per_query'] * 1000:.1f} ms/query, {row['workers']} threads)"
          f" -> datakit is {row['ratio_brute']:,.0f}x faster")
    fa = row.get("faiss")
    if fa is None:
        return
    if "error" in fa or "skipped" in fa:
        print(f"  peer: faiss          skipped: {fa.get('error') or fa.get('skipped')}")
        return
    same = "same pair count" if fa["pairs"] == row["pairs"] else f"PAIR COUNT DIFFERS ({fa['pairs']:,})"
    print(f"  peer: faiss {fa['faiss_version']:<8} IndexBinaryMultiHash(nhash={fa['nhash']}, b={fa['b']}): "
          f"{_fmt_s(fa['seconds'])} (build {fa['build_s']:.2f} s, range_search {fa['search_s']:.2f} s), "
          f"peak RSS {fa['peak_rss_mib']:.0f} MiB, {same} -> faiss / datakit = {fa['seconds'] / row['seconds']:.1f}x")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args)))
        return 0
    code = ensure_venv(('numpy', 'datakit.dedup.index'), __file__, argv)
    if code is not None:
        return code
    import numpy as np

    sizes = [int(x) for x in str(args.n).split(",") if x.strip()]
    if args.big and 10_000_000 not in sizes:
        sizes.append(10_000_000)
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"# near-duplicate search benchmark: radius {args.radius}, {args.workers} worker(s), "
          f"{os.cpu_count()} CPU(s), numpy {np.__version__}, Python {platform.python_version()}, {platform.machine()}")
    fpy: Path | None = None
    fwhy = "--faiss skip"
    if args.faiss == "auto" and any(n <= args.faiss_max_n for n in sizes):
        fpy, fwhy = faiss_python(args.work)
        print(f"# faiss peer: {fwhy}")
    rows = []
    for n in sizes:
        want_faiss = fpy is not None and n <= args.faiss_max_n
        save = args.work / f"dedup-index-hashes-{n}.npy" if want_faiss else None
        row = run_child(args, n, save)
        if fpy is None:
            row["faiss"] = {"skipped": fwhy}
        elif n > args.faiss_max_n:
            row["faiss"] = {"skipped": f"N > --faiss-max-n {args.faiss_max_n:,}"}
        elif save is not None and save.exists() and "error" not in row:
            row["faiss"] = run_faiss(fpy, save, args.radius, n, args.workers, args.timeout)
        if save is not None:
            save.unlink(missing_ok=True)
        report(row)
        rows.append(row)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"radius": args.radius, "workers": args.workers, "rows": rows}, indent=2))
    bad = any("error" in r or r.get("recall") != 1.0 or r.get("extra_pairs") for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
