"""What the trainer reads: rows of a balance manifest, pixels through a uint8 cache, embeddings.

Rows. Only kept rows count anywhere (`datakit.stage.kept`: a missing `keep` column keeps every
row; a null `keep` is not kept, as in split/augment/balance). Train rows are every kept `train` row
whatever its origin (original, augmented, oversampled, smote_pixels, smote); val and test rows are
the kept originals. Fine-tuning needs an image, so rows without a `path` (origin `smote`: vectors
only) are skipped and counted; the linear probe needs a vector, so rows missing from the
embeddings table are skipped and counted.

Pixels. Every image is decoded once through `datakit.images.load_image` (the one safe decode
path), its shorter side resized to `side` (the preprocess recipe's resize) and centre-cropped to a
`side` x `side` square, stored as uint8 in a cache folder:

    <cache_dir>/<side>px-<interpolation>-v1/pixels.u8    fixed-size records, side*side*3 bytes each
    <cache_dir>/<side>px-<interpolation>-v1/index.json   {"ids": {image_id: slot}, "failed": {image_id: reason}}

Keyed by image_id (the sha256 of the bytes) and the recipe, so a re-run, another stage folder over
the same images, and evaluate all reuse it; new images are appended. Workers read it through a
read-only memmap, so JPEG decoding of large images happens once, not once per epoch. Training
crops (random, through the augment pipeline) and evaluation crops (central `crop` x `crop`) are
taken from that square; without the cache the same square is computed on the fly.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from datakit.errors import DatakitError, ParamsError
from datakit.fsutil import atomic_write_text, folder_lock
from datakit.images import ImageRejected, load_image
from datakit.stage import EMBEDDINGS, ORIGINAL, kept, origins

CACHE_VERSION = "v1"
CLASS_WEIGHTS_FILE = "class_weights.json"


class OnlineAugment(Protocol):
    """Online augmentation of train images, handed in by the caller (the train command builds it
    from params.yaml `augment`): the learning family imports no augment code. It is pickled into
    DataLoader workers, each of which builds its own pipeline once."""

    def active(self) -> bool:
        """False when there is nothing to apply (preset none)."""
        ...

    def pipeline(self, size: tuple[int, int]) -> Any:
        """A pipeline whose output is `size` (the training crop)."""
        ...

    def apply(self, pipeline: Any, pixels: np.ndarray, seed: int) -> np.ndarray:
        """`pixels` (uint8 HWC) augmented, the draw fixed by `seed`."""
        ...

    def settings(self) -> dict[str, Any]:
        """Plain settings recorded in model.pt (and read back for evaluate's retrain refits)."""
        ...

    def describe(self) -> str:
        """One word for dvclive's params (`transforms`, `preset:fashion`)."""
        ...


# ------------------------------------------------------------------------------------- rows


def has_image(df: pd.DataFrame) -> pd.Series:
    return df["path"].map(lambda p: isinstance(p, str) and p != "").astype(bool)


def split_rows(df: pd.DataFrame, split: str, *, originals_only: bool) -> pd.DataFrame:
    """Kept rows of `split` (all origins for train, originals for val/test when asked)."""
    mask = kept(df) & df["split"].eq(split)
    if originals_only:
        mask &= origins(df).eq(ORIGINAL)
    return df[mask]


def label_list(train: pd.DataFrame, *others: tuple[str, pd.DataFrame]) -> list[str]:
    """The classes (sorted train labels); a val/test label the train rows lack is an error."""
    labels = sorted({str(x) for x in train["label"].dropna()})
    if len(labels) < 2:
        raise DatakitError(f"training needs at least 2 classes with train rows (found {labels or 'none'})")
    known = set(labels)
    for name, frame in others:
        unknown = sorted({str(x) for x in frame["label"].dropna()} - known)
        if unknown:
            raise DatakitError(f"{name} rows carry class(es) with no train rows: {', '.join(unknown)}")
    return labels


def targets(frame: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    pos = {c: i for i, c in enumerate(labels)}
    return np.array([pos.get(str(v), -1) for v in frame["label"]], dtype=np.int64)


def subsample(train: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """A stratified `fraction` of the original train rows (at least one per class, seeded), plus
    the derived rows (augmented, oversampled, SMOTE) all of whose parents were chosen: a
    learning-curve point never sees an image derived from one it was denied."""
    if fraction >= 1.0:
        return train
    orig = train[origins(train).eq(ORIGINAL)]
    rng = np.random.default_rng(seed)
    chosen: set[str] = set()
    for _label, group in sorted(orig.groupby(orig["label"].astype(str)), key=lambda kv: kv[0]):
        ids = sorted(group["image_id"].astype(str))
        n = max(1, int(round(fraction * len(ids))))
        chosen.update(ids[i] for i in rng.choice(len(ids), size=n, replace=False))

    def parents_chosen(row_parents: Any) -> bool:
        if isinstance(row_parents, (list, tuple, np.ndarray)) and len(row_parents):
            return all(str(p) in chosen for p in row_parents)
        return False

    is_orig = origins(train).eq(ORIGINAL)
    take = (is_orig & train["image_id"].astype(str).isin(chosen)) | (
        ~is_orig & (train["parent_ids"].map(parents_chosen) if "parent_ids" in train.columns else False)
    )
    return train[take]


def read_class_weights(spec: str, input_dir: Path, labels: Sequence[str], key: str = "train.class_weights") -> dict[str, float] | None:
    """`auto`: INPUT/class_weights.json when present, else none; `none`; or a JSON file path.
    Every class must have a weight (classes the file has beyond ours are ignored)."""
    if spec == "none":
        return None
    if spec == "auto":
        path = Path(input_dir) / CLASS_WEIGHTS_FILE
        if not path.exists():
            return None
    else:
        path = Path(spec)
        if not path.exists():
            raise ParamsError(f"{key}: no such file {spec!r} (use auto, none or a JSON file {{label: weight}})")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ParamsError(f"{key}: {path} is not a JSON object {{label: weight}}: {exc}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{key}: {path} must hold a JSON object {{label: weight}}")
    missing = [c for c in labels if c not in raw]
    if missing:
        raise ParamsError(f"{key}: {path} has no weight for class(es) {', '.join(missing)}")
    try:
        weights = {c: float(raw[c]) for c in labels}
    except (TypeError, ValueError):
        raise ParamsError(f"{key}: {path}: every weight must be a number") from None
    bad = {c: w for c, w in weights.items() if not np.isfinite(w) or w <= 0}
    if bad:
        raise ParamsError(f"{key}: {path}: weights must be positive numbers (got {bad})")
    return weights


# ------------------------------------------------------------------------------------ pixels


def _method(interpolation: str) -> Image.Resampling:
    return Image.Resampling.BICUBIC if interpolation == "bicubic" else Image.Resampling.BILINEAR


def square(im: Image.Image, side: int, interpolation: str = "bilinear") -> np.ndarray:
    """Shorter side to `side`, central `side` x `side` square: uint8 HWC RGB."""
    im = im.convert("RGB")
    w, h = im.size
    scale = side / min(w, h)
    nw, nh = max(side, round(w * scale)), max(side, round(h * scale))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), _method(interpolation))
    left, top = (nw - side) // 2, (nh - side) // 2
    return np.asarray(im.crop((left, top, left + side, top + side)), dtype=np.uint8)


def center_crop(pixels: np.ndarray, crop: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    top, left = (h - crop) // 2, (w - crop) // 2
    return pixels[top : top + crop, left : left + crop]


def read_image(root: Path, rel: str) -> tuple[Image.Image | None, str | None]:
    """(image, None) or (None, the reason code it could not be read)."""
    try:
        return load_image(root, rel), None
    except ImageRejected as exc:
        return None, exc.reason
    except FileNotFoundError:
        return None, "missing_file"
    except OSError as exc:
        return None, f"decode_error: {exc}"


class _Decode(Dataset):
    """row -> (row, uint8 square or None, failure reason); for building the cache in workers."""

    def __init__(self, root: Path, paths: list[str], side: int, interpolation: str) -> None:
        self.root, self.paths, self.side, self.interpolation = Path(root), paths, side, interpolation

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str | None]:
        im, reason = read_image(self.root, self.paths[i])
        if im is None:
            return i, None, reason
        return i, square(im, self.side, self.interpolation), None


def _first(batch: Any) -> Any:
    return batch


class PixelCache:
    """uint8 `side` x `side` squares of images, keyed by image_id (see the module docstring)."""

    def __init__(self, folder: Path, side: int, interpolation: str = "bilinear") -> None:
        self.side, self.interpolation = int(side), interpolation
        self.dir = Path(folder) / f"{self.side}px-{interpolation}-{CACHE_VERSION}"
        self.record = self.side * self.side * 3
        self.slots: dict[str, int] = {}
        self.failed: dict[str, str] = {}
        self._mm: np.memmap | None = None

    @property
    def pixels_path(self) -> Path:
        return self.dir / "pixels.u8"

    @property
    def index_path(self) -> Path:
        return self.dir / "index.json"

    def load_index(self) -> None:
        self._mm = None
        self.slots, self.failed = {}, {}
        if self.index_path.exists():
            try:
                data = json.loads(self.index_path.read_text(encoding="utf-8"))
                slots = {str(k): int(v) for k, v in data.get("ids", {}).items()}
                failed = {str(k): str(v) for k, v in data.get("failed", {}).items()}
            except (OSError, ValueError, AttributeError):
                slots, failed = {}, {}  # an unreadable index: rebuild from nothing
            size = self.pixels_path.stat().st_size if self.pixels_path.exists() else 0
            if all(0 <= s < size // self.record for s in slots.values()):
                self.slots, self.failed = slots, failed

    def ensure(self, root: Path, ids: Sequence[str], paths: Sequence[str], *, num_workers: int = 0,
               progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
        """Decode and store every image not cached yet; returns {hits, built, failed}."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with folder_lock(self.dir, "datakit train cache"):
            self.load_index()
            todo = [(str(i), str(p)) for i, p in zip(ids, paths, strict=True)
                    if str(i) not in self.slots and str(i) not in self.failed]
            todo = list(dict(todo).items())  # one decode per image_id
            hits = len(set(map(str, ids))) - len(todo)
            built = failed = 0
            if todo:
                n_slots = len(self.slots)
                # Bytes past the last indexed record are a killed run's: drop them.
                with open(self.pixels_path, "ab") as fh:
                    fh.truncate(n_slots * self.record)
                loader = DataLoader(_Decode(root, [p for _, p in todo], self.side, self.interpolation),
                                    batch_size=None, num_workers=num_workers, collate_fn=_first)
                with open(self.pixels_path, "ab") as fh:
                    for done, (i, arr, reason) in enumerate(loader, 1):
                        iid = todo[i][0]
                        if arr is None:
                            self.failed[iid] = str(reason)
                            failed += 1
                        else:
                            fh.write(np.ascontiguousarray(arr, dtype=np.uint8).tobytes())
                            self.slots[iid] = n_slots
                            n_slots += 1
                            built += 1
                        if progress:
                            progress(done, len(todo))
                    fh.flush()
                    os.fsync(fh.fileno())
                atomic_write_text(self.index_path, json.dumps(
                    {"side": self.side, "interpolation": self.interpolation, "ids": self.slots, "failed": self.failed},
                    sort_keys=True) + "\n", durable=False)
            self._mm = None
            return {"hits": hits, "built": built, "failed": failed}

    def get(self, image_id: str) -> np.ndarray:
        if self._mm is None:
            n = len(self.slots) and (max(self.slots.values()) + 1)
            self._mm = np.memmap(self.pixels_path, dtype=np.uint8, mode="r", shape=(max(n, 1), self.side, self.side, 3))
        return np.array(self._mm[self.slots[image_id]])

    def __getstate__(self) -> dict[str, Any]:  # workers open their own memmap
        state = dict(self.__dict__)
        state["_mm"] = None
        return state


def sample_seed(seed: int, epoch: int, image_id: str) -> int:
    """The augmentation seed of one image in one epoch (independent of workers, ranks, order)."""
    return int.from_bytes(hashlib.sha256(f"train:{seed}:{epoch}:{image_id}".encode()).digest()[:8], "big")


class ImageRows(Dataset):
    """row -> (uint8 CHW crop tensor, class index, row). `augment` (an `OnlineAugment`, its
    pipeline output the `crop` square) is applied to the cached square for training; otherwise
    the central crop.
    `geometry="recipe"` uses the weights' own resize + crop (`Preprocess.resized`) instead of the
    square (how `datakit embed` saw images; for linear-probe models on new images)."""

    def __init__(self, root: Path, ids: Sequence[str], paths: Sequence[str], y: Sequence[int], *, side: int, crop: int,
                 interpolation: str = "bilinear", cache: PixelCache | None = None,
                 augment: OnlineAugment | None = None, seed: int = 0, geometry: str = "square",
                 preprocess: dict[str, Any] | None = None) -> None:
        self.root = Path(root)
        self.ids, self.paths, self.y = list(map(str, ids)), list(paths), list(map(int, y))
        self.side, self.crop, self.interpolation = int(side), int(crop), interpolation
        self.cache, self.augment, self.seed = cache, augment, seed
        self.geometry, self.preprocess = geometry, preprocess
        self.epoch = 0
        self._pipeline: Any = None
        self._pre: Any = None

    def __len__(self) -> int:
        return len(self.ids)

    def _square(self, i: int) -> np.ndarray | None:
        if self.cache is not None and self.ids[i] in self.cache.slots:
            return self.cache.get(self.ids[i])
        im, _reason = read_image(self.root, self.paths[i])
        if im is None:
            return None
        if self.geometry == "recipe":
            if self._pre is None:
                from datakit.models import Preprocess

                self._pre = Preprocess.from_dict(self.preprocess or {})
            return np.asarray(self._pre.resized(im), dtype=np.uint8)
        return square(im, self.side, self.interpolation)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int] | None:
        pixels = self._square(i)
        if pixels is None:
            return None
        if self.augment is not None:
            if self._pipeline is None:
                self._pipeline = self.augment.pipeline((self.crop, self.crop))
            pixels = self.augment.apply(self._pipeline, pixels, sample_seed(self.seed, self.epoch, self.ids[i]))
        elif pixels.shape[0] != self.crop or pixels.shape[1] != self.crop:
            pixels = center_crop(pixels, self.crop)
        x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
        return x, self.y[i], i

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_pipeline"] = None
        return state


def collate(batch: list[Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Stack samples, dropping images that could not be read (None)."""
    ok = [b for b in batch if b is not None]
    if not ok:
        return None
    x = torch.stack([b[0] for b in ok])
    y = torch.tensor([b[1] for b in ok], dtype=torch.long)
    rows = torch.tensor([b[2] for b in ok], dtype=torch.long)
    return x, y, rows


class VectorRows(Dataset):
    """row -> (float32 vector, class index, row)."""

    def __init__(self, X: np.ndarray, y: Sequence[int]) -> None:
        self.X = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        self.y = torch.as_tensor(np.asarray(y, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        return self.X[i], int(self.y[i]), i


def make_loader(ds: Dataset, batch_size: int, *, shuffle: bool, sampler: Any, num_workers: int, cuda: bool,
                seed: int, drop_last: bool = False) -> DataLoader:
    """The DataLoader every train, evaluate and predict pass uses: seeded shuffling and worker
    seeds, pinned memory on CUDA, unreadable images dropped by `collate`."""
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=num_workers, pin_memory=cuda, drop_last=drop_last, collate_fn=collate,
                      generator=g, worker_init_fn=seed_worker if num_workers else None, persistent_workers=False)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(_worker_id: int) -> None:
    """DataLoader worker_init_fn: numpy and random seeded from the worker's torch seed (which
    the loader's seeded generator decides)."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


# -------------------------------------------------------------------------------- embeddings


@dataclass
class Embeddings:
    ids: list[str]
    X: np.ndarray
    meta: dict[str, Any]
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {iid: i for i, iid in enumerate(self.ids)}

    @property
    def dim(self) -> int:
        return int(self.X.shape[1])

    def take(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(vectors of `ids` found, boolean mask of which were found)."""
        pos = np.array([self.index.get(str(i), -1) for i in ids], dtype=np.int64)
        found = pos >= 0
        return self.X[pos[found]], found


def load_embeddings(path: Path) -> Embeddings:
    path = Path(path)
    if path.is_dir():
        path = path / EMBEDDINGS
    if not path.exists():
        raise DatakitError(f"no embeddings table at {path}: run `datakit embed` on the dataset first "
                           "(or set train.embeddings to the table)")
    from datakit.vectors import read_embeddings

    ids, X, meta = read_embeddings(path)
    return Embeddings([str(i) for i in ids], np.asarray(X, dtype=np.float32), dict(meta or {}))


__all__ = [
    "Embeddings", "ImageRows", "OnlineAugment", "PixelCache", "VectorRows", "center_crop", "collate", "label_list",
    "load_embeddings", "make_loader", "read_class_weights", "read_image", "seed_everything", "seed_worker", "split_rows", "square",
    "subsample", "targets",
]
