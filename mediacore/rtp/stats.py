"""Per-stream RTP statistics: the figures the engine reports, and the RFC 3550
algorithms they come from, written out in Python.

The engine keeps these counters in C per direction and copies them out on
request (``MediaEngine.stats``), so reading them costs nothing per packet.
``SourceTracker`` is the same arithmetic in Python, line for line after
RFC 3550 appendix A.1 (sequence validation), A.3 (expected and lost) and
A.8 (interarrival jitter, the integer variant): the integration tests feed
it the arrival times the engine recorded and expect the engine's figures to
the unit, and tools can use it on captures.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SessionStats", "SourceTracker", "StreamStats", "rtp_time"]

RTP_SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2
NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class StreamStats:
    """One direction of a session, counted where the packets arrive.

    ``a_to_b`` counts what arrived on leg A (from the caller) and went to B.
    ``lost`` and ``expected`` are RFC 3550 A.3 cumulative figures summed over
    every SSRC seen (a source change starts a new count, as the RFC does per
    source); ``lost`` can be negative when duplicates arrive. ``jitter`` is
    A.8's estimate in timestamp units, ``jitter_ms`` the same in milliseconds
    at ``clock_rate``; telephone-event packets are left out of it, because
    their timestamp is the event's start, not the packet's.
    """

    packets: int
    bytes: int
    payload_bytes: int
    expected: int
    lost: int
    jitter: float
    jitter_ms: float
    clock_rate: int
    ssrc: int | None
    first_arrival_ns: int | None
    last_arrival_ns: int | None
    rtcp_packets: int
    rtcp_bytes: int
    forwarded: int
    no_destination: int
    send_errors: int
    garbage: int
    strict_dropped: int
    foreign: int
    relatches: int
    dtmf_events: int
    injected: int


@dataclass(frozen=True, slots=True)
class SessionStats:
    """Both directions of one session and its recording tap."""

    a_to_b: StreamStats
    b_to_a: StreamStats
    recorded_packets: int
    recording_dropped: int


def rtp_time(arrival_ns: int, clock_rate: int) -> int:
    """An arrival time in RTP timestamp units, modulo 2**32 (A.8's ``arrival``).

    Exact integer arithmetic on CLOCK_MONOTONIC nanoseconds, the same as the
    engine, so jitter computed here and there agrees to the unit.
    """
    return (arrival_ns * clock_rate // NS_PER_S) & 0xFFFFFFFF


class SourceTracker:
    """RFC 3550 A.1/A.3/A.8 for the packets of one direction.

    A new SSRC starts a new source (probation, fresh jitter); what the old
    source expected and received is kept, so ``lost`` covers the direction.
    """

    def __init__(self, clock_rate: int = 8000) -> None:
        self.clock_rate = clock_rate
        self.ssrc: int | None = None
        self._expected_before = 0
        self._received_before = 0
        self._start(0, 0)

    def _start(self, ssrc: int, seq: int) -> None:
        self.ssrc = ssrc
        self._init_seq(seq)
        self.max_seq = (seq - 1) & 0xFFFF
        self.probation = MIN_SEQUENTIAL
        self.transit: int | None = None
        self.jitter_q4 = 0

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = RTP_SEQ_MOD + 1
        self.cycles = 0
        self.received = 0

    def update(self, ssrc: int, seq: int, timestamp: int, arrival_ns: int, *,
               jitter: bool = True) -> bool:
        """Account one packet; False when A.1 does not count it (probation, a jump)."""
        if self.ssrc is None or ssrc != self.ssrc:
            if self.ssrc is not None:
                self._expected_before += self._expected()
                self._received_before += self.received
            self._start(ssrc, seq)
        counted = self._update_seq(seq)
        if jitter:
            transit = (rtp_time(arrival_ns, self.clock_rate) - timestamp) & 0xFFFFFFFF
            if self.transit is not None:
                d = (transit - self.transit) & 0xFFFFFFFF
                if d >= 1 << 31:
                    d = (1 << 32) - d
                self.jitter_q4 += d - ((self.jitter_q4 + 8) >> 4)
            self.transit = transit
        return counted

    def _update_seq(self, seq: int) -> bool:
        udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation:
            if seq == (self.max_seq + 1) & 0xFFFF:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    return True
            else:
                self.probation = MIN_SEQUENTIAL - 1
                self.max_seq = seq
            return False
        if udelta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += RTP_SEQ_MOD
            self.max_seq = seq
        elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
            if seq == self.bad_seq:
                self._init_seq(seq)
            else:
                self.bad_seq = (seq + 1) & (RTP_SEQ_MOD - 1)
                return False
        self.received += 1
        return True

    def _expected(self) -> int:
        if self.probation:
            return 0
        return self.cycles + self.max_seq - self.base_seq + 1

    @property
    def expected(self) -> int:
        return self._expected_before + self._expected()

    @property
    def lost(self) -> int:
        return self.expected - (self._received_before + self.received)

    @property
    def jitter(self) -> float:
        """A.8's jitter in timestamp units (the integer variant keeps it times 16)."""
        return self.jitter_q4 / 16
