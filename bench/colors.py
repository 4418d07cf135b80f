#!/usr/bin/env python3
"""Colors benchmark: `datakit colors` throughput and accuracy against a naive peer, same images.

What it does, in one run:

1. makes (or reuses) the demo images: ``datakit scrape --provider synthetic --params
   pipelines/demo/params.yaml --out WORK/scrape`` (21 queries, ~730 stored images: originals,
   exact and near duplicates, re-encoded, resized, cropped, brightened);
2. recovers each stored image's ground truth: the synthetic provider is pure, so
   ``synthesize(query, per_query, seed)`` is re-run per query and each hit's ``GarmentTruth``
   (the garment's main colour, one of 16 names, and the background kind: plain, gradient, noise)
   is joined on ``provider_id``;
3. times, ``--repeat`` times, interleaved in alternating order (so a busy spell on a shared
   machine hits every contender), wall time and, for the two single-process contenders, CPU time
   (all threads):

   * ``datakit``: ``datakit.colors.run`` with the demo defaults (foreground auto, k-means k=6 on
     3,000 sampled pixels at 160 px, CIEDE2000 merging and naming, basic palette), in one process
     (``workers=1``) and with one process per core (``workers=0``);
   * ``naive``: a plain per-image loop: ``PIL.Image.open(...).convert("RGB")``, scikit-learn
     ``KMeans(k=6, random_state=0)`` on *all* pixels, the largest cluster named by the nearest
     basic-palette colour in Euclidean RGB; no foreground. (scikit-learn uses its own threads,
     so the loop has every core available too);

4. prints images/s and CPU ms per image for each (medians), the ratios datakit / naive, and the quality figure: the share of
   images whose named dominant colour (``color_1``) is the rendered main colour, overall, per
   background kind, per pattern and on originals only (near-duplicates may be brightened by up
   to 30 %), for datakit, for the naive loop and, as ablations, for datakit with each foreground
   method forced and with the fashion palette (matching its ``family``). Goal: >= 0.90.

Run from the repository root with datakit's environment; the script re-runs itself with
``.venv/bin/python`` when started from another interpreter:

    .venv/bin/python bench/colors.py                       # demo images, 1 repeat, ablations
    .venv/bin/python bench/colors.py --repeat 3 --json bench-out/colors.json
    .venv/bin/python bench/colors.py --no-ablations --naive-n 200

Options: ``--work DIR`` (default ``bench-out/colors``, git-ignored), ``--params`` (default the demo's
params.yaml), ``--repeat``, ``--naive-n`` (time the naive loop on the first N images only; its
quality is then on those N), ``--no-ablations``, ``--json PATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from _common import ensure_venv  # noqa: E402

REPO = BENCH_DIR.parent
GOAL = 0.90




def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--work", type=Path, default=REPO / "bench-out" / "colors")
    p.add_argument("--params", type=Path, default=REPO / "pipelines" / "demo" / "params.yaml")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--naive-n", type=int, default=0, help="naive loop on the first N images only (0: all)")
    p.add_argument("--no-ablations", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def make_images(work: Path, params: Path) -> Path:
    """The demo scrape folder under WORK (reused when its manifest exists)."""
    out = work / "scrape"
    if not (out / "manifest.parquet").exists():
        work.mkdir(parents=True, exist_ok=True)
        (work / ".git").mkdir(exist_ok=True)  # the project root for manifest paths
        cmd = [sys.executable, "-m", "datakit", "scrape", "--provider", "synthetic", "--params", str(params),
               "--out", str(out), "--report", str(work / "reports" / "scrape.json")]
        print("making the demo images:", " ".join(cmd[2:]), flush=True)
        subprocess.run(cmd, check=True, cwd=work, stdout=subprocess.DEVNULL)
    return out


def ground_truth(params_path: Path) -> dict[str, Any]:
    """provider_id -> (ResultTruth) for every result the demo's synthetic scrape returns."""
    from datakit.params import load_params
    from datakit.scrape.providers.synthetic import synthesize
    from datakit.scrape.queries import build_queries

    params = load_params(params_path)
    p = params.scrape
    options = p.providers["synthetic"].options if "synthetic" in p.providers else None
    truths: dict[str, Any] = {}
    for q in build_queries(p):
        for hit, truth in synthesize(q, p.per_query, p.seed, options):
            truths[str(hit.provider_id)] = truth
    return truths


def naive_loop(paths: list[Path], palette: Any, k: int) -> tuple[float, list[str]]:
    """(seconds, dominant names) of the plain loop: PIL decode, KMeans on all pixels, RGB nearest."""
    import numpy as np
    from PIL import Image
    from sklearn.cluster import KMeans

    ref = palette.rgb.astype(np.float64)
    names: list[str] = []
    t0 = time.perf_counter()
    for path in paths:
        with Image.open(path) as im:
            px = np.asarray(im.convert("RGB"), dtype=np.float64).reshape(-1, 3)
        km = KMeans(n_clusters=k, random_state=0).fit(px)
        top = km.cluster_centers_[int(np.argmax(np.bincount(km.labels_, minlength=k)))]
        names.append(palette.names[int(np.argmin(((ref - top) ** 2).sum(axis=1)))])
    return time.perf_counter() - t0, names


def _timed(fn: Any) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process's threads and of finished child processes, result)."""
    import resource

    def used() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    c0, t0 = used(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, used() - c0, out


def accuracy(pred: list[Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Share of rows whose prediction is the rendered main colour: overall and by slices."""
    slices: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    confusions: Counter[tuple[str, str]] = Counter()
    for name, row in zip(pred, rows, strict=True):
        good = name == row["colour"]
        for key in ("all", f"background={row['background']}", f"pattern={row['pattern']}",
                    "originals" if row["kind"] == "original" else "copies"):
            slices[key][0] += good
            slices[key][1] += 1
        if not good:
            confusions[(row["colour"], str(name))] += 1
    out: dict[str, Any] = {k: {"hits": h, "n": n, "rate": round(h / n, 4)} for k, (h, n) in sorted(slices.items())}
    out["top_confusions"] = [f"{a} -> {b}: {c}" for (a, b), c in confusions.most_common(6)]
    return out


def _rate(acc: dict[str, Any], key: str = "all") -> str:
    s = acc.get(key)
    return f"{s['rate']:.3f} ({s['hits']}/{s['n']})" if s else "-"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    code = ensure_venv(('cv2', 'sklearn', 'datakit.colors'), __file__, argv)
    if code is not None:
        return code

    import pandas as pd

    from datakit.colors import ColorsParams, load_palette, run
    from datakit.manifest import find_project_root
    from datakit.stage import StageContext

    work = args.work.resolve()
    scrape = make_images(work, args.params.resolve())
    df = pd.read_parquet(scrape / "manifest.parquet")
    root = find_project_root(scrape)
    truths = ground_truth(args.params.resolve())
    rows = []
    for pid in df["provider_id"]:
        g = truths[pid].garment
        rows.append({"colour": g.colour_name, "background": g.background, "pattern": g.pattern, "kind": truths[pid].kind})
    print(f"{len(df)} demo images; garment colours {dict(Counter(r['colour'] for r in rows).most_common())}", flush=True)
    print(f"backgrounds {dict(Counter(r['background'] for r in rows))}; machine: {platform.processor() or platform.machine()}, "
          f"{len(os.sched_getaffinity(0))} cores, load {os.getloadavg()[0]:.1f}", flush=True)

    base = ColorsParams()
    basic = load_palette("basic")
    paths = [root / p for p in df["path"]]
    naive_n = args.naive_n or len(paths)
    counts = {"datakit_1proc": len(df), "datakit_pool": len(df), "naive": naive_n}
    wall: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    results: dict[str, Any] = {}

    def measure(label: str) -> None:
        if label == "naive":
            secs, cpu_s, out = _timed(lambda: naive_loop(paths[:naive_n], basic, base.k)[1])
        else:
            workers = 1 if label == "datakit_1proc" else 0
            secs, cpu_s, out = _timed(lambda: run(df, base.model_copy(update={"workers": workers}), StageContext(root=root), palette=basic))
        wall[label].append(secs)
        results[label] = out
        cpu_text = ""
        if label != "datakit_pool":  # the pool's workers are the forkserver's children: their CPU time is not ours to read
            cpu[label].append(cpu_s)
            cpu_text = f"{1000 * cpu_s / counts[label]:6.1f} CPU ms/img"
        print(f"  repeat {rep + 1}: {label:<14} {counts[label] / secs:7.1f} img/s  {cpu_text:<18}"
              f"  (load {os.getloadavg()[0]:.1f})", flush=True)

    order = ["datakit_1proc", "datakit_pool", "naive"]
    for rep in range(args.repeat):  # interleaved, alternating order: a busy spell hits every contender
        for label in order if rep % 2 == 0 else order[::-1]:
            measure(label)

    ips = {k: counts[k] / statistics.median(v) for k, v in wall.items()}
    cpu_ms = {k: 1000 * statistics.median(v) / counts[k] for k, v in cpu.items()}
    naive_names = results["naive"]
    manifest = results["datakit_1proc"].manifest
    pool_manifest = results["datakit_pool"].manifest
    same = manifest["colors"].astype(str).equals(pool_manifest["colors"].astype(str))
    quality = {"datakit": accuracy(list(manifest["color_1"]), rows),
               "naive": accuracy(naive_names, rows[:naive_n])}

    if not args.no_ablations:
        for fg in ("none", "border", "grabcut"):
            m = run(df, base.model_copy(update={"foreground": fg}), StageContext(root=root), palette=basic).manifest
            quality[f"datakit_foreground_{fg}"] = accuracy(list(m["color_1"]), rows)
        m = run(df, base.model_copy(update={"palette": "fashion"}), StageContext(root=root)).manifest
        quality["datakit_fashion_family"] = accuracy(list(m["color_1_family"]), rows)

    print()
    print(f"throughput on {len(df)} demo images (median of {args.repeat}; CPU time of all the process's threads):")
    for label, text in (("datakit_1proc", "datakit colors, 1 process"), ("datakit_pool", "datakit colors, process pool"),
                        ("naive", "naive (PIL + KMeans, all px)")):
        ratio = "" if label == "naive" else f"   ratio vs naive {ips[label] / ips['naive']:5.1f}x img/s"
        if label in cpu_ms and label != "naive":
            ratio += f", {cpu_ms['naive'] / cpu_ms[label]:.1f}x less CPU per image"
        cpu_text = f"{cpu_ms[label]:7.1f} CPU ms/img" if label in cpu_ms else " " * 18
        print(f"  {text:<30} {ips[label]:7.1f} img/s {cpu_text}{ratio}")
    if naive_n != len(df):
        print(f"  (naive timed on the first {naive_n} images)")
    print(f"  pool result identical to 1-process result: {same}")
    print()
    print(f"quality: named dominant colour == rendered main colour (goal >= {GOAL:.2f}):")
    for name, acc in quality.items():
        slices = "  ".join(f"{k.split('=')[-1]} {acc[k]['rate']:.3f}" for k in acc
                           if k.startswith("background=") or k in ("originals", "copies"))
        print(f"  {name:<28} {_rate(acc)}   {slices}")
    print("  datakit by pattern: " + "  ".join(f"{k.split('=')[1]} {v['rate']:.3f}" for k, v in quality["datakit"].items() if k.startswith("pattern=")))
    print(f"  datakit misses: {', '.join(quality['datakit']['top_confusions']) or 'none'}")
    ok = quality["datakit"]["all"]["rate"] >= GOAL
    print(f"\n{'PASS' if ok else 'FAIL'}: datakit {_rate(quality['datakit'])} vs goal {GOAL:.2f}; "
          f"{ips['datakit_pool'] / ips['naive']:.1f}x the naive loop's images/s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"images": len(df), "images_per_s": {k: round(v, 2) for k, v in ips.items()},
                                         "cpu_ms_per_image": {k: round(v, 2) for k, v in cpu_ms.items()},
                                         "quality": quality, "pool_equals_single": same,
                                         "cores": len(os.sched_getaffinity(0))}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
