"""The relay engine's Python face, for the call layer.

One :class:`MediaEngine` per process relays the RTP and RTCP of every call.
The packets never come up to Python: a native thread (``_engine.pyx``) reads
every relay socket with epoll and recvmmsg and forwards with sendmmsg, because
at 1,000 calls (100,000 packets a second each way) a Python callback per
packet would cost more CPU than the kernel does. What Python does here is per
call or per batch: open and close sessions, tell them what SDP said, read
counters, drain the recording tap, and receive the few events worth a
decision (a DTMF digit, a latch, a recording buffer filling up).

Where a leg's packets may come from (the latching rule, per leg, for RTP
and RTCP separately; rtpengine's strict-source and media-handover are the
model). The threat is a third host on the network: one that sprays RTP at
every port of the range must get nothing back and put nothing into a call.
A packet from a source the rule does not accept is dropped: never relayed,
never recorded, never answered, never latched onto, only counted
(``strict_dropped`` / ``foreign``, and the last such source is kept for the
call's log line, :meth:`Session.foreign_source`). Each leg has one of two
modes (:meth:`Session.set_latching`):

1. ``strict`` (the default, also of a leg nobody configured): only packets
   from the exact address and port its SDP signalled
   (:meth:`Session.set_remote`) are accepted, and packets to the leg go
   there. A leg without SDP yet accepts nothing.
2. ``nat`` (peers behind NAT, whose packets come from another port, or
   from their public address while SDP names a private one): the first
   well-formed packet from an *admissible host* latches the leg, and from
   then on only that exact source (host and port) is accepted; packets to
   the leg go to it (before it, to the signalled address). Admissible are
   the host of the SDP address and the hosts given to ``set_latching``
   (the call layer gives the leg's SIP signalling peer): a NATed peer's
   media comes from one of those, so a third host cannot win the race to
   the first packet, not even while the caller listens to the recording
   notice and has sent nothing yet.
3. A latch moves only by signalling: :meth:`Session.set_remote` with a new
   address (a re-INVITE's or UPDATE's new SDP) and ``set_latching`` with a
   new mode or hosts forget it, and the next admissible packet latches
   afresh; the same SDP again (a session refresh) keeps it. Or, where ``relatch_after`` is
   set (off by default), when the latched source has been silent that long
   (a NAT rebinding, a phone restarted on another port): then the next
   packet from an admissible host takes the latch over. Never a host that
   signalling did not name.
4. Garbage (not RTP/RTCP by the checks below) never latches; it is counted
   as ``garbage`` whatever its source.

RTCP follows the same rule on the RTCP sockets, with latches of its own
(checked against the signalled RTCP address, SDP's a=rtcp or port + 1).
RTCP multiplexed on the RTP port (RFC 5761) is recognised by its packet
type, checked against the RTP socket's rule and latch, and relayed RTP
socket to RTP socket, without touching RTP statistics or the recording.

Threads: the packet thread never takes the GIL; the event loop thread
calls into it through short per-session critical sections (configuration,
counters, swapping the recording buffer) and learns about events from an
eventfd it watches with ``add_reader``. The design and the locking rules are
in the docstring of ``_engine.pyx``; the measurements behind them in
benchmarks/RESULTS.md.

Payload, SSRC, sequence numbers and timestamps pass through unchanged:
this is a relay, not a re-packetiser. Both legs must therefore use the same
codec (the B2BUA's SDP answer makes sure of that).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from mediacore.rtp import _engine
from mediacore.rtp.dtmf import DIGITS
from mediacore.rtp.ports import PortPair, PortPool
from mediacore.rtp.stats import SessionStats, StreamStats

__all__ = [
    "DtmfEvent",
    "LatchedEvent",
    "Latching",
    "Leg",
    "LegPorts",
    "MediaEngine",
    "MediaEvent",
    "RecordingReady",
    "Session",
]


class Leg(IntEnum):
    """A is the caller's side (inbound leg), B the callee's (outbound leg).

    Also the ``direction`` of a recording record: 0 = arrived on A, going to B.
    """

    A = 0
    B = 1


class Latching(StrEnum):
    """A leg's latching mode (the rule in the module doc); the values are the config's."""

    STRICT = "strict"
    NAT = "nat"


_MODES = {Latching.STRICT: _engine.LATCH_STRICT, Latching.NAT: _engine.LATCH_NAT}


@dataclass(frozen=True, slots=True)
class LegPorts:
    """Our local ports for one leg, to put in its SDP (m= port, a=rtcp)."""

    rtp: int
    rtcp: int


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    """An RFC 4733 event ended on ``leg`` (reported once, at its first end packet).

    ``digit`` is ``"0"``-``"9"``, ``"*"``, ``"#"``, ``"A"``-``"D"``, or None for
    other events (16 = flash); ``duration`` is in timestamp units.
    """

    session: Session
    leg: Leg
    time_ns: int
    event: int
    digit: str | None
    volume: int
    duration: int
    timestamp: int
    ssrc: int


@dataclass(frozen=True, slots=True)
class LatchedEvent:
    """``leg``'s return path (RTP or RTCP) now goes to (host, port)."""

    session: Session
    leg: Leg
    time_ns: int
    rtcp: bool
    address: tuple[str, int] | None


@dataclass(frozen=True, slots=True)
class RecordingReady:
    """The session's recording buffer passed its threshold: drain it soon.

    Sent once per drain; a recorder that drains on a timer can ignore it,
    it exists so that one that falls behind loses nothing.
    """

    session: Session
    time_ns: int
    buffered: int


MediaEvent = DtmfEvent | LatchedEvent | RecordingReady
EventHandler = Callable[[list[MediaEvent]], None]
#: A session's counters as the engine copies them out, unconverted: (A-to-B dict,
#: B-to-A dict, recorded packets, recording drops), keys as in ``_engine.pyx``'s
#: ``_stream_dict``. Metrics read these in bulk, where building StreamStats
#: would cost three times the copy.
RawStats = tuple[dict, dict, int, int]
#: Called with a session's last counters as it closes (see MediaEngine.on_session_closed).
ClosedHandler = Callable[[RawStats], None]


class Session:
    """One call's relay: leg A and leg B, each with its own RTP+RTCP ports.

    Obtained from :meth:`MediaEngine.open_session`; closed with :meth:`close`
    (or by closing the engine). Methods are cheap (one short critical
    section in the engine) and may be called while packets flow.
    """

    def __init__(self, engine: MediaEngine, handle: _engine.SessionHandle,
                 pair_a: PortPair, pair_b: PortPair) -> None:
        self._engine = engine
        self._handle = handle
        self._pairs = (pair_a, pair_b)
        self._family = pair_a.rtp.family
        self.id: int = handle.id
        self.leg_a = LegPorts(pair_a.rtp_port, pair_a.rtcp_port)
        self.leg_b = LegPorts(pair_b.rtp_port, pair_b.rtcp_port)
        self.closed = False

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Session {self.id} A={self.leg_a.rtp} B={self.leg_b.rtp} {state}>"

    def ports(self, leg: Leg) -> LegPorts:
        return self.leg_a if leg == Leg.A else self.leg_b

    def set_remote(self, leg: Leg, host: str, port: int, rtcp_port: int | None = None) -> None:
        """Where SDP says ``leg`` receives: the c= address and m= port (and a=rtcp).

        RTCP defaults to port + 1 (RFC 3550 section 11); pass ``rtcp_port=port``
        for rtcp-mux. A new address forgets the leg's latches (rule 3 in the
        module doc); the same one again keeps them.
        The host must be an IP literal of our socket's family: SDP carries
        addresses, and resolving names on the media path is not our job.
        """
        address = ipaddress.ip_address(host)
        family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        if family != self._family:
            raise ValueError(f"{host}: our RTP sockets are {self._family.name}")
        if not 0 < port < 65536 or (rtcp_port is not None and not 0 < rtcp_port < 65536):
            raise ValueError(f"port {port}/{rtcp_port}: out of range")
        rtcp = port + 1 if rtcp_port is None else rtcp_port
        self._handle.set_remote(int(leg), int(family), address.packed, port, address.packed, rtcp)

    def set_latching(self, leg: Leg, mode: Latching, *, hosts: Iterable[str] = (),
                     relatch_after: float | None = None) -> None:
        """Where ``leg``'s packets may come from (the rule in the module doc).

        ``hosts`` are IP literals a ``nat`` leg may latch onto besides the
        host of its SDP address (the leg's SIP peer); hosts of the other
        address family are left out, since no packet from them can reach
        our sockets. ``relatch_after``: seconds of silence of the latched
        source after which an admissible source takes a nat latch over
        (None: never). A new mode or new hosts forget the leg's latches
        (rule 3). ValueError for a host
        that is not an IP literal or more than ``_engine.LATCH_MAX_HOSTS``.
        """
        packed: list[bytes] = []
        for host in hosts:
            address = ipaddress.ip_address(host)
            family = socket.AF_INET if address.version == 4 else socket.AF_INET6
            if family == self._family and address.packed not in packed:
                packed.append(address.packed)
        if len(packed) > _engine.LATCH_MAX_HOSTS:
            raise ValueError(f"at most {_engine.LATCH_MAX_HOSTS} hosts")
        if relatch_after is not None and not relatch_after > 0:
            raise ValueError(f"relatch_after {relatch_after}: must be positive (or None)")
        self._handle.set_latching(int(leg), _MODES[Latching(mode)], int(self._family), packed,
                                  relatch_after or 0.0)

    def foreign_source(self, leg: Leg) -> tuple[str, int] | None:
        """The last source whose packet ``leg`` dropped as unexpected, or None."""
        return self._handle.foreign_source(int(leg))

    def set_telephone_event(self, leg: Leg, payload_type: int | None) -> None:
        """The RFC 4733 payload type negotiated for what ``leg`` sends us (None: off)."""
        self._handle.set_telephone_event(int(leg), -1 if payload_type is None else payload_type)

    def set_clock_rate(self, leg: Leg, rate: int) -> None:
        """RTP clock of ``leg``'s codec (8000 for G.711, the default): for jitter only."""
        self._handle.set_clock_rate(int(leg), rate)

    def set_recording(self, enabled: bool) -> None:
        """Start or stop copying every relayed RTP packet into the tap buffer.

        Stopping keeps what is buffered, so a final drain still gets it.
        """
        self._handle.set_recording(enabled)

    def drain_recording(self) -> bytes:
        """The tap records since the last drain (``packet.RECORD`` + payload each), or b""."""
        return self._handle.drain_recording()

    def stats(self) -> SessionStats:
        a, b, recorded, dropped = self._handle.stats()
        return SessionStats(_stream(a), _stream(b), recorded, dropped)

    def idle_seconds(self, now_ns: int | None = None) -> float:
        """Seconds since the last RTP packet from either leg (since opening if none).

        The call layer hangs up when this passes ``inactivity_timeout``: both
        sides silent means the call is dead even if nobody sent a BYE. RTCP
        does not count: a phone whose media died may go on sending reports.
        """
        created, last_a, last_b = self._handle.last_rtp_ns()
        now = _engine.monotonic_ns() if now_ns is None else now_ns
        return max(0, now - max(created, last_a, last_b)) / 1e9

    def remote(self, leg: Leg) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
        """Where packets to ``leg`` go now: ((rtp host, port), (rtcp host, port))."""
        return self._handle.remote(int(leg))

    def send(self, leg: Leg, packet: bytes) -> bool:
        """Send a complete RTP packet to ``leg`` from its RTP socket (announcements).

        Goes to the leg's current remote (nat: latched, else signalled); returns
        False, sending nothing, when there is none yet. Not recorded: the
        recording starts after the recording notice has been played.
        """
        return self._handle.send(int(leg), packet)

    def close(self) -> None:
        self._engine.close_session(self)


def _stream(d: dict) -> StreamStats:
    jitter = d["jitter_q4"] / 16
    return StreamStats(
        packets=d["packets"],
        bytes=d["bytes"],
        payload_bytes=d["payload_bytes"],
        expected=d["expected"],
        lost=d["expected"] - d["received"],
        jitter=jitter,
        jitter_ms=jitter * 1000 / d["clock_rate"],
        clock_rate=d["clock_rate"],
        ssrc=d["ssrc"],
        first_arrival_ns=d["first_arrival_ns"],
        last_arrival_ns=d["last_arrival_ns"],
        rtcp_packets=d["rtcp_packets"],
        rtcp_bytes=d["rtcp_bytes"],
        forwarded=d["forwarded"],
        no_destination=d["no_destination"],
        send_errors=d["send_errors"],
        garbage=d["garbage"],
        strict_dropped=d["strict_dropped"],
        foreign=d["foreign"],
        relatches=d["relatches"],
        dtmf_events=d["dtmf_events"],
        injected=d["injected"],
    )


class MediaEngine:
    """Every call's relay in this process, and the thread that moves the packets.

    ``address`` is the local address the relay sockets bind (config
    ``rtp.address``); ``port_pool`` hands out their ports. Use as::

        engine = MediaEngine("127.0.0.1", PortPool(config.rtp.port_range))
        engine.start(loop, on_events)
        session = engine.open_session()   # PortsExhausted -> answer 503
        ...
        session.close()
        engine.close()

    Every leg starts ``strict``; the call layer sets each leg's mode
    (:meth:`Session.set_latching`) from the config.

    ``recording_buffer`` bounds each recorded session's tap buffer (64 KiB
    holds about 3.5 s of G.711/20 ms in both directions); records that do
    not fit are dropped and counted, the relay never waits for the recorder.
    """

    def __init__(
        self,
        address: str,
        port_pool: PortPool,
        *,
        recording_buffer: int = 65536,
        recording_threshold: int | None = None,
        event_capacity: int = 4096,
    ) -> None:
        self.address = address
        self.port_pool = port_pool
        self._core = _engine.Engine(
            recording_buffer,
            -1 if recording_threshold is None else recording_threshold,
            event_capacity,
        )
        self._sessions: dict[int, Session] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_events: EventHandler | None = None
        self._closed = False
        #: When set, every session's final counters (:data:`RawStats`) are
        #: handed to it as the session closes (one copy per call, ~2 us): how
        #: process-wide RTP totals outlive the sessions. None costs nothing.
        self.on_session_closed: ClosedHandler | None = None

    def __enter__(self) -> MediaEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def event_fd(self) -> int:
        """An eventfd that is readable while events are pending (for add_reader)."""
        return self._core.notify_fd

    @property
    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    @property
    def running(self) -> bool:
        """The packet thread is alive (started and neither stopped nor dead)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def events_dropped(self) -> int:
        """Events lost because Python did not poll for ``event_capacity`` events."""
        return self._core.events_dropped

    def open_stats(self) -> list[RawStats]:
        """Every open session's counters, raw (:data:`RawStats`): for metrics."""
        return [session._handle.stats() for session in self._sessions.values()]

    def counters(self) -> dict[str, int]:
        """Engine-wide totals (wake-ups, sockets read, datagrams read, drops)."""
        return self._core.counters()

    def start(self, loop: asyncio.AbstractEventLoop | None = None,
              on_events: EventHandler | None = None, *,
              realtime_priority: int | None = None) -> None:
        """Start the engine thread; with ``loop``, deliver events to ``on_events`` on it.

        Without a loop the caller polls :meth:`poll_events` itself (tests, tools).

        ``realtime_priority`` (1-99) runs the packet thread under SCHED_FIFO.
        On a shared core every other runnable task otherwise gets its CFS
        slice (milliseconds) while packets queue: in benchmarks/RESULTS.md
        that, not CPU, is what decides p99 latency. The kernel's RT
        throttling still leaves 5% of the CPU to everything else; needs root
        or CAP_SYS_NICE (PermissionError otherwise, the thread keeps running).
        """
        if self._closed:
            raise RuntimeError("the engine is closed")
        if self._thread is not None:
            raise RuntimeError("the engine is already started")
        self._thread = threading.Thread(target=self._core.run, name="rtp-engine", daemon=True)
        self._thread.start()
        if loop is not None:
            self._loop = loop
            self._on_events = on_events
            loop.add_reader(self.event_fd, self._events_ready)
        if realtime_priority is not None and self._thread.native_id is not None:
            os.sched_setscheduler(self._thread.native_id, os.SCHED_FIFO,
                                  os.sched_param(realtime_priority))

    def _events_ready(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.event_fd, 8)
        events = self.poll_events()
        if events and self._on_events is not None:
            self._on_events(events)

    def poll_events(self) -> list[MediaEvent]:
        """Every event since the last poll, oldest first.

        Events of sessions closed in the meantime are left out: nobody is
        left to act on them.
        """
        out: list[MediaEvent] = []
        for raw in self._core.poll_events():
            session = self._sessions.get(raw[1])
            if session is None:
                continue
            kind, _, leg, time_ns = raw[:4]
            if kind == _engine.EVENT_DTMF:
                code, volume, duration, timestamp, ssrc = raw[4:]
                digit = DIGITS[code] if code < 16 else None  # keys only, not flash
                out.append(DtmfEvent(session, Leg(leg), time_ns, code, digit, volume,
                                     duration, timestamp, ssrc))
            elif kind == _engine.EVENT_LATCHED:
                out.append(LatchedEvent(session, Leg(leg), time_ns, raw[4], raw[5]))
            elif kind == _engine.EVENT_RECORDING:
                out.append(RecordingReady(session, time_ns, raw[4]))
        return out

    def open_session(self) -> Session:
        """Allocate two port pairs, bind them and start relaying between them.

        Raises ports.PortsExhausted (the call layer's 503) when the pool is dry.
        """
        if self._closed:
            raise RuntimeError("the engine is closed")
        pair_a = self.port_pool.allocate(self.address)
        try:
            pair_b = self.port_pool.allocate(self.address)
        except BaseException:
            self.port_pool.release(pair_a)
            raise
        try:
            handle = self._core.add(pair_a.rtp.fileno(), pair_a.rtcp.fileno(),
                                    pair_b.rtp.fileno(), pair_b.rtcp.fileno())
        except BaseException:
            self.port_pool.release(pair_a)
            self.port_pool.release(pair_b)
            raise
        session = Session(self, handle, pair_a, pair_b)
        self._sessions[session.id] = session
        return session

    def close_session(self, session: Session) -> None:
        """Stop relaying, then close the sockets and give the ports back to the pool.

        The order matters: the engine lets go of the sockets first (remove
        waits for its current batch), so a closed descriptor number reused by
        a new socket can never receive this session's traffic.
        """
        if session.closed:
            return
        session.closed = True
        self._sessions.pop(session.id, None)
        if self.on_session_closed is not None:
            self.on_session_closed(session._handle.stats())  # live until remove below
        self._core.remove(session._handle)
        for pair in session._pairs:
            self.port_pool.release(pair)

    def session(self, session_id: int) -> Session | None:
        return self._sessions.get(session_id)

    # The spec'd engine-level spelling of the per-session calls.

    def stats(self, session: Session) -> SessionStats:
        return session.stats()

    def idle_seconds(self, session: Session) -> float:
        return session.idle_seconds()

    def send(self, session: Session, leg: Leg, packet: bytes) -> bool:
        return session.send(leg, packet)

    def drain_recording(self, session: Session) -> bytes:
        return session.drain_recording()

    def drain_recordings(self) -> dict[int, bytes]:
        """{session id: blob} for every session with buffered records, in one call."""
        return self._core.drain_recordings()

    def close(self) -> None:
        """Close every session, stop the thread, release the ports. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.event_fd)
        for session in list(self._sessions.values()):
            self.close_session(session)
        if self._thread is not None:
            self._core.stop()
            self._thread.join()
            self._thread = None
