"""Manifest writer and reader: atomic, validated, all errors at once (RES-03/04)."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datakit.errors import ManifestError
from datakit.manifest import CORE_COLUMNS, FAILURE_SCHEMA, SCRAPE_SCHEMA, read_manifest, read_table, write_table


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
