"""The decisions behind "a full disk ends recordings, not calls, and loses no CDR".

No mounts here (tests/integration/test_disk_full.py fills real tmpfs
mounts under the real server): a disk that refuses writes is ``/dev/full``
put in place of a file's descriptor, a filesystem's free space is a
``statvfs`` result we make, and the clock of the rate-limited log is ours.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile

from mediacore.calls.media import RecordingFailed, RecordingResult
from mediacore.calls.recording_pump import RecordingPump
from mediacore.config import ConfigError, parse_config
from mediacore.diskspace import DISK_FULL, FreeSpace, reason_of
from mediacore.ratelimit import RateLimitedLog
from mediacore.records.cdr import Cdr
from mediacore.records.journal import Journal, Position, read_entries
from mediacore.records.writer import FsyncPolicy, JournalWriter
from mediacore.rtp.recorder import CallRecorder, RecordingError, pack_tap
from mediacore.sip import message as sip
from mediacore.sip.endpoint import SipEndpoint
from mediacore.wav import WavWriter
from tests.integration.records_helpers import make_cdr
from tests.support.media import FakeMedia
from tests.unit.test_call_flows import (
    CARRIER,
    Harness,
    answer_from_target,
    in_dialog,
    invite,
    only,
    target_peer,
)
from tests.unit.test_sip_endpoint import answers, request


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def on_dev_full(fd: int) -> int:
    """Make ``fd`` refuse every write with ENOSPC; returns a copy of the real file's fd."""
    real = os.dup(fd)
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, fd)
    os.close(full)
    return real


def restore(fd: int, real: int) -> None:
    os.dup2(real, fd)
    os.close(real)


def statvfs_result(free: int, *, read_only: bool = False) -> os.statvfs_result:
    flag = os.ST_RDONLY if read_only else 0
    # (bsize, frsize, blocks, bfree, bavail, files, ffree, favail, flag, namemax)
    return os.statvfs_result((4096, 4096, 1 << 20, free // 4096, free // 4096,
                              1000, 1000, 1000, flag, 255))


# --- the rate-limited log ------------------------------------------------------------


def test_rate_limited_log_says_the_first_and_then_how_many_it_kept_quiet(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    limited = RateLimitedLog(logging.getLogger("test.ratelimit"), interval=60, clock=clock)
    with caplog.at_level(logging.ERROR, "test.ratelimit"):
        assert limited.error("call %s: recording failed", "a")
        for second in range(1, 60):
            clock.now = 1000.0 + second
            assert not limited.error("call %s: recording failed", "b")
        clock.now = 1060.0
        assert limited.error("call %s: recording failed", "c")
        clock.now = 1200.0  # quiet for a while: the next one says no count
        assert limited.error("call %s: recording failed", "d")
    assert [r.getMessage() for r in caplog.records] == [
        "call a: recording failed",
        "call c: recording failed (59 more like this since the last one, not logged)",
        "call d: recording failed",
    ]
    assert limited.total == 62 and limited.suppressed == 0


def test_rate_limited_log_refuses_a_meaningless_interval() -> None:
    with pytest.raises(ValueError, match="interval"):
        RateLimitedLog(logging.getLogger("x"), interval=0)


# --- reasons and free space ------------------------------------------------------------


@pytest.mark.parametrize(("error", "reason"), [
    (OSError(errno.ENOSPC, "full"), "disk-full"),
    (OSError(errno.EDQUOT, "quota"), "disk-full"),
    (OSError(errno.EROFS, "ro"), "read-only"),
    (PermissionError(errno.EACCES, "denied"), "no-permission"),
    (OSError(errno.EPERM, "denied"), "no-permission"),
    (OSError(errno.EIO, "io"), "io-error"),
    (OSError("no errno"), "io-error"),
    (OverflowError("4 GiB"), "size-limit"),
    (ValueError("a bug"), "internal-error"),
])
def test_reasons_are_a_few_stable_words(error: BaseException, reason: str) -> None:
    assert reason_of(error) == reason


def test_free_space_below_the_reserve_or_read_only_is_no_room() -> None:
    clock = FakeClock()
    answer = [statvfs_result(10 << 20)]
    space = FreeSpace("/storage", 4 << 20, every=1.0, clock=clock,
                      statvfs=lambda path: answer[0])
    assert space.check() == "" and space.error is None and space.free == 10 << 20
    answer[0] = statvfs_result(1 << 20)
    assert space.check() == ""  # the answer is kept for a second: one statvfs a second
    clock.now += 1.0
    assert space.check() == DISK_FULL and space.error.errno == errno.ENOSPC
    clock.now += 1.0
    answer[0] = statvfs_result(10 << 20, read_only=True)
    assert space.check() == "read-only"
    clock.now += 1.0

    def gone(path: str) -> os.statvfs_result:
        raise OSError(errno.EIO, "Input/output error")
    space._statvfs = gone
    assert space.check() == "io-error"
    assert FreeSpace("/storage", 0, statvfs=gone).check() == ""  # no reserve: never asks


# --- the WAV writer and the recorder -------------------------------------------------


def test_an_abandoned_wav_is_valid_and_holds_what_reached_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    writer = WavWriter(path, channels=2, sync_interval=1.0)
    second = np.full((8000, 2), 1000, dtype=np.int16).tobytes()
    writer.write(second)  # one second: synced to the file
    real = on_dev_full(writer._fd)
    with pytest.raises(OSError) as failed:
        writer.write(second)  # the disk refuses the next second; it stays buffered
    assert failed.value.errno == errno.ENOSPC
    restore(writer._fd, real)
    with open(path, "ab") as stray:
        stray.write(b"\x01\x02\x03")  # a short write's partial frame
    assert writer.abandon() == 8000
    assert writer.closed and writer.abandon() == 8000  # idempotent
    audio, rate = soundfile.read(path, dtype="int16")
    assert rate == 8000 and audio.shape == (8000, 2) and (audio == 1000).all()
    assert path.stat().st_size == 44 + 8000 * 4


def recorder_blob(start_ns: int, packets: int) -> bytes:
    """``packets`` of 20 ms A-law from the caller and the callee, from ``start_ns``."""
    return pack_tap(
        (start_ns + i * 20_000_000, 1234 + leg, i * 160, i, 8, 0, leg, b"\xd5" * 160)
        for i in range(packets) for leg in (0, 1))


def test_a_recorder_whose_disk_fills_keeps_a_short_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    start = 10**12
    recorder = CallRecorder(path, codec_by_pt={8: "alaw"}, started_ns=start,
                            sync_interval=0.5, implementation="reference")
    recorder.feed(recorder_blob(start, 100))  # 2 s of audio: 1.8 s written out, synced
    real = on_dev_full(recorder._writer._fd)
    with pytest.raises(OSError):
        recorder.feed(recorder_blob(start + 2_000_000_000, 100))
    restore(recorder._writer._fd, real)
    assert recorder.error == "disk-full" and recorder.failure is not None
    recorder.feed(recorder_blob(start + 4_000_000_000, 100))  # ignored: unrecorded now
    info = recorder.close(start + 10_000_000_000)
    assert info.error == "disk-full"
    audio, rate = soundfile.read(path, dtype="int16")
    assert rate == 8000 and len(audio) == info.frames and 0 < info.duration < 3.0
    assert info.bytes == path.stat().st_size
    assert recorder.close(start + 10_000_000_000) is info


def test_a_recorder_that_wrote_no_audio_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    start = 10**12
    recorder = CallRecorder(path, codec_by_pt={8: "alaw"}, started_ns=start,
                            implementation="reference")
    real = on_dev_full(recorder._writer._fd)
    try:
        with pytest.raises(RecordingError) as failed:
            recorder.close(start + 3_000_000_000)  # its 3 s of silence cannot be written
    finally:
        restore(recorder._writer._fd, real)
    assert failed.value.reason == "disk-full" and not path.exists()


def test_a_recording_that_cannot_open_says_why_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "recordings").write_text("a file where the dir should be")
    with pytest.raises(RecordingError) as failed:
        CallRecorder(tmp_path / "recordings" / "call.wav", codec_by_pt={8: "alaw"},
                     started_ns=0, implementation="reference")
    assert failed.value.reason == "io-error"  # ENOTDIR: neither full nor forbidden


# --- the pump: failures counted, logged once, and the reserve ---------------------------


class NoTaps:
    """The engine as the pump sees it, with no records flowing."""

    def drain_recordings(self) -> dict[int, bytes]:
        return {}


@dataclass
class Recorder:
    failed: BaseException | None = None
    fed: int = 0

    def feed(self, blob: bytes, now_ns: int | None = None) -> None:
        self.fed += 1

    def fail(self, error: BaseException) -> None:
        self.failed = error


def test_below_the_reserve_every_recording_stops_and_one_line_says_so(
        caplog: pytest.LogCaptureFixture) -> None:
    free = [statvfs_result(100 << 20)]
    clock = FakeClock()
    space = FreeSpace("/storage/recordings", 64 << 20, clock=clock,
                      statvfs=lambda path: free[0])
    pump = RecordingPump(NoTaps(), clock_ns=lambda: int(clock.now * 1e9),  # type: ignore[arg-type]
                         free_space=space,
                         failure_log=RateLimitedLog(logging.getLogger("test.pump"),
                                                    clock=clock))
    recorders = [Recorder() for _ in range(5)]
    stopped: list[int] = []
    for session, recorder in enumerate(recorders):
        pump.add(session, recorder, f"call-{session}",  # type: ignore[arg-type]
                 on_failed=lambda error, s=session: stopped.append(s))
    assert pump.room() is None
    pump.tick()
    assert all(r.fed == 1 and r.failed is None for r in recorders)
    free[0] = statvfs_result(10 << 20)
    clock.now += 1.0
    with caplog.at_level(logging.ERROR, "test.pump"):
        pump.tick()
    assert all(reason_of(r.failed) == "disk-full" for r in recorders)  # type: ignore[arg-type]
    assert stopped == [0, 1, 2, 3, 4] and len(pump) == 0
    assert pump.stats.started == 5 and pump.stats.failed == 5
    assert pump.stats.failed_by_reason == {"disk-full": 5}
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("call call-0: recording failed (disk-full: ")
    assert isinstance(pump.room(), OSError)


# --- the call and its CDR -------------------------------------------------------------


class MediaWithFailedRecording(FakeMedia):
    def __init__(self, result: RecordingResult | RecordingFailed) -> None:
        super().__init__()
        self.result = result

    def stop_recording(self) -> RecordingResult | RecordingFailed | None:
        return self.result if self.recording is not None else None


class FailingHarness(Harness):
    result: RecordingResult | RecordingFailed

    def _media(self, call_id: str) -> FakeMedia:
        self.media.append(MediaWithFailedRecording(self.result))
        return self.media[-1]


@pytest.mark.parametrize(("result", "recording", "error"), [
    (RecordingFailed("disk-full"), False, "disk-full"),
    (RecordingResult(Path("x.wav"), 1.5, 48044, "0" * 64, 8000, 2, error="io-error"), True,
     "io-error"),
    (RecordingResult(Path("x.wav"), 9.0, 288044, "0" * 64, 8000, 2), True, ""),
])
def test_the_cdr_says_why_a_recording_is_missing_or_short(
        tmp_path: Path, result: RecordingResult | RecordingFailed, recording: bool,
        error: str) -> None:
    FailingHarness.result = result
    h = FailingHarness(tmp_path, record=True)
    h.receive(invite(), CARRIER)
    call = next(iter(h.b2bua.calls.values()))
    out = [sip.parse(t.data) for t in h.settle(h.b2bua.announcement_finished(call.id, 2.0))]
    onward = only(out, sip.Request, method="INVITE")
    out = h.receive(answer_from_target(onward, 200), target_peer(onward), at=3.0)
    ok = only(out, sip.Response)
    h.receive(in_dialog("ACK", ok, 1, "z9hG4bKack1"), CARRIER, at=3.1)
    h.receive(in_dialog("BYE", ok, 2, "z9hG4bKbye1"), CARRIER, at=20.0)
    (ended,) = h.ended
    cdr = ended.cdr()
    assert cdr.disposition == "answered" and cdr.hangup_by == "caller"  # the call went on
    assert bool(cdr.recording) is recording and cdr.recording_error == error
    assert cdr.to_fields()["recording_error"] == error


def test_cdrs_journaled_before_recording_error_existed_still_read() -> None:
    old = make_cdr(1).to_fields()
    del old["recording_error"]
    assert Cdr.from_fields(old).recording_error == ""
    with pytest.raises(ValueError, match="recording_error"):
        Cdr.from_fields({**old, "recording_error": "Disk full!"})


# --- the journal writer ------------------------------------------------------------------


class FillingJournal(Journal):
    """A journal whose disk is full while ``full`` is set (every append: ENOSPC)."""

    full = False

    def append_lines(self, lines, *, sync=True):  # type: ignore[no-untyped-def]
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().append_lines(lines, sync=sync)


def run(scenario) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(asyncio.wait_for(scenario(), 60))


async def until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(600):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(what)


def test_records_held_by_a_full_journal_land_in_order_exactly_once(tmp_path: Path) -> None:
    states: list[tuple[bool, str]] = []

    async def scenario() -> None:
        journal = FillingJournal(tmp_path)
        writer = JournalWriter(journal, FsyncPolicy("record"), on_state=lambda *s:
                               states.append(s), min_free=0)
        now = datetime.now(UTC)
        await writer.submit("cdr", make_cdr(0).to_fields(), now)
        journal.full = True
        held = [writer.submit("cdr", make_cdr(i).to_fields(), now) for i in range(1, 6)]
        await until(lambda: not writer.writable, "the writer said it is unwritable")
        assert writer.problem == "disk-full" and writer.held == 5
        await asyncio.sleep(0.3)  # retried meanwhile, still held, none dropped
        assert not any(f.done() for f in held) and writer.errors >= 2
        journal.full = False  # space freed
        positions: list[Position] = await asyncio.gather(*held)
        assert positions == sorted(positions)
        await until(lambda: writer.writable, "the writer said it is writable again")
        assert writer.held == 0
        await writer.close()
        journal.close()

    run(scenario)
    assert [e.data["call_id"] for e in read_entries(tmp_path)] == [
        f"call-{i}" for i in range(6)]
    assert states == [(False, "disk-full"), (True, "")]


def test_a_full_filesystem_is_noticed_before_a_record_has_nowhere_to_go(
        tmp_path: Path) -> None:
    free = [statvfs_result(100 << 20)]
    states: list[tuple[bool, str]] = []

    async def scenario() -> None:
        journal = Journal(tmp_path)
        writer = JournalWriter(journal, FsyncPolicy("record"), min_free=1 << 20,
                               probe_interval=0.01, statvfs=lambda path: free[0],
                               on_state=lambda *s: states.append(s))
        free[0] = statvfs_result(512 << 10)  # below min_free: unwritable, no write tried
        await until(lambda: not writer.writable, "the probe saw the full disk")
        assert writer.problem == "disk-full"
        free[0] = statvfs_result(1536 << 10)  # above min_free but not twice it: no flapping
        await asyncio.sleep(0.1)
        assert not writer.writable
        free[0] = statvfs_result(4 << 20)
        await until(lambda: writer.writable, "the probe saw room again")
        free[0] = statvfs_result(4 << 20, read_only=True)
        await until(lambda: writer.problem == "read-only", "the probe saw read-only")
        await writer.close()
        journal.close()

    run(scenario)
    assert states == [(False, "disk-full"), (True, ""), (False, "read-only")]


def test_a_retried_write_on_a_full_disk_leaves_no_trail_of_empty_files(
        tmp_path: Path) -> None:
    """After a failed write the journal goes on in a fresh file, unless the file
    it failed in holds nothing (the write wrote nothing): while a disk stays full
    every retry would otherwise leave one more empty file."""
    journal = Journal(tmp_path)
    journal._broken = True  # a write to the new, empty file failed
    journal.append([("cdr", make_cdr(0).to_fields())])
    assert len(list(tmp_path.glob("journal-*.jsonl"))) == 1
    real = on_dev_full(journal._fd)
    with pytest.raises(OSError):
        journal.append([("cdr", make_cdr(1).to_fields())])
    restore(journal._fd, real)
    journal.append([("cdr", make_cdr(1).to_fields())])  # a file with records: a fresh one
    journal.close()
    assert len(list(tmp_path.glob("journal-*.jsonl"))) == 2
    assert [e.data["call_id"] for e in read_entries(tmp_path)] == ["call-0", "call-1"]


# --- the endpoint and the config ----------------------------------------------------------


def test_unavailable_refuses_invites_with_503_but_options_still_answer() -> None:
    endpoint = SipEndpoint(parse_config({}, "test").sip)
    endpoint.unavailable = "journal unwritable (disk-full)"
    (refused,) = answers(endpoint.receive(request(), CARRIER, 0.0))
    assert refused.status == 503 and refused.headers.get("Retry-After") == "60"
    assert "journal unwritable (disk-full)" in refused.headers.get("Warning")
    assert endpoint.counters.calls_refused == {"unavailable": 1}
    (ok,) = answers(endpoint.receive(request("OPTIONS", via="SIP/2.0/UDP 127.0.0.1:5070;"
                                             "branch=z9hG4bK2"), CARRIER, 0.1))
    assert ok.status == 200  # alive, and a keepalive must not fail
    endpoint.unavailable = ""
    outputs = endpoint.receive(request(via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK3",
                                       extra="X-New: 1\r\n"), CARRIER, 0.2)
    assert [r.status for r in answers(outputs)] == [100]


def test_reserve_mb_is_read_and_checked() -> None:
    assert parse_config({}, "t").storage.reserve_mb == 64.0
    assert parse_config({"storage": {"reserve_mb": 0.5}}, "t").storage.reserve_mb == 0.5
    with pytest.raises(ConfigError, match="reserve_mb"):
        parse_config({"storage": {"reserve_mb": -1}}, "t")
