"""What the relay engine costs the event loop thread, per call into it.

The packets never reach Python (benchmarks/rtp_load.py measures that path);
what Python pays is per session and per drain cycle: at 1,000 recorded
calls drained every 50 ms that is 20,000 ``drain_recording`` calls a second,
and announcements go through ``send`` at 50 packets a second per call. Each
benchmark here is one such call on a live engine over real sockets:

    .venv/bin/pytest benchmarks/bench_rtp.py --benchmark-only

Results and the machine: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from mediacore.rtp.engine import Leg, MediaEngine, Session
from mediacore.rtp.packet import build_rtp, iter_records
from mediacore.rtp.ports import PortPool

HOST = "127.0.0.1"
PACKETS_50MS = 5  # one direction, 20 ms packets: 2-3; both directions, ~5


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[MediaEngine, Session, socket.socket, socket.socket]]:
    engine = MediaEngine(HOST, PortPool((47000, 47999)))
    engine.start()
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind((HOST, 0))
    b.bind((HOST, 0))
    b.setblocking(False)
    s = engine.open_session()
    s.set_remote(Leg.A, HOST, a.getsockname()[1])
    s.set_remote(Leg.B, HOST, b.getsockname()[1])
    s.set_recording(True)
    yield engine, s, a, b
    engine.close()
    a.close()
    b.close()


def _fill(s: Session, a: socket.socket, b: socket.socket, seq: list[int]) -> None:
    """Put one drain cycle's worth of records into the tap (not timed)."""
    before = s.stats().recorded_packets
    for _ in range(PACKETS_50MS):
        seq[0] += 1
        a.sendto(build_rtp(0, seq[0], seq[0] * 160, 1, b"\xff" * 160), (HOST, s.leg_a.rtp))
    deadline = time.monotonic() + 2
    while s.stats().recorded_packets < before + PACKETS_50MS and time.monotonic() < deadline:
        time.sleep(0.0002)
    try:
        while True:
            b.recv(4096)
    except BlockingIOError:
        pass


def test_drain_recording_50ms(benchmark, live) -> None:
    _, s, a, b = live
    seq = [0]
    s.drain_recording()
    blob = benchmark.pedantic(s.drain_recording, setup=lambda: _fill(s, a, b, seq),
                              rounds=300, warmup_rounds=5)
    assert len(list(iter_records(blob))) == PACKETS_50MS


def test_drain_recording_empty(benchmark, live) -> None:
    _, s, _, _ = live
    s.drain_recording()
    assert benchmark(s.drain_recording) == b""


def test_drain_recordings_bulk_1_session(benchmark, live) -> None:
    engine, s, a, b = live
    seq = [10_000]
    out = benchmark.pedantic(engine.drain_recordings, setup=lambda: _fill(s, a, b, seq),
                             rounds=300, warmup_rounds=5)
    assert list(out) == [s.id]


def test_stats(benchmark, live) -> None:
    _, s, _, _ = live
    assert benchmark(s.stats).a_to_b.packets >= 0


def test_idle_seconds(benchmark, live) -> None:
    _, s, _, _ = live
    assert benchmark(s.idle_seconds) >= 0


def test_poll_events_none_pending(benchmark, live) -> None:
    engine, _, _, _ = live
    engine.poll_events()
    assert benchmark(engine.poll_events) == []


@pytest.mark.parametrize("how", ["engine.send", "socket.sendto"])
def test_send_one_announcement_packet(benchmark, live, how: str) -> None:
    _, s, a, _ = live
    packet = build_rtp(0, 1, 160, 7, b"\xff" * 160)
    a.setblocking(False)
    if how == "engine.send":
        def send() -> object:
            return s.send(Leg.A, packet)
    else:
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        target = a.getsockname()

        def send() -> object:
            return raw.sendto(packet, target)

    def drain() -> None:
        try:
            while True:
                a.recv(4096)
        except BlockingIOError:
            pass

    benchmark.pedantic(send, setup=drain, rounds=2000, warmup_rounds=20)


def test_open_and_close_session(benchmark) -> None:
    with MediaEngine(HOST, PortPool((48000, 48999), quarantine=0)) as engine:
        engine.start()

        def cycle() -> None:
            engine.open_session().close()

        benchmark.pedantic(cycle, rounds=200, warmup_rounds=5)
