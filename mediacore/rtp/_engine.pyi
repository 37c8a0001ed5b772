"""The RTP relay's packet path in C: one engine thread over an epoll set.

Use it through :mod:`mediacore.rtp.engine`; this is the raw layer, with
legs as 0 (A) / 1 (B) and addresses as packed bytes. The design (threads,
locks, why) is in the module docstring of ``_engine.pyx``.
"""

from typing import Final

EVENT_DTMF: Final[int]
EVENT_LATCHED: Final[int]
EVENT_RECORDING: Final[int]
LEG_A: Final[int]
LEG_B: Final[int]
RECORD_HEADER_SIZE: Final[int]
MAX_DATAGRAM: Final[int]
LATCH_STRICT: Final[int]
LATCH_NAT: Final[int]
LATCH_MAX_HOSTS: Final[int]

StreamDict = dict[str, int | None]

def monotonic_ns() -> int:
    """CLOCK_MONOTONIC in ns, the clock of arrival times and last_rtp_ns."""

class SessionHandle:
    """One session registered in an Engine; invalid (ValueError) after Engine.remove."""

    @property
    def id(self) -> int: ...
    def set_remote(
        self, leg: int, family: int, rtp_host: bytes, rtp_port: int,
        rtcp_host: bytes, rtcp_port: int,
    ) -> None:
        """Signalled addresses of ``leg`` (packed IPv4/IPv6); a change clears its latches."""
    def set_latching(
        self, leg: int, mode: int, family: int, hosts: list[bytes], relatch_after: float,
    ) -> None:
        """LATCH_STRICT or LATCH_NAT, further admissible hosts (packed, port
        ignored), seconds of silence before a nat latch may move (0: never);
        a new mode or new hosts clear the leg's latches."""
    def foreign_source(self, leg: int) -> tuple[str, int] | None:
        """The last source whose packet the leg dropped as unexpected."""
    def set_telephone_event(self, leg: int, payload_type: int) -> None:
        """RFC 4733 payload type received on ``leg``; -1 turns detection off."""
    def set_clock_rate(self, leg: int, rate: int) -> None: ...
    def set_recording(self, on: bool) -> None: ...
    def drain_recording(self) -> bytes:
        """Records since the last drain ("<qIIHBBBxH" header + payload each), or b""."""
    def stats(self) -> tuple[StreamDict, StreamDict, int, int]:
        """(A-to-B counters, B-to-A counters, recorded packets, recording drops)."""
    def last_rtp_ns(self) -> tuple[int, int, int]:
        """(created, last RTP arrival on A or 0, on B or 0), CLOCK_MONOTONIC ns."""
    def remote(self, leg: int) -> tuple[tuple[str, int] | None, tuple[str, int] | None]: ...
    def send(self, leg: int, packet: bytes) -> bool:
        """Send from leg's RTP socket to its current remote; False if it has none."""

class Engine:
    """The epoll set, the engine thread's loop (run) and the event ring."""

    def __init__(
        self,
        recording_capacity: int = 65536,
        recording_threshold: int = -1,
        event_capacity: int = 4096,
    ) -> None: ...
    @property
    def notify_fd(self) -> int: ...
    @property
    def events_dropped(self) -> int: ...
    @property
    def loop_errors(self) -> int: ...
    @property
    def sessions(self) -> int: ...
    def counters(self) -> dict[str, int]: ...
    def run(self) -> None:
        """Relay until stop(); call it in a dedicated thread (GIL released inside)."""
    def stop(self) -> None: ...
    def add(self, rtp_a: int, rtcp_a: int, rtp_b: int, rtcp_b: int) -> SessionHandle:
        """Relay between four bound UDP sockets (borrowed, not owned)."""
    def remove(self, handle: SessionHandle) -> None:
        """Unregister; on return the engine thread no longer touches the sockets."""
    def poll_events(self) -> list[tuple[object, ...]]: ...
    def drain_recordings(self) -> dict[int, bytes]: ...
