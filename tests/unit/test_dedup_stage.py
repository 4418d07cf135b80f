"""The dedup stage on the stage contract (`datakit.dedup.stage.run(manifest, DedupParams, ctx)`):
duplicates are decisions (columns), an image that cannot be hashed is a failures row with its
reason, wrong or missing input is one clear line, and the written folder is relocatable."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pandas as pd
import pytest

from datakit.dedup.stage import GALLERY, embeddings_for, run
from datakit.errors import ManifestError, ParamsError
from datakit.manifest import CORE_COLUMNS, FAILURES, MANIFEST, is_known_reason, write_stage_manifest, write_table
from datakit.params import DedupParams
from datakit.stage import StageContext, load_input, run_stage
from tests.e2e.helpers import invoke
from tests.fixtures.images import encode, jpeg, shelf_scene


def _row(root: Path, rel: str, data: bytes, label: str, w: int, h: int) -> dict[str, object]:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(data)
    row: dict[str, object] = {c: None for c in CORE_COLUMNS}
    row.update(image_id=hashlib.sha256(data).hexdigest(), path=rel, label=label, width=w, height=h,
               format="JPEG", bytes=len(data))
    return row


def scrape_folder(root: Path) -> Path:
    """root/scrape: three different pictures, a recompressed copy of the first, a truncated file."""
    rows = []
    for k in range(3):
        im = shelf_scene(20 + k)
        rows.append(_row(root, f"scrape/images/p{k}.jpg", encode(im, "JPEG", quality=90), "a", im.width, im.height))
    im = shelf_scene(20)
    rows.append(_row(root, "scrape/images/p0-copy.jpg", encode(im, "JPEG", quality=60), "a", im.width, im.height))
    rows.append(_row(root, "scrape/images/broken.jpg", jpeg(64, 48, seed=3)[:300], "b", 64, 48))
    write_stage_manifest(pd.DataFrame(rows), root / "scrape" / MANIFEST, root, stage="scrape")
    return root / "scrape"


@pytest.fixture(scope="module")
def deduped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("project")
    (root / ".git").mkdir()
    source = scrape_folder(root)
    result = run_stage("dedup", run, source, root / "dedup", DedupParams(workers=1), report=root / "reports" / "dedup.json")
    return root, result


def test_duplicates_are_decisions_and_the_unreadable_image_is_a_failure(deduped) -> None:
    root, result = deduped
    m = result.manifest.set_index("path")
    assert not m.at["scrape/images/broken.jpg", "keep"]
    why = m.at["scrape/images/broken.jpg", "dedup_reason"]
    assert why.startswith("undecodable:")
    assert m.loc[["scrape/images/p0.jpg", "scrape/images/p0-copy.jpg"], "keep"].sum() == 1
    assert m.at["scrape/images/p0.jpg", "dup_group"] == m.at["scrape/images/p0-copy.jpg", "dup_group"]
    # the failures table holds the unreadable image only, with a known reason code; the dropped copy is not a failure
    fails = pd.read_parquet(root / "dedup" / FAILURES)
    assert fails["image_id"].tolist() == [m.at["scrape/images/broken.jpg", "image_id"]]
    assert fails["reason"].tolist() == [why.split(":")[1]] and is_known_reason(fails["reason"].iat[0])
    assert fails["detail"].notna().all()
    assert fails["stage"].tolist() == ["dedup"] and fails["label"].tolist() == ["b"]
    assert result.report["failures"] == 1 and result.report["removed_by_reason"]["duplicate"] == 1
    # the gallery is the stage's file, the pairs are handed back to the caller
    assert result.files["gallery"] == root / "dedup" / GALLERY and result.files["gallery"].exists()
    assert len(result.extra["pairs"]) == 1 and result.extra["conflict_groups"] == []


def test_the_output_reads_back_as_a_deduplicated_input(deduped, tmp_path: Path) -> None:
    root, result = deduped
    inp = load_input(root / "dedup", check_files=True)
    assert inp.stage == "dedup" and set(inp.manifest["path"]) == set(result.manifest["path"])
    # moved elsewhere together with its images, the folder still names them
    moved = tmp_path / "elsewhere"
    shutil.copytree(root / "scrape", moved / "scrape")
    shutil.copytree(root / "dedup", moved / "dedup")
    again = load_input(moved / "dedup", root=moved)
    assert again.manifest["path"].tolist() == inp.manifest["path"].tolist()


def test_wrong_input_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    res = invoke("dedup", tmp_path / "empty", "--out", tmp_path / "out")
    assert res.exit_code == 1 and "has no manifest.parquet" in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    # a manifest that lists no images (a table of something else)
    (tmp_path / "other").mkdir()
    write_table(pd.DataFrame({"name": ["x"], "value": [1]}), tmp_path / "other" / MANIFEST)
    res = invoke("dedup", tmp_path / "other", "--out", tmp_path / "out")
    assert res.exit_code == 1 and "missing columns: image_id, path" in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    # a folder that does not exist
    res = invoke("dedup", tmp_path / "nowhere", "--out", tmp_path / "out")
    assert res.exit_code != 0 and "does not exist" in res.output
    assert not (tmp_path / "out" / MANIFEST).exists()


def test_against_needs_a_dedup_output(deduped, tmp_path: Path) -> None:
    root, _ = deduped
    with pytest.raises(ManifestError, match=r"has not been deduplicated .*run `datakit dedup"):
        run(load_input(root / "scrape").manifest, DedupParams(workers=1), StageContext(root=root), against=root / "scrape")


def test_which_embeddings_a_run_reads(tmp_path: Path) -> None:
    from datakit.vectors import write_embeddings

    src = tmp_path / "embed"
    src.mkdir()
    assert embeddings_for(DedupParams(), src) is None  # no table: dhash only
    import numpy as np

    write_embeddings(src / "embeddings.parquet", ["a"], np.ones((1, 4), dtype=np.float32))
    assert embeddings_for(DedupParams(), src) == src / "embeddings.parquet"  # INPUT's own table by default
    assert embeddings_for(DedupParams(signals=["dhash"]), src) is None  # the signal is off
    assert embeddings_for(DedupParams(embeddings="none"), src) is None
    with pytest.raises(ManifestError, match="no embeddings table"):
        embeddings_for(DedupParams(), src, tmp_path / "missing")
    # naming the embedding signal without a table is a params error
    df = pd.DataFrame({c: [] for c in ("image_id", "path", "label", "width", "height", "bytes")})
    with pytest.raises(ParamsError, match="needs an embeddings table"):
        run(df, DedupParams(signals=["embedding"]), StageContext(root=tmp_path))
