"""Plain UDP peers for tests of the RTP engine and of a running server's media.

A peer is one socket on a loopback address (127.0.0.1 is the call's parties;
other 127.x addresses stand for other hosts, e.g. an attacker on
127.0.0.66). Waits are bounded by deadlines and end as soon as the packets
are there; nothing here asserts on how long anything took.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from mediacore.rtp.packet import build_rtp

HOST = "127.0.0.1"
ATTACKER = "127.0.0.66"
DEADLINE = 5.0
PT_PCMU = 0


def wait_for(predicate: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.002)


def rtp(seq: int, payload: bytes = b"\xff" * 160, *, ssrc: int = 0x1234, pt: int = PT_PCMU,
        **kw: object) -> bytes:
    """A G.711 RTP packet with sequence ``seq`` (timestamp ``seq * 160``)."""
    return build_rtp(pt, seq, seq * 160, ssrc, payload, **kw)  # type: ignore[arg-type]


class UdpPeer:
    """One end of a call: a UDP socket on ``host`` that collects what it receives."""

    def __init__(self, host: str = HOST, port: int = 0) -> None:
        self.host = host
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def send(self, data: bytes, port: int, host: str = HOST) -> None:
        self.sock.sendto(data, (host, port))

    def recv(self, count: int = 1) -> list[tuple[bytes, tuple[str, int]]]:
        """Exactly ``count`` datagrams, or AssertionError after the deadline."""
        out = []
        deadline = time.monotonic() + DEADLINE
        while len(out) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"got {len(out)} of {count} datagrams")
            self.sock.settimeout(left)
            try:
                out.append(self.sock.recvfrom(65536))
            except TimeoutError:
                continue
        return out

    def drain(self) -> list[tuple[bytes, tuple[str, int]]]:
        """Whatever is waiting now, without blocking."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recvfrom(65536))
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)
        return out

    def nothing(self, settle: float = 0.1) -> bool:
        """True if nothing is waiting after a short settle (for "was dropped")."""
        time.sleep(settle)
        return not self.drain()

    def close(self) -> None:
        self.sock.close()
