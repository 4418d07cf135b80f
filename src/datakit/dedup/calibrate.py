"""`datakit dedup calibrate`: precision and recall per radius on the user's own images.

Either a small file of labelled pairs (`a,b,duplicate`: paths or image_ids) or pairs generated
from a sample of the dataset: each sampled image against transformed copies of itself
(resize, JPEG quality, crop, brightness, text overlay, PNG<->JPEG) as duplicates, and against
other sampled images as non-duplicates. Prints a table and a recommended radius.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageEnhance

from datakit.errors import DatakitError
from datakit.images import load_image
from datakit.manifest import resolve

Transform = Callable[[Image.Image, random.Random], Image.Image]


def _encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def t_resize(im: Image.Image, rng: random.Random) -> Image.Image:
    s = rng.uniform(0.5, 0.9)
    return im.resize((max(8, int(im.width * s)), max(8, int(im.height * s))), Image.Resampling.BILINEAR)


def t_jpeg(im: Image.Image, rng: random.Random) -> Image.Image:
    return Image.open(io.BytesIO(_encode(im, "JPEG", quality=rng.randint(30, 90)))).convert("RGB")


def t_crop(im: Image.Image, rng: random.Random) -> Image.Image:
    """Remove 2-8 % of each dimension, split at random between the two sides."""
    w, h = im.size
    cw, ch = int(w * rng.uniform(0.02, 0.08)), int(h * rng.uniform(0.02, 0.08))
    left, top = rng.randint(0, cw), rng.randint(0, ch)
    return im.crop((left, top, w - (cw - left), h - (ch - top)))


def t_brightness(im: Image.Image, rng: random.Random) -> Image.Image:
    return ImageEnhance.Brightness(im).enhance(rng.choice([rng.uniform(0.8, 0.95), rng.uniform(1.05, 1.2)]))


def t_overlay(im: Image.Image, rng: random.Random) -> Image.Image:
    out = im.copy()
    draw = ImageDraw.Draw(out)
    x, y = rng.randint(0, max(1, im.width // 2)), rng.randint(0, max(1, im.height - 20))
    draw.text((x, y), rng.choice(["SALE", "© shop", "new!", "-30%"]), fill=(255, 255, 255))
    return out


def t_format(im: Image.Image, rng: random.Random) -> Image.Image:
    return Image.open(io.BytesIO(_encode(im, "PNG"))).convert("RGB")


TRANSFORMS: dict[str, Transform] = {
    "resize": t_resize, "jpeg": t_jpeg, "crop": t_crop, "brightness": t_brightness,
    "overlay": t_overlay, "png_jpeg": t_format,
}


@dataclass
class Pair:
    a: bytes
    b: bytes
    duplicate: bool
    kind: str


def generate_pairs(df: pd.DataFrame, root: Path, *, sample: int, seed: int) -> list[Pair]:
    rng = random.Random(seed)
    rows = df.sample(n=min(sample, len(df)), random_state=seed).reset_index(drop=True)
    images = [load_image(root, p) for p in rows["path"]]
    encoded = [_encode(im, "JPEG", quality=95) for im in images]
    pairs: list[Pair] = []
    for im, enc in zip(images, encoded, strict=True):
        for name, fn in TRANSFORMS.items():
            pairs.append(Pair(enc, _encode(fn(im, rng).convert("RGB"), "JPEG", quality=95), True, name))
    n = len(images)
    for _ in range(len(pairs)):
        a, b = rng.randrange(n), rng.randrange(n)
        if a != b and rows["image_id"].iat[a] != rows["image_id"].iat[b]:
            pairs.append(Pair(encoded[a], encoded[b], False, "unrelated"))
    return pairs


def read_pairs(path: Path, df: pd.DataFrame, root: Path) -> list[Pair]:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("a", "b", "duplicate") if c not in table.columns]
    if missing:
        raise DatakitError(f"{path}: missing column(s) {', '.join(missing)} (expected a,b,duplicate)")
    by_id = dict(zip(df["image_id"], df["path"], strict=True))

    def load(ref: str, line: int) -> bytes:
        p = resolve(root, by_id[ref]) if ref in by_id else Path(ref)
        if not p.is_file():
            raise DatakitError(f"{path}: line {line}: {ref!r} is neither an image_id of the manifest nor a file")
        return p.read_bytes()

    out = []
    for k, r in enumerate(table.itertuples(), start=2):
        flag = str(r.duplicate).strip().lower()
        if flag not in ("1", "0", "true", "false", "yes", "no"):
            raise DatakitError(f"{path}: line {k}: duplicate must be 1/0/true/false, got {r.duplicate!r}")
        out.append(Pair(load(r.a, k), load(r.b, k), flag in ("1", "true", "yes"), "file"))
    return out


def distances(pairs: list[Pair], *, exact: bool) -> pd.DataFrame:
    """Full-image and crop-signal distance of every pair."""
    from datakit.dedup.hashing import hash_bytes
    from datakit.dedup.index import pack_hex

    def bits(h: str) -> np.ndarray:
        return pack_hex([h])[0]

    def ham(x: np.ndarray, y: np.ndarray) -> int:
        return int(np.bitwise_count(np.bitwise_xor(x, y)).sum())

    rows = []
    for p in pairs:
        ha, hb = hash_bytes(p.a, exact=exact), hash_bytes(p.b, exact=exact)
        fa, fb = bits(ha.dhash), bits(hb.dhash)
        full = ham(fa, fb)
        crop = min([ham(fa, bits(c)) for c in hb.crops] + [ham(fb, bits(c)) for c in ha.crops] + [256])
        rows.append({"kind": p.kind, "duplicate": p.duplicate, "full": full, "crop": crop})
    return pd.DataFrame(rows)


def table(d: pd.DataFrame, *, crop_threshold: int, radii: range = range(0, 25)) -> pd.DataFrame:
    out = []
    pos = d["duplicate"].sum()
    for t in radii:
        for signal, hit in (("full", d["full"] <= t), ("full+crops", (d["full"] <= t) | (d["crop"] <= crop_threshold))):
            tp = int((hit & d["duplicate"]).sum())
            fp = int((hit & ~d["duplicate"]).sum())
            out.append({"radius": t, "signal": signal, "precision": tp / (tp + fp) if tp + fp else 1.0,
                        "recall": tp / pos if pos else 0.0, "false_pairs": fp})
    return pd.DataFrame(out)


def recommend(tab: pd.DataFrame, signal: str = "full", min_precision: float = 0.995) -> int:
    t = tab[(tab["signal"] == signal) & (tab["precision"] >= min_precision)]
    if len(t):
        return int(t.sort_values(["recall", "radius"], ascending=[False, True])["radius"].iat[0])
    sub = tab[tab["signal"] == signal]
    f1 = 2 * sub["precision"] * sub["recall"] / (sub["precision"] + sub["recall"]).replace(0, 1)
    return int(sub["radius"].iat[int(np.argmax(f1.to_numpy()))])
