"""A scrape that mixes progressive-JPEG scan bombs with slow-but-healthy images (issue 13 B1,
reliability.md NET-15): the bombs are refused as `decode_cost` and the slow images, which finish
well inside their deadline, are stored; none of them is recorded as a `timeout`."""

from __future__ import annotations

import time

import pytest

from tests.e2e.helpers import failures, invoke, manifest, write_params
from tests.unit.test_decode_cost import progressive_jpeg, scan_bomb

pytestmark = pytest.mark.timeout(300)


def test_scan_bombs_beside_slow_images_cause_no_false_timeouts(tmp_path, provider_server) -> None:
    server = provider_server
    server.images.put("bomb-a.jpg", scan_bomb(2000, 5000), "image/jpeg")
    server.images.put("bomb-b.jpg", scan_bomb(2000, 4000), "image/jpeg")
    server.images.put("heavy.jpg", progressive_jpeg(3000, 50), "image/jpeg")  # costly but allowed
    slow = {rank: f"/slow/2500/slow-{rank}.jpg" for rank in range(2, 8)}
    server.configure("openverse", total=9, overrides={1: "/img/bomb-a.jpg", **slow, 8: "/img/bomb-b.jpg",
                                                      9: "/img/heavy.jpg"})
    params = write_params(tmp_path, items=["vest"], attributes=["striped"], per_query=9,
                          fetch={"deadline_s": 5, "workers": 1})
    t0 = time.monotonic()
    res = invoke("scrape", "--provider", "openverse", "--endpoint", server.base_url, "--allow-private",
                 "--params", params, "--out", tmp_path / "out", "--report", tmp_path / "scrape.json")
    seconds = time.monotonic() - t0
    assert res.exit_code == 0, res.output
    failed = failures(tmp_path / "out")
    assert "timeout" not in set(failed["reason"]), failed[["rank", "reason", "detail"]].to_string()
    assert sorted(zip(failed["rank"], failed["reason"], strict=True)) == [(1, "decode_cost"), (8, "decode_cost")]
    assert sorted(manifest(tmp_path / "out")["rank"]) == [*range(2, 8), 9]
    assert seconds < 30, f"the scrape took {seconds:.0f} s"
