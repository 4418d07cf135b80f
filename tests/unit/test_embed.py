"""datakit embed and the backbone registry: table round trip, determinism, resume, reuse,
failures, pretrained-weight loading from the hub cache, cosine pairs, embedding dedup edges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from datakit import models
from datakit.embed import EmbedParams, parse_embed
from datakit.embed import run as run_stage_embed
from datakit.errors import ManifestError, ParamsError
from datakit.images import ImageStore
from datakit.manifest import relpath
from datakit.stage import NoProgress, StageContext
from datakit.vectors import EMBEDDINGS, read_embeddings, write_embeddings
from tests.fixtures.images import jpeg


def run(df: pd.DataFrame, p: EmbedParams, *, root: Path, out_dir: Path, progress: Any = None, **kw: Any) -> dict:
    """The embed stage on `df` into `out_dir` (its report); `run_result` gives the whole StageResult."""
    return run_result(df, p, root=root, out_dir=out_dir, progress=progress, **kw).report


def run_result(df: pd.DataFrame, p: EmbedParams, *, root: Path, out_dir: Path, progress: Any = None, **kw: Any) -> Any:
    return run_stage_embed(df, p, StageContext(root=root, out=out_dir, progress=progress or NoProgress()), **kw)


FAST = {"backbone": "resnet18", "pretrained": False, "image_size": 32, "batch_size": 4, "workers": 0}


def _manifest(root: Path, n: int = 10, broken: int = 0) -> pd.DataFrame:
    store = ImageStore(root / "data" / "scrape")
    rows = []
    for i in range(n):
        data = jpeg(64, 48, seed=i)
        image_id, rel = store.put(data, "jpg")
        rows.append({"image_id": image_id, "path": relpath(root, store.folder / rel), "label": "ab"[i % 2]})
    for i in range(broken):
        rel = f"data/broken-{i}.jpg"
        (root / rel).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        rows.append({"image_id": f"broken{i:059d}", "path": rel, "label": "a"})
    return pd.DataFrame(rows)


def test_table_round_trip_and_errors(tmp_path: Path) -> None:
    X = np.arange(12, dtype=np.float32).reshape(3, 4)
    write_embeddings(tmp_path / "e.parquet", ["x", "y", "z"], X, {"fingerprint": "f"})
    ids, Y, meta = read_embeddings(tmp_path / "e.parquet")
    assert ids == ["x", "y", "z"] and Y.dtype == np.float32 and np.array_equal(X, Y) and meta == {"fingerprint": "f"}
    with pytest.raises(ManifestError, match="no embeddings table at .*datakit embed"):
        read_embeddings(tmp_path / "nowhere")
    pq.write_table(pa.table({"image_id": ["a"], "vec": [[1.0]]}), tmp_path / "bad.parquet")
    with pytest.raises(ManifestError, match=r"bad\.parquet: an embeddings table needs the columns image_id and embedding"):
        read_embeddings(tmp_path / "bad.parquet")
    pq.write_table(pa.table({"image_id": ["a"], "embedding": [[1.0, 2.0]]}), tmp_path / "var.parquet")
    with pytest.raises(ManifestError, match="fixed-size list"):
        read_embeddings(tmp_path / "var.parquet")
    (tmp_path / "cut.parquet").write_bytes(b"PAR1 cut")
    with pytest.raises(ManifestError, match="corrupt embeddings table"):
        read_embeddings(tmp_path / "cut.parquet")


def test_params_errors_name_the_key() -> None:
    assert parse_embed(None) == EmbedParams()
    with pytest.raises(ParamsError, match=r"embed\.backbone: unknown backbone 'resnet9'.*resnet18"):
        parse_embed({"backbone": "resnet9"})
    with pytest.raises(ParamsError, match=r"embed\.batchsize: unknown key"):
        parse_embed({"batchsize": 3})
    with pytest.raises(ParamsError, match=r"embed\.batch_size"):
        parse_embed({"batch_size": 0})


def test_embed_is_deterministic_and_reuses(tmp_path: Path) -> None:
    df = _manifest(tmp_path)
    p = parse_embed(FAST)
    r1 = run(df, p, root=tmp_path, out_dir=tmp_path / "e1")
    assert r1["computed"] == 10 and r1["embedded"] == 10 and r1["dim"] == 512
    ids1, X1, meta = read_embeddings(tmp_path / "e1")
    assert ids1 == df["image_id"].tolist() and meta["backbone"] == "resnet18" and meta["pretrained"] is False
    assert np.isfinite(X1).all() and np.linalg.matrix_rank(X1) > 1  # distinct images, distinct vectors
    # the same seed builds the same random network: identical vectors in a fresh folder
    run(df, p, root=tmp_path, out_dir=tmp_path / "e2")
    np.testing.assert_allclose(read_embeddings(tmp_path / "e2")[1], X1, rtol=1e-5, atol=1e-6)
    # a re-run in place and a run that reuses e1 compute nothing
    assert run(df, p, root=tmp_path, out_dir=tmp_path / "e1")["computed"] == 0
    assert run(df, p, root=tmp_path, out_dir=tmp_path / "e3", reuse=[tmp_path / "e1"])["computed"] == 0
    # another seed is another fingerprint: nothing is reused, the vectors differ
    r4 = run(df, parse_embed({**FAST, "seed": 1}), root=tmp_path, out_dir=tmp_path / "e3", reuse=[tmp_path / "e1"])
    assert r4["computed"] == 10 and not np.allclose(read_embeddings(tmp_path / "e3")[1], X1)


def test_killed_run_resumes_from_parts(tmp_path: Path) -> None:
    df = _manifest(tmp_path, n=12)
    p = parse_embed(FAST)
    full = run(df, p, root=tmp_path, out_dir=tmp_path / "full")
    assert full["computed"] == 12

    class Killed(Exception):
        pass

    class Die(NoProgress):
        """Kills the run once 8 images are done."""

        done = 0

        def advance(self, phase: str, n: int = 1) -> None:
            self.done += n
            if self.done >= 8:
                raise Killed

    die = Die()
    with pytest.raises(Killed):
        run(df, p, root=tmp_path, out_dir=tmp_path / "part", progress=die, part_seconds=0.0)
    parts = list((tmp_path / "part" / ".parts").glob("part-*.parquet"))
    assert parts and not (tmp_path / "part" / EMBEDDINGS).exists()  # no final table from a killed run
    again = run(df, p, root=tmp_path, out_dir=tmp_path / "part")
    assert 0 < again["computed"] <= 8 and again["reused"] == 12 - again["computed"]
    np.testing.assert_allclose(read_embeddings(tmp_path / "part")[1], read_embeddings(tmp_path / "full")[1], rtol=1e-5, atol=1e-6)
    assert not (tmp_path / "part" / ".parts").exists()


def test_unreadable_images_are_failures_not_vectors(tmp_path: Path) -> None:
    from datakit.manifest import is_known_reason

    df = _manifest(tmp_path, n=4, broken=1)
    res = run_result(df, parse_embed(FAST), root=tmp_path, out_dir=tmp_path / "e")
    rep, failures = res.report, res.failures.to_dict("records")
    assert rep["embedded"] == 4 and rep["failures"] == 1
    assert failures[0]["image_id"].startswith("broken") and failures[0]["reason"] in {"truncated", "decode_error", "not_an_image"}
    assert "broken" not in "".join(read_embeddings(tmp_path / "e")[0])
    assert failures[0]["stage"] == "embed" and failures[0]["path"] == "data/broken-0.jpg" and failures[0]["label"] == "a"
    assert is_known_reason(failures[0]["reason"])
    assert res.manifest is df  # the input's manifest, unchanged


def test_the_stage_writes_failures_and_a_relocatable_manifest(tmp_path: Path) -> None:
    """Through the one writer: OUT/failures.parquet holds the unreadable row, OUT/manifest.parquet
    stores paths relative to OUT (and reads back relative to the root), the report is written."""
    from datakit.manifest import FAILURES, MANIFEST, read_stage_manifest, write_stage_manifest
    from datakit.stage import run_stage

    df = _manifest(tmp_path, n=3, broken=1)
    (tmp_path / ".git").mkdir()
    write_stage_manifest(df, tmp_path / "data" / "scrape" / MANIFEST, tmp_path)
    res = run_stage("embed", run_stage_embed, tmp_path / "data" / "scrape", tmp_path / "data" / "embed", parse_embed(FAST),
                    needs=(), report=tmp_path / "reports" / "embed.json")
    assert res.report["failures"] == 1 and (tmp_path / "reports" / "embed.json").exists()
    failures = pd.read_parquet(tmp_path / "data" / "embed" / FAILURES)
    assert failures["image_id"].tolist() == ["broken" + "0" * 59] and failures["stage"].tolist() == ["embed"]
    stored = pd.read_parquet(tmp_path / "data" / "embed" / MANIFEST)
    assert all(p.startswith("../") for p in stored["path"])  # relative to the embed folder
    back, root, _ = read_stage_manifest(tmp_path / "data" / "embed")
    assert root == tmp_path and back["path"].tolist() == df["path"].tolist()
    assert len(read_embeddings(tmp_path / "data" / "embed")[0]) == 3


def test_every_registered_backbone_gives_its_width() -> None:
    for name, spec in models.REGISTRY.items():
        if name in ("vit_b_16", "resnet50", "convnext_tiny", "efficientnet_b1", "resnet34"):
            continue  # large; the registry check inside build() covers their head layer
        m = models.build(name, pretrained=False).eval()
        with torch.inference_mode():
            assert m(torch.rand(2, 3, 64, 64)).shape == (2, spec.dim), name
        head = models.build(name, pretrained=False, num_classes=3).eval()
        with torch.inference_mode():
            assert head(torch.rand(1, 3, 64, 64)).shape == (1, 3)


def test_pretrained_weights_from_the_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = models.weights_file("resnet18")
    assert path.name == "resnet18-f37072fd.pth" and str(tmp_path) in str(path)
    # a truncated cache file: a clear error that names the file and the way on
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(models.ModelError, match=r"pretrained weights for resnet18 .*resnet18-f37072fd\.pth.*pretrained: false"):
        models.build("resnet18", pretrained=True)
    # a real state dict in the cache is loaded, no network
    source = torch.hub.load_state_dict_from_url if False else None  # noqa: F841 - the cache path is the contract
    ref = models.build("resnet18", pretrained=False, num_classes=1000, seed=3)
    torch.save(ref.state_dict(), path)
    got = models.build("resnet18", pretrained=True)
    assert torch.equal(got.conv1.weight, ref.conv1.weight)
    assert models.preprocess_for("resnet18", True).resize == 256


def test_device_requests() -> None:
    assert models.pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(models.ModelError, match="no CUDA device"):
            models.pick_device("cuda")
        assert models.pick_device("auto").type == "cpu"


def test_preprocess_recipe() -> None:
    from PIL import Image

    p = models.Preprocess(resize=40, crop=32)
    x = p.array(Image.new("RGB", (100, 50), (255, 0, 0)))
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    assert np.allclose(x[0], (1 - 0.485) / 0.229) and np.allclose(x[1], (0 - 0.456) / 0.224)
    assert models.Preprocess.from_dict(p.to_dict()) == p


def test_dedup_embedding_signal_links_what_dhash_misses(tmp_path: Path) -> None:
    """A re-crop of 14 % moves the dhash far past the radius: only the vectors nominate the pair,
    and the overlay check accepts it. Two different pictures with near-identical vectors (look-
    alike shots) are nominated too, and rejected."""
    import io

    from datakit.dedup.stage import run as dedup
    from datakit.params import DedupParams
    from tests.fixtures.images import shelf_scene

    store = ImageStore(tmp_path / "data" / "shelf")
    rows = []
    pictures = [shelf_scene(10 + i) for i in range(5)]
    pictures.append(pictures[1].crop((50, 0, 360, 235)))  # row 5: a re-crop of row 1
    for i, im in enumerate(pictures):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=60)
        image_id, rel = store.put(buf.getvalue(), "jpg")
        rows.append({"image_id": image_id, "path": relpath(tmp_path, store.folder / rel), "label": "a",
                     "width": im.width, "height": im.height, "bytes": 1000 + i})
    df = pd.DataFrame(rows)
    rng = np.random.default_rng(1)
    X = rng.normal(0, 1, (6, 8)).astype(np.float32)
    X[5] = X[1] + 0.01  # the re-crop's vector: next to its original's
    X[3] = X[2] + 0.02  # a look-alike shot: near-identical vector, another picture
    ids = df["image_id"].tolist()
    plain = dedup(df, DedupParams(), StageContext(root=tmp_path))
    assert plain.report["groups"] == 0 and plain.report["signals"] == ["dhash"]
    both = dedup(df, DedupParams(), StageContext(root=tmp_path), vectors=(ids, X))  # the default uses the vectors
    m = both.manifest
    assert both.report["signals"] == ["dhash", "embedding"] and both.report["groups"] == 1
    assert both.report["candidates_by_signal"]["embedding"] == 2 and both.report["rejected_by_verify"] == 1
    assert m.at[1, "dup_group"] == m.at[5, "dup_group"] != m.at[2, "dup_group"] != m.at[3, "dup_group"]
    assert m["keep"].sum() == 5
    dropped = m[~m["keep"]].iloc[0]
    assert dropped["dup_distance"] > 28  # far apart in dhash: only the embedding found it
    pairs = both.extra["pairs"]
    assert list(pairs["via"]) == ["embedding"] and pairs["similarity"].iat[0] > 0.99
    assert pairs["match"].iat[0] >= 0.97
    unverified = dedup(df, DedupParams(verify=False), StageContext(root=tmp_path), vectors=(ids, X))
    assert unverified.report["groups"] == 2  # without the overlay check the look-alikes merge
    with pytest.raises(ParamsError, match=r"dedup\.signals: 'embedding' needs an embeddings table"):
        dedup(df, DedupParams(signals=["dhash", "embedding"]), StageContext(root=tmp_path))
    with pytest.raises(ManifestError, match="have no vector"):
        dedup(df, DedupParams(signals=["embedding"]), StageContext(root=tmp_path), vectors=(ids[:3], X[:3]))
