"""Training throughput of `datakit train` on real images vs the same model fed synthetic tensors.

    .venv/bin/python bench/train_gpu.py                    # GPU when present: resnet50, 224 px, batch 128
    .venv/bin/python bench/train_gpu.py --device cpu       # a small CPU run (resnet18, 96 px) to check the script

The real run is `datakit.train.loop.run` on a corpus of JPEGs (bench/_corpus.py, 400x300): the
pixel cache is built once (not timed), then every epoch decodes from the uint8 cache, augments
on the fly with the `fashion` preset, and trains (AdamW, bf16 autocast and channels_last on CUDA).
The peer, measured in the same run, is the same network, optimizer, batch size and precision fed
`torch.randn` batches that already sit on the device: the input pipeline's ceiling. The issue's
goal on an H100: real >= 90% of synthetic. GPU utilisation is sampled with nvidia-smi every 0.5 s
during both runs (when nvidia-smi exists).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _corpus import ensure_corpus, label_of  # noqa: E402


class GpuSampler:
    """Mean GPU utilisation (%) while active, from nvidia-smi."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.available = shutil.which("nvidia-smi") is not None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout.split()
                if out:
                    self.values.append(float(out[0]))
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
            self._stop.wait(0.5)

    def __enter__(self) -> GpuSampler:
        if self.available:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        # the first samples fall in start-up; keep the busy middle
        v = self.values[2:] or self.values
        return round(float(np.mean(v)), 1) if v else None


def manifest(paths: list[Path], root: Path) -> pd.DataFrame:
    rows = []
    for i, p in enumerate(paths):
        rows.append({"image_id": p.stem, "path": str(p.relative_to(root)), "label": label_of(i),
                     "split": "val" if (i // 10) % 10 == 0 else "train", "keep": True, "origin": "original"})
    return pd.DataFrame(rows)


def synthetic(backbone: str, n_classes: int, side: int, batch: int, samples: int, device, amp: bool) -> float:
    import torch
    import torch.nn.functional as F

    from datakit.train.devices import autocast
    from datakit.train.nets import make_model

    model = make_model("finetune", backbone, pretrained=False, n_classes=n_classes, dim=None, seed=0).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, side, side, device=device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, n_classes, (batch,), device=device)
    model.train()

    def step() -> None:
        with autocast(device, amp):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):  # warm-up: cudnn autotune, allocator
        step()
    if cuda:
        torch.cuda.synchronize()
    steps = max(10, samples // batch)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--n", type=int, default=None, help="images (default: 6000 on a GPU, 600 on the CPU)")
    ap.add_argument("--backbone", default=None, help="default: resnet50 on a GPU, resnet18 on the CPU")
    ap.add_argument("--image-size", type=int, default=None, help="default: 224 on a GPU, 96 on the CPU")
    ap.add_argument("--batch", type=int, default=None, help="default: 128 on a GPU, 32 on the CPU")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: cores up to 12)")
    ap.add_argument("--no-augment", action="store_true", help="train without online augmentation")
    ap.add_argument("--corpus", type=Path, default=Path("bench-out/corpus-train"))
    args = ap.parse_args()

    import os

    import torch

    from datakit.augment import AugmentParams
    from datakit.cli.train import OnlineAugmenter
    from datakit.models import pick_device
    from datakit.stage import StageContext
    from datakit.train.loop import run
    from datakit.train.params import parse_train

    device = pick_device(args.device)
    gpu = device.type == "cuda"
    n = args.n or (6000 if gpu else 600)
    backbone = args.backbone or ("resnet50" if gpu else "resnet18")
    side = args.image_size or (224 if gpu else 96)
    batch = args.batch or (128 if gpu else 32)
    cores = len(os.sched_getaffinity(0))
    workers = args.workers if args.workers is not None else min(12, cores)
    paths = ensure_corpus(args.corpus, n)
    root = args.corpus.parent.resolve()
    df = manifest([p.resolve() for p in paths], root)
    n_classes = df["label"].nunique()
    print(f"device {device} ({torch.cuda.get_device_name(device) if gpu else f'{cores} cores'}), torch {torch.__version__}; "
          f"{backbone}, {side} px, batch {batch}, {workers} workers, {len(df)} images ({(df['split'] == 'train').sum()} train)")

    with tempfile.TemporaryDirectory() as tmp:
        params = parse_train({"mode": "finetune", "backbone": backbone, "pretrained": False, "image_size": side,
                              "epochs": args.epochs, "batch_size": batch, "num_workers": workers, "patience": 0,
                              "dvclive": False, "online_augment": not args.no_augment, "device": str(device),
                              "cache_dir": str(root / "train-cache")})
        with GpuSampler() as real_util:
            rep = run(df, params, StageContext(root=root, out=Path(tmp) / "out", input=Path(tmp)),
                      augment=OnlineAugmenter(AugmentParams(preset="fashion"))).report
        real = float(rep["images_per_s"])
        with GpuSampler() as syn_util:
            syn = synthetic(backbone, n_classes, side, batch, min(len(df) * 2, 20_000), device, params.amp)

    print()
    print(f"{'input':<42}{'images/s':>12}{'GPU util %':>12}")
    print(f"{'datakit train (cache + online augment)' if not args.no_augment else 'datakit train (cache)':<42}"
          f"{real:>12.1f}{str(real_util.mean or '-'):>12}")
    print(f"{'synthetic tensors on the device (peer)':<42}{syn:>12.1f}{str(syn_util.mean or '-'):>12}")
    print(f"\nratio datakit / synthetic: {real / syn:.3f}  (goal on an H100: >= 0.90)")


if __name__ == "__main__":
    main()
