"""`datakit embed`: CNN embeddings for every image of a manifest (issue 5; extra `train`).

One vector per image, from a backbone of the registry in `models.py` (default
`efficientnet_lite0` with ImageNet weights from the `weights` extra: offline) with its ImageNet
head removed, stored as a table keyed by `image_id`:

| file | what |
|---|---|
| `OUT/embeddings.parquet` | `image_id` (string), `embedding` (fixed-size list of float32, width `dim`), manifest order |
| `OUT/embed.json` | backbone, pretrained, weights, dim, preprocess recipe, seed, torch version, fingerprint |
| `OUT/manifest.parquet` | the input manifest, unchanged but for `path` stored relative to OUT (so later stages can take this folder as INPUT) |
| `OUT/failures.parquet` | rows whose image could not be read, with the reason code (stage `embed`) |

Used by `balance.strategy: smote` (synthetic embedding rows), by the linear-probe trainer, and
by dedup and audit, whose candidate pairs include each image's nearest neighbours by cosine
(`datakit.dedup.vectors`): they find the re-crops that move a dhash by ~50 bits.

Resumable: vectors are written in parts (`OUT/.parts/part-NNNNN.parquet`, each atomic) as the
run goes; a killed run re-embeds only what no part holds. Incremental: a finished table with
the same fingerprint (backbone, weights, preprocess, seed) is reused row by row, as are tables
named by `--reuse` (e.g. the scrape embeddings when embedding the augment stage), so only new
images cost model time. A different fingerprint starts afresh.

Batched through a DataLoader (decode + preprocess in worker processes, overlapping the model); on
a CUDA device the model runs in bf16 autocast with channels_last; on the CPU in float32, traced
and frozen once per input shape (`cpu_fuse`: BatchNorm folded into the convolutions, oneDNN
kernels; vectors equal the eager model's to cosine >= 0.9999, `bench/embed.py` measures it). When `compute.scheduler`
or DATAKIT_DASK_SCHEDULER names a Dask cluster, tasks of whole batches run on its workers
(decode and model there, the model built once per worker process; the same batches as the local
path, so the same vectors); the driver writes the parts and the table as on the local path. Random weights
(`pretrained: false`) are seeded, so tests get the same vectors on every run.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from datakit.errors import DatakitError, ManifestError, ParamsError
from datakit.fsutil import atomic_write_text
from datakit.stage import StageContext, StageResult, as_rows, kept
from datakit.vectors import EMBEDDINGS, META, read_embeddings, write_embeddings

KEY = "embed"
STAGE = "embed"
PARTS = ".parts"


class EmbedParams(BaseModel):
    """params.yaml `embed:`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: str = Field("efficientnet_lite0", description="a name from datakit.models.REGISTRY")
    pretrained: bool = Field(True, description="ImageNet weights (false: seeded random weights, tests only)")
    image_size: int | None = Field(None, ge=16, le=1024, description="crop side (default: the weights' recipe, 224)")
    batch_size: int = Field(64, ge=1, le=4096)
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    workers: int = Field(-1, ge=-1, le=64, description="DataLoader decode processes (-1: one per core up to 8, 0: in process)")
    seed: int = 0
    rows: str = Field("all", pattern="^(all|kept)$", description="all rows with an image, or only keep=True rows")
    cpu_fuse: bool = Field(True, description="CPU: trace and freeze the model per input shape (BatchNorm folded, oneDNN)")


def parse_embed(data: dict[str, Any] | None, prefix: str = KEY) -> EmbedParams:
    """Validate an `embed:` mapping; errors name `embed.<key>`."""
    from datakit.models import REGISTRY
    from datakit.params import parse_section

    p = parse_section(EmbedParams, data, prefix)
    if p.backbone not in REGISTRY:
        raise ParamsError(f"{prefix}.backbone: unknown backbone {p.backbone!r} (known: {', '.join(REGISTRY)})")
    return p


# ---------------------------------------------------------------- the run


def fingerprint(params: EmbedParams, preprocess: dict[str, Any], weights: str | None) -> str:
    key = {"backbone": params.backbone, "pretrained": params.pretrained, "weights": weights,
           "preprocess": preprocess, "seed": None if params.pretrained else params.seed}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


class _Images:
    """A map-style dataset: row -> (row, CHW float32 or None, reason, detail). Picklable."""

    def __init__(self, root: Path, paths: list[str], preprocess: dict[str, Any]) -> None:
        self.root, self.paths, self.pre = Path(root), paths, preprocess
        self._p: Any = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str | None, str | None]:
        from datakit.images import ImageRejected, load_image
        from datakit.models import Preprocess

        if self._p is None:
            self._p = Preprocess.from_dict(self.pre)
        try:
            im = load_image(self.root, self.paths[i])
        except ImageRejected as exc:
            return i, None, exc.reason, exc.detail
        except FileNotFoundError as exc:
            return i, None, "missing_file", str(exc)
        except OSError as exc:
            return i, None, "decode_error", str(exc)
        return i, self._p.array(im), None, None


def _collate(batch: list[tuple[int, np.ndarray | None, str | None, str | None]]) -> tuple[Any, ...]:
    import torch

    ok = [b for b in batch if b[1] is not None]
    bad = [(b[0], b[2], b[3]) for b in batch if b[1] is None]
    x = torch.from_numpy(np.stack([b[1] for b in ok])) if ok else None  # type: ignore[misc]
    return [b[0] for b in ok], x, bad


def _workers(requested: int) -> int:
    if requested >= 0:
        return requested
    return min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def _load_tables(paths: Iterable[Path], fp: str) -> dict[str, np.ndarray]:
    """Vectors from earlier tables with the same fingerprint, by image_id."""
    have: dict[str, np.ndarray] = {}
    for p in paths:
        p = Path(p)
        table = p / EMBEDDINGS if p.is_dir() else p
        if not table.exists():
            continue
        try:
            ids, X, meta = read_embeddings(table)
        except ManifestError:
            continue
        if meta.get("fingerprint") != fp:
            continue
        for i, iid in enumerate(ids):
            have.setdefault(iid, X[i])
    return have


def _load_parts(folder: Path, fp: str) -> dict[str, np.ndarray]:
    have: dict[str, np.ndarray] = {}
    stamp = folder / "fingerprint"
    if not folder.exists():
        return have
    if not stamp.exists() or stamp.read_text().strip() != fp:
        for f in folder.iterdir():
            f.unlink()
        return have
    for f in sorted(folder.glob("part-*.parquet")):
        try:
            ids, X, _ = read_embeddings(f)
        except ManifestError:
            f.unlink()  # a part is written atomically; an unreadable one is not ours to trust
            continue
        for i, iid in enumerate(ids):
            have[iid] = X[i]
    return have


# A batch as the loop sees it: (positions in the work list, float32 vectors or None, unreadable
# (position, reason, detail), seconds in the model).
_Batch = tuple[list[int], np.ndarray | None, list[tuple[int, str | None, str | None]], float]


class _Frozen:
    """CPU inference: the eager model traced and frozen once per input shape (C, H, W) -
    BatchNorm folded into the convolutions, oneDNN kernels, no Python between layers. The
    batch dimension stays free, so the short last batch reuses the graph. A model that
    cannot be traced runs eagerly."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.graphs: dict[tuple[int, ...], Any] = {}

    def __call__(self, x: Any) -> Any:
        import warnings

        import torch

        key = tuple(x.shape[1:])
        graph = self.graphs.get(key)
        if graph is None:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # torch.jit's deprecation and tracer warnings
                try:
                    # one image is enough to record the graph (the batch dimension stays free);
                    # the tracer's own re-run check would double the cost, and tests check equality
                    traced = torch.jit.trace(self.model, x[:1], check_trace=False)
                    graph = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
                except Exception:  # noqa: BLE001 - an untraceable model is still a model
                    graph = self.model
            self.graphs[key] = graph
        return graph(x)


def _forward(model: Any, x: Any, device: Any) -> np.ndarray:
    """float32 vectors of one batch (bf16 autocast and channels_last on CUDA)."""
    import torch

    cuda = device.type == "cuda"
    with torch.inference_mode():
        x = x.to(device, non_blocking=cuda)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = model(x)
        else:
            y = model(x)
        return y.float().cpu().numpy()


def _model(params: EmbedParams, device: Any) -> Any:
    import torch

    from datakit.models import build

    model = build(params.backbone, pretrained=params.pretrained, seed=params.seed).eval().to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    elif device.type == "cpu" and params.cpu_fuse:
        return _Frozen(model)
    return model


def _local_batches(paths: list[str], params: EmbedParams, pre: dict[str, Any], root: Path,
                   device: Any) -> Iterator[_Batch]:
    """This machine: a DataLoader decodes in worker processes, the model runs here."""
    from torch.utils.data import DataLoader

    model = _model(params, device)
    loader = DataLoader(_Images(root, paths, pre), batch_size=params.batch_size, shuffle=False,
                        num_workers=_workers(params.workers), collate_fn=_collate, pin_memory=device.type == "cuda",
                        persistent_workers=False)
    for pos, x, bad in loader:
        tm = time.monotonic()
        vec = _forward(model, x, device) if x is not None else None
        yield pos, vec, bad, time.monotonic() - tm


_MODELS: dict[str, tuple[Any, Any]] = {}


def _embed_chunk(task: tuple[int, list[str]], params: EmbedParams, pre: dict[str, Any], root: Path) -> list[_Batch]:
    """One cluster task: consecutive paths starting at position `start` (a multiple of the batch
    size), cut into the same batches the local DataLoader makes, so every vector comes out of the
    same batch as on the local path. The model is built once per worker process."""
    from datakit.models import pick_device

    start, paths = task
    key = params.model_dump_json()
    if key not in _MODELS:
        device = pick_device(params.device)
        _MODELS[key] = (_model(params, device), device)
    model, device = _MODELS[key]
    images = _Images(root, paths, pre)
    out: list[_Batch] = []
    for b in range(0, len(paths), params.batch_size):
        pos, x, bad = _collate([images[i] for i in range(b, min(len(paths), b + params.batch_size))])
        tm = time.monotonic()
        vec = _forward(model, x, device) if x is not None else None
        out.append(([start + i for i in pos], vec, [(start + i, r, d) for i, r, d in bad], time.monotonic() - tm))
    return out


def _cluster_batches(ex: Any, paths: list[str], params: EmbedParams, pre: dict[str, Any], root: Path,
                     chunk_size: int) -> Iterator[_Batch]:
    """A Dask cluster: tasks of whole batches (decode and model on the worker), in order."""
    from datakit import parallel

    per = max(1, parallel.auto_chunk(len(paths), ex.workers, chunk_size=chunk_size, max_chunk=16 * params.batch_size)
              // params.batch_size) * params.batch_size  # whole batches: the same batches as the local path
    tasks = [(s, paths[s:s + per]) for s in range(0, len(paths), per)]
    try:
        for part in ex.imap(_embed_chunk, tasks, params, pre, Path(root)):
            yield from part
    finally:
        ex.close()


def run(manifest: pd.DataFrame, params: EmbedParams, ctx: StageContext, *, reuse: Iterable[Path] = (),
        part_seconds: float = 30.0) -> StageResult:
    """Embed the manifest's images into `ctx.out/embeddings.parquet` (+ embed.json).

    The result's manifest is the input's, unchanged (so later stages can take this folder as
    INPUT); its failures are the images that could not be read (reason codes), which get no
    vector; `files` names the table and its metadata. Progress: phase `embed`, advanced as
    batches finish. `reuse`: earlier embed folders or tables whose vectors (same fingerprint)
    are taken as they are. Parts are flushed every `part_seconds` (a killed run resumes)."""
    import torch

    from datakit.models import pick_device, preprocess_for

    if ctx.out is None:
        raise DatakitError("embed: give it an output folder (--out) for embeddings.parquet")
    t0 = time.monotonic()
    out_dir = Path(ctx.out)
    root = ctx.root
    progress = ctx.progress
    failed: list[dict[str, Any]] = []
    rows = manifest
    if params.rows == "kept":
        rows = rows[kept(rows)]
    rows = rows[rows["path"].map(lambda p: isinstance(p, str) and p != "")]
    ids = rows["image_id"].astype(str).tolist()
    paths = rows["path"].astype(str).tolist()
    labels = rows["label"].tolist() if "label" in rows.columns else [None] * len(ids)

    pre = preprocess_for(params.backbone, params.pretrained, params.image_size).to_dict()
    from datakit.models import weights_id

    weights = weights_id(params.backbone, params.pretrained)
    fp = fingerprint(params, pre, weights)
    parts_dir = out_dir / PARTS
    have = _load_tables([out_dir, *reuse], fp)
    have.update(_load_parts(parts_dir, fp))
    todo = [i for i, iid in enumerate(ids) if iid not in have]
    reused = len(ids) - len(todo)
    device = pick_device(params.device)
    dim: int | None = next((len(v) for v in have.values()), None)
    n_new = 0
    t_model = 0.0
    if todo:
        from datakit import parallel

        compute = parallel.current()
        parts_dir.mkdir(parents=True, exist_ok=True)
        (parts_dir / "fingerprint").write_text(fp + "\n")
        n_parts = len(list(parts_dir.glob("part-*.parquet")))
        todo_paths = [paths[i] for i in todo]
        if compute.distributed:
            ex = parallel.executor(params=compute)
            batches = _cluster_batches(ex, todo_paths, params, pre, root, compute.chunk_size)
            device_name = f"{params.device} on dask ({ex.workers} workers)"
        else:
            batches = _local_batches(todo_paths, params, pre, root, device)
            device_name = str(device)
        buf_ids: list[str] = []
        buf_x: list[np.ndarray] = []
        last = time.monotonic()

        def flush() -> None:
            nonlocal n_parts, buf_ids, buf_x, last
            if buf_ids:
                write_embeddings(parts_dir / f"part-{n_parts:05d}.parquet", buf_ids, np.concatenate(buf_x))
                n_parts += 1
                buf_ids, buf_x = [], []
            last = time.monotonic()

        progress.start(STAGE, len(todo))
        for pos, vec, bad, seconds in batches:
            for j, reason, detail in bad:
                k = todo[j]
                failed.append({"image_id": ids[k], "path": paths[k], "label": labels[k], "stage": STAGE,
                               "reason": reason, "detail": detail})
            if vec is not None:
                t_model += seconds
                dim = vec.shape[1]
                new_ids = [ids[todo[j]] for j in pos]
                for iid, v in zip(new_ids, vec, strict=True):
                    have[iid] = v
                buf_ids += new_ids
                buf_x.append(vec)
                n_new += len(new_ids)
            progress.advance(STAGE, len(pos) + len(bad))
            if time.monotonic() - last >= part_seconds:
                flush()
        flush()
    else:
        device_name = str(device)

    final = [iid for iid in ids if iid in have]
    if dim is None:
        from datakit.models import backbone

        dim = backbone(params.backbone).dim
    X = np.stack([have[iid] for iid in final]) if final else np.zeros((0, dim), dtype=np.float32)
    meta = {
        "backbone": params.backbone, "pretrained": params.pretrained, "weights": weights, "dim": int(dim),
        "preprocess": pre, "seed": params.seed, "fingerprint": fp, "torch": torch.__version__,
    }
    write_embeddings(out_dir / EMBEDDINGS, final, X, {"fingerprint": fp})
    atomic_write_text(out_dir / META, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    if parts_dir.exists():
        for f in parts_dir.iterdir():
            f.unlink()
        parts_dir.rmdir()
    seconds = time.monotonic() - t0
    report = {
        **{k: meta[k] for k in ("backbone", "pretrained", "weights", "dim", "fingerprint")},
        "device": device_name,
        "images": len(ids),
        "embedded": len(final),
        "computed": n_new,
        "reused": reused,
        "failures": len(failed),
        "seconds": round(seconds, 3),
        "images_per_s": round(n_new / t_model, 1) if t_model > 0 else None,
        "end_to_end_images_per_s": round(n_new / seconds, 1) if n_new and seconds > 0 else None,
    }
    return StageResult(manifest=manifest, report=report, failures=as_rows(failed),
                       files={"embeddings": out_dir / EMBEDDINGS, "meta": out_dir / META})


__all__ = ["EmbedParams", "fingerprint", "parse_embed", "run"]
