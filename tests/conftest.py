"""Shared test setup: no test reaches beyond loopback, DVC never phones home."""

from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tripwire: any connection outside 127.0.0.0/8 or ::1 fails the test at once."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def allowed(address: object) -> bool:
        if isinstance(address, tuple) and address:
            host = str(address[0])
            return host.startswith("127.") or host in ("::1", "localhost")
        return True  # AF_UNIX paths

    def guard_connect(self: socket.socket, address: object) -> None:
        if not allowed(address):
            raise AssertionError(f"test tried to connect outside loopback: {address!r}")
        return real_connect(self, address)

    def guard_connect_ex(self: socket.socket, address: object) -> int:
        if not allowed(address):
            raise AssertionError(f"test tried to connect outside loopback: {address!r}")
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", guard_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guard_connect_ex)

pytest_plugins = ["tests.fixtures.servers"]
