"""Label-noise benchmark (issue 15): wrong labels planted in real photos, found by `datakit suspects`.

Real photos: the Grocery Store Dataset (`../shared/data/grocery/dataset`, MIT; 5,421 smartphone
photos, 43 coarse classes). Through the CLI as a user runs it: the photos as a folder of coarse
classes -> ``datakit scrape --provider folder`` -> ``datakit embed`` (EfficientNet-Lite0,
pretrained; ``--reuse`` of an earlier run's vectors when there is one) -> ``datakit dedup``. Then,
for each planted rate (4 % and 10 %, seeded): that share of the kept images gets a random other
class, the noisy manifest is written as its own stage folder, and ``datakit suspects`` runs on it.

Printed per rate, against the planted truth:
- precision at N (N = number planted: the share of the top-N scores that were planted; goal >= 0.85);
- the `flagged` set's precision and recall (goal: recall >= 0.80 at precision >= 0.75);
- the per-label noise estimate against the planted rate: mean absolute error in points, the share
  of labels within 3 points, and the overall estimate (goal: within 3 points);
- the suspects stage's time after embeddings (goal <= 60 s for 5,000 images on 2 cores).

The peer: cleanlab's ``find_label_issues`` (and its confident-joint noise estimate) on the very
same out-of-fold probabilities, run in the bench's own venv (``bench-out/venv-cleanlab``: cleanlab
is AGPL, never a datakit dependency; created with pip on first use).

    .venv/bin/python bench/suspects.py                 # embeds all 5,421 photos (or reuses bench/embed.py's vectors)
    .venv/bin/python bench/suspects.py --no-peer       # without cleanlab
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from _common import REPO  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "grocery" / "dataset"
EMBED_CACHE = REPO / "bench-out" / "embed" / "probe-embed-cache"  # bench/embed.py's vectors of the same photos
PEER_VENV = REPO / "bench-out" / "venv-cleanlab"

PEER_SCRIPT = r"""
import json, sys
import numpy as np
from cleanlab.filter import find_label_issues
from cleanlab.count import estimate_joint
d = np.load(sys.argv[1])
labels, probs = d["labels"], d["probs"]
ranked = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence")
mask = find_label_issues(labels, probs)
joint = estimate_joint(labels, probs)
rows = joint.sum(1)
noise = 1 - np.diag(joint) / np.where(rows > 0, rows, 1)
import cleanlab
json.dump({"ranked": ranked.tolist(), "flagged": np.flatnonzero(mask).tolist(), "noise_by_label": noise.tolist(),
           "version": cleanlab.__version__}, sys.stdout)
"""


def _cli(*argv: str, cwd: Path) -> float:
    exe = Path(sys.executable).with_name("datakit")
    cmd = [str(exe) if exe.exists() else "datakit", *argv]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    took = time.monotonic() - t0
    print(f"  {' '.join(argv[:2])}: {took:.0f} s", flush=True)
    return took


def prepare(data: Path, work: Path) -> None:
    """photos/ (symlinks by coarse class) -> scrape -> embed -> dedup, once per work folder."""
    import yaml

    sys.path.insert(0, str(BENCH_DIR))
    from embed import coarse_names, read_list

    if (work / "data/dedup/manifest.parquet").exists():
        return
    shutil.rmtree(work, ignore_errors=True)
    names = coarse_names(data)
    for split in ("train", "val", "test"):
        for rel, _, coarse in read_list(data, split):
            dst = work / "photos" / names[coarse] / f"{split}--{Path(rel).name}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to((data / rel).resolve())
    (work / ".git").mkdir()  # the project root
    (work / "params.yaml").write_text(yaml.safe_dump({"scrape": {"provider": "folder", "min_per_label": 1},
                                                      "embed": {"device": "cpu"}}))
    _cli("scrape", "--provider", "folder", "--source", "photos", "--per-query", "10000", "--params", "params.yaml",
         "--out", "data/scrape", "--report", "reports/scrape.json", cwd=work)
    reuse = ["--reuse", str(EMBED_CACHE)] if (EMBED_CACHE / "embeddings.parquet").exists() else []
    _cli("embed", "data/scrape", "--params", "params.yaml", "--out", "data/embed", "--report", "reports/embed.json",
         *reuse, cwd=work)
    _cli("dedup", "data/embed", "--params", "params.yaml", "--out", "data/dedup", "--report", "reports/dedup.json",
         cwd=work)


def plant(work: Path, rate: float, seed: int) -> tuple[Path, dict[str, str]]:
    """A copy of the dedup manifest with `rate` of the kept images relabelled at random."""
    import numpy as np

    from datakit.manifest import read_stage_manifest, write_stage_manifest
    from datakit.stage import kept

    df, root, _ = read_stage_manifest(work / "data/dedup")
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(kept(df).to_numpy())
    chosen = rng.choice(rows, int(round(rate * len(rows))), replace=False)
    classes = sorted(set(df["label"]))
    truth: dict[str, str] = {}
    for i in chosen:
        old = df.at[i, "label"]
        df.at[i, "label"] = rng.choice([c for c in classes if c != old])
        truth[df.at[i, "image_id"]] = old
    out = work / f"data/dedup-noisy-{round(rate * 100)}"
    out.mkdir(parents=True, exist_ok=True)
    write_stage_manifest(df, out / "manifest.parquet", root)
    return out, truth


def figures(ids: list[str], labels: list[str], order: list[int], flagged: set[int], noise: dict[str, float],
            truth: dict[str, str]) -> dict[str, Any]:
    import numpy as np

    planted = np.array([i in truth for i in ids])
    n_planted = int(planted.sum())
    top = order[:n_planted]
    flagged_mask = np.zeros(len(ids), dtype=bool)
    flagged_mask[list(flagged)] = True
    errs = []
    for label in sorted(set(labels)):
        m = np.array([lab == label for lab in labels])
        true_rate = float(planted[m].mean())
        errs.append(abs(noise.get(label, 0.0) - true_rate))
    counts = {lab: labels.count(lab) for lab in set(labels)}
    overall = sum(noise.get(lab, 0.0) * c for lab, c in counts.items()) / len(labels)
    return {
        "planted": n_planted,
        "precision_at_n": round(float(planted[top].mean()), 4),
        "flagged": int(flagged_mask.sum()),
        "flagged_precision": round(float(planted[flagged_mask].mean()) if flagged_mask.any() else 0.0, 4),
        "flagged_recall": round(float(flagged_mask[planted].mean()), 4),
        "noise_mae_points": round(100 * float(np.mean(errs)), 2),
        "labels_within_3_points": round(float(np.mean(np.array(errs) <= 0.03)), 3),
        "overall_estimate": round(float(overall), 4),
        "overall_planted": round(n_planted / len(ids), 4),
    }


def peer(ids: list[str], labels: list[str], probs: Any, classes: list[str], truth: dict[str, str], work: Path) -> dict[str, Any] | None:
    import numpy as np

    py = PEER_VENV / "bin" / "python"
    if not py.exists():
        print(f"creating {PEER_VENV} (cleanlab, AGPL: the bench's own venv only) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "cleanlab"], check=True)
    y = np.array([classes.index(lab) for lab in labels])
    npz = work / "peer-input.npz"
    np.savez(npz, labels=y, probs=probs)
    t0 = time.monotonic()
    proc = subprocess.run([str(py), "-c", PEER_SCRIPT, str(npz)], capture_output=True, text=True)
    if proc.returncode != 0:
        print("cleanlab failed:", proc.stderr[-2000:])
        return None
    took = time.monotonic() - t0
    out = json.loads(proc.stdout)
    noise = {c: float(out["noise_by_label"][k]) for k, c in enumerate(classes)}
    ranked = list(out["ranked"])
    rest = [i for i in np.argsort(probs[np.arange(len(y)), y], kind="stable") if i not in set(ranked)]
    res = figures(ids, labels, ranked + rest, set(out["flagged"]), noise, truth)
    res["seconds"] = round(took, 2)
    res["version"] = out["version"]
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--work", type=Path, default=REPO / "bench-out" / "suspects")
    ap.add_argument("--rates", type=float, nargs="+", default=[0.04, 0.10])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if not args.data.exists():
        raise SystemExit(f"no grocery photos at {args.data}")
    import numpy as np
    import pandas as pd

    from datakit.console import read_report
    from datakit.curation import scoring
    from datakit.curation.suspects import SuspectsParams
    from datakit.manifest import read_stage_manifest
    from datakit.stage import kept, origins
    from datakit.vectors import lookup, read_embeddings

    work = args.work.resolve()
    prepare(args.data, work)
    results: dict[str, Any] = {}
    for rate in args.rates:
        noisy, truth = plant(work, rate, args.seed)
        name = noisy.name.replace("dedup-noisy", "suspects")
        wall = _cli("suspects", str(noisy.relative_to(work)), "--embeddings", "data/embed", "--params", "params.yaml",
                    "--out", f"data/{name}", "--report", f"reports/{name}.json", cwd=work)
        rep = read_report(work / f"reports/{name}.json")  # with its run facts (seconds)
        table = pd.read_parquet(work / f"data/{name}/suspects.parquet")
        ids = table["image_id"].tolist()
        labels = table["label"].tolist()
        order = list(range(len(ids)))  # suspects.parquet is sorted by score
        flagged = set(np.flatnonzero(table["flagged"].to_numpy()))
        noise = {lab: v["estimated_noise"] for lab, v in rep["noise_by_label"].items()}
        ours = figures(ids, labels, order, flagged, noise, truth)
        ours["seconds_stage"] = rep["seconds"]
        ours["seconds_cli"] = round(wall, 1)
        print(f"\nplanted {rate:.0%} ({ours['planted']} of {len(ids)} scored images)")
        row = "{:24s} {:>8} {:>8} {:>9} {:>8} {:>10} {:>9} {:>9}"
        print(row.format("", "P@N", "flagged", "precision", "recall", "noise MAE", "within 3", "overall"))
        print(row.format("datakit suspects", ours["precision_at_n"], ours["flagged"], ours["flagged_precision"],
                         ours["flagged_recall"], f"{ours['noise_mae_points']} pt", ours["labels_within_3_points"],
                         f"{ours['overall_estimate']:.3f}"))
        result = {"datakit": ours}
        if not args.no_peer:
            # the very same out-of-fold probabilities, recomputed by the library for the peer
            df, _, _ = read_stage_manifest(noisy)
            rows = df[kept(df) & origins(df).eq("original")]
            vid, X, _ = read_embeddings(work / "data/embed")
            vec, found = lookup(vid, X, rows["image_id"])
            rows, vec = rows[found], vec[found]
            classes = sorted(set(rows["label"]))
            y = np.array([classes.index(lab) for lab in rows["label"]])
            res = scoring.score(vec, y, len(classes), pd.factorize(rows["dup_group"])[0], SuspectsParams().settings())
            theirs = peer(rows["image_id"].tolist(), rows["label"].tolist(), res.probs, classes, truth, work)
            if theirs:
                result["cleanlab"] = theirs
                print(row.format(f"cleanlab {theirs['version']}", theirs["precision_at_n"], theirs["flagged"],
                                 theirs["flagged_precision"], theirs["flagged_recall"], f"{theirs['noise_mae_points']} pt",
                                 theirs["labels_within_3_points"], f"{theirs['overall_estimate']:.3f}"))
        ok = (ours["precision_at_n"] >= 0.85 and ours["flagged_recall"] >= 0.80 and ours["flagged_precision"] >= 0.75
              and ours["seconds_stage"] <= 60)
        print(f"planted {ours['overall_planted']:.3f}, estimated {ours['overall_estimate']:.3f}; suspects stage "
              f"{ours['seconds_stage']} s ({ours['seconds_cli']} s with the CLI start): {'PASS' if ok else 'FAIL'} "
              f"(goals P@N >= 0.85, recall >= 0.80 at precision >= 0.75, <= 60 s)")
        results[f"{rate:.2f}"] = result
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
