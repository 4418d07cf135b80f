"""The output-folder lock names its holder (issue 13 B10, CON-01)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from datakit.errors import LockedError
from datakit.fsutil import folder_lock

pytestmark = pytest.mark.timeout(60)


def test_lock_message_names_the_holders_command_not_the_callers(tmp_path: Path) -> None:  # B10
    code = ("import sys, time; from pathlib import Path; from datakit.fsutil import folder_lock\n"
            f"with folder_lock(Path({str(tmp_path)!r}), 'datakit scrape'):\n"
            "    print('locked', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError) as info:
            with folder_lock(tmp_path, "datakit dedup"):
                pass
    finally:
        holder.kill()
        holder.wait()
    msg = str(info.value)
    assert f"in use by another datakit scrape run (pid {holder.pid} on host {socket.gethostname()})" in msg
    assert "dedup" not in msg


def test_an_old_style_lock_file_is_still_shown(tmp_path: Path) -> None:  # a lock written before B10's format
    (tmp_path / ".datakit").mkdir()
    (tmp_path / ".datakit" / "lock").write_text("pid 12 on host h")
    import fcntl

    fd = os.open(tmp_path / ".datakit" / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(LockedError, match=r"in use by another datakit run \(pid 12 on host h\)"):
            with folder_lock(tmp_path, "datakit split"):
                pass
    finally:
        os.close(fd)
