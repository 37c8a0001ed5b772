"""Telling systemd how the server is doing: the sd_notify(3) protocol, spoken directly.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET``, a unix datagram
socket (a path, or an abstract name written with a leading ``@``), and each
datagram sent there is newline-separated ``KEY=VALUE`` assignments. That is
all libsystemd's ``sd_notify`` does, so there is no dependency on it. With
no ``$NOTIFY_SOCKET`` (not under systemd, or another ``Type=``) every call
here does nothing.

What the server says, and when (deploy/systemd/mediacore@.service):

- ``READY=1`` once SIP listens: ``systemctl start`` returns then, and units
  ordered after this one start only then.
- ``STATUS=...``: one line ``systemctl status`` shows.
- ``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` (``WatchdogSec=``), sent by a
  timer *on the event loop*: a loop that is stuck stops the pings, and
  systemd kills and restarts the process, which is the point. Only the
  process ``$WATCHDOG_PID`` names pings, when it names one.
- ``RELOADING=1`` with ``MONOTONIC_USEC`` at SIGHUP, then ``READY=1`` when the
  new number plan is in force (or was refused).
- ``STOPPING=1`` when SIGTERM starts the drain.

The pure parts (parsing the environment, formatting a datagram, the
watchdog interval) are functions, tested without sockets.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["Notifier", "format_message", "notify_address", "watchdog_interval"]

log = logging.getLogger("mediacore.sdnotify")


def notify_address(env: Mapping[str, str]) -> str | None:
    """The address ``$NOTIFY_SOCKET`` names, as ``socket.sendto`` takes it; None: none.

    An absolute path is a socket file; ``@name`` is the Linux abstract name
    ``\\0name``. Other forms (``vsock:``, relative paths) are not for a
    service on its host, and are refused as systemd itself would refuse them.
    """
    value = env.get("NOTIFY_SOCKET", "")
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None


def format_message(**fields: str | int) -> bytes:
    """One datagram: ``KEY=VALUE`` lines in the order given.

    A value cannot hold a newline (it would start another assignment, e.g. a
    prompt name in a STATUS line turning into ``READY=1``), so line breaks
    become spaces.
    """
    if not fields:
        raise ValueError("a notification needs at least one field")
    lines = []
    for key, value in fields.items():
        if not key.isupper() or not key.replace("_", "").isalnum():
            raise ValueError(f"not a notification key: {key!r}")
        text = " ".join(str(value).splitlines())
        lines.append(f"{key}={text}")
    return ("\n".join(lines) + "\n").encode()


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``, or None.

    None when systemd asked for no watchdog (no or a non-positive
    ``WATCHDOG_USEC``, or one that is not a number) or asked another process
    for it (``WATCHDOG_PID`` set to another pid, e.g. the variable was
    inherited). Half the timeout, as sd_watchdog_enabled(3) advises: one late
    ping is not yet a restart.
    """
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner is not None:
        try:
            if int(owner) != pid:
                return None
        except ValueError:
            return None
    return usec / 2 / 1_000_000


class Notifier:
    """The server's side of the protocol; every method is a no-op without a socket.

    Sending never raises: a notification that cannot be delivered (systemd
    went away, a full socket buffer) must not stop calls. The first failure
    is logged once.
    """

    def __init__(self, address: str | None, watchdog: float | None = None) -> None:
        self.address = address
        self.watchdog_interval = watchdog
        self._sock: socket.socket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._failed = False
        if address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None,
                         pid: int | None = None) -> Notifier:
        env = os.environ if env is None else env
        return cls(notify_address(env),
                   watchdog_interval(env, os.getpid() if pid is None else pid))

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields: str | int) -> None:
        if self._sock is None:
            return
        data = format_message(**fields)
        try:
            self._sock.sendto(data, self.address)
        except OSError as error:
            if not self._failed:
                self._failed = True
                log.warning("cannot notify systemd at %s: %s", os.environ.get(
                    "NOTIFY_SOCKET", self.address), error)

    def ready(self, status: str) -> None:
        self.send(READY=1, STATUS=status)

    def status(self, status: str) -> None:
        self.send(STATUS=status)

    def reloading(self) -> None:
        # MONOTONIC_USEC: CLOCK_MONOTONIC (what time.monotonic reads on Linux),
        # so systemd can tell this reload from an earlier one.
        self.send(RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000,
                  STATUS="reloading the config")

    def stopping(self, status: str) -> None:
        self.send(STOPPING=1, STATUS=status)

    def start_watchdog(self, loop: asyncio.AbstractEventLoop) -> None:
        """Ping now and then every interval, from ``loop``: only a live loop pings."""
        if self._sock is None or self.watchdog_interval is None or self._timer is not None:
            return
        self._ping(loop)

    def _ping(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.watchdog_interval is not None
        self.send(WATCHDOG=1)
        self._timer = loop.call_later(self.watchdog_interval, self._ping, loop)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
