"""datakit.parallel: the compute settings, the executors, and the data stages on a 2-worker Dask
LocalCluster giving byte for byte what they give locally (dedup hashing + partitioned search,
augment, embed). One cluster for the whole module (it takes a second or two to start)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from datakit import parallel
from datakit.errors import ParamsError
from datakit.images import ImageStore
from datakit.manifest import relpath, write_table
from tests.fixtures.images import encode, jpeg, photo

pytest.importorskip("distributed")
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(autouse=True)
def _no_env_scheduler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(parallel.ENV_SCHEDULER, raising=False)


@pytest.fixture(scope="module")
def cluster() -> Iterator[parallel.ComputeParams]:
    """The settings of a 2-worker LocalCluster (processes), started once for the module; a
    small block_rows and chunk_size so every stage really splits its work into many tasks."""
    params = parallel.ComputeParams(scheduler="local:2", block_rows=24, chunk_size=5)
    ex = parallel.executor(params=params)
    assert ex.kind == "dask" and ex.workers == 2
    yield params
    parallel.shutdown()


def _square(xs: list[int], offset: int = 0) -> list[int]:
    return [x * x + offset for x in xs]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------ settings


def test_compute_params_and_errors_name_the_key() -> None:
    assert parallel.parse_compute(None) == parallel.ComputeParams()
    assert not parallel.parse_compute({}).distributed
    for given, want in [("local:3", "local:3"), ("pool", None), ("", None), ("tcp://10.0.0.5:8786", "tcp://10.0.0.5:8786"),
                        ("tls://sched:8786", "tls://sched:8786"), ("/shared/scheduler.json", "/shared/scheduler.json")]:
        assert parallel.parse_compute({"scheduler": given}).scheduler == want
    assert parallel.parse_compute({"scheduler": "local"}).scheduler.startswith("local:")
    for bad, key in [({"scheduler": "local:zero"}, "compute.scheduler"), ({"scheduler": "local:0"}, "compute.scheduler"),
                     ({"scheduler": "10.0.0.5:8786"}, "compute.scheduler"), ({"scheduler": "tcp://"}, "compute.scheduler"),
                     ({"chunk_size": -1}, "compute.chunk_size"), ({"workers": -2}, "compute.workers"),
                     ({"block_rows": 1}, "compute.block_rows"), ({"cluster": "x"}, "compute.cluster: unknown key")]:
        with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
            parallel.parse_compute(bad)


def test_configure_from_a_params_file() -> None:
    from datakit.params import parse_params

    with parallel.using(None):
        assert parallel.configure_from_params(parse_params({"compute": {"scheduler": "local:2"}})).scheduler == "local:2"
        assert parallel.current().scheduler == "local:2"
        with pytest.raises(ParamsError, match=r"compute\.workers"):
            parallel.configure_from_params(parse_params({"compute": {"workers": "many"}}))
        assert parallel.configure_from_params(parse_params({})) == parallel.ComputeParams()
    assert parallel.current() == parallel.ComputeParams()


def test_environment_wins_over_params(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parallel.current().scheduler is None
    with parallel.using({"scheduler": "local:2", "chunk_size": 7}):
        assert parallel.current().scheduler == "local:2" and parallel.current().chunk_size == 7
        monkeypatch.setenv(parallel.ENV_SCHEDULER, "tcp://127.0.0.1:8786")
        assert parallel.current().scheduler == "tcp://127.0.0.1:8786" and parallel.current().chunk_size == 7
        monkeypatch.setenv(parallel.ENV_SCHEDULER, "pool")  # forces the local pool
        assert parallel.current().scheduler is None
        monkeypatch.setenv(parallel.ENV_SCHEDULER, "nonsense")
        with pytest.raises(ParamsError, match=parallel.ENV_SCHEDULER):
            parallel.current()
        monkeypatch.delenv(parallel.ENV_SCHEDULER)
    assert parallel.current().scheduler is None  # `using` restores the settings


def test_auto_chunk() -> None:
    assert parallel.auto_chunk(1000, 2) == 64  # capped
    assert parallel.auto_chunk(40, 2) == 5  # about four tasks per worker
    assert parallel.auto_chunk(3, 2, min_chunk=8) == 8  # one task: runs in process
    assert parallel.auto_chunk(3, 2, chunk_size=2) == 2
    assert parallel.chunked([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]


def test_executors_keep_the_order(cluster: parallel.ComputeParams) -> None:
    items = list(range(103))
    want = [x * x + 1 for x in items]
    with parallel.executor(workers=1) as ex:
        assert ex.kind == "inline" and ex.map_chunks(_square, items, 10, 1) == want
    with parallel.executor(workers=2) as ex:
        assert ex.kind == "pool" and ex.map_chunks(_square, items, 0, 1) == want
        assert ex.map(_square, [[1], [2]], 0) == [[1], [4]]
    with parallel.executor(params=cluster) as ex:
        assert ex.kind == "dask" and ex.map_chunks(_square, items, 7, 1) == want
        assert ex.map(_square, [ex.share([3, 4])]) == [[9, 16]]
        # no aggressive malloc trimming on the workers (it made numpy-heavy tasks ~2x slower)
        assert set(ex.client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_").values()) == {None}


def test_unreachable_scheduler_is_a_clear_error() -> None:
    import dask

    from datakit.errors import DatakitError

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(DatakitError, match="cannot reach the Dask scheduler tcp://127.0.0.1:9"):
        parallel.executor("tcp://127.0.0.1:9")


# ------------------------------------------------------------------------------ dedup


def _dedup_manifest(root: Path) -> pd.DataFrame:
    """62 images: 20 photos, a re-encoded copy and a 4 %-cropped copy of each, one exact copy,
    one unreadable file; two labels, so some groups are label conflicts."""
    store = ImageStore(root / "data" / "scrape")
    rows = []

    def add(data: bytes, label: str, ext: str = "jpg") -> None:
        image_id, rel = store.put(data, ext)
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
        rows.append({"image_id": image_id, "path": relpath(root, store.folder / rel), "label": label,
                     "width": w, "height": h, "bytes": len(data)})

    for i in range(20):
        im = photo(120, 90, seed=i)
        add(encode(im, "JPEG", quality=90), "ab"[i % 2])
        add(encode(im, "JPEG", quality=60), "ab"[i % 2] if i % 5 else "ba"[i % 2])  # q40 wipes this noise picture's detail
        add(encode(im.crop((5, 4, 115, 86)), "PNG"), "ab"[i % 2], "png")
    add(jpeg(100, 80, seed=99), "a")
    (root / "data" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    rows.append({"image_id": "broken" + "0" * 58, "path": "data/broken.jpg", "label": "a", "width": 1, "height": 1,
                 "bytes": 20})
    return pd.DataFrame(rows)


def test_dedup_on_the_cluster_is_byte_identical(tmp_path: Path, cluster: parallel.ComputeParams) -> None:
    from datakit.dedup import run
    from datakit.dedup.hashing import hash_paths
    from datakit.params import DedupParams
    from datakit.stage import StageContext

    df = _dedup_manifest(tmp_path)
    p = DedupParams(workers=1)
    with parallel.using(parallel.ComputeParams()):
        local = run(df, p, StageContext(root=tmp_path))
    with parallel.using(cluster):
        remote = run(df, p, StageContext(root=tmp_path))
        hashed = hash_paths([tmp_path / x for x in df["path"]])
    assert local.report["pairs"] > 40 and local.report["pairs_via_crop"] > 0 and local.report["conflict_groups"] > 0
    write_table(local.manifest, tmp_path / "local.parquet")
    write_table(remote.manifest, tmp_path / "remote.parquet")
    assert _sha(tmp_path / "local.parquet") == _sha(tmp_path / "remote.parquet")
    pd.testing.assert_frame_equal(local.extra["pairs"], remote.extra["pairs"])
    assert [getattr(h, "dhash", None) for h in hashed[:-1]] == local.manifest["dhash"].tolist()[:-1]
    assert hashed[-1].reason == local.manifest["dedup_reason"].iat[-1].split(":")[1]


def test_partitioned_search_equals_the_plain_search(cluster: parallel.ComputeParams) -> None:
    from datakit.dedup.index import (
        cross_pairs,
        cross_pairs_partitioned,
        near_pairs,
        near_pairs_partitioned,
        pack_bits,
    )

    rng = np.random.default_rng(3)
    base = rng.integers(0, 2, size=(70, 256), dtype=np.uint8)
    bits = np.repeat(base, 3, axis=0)  # exact copies, some falling in different blocks
    for k in range(len(bits)):
        bits[k, rng.integers(0, 256, size=rng.integers(0, 12))] ^= 1
    h = pack_bits(bits.astype(bool))[rng.permutation(len(bits))]
    old = h[:90]
    with parallel.executor(params=cluster) as ex:
        for radius, method in [(0, "auto"), (12, "index"), (12, "brute"), (60, "auto")]:
            want = near_pairs(h, radius, method=method)
            got = near_pairs_partitioned(h, radius, block_rows=37, executor=ex, method=method)
            assert len(want[0]) and all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(want, got, strict=True))
        want = cross_pairs(h, old, 14)
        got = cross_pairs_partitioned(h, old, 14, block_rows=41, executor=ex)
        assert len(want[0]) and all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(want, got, strict=True))
    with parallel.executor(workers=1) as ex:  # the same tasks in process
        got = near_pairs_partitioned(h, 12, block_rows=50, executor=ex)
        assert all(np.array_equal(a, b) for a, b in zip(near_pairs(h, 12), got, strict=True))
    with pytest.raises(ValueError, match="block_rows"):
        near_pairs_partitioned(h, 3, block_rows=0)


# ---------------------------------------------------------------------------- augment


def _split_manifest(root: Path, n: int = 14) -> pd.DataFrame:
    store = ImageStore(root / "data" / "split")
    rows = []
    for i in range(n):
        data = jpeg(64, 48, seed=100 + i)
        image_id, rel = store.put(data, "jpg")
        rows.append({"image_id": image_id, "path": relpath(root, store.folder / rel), "label": "ab"[i % 2],
                     "width": 64, "height": 48, "bytes": len(data), "split": "train" if i < n - 3 else "val",
                     "keep": i != 2, "dup_group": f"g{i}"})
    rows.append({**rows[0], "image_id": "gone" + "0" * 60, "path": "data/missing.jpg"})
    return pd.DataFrame(rows)


def test_augment_on_the_cluster_is_byte_identical(tmp_path: Path, cluster: parallel.ComputeParams) -> None:
    from datakit.augment import AugmentParams, run
    from datakit.stage import StageContext

    df = _split_manifest(tmp_path)
    p = AugmentParams(variants=3, seed=5)
    runs = {}
    for name, compute in [("inline", parallel.ComputeParams(workers=1)), ("pool", parallel.ComputeParams(workers=2, chunk_size=2)),
                          ("dask", cluster)]:
        shutil.rmtree(tmp_path / "aug", ignore_errors=True)  # the same output folder each time
        with parallel.using(compute):
            res = run(df, p, StageContext(root=tmp_path, out=tmp_path / "aug"))
        out = res.manifest
        failures = res.failures.to_dict("records")
        write_table(out, tmp_path / f"{name}.parquet")
        files = {x: (tmp_path / x).read_bytes() for x in out.loc[out["origin"] == "augmented", "path"]}
        runs[name] = (_sha(tmp_path / f"{name}.parquet"), failures, files)
    manifest, failures, files = runs["inline"]
    assert len(files) == 3 * 10 and [f["reason"] for f in failures] == ["missing_file"]
    assert runs["pool"] == runs["dask"] == runs["inline"]


# ------------------------------------------------------------------------------ embed


def test_embed_on_the_cluster_is_byte_identical(tmp_path: Path, cluster: parallel.ComputeParams) -> None:
    from datakit.embed import EmbedParams, run
    from datakit.stage import StageContext
    from datakit.vectors import EMBEDDINGS, META, read_embeddings

    df = _split_manifest(tmp_path, n=21)
    p = EmbedParams(backbone="resnet18", pretrained=False, image_size=32, batch_size=4, workers=0)
    with parallel.using(parallel.ComputeParams()):
        res_local = run(df, p, StageContext(root=tmp_path, out=tmp_path / "local"))
    with parallel.using(cluster):
        res_remote = run(df, p, StageContext(root=tmp_path, out=tmp_path / "remote"))
    local, remote = res_local.report, res_remote.report
    failures_local = res_local.failures.to_dict("records")
    failures_remote = res_remote.failures.to_dict("records")
    assert local["embedded"] == remote["embedded"] == 21 and local["computed"] == 21
    assert "dask (2 workers)" in remote["device"]
    assert failures_local == failures_remote and [f["reason"] for f in failures_local] == ["missing_file"]
    ids, X, _ = read_embeddings(tmp_path / "remote")
    assert X.shape == (21, 512) and ids == df["image_id"].tolist()[:21]
    assert _sha(tmp_path / "local" / EMBEDDINGS) == _sha(tmp_path / "remote" / EMBEDDINGS)
    assert (tmp_path / "local" / META).read_bytes() == (tmp_path / "remote" / META).read_bytes()
