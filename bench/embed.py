#!/usr/bin/env python3
"""Embed benchmark: `datakit embed` on the CPU against a plain timm inference loop, same model and
photos; and the linear probe through datakit's pipeline against scikit-learn on the same features.

Real photos: the Grocery Store Dataset (`../shared/data/grocery/dataset`, MIT; 5,421 smartphone
photos of 81 fine / 42 coarse classes, with train/val/test lists). Without it the script says so
and exits 2.

1. Speed (issue 12 §4). The first `--n` photos of train.txt (taken with a stride so every class
   appears), embedded with EfficientNet-Lite0 and its ImageNet weights (the `weights` extra) by:

   * ``plain``: a plain timm loop: ``PIL.Image.open(p).convert("RGB")`` -> timm's eval transform
     for the model (``timm.data.create_transform(**resolve_model_data_config(model))``: bicubic
     resize to 256, centre crop 224, mean = std = 0.5) -> ``torch.stack`` of `--batch-size`
     images -> ``model(x)`` under ``torch.no_grad()``, torch's default threads. The model is the
     same timm module datakit builds (``datakit.models.build``), built before the clock starts;
   * ``datakit``: ``datakit.embed.run`` with the defaults (device cpu), timed as a whole: building
     and verifying the weights, tracing, DataLoader workers, writing the table;

   `--repeat` runs, interleaved in alternating order (a busy spell on a shared machine hits both).
   Prints images/s (median), the ratio datakit / plain (goal >= 1.5) and how close the vectors are
   (cosine between the two per image: min and mean; goal min >= 0.999). `--ablations` adds datakit
   with `cpu_fuse: false` (eager model) and with `workers: 0` (decoding in the model's process).

2. Probe (issue 12 "done when"), through the CLI as a user runs it: the photos as a folder of
   coarse classes -> ``datakit scrape --provider folder`` -> the grocery train/val/test lists as
   the `split` column -> ``datakit embed`` -> ``datakit train --mode linear_probe`` ->
   ``datakit evaluate`` (test accuracy). The peer: scikit-learn ``StandardScaler`` +
   ``LogisticRegression`` fitted on the same train rows of the same embeddings table, scored on
   the same test rows. Prints both accuracies (and balanced accuracies); goal: within 2 points.

Run from the repository root (the script re-runs itself with ``.venv/bin/python``):

    .venv/bin/python bench/embed.py                  # speed on 400 photos, then the probe
    .venv/bin/python bench/embed.py --n 400 --repeat 3 --skip-probe
    .venv/bin/python bench/embed.py --skip-speed     # the probe only (embeds all 5,421 photos)

Options: ``--data DIR`` (the grocery `dataset` folder), ``--work DIR`` (default
``bench-out/embed``, git-ignored), ``--n``, ``--batch-size``, ``--repeat``, ``--ablations``,
``--skip-speed``, ``--skip-probe``, ``--probe-per-class N`` (cap photos per coarse class and
split, for a smoke run), ``--reuse-embeddings`` (the probe reuses the previous run's vectors:
minutes instead of a quarter of an hour on 2 cores), ``--json PATH``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from _common import REPO, ensure_venv  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "grocery" / "dataset"
SPLITS = ("train", "val", "test")


def read_list(data: Path, split: str) -> list[tuple[str, int, int]]:
    """(relative path, fine class, coarse class) rows of a grocery list file."""
    rows = []
    for line in (data / f"{split}.txt").read_text().splitlines():
        if line.strip():
            rel, fine, coarse = (part.strip() for part in line.split(","))
            rows.append((rel, int(fine), int(coarse)))
    return rows


def coarse_names(data: Path) -> dict[int, str]:
    import csv

    with open(data / "classes.csv", newline="") as f:
        return {int(r["Coarse Class ID (int)"]): r["Coarse Class Name (str)"] for r in csv.DictReader(f)}


# ---------------------------------------------------------------- speed


def sample(data: Path, n: int) -> list[tuple[str, str]]:
    """`n` (relative path, coarse label) rows of train.txt, spread over the whole list."""
    rows = read_list(data, "train")
    names = coarse_names(data)
    step = max(1, len(rows) // n)
    return [(rel, names[c]) for rel, _, c in rows[::step][:n]]


def plain_loop(model: Any, transform: Any, files: list[Path], batch_size: int) -> tuple[Any, float]:
    import torch
    from PIL import Image

    t0 = time.perf_counter()
    out = []
    with torch.no_grad():
        for b in range(0, len(files), batch_size):
            x = torch.stack([transform(Image.open(p).convert("RGB")) for p in files[b:b + batch_size]])
            out.append(model(x))
    return torch.cat(out).numpy(), time.perf_counter() - t0


def datakit_run(df: Any, data: Path, out: Path, **overrides: Any) -> tuple[Any, float, dict[str, Any]]:
    from datakit.embed import parse_embed, run
    from datakit.stage import StageContext
    from datakit.vectors import read_embeddings

    shutil.rmtree(out, ignore_errors=True)
    params = parse_embed({"device": "cpu", **overrides})
    t0 = time.perf_counter()
    rep = run(df, params, StageContext(root=data, out=out)).report
    seconds = time.perf_counter() - t0
    ids, X, _ = read_embeddings(out)
    pos = {iid: i for i, iid in enumerate(ids)}
    return X[[pos[i] for i in df["image_id"]]], seconds, rep


def cosines(a: Any, b: Any) -> Any:
    import numpy as np

    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def speed(args: argparse.Namespace) -> dict[str, Any]:
    import pandas as pd
    import timm
    import torch

    from datakit.models import DEFAULT_BACKBONE, build

    rows = sample(args.data, args.n)
    files = [args.data / rel for rel, _ in rows]
    ids = [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]
    df = pd.DataFrame({"image_id": ids, "path": [rel for rel, _ in rows], "label": [lab for _, lab in rows]})
    df = df.drop_duplicates("image_id").reset_index(drop=True)
    files = [args.data / p for p in df["path"]]
    n = len(df)

    model = build(DEFAULT_BACKBONE, pretrained=True).eval()  # the timm module, head removed
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    print(f"speed: {n} grocery photos, {DEFAULT_BACKBONE} (timm {timm.__version__}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} cores), batch {args.batch_size}")
    print(f"  plain timm eval transform: {transform}".replace("\n", " "))

    contenders = {"plain": None, "datakit": {}}
    if args.ablations:
        contenders["datakit cpu_fuse=false"] = {"cpu_fuse": False}
        contenders["datakit workers=0"] = {"workers": 0}
    times: dict[str, list[float]] = {k: [] for k in contenders}
    vectors: dict[str, Any] = {}
    for r in range(args.repeat):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for name in order:
            if contenders[name] is None:
                X, sec = plain_loop(model, transform, files, args.batch_size)
            else:
                X, sec, _ = datakit_run(df, args.data, args.work / "speed" / name.replace(" ", "_"),
                                        batch_size=args.batch_size, **contenders[name])
            times[name].append(sec)
            vectors[name] = X
            print(f"  run {r + 1}: {name:24s} {n / sec:7.1f} img/s ({sec:.1f} s)", flush=True)
    rate = {k: n / statistics.median(v) for k, v in times.items()}
    result: dict[str, Any] = {"n": n, "batch_size": args.batch_size, "images_per_s": rate,
                              "ratio": rate["datakit"] / rate["plain"]}
    print(f"\n{'contender':26s} {'img/s':>8s} {'x plain':>8s} {'cosine min':>11s} {'mean':>9s}")
    for name in contenders:
        c = cosines(vectors[name], vectors["plain"])
        result.setdefault("cosine", {})[name] = {"min": float(c.min()), "mean": float(c.mean())}
        print(f"{name:26s} {rate[name]:8.1f} {rate[name] / rate['plain']:8.2f} {c.min():11.5f} {c.mean():9.6f}")
    ok = result["ratio"] >= 1.5 and result["cosine"]["datakit"]["min"] >= 0.999
    print(f"\ndatakit embed / plain timm loop: {result['ratio']:.2f}x (goal >= 1.5), vectors cosine min "
          f"{result['cosine']['datakit']['min']:.5f} (goal >= 0.999): {'PASS' if ok else 'FAIL'}")
    result["pass"] = ok
    return result


# ---------------------------------------------------------------- probe


def _cli(*argv: str, cwd: Path) -> None:
    exe = Path(sys.executable).with_name("datakit")
    cmd = [str(exe) if exe.exists() else "datakit", *argv]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    print(f"  {' '.join(argv[:2])}: {time.monotonic() - t0:.0f} s", flush=True)


def probe(args: argparse.Namespace) -> dict[str, Any]:
    import pandas as pd
    import yaml
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.preprocessing import StandardScaler

    from datakit.manifest import write_table
    from datakit.vectors import read_embeddings

    work = args.work / "probe"
    cache = args.work / "probe-embed-cache"  # vectors of an earlier run: `datakit embed --reuse` (same photos, same ids)
    if (work / "data/embed/embeddings.parquet").exists():
        shutil.rmtree(cache, ignore_errors=True)
        shutil.move(work / "data/embed", cache)
    shutil.rmtree(work, ignore_errors=True)
    photos = work / "photos"
    names = coarse_names(args.data)
    split_of: dict[str, str] = {}
    for split in SPLITS:
        per: dict[int, int] = {}
        for rel, _, coarse in read_list(args.data, split):
            per[coarse] = per.get(coarse, 0) + 1
            if args.probe_per_class and per[coarse] > args.probe_per_class:
                continue
            name = f"{split}--{Path(rel).name}"
            dst = photos / names[coarse] / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to((args.data / rel).resolve())
            split_of[f"{names[coarse]}/{name}"] = split
    (work / "params.yaml").write_text(yaml.safe_dump({
        "scrape": {"provider": "folder", "min_per_label": 1},
        "embed": {"device": "cpu"},
        "train": {"mode": "linear_probe", "dvclive": False, "device": "cpu"},
        "evaluate": {"learning_curve": [], "thumbnails": False, "top_mistakes": 0, "device": "cpu", "cv": False},
    }))
    print(f"probe: {len(split_of)} photos in {len(names)} coarse classes -> {work}")
    t0 = time.monotonic()
    _cli("scrape", "--provider", "folder", "--source", "photos", "--per-query", "10000", "--params", "params.yaml",
         "--out", "data/scrape", "--report", "reports/scrape.json", cwd=work)
    df = pd.read_parquet(work / "data/scrape/manifest.parquet")
    df["split"] = df["provider_id"].map(split_of)
    if df["split"].isna().any():
        raise SystemExit(f"{int(df['split'].isna().sum())} scraped rows match no list entry")
    (work / "data/split").mkdir(parents=True)
    write_table(df, work / "data/split/manifest.parquet")
    reuse = ["--reuse", str(cache)] if args.reuse_embeddings and (cache / "embeddings.parquet").exists() else []
    _cli("embed", "data/split", "--params", "params.yaml", "--out", "data/embed", "--report", "reports/embed.json",
         *reuse, cwd=work)
    _cli("train", "data/embed", "--params", "params.yaml", "--out", "data/train", "--report", "reports/train.json",
         cwd=work)
    _cli("evaluate", "data/train", "--data", "data/embed", "--params", "params.yaml", "--out", "data/evaluate",
         "--report", "reports/evaluate.json", cwd=work)
    ev = json.loads((work / "reports/evaluate.json").read_text())
    seconds = time.monotonic() - t0

    ids, X, meta = read_embeddings(work / "data/embed")
    pos = {iid: i for i, iid in enumerate(ids)}
    tr, te = df[df["split"] == "train"], df[df["split"] == "test"]
    scaler = StandardScaler().fit(X[[pos[i] for i in tr["image_id"]]])
    lr = LogisticRegression(max_iter=3000).fit(scaler.transform(X[[pos[i] for i in tr["image_id"]]]), tr["label"])
    pred = lr.predict(scaler.transform(X[[pos[i] for i in te["image_id"]]]))
    sk = {"accuracy": float(accuracy_score(te["label"], pred)),
          "balanced_accuracy": float(balanced_accuracy_score(te["label"], pred))}
    dk = {"accuracy": float(ev["accuracy"]), "balanced_accuracy": float(ev["balanced_accuracy"])}
    counts = df["split"].value_counts().to_dict()
    print(f"  rows: {counts}; backbone {meta.get('backbone')} pretrained={meta.get('pretrained')}; "
          f"pipeline {seconds:.0f} s")
    print(f"\n{'test set (' + str(len(te)) + ' photos, ' + str(df['label'].nunique()) + ' classes)':40s} "
          f"{'accuracy':>9s} {'balanced':>9s}")
    print(f"{'datakit train --mode linear_probe':40s} {dk['accuracy']:9.4f} {dk['balanced_accuracy']:9.4f}")
    print(f"{'sklearn LogisticRegression (same feats)':40s} {sk['accuracy']:9.4f} {sk['balanced_accuracy']:9.4f}")
    gap = dk["accuracy"] - sk["accuracy"]
    ok = gap >= -0.02
    print(f"\ndatakit - sklearn: {100 * gap:+.1f} points (goal: within 2 points): {'PASS' if ok else 'FAIL'}")
    from datakit.console import read_report

    return {"rows": counts, "datakit": dk, "sklearn": sk, "gap_points": 100 * gap, "pass": ok,
            "seconds": seconds, "embed_report": read_report(work / "reports/embed.json")}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--work", type=Path, default=REPO / "bench-out" / "embed")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--ablations", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-probe", action="store_true")
    ap.add_argument("--probe-per-class", type=int, default=0)
    ap.add_argument("--reuse-embeddings", action="store_true",
                    help="probe: reuse the vectors of the previous run (WORK/probe-embed-cache) instead of re-embedding")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if not (args.data / "train.txt").is_file() or not (args.data / "classes.csv").is_file():
        print(f"no grocery dataset at {args.data} (expected train.txt, test.txt, classes.csv and the photos; "
              "see ../shared/data/grocery/README.md): nothing measured", file=sys.stderr)
        return 2
    code = ensure_venv(["torch", "timm", "sklearn", "datakit.embed"], __file__, argv)
    if code is not None:
        return code
    args.data, args.work = args.data.resolve(), args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    if not args.skip_speed:
        out["speed"] = speed(args)
        print()
    if not args.skip_probe:
        out["probe"] = probe(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 0 if all(v.get("pass") for v in out.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
