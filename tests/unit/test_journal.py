"""The scrape journal reader (issue 13 B5, reliability.md RES-02): a damaged line costs that line
only, never the lines after it, and a writer repairs only its own file."""

from __future__ import annotations

import json
from pathlib import Path

from datakit.scrape.download import Journal


def _line(key: str, status: str = "fail") -> bytes:
    rec = {"key": key, "status": status, "reason": "http_404"} if status == "fail" else \
        {"key": key, "status": "ok", "image_id": "a" * 64, "rel": f"images/aa/{'a' * 64}.jpg"}
    return json.dumps(rec).encode() + b"\n"


def test_res02_damaged_middle_line_is_skipped_not_truncated(tmp_path: Path) -> None:
    path = tmp_path / "journal-w0.jsonl"
    lines = [_line(f"k{i}") for i in range(10)]
    lines[4] = lines[4][:15] + b"\n"  # cut short in the middle of the file
    path.write_bytes(b"".join(lines))
    size = path.stat().st_size
    j = Journal(tmp_path, "journal.jsonl")
    j.close()
    assert set(j.entries) == {f"k{i}" for i in range(10) if i != 4}
    assert j.damaged == {path: [5]}
    assert path.stat().st_size == size  # nothing after the bad line was cut off


def test_res02_valid_json_of_the_wrong_shape_counts_as_damaged(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(_line("k0") + b'{"key": "k1", "status": "ok"}\n[1, 2]\n' + _line("k3", "ok"))
    j = Journal(tmp_path)
    j.close()
    assert set(j.entries) == {"k0", "k3"} and j.damaged == {path: [2, 3]}


def test_res02_set_damaged_aside_keeps_the_lines_and_reports_once(tmp_path: Path) -> None:
    path = tmp_path / "journal-w1.jsonl"
    path.write_bytes(_line("k0") + b"garbage\n" + _line("k2"))
    j = Journal(tmp_path)
    messages = j.set_damaged_aside()
    j.close()
    assert len(messages) == 1 and "journal-w1.jsonl: damaged journal line 2 skipped" in messages[0]
    assert path.read_bytes() == _line("k0") + _line("k2")
    assert b"garbage" in (tmp_path / "journal-w1.jsonl.damaged").read_bytes()
    again = Journal(tmp_path)
    again.close()
    assert again.damaged == {} and set(again.entries) == {"k0", "k2"}


def test_res01_torn_tail_cut_only_in_the_writers_own_file(tmp_path: Path) -> None:
    mine, other = tmp_path / "journal-w0.jsonl", tmp_path / "journal-w1.jsonl"
    mine.write_bytes(_line("a0") + _line("a1")[:20])      # torn by a kill mid-write
    other.write_bytes(_line("b0") + _line("b1")[:20])
    j = Journal(tmp_path, "journal-w0.jsonl")
    j.add({"key": "a2", "status": "fail", "reason": "timeout"})
    j.close()
    assert mine.read_bytes().split(b"\n")[:2] == [_line("a0")[:-1], b'{"key":"a2","status":"fail","reason":"timeout"}']
    assert other.read_bytes() == _line("b0") + _line("b1")[:20]  # another writer's file: read, never cut
    assert j.damaged == {}  # a torn tail is an interrupted write, not damage
    assert set(j.entries) == {"a0", "a2", "b0"}


def test_res01_whole_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(_line("k0") + _line("k1")[:-1])
    j = Journal(tmp_path)
    j.add({"key": "k2", "status": "fail", "reason": "timeout"})
    j.close()
    again = Journal(tmp_path)
    again.close()
    assert set(again.entries) == {"k0", "k1", "k2"} and again.damaged == {}
