"""What a crash left in the storage dir, accounted for by the records service at start.

The storage dir is left as a killed node leaves it (markers and torn WAVs,
a sibling's recording in progress, a stray file from before markers), then
a real RecordsService (journal writer thread, sweeper, Redis) starts on it
and recovers: the journal and Redis gain one CDR and one handle per
adopted call, what cannot be kept goes, the sibling's file is untouched,
a second start changes nothing, and the retention sweep later destroys the
adopted recordings.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import time
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import uvloop

from mediacore.records import RecordsService, describe_wav, sweep_once
from mediacore.records.journal import journal_dir, read_entries
from mediacore.records.open_recordings import OpenRecordings, RecordingStarted
from mediacore.records.timefmt import utc_now
from tests.integration.records_helpers import make_config, write_wav

pytestmark = pytest.mark.integration

NODE = "test-node"


def marker(call_id: str, *, kind: str = "call", node: str = NODE,
           retention: int = 30) -> RecordingStarted:
    start = utc_now() - timedelta(minutes=5)
    return RecordingStarted(
        file=f"{call_id}{'-voicemail' if kind == 'voicemail' else ''}.wav", kind=kind,
        call_id=call_id, sip_call_id=f"{call_id}@carrier", number="+31900123456",
        owner="acme", caller="+31612345678",
        target="" if kind == "voicemail" else "sip:+31201234567@127.0.0.1:5070",
        retention_days=retention, start=start, answer=start + timedelta(seconds=3),
        recording_start=start + timedelta(seconds=3), channels=2 if kind == "call" else 1,
        node=node)


def torn_wav(path: Path, seconds: float, channels: int = 2) -> None:
    """The header as a killed writer left it: one second synced, more audio after it."""
    write_wav(path, seconds, channels)
    synced = 8000 * 2 * channels
    with open(path, "r+b") as f:
        f.seek(4)
        f.write(struct.pack("<I", 36 + synced))
        f.seek(40)
        f.write(struct.pack("<I", synced))


def journaled(storage: Path, node: str = NODE) -> list[tuple[str, dict[str, str]]]:
    return [(e.type, e.data) for e in read_entries(journal_dir(storage, node))]


def test_a_crashed_nodes_recordings_are_adopted_or_destroyed_once(
    tmp_path: Path, redis_url: str
) -> None:
    storage = tmp_path / "var"
    recordings = storage / "recordings"
    mine = OpenRecordings(storage, NODE)
    for call_id, seconds in (("c0ffee0000000001", 3.0), ("c0ffee0000000002", 1.2)):
        mine.add(marker(call_id, retention=7))
        torn_wav(recordings / f"{call_id}.wav", seconds)
    mine.add(marker("c0ffee0000000003"))  # killed before its first second was synced
    write_wav(recordings / "c0ffee0000000003.wav", 0.0)
    mine.add(marker("c0ffee0000000004", kind="voicemail"))
    torn_wav(recordings / "c0ffee0000000004-voicemail.wav", 2.0, channels=1)
    # A sibling's call in progress: its node is another one, its file is being written.
    OpenRecordings(storage, "core2").add(marker("5151515151515151", node="core2"))
    write_wav(recordings / "5151515151515151.wav", 0.5)
    # From before markers: nobody knows it, and it has not been touched for hours.
    stray = write_wav(recordings / "0123456789abcdef.wav", 0.5)
    os.utime(stray, (time.time() - 7200, time.time() - 7200))
    sibling_before = (recordings / "5151515151515151.wav").read_bytes()
    config = make_config(storage, redis_url, sweep_interval=3600)

    async def start_and_recover() -> dict[str, int]:
        service = RecordsService(config)
        await service.start()
        report = await service.start_recovery()
        assert await service.wait_published(30)
        stats = service.stats()
        await service.close()
        return {"adopted": report.adopted, "destroyed": report.destroyed,
                "calls": report.calls, "repaired": report.repaired, "failed": report.failed,
                "stats": (stats.orphans_adopted, stats.orphans_destroyed,
                          stats.crashed_calls)}  # type: ignore[dict-item]

    first = uvloop.run(start_and_recover())
    assert first == {"adopted": 2, "destroyed": 3, "calls": 4, "repaired": 3, "failed": 0,
                     "stats": (2, 3, 4)}
    records = journaled(storage)
    cdrs = {d["call_id"]: d for t, d in records if t == "cdr"}
    handles = {d["id"]: d for t, d in records if t == "recording"}
    assert sorted(cdrs) == [f"c0ffee000000000{n}" for n in (1, 2, 3, 4)]
    assert sorted(handles) == ["c0ffee0000000001", "c0ffee0000000002"]
    for call_id, seconds in (("c0ffee0000000001", "3.000"), ("c0ffee0000000002", "1.200")):
        cdr, handle = cdrs[call_id], handles[call_id]
        assert cdr["recording_error"] == "crash" and cdr["recording"] == call_id
        assert cdr["disposition"] == "answered" and cdr["hangup_by"] == "system"
        assert cdr["duration"] == seconds == handle["duration"]
        assert handle["created"] == cdr["end"] and handle["node"] == NODE
        path = recordings / f"{call_id}.wav"
        assert str(describe_wav(path).duration) == seconds  # the repaired header counts it
        assert handle["sha256"] == describe_wav(path).sha256
    assert cdrs["c0ffee0000000003"]["recording"] == ""
    assert cdrs["c0ffee0000000004"]["disposition"] == "voicemail"
    assert sorted(p.name for p in recordings.iterdir()) == [
        "5151515151515151.wav", "c0ffee0000000001.wav", "c0ffee0000000002.wav"]
    assert (recordings / "5151515151515151.wav").read_bytes() == sibling_before
    assert mine.files() == [] and OpenRecordings(storage, "core2").files() == [
        "5151515151515151.wav"]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        stream = [f["call_id"] for _, f in client.xrange("mediacore:cdr")]
        assert sorted(stream) == sorted(cdrs)
        expiry = client.zrange("mediacore:recordings:expiry", 0, -1, withscores=True)
        assert sorted(m for m, _ in expiry) == sorted(handles)
        hashed = client.hgetall("mediacore:recording:c0ffee0000000001")
        assert hashed["expires"] == handles["c0ffee0000000001"]["expires"]
    finally:
        client.close()

    # Started again (say it was killed again at once): nothing found, nothing doubled.
    again = uvloop.run(start_and_recover())
    assert again == {"adopted": 0, "destroyed": 0, "calls": 0, "repaired": 0, "failed": 0,
                     "stats": (0, 0, 0)}
    assert journaled(storage) == records

    # A week later the number's retention (7 days) has ended: the sweep destroys them.
    later = utc_now() + timedelta(days=8)
    swept = uvloop.run(sweep_once(config, clock=lambda: later))
    assert sorted(d.id for d in swept.report.deleted) == sorted(handles)
    assert sorted(p.name for p in recordings.iterdir()) == ["5151515151515151.wav"]


def test_a_recovery_cut_short_is_finished_by_the_next_start(tmp_path: Path) -> None:
    """Killed after journaling but before the markers went: only the markers go now."""
    storage = tmp_path / "var"
    mine = OpenRecordings(storage, NODE)
    mine.add(marker("abcabcabcabcabc1"))
    torn_wav(storage / "recordings" / "abcabcabcabcabc1.wav", 2.0)
    saved = mine.path("abcabcabcabcabc1.wav").read_bytes()
    config = make_config(storage, sweep_interval=3600)

    async def recover() -> tuple[int, int]:
        service = RecordsService(config)
        await service.start()
        report = await service.start_recovery()
        await service.close()
        return report.adopted, report.calls

    assert uvloop.run(recover()) == (1, 1)
    mine.path("abcabcabcabcabc1.wav").write_bytes(saved)  # as if the unlink never happened
    assert uvloop.run(recover()) == (0, 0)
    types = [t for t, _ in journaled(storage)]
    assert types == ["cdr", "recording"]
    assert mine.files() == []
    assert json.loads(saved)["call_id"] == "abcabcabcabcabc1"


def test_a_recording_that_cannot_be_examined_waits_for_the_next_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = tmp_path / "var"
    mine = OpenRecordings(storage, NODE)
    mine.add(marker("dddddddddddddddd"))
    blocked = storage / "recordings" / "dddddddddddddddd.wav"
    blocked.mkdir(parents=True)  # something in its place that cannot be read as a file
    config = make_config(storage, sweep_interval=3600)

    async def recover() -> tuple[int, int, int]:
        service = RecordsService(config)
        await service.start()
        report = await service.start_recovery()
        await service.close()
        return report.adopted, report.calls, report.failed

    with caplog.at_level(logging.ERROR, "mediacore.records"):
        assert uvloop.run(recover()) == (0, 0, 1)
    assert "cannot examine it" in caplog.text and "tried again at the next start" in caplog.text
    assert journaled(storage) == [] and mine.files() == ["dddddddddddddddd.wav"]
    blocked.rmdir()
    torn_wav(blocked, 1.5)
    assert uvloop.run(recover()) == (1, 1, 0)
    assert [t for t, _ in journaled(storage)] == ["cdr", "recording"]
