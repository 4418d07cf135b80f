#!/usr/bin/env python3
"""Quality of the dedup hashes: precision and recall on generated near-duplicates.

Base pictures of two kinds are generated, and one copy of each per transform:

* ``photo``: photo-like scenes (half smooth colour fields with soft shapes from
  ``bench/_corpus.py``, half busier scenes with gratings, polygons, lines and lettering drawn
  here), stored as JPEG q 85-95;
* ``garment``: the synthetic garments of ``datakit.scrape.synthetic_render`` (7 items x 3
  patterns, so many unrelated pictures share a silhouette and a pattern: the hard negatives),
  stored as PNG or JPEG.

Transforms (one copy each, parameters drawn per base): ``resize`` 50-90 % (box, bilinear,
bicubic or Lanczos), ``jpeg`` re-encoded at q 30-90, ``crop`` 2-8 % of the width and of the
height split at random between the two sides, ``bright`` brightness x0.8-1.2, ``text`` a small
caption in a corner, ``format`` PNG <-> JPEG.

Every pair of pictures in the pool is scored: two pictures are duplicates when they come from
the same base. Reported per transform is the recall on (base, copy) pairs; precision is over
all pairs the rule accepts (copies of one base matching each other count as correct), and the
false-positive rate per unrelated pair is printed beside it, since precision alone depends on
how many unrelated pairs a benchmark holds. Images flagged ``low_information`` take part in no
near match (as in grouping) and count as misses.

Rules compared: datakit's fast path and ``--exact`` path, with and without the crop signal, at
several radii; and imagededup's 64-bit DHash (the peer) on the same files, installed into
``WORK/.bench-imagededup-venv``: imagededup declares torch and torchvision as dependencies for
its CNN method, which this benchmark does not use, so the wheel is installed without them and its
torch-only modules are stubbed when importing; its DHash code runs unchanged. The peer is
skipped (with a note) when it cannot be installed.

    .venv/bin/python bench/dedup_quality.py                  # 300 + 300 bases, ~1-2 minutes
    .venv/bin/python bench/dedup_quality.py --photos 100 --garments 100 --no-peer
    .venv/bin/python bench/dedup_quality.py --tune           # also try other crop sets / scales

It prints the recommended full and crop radius for the fast path (the smallest radii meeting
recall >= 0.8 on crops and >= 0.95 on every other transform at precision >= 0.995, else the
best trade-off) and whether the fast path stays within 1 point of the exact path there.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _corpus import make_jpeg  # noqa: E402

from datakit.dedup import hashing  # noqa: E402
from datakit.scrape.synthetic_render import ATTRIBUTES, ITEMS, render_garment  # noqa: E402

GENERATOR_VERSION = 3
TRANSFORMS = ("resize", "jpeg", "crop", "bright", "text", "format")
PEER_VERSION = "0.3.3.post2"

# ---------------------------------------------------------------------------------------------
# pictures


def _scene(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A busy photo-like scene: graded background, gratings, shapes, strokes and lettering."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height)
    ramp = (ramp - ramp.min()) / max(1e-6, float(np.ptp(ramp)))
    bg = c0[None, None, :] * (1 - ramp[..., None]) + c1[None, None, :] * ramp[..., None]
    coarse = Image.fromarray(rng.uniform(0, 255, (3, 4, 3)).astype(np.uint8), "RGB").resize((width, height), Image.Resampling.BICUBIC)
    bg = 0.75 * bg + 0.25 * np.asarray(coarse, dtype=np.float32)
    im = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    side = min(width, height)
    for _ in range(int(rng.integers(5, 16))):
        kind = rng.choice(["ellipse", "rect", "poly", "line", "grating", "text"])
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.05, 0.3) * side
        if kind == "ellipse":
            draw.ellipse((cx - r, cy - r * rng.uniform(0.4, 1.2), cx + r, cy + r * rng.uniform(0.4, 1.2)), fill=colour)
        elif kind == "rect":
            draw.rectangle((cx - r, cy - r * rng.uniform(0.3, 1.5), cx + r * rng.uniform(0.3, 1.5), cy + r), fill=colour)
        elif kind == "poly":
            n = int(rng.integers(3, 8))
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            radii = r * rng.uniform(0.4, 1.0, n)
            draw.polygon([(float(cx + a * np.cos(t)), float(cy + a * np.sin(t))) for t, a in zip(angles, radii, strict=True)], fill=colour)
        elif kind == "line":
            draw.line((cx, cy, cx + rng.uniform(-2, 2) * r, cy + rng.uniform(-2, 2) * r), fill=colour, width=int(rng.integers(2, 10)))
        elif kind == "grating":
            period = rng.uniform(4, 24)
            theta = rng.uniform(0, np.pi)
            wave = 0.5 + 0.5 * np.sin((np.cos(theta) * xx + np.sin(theta) * yy) * 2 * np.pi / period)
            mask = ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r).astype(np.float32) * wave
            arr = np.asarray(im, dtype=np.float32)
            arr = arr * (1 - mask[..., None]) + np.array(colour, np.float32)[None, None, :] * mask[..., None]
            im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
            draw = ImageDraw.Draw(im)
        else:
            font = ImageFont.load_default(size=max(8, int(r * 0.5)))
            word = "".join(chr(int(c)) for c in rng.integers(65, 91, int(rng.integers(3, 9))))
            draw.text((cx - r, cy), word, fill=colour, font=font)
    im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 1.4))))
    arr = np.asarray(im, dtype=np.float32) + rng.normal(0, rng.uniform(1.5, 4.5), (height, width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _encode(im: Image.Image, fmt: str, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        im.convert("RGB").save(buf, "JPEG", quality=quality)
    else:
        im.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _caption(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    out = im.copy()
    draw = ImageDraw.Draw(out)
    size = max(8, int(out.height * rng.uniform(0.04, 0.08)))
    font = ImageFont.load_default(size=size)
    text = f"© {''.join(chr(int(c)) for c in rng.integers(97, 123, 5))} {int(rng.integers(2015, 2026))}"
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    tw, th = x1 - x0, y1 - y0
    margin = int(size * 0.5)
    x = margin if rng.random() < 0.5 else max(0, out.width - tw - margin)
    y = margin if rng.random() < 0.5 else max(0, out.height - th - margin - y0)
    fill = (255, 255, 255) if rng.random() < 0.5 else (0, 0, 0)
    draw.text((x, y), text, fill=fill, font=font)
    return out


def transform(im: Image.Image, kind: str, base_fmt: str, rng: np.random.Generator) -> tuple[bytes, str, str]:
    """One copy: (bytes, extension, parameters as text)."""
    q = int(rng.integers(85, 96))
    if kind == "resize":
        s = float(rng.uniform(0.5, 0.9))
        filt = [Image.Resampling.BOX, Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS][int(rng.integers(0, 4))]
        out = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), filt)
        return _encode(out, "JPEG", q), "jpg", f"scale={s:.2f} filter={filt.name}"
    if kind == "jpeg":
        jq = int(rng.integers(30, 91))
        return _encode(im, "JPEG", jq), "jpg", f"q={jq}"
    if kind == "crop":
        fx, fy = rng.uniform(0.02, 0.08, 2)
        ux, uy = rng.uniform(0, 1, 2)
        box = (round(im.width * fx * ux), round(im.height * fy * uy),
               im.width - round(im.width * fx * (1 - ux)), im.height - round(im.height * fy * (1 - uy)))
        return _encode(im.crop(box), "JPEG", q), "jpg", f"box={box}"
    if kind == "bright":
        f = float(rng.uniform(0.05, 0.2)) * (1 if rng.random() < 0.5 else -1) + 1.0
        return _encode(ImageEnhance.Brightness(im).enhance(f), "JPEG", q), "jpg", f"factor={f:.2f}"
    if kind == "text":
        return _encode(_caption(im, rng), "JPEG", q), "jpg", "caption"
    if kind == "format":
        if base_fmt == "JPEG":
            return _encode(im, "PNG"), "png", "jpeg->png"
        jq = int(rng.integers(75, 96))
        return _encode(im, "JPEG", jq), "jpg", f"png->jpeg q={jq}"
    raise ValueError(kind)


@dataclass
class Item:
    path: Path
    base: int
    kind: str  # "base" or a transform
    set: str  # "photo" or "garment"


def build_pool(work: Path, n_photos: int, n_garments: int, seed: int) -> list[Item]:
    """Generate (or reuse) the pictures; returns one Item per file."""
    folder = work / "images"
    stamp = work / "pool.json"
    settings = {"version": GENERATOR_VERSION, "photos": n_photos, "garments": n_garments, "seed": seed}
    if stamp.exists():
        data = json.loads(stamp.read_text())
        if data.get("settings") == settings:
            return [Item(work / r["path"], r["base"], r["kind"], r["set"]) for r in data["items"]]
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*"):
        old.unlink()
    items: list[Item] = []
    rows: list[dict[str, object]] = []
    t0 = time.monotonic()
    for b in range(n_photos + n_garments):
        rng = np.random.default_rng([seed, GENERATOR_VERSION, b])
        if b < n_photos:
            set_name = "photo"
            w = int(rng.integers(360, 761))
            h = int(np.clip(w * rng.uniform(0.6, 1.4), 240, 800))
            if b % 2 == 0:
                im = Image.open(io.BytesIO(make_jpeg(100_000 + b, w, h, quality=95, seed=seed + 7))).convert("RGB")
            else:
                im = _scene(rng, w, h)
            base_fmt = "JPEG"
        else:
            set_name = "garment"
            k = b - n_photos
            im = render_garment(ITEMS[k % len(ITEMS)], ATTRIBUTES[(k // len(ITEMS)) % len(ATTRIBUTES)], seed * 1_000_003 + k,
                                size=int(rng.integers(360, 641)))
            base_fmt = "PNG" if k % 2 == 0 else "JPEG"
        base_bytes = _encode(im, base_fmt, int(rng.integers(85, 96)))
        ext = "jpg" if base_fmt == "JPEG" else "png"
        base_img = Image.open(io.BytesIO(base_bytes)).convert("RGB")  # copies start from what was published
        entries = [("base", base_bytes, ext)]
        for kind in TRANSFORMS:
            data, ext2, _ = transform(base_img, kind, base_fmt, rng)
            entries.append((kind, data, ext2))
        for kind, data, e in entries:
            rel = f"images/{b:05d}-{kind}.{e}"
            (work / rel).write_bytes(data)
            items.append(Item(work / rel, b, kind, set_name))
            rows.append({"path": rel, "base": b, "kind": kind, "set": set_name})
        if (b + 1) % 100 == 0:
            print(f"  generated {b + 1}/{n_photos + n_garments} bases ({time.monotonic() - t0:.0f} s)", flush=True)
    stamp.write_text(json.dumps({"settings": settings, "items": rows}))
    return items


# ---------------------------------------------------------------------------------------------
# distances


def hex_bits(hexes: list[str], bits: int) -> np.ndarray:
    """(N, bits) float32 0/1 matrix of hex hashes (MSB first)."""
    raw = np.frombuffer(bytes.fromhex("".join(hexes)), dtype=np.uint8).reshape(len(hexes), bits // 8)
    return np.unpackbits(raw, axis=1).astype(np.float32)


def full_matrix(hexes: list[str], bits: int = 256) -> np.ndarray:
    """All-pairs Hamming distances (N, N) int16 through one matrix product."""
    f = hex_bits(hexes, bits)
    pc = f.sum(axis=1)
    d = pc[:, None] + pc[None, :] - 2.0 * (f @ f.T)
    return np.rint(d).astype(np.int16)


def crop_matrix(full: list[str], crops: list[list[str]], chunk: int = 256) -> np.ndarray:
    """(N, N) int16: min over either direction of (full hash of one, crop hashes of the other)."""
    n, k = len(full), len(crops[0])
    f = hex_bits(full, 256)
    c = hex_bits([h for row in crops for h in row], 256)
    pf, pc = f.sum(axis=1), c.sum(axis=1)
    m = np.empty((n, n), dtype=np.int16)
    for i in range(0, n, chunk):
        g = pf[i:i + chunk, None] + pc[None, :] - 2.0 * (f[i:i + chunk] @ c.T)
        m[i:i + chunk] = np.rint(g.reshape(-1, n, k).min(axis=2)).astype(np.int16)
    return np.minimum(m, m.T)


@dataclass
class Truth:
    base: np.ndarray
    kind: np.ndarray
    set: np.ndarray
    upper: np.ndarray  # (N, N) bool: i < j
    same: np.ndarray  # (N, N) bool: same base, i != j
    probe: dict[str, tuple[np.ndarray, np.ndarray]]  # transform -> (base index, copy index)


def truth_of(items: list[Item]) -> Truth:
    base = np.array([it.base for it in items])
    kind = np.array([it.kind for it in items])
    sets = np.array([it.set for it in items])
    n = len(items)
    upper = np.triu(np.ones((n, n), dtype=bool), 1)
    same = (base[:, None] == base[None, :]) & ~np.eye(n, dtype=bool)
    where = {(it.base, it.kind): i for i, it in enumerate(items)}
    probe: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for t in TRANSFORMS:
        pairs = [(where[(b, "base")], where[(b, t)]) for b in sorted(set(base.tolist())) if (b, t) in where]
        probe[t] = (np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]))
    return Truth(base, kind, sets, upper, same, probe)


@dataclass
class Score:
    precision: float
    fp: int
    tp: int
    fp_rate: float
    recall: dict[str, float]
    precision_by_set: dict[str, float]
    recall_by_set: dict[str, dict[str, float]]


def score(pred: np.ndarray, truth: Truth) -> Score:
    up = pred & truth.upper
    tp = int((up & truth.same).sum())
    fp = int((up & ~truth.same).sum())
    negatives = int((truth.upper & ~truth.same).sum())
    recall = {t: float(pred[i, j].mean()) if len(i) else float("nan") for t, (i, j) in truth.probe.items()}
    by_set_p: dict[str, float] = {}
    by_set_r: dict[str, dict[str, float]] = {}
    for s in sorted(set(truth.set.tolist())):
        ins = truth.set == s
        m = up & ins[:, None] & ins[None, :]
        stp, sfp = int((m & truth.same).sum()), int((m & ~truth.same).sum())
        by_set_p[s] = stp / (stp + sfp) if stp + sfp else 1.0
        by_set_r[s] = {t: float(pred[i[ins[i]], j[ins[i]]].mean()) if ins[i].any() else float("nan") for t, (i, j) in truth.probe.items()}
    return Score(tp / (tp + fp) if tp + fp else 1.0, fp, tp, fp / max(1, negatives), recall, by_set_p, by_set_r)


def predict(full: np.ndarray, crop: np.ndarray | None, low: np.ndarray, radius: int, crop_radius: int | None) -> np.ndarray:
    pred = full <= radius
    if crop is not None and crop_radius is not None:
        pred = pred | (crop <= crop_radius)
    ok = ~low
    return pred & ok[:, None] & ok[None, :]


# ---------------------------------------------------------------------------------------------
# the peer


def _peer_python(work: Path) -> Path | None:
    venv = work / ".bench-imagededup-venv"
    py = venv / "bin" / "python"
    marker = venv / f".installed-{PEER_VERSION}-sklearn"
    if marker.exists() and py.exists():
        return py
    print(f"peer: creating {venv} (imagededup {PEER_VERSION} without torch; log in {venv}/pip-install.log)", flush=True)
    try:
        subprocess.run(["/usr/bin/env", "python3", "-m", "venv", str(venv)], check=True, timeout=300)
        log = open(venv / "pip-install.log", "w")  # noqa: SIM115
        pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "--no-deps", f"imagededup=={PEER_VERSION}"], check=True, timeout=600, stdout=log, stderr=log)
        subprocess.run([*pip, "numpy", "pillow", "scipy", "PyWavelets", "tqdm", "scikit-learn"], check=True, timeout=900,
                       stdout=log, stderr=log)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"peer: cannot install imagededup ({exc}); skipping the peer", flush=True)
        return None
    marker.write_text("ok\n")
    return py


_PEER_RUNNER = r'''
import json, sys, time, types
# imagededup's package __init__ imports its CNN method (torch, torchvision) and a matplotlib
# plotter; neither is used by DHash, so stand-ins are registered before the import.
for name, attrs in {"imagededup.methods.cnn": ["CNN"], "imagededup.utils.models": ["CustomModel"],
                    "imagededup.utils.plotter": ["plot_duplicates"]}.items():
    mod = types.ModuleType(name)
    for a in attrs:
        setattr(mod, a, None)
    sys.modules[name] = mod
from imagededup.methods.hashing import DHash
paths = json.load(open(sys.argv[1]))
h = DHash(verbose=False)
t0 = time.perf_counter()
out = [h.encode_image(image_file=p) for p in paths]
json.dump({"hashes": out, "seconds": time.perf_counter() - t0}, open(sys.argv[2], "w"))
'''


def peer_hashes(work: Path, paths: list[Path]) -> tuple[list[str | None], float] | None:
    py = _peer_python(work)
    if py is None:
        return None
    (work / "peer_runner.py").write_text(_PEER_RUNNER)
    (work / "peer_paths.json").write_text(json.dumps([str(p) for p in paths]))
    try:
        subprocess.run([str(py), str(work / "peer_runner.py"), str(work / "peer_paths.json"), str(work / "peer_out.json")],
                       check=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"peer: imagededup run failed ({exc}); skipping the peer", flush=True)
        return None
    data = json.loads((work / "peer_out.json").read_text())
    return data["hashes"], float(data["seconds"])


# ---------------------------------------------------------------------------------------------
# report


def _row(label: str, s: Score) -> str:
    rec = "  ".join(f"{s.recall[t]:6.3f}" for t in TRANSFORMS)
    return f"{label:<34} {s.precision:7.4f} {s.fp:6d} {s.fp_rate:9.2e}  {rec}"


def _header() -> str:
    names = "  ".join(f"{t:>6}" for t in TRANSFORMS)
    return f"{'rule':<34} {'prec':>7} {'FP':>6} {'FP/pair':>9}  {names}\n" + "-" * (62 + 8 * len(TRANSFORMS))


def meets(s: Score) -> bool:
    return s.precision >= 0.995 and s.recall["crop"] >= 0.8 and all(s.recall[t] >= 0.95 for t in TRANSFORMS if t != "crop")


@dataclass
class PathHashes:
    full: np.ndarray
    crop: np.ndarray | None
    low: np.ndarray
    seconds: float
    failed: int


def hash_pool(paths: list[Path], exact: bool, settings: hashing.HashSettings, workers: int) -> PathHashes:
    t0 = time.perf_counter()
    res = hashing.hash_paths(paths, exact=exact, workers=workers, settings=settings)
    dt = time.perf_counter() - t0
    failed = [i for i, r in enumerate(res) if not isinstance(r, hashing.HashResult)]
    if failed:
        raise SystemExit(f"{len(failed)} pictures failed to hash, e.g. {paths[failed[0]]}: {res[failed[0]]}")
    ok = [r for r in res if isinstance(r, hashing.HashResult)]
    full = full_matrix([r.dhash for r in ok])
    crop = crop_matrix([r.dhash for r in ok], [r.crops for r in ok]) if settings.crop_boxes else None
    return PathHashes(full, crop, np.array([r.low_information for r in ok]), dt, len(failed))


def recommend(ph: PathHashes, truth: Truth, radii: list[int], crop_radii: list[int]) -> tuple[int, int, Score, bool]:
    """The (radius, crop radius) to default to: the smallest pair (by the larger of the two,
    then the sum) meeting every goal; when none does, the smallest pair at precision >= 0.995
    with crop recall >= 0.8 and every other transform within 1 point of its best recall at
    precision >= 0.995 anywhere on the grid (returned with False)."""
    grid = sorted(((r, rc) for r in radii for rc in crop_radii), key=lambda p: (max(p), sum(p), p[0]))
    scores = {p: score(predict(ph.full, ph.crop, ph.low, p[0], p[1]), truth) for p in grid}
    for p in grid:
        if meets(scores[p]):
            return p[0], p[1], scores[p], True
    precise = [p for p in grid if scores[p].precision >= 0.995]
    if not precise:
        p = grid[0]
        return p[0], p[1], scores[p], False
    best = {t: max(scores[p].recall[t] for p in precise) for t in TRANSFORMS}
    for p in precise:
        s = scores[p]
        if s.recall["crop"] >= min(0.8, best["crop"] - 0.01) and all(s.recall[t] >= best[t] - 0.01 for t in TRANSFORMS if t != "crop"):
            return p[0], p[1], s, False
    p = precise[-1]
    return p[0], p[1], scores[p], False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=300)
    ap.add_argument("--garments", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=ROOT / "bench-out" / "dedup-quality")
    ap.add_argument("--radii", default="4,8,10,12,16,20,24,28")
    ap.add_argument("--crop-radii", default="12,16,20,24,28")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--tune", action="store_true", help="also score other crop sets and working-image scales")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    radii = [int(x) for x in args.radii.split(",")]
    crop_radii = [int(x) for x in args.crop_radii.split(",")]

    args.work.mkdir(parents=True, exist_ok=True)
    items = build_pool(args.work, args.photos, args.garments, args.seed)
    truth = truth_of(items)
    paths = [it.path for it in items]
    n = len(items)
    n_neg = int((truth.upper & ~truth.same).sum())
    print(f"pool: {args.photos} photo + {args.garments} garment bases, {n} pictures, "
          f"{len(TRANSFORMS)} transforms; {int((truth.upper & truth.same).sum())} duplicate pairs, {n_neg} unrelated pairs")

    out: dict[str, object] = {"pictures": n, "unrelated_pairs": n_neg}
    results: dict[str, PathHashes] = {}
    for name, exact in (("fast", False), ("exact", True)):
        results[name] = hash_pool(paths, exact, hashing.DEFAULT_SETTINGS, args.workers)
        print(f"hashed {name}: {results[name].seconds:.1f} s, low_information {int(results[name].low.sum())}")

    rows: list[tuple[str, Score]] = []
    print()
    print(_header())
    for name in ("fast", "exact"):
        ph = results[name]
        for r in radii:
            rows.append((f"{name} full r={r}", score(predict(ph.full, None, ph.low, r, None), truth)))
            print(_row(*rows[-1]))
    for name in ("fast", "exact"):
        ph = results[name]
        for r in (x for x in radii if x in (10, 16, 20, 24)):
            for rc in crop_radii:
                rows.append((f"{name} full r={r} + crop rc={rc}", score(predict(ph.full, ph.crop, ph.low, r, rc), truth)))
                print(_row(*rows[-1]))

    peer = None if args.no_peer else peer_hashes(args.work, paths)
    if peer is not None:
        hashes, secs = peer
        bad = [i for i, h in enumerate(hashes) if not h]
        hx = [h if h else "0" * 16 for h in hashes]
        pd_ = full_matrix(hx, 64)
        low = np.zeros(n, dtype=bool)
        low[bad] = True
        print(f"\nimagededup {PEER_VERSION} DHash (64 bits): {secs:.1f} s, {n / secs:.0f} img/s, {len(bad)} not hashed")
        print(_header())
        for r in (0, 2, 4, 6, 8, 10):
            rows.append((f"imagededup dhash64 r={r}", score(predict(pd_, None, low, r, None), truth)))
            print(_row(*rows[-1]))

    print("\nby picture set (fast path, defaults):")
    s = score(predict(results["fast"].full, results["fast"].crop, results["fast"].low,
                      hashing.DEFAULT_RADIUS, hashing.DEFAULT_CROP_RADIUS), truth)
    for set_name, p in s.precision_by_set.items():
        rec = "  ".join(f"{t}={v:.3f}" for t, v in s.recall_by_set[set_name].items())
        print(f"  {set_name:<8} precision {p:.4f}  recall {rec}")

    fr, frc, fs, fok = recommend(results["fast"], truth, radii, crop_radii)
    es = score(predict(results["exact"].full, results["exact"].crop, results["exact"].low, fr, frc), truth)
    within = abs(fs.precision - es.precision) <= 0.01 and all(fs.recall[t] >= es.recall[t] - 0.01 for t in TRANSFORMS)
    print(f"\nrecommended (fast path): radius {fr}, crop radius {frc} "
          f"({'meets' if fok else 'does NOT meet'} crop recall >= 0.8, others >= 0.95, precision >= 0.995)")
    print(_header())
    print(_row(f"fast r={fr} + crop rc={frc}", fs))
    print(_row(f"exact r={fr} + crop rc={frc}", es))
    print(f"fast path within 1 point of the exact path (precision and every recall): {'YES' if within else 'NO'}")
    print(f"module defaults: DEFAULT_RADIUS={hashing.DEFAULT_RADIUS}, DEFAULT_CROP_RADIUS={hashing.DEFAULT_CROP_RADIUS}, "
          f"{len(hashing.CROP_BOXES)} crop boxes, working side {hashing.WORK_SIDE}")
    out.update({"recommended": {"radius": fr, "crop_radius": frc, "meets_goals": fok, "fast_within_1pt": within},
                "rows": {label: {"precision": sc.precision, "fp": sc.fp, "fp_rate": sc.fp_rate, "recall": sc.recall}
                         for label, sc in rows}})

    if args.tune:
        tune(paths, truth, args.workers, radii, crop_radii)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


def tune(paths: list[Path], truth: Truth, workers: int, radii: list[int], crop_radii: list[int]) -> None:
    """Score other crop sets and working-image scales (how the defaults were chosen)."""
    axis_sets = {
        "central .96/.92/.88": [(0.02, 0.98), (0.04, 0.96), (0.06, 0.94)],
        "3 spans (default)": [(0.02, 0.98), (0.06, 0.98), (0.02, 0.94)],
        "3 spans + full": [(0.0, 1.0), (0.02, 0.98), (0.06, 0.98), (0.02, 0.94)],
        "6 spans": [(a, 1 - b) for a, b in ((0.0133, 0.0133), (0.04, 0.0133), (0.0667, 0.0133),
                                           (0.0133, 0.04), (0.04, 0.04), (0.0133, 0.0667))],
    }
    print("\ntuning (fast path): best rule at precision >= 0.995 per crop set / work side")
    print(_header())
    for side in (32, 64):
        for label, spans in axis_sets.items():
            if label.startswith("central"):
                boxes = tuple((a, a, b, b) for a, b in spans)
            else:
                boxes = hashing._product_boxes(spans)
            st = hashing.HashSettings(work_side=side, crop_boxes=boxes)
            ph = hash_pool(paths, False, st, workers)
            r, rc, s, ok = recommend(ph, truth, radii, crop_radii)
            print(_row(f"side {side} {label} ({len(boxes)}) r={r} rc={rc}", s) + ("" if ok else "  (goals not met)"))


if __name__ == "__main__":
    raise SystemExit(main())
