#!/usr/bin/env python3
"""Dedup on real photos with planted edits: what a user gets, measured through the CLI.

Originals are real camera photos from ``../shared/data/grocery`` (MIT; 5,421 smartphone shots of
fruit, vegetables and cartons, with real look-alikes: several shots of the same pile or carton).
Each chosen original gets one edited copy; the edits are the ones web image search really serves:

| edit | what |
|---|---|
| ``crop_sym`` | re-crop, 2-8 % off each side (4-16 % per axis), JPEG q30-90 |
| ``crop_one`` | re-crop, 4-16 % off one side per axis, JPEG q30-90 |
| ``resize`` | 50-90 % (bilinear, bicubic or Lanczos), JPEG q75-95 |
| ``jpeg`` | recompressed at q30-90 |
| ``bright`` | brightness x0.8-0.92 or x1.08-1.2, JPEG q75-95 |
| ``text`` | a caption or price tag drawn on, JPEG q75-95 |
| ``png`` | the same pixels as PNG |
| ``stack`` | two of the above (a crop with one other edit, or two non-crop edits) |

One copy in five is filed under another label (a scraped copy under a wrong query: a label
conflict). The corpus is a ``<label>/<file>`` folder that ``datakit scrape --provider folder``
reads, so every contender sees exactly what a user's run sees.

Printed, per contender: recall per edit (original and copy in one group), pair precision
(counting every pair inside a predicted group: a pair is right only when both come from one
original), planted label conflicts flagged, and cross-split leaks after ``datakit split``
(original/copy pairs that straddle train/val/test). Then ``datakit audit`` on a folder of
SPLIT/LABEL images with planted cross-split copies: the share flagged and the false flags.

Contenders: datakit at its defaults (scrape -> embed -> dedup, the flagship order), datakit
dhash-only (``dedup.signals: [dhash]``), and plain ``imagehash.dhash(img, 16)`` with union-find at
radius 28 (the old default) and 10. imagededup (CNN and dhash) is not run: its CNN downloads
weights at run time, which this machine cannot, and its dhash is compared in dedup_quality.py.

    .venv/bin/python bench/dedup_real.py                    # 1,200 originals, ~10-15 min on 2 cores
    .venv/bin/python bench/dedup_real.py --n 300 --contenders default
    .venv/bin/python bench/dedup_real.py --json bench-out/dedup_real.json
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _common import ensure_venv  # noqa: E402

GROCERY = ROOT.parent / "shared" / "data" / "grocery" / "dataset"
CORPUS_VERSION = 3
EDITS = ("crop_sym", "crop_one", "resize", "jpeg", "bright", "text", "png", "stack")
SAME_SCENE = {frozenset({"test-Royal-Gala_052", "test-Royal-Gala_062"})}
"""Pairs of originals that are one scene shot twice (the same pile, the camera moved a little):
looked at by eye. A leak for any split; counted wrong in the strict pair precision and right in
the second figure."""
TAGS = ("SALE -30%", "(c) shop.example", "NEW IN", "www.store.example", "Only 9.99", "2 for 5")


# ---------------------------------------------------------------------------------------------
# the corpus


def _originals(n: int, seed: int) -> list[tuple[Path, str]]:
    """n photos (path, coarse label), drawn at random over the dataset's three lists."""
    rows: list[tuple[Path, str]] = []
    for name in ("train.txt", "val.txt", "test.txt"):
        for line in (GROCERY / name).read_text().splitlines():
            rel = line.split(",")[0].strip()
            if not rel:
                continue
            parts = Path(rel).parts  # split/Fruit|Vegetables|Packages/Coarse/[Fine/]file
            rows.append((GROCERY / rel, parts[2]))
    random.Random(seed).shuffle(rows)
    return rows[:n]


def _jpeg(im, q: int) -> bytes:  # noqa: ANN001
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=q)
    return buf.getvalue()


def _crop_sym(im, r: random.Random):  # noqa: ANN001, ANN202
    w, h = im.size
    fx, fy = r.uniform(0.02, 0.08), r.uniform(0.02, 0.08)
    return im.crop((round(w * fx), round(h * fy), w - round(w * fx), h - round(h * fy)))


def _crop_one(im, r: random.Random):  # noqa: ANN001, ANN202
    w, h = im.size
    cx, cy = round(w * r.uniform(0.04, 0.16)), round(h * r.uniform(0.04, 0.16))
    x0, x1 = (cx, w) if r.random() < 0.5 else (0, w - cx)
    y0, y1 = (cy, h) if r.random() < 0.5 else (0, h - cy)
    return im.crop((x0, y0, x1, y1))


def _resize(im, r: random.Random):  # noqa: ANN001, ANN202
    from PIL import Image

    s = r.uniform(0.5, 0.9)
    method = r.choice([Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS])
    return im.resize((max(16, round(im.width * s)), max(16, round(im.height * s))), method)


def _bright(im, r: random.Random):  # noqa: ANN001, ANN202
    from PIL import ImageEnhance

    return ImageEnhance.Brightness(im).enhance(r.uniform(0.8, 0.92) if r.random() < 0.5 else r.uniform(1.08, 1.2))


def _text(im, r: random.Random):  # noqa: ANN001, ANN202
    from PIL import ImageDraw, ImageFont

    out = im.copy()
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=max(12, round(out.height * r.uniform(0.05, 0.09))))
    tag = r.choice(TAGS)
    x0, y0, x1, y1 = draw.textbbox((0, 0), tag, font=font)
    x = r.uniform(0.03, 0.97) * max(1, out.width - (x1 - x0))
    y = r.uniform(0.03, 0.97) * max(1, out.height - (y1 - y0))
    if r.random() < 0.4:  # a price tag: a filled box behind the text
        pad = 4
        draw.rectangle((x - pad, y - pad, x + x1 - x0 + pad, y + y1 + pad), fill=r.choice([(250, 220, 0), (255, 255, 255)]))
        fill = (0, 0, 0)
    else:
        fill = r.choice([(255, 255, 255), (0, 0, 0), (220, 20, 20)])
    draw.text((x, y), tag, fill=fill, font=font)
    return out


PIXEL_EDITS = {"crop_sym": _crop_sym, "crop_one": _crop_one, "resize": _resize, "bright": _bright, "text": _text}


def _edit(data: bytes, edit: str, r: random.Random) -> tuple[bytes, str, str]:
    """(bytes, extension, what was done) of one edited copy of an original's bytes."""
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    im.load()
    im = im.convert("RGB")
    if edit == "jpeg":
        q = r.randint(30, 90)
        return _jpeg(im, q), ".jpg", f"jpeg q{q}"
    if edit == "png":
        buf = io.BytesIO()
        im.save(buf, "PNG", compress_level=1)
        return buf.getvalue(), ".png", "png"
    steps = [edit]
    if edit == "stack":
        steps = [r.choice(["crop_sym", "crop_one"]), r.choice(["resize", "bright", "text", "jpeg"])] if r.random() < 0.6 \
            else r.sample(["resize", "bright", "text", "jpeg"], 2)
    for step in steps:
        if step != "jpeg":
            im = PIXEL_EDITS[step](im, r)
    crop = any(s.startswith("crop") for s in steps)
    q = r.randint(30, 90) if crop or "jpeg" in steps else r.randint(75, 95)
    return _jpeg(im, q), ".jpg", "+".join(steps) + f" q{q}"


def build_corpus(work: Path, n: int, copy_frac: float, seed: int) -> dict:
    """WORK/corpus/<label>/<file> and WORK/truth.json (reused while the arguments are the same)."""
    key = {"version": CORPUS_VERSION, "n": n, "copy_frac": copy_frac, "seed": seed}
    truth_path = work / "truth.json"
    if truth_path.exists():
        old = json.loads(truth_path.read_text())
        if old.get("key") == key:
            return old
    corpus = work / "corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    originals = _originals(n, seed)
    labels = sorted({lab for _, lab in originals})
    r = random.Random(seed + 1)
    files: dict[str, dict] = {}  # provider_id (label/file) -> truth
    n_copies = round(n * copy_frac)
    for k, (src, label) in enumerate(originals):
        fam = f"{src.relative_to(GROCERY).parts[0]}-{src.stem}"  # file names repeat across train/val/test
        data = src.read_bytes()
        rel = f"{label}/{fam}{src.suffix}"
        (corpus / label).mkdir(parents=True, exist_ok=True)
        (corpus / rel).write_bytes(data)
        files[rel] = {"family": fam, "edit": "original", "label": label, "true_label": label}
        if k >= n_copies:
            continue
        edit = EDITS[k % len(EDITS)]
        blob, ext, how = _edit(data, edit, r)
        wrong = r.random() < 0.2
        copy_label = r.choice([lab for lab in labels if lab != label]) if wrong else label
        crel = f"{copy_label}/{fam}__{edit}{ext}"
        (corpus / copy_label).mkdir(parents=True, exist_ok=True)
        (corpus / crel).write_bytes(blob)
        files[crel] = {"family": fam, "edit": edit, "how": how, "label": copy_label, "true_label": label,
                       "conflict": wrong}
    out = {"key": key, "files": files}
    truth_path.write_text(json.dumps(out))
    return out


# ---------------------------------------------------------------------------------------------
# scoring


def score(groups: dict[str, str], truth: dict, *, conflict_flag: dict[str, bool] | None = None,
          split_of: dict[str, str] | None = None) -> dict:
    """groups: provider_id -> group id. Recall per edit, pair precision, conflicts, leaks."""
    files = truth["files"]
    orig_of = {t["family"]: rel for rel, t in files.items() if t["edit"] == "original"}
    per_edit: dict[str, list[bool]] = defaultdict(list)
    for rel, t in files.items():
        if t["edit"] == "original":
            continue
        o = orig_of[t["family"]]
        per_edit[t["edit"]].append(rel in groups and o in groups and groups[rel] == groups[o])
    members: dict[str, list[str]] = defaultdict(list)
    for rel, g in groups.items():
        members[g].append(rel)
    right = wrong = same_scene = 0
    wrong_examples = []
    for rels in members.values():
        for i in range(len(rels)):
            for j in range(i + 1, len(rels)):
                if files[rels[i]]["family"] == files[rels[j]]["family"]:
                    right += 1
                else:
                    wrong += 1
                    same_scene += frozenset({files[rels[i]]["family"], files[rels[j]]["family"]}) in SAME_SCENE
                    if len(wrong_examples) < 8:
                        wrong_examples.append((rels[i], rels[j]))
    out = {
        "recall": {e: round(sum(v) / len(v), 3) for e, v in sorted(per_edit.items())},
        "recall_n": {e: len(v) for e, v in sorted(per_edit.items())},
        "pairs_right": right,
        "pairs_wrong": wrong,
        "pair_precision": round(right / (right + wrong), 4) if right + wrong else None,
        "pairs_same_scene": same_scene,
        "pair_precision_same_scene_right": round((right + same_scene) / (right + wrong), 4) if right + wrong else None,
        "wrong_examples": wrong_examples,
    }
    crops = [x for e in ("crop_sym", "crop_one") for x in per_edit[e]]
    out["recall_crops"] = round(sum(crops) / len(crops), 3) if crops else None
    non = [x for e, v in per_edit.items() if not e.startswith("crop") for x in v]
    out["recall_non_crop"] = round(sum(non) / len(non), 3) if non else None
    if conflict_flag is not None:
        planted = [rel for rel, t in files.items() if t.get("conflict")]
        out["conflicts_flagged"] = round(sum(bool(conflict_flag.get(r)) for r in planted) / len(planted), 3) if planted else None
    if split_of is not None:
        leaks = [rel for rel, t in files.items() if t["edit"] != "original" and rel in split_of
                 and orig_of[t["family"]] in split_of and split_of[rel] != split_of[orig_of[t["family"]]]]
        out["cross_split_leaks"] = len(leaks)
        out["leak_examples"] = leaks[:8]
    return out


# ---------------------------------------------------------------------------------------------
# contenders


def _run(cmd: list[str], cwd: Path, log: Path) -> float:
    t0 = time.perf_counter()
    with log.open("a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        res = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env={**__import__("os").environ,
                             "DVC_NO_ANALYTICS": "1", "COLUMNS": "200"})
    if res.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}); see {log}")
    return time.perf_counter() - t0


def _provider_ids(df) -> list[str]:  # noqa: ANN001
    return df["provider_id"].astype(str).tolist()


def run_datakit(work: Path, name: str, dedup_params: dict, truth: dict, dk: str) -> dict:
    import pandas as pd
    import yaml

    proj = work / f"proj-{name}"
    proj.mkdir(parents=True, exist_ok=True)
    (proj / "params.yaml").write_text(yaml.safe_dump({"dedup": dedup_params} if dedup_params else {}))
    log = proj / "run.log"
    log.write_text("")
    times: dict[str, float] = {}
    corpus = str((work / "corpus").resolve())
    shared = work / "shared"  # scrape and embed are the same for every contender: done once
    shared.mkdir(exist_ok=True)
    if not (shared / "scrape" / "manifest.parquet").exists():
        times["scrape"] = _run([dk, "scrape", "--provider", "folder", "--source", corpus, "--out", "scrape",
                                "--report", "reports/scrape.json"], shared, shared / "run.log")
    uses_embed = "embedding" in dedup_params.get("signals", ["dhash", "embedding"])
    if uses_embed and not (shared / "embed" / "embeddings.parquet").exists():
        times["embed"] = _run([dk, "embed", "scrape", "--out", "embed", "--report", "reports/embed.json"],
                              shared, shared / "run.log")
    src = (shared / ("embed" if uses_embed else "scrape")).resolve()
    for sub in ("scrape", "embed"):
        link = proj / sub
        if not link.exists() and (shared / sub).exists():
            link.symlink_to((shared / sub).resolve())
    times["dedup"] = _run([dk, "dedup", str(src.name), "--out", "dedup"], proj, log)
    times["split"] = _run([dk, "split", "dedup", "--out", "split"], proj, log)
    df = pd.read_parquet(proj / "split" / "manifest.parquet")
    pid = _provider_ids(df)
    groups = dict(zip(pid, df["dup_group"].astype(str), strict=True))
    conflict = dict(zip(pid, df["label_conflict"].fillna(False).astype(bool), strict=True))
    split_of = {p: s for p, s in zip(pid, df["split"], strict=True) if isinstance(s, str)}
    out = score(groups, truth, conflict_flag=conflict, split_of=split_of)
    rep = json.loads((proj / "reports" / "dedup.json").read_text())
    out["seconds"] = {k: round(v, 1) for k, v in times.items()}
    out["dedup_report"] = {k: rep.get(k) for k in ("images", "kept", "groups", "largest_group", "pairs")}
    return out


def run_imagehash(work: Path, truth: dict, radius: int) -> dict:
    import imagehash
    import numpy as np
    from PIL import Image

    cache = work / "imagehash16.json"
    if cache.exists():
        hashes = json.loads(cache.read_text())
    else:
        hashes = {rel: str(imagehash.dhash(Image.open(work / "corpus" / rel), hash_size=16)) for rel in truth["files"]}
        cache.write_text(json.dumps(hashes))
    rels = sorted(hashes)
    bits = np.array([[int(c, 16) for c in hashes[r]] for r in rels], dtype=np.uint8)
    bits = np.unpackbits(bits[:, :, None], axis=2)[:, :, 4:].reshape(len(rels), -1)
    parent = list(range(len(rels)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    b = bits.astype(np.int16)
    for i in range(len(rels)):
        d = np.abs(b[i + 1:] - b[i]).sum(axis=1)
        for j in np.nonzero(d <= radius)[0]:
            parent[find(i)] = find(i + 1 + int(j))
    groups = {r: str(find(k)) for k, r in enumerate(rels)}
    return score(groups, truth)


# ---------------------------------------------------------------------------------------------
# audit on a folder


def audit_folder(work: Path, truth: dict, dk: str, seed: int) -> dict:
    """SPLIT/LABEL folders: originals in train, their copies in val/test, unrelated photos beside."""
    files = truth["files"]
    folder = work / "audit-folder"
    shutil.rmtree(folder, ignore_errors=True)
    r = random.Random(seed + 7)
    orig_of = {t["family"]: rel for rel, t in files.items() if t["edit"] == "original"}
    copies = [rel for rel, t in files.items() if t["edit"] != "original"]
    planted = set()
    placed: dict[str, str] = {}
    for rel in copies:
        o = orig_of[files[rel]["family"]]
        other = r.choice(["val", "test"])
        placed[o], placed[rel] = "train", other
        planted.add(files[rel]["family"])
    for rel in files:
        if rel not in placed:
            placed[rel] = r.choice(["train", "train", "val", "test"])
    for rel, split in placed.items():
        dst = folder / split / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work / "corpus" / rel, dst)
    proj = work / "proj-audit"
    proj.mkdir(exist_ok=True)
    log = proj / "run.log"
    log.write_text("")
    secs = _run([dk, "audit", str(folder.resolve()), "--max-leaks", "1000000", "--report", "reports/audit.json"], proj, log)
    rep = json.loads((proj / "reports" / "audit.json").read_text())
    flagged_fams: set[str] = set()
    false_flags = 0
    for p in rep["leak_pairs"]:
        a, b = Path(str(p["path_a"])), Path(str(p["path_b"]))
        fa, fb = (x.stem.split("__")[0] for x in (a, b))
        if fa == fb:
            flagged_fams.add(fa)
        else:
            false_flags += 1
    return {"planted": len(planted), "flagged": round(len(flagged_fams & planted) / len(planted), 3) if planted else None,
            "false_flags": false_flags, "seconds": round(secs, 1)}


# ---------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1200, help="originals drawn from the grocery photos")
    ap.add_argument("--copy-frac", type=float, default=0.6, help="share of originals that get an edited copy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=ROOT / "bench-out" / "dedup_real")
    ap.add_argument("--contenders", default="default,dhash,imagehash", help="default, dhash, imagehash (comma-separated)")
    ap.add_argument("--no-audit", action="store_true", help="skip the audit-on-a-folder check")
    ap.add_argument("--datakit", default=str(ROOT / ".venv" / "bin" / "datakit"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if not GROCERY.is_dir():
        print(f"real photos not found at {GROCERY}: this benchmark needs ../shared/data/grocery", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    truth = build_corpus(args.work, args.n, args.copy_frac, args.seed)
    n_files = len(truth["files"])
    print(f"corpus: {args.n} real photos + {n_files - args.n} edited copies in {args.work / 'corpus'}", flush=True)
    results: dict[str, dict] = {}
    wanted = [c.strip() for c in args.contenders.split(",") if c.strip()]
    for name in wanted:
        t0 = time.perf_counter()
        if name == "default":
            results["datakit defaults"] = run_datakit(args.work, "default", {}, truth, args.datakit)
        elif name == "dhash":
            results["datakit dhash-only"] = run_datakit(args.work, "dhash", {"signals": ["dhash"]}, truth, args.datakit)
        elif name == "imagehash":
            for radius in (10, 28):
                results[f"imagehash.dhash(16) r={radius}"] = run_imagehash(args.work, truth, radius)
        else:
            raise SystemExit(f"unknown contender {name!r}")
        print(f"  {name}: {time.perf_counter() - t0:.0f} s", flush=True)
        _print_table(results)
    if not args.no_audit and "default" in wanted:
        results["datakit audit (folder)"] = audit_folder(args.work, truth, args.datakit, args.seed)

    _print_table(results)
    if "datakit audit (folder)" in results:
        a = results["datakit audit (folder)"]
        print(f"\naudit on a SPLIT/LABEL folder: {a['flagged']:.3f} of {a['planted']} planted cross-split copies flagged, "
              f"{a['false_flags']} flags between different photos ({a['seconds']} s)")
    print("\npair precision counting the one scene shot twice (SAME_SCENE, checked by eye) as right: "
          + ", ".join(f"{k} {v['pair_precision_same_scene_right']}" for k, v in results.items() if "pair_precision_same_scene_right" in v))
    for name, res in results.items():
        if res.get("wrong_examples"):
            print(f"\n{name}: pairs grouped across different originals (first {len(res['wrong_examples'])}):")
            for a, b in res["wrong_examples"]:
                print(f"   {a}  ~  {b}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def _print_table(results: dict[str, dict]) -> None:
    edits = list(EDITS)
    head = f"{'contender':<30}" + "".join(f"{e:>9}" for e in edits) + f"{'crops':>7}{'others':>7}{'pairPrec':>9}{'wrong':>6}{'confl':>7}{'leaks':>6}"
    print("\nrecall per edit (original and copy in one group); pair precision over every pair in a group")
    print(head)
    for name, res in results.items():
        if "recall" not in res:
            continue
        rec = res["recall"]
        line = f"{name:<30}" + "".join(f"{rec.get(e, float('nan')):>9.3f}" for e in edits)
        line += f"{res['recall_crops']:>7.3f}{res['recall_non_crop']:>7.3f}{res['pair_precision'] or 0:>9.4f}{res['pairs_wrong']:>6}"
        line += f"{res.get('conflicts_flagged', float('nan')):>7.3f}{res.get('cross_split_leaks', '-')!s:>6}"
        print(line, flush=True)


if __name__ == "__main__":
    rc = ensure_venv(["imagehash", "pandas", "yaml", "PIL"], __file__, sys.argv[1:])
    sys.exit(rc if rc is not None else main(sys.argv[1:]))
