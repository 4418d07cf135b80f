#!/usr/bin/env python3
"""SMOTE benchmark: `datakit.smote` against imbalanced-learn's `SMOTE`, time and peak memory.

What it does, in one run, for each N (default 5,000 and 50,000) and each kind of data:

* ``embeddings``: N x 512 float32, unit length (what `datakit embed` will give);
* ``pixels``: N images of 64x64x3 flattened (what `balance.strategy: smote_pixels` works on):
  imbalanced-learn gets them as float arrays (it has no uint8 path; float32 by default, which
  is the issue's ~14 GB at N = 50,000: float64 needs ~20 GB and is OOM-killed on a 24 GiB
  machine), datakit as uint8;

both synthetic but structured (per class a few prototypes plus noise), 4 classes split
50% / 25% / 15% / 10% at random positions, target ``auto`` (every class up to the majority),
k = 5. Each contender runs in a fresh child process that first builds its input, then is timed
and has its peak resident memory read (Linux VmHWM after a reset through
/proc/self/clear_refs, so the figure is the peak *during* the call, input included;
``ru_maxrss`` of the fresh child where that is unavailable):

* ``imblearn``: ``SMOTE(k_neighbors=5, random_state=0).fit_resample(X, y)``;
* ``datakit``: per minority class, ``interpolate(X[y == c], need, 5, rng)`` (blocked exact
  k-NN, then 1,024 synthetic rows at a time), each chunk consumed and dropped, as
  `datakit balance` writes each chunk out. A check outside the timing: for 50 synthetic rows of
  the last class, the partner ``b`` must be among the parent's 5 exact nearest neighbours
  (brute force, ties by index).

Prints a table, then per kind and N the ratios datakit / imblearn of time and of peak memory
(measured in the same run; below 1 means datakit needs less), and whether the issue's goal
(pixels, N = 50,000: datakit peak <= 2 GB) is met. imbalanced-learn on 50,000 images as
float32 needs about 14 GB and 1.5 minutes (``--skip-peer-pixels-50k`` leaves that run out).

Run from the repository root with datakit's environment (``make venv``; imbalanced-learn is a
datakit dependency); the script re-runs itself with ``.venv/bin/python`` when started from
another interpreter:

    .venv/bin/python bench/balance.py                               # N = 5,000 and 50,000
    .venv/bin/python bench/balance.py --n 5000                      # quick run (~1 min)
    .venv/bin/python bench/balance.py --skip-peer-pixels-50k        # no 14 GB imblearn run
    .venv/bin/python bench/balance.py --n 50000 --kinds pixels --json bench-out/balance.json

Options: ``--n`` (comma-separated sizes), ``--kinds`` (``embeddings,pixels``), ``--tools``
(``imblearn,datakit``), ``--skip-peer-pixels-50k``, ``--peer-pixels-dtype float32|float64``,
``--k`` (neighbours, default 5), ``--seed``, ``--block-mib`` (datakit's ``block_bytes``,
default 256), ``--timeout`` (seconds per child, default 1800), ``--json PATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from _common import ensure_venv, mib, reset_peak, status_kib  # noqa: E402

REPO = BENCH_DIR.parent
SPLIT = (0.50, 0.25, 0.15, 0.10)
SIDE = 64
EMBED_DIM = 512
GOAL_PIXELS_N = 50_000
GOAL_BYTES = 2_000_000_000  # the "<= 2 GB"
TOOLS = ("imblearn", "datakit")
KINDS = ("embeddings", "pixels")


# --------------------------------------------------------------------------------------------
# data


def class_sizes(n: int) -> list[int]:
    sizes = [int(n * f) for f in SPLIT]
    sizes[0] += n - sum(sizes)
    return sizes


def make_labels(n: int, seed: int) -> Any:
    import numpy as np

    rng = np.random.default_rng([seed, 1])
    return rng.permutation(np.repeat(np.arange(len(SPLIT)), class_sizes(n)))


def make_pixels(y: Any, seed: int) -> Any:
    """uint8 (n, 64*64*3): per class 6 blocky prototype images, plus per-image brightness and grain."""
    import numpy as np

    n, d = len(y), SIDE * SIDE * 3
    rng = np.random.default_rng([seed, 2])
    coarse = rng.uniform(20, 235, size=(len(SPLIT), 6, 8, 8, 3)).astype(np.float32)
    protos = coarse.repeat(SIDE // 8, axis=2).repeat(SIDE // 8, axis=3).reshape(len(SPLIT), 6, d)
    X = np.empty((n, d), dtype=np.uint8)
    for s in range(0, n, 2048):
        m = min(2048, n - s)
        block = protos[y[s : s + m], rng.integers(0, 6, size=m)]
        block += rng.normal(0, 15, size=(m, 1)).astype(np.float32)
        block += rng.standard_normal(size=(m, d), dtype=np.float32) * 12
        X[s : s + m] = np.clip(block, 0, 255)
    return X


def make_embeddings(y: Any, seed: int) -> Any:
    """float32 (n, 512), unit rows: class centre + one of 5 sub-centres + noise."""
    import numpy as np

    rng = np.random.default_rng([seed, 3])
    centres = rng.normal(size=(len(SPLIT), EMBED_DIM)).astype(np.float32)
    subs = rng.normal(scale=0.6, size=(len(SPLIT), 5, EMBED_DIM)).astype(np.float32)
    X = centres[y] + subs[y, rng.integers(0, 5, size=len(y))]
    X += rng.standard_normal(size=X.shape, dtype=np.float32) * 0.4
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X


# --------------------------------------------------------------------------------------------
# child: one contender, one kind, one N


def _check_partners(Xc: Any, a: Any, b: Any, k: int, sample: int = 50) -> tuple[int, int]:
    """How many of `sample` (a, b) pairs have b among a's k exact nearest (by distance, index)."""
    import numpy as np

    take = np.unique(np.linspace(0, len(a) - 1, num=min(sample, len(a))).astype(int))
    ok = 0
    for t in take:
        q = Xc[a[t]].astype(np.float64)
        dist = np.empty(len(Xc))
        for s in range(0, len(Xc), 4096):  # float64 of uint8 values: exact integer distances
            diff = Xc[s : s + 4096].astype(np.float64) - q
            dist[s : s + len(diff)] = np.einsum("ij,ij->i", diff, diff)
        dist[a[t]] = np.inf
        order = np.lexsort((np.arange(len(Xc)), dist))[:k]
        ok += int(b[t] in order)
    return ok, len(take)


def child(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    tool, kind, n = args.child_tool, args.child_kind, args.child_n
    t0 = time.perf_counter()
    y = make_labels(n, args.seed)
    if kind == "pixels":
        X = make_pixels(y, args.seed)
        if tool == "imblearn":
            wide = np.empty(X.shape, dtype=args.peer_pixels_dtype)
            for s in range(0, n, 4096):
                wide[s : s + 4096] = X[s : s + 4096]
            del X
            X = wide
    else:
        X = make_embeddings(y, args.seed)
    gen_s = time.perf_counter() - t0
    counts = np.bincount(y)
    target = int(counts.max())
    expected_new = int((target - counts).sum())
    if tool == "imblearn":
        from imblearn.over_sampling import SMOTE

        warm = SMOTE(k_neighbors=args.k, random_state=0)
        warm.fit_resample(X[:400], y[:400])  # imports and first-call costs out of the timing
        rss_before = status_kib("VmRSS")
        hwm_ok = reset_peak()
        t0, c0 = time.perf_counter(), time.process_time()
        Xr, yr = SMOTE(k_neighbors=args.k, random_state=0).fit_resample(X, y)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        peak = status_kib("VmHWM") if hwm_ok else None
        made = int(len(Xr) - n)
        out_dtype = str(Xr.dtype)
        check = None
        del Xr, yr
    else:
        from datakit.balance.smote import interpolate

        list(interpolate(X[:300], 300, args.k, np.random.default_rng(0)))  # first-call costs
        rss_before = status_kib("VmRSS")
        hwm_ok = reset_peak()
        t0, c0 = time.perf_counter(), time.process_time()
        rng = np.random.default_rng(args.seed)
        made = 0
        first: tuple[Any, Any] | None = None
        Xc = None
        out_dtype = ""
        for label in range(len(counts)):
            need = target - int(counts[label])
            if need <= 0:
                continue
            Xc = X[y == label]
            first = None
            for a_idx, b_idx, _gaps, synth in interpolate(
                Xc, need, args.k, rng, chunk=1024, block_bytes=args.block_mib << 20
            ):
                made += len(synth)
                out_dtype = str(synth.dtype)
                if first is None:
                    first = (a_idx, b_idx)
                del synth  # written out and dropped by `datakit balance`
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        peak = status_kib("VmHWM") if hwm_ok else None
        check = None
        if first is not None:  # the last class processed
            ok, total = _check_partners(Xc, first[0], first[1], args.k)
            check = f"{ok}/{total}"
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "tool": tool, "kind": kind, "n": n, "seconds": round(seconds, 2), "cpu_s": round(cpu, 2), "peak_rss_mib": mib(peak),
        "rss_before_mib": mib(rss_before), "peak_source": "VmHWM" if hwm_ok else "ru_maxrss",
        "input_dtype": str(X.dtype), "input_mib": round(X.nbytes / 2**20, 1), "output_dtype": out_dtype,
        "made": made, "expected": expected_new, "generate_s": round(gen_s, 1), "partner_check": check,
        "class_counts": counts.tolist(),
    }


# --------------------------------------------------------------------------------------------
# driver




def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--n", default="5000,50000", help="comma-separated sizes (default 5000,50000)")
    p.add_argument("--kinds", default=",".join(KINDS), help="embeddings,pixels")
    p.add_argument("--tools", default=",".join(TOOLS), help="imblearn,datakit")
    p.add_argument("--skip-peer-pixels-50k", action="store_true",
                   help="skip imbalanced-learn on pixels for N >= 50,000 (~14 GB, ~1.5 min)")
    p.add_argument("--peer-pixels-dtype", choices=["float32", "float64"], default="float32",
                   help="what imbalanced-learn gets the pixels as (default float32; float64 needs ~20 GB at 50k)")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--block-mib", type=int, default=256, help="datakit knn block_bytes in MiB (default 256)")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--child-tool", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-kind", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-n", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def run_child(args: argparse.Namespace, tool: str, kind: str, n: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-tool", tool, "--child-kind", kind,
           "--child-n", str(n), "--k", str(args.k), "--seed", str(args.seed), "--block-mib", str(args.block_mib),
           "--peer-pixels-dtype", args.peer_pixels_dtype]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"tool": tool, "kind": kind, "n": n, "error": f"timed out after {args.timeout:.0f} s"}
    if res.returncode != 0:
        tail = (res.stderr.strip() or f"exit status {res.returncode}")[-1500:]
        return {"tool": tool, "kind": kind, "n": n, "error": tail}
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def _row_line(r: dict[str, Any]) -> str:
    head = f"{r['n']:>7,}  {r['kind']:<11} {r['tool']:<9}"
    if "error" in r:
        return f"{head} FAILED: {r['error'].splitlines()[-1] if r['error'] else '?'}"
    if "skipped" in r:
        return f"{head} skipped ({r['skipped']})"
    return (f"{head} {r['seconds']:>8.2f} {r['cpu_s']:>7.1f} {r['peak_rss_mib']:>9,.0f} {r['rss_before_mib']:>9,.0f} "
            f"{r['input_mib']:>8,.0f} {r['input_dtype']:>8} {r['made']:>8,}  {r['partner_check'] or '-'}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.child_tool is not None:
        print(json.dumps(child(args)))
        return 0
    code = ensure_venv(('imblearn', 'numpy', 'datakit.smote'), __file__, argv)
    if code is not None:
        return code
    import imblearn
    import numpy as np

    sizes = [int(x) for x in str(args.n).split(",") if x.strip()]
    kinds = [x for x in args.kinds.split(",") if x]
    tools = [x for x in args.tools.split(",") if x]
    print(f"# SMOTE benchmark: k={args.k}, classes {'/'.join(f'{f:.0%}' for f in SPLIT)}, target auto; "
          f"{os.cpu_count()} CPU(s), numpy {np.__version__}, imbalanced-learn {imblearn.__version__}, "
          f"Python {platform.python_version()}; pixels {SIDE}x{SIDE}x3 (imblearn {args.peer_pixels_dtype}, "
          f"datakit uint8), embeddings {EMBED_DIM}-d float32")
    rows: list[dict[str, Any]] = []
    header = (f"{'N':>7}  {'data':<11} {'tool':<9} {'seconds':>8} {'CPU s':>7} {'peak MiB':>9} {'pre MiB':>9} "
              f"{'in MiB':>8} {'in dtype':>8} {'new rows':>8}  partner check")
    print(header)
    print("-" * len(header))
    for n in sizes:
        for kind in kinds:
            for tool in tools:
                if tool == "imblearn" and kind == "pixels" and n >= 50_000 and args.skip_peer_pixels_50k:
                    r: dict[str, Any] = {"tool": tool, "kind": kind, "n": n, "skipped": "--skip-peer-pixels-50k"}
                else:
                    r = run_child(args, tool, kind, n)
                rows.append(r)
                print(_row_line(r), flush=True)
    print("(seconds: wall time of the call; CPU s: its user + system time over all threads; peak MiB: the child's\n"
          " peak RSS during the call, input included; pre MiB: its RSS just before; partner check: datakit's b\n"
          " among a's exact k nearest neighbours, on a sample)")
    print()
    by = {(r["tool"], r["kind"], r["n"]): r for r in rows}
    bad = False
    for n in sizes:
        for kind in kinds:
            dk, peer = by.get(("datakit", kind, n)), by.get(("imblearn", kind, n))
            if dk is None or peer is None or "seconds" not in dk or "seconds" not in peer:
                continue
            t, m = dk["seconds"] / peer["seconds"], dk["peak_rss_mib"] / peer["peak_rss_mib"]
            print(f"datakit / imblearn  {kind:<11} N={n:>6,}   time {t:5.2f}x   peak memory {m:5.2f}x   "
                  f"(imblearn takes {1 / t:.1f}x the time and {1 / m:.1f}x the memory)")
    for r in rows:
        if "seconds" in r and r["made"] != r["expected"]:
            bad = True
            print(f"WARNING: {r['tool']} {r['kind']} N={r['n']:,} made {r['made']:,} rows, expected {r['expected']:,}")
        if r.get("partner_check") and r["partner_check"].split("/")[0] != r["partner_check"].split("/")[1]:
            bad = True
            print(f"WARNING: {r['kind']} N={r['n']:,}: partner check {r['partner_check']}")
        if "error" in r:
            bad = True
    goal = by.get(("datakit", "pixels", GOAL_PIXELS_N))
    if goal is not None and "seconds" in goal:
        peak_bytes = goal["peak_rss_mib"] * 2**20
        verdict = "met" if peak_bytes <= GOAL_BYTES else "MISSED"
        print(f"goal: datakit pixels N={GOAL_PIXELS_N:,} peak {peak_bytes / 1e9:.2f} GB "
              f"(<= {GOAL_BYTES / 1e9:.0f} GB): {verdict}")
        bad = bad or verdict != "met"
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"k": args.k, "split": SPLIT, "rows": rows}, indent=2))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
