#!/usr/bin/env python3
"""Augment benchmark: `datakit.augment.run` against a plain albumentations loop, same work.

What it does, in one run:

1. makes (or reuses) a corpus of N distinct photo-like 400x300 JPEGs (bench/_corpus.py, the
   corpus bench/scrape.py uses, in ``WORK/corpus``), stores them in a datakit ImageStore under
   ``WORK/augment/data/raw`` and writes a split manifest for them (every row ``split=train``,
   ``keep=True``, labels ``class0``..``class9``);
2. times, ``--repeat`` times and interleaved (the order alternates between repeats):

   * ``datakit``: ``datakit.augment.run(manifest, params, StageContext(root=..., out=...))``
     with the params of ``--preset`` / ``--variants`` (default: preset ``fashion``, 2 variants,
     JPEG quality 92): decode with datakit's checks, the seeded pipeline, the applied
     parameters as JSON, JPEG encode, content-addressed atomic store, the new manifest rows;
   * ``plain``: for each stored image ``PIL.Image.open`` + ``np.asarray`` (RGB), then per
     variant the same pipeline object (``datakit.augment.build_pipeline(params)``) seeded the
     same way, ``Image.fromarray(...).save(JPEG, quality)`` and a plain file write. The seeds
     are the same so that both sample the same transforms and do the same pixel work; the
     script checks that the two produce byte-identical JPEGs (on the first 25 images);

3. prints images/s (source images), variants/s and CPU ms per image (medians of the repeats),
   the ratio datakit / plain of images/s (goal >= 0.9: datakit's own overhead at most 10%) and
   the same ratio by CPU time, which other processes on a shared machine disturb less. Runs
   during which other processes used the CPU get a note (from /proc/stat).

Both write to ``WORK/augment/`` (disk); outputs are deleted between runs and ``os.sync()``
runs before each timed run so no run pays for another's writes.

Run from the repository root with datakit's environment (``make venv``); the script re-runs
itself with ``.venv/bin/python`` when started from another interpreter:

    .venv/bin/python bench/augment.py                    # N = 2,000, 3 interleaved repeats
    .venv/bin/python bench/augment.py --n 300 --repeat 1 # smoke run
    .venv/bin/python bench/augment.py --preset aerial --variants 4 --json bench-out/augment.json
    .venv/bin/python bench/augment.py --profile          # + cProfile of one datakit run

Options: ``--n``, ``--variants``, ``--preset``, ``--quality``, ``--repeat``, ``--work DIR``
(default ``bench-out/``, git-ignored), ``--profile`` (cProfile of one more datakit run, top 25
functions by own time), ``--json PATH``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from _common import ensure_venv  # noqa: E402

REPO = BENCH_DIR.parent
GOAL = 0.9
CHECK_IMAGES = 25




def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=2000, help="source images (default 2000)")
    p.add_argument("--variants", type=int, default=2)
    p.add_argument("--preset", default="fashion")
    p.add_argument("--quality", type=int, default=92)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--work", type=Path, default=REPO / "bench-out")
    p.add_argument("--profile", action="store_true", help="cProfile one more datakit run")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def build_inputs(work: Path, n: int) -> tuple[Path, Any]:
    """The corpus stored in an ImageStore under WORK/augment, and its split manifest."""
    import pandas as pd

    sys.path.insert(0, str(BENCH_DIR))
    from _corpus import ensure_corpus, label_of

    from datakit.images import ImageStore
    from datakit.manifest import relpath

    paths = ensure_corpus(work / "corpus", n, log=lambda m: print(m, flush=True))
    root = work / "augment"
    store = ImageStore(root / "data" / "raw")
    rows = []
    for i, path in enumerate(paths):
        data = path.read_bytes()
        image_id, rel = store.put(data, "jpg")
        rows.append({
            "image_id": image_id, "path": relpath(root, store.folder / rel), "label": label_of(i),
            "width": 400, "height": 300, "format": "JPEG", "bytes": len(data),
            "source_url": f"https://example.org/{i}.jpg", "dup_group": f"g{i}", "split_group": f"g{i}",
            "keep": True, "split": "train",
        })
    return root, pd.DataFrame(rows)


def run_datakit(root: Path, df: Any, params: Any) -> tuple[float, float, float, Any]:
    """(wall seconds, CPU seconds, other processes' CPU seconds, result manifest) of one `augment.run`."""
    from datakit.augment import run
    from datakit.stage import StageContext

    out = root / "data" / "aug"
    shutil.rmtree(out, ignore_errors=True)
    os.sync()
    b0, t0, c0 = _machine_busy(), time.perf_counter(), time.process_time()
    result = run(df, params, StageContext(root=root, out=out)).manifest
    wall, used = time.perf_counter() - t0, time.process_time() - c0
    return wall, used, _machine_busy() - b0 - used, result


def run_plain(root: Path, df: Any, params: Any, pipeline: Any) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, other processes' CPU seconds) of the plain loop."""
    import numpy as np
    from PIL import Image

    from datakit.augment import variant_seed

    out = root / "plain"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    os.sync()
    pairs = list(zip(df["image_id"].astype(str), df["path"].astype(str), strict=True))
    b0, t0, c0 = _machine_busy(), time.perf_counter(), time.process_time()
    for image_id, rel in pairs:
        with Image.open(root / rel) as im:
            pixels = np.asarray(im.convert("RGB"))
        for k in range(params.variants):
            seed = variant_seed(params.seed, image_id, k)
            pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
            result = pipeline(image=pixels)["image"]
            buf = io.BytesIO()
            Image.fromarray(result).save(buf, "JPEG", quality=params.quality)
            (out / f"{image_id}-{k}.jpg").write_bytes(buf.getvalue())
    wall, used = time.perf_counter() - t0, time.process_time() - c0
    return wall, used, _machine_busy() - b0 - used


def same_bytes(root: Path, result: Any, variants: int) -> tuple[int, int]:
    """Variants of the first CHECK_IMAGES parents: datakit's stored bytes == the plain loop's file."""
    import json as _json

    aug = result[result["origin"] == "augmented"]
    by_key = {}
    for pids, made, path in zip(aug["parent_ids"], aug["augment_params"], aug["path"], strict=True):
        by_key[(str(pids[0]), int(_json.loads(made)["variant"]))] = root / path
    originals = result[result["origin"] == "original"]["image_id"].astype(str).tolist()[:CHECK_IMAGES]
    ok = total = 0
    for pid in originals:
        for k in range(variants):
            total += 1
            mine = by_key.get((pid, k))
            plain = root / "plain" / f"{pid}-{k}.jpg"
            ok += int(mine is not None and plain.exists() and mine.read_bytes() == plain.read_bytes())
    return ok, total


def _machine_busy() -> float:
    """Busy CPU seconds of the whole machine so far (/proc/stat; 0 where unavailable)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(x) for x in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    code = ensure_venv(('albumentations', 'numpy', 'datakit.augment'), __file__, argv)
    if code is not None:
        return code
    import albumentations
    import cv2

    from datakit.augment import build_pipeline, parse_augment

    params = parse_augment({"preset": args.preset, "variants": args.variants, "quality": args.quality})
    root, df = build_inputs(args.work, args.n)
    pipeline = build_pipeline(params)
    print(f"# augment benchmark: N = {args.n:,} JPEGs 400x300, preset {params.preset}, {params.variants} variant(s), "
          f"JPEG q{params.quality}, {args.repeat} interleaved run(s), median; {os.cpu_count()} CPU(s), "
          f"albumentations {albumentations.__version__}, OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads), "
          f"Python {platform.python_version()}")

    # imports, first-call costs and the page cache out of the timing
    warm = df.head(20)
    run_datakit(root, warm, params)
    run_plain(root, warm, params, pipeline)
    for rel in df["path"]:
        (root / rel).read_bytes()

    times: dict[str, list[float]] = {"plain": [], "datakit": []}
    cpu: dict[str, list[float]] = {"plain": [], "datakit": []}
    check: tuple[int, int] | None = None
    result = None
    for r in range(args.repeat):
        order = ("plain", "datakit") if r % 2 == 0 else ("datakit", "plain")
        for who in order:
            if who == "plain":
                wall, used, others = run_plain(root, df, params, pipeline)
            else:
                wall, used, others, result = run_datakit(root, df, params)
            times[who].append(wall)
            cpu[who].append(used)
            noisy = f"  [other processes used {others:.1f} CPU-s meanwhile: noisy]" if others > 0.1 * wall else ""
            print(f"  run {r + 1} {who:<8} {wall:7.2f} s wall, {used:7.2f} s CPU{noisy}", flush=True)
        if check is None and result is not None:
            check = same_bytes(root, result, params.variants)
    made = int((result["origin"] == "augmented").sum()) if result is not None else 0

    print()
    header = f"{'client':<10} {'images/s':>9} {'variants/s':>11} {'median s':>9} {'CPU ms/img':>11}   runs (wall s)"
    print(header)
    print("-" * len(header))
    rates, cpu_ms = {}, {}
    for who in ("plain", "datakit"):
        med = statistics.median(times[who])
        rates[who] = args.n / med
        cpu_ms[who] = statistics.median(cpu[who]) / args.n * 1000
        print(f"{who:<10} {args.n / med:>9.1f} {args.n * params.variants / med:>11.1f} {med:>9.2f} "
              f"{cpu_ms[who]:>11.2f}   " + " ".join(f"{t:.2f}" for t in times[who]))
    ratio = rates["datakit"] / rates["plain"]
    cpu_ratio = cpu_ms["plain"] / cpu_ms["datakit"]
    print()
    print(f"datakit / plain albumentations loop   {ratio:.3f}x images/s   "
          f"({'meets' if ratio >= GOAL else 'BELOW'} goal >= {GOAL}; datakit overhead {(1 / ratio - 1) * 100:+.1f}%)")
    print(f"                        by CPU time   {cpu_ratio:.3f}x          "
          f"(datakit overhead {(1 / cpu_ratio - 1) * 100:+.1f}% CPU; less sensitive to other processes)")
    if check is not None:
        dup = args.n * params.variants - made
        print(f"same work: {check[0]}/{check[1]} variants byte-identical between the two; datakit stored "
              f"{made:,} of {args.n * params.variants:,} variants"
              + (f" ({dup} reported as duplicate_bytes: a variant equal to another)" if dup else ""))

    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        run_datakit(root, df, params)
        prof.disable()
        print("\ncProfile of one datakit run (own time, top 25):")
        pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(25)

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "n": args.n, "preset": params.preset, "variants": params.variants, "quality": params.quality,
            "times": times, "cpu_s": cpu, "images_per_s": rates, "ratio": ratio, "cpu_ratio": cpu_ratio,
            "same_bytes": check,
        }, indent=2))
    ok = check is not None and check[0] == check[1]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
