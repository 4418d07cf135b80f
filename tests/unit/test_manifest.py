"""Manifest writer and reader: atomic, validated, all errors at once (RES-03/04)."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datakit.errors import ManifestError
from datakit.manifest import (
    CORE_COLUMNS,
    FAILURE_SCHEMA,
    SCRAPE_SCHEMA,
    read_manifest,
    read_table,
    resolve,
    write_table,
)


def _row(i: int, **kw: object) -> dict:
    row = {c: None for c in CORE_COLUMNS}
    row.update({"image_id": f"{i:064x}", "path": f"images/{i:02x}/{i:064x}.jpg", "label": "vest",
                "width": 10, "height": 10, "bytes": 100, "format": "JPEG"})
    row.update(kw)
    return row


def _store(tmp_path, rows):
    for r in rows:
        p = tmp_path / r["path"]
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def test_roundtrip_and_no_temp_left(tmp_path) -> None:
    rows = [_row(i) for i in range(5)]
    _store(tmp_path, rows)
    write_table(pd.DataFrame(rows), tmp_path / "manifest.parquet", SCRAPE_SCHEMA)
    df = read_manifest(tmp_path / "manifest.parquet", root=tmp_path)
    assert list(df["image_id"]) == [r["image_id"] for r in rows]
    assert not list(tmp_path.glob("*.tmp"))


def test_validation_reports_every_problem_at_once(tmp_path) -> None:
    rows = [_row(0), _row(1), _row(1), _row(3)]
    _store(tmp_path, rows[:3])
    df = pd.DataFrame(rows).drop(columns=["license"])
    write_table(df, tmp_path / "m.parquet")
    with pytest.raises(ManifestError) as info:
        read_manifest(tmp_path / "m.parquet", root=tmp_path)
    msg = str(info.value)
    assert "m.parquet" in msg
    assert "missing columns: license" in msg
    assert "duplicate image_id in rows 1, 2" in msg
    assert "image files missing for rows 3" in msg


def test_corrupt_and_missing_files_are_named(tmp_path) -> None:  # RES-04
    with pytest.raises(ManifestError, match="no manifest at"):
        read_table(tmp_path / "nope.parquet")
    bad = tmp_path / "manifest.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ManifestError, match="corrupt manifest .*manifest.parquet"):
        read_table(bad)


def test_manifest_cut_at_every_offset_is_a_clear_error(tmp_path) -> None:  # RES-03, plan 4.2.6
    write_table(pd.DataFrame([_row(i) for i in range(3)]), tmp_path / "full.parquet", SCRAPE_SCHEMA)
    data = (tmp_path / "full.parquet").read_bytes()
    cut = tmp_path / "cut.parquet"
    for n in range(0, len(data), max(1, len(data) // 97)):
        cut.write_bytes(data[:n])
        with pytest.raises(ManifestError):
            read_table(cut)


def test_failed_write_keeps_old_version(tmp_path, monkeypatch) -> None:  # N5
    path = tmp_path / "manifest.parquet"
    write_table(pd.DataFrame([_row(0)]), path, SCRAPE_SCHEMA)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError):
        write_table(pd.DataFrame([_row(0), _row(1)]), path, SCRAPE_SCHEMA)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))


def test_replace_never_truncates_linked_copies(tmp_path) -> None:  # RES-11
    import os

    path = tmp_path / "manifest.parquet"
    write_table(pd.DataFrame([_row(0)]), path, SCRAPE_SCHEMA)
    cache = tmp_path / "cache_copy"
    os.link(path, cache)
    old = cache.read_bytes()
    write_table(pd.DataFrame([_row(0), _row(1)]), path, SCRAPE_SCHEMA)
    assert cache.read_bytes() == old
    assert path.read_bytes() != old


text = st.one_of(st.none(), st.text(max_size=30))


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(text, text, st.one_of(st.none(), st.integers(0, 2**31 - 1)),
                          st.one_of(st.none(), st.integers(-(2**62), 2**62))), max_size=20))
def test_writer_roundtrip_property(tmp_path, rows) -> None:  # plan 4.2.6
    df = pd.DataFrame(
        [{"url": u, "label": lab, "rank": r, "image_id": None, "reason": "timeout", "detail": str(big)}
         for (u, lab, r, big) in rows],
        columns=["url", "label", "rank", "image_id", "reason", "detail"],
    )
    path = tmp_path / "f.parquet"
    write_table(df, path, FAILURE_SCHEMA)
    back = read_table(path)
    assert len(back) == len(df)
    for a, b in zip(df.to_dict("records"), back.to_dict("records"), strict=True):
        for k in ("url", "label", "detail"):
            assert (pd.isna(a[k]) and pd.isna(b[k])) or a[k] == b[k]
        assert (pd.isna(a["rank"]) and pd.isna(b["rank"])) or a["rank"] == b["rank"]


# ----------------------------------------------------------------------------- issue 13 (B8, B9)


def _escaping_project(tmp_path):
    """root/ with rows 0-2 inside (row 2 through a symlink that stays inside) and rows 3-7 leading
    out: `..`, `a/../../x`, absolute, a symlinked file and a symlinked folder pointing outside."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"secret")
    rows = [_row(i) for i in range(8)]
    _store(root, rows[:3])
    (root / "images" / "in.jpg").symlink_to(root / rows[0]["path"])
    (root / "images" / "out.jpg").symlink_to(outside / "secret.jpg")
    (root / "images" / "away").symlink_to(outside, target_is_directory=True)
    rows[2]["path"] = "images/in.jpg"
    for i, rel in enumerate(["../outside/secret.jpg", "images/../../outside/secret.jpg", str(outside / "secret.jpg"),
                             "images/out.jpg", "images/away/secret.jpg"], start=3):
        rows[i]["path"] = rel
    write_table(pd.DataFrame(rows), root / "m.parquet")
    return root


@pytest.mark.parametrize("check_files", [True, False])
def test_paths_leaving_the_root_are_refused_naming_the_rows(tmp_path, check_files: bool) -> None:  # B9, SEC-10
    root = _escaping_project(tmp_path)
    with pytest.raises(ManifestError) as info:
        read_manifest(root / "m.parquet", root=root, check_files=check_files)
    msg = str(info.value)
    assert f"paths outside the project root {root} in rows 3, 4, 5, 6, 7 " in msg
    assert "image files missing" not in msg  # outside files are not even looked for


def test_symlinks_into_the_projects_dvc_cache_are_allowed(tmp_path) -> None:  # B9: DVC's cache.type symlink
    root = tmp_path / "root"
    cache = tmp_path / "shared-cache"
    (cache / "ab").mkdir(parents=True)
    (cache / "ab" / "cdef").write_bytes(b"x")
    rows = [_row(0)]
    (root / "images").mkdir(parents=True)
    (root / rows[0]["path"]).parent.mkdir(parents=True)
    (root / rows[0]["path"]).symlink_to(cache / "ab" / "cdef")
    write_table(pd.DataFrame(rows), root / "m.parquet")
    with pytest.raises(ManifestError, match="rows 0 "):
        read_manifest(root / "m.parquet", root=root)
    (root / ".dvc").mkdir()
    (root / ".dvc" / "config").write_text("[cache]\n    dir = ../../shared-cache\n    type = symlink\n")
    assert len(read_manifest(root / "m.parquet", root=root)) == 1


def test_resolve_refuses_absolute_and_climbing_paths(tmp_path) -> None:  # B9: the last guard of every image read
    assert resolve(tmp_path, "images/a.jpg") == tmp_path / "images" / "a.jpg"
    assert resolve(tmp_path, "images/../a.jpg") == tmp_path / "images/../a.jpg"
    for bad in ("/etc/passwd", "../x", "images/../../x", "a\0b"):
        with pytest.raises(ManifestError, match="project root"):
            resolve(tmp_path, bad)


def test_export_refuses_a_symlink_leading_out(tmp_path) -> None:  # B9: export shares the readers' rule
    from datakit.export import export

    root = _escaping_project(tmp_path)
    df = pd.read_parquet(root / "m.parquet").iloc[[0, 6]].assign(split="train")
    with pytest.raises(ManifestError, match="outside the project root .*images/out.jpg"):
        export(df, root, tmp_path / "exported")
    assert not (tmp_path / "exported" / "train").exists()


def test_verify_lists_a_null_image_id_and_checks_the_other_rows(tmp_path) -> None:  # B8
    from datakit.verify import verify

    rows = [_row(i) for i in range(3)]
    _store(tmp_path / "stage", rows)
    for r in rows:
        r["path"] = "stage/" + r["path"]
    rows[1]["image_id"] = None
    write_table(pd.DataFrame(rows), tmp_path / "stage" / "manifest.parquet")
    rep = verify(tmp_path / "stage")
    assert not rep.ok and rep.rows == 3
    assert any(p.endswith("empty image_id in rows 1") for p in rep.problems)
    assert sum("does not hash to its image_id" in p for p in rep.problems) == 2  # rows 0 and 2 still hashed
    assert rep.checked == 2


def test_audit_manifest_reads_no_file_outside_the_root(tmp_path, monkeypatch) -> None:  # B9, audit's own reader
    from datakit import audit
    from datakit.audit import fingerprint
    from datakit.params import AuditParams
    from datakit.stage import StageContext

    root = _escaping_project(tmp_path)
    df = pd.read_parquet(root / "m.parquet").assign(split=["train", "test"] * 4)
    opened: list[str] = []
    monkeypatch.setattr(fingerprint, "fingerprints", lambda files, workers: opened.extend(files) or [])
    with pytest.raises(ManifestError, match=r"outside the project root .* rows 3, 4, 5, 6, 7 "):
        audit.run(df, AuditParams(embeddings="none"), StageContext(root=root))
    assert opened == []


def test_report_thumbnails_never_read_a_file_outside_the_root(tmp_path) -> None:  # B9: `datakit report`
    from datakit.report import _Thumbs
    from tests.fixtures.images import jpeg

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "images").mkdir(parents=True)
    outside.mkdir()
    (root / "images" / "in.jpg").write_bytes(jpeg(seed=1))
    (outside / "secret.jpg").write_bytes(jpeg(seed=2))
    (root / "images" / "out.jpg").symlink_to(outside / "secret.jpg")
    thumbs = _Thumbs(root, 10**6)
    assert thumbs.uri("images/in.jpg").startswith("data:image/jpeg;base64,")
    for rel in ("images/out.jpg", "../outside/secret.jpg", str(outside / "secret.jpg")):
        assert thumbs.uri(rel) == ""


def test_stage_manifest_paths_are_relative_to_its_folder_and_survive_a_copy(tmp_path) -> None:
    """Issue 14: a copied stage folder names its own files, whatever the working directory."""
    import shutil

    from datakit.manifest import read_stage_manifest, write_stage_manifest

    root = tmp_path / "proj"
    (root / ".git").mkdir(parents=True)
    img = root / "data" / "scrape" / "images" / "ab" / "abc.jpg"
    img.parent.mkdir(parents=True)
    img.write_bytes(b"x")
    df = pd.DataFrame({"image_id": ["abc"], "path": ["data/scrape/images/ab/abc.jpg"]})
    write_stage_manifest(df, root / "data" / "scrape" / "manifest.parquet", root, stage="scrape")
    assert pd.read_parquet(root / "data" / "scrape" / "manifest.parquet")["path"].tolist() == ["images/ab/abc.jpg"]
    back, got_root, meta = read_stage_manifest(root / "data" / "scrape")
    assert got_root == root and back["path"].tolist() == ["data/scrape/images/ab/abc.jpg"]
    assert meta == {"paths": "folder", "stage": "scrape"}
    # a later stage's manifest names the earlier folder's images from its own folder
    write_stage_manifest(back, root / "data" / "dedup" / "manifest.parquet", root)
    assert pd.read_parquet(root / "data" / "dedup" / "manifest.parquet")["path"].tolist() == ["../scrape/images/ab/abc.jpg"]
    # copied elsewhere: the copy's own file
    shutil.copytree(root / "data" / "scrape", tmp_path / "elsewhere" / "scrape2")
    copy, copy_root, _ = read_stage_manifest(tmp_path / "elsewhere" / "scrape2")
    assert (copy_root / copy["path"].iat[0]).resolve() == (tmp_path / "elsewhere" / "scrape2" / "images" / "ab" / "abc.jpg").resolve()


def test_legacy_manifest_paths_stay_root_relative(tmp_path) -> None:
    from datakit.manifest import read_stage_manifest

    (tmp_path / ".git").mkdir()
    (tmp_path / "s").mkdir()
    write_table(pd.DataFrame({"image_id": ["a"], "path": ["s/images/a.jpg"]}), tmp_path / "s" / "manifest.parquet")
    df, root, meta = read_stage_manifest(tmp_path / "s")
    assert root == tmp_path and df["path"].tolist() == ["s/images/a.jpg"] and meta == {}
