"""Process-wide RTP totals from the engine's per-session counters.

The engine counts every packet in C, per session and direction; nothing is
added to the packet path for metrics. What a closed session counted would
vanish with it, so :class:`RelayTotals` is the engine's
``on_session_closed`` hook: it adds each session's final counters (one
stats copy per call) to the closed totals, and observes the call's jitter
once per direction. At scrape time :meth:`RelayTotals.snapshot` adds the
open sessions' counters to those.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from prometheus_client import Histogram

from mediacore.rtp.engine import RawStats

#: Label values of the ``direction`` label: where the packets came from.
DIRECTIONS = ("from_caller", "from_target")

#: Jitter buckets, seconds: G.711 at 20 ms; beyond 100 ms a call is unusable.
JITTER_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)


@dataclass(slots=True)
class DirectionTotals:
    """The engine's counters for one direction, summed over sessions."""

    packets: int = 0
    bytes: int = 0
    forwarded: int = 0
    lost: int = 0  # RFC 3550's, each session's floored at 0 (duplicates make it negative)
    rtcp_packets: int = 0
    rtcp_bytes: int = 0
    no_destination: int = 0
    send_errors: int = 0
    garbage: int = 0
    strict_dropped: int = 0
    foreign: int = 0
    relatches: int = 0
    dtmf_events: int = 0

    def add(self, stream: dict[str, Any]) -> None:
        """Add one direction's raw engine counters (``_stream_dict``'s keys)."""
        self.packets += stream["packets"]
        self.bytes += stream["bytes"]
        self.forwarded += stream["forwarded"]
        lost = stream["expected"] - stream["received"]
        if lost > 0:
            self.lost += lost
        self.rtcp_packets += stream["rtcp_packets"]
        self.rtcp_bytes += stream["rtcp_bytes"]
        self.no_destination += stream["no_destination"]
        self.send_errors += stream["send_errors"]
        self.garbage += stream["garbage"]
        self.strict_dropped += stream["strict_dropped"]
        self.foreign += stream["foreign"]
        self.relatches += stream["relatches"]
        self.dtmf_events += stream["dtmf_events"]

    def copy(self) -> DirectionTotals:
        return DirectionTotals(*(getattr(self, f.name) for f in fields(self)))


class RelayTotals:
    """Closed sessions' counters, kept; open sessions' added at each snapshot."""

    def __init__(self, jitter: Histogram | None = None) -> None:
        self.closed = {direction: DirectionTotals() for direction in DIRECTIONS}
        self.sessions_closed = 0
        self._jitter = jitter
        self._jitter_children = (
            {d: jitter.labels(direction=d) for d in DIRECTIONS} if jitter is not None else {})

    def session_closed(self, stats: RawStats) -> None:
        """The engine's ``on_session_closed``: once per call, on the loop."""
        self.sessions_closed += 1
        for direction, stream in zip(DIRECTIONS, stats[:2], strict=True):
            self.closed[direction].add(stream)
            child = self._jitter_children.get(direction)
            rate = stream["clock_rate"]
            if child is not None and stream["packets"] > 1 and rate:
                child.observe(stream["jitter_q4"] / 16 / rate)  # RFC 3550 A.8 keeps it x16

    def snapshot(self, open_sessions: Iterable[RawStats]) -> dict[str, DirectionTotals]:
        """Closed sessions' totals plus ``open_sessions``' (MediaEngine.open_stats())."""
        totals = {direction: t.copy() for direction, t in self.closed.items()}
        caller, target = totals[DIRECTIONS[0]], totals[DIRECTIONS[1]]
        for stats in open_sessions:
            caller.add(stats[0])
            target.add(stats[1])
        return totals
