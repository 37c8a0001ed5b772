"""RecordingPump with a real engine and real UDP: one drain feeds every recorder.

The recorders here are stand-ins that keep what they were fed (the real
CallRecorder is tested with the pump in test_call_end_to_end.py); the clock
is a counter the test advances, so the silence feeds are asserted without
any real waiting.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Iterator

import pytest

from mediacore.calls.recording_pump import RecordingPump
from mediacore.rtp.engine import Leg, MediaEngine
from mediacore.rtp.packet import build_rtp, iter_records
from mediacore.rtp.ports import PortPool

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"


class KeptFeeds:
    """A recorder that keeps what it is fed."""

    def __init__(self, fail: bool = False) -> None:
        self.feeds: list[tuple[bytes, int | None]] = []
        self.failing = fail
        self.failed: list[BaseException] = []

    def feed(self, blob: bytes, now_ns: int | None = None) -> None:
        self.feeds.append((blob, now_ns))
        if self.failing:
            raise OSError(28, "No space left on device")

    def fail(self, error: BaseException) -> None:
        self.failed.append(error)

    def sequences(self) -> list[int]:
        return [r.sequence for blob, _ in self.feeds for r in iter_records(blob)]


@pytest.fixture
def engine() -> Iterator[MediaEngine]:
    base = random.Random().randrange(41000, 59000, 1000)
    eng = MediaEngine(HOST, PortPool((base, base + 999), quarantine=0.0))
    eng.start()
    yield eng
    eng.close()


def send_and_wait(engine: MediaEngine, session, sock: socket.socket, seqs: range) -> None:
    """Send PCMU packets into leg A and wait (bounded) until the tap has them."""
    for seq in seqs:
        sock.sendto(build_rtp(0, seq, seq * 160, 0xABC, b"\xff" * 160),
                    (HOST, session.leg_a.rtp))
    deadline = time.monotonic() + 5
    while session.stats().a_to_b.packets < seqs.stop:
        assert time.monotonic() < deadline, "the engine did not relay the packets"
        time.sleep(0.002)


def test_one_tick_feeds_each_recorded_session_its_own_records(engine: MediaEngine) -> None:
    clock = [10**12]
    pump = RecordingPump(engine, clock_ns=lambda: clock[0])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    try:
        sessions = [engine.open_session() for _ in range(3)]
        recorders = [KeptFeeds() for _ in sessions]
        for session in sessions:
            # One socket plays both parties; leg A takes only its signalled address.
            session.set_remote(Leg.A, HOST, sock.getsockname()[1])
            session.set_remote(Leg.B, HOST, sock.getsockname()[1])
            session.set_recording(True)
        pump.add(sessions[0].id, recorders[0], "call-0")
        pump.add(sessions[1].id, recorders[1], "call-1")
        # Session 2 records but has no recorder in the pump: its records are
        # dropped by the pump, not handed to anyone else.
        send_and_wait(engine, sessions[0], sock, range(0, 5))
        send_and_wait(engine, sessions[2], sock, range(0, 3))
        pump.tick()
        assert recorders[0].sequences() == [0, 1, 2, 3, 4]
        # Session 1 got nothing: the first tick is also a silence feed.
        assert recorders[1].feeds == [(b"", clock[0])]
        assert recorders[2].feeds == []

        # Within the silence interval, a session without records is not fed.
        clock[0] += 500_000_000
        pump.tick()
        assert len(recorders[1].feeds) == 1
        clock[0] += 600_000_000
        pump.tick()
        assert recorders[1].feeds[-1] == (b"", clock[0])
        assert len(recorders[1].feeds) == 2

        pump.remove(sessions[0].id)
        send_and_wait(engine, sessions[0], sock, range(5, 7))
        pump.tick()
        assert recorders[0].sequences() == [0, 1, 2, 3, 4]  # no longer fed
        assert sessions[0].drain_recording() == b""  # drained all the same
    finally:
        pump.close()
        sock.close()


def test_a_failing_recorder_is_reported_once_and_does_not_stop_the_others(
        engine: MediaEngine, caplog: pytest.LogCaptureFixture) -> None:
    clock = [10**12]
    pump = RecordingPump(engine, clock_ns=lambda: clock[0])
    broken, fine = KeptFeeds(fail=True), KeptFeeds()
    stopped: list[BaseException] = []
    pump.add(engine.open_session().id, broken, "call-full", on_failed=stopped.append)
    pump.add(engine.open_session().id, fine, "call-fine")
    try:
        for _ in range(3):
            pump.tick()
            clock[0] += 2_000_000_000
    finally:
        pump.close()
    # Given up on at its first failure (the call goes on unrecorded), told so once.
    assert len(broken.feeds) == 1 and len(fine.feeds) == 3
    assert len(broken.failed) == 1 and stopped == broken.failed
    assert pump.stats.failed == 1 and pump.stats.failed_by_reason == {"disk-full": 1}
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.getMessage() for r in errors] == [
        "call call-full: recording failed (disk-full: [Errno 28] No space left on device); "
        "the call goes on unrecorded"]


def test_once_started_the_pump_drains_on_its_own_timer_while_recorders_remain(
        engine: MediaEngine) -> None:
    async def scenario() -> tuple[list[int], bool, bool]:
        pump = RecordingPump(engine, interval=0.01)
        pump.start(asyncio.get_running_loop())
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((HOST, 0))
        session = engine.open_session()
        session.set_remote(Leg.A, HOST, sock.getsockname()[1])
        session.set_remote(Leg.B, HOST, sock.getsockname()[1])
        session.set_recording(True)
        recorder = KeptFeeds()
        try:
            pump.add(session.id, recorder, "call-timer")
            armed = pump._timer is not None
            await asyncio.to_thread(send_and_wait, engine, session, sock, range(0, 4))
            deadline = time.monotonic() + 5
            while len(recorder.sequences()) < 4:
                assert time.monotonic() < deadline, "the pump never drained"
                await asyncio.sleep(0.005)
            pump.remove(session.id)
            return recorder.sequences(), armed, pump._timer is None
        finally:
            pump.close()
            sock.close()

    sequences, armed, idle = asyncio.run(scenario())
    assert sequences == [0, 1, 2, 3]
    assert armed and idle  # a timer only while there is something to record
