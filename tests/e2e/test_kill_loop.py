"""The kill loop of issue 13 in the suite: 3 random SIGKILLs of the main process alone, of one
download worker alone and of the whole process group, each followed by a re-run (RES-01,
CON-02). The 20-of-each version is bench/kill_loop.py."""

from __future__ import annotations

import sys

import pytest

from tests.fixtures.kill_loop import kill_loop

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process trees from /proc"),
]


def test_res01_con02_kill_loop_main_worker_group(tmp_path, provider_server) -> None:
    fig = kill_loop(tmp_path, provider_server, kills_per_mode=3, n_urls=400, seed=13)
    summary = fig.as_dict()
    assert fig.alive_at_next_start == 0, summary  # B4: nothing of a killed run outlives GRACE_S
    # SIGKILL exits -9; a worker's death makes the main process stop the other one and exit 1
    assert fig.exit_codes == {"-9": 6, "1": 3} and fig.final_exit == 0, summary
    assert fig.stored + fig.failed == fig.urls and fig.stored > 0 and fig.failed > 0, summary
    assert fig.missing_urls == 0 and fig.repeated_urls == 0 and fig.unknown_urls == 0, summary
    assert not fig.verify_problems, summary
    assert fig.duplicate_gets_of_settled == 0, summary
    assert fig.peak_per_host <= fig.per_host, summary
    assert fig.kills == {"main": 3, "worker": 3, "group": 3}, summary  # the job outlasted every kill
    assert fig.ok
