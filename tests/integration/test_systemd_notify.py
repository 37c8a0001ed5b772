"""The real server under a stand-in for systemd: a unix datagram socket the test binds.

``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` are set as systemd sets them for a
``Type=notify`` unit with ``WatchdogSec=``; the test then reads what the
server says: READY=1 once it listens, WATCHDOG=1 pings, RELOADING=1 then
READY=1 around SIGHUP, STOPPING=1 at SIGTERM. Both forms of the address are
tried: a socket file and an abstract name (``@...``, what systemd uses).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mediacore.sdnotify import Notifier
from tests.support.server import MediacoreServer, basic_config, free_sip_port

pytestmark = pytest.mark.integration

WATCHDOG_USEC = 400_000  # WatchdogSec=0.4s: a ping every 0.2 s


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET: every datagram, parsed, in order."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.messages: list[dict[str, str]] = []

    def wait_for(self, key: str, value: str = "1", timeout: float = 10.0,
                 after: int = 0) -> int:
        """Index of the first message from ``after`` on with ``key=value``."""
        deadline = time.monotonic() + timeout
        while True:
            for index in range(after, len(self.messages)):
                if self.messages[index].get(key) == value:
                    return index
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key}={value} after message {after}: {self.messages}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            lines = data.decode().splitlines()
            assert data.endswith(b"\n") and all("=" in line for line in lines), data
            self.messages.append(dict(line.split("=", 1) for line in lines))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def systemd(request: pytest.FixtureRequest, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSystemd]:
    if request.param == "path":
        address = str(tmp_path / "notify.sock")
        monkeypatch.setenv("NOTIFY_SOCKET", address)
    else:
        name = f"mediacore-test-{uuid.uuid4().hex}"
        address = "\0" + name
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    # MediacoreServer hands the test's environment to the server it starts.
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    fake = FakeSystemd(address)
    yield fake
    fake.close()


def test_ready_watchdog_reload_and_stop_reach_systemd(
        systemd: FakeSystemd, tmp_path: Path) -> None:
    port = free_sip_port()
    server = MediacoreServer(tmp_path, basic_config(port, tmp_path / "var"), port)
    server.start()
    try:
        ready = systemd.wait_for("READY")
        assert "listening on udp:127.0.0.1:" in systemd.messages[ready]["STATUS"]
        # Pings from the running loop, several in a row.
        first = systemd.wait_for("WATCHDOG", after=ready)
        third = systemd.wait_for("WATCHDOG", after=systemd.wait_for("WATCHDOG", after=first + 1)
                                 + 1)
        assert third > first
        assert server.process is not None
        server.process.send_signal(signal.SIGHUP)
        reloading = systemd.wait_for("RELOADING", after=third + 1)
        stamp = int(systemd.messages[reloading]["MONOTONIC_USEC"])
        assert 0 < stamp <= time.monotonic_ns() // 1000  # CLOCK_MONOTONIC, as systemd reads it
        again = systemd.wait_for("READY", after=reloading + 1)
        assert systemd.messages[again]["STATUS"] == "serving 1 numbers"
        server.wait_for_log("reloaded")
        systemd.wait_for("WATCHDOG", after=again + 1)  # still pinging after the reload
    finally:
        code = server.stop()
    stopping = systemd.wait_for("STOPPING")
    assert stopping > ready
    assert code == 0, server.log


def test_watchdog_pings_stop_while_the_loop_is_stuck(tmp_path: Path) -> None:
    """The pinger runs on the event loop: blocking the loop blocks the pings."""
    address = str(tmp_path / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(address)
    receiver.setblocking(False)

    def drain() -> list[bytes]:
        got = []
        while True:
            try:
                got.append(receiver.recv(4096))
            except BlockingIOError:
                return got

    async def scenario() -> tuple[list[bytes], list[bytes], list[bytes]]:
        notifier = Notifier(address, watchdog=0.01)
        notifier.start_watchdog(asyncio.get_running_loop())
        await asyncio.sleep(0.1)
        before = drain()
        time.sleep(0.3)  # the loop is stuck: 30 intervals pass
        during = drain()  # taken before the loop runs anything again
        await asyncio.sleep(0.1)
        after = drain()
        notifier.close()
        return before, during, after

    try:
        before, during, after = asyncio.run(scenario())
    finally:
        receiver.close()
    assert before and set(before) == {b"WATCHDOG=1\n"}
    assert during == []
    assert after and set(after) == {b"WATCHDOG=1\n"}


def test_an_inherited_watchdog_for_another_pid_sends_no_pings(tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(address)
    receiver.settimeout(0.3)
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "20000",
           "WATCHDOG_PID": str(os.getpid() + 1)}

    async def scenario() -> None:
        notifier = Notifier.from_environment(env)
        notifier.start_watchdog(asyncio.get_running_loop())
        notifier.status("up")
        await asyncio.sleep(0.1)
        notifier.close()

    try:
        asyncio.run(scenario())
        assert receiver.recv(4096) == b"STATUS=up\n"  # the socket works; no ping came
        with pytest.raises(TimeoutError):
            receiver.recv(4096)
    finally:
        receiver.close()
