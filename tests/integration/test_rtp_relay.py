"""The relay engine with real UDP traffic on 127.0.0.1: no mocks.

Each test opens an engine (its own thread), plays the two ends of a call
with plain sockets and checks what arrives where, byte for byte, and what
the engine counted. Waits are bounded by deadlines and end as soon as the
packets are there; nothing asserts on how long anything took.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import random
import socket
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import uvloop

from mediacore.rtp.dtmf import encode_event
from mediacore.rtp.engine import DtmfEvent, Latching, Leg, MediaEngine, RecordingReady
from mediacore.rtp.packet import (
    build_rtp,
    iter_records,
    parse_rtp,
)
from mediacore.rtp.ports import PortPool
from mediacore.rtp.stats import SourceTracker

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
DEADLINE = 5.0
PT_PCMU = 0
PT_TE = 101


def wait_for(predicate: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.002)


class Peer:
    """One end of a call: a UDP socket that collects what it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.port = self.sock.getsockname()[1]

    def send(self, data: bytes, port: int) -> None:
        self.sock.sendto(data, (HOST, port))

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
                out.append(self.sock.recvfrom(4096))
            except TimeoutError:
                continue
        return out

    def nothing(self, settle: float = 0.1) -> bool:
        """True if nothing is waiting after a short settle (for "was dropped")."""
        time.sleep(settle)
        self.sock.setblocking(False)
        try:
            self.sock.recvfrom(4096)
        except BlockingIOError:
            return True
        finally:
            self.sock.setblocking(True)
        return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def peers() -> Iterator[Callable[[], Peer]]:
    made: list[Peer] = []

    def make() -> Peer:
        made.append(Peer())
        return made[-1]

    yield make
    for p in made:
        p.close()


@pytest.fixture
def pool() -> PortPool:
    base = random.Random().randrange(41000, 59000, 1000)
    return PortPool((base, base + 999), quarantine=30.0)


@pytest.fixture
def engine(pool: PortPool) -> Iterator[MediaEngine]:
    eng = MediaEngine(HOST, pool)
    eng.start()
    yield eng
    eng.close()


def rtp(seq: int, payload: bytes = b"\xff" * 160, *, ssrc: int = 0x1234, pt: int = PT_PCMU,
        **kw: object) -> bytes:
    return build_rtp(pt, seq, seq * 160, ssrc, payload, **kw)  # type: ignore[arg-type]


def call(engine: MediaEngine, a: Peer, b: Peer):
    s = engine.open_session()
    s.set_remote(Leg.A, HOST, a.port)
    s.set_remote(Leg.B, HOST, b.port)
    return s


def test_relays_both_ways_unchanged(engine: MediaEngine, peers) -> None:
    a, b = peers(), peers()
    s = call(engine, a, b)
    variants = [
        {},
        {"marker": True},
        {"csrcs": (1, 2, 3)},
        {"extension": (0xBEDE, b"\x10\x01\x02\x03")},
        {"padding": 4},
        {"csrcs": (9,), "extension": (0x1000, b""), "padding": 1},
    ]
    for i in range(30):
        out = rtp(1000 + i, bytes([i]) * (160 + i), ssrc=0xA, **variants[i % len(variants)])
        back = rtp(50000 + i, bytes([255 - i]) * 80, ssrc=0xB, pt=8)
        a.send(out, s.leg_a.rtp)
        b.send(back, s.leg_b.rtp)
        [(got_b, src_b)] = b.recv()
        [(got_a, src_a)] = a.recv()
        assert got_b == out and src_b == (HOST, s.leg_b.rtp)
        assert got_a == back and src_a == (HOST, s.leg_a.rtp)
    st = s.stats()
    assert (st.a_to_b.packets, st.a_to_b.forwarded, st.a_to_b.ssrc) == (30, 30, 0xA)
    assert (st.b_to_a.packets, st.b_to_a.forwarded, st.b_to_a.ssrc) == (30, 30, 0xB)
    assert st.a_to_b.lost == 0 and st.b_to_a.lost == 0


def test_rtcp_multiplexed_on_the_rtp_port(engine: MediaEngine, peers) -> None:
    a, b = peers(), peers()
    s = engine.open_session()
    s.set_remote(Leg.A, HOST, a.port, a.port)
    s.set_remote(Leg.B, HOST, b.port, b.port)
    rr = b"\x80\xc9\x00\x01" + b"\x00\x00\x00\x0b"
    a.send(rr, s.leg_a.rtp)
    assert b.recv()[0] == (rr, (HOST, s.leg_b.rtp))
    st = s.stats().a_to_b
    assert (st.rtcp_packets, st.packets, st.garbage) == (1, 0, 0)


def test_telephone_event_reported_once_per_event(engine: MediaEngine, peers) -> None:
    a, b = peers(), peers()
    s = call(engine, a, b)
    s.set_telephone_event(Leg.A, PT_TE)
    seq = 0
    sent = 0
    for event, ts in ((1, 8000), (11, 9600), (1, 11200)):  # "1", "#", "1" again
        for i in range(3):
            payload = encode_event(event, end=False, duration=160 * (i + 1))
            a.send(build_rtp(PT_TE, seq, ts, 0x77, payload, marker=i == 0), s.leg_a.rtp)
            seq += 1
        for _ in range(3):  # the end packet, sent three times (RFC 4733 2.5.1.4)
            payload = encode_event(event, end=True, volume=7, duration=800)
            a.send(build_rtp(PT_TE, seq, ts, 0x77, payload), s.leg_a.rtp)
            seq += 1
        sent += 6
    b.recv(sent)  # all relayed unchanged, the duplicates too
    digits = [e for e in engine.poll_events() if isinstance(e, DtmfEvent)]
    assert [(e.digit, e.event, e.timestamp, e.duration, e.volume, e.leg) for e in digits] == [
        ("1", 1, 8000, 800, 7, Leg.A),
        ("#", 11, 9600, 800, 7, Leg.A),
        ("1", 1, 11200, 800, 7, Leg.A),
    ]
    # Not configured on B: the same packets from B are relayed, not reported.
    b.send(build_rtp(PT_TE, 1, 1, 2, encode_event(5, end=True)), s.leg_b.rtp)
    a.recv()
    assert not [e for e in engine.poll_events() if isinstance(e, DtmfEvent)]
    assert s.stats().a_to_b.dtmf_events == 3


def test_loss_and_jitter_follow_rfc3550(engine: MediaEngine, peers) -> None:
    a, b = peers(), peers()
    s = call(engine, a, b)
    s.set_recording(True)
    rng = random.Random(3550)
    sent = [seq for seq in range(60) if seq not in (20, 21, 22)]  # a 3-packet gap
    for seq in sent:
        a.send(build_rtp(PT_PCMU, seq, seq * 160, 0x5EED, b"\x55" * 160), s.leg_a.rtp)
        time.sleep(rng.uniform(0.0, 0.012))  # jittered send times
    b.recv(len(sent))
    # The reference: RFC 3550 A.1/A.3/A.8 in Python, fed the arrival times the
    # engine itself recorded, must agree with the engine to the unit.
    reference = SourceTracker(8000)
    for r in iter_records(s.drain_recording()):
        reference.update(r.ssrc, r.sequence, r.timestamp, r.arrival_ns)
    st = s.stats().a_to_b
    assert st.lost == 3 == reference.lost
    assert st.expected == 59 == reference.expected  # seq 1..59: packet 0 is probation
    assert st.jitter == reference.jitter > 0
    assert st.jitter_ms == st.jitter / 8


def test_stats_match_the_rfc_reference_on_a_messy_stream(engine: MediaEngine, peers) -> None:
    """Reordering, duplicates, a sequence wrap, a sender restart and an SSRC
    change: the engine's counters equal RFC 3550 A.1/A.3/A.8 in Python."""
    a, b = peers(), peers()
    s = call(engine, a, b)
    s.set_recording(True)
    s.set_telephone_event(Leg.A, PT_TE)
    script = [(1, seq) for seq in (65530, 65531, 65533, 65532, 65534, 65535, 0, 0, 2, 3)]
    script += [(1, seq) for seq in (30000, 30001, 30002, 30004)]  # restart after a jump
    script += [(2, seq) for seq in (7, 8, 9, 11, 12)]  # a new SSRC
    rng = random.Random(4733)
    for i, (ssrc, seq) in enumerate(script):
        pt = PT_TE if i == 15 else PT_PCMU  # one event packet: counted, not in the jitter
        payload = encode_event(1, end=False) if pt == PT_TE else b"\xff" * 160
        a.send(build_rtp(pt, seq, 1000 + i * 160 + rng.randrange(0, 80), ssrc, payload),
               s.leg_a.rtp)
        time.sleep(rng.uniform(0.0, 0.004))
    b.recv(len(script))
    reference = SourceTracker(8000)
    for r in iter_records(s.drain_recording()):
        reference.update(r.ssrc, r.sequence, r.timestamp, r.arrival_ns,
                         jitter=r.payload_type != PT_TE)
    st = s.stats().a_to_b
    assert (st.expected, st.lost, st.jitter, st.ssrc) == (
        reference.expected, reference.lost, reference.jitter, 2)
    assert st.packets == len(script)


def test_a_backlog_is_drained_without_new_packets(engine: MediaEngine, peers) -> None:
    """The sockets are edge-triggered and one wake-up reads at most a few
    batches from a socket: whatever is left must still be relayed, with no
    further packet arriving to trigger it."""
    a, b = peers(), peers()
    b.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s = call(engine, a, b)
    for i in range(2000):  # faster than the relay: a backlog builds up
        a.send(rtp(i, b"x" * 20), s.leg_a.rtp)
    relay_socket = s._pairs[0].rtp

    def drained() -> bool:
        st = s.stats().a_to_b
        pending = fcntl.ioctl(relay_socket.fileno(), termios.FIONREAD, b"\0\0\0\0")
        return pending == b"\0\0\0\0" and st.forwarded == st.packets

    wait_for(drained, "the relay socket to be emptied")
    st = s.stats().a_to_b
    assert st.packets > 4 * 32  # more than one wake-up's share
    assert len(b.recv(st.forwarded)) == st.forwarded and b.nothing()


def test_garbage_is_dropped_and_counted(engine: MediaEngine, peers) -> None:
    a, b = peers(), peers()
    s = call(engine, a, b)
    good = rtp(1)
    garbage = [
        b"",
        b"\x80\x00\x00",  # shorter than a header
        bytes([0x40]) + good[1:],  # version 1
        bytes([0x8F]) + good[1:40],  # 15 CSRCs announced, 28 bytes there
        bytes([0x90]) + good[1:12] + b"\xbe\xde\x00\x40" + b"x" * 16,  # extension too long
        bytes([0xA0]) + good[1:-1] + b"\x00",  # padding count 0
        bytes([0xA0]) + good[1:-1] + b"\xff",  # padding longer than the packet
        bytes([0x80]) + good[1:] + b"\x00" * 3000,  # larger than any RTP we relay
    ]
    for g in garbage:
        a.send(g, s.leg_a.rtp)
    a.send(b"\x80\x05\x00\x01" + bytes(4), s.leg_a.rtcp)  # not an RTCP packet type
    a.send(b"\x80\xc8\x00", s.leg_a.rtcp)  # too short
    a.send(good, s.leg_a.rtp)
    assert b.recv()[0][0] == good
    assert b.nothing()
    st = s.stats().a_to_b
    assert (st.garbage, st.packets, st.forwarded) == (len(garbage) + 2, 1, 1)
    assert s.remote(Leg.A)[0] == (HOST, a.port)


def test_recording_blob_is_exactly_what_was_relayed(engine: MediaEngine, peers) -> None:
    a, b = peers(), peers()
    s = call(engine, a, b)
    a.send(rtp(1), s.leg_a.rtp)  # before recording: not in the blob
    b.recv()
    s.set_recording(True)
    before = time.monotonic_ns()
    sent: list[tuple[int, bytes]] = []
    for i in range(20):
        pkt_a = build_rtp(PT_PCMU, 100 + i, 8000 + 160 * i, 0xAAAA, bytes([i]) * 160,
                          marker=i == 0, csrcs=(5,) if i % 3 == 0 else (),
                          extension=(0xBEDE, b"\x01\x02\x03\x04") if i % 4 == 0 else None,
                          padding=3 if i % 5 == 0 else 0)
        pkt_b = build_rtp(8, 7 + i, 99 + 160 * i, 0xBBBB, bytes([200 - i]) * 80)
        a.send(pkt_a, s.leg_a.rtp)
        b.recv()
        b.send(pkt_b, s.leg_b.rtp)
        a.recv()
        sent += [(0, pkt_a), (1, pkt_b)]
    s.send(Leg.A, rtp(999))  # injected (announcement): not recorded
    a.recv()
    after = time.monotonic_ns()
    records = list(iter_records(s.drain_recording()))
    assert len(records) == len(sent)
    for record, (direction, pkt) in zip(records, sent, strict=True):
        p = parse_rtp(pkt)
        assert (record.direction, record.ssrc, record.timestamp, record.sequence,
                record.payload_type, record.marker, record.payload) == (
            direction, p.ssrc, p.timestamp, p.sequence, p.payload_type, p.marker, p.payload)
    arrivals = [r.arrival_ns for r in records]
    assert before <= arrivals[0] and arrivals == sorted(arrivals) and arrivals[-1] <= after
    assert s.drain_recording() == b""
    st = s.stats()
    assert (st.recorded_packets, st.recording_dropped) == (40, 0)


def test_recording_buffer_is_bounded_and_never_blocks(pool: PortPool, peers) -> None:
    with MediaEngine(HOST, pool, recording_buffer=1024) as engine:
        engine.start()
        a, b = peers(), peers()
        s = call(engine, a, b)
        s.set_recording(True)
        for i in range(20):
            a.send(rtp(i), s.leg_a.rtp)
        b.recv(20)  # relaying went on while the tap overflowed
        records = list(iter_records(s.drain_recording()))
        assert [r.sequence for r in records] == [0, 1, 2, 3, 4]  # 5 x 184 bytes fit
        st = s.stats()
        assert (st.recorded_packets, st.recording_dropped) == (5, 15)
        ready = [e for e in engine.poll_events() if isinstance(e, RecordingReady)]
        assert len(ready) == 1 and ready[0].buffered >= 512
        a.send(rtp(20), s.leg_a.rtp)
        b.recv()
        assert [r.sequence for r in iter_records(s.drain_recording())] == [20]


def test_idle_seconds_measure_inactivity(engine: MediaEngine, peers) -> None:
    a, a_rtcp, b = peers(), peers(), peers()
    s = call(engine, a, b)
    s.set_remote(Leg.A, HOST, a.port, a_rtcp.port)
    time.sleep(0.3)
    idle_before = s.idle_seconds()
    assert idle_before >= 0.3
    a_rtcp.send(b"\x80\xc9\x00\x01" + bytes(4), s.leg_a.rtcp)  # RTCP does not count
    b.nothing(0)
    wait_for(lambda: s.stats().a_to_b.rtcp_packets == 1, "the RTCP packet")
    assert s.idle_seconds() >= idle_before
    b.send(rtp(1), s.leg_b.rtp)
    a.recv()
    last = s.stats().b_to_a.last_arrival_ns
    assert last is not None
    assert s.idle_seconds(now_ns=last) == 0
    assert s.idle_seconds(now_ns=last + 2_500_000_000) == 2.5
    assert s.idle_seconds() < idle_before


def test_send_injects_from_the_legs_rtp_port(engine: MediaEngine, peers) -> None:
    a, nat = peers(), peers()
    s = engine.open_session()
    assert s.send(Leg.A, rtp(1)) is False  # nowhere to send yet
    s.set_remote(Leg.A, HOST, a.port)
    for i in range(5):
        assert s.send(Leg.A, rtp(i, b"\x01" * 160))
    got = a.recv(5)
    assert [d for d, _ in got] == [rtp(i, b"\x01" * 160) for i in range(5)]
    assert {src for _, src in got} == {(HOST, s.leg_a.rtp)}
    nat.send(rtp(8), s.leg_a.rtp)  # strict: a packet from elsewhere changes nothing
    wait_for(lambda: s.stats().a_to_b.strict_dropped == 1, "the dropped packet")
    assert s.send(Leg.A, rtp(5))
    assert a.recv()[0][0] == rtp(5) and nat.nothing(0)
    s.set_latching(Leg.A, Latching.NAT)
    nat.send(rtp(9), s.leg_a.rtp)  # nat, latched: announcements follow the latch
    wait_for(lambda: s.stats().a_to_b.packets == 1, "the latching packet")
    assert s.send(Leg.A, rtp(6))
    assert nat.recv()[0][0] == rtp(6)
    assert s.stats().a_to_b.injected == 7


def test_events_reach_the_event_loop_without_polling(pool: PortPool, peers) -> None:
    a, b = peers(), peers()
    loop = uvloop.new_event_loop()
    engine = MediaEngine(HOST, pool)
    try:
        got: list = []
        done = loop.create_future()

        def on_events(events: list) -> None:
            got.extend(events)
            if any(isinstance(e, DtmfEvent) for e in got) and not done.done():
                done.set_result(None)

        engine.start(loop, on_events)
        s = call(engine, a, b)
        s.set_telephone_event(Leg.B, PT_TE)
        b.send(build_rtp(PT_TE, 1, 160, 9, encode_event(10, end=True)), s.leg_b.rtp)
        loop.run_until_complete(asyncio.wait_for(done, DEADLINE))
        digits = [e for e in got if isinstance(e, DtmfEvent)]
        assert [(e.digit, e.leg, e.session) for e in digits] == [("*", Leg.B, s)]
    finally:
        engine.close()
        loop.close()


def test_sessions_are_isolated_and_removable_under_traffic(
        engine: MediaEngine, pool: PortPool, peers) -> None:
    # Like the load generator: all callers on one socket, all callees on another.
    a, b = peers(), peers()
    sessions = [call(engine, a, b) for _ in range(40)]
    by_port = {s.leg_b.rtp: i for i, s in enumerate(sessions)}
    for i, s in enumerate(sessions):
        a.send(rtp(i, i.to_bytes(4, "big") * 40), s.leg_a.rtp)
    for data, src in b.recv(40):
        assert parse_rtp(data).payload[:4] == by_port[src[1]].to_bytes(4, "big")
    stop = threading.Event()

    def blast() -> None:  # keeps every session busy while half of them close
        seq = 0
        while not stop.is_set():
            for s in sessions:
                with contextlib.suppress(OSError):
                    a.send(rtp(seq), s.leg_a.rtp)
            seq += 1
            time.sleep(0.001)

    sender = threading.Thread(target=blast)
    sender.start()
    try:
        for s in sessions[::2]:
            s.close()
    finally:
        stop.set()
        sender.join()
    assert pool.in_use == 40 and pool.cooling == 40  # released just now, reused last
    with pytest.raises(ValueError, match="removed"):
        sessions[0]._handle.stats()
    assert engine.sessions == sessions[1::2]
    b.sock.settimeout(0.2)
    with contextlib.suppress(TimeoutError):
        while True:  # drain what the blast left
            b.sock.recvfrom(4096)
    for i, s in enumerate(sessions[1::2]):
        a.send(rtp(70000 + i, b"live" * 40), s.leg_a.rtp)
    assert sorted(src[1] for _, src in b.recv(20)) == sorted(s.leg_b.rtp for s in sessions[1::2])


def test_relays_over_ipv6(pool: PortPool) -> None:
    socks = []
    try:
        for _ in range(2):
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock.bind(("::1", 0))
            sock.settimeout(DEADLINE)
            socks.append(sock)
        a, b = socks
        with MediaEngine("::1", pool) as engine:
            engine.start()
            s = engine.open_session()
            s.set_remote(Leg.A, "::1", a.getsockname()[1])
            s.set_remote(Leg.B, "::1", b.getsockname()[1])
            with pytest.raises(ValueError, match="AF_INET6"):
                s.set_remote(Leg.A, HOST, 4000)  # an IPv4 peer for IPv6 sockets
            a.sendto(rtp(1), ("::1", s.leg_a.rtp))
            data, src = b.recvfrom(4096)
            assert (data, src[:2]) == (rtp(1), ("::1", s.leg_b.rtp))
            b.sendto(rtp(2), ("::1", s.leg_b.rtp))
            assert a.recvfrom(4096)[0] == rtp(2)
            assert s.remote(Leg.A) == (("::1", a.getsockname()[1]),
                                       ("::1", a.getsockname()[1] + 1))
    finally:
        for sock in socks:
            sock.close()


def test_port_held_by_another_process_is_skipped(peers) -> None:
    base = random.Random().randrange(41000, 59000, 1000)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import socket, sys\n"
         f"s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('{HOST}', {base + 1}))\n"
         "print('bound', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "bound"
        pool = PortPool((base, base + 5))
        with MediaEngine(HOST, pool) as engine:
            engine.start()
            s = engine.open_session()
            assert (s.leg_a.rtp, s.leg_b.rtp) == (base + 2, base + 4)
            assert pool.held_elsewhere == 1  # tried again after the quarantine
    finally:
        holder.stdin.close()
        holder.wait(timeout=DEADLINE)


def test_close_stops_the_thread_and_releases_every_port(pool: PortPool, peers) -> None:
    engine = MediaEngine(HOST, pool)
    engine.start()
    a, b = peers(), peers()
    s1, s2 = call(engine, a, b), call(engine, a, b)
    a.send(rtp(1), s1.leg_a.rtp)
    b.recv()
    thread = engine._thread
    engine.close()
    engine.close()
    assert thread is not None and not thread.is_alive()
    assert s1.closed and s2.closed and pool.in_use == 0 and pool.cooling == 4
    with pytest.raises(RuntimeError):
        engine.open_session()
