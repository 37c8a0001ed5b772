"""A recording's marker on the real media plane: written before the file, kept while it
may be needed, gone when nothing is left to account for.

EngineMedia with a real RTP engine, recorder and pump; the marker directory
is the node's (records/open_recordings.py).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mediacore.calls.engine_media import EngineMedia
from mediacore.calls.media import RecordingFailed, RecordingResult, Side
from mediacore.calls.recording_pump import RecordingPump
from mediacore.records.open_recordings import OpenRecordings, RecordingStarted
from mediacore.rtp.engine import MediaEngine
from mediacore.rtp.player import PromptLibrary
from mediacore.rtp.ports import PortPool

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


def started(file: str) -> RecordingStarted:
    return RecordingStarted(
        file=file, kind="call", call_id=file.removesuffix(".wav"), sip_call_id="x@c",
        number="+31900123456", owner="acme", caller="+31612345678", target="sip:t@h",
        retention_days=30, start=T0, answer=T0 + timedelta(seconds=1),
        recording_start=T0 + timedelta(seconds=1), channels=2, node="core1")


@pytest.fixture
def engine() -> Iterator[MediaEngine]:
    base = random.Random().randrange(41000, 59000, 1000)
    eng = MediaEngine("127.0.0.1", PortPool((base, base + 999)))
    eng.start()
    yield eng
    eng.close()


def media(engine: MediaEngine, pump: RecordingPump, markers: OpenRecordings,
          call_id: str) -> EngineMedia:
    m = EngineMedia(call_id, engine, PromptLibrary(), lambda _: None, pump,
                    open_recordings=markers)
    m.set_codec(Side.CALLER, 8, "PCMA", None)
    m.set_codec(Side.CALLEE, 8, "PCMA", None)
    return m


def test_the_marker_comes_first_and_outlives_the_recording(
        engine: MediaEngine, tmp_path: Path) -> None:
    async def scenario() -> None:
        pump = RecordingPump(engine)
        pump.start(asyncio.get_running_loop())
        markers = OpenRecordings(tmp_path, "core1")
        recordings = tmp_path / "recordings"
        try:
            call = media(engine, pump, markers, "aaaa")
            call.start_recording(recordings / "aaaa.wav", channels=2,
                                 started=started("aaaa.wav"))
            assert markers.read("aaaa.wav") == started("aaaa.wav")
            assert (recordings / "aaaa.wav").exists()
            await asyncio.sleep(0.3)
            result = call.stop_recording()
            call.close()
            assert isinstance(result, RecordingResult)
            # Kept until the handle is journaled (RecordsService removes it then).
            assert markers.files() == ["aaaa.wav"]

            # A recording that cannot even open leaves no file, so no marker either.
            (recordings / "bbbb.wav").mkdir()
            failed = media(engine, pump, markers, "bbbb")
            failed.start_recording(recordings / "bbbb.wav", channels=2,
                                   started=started("bbbb.wav"))
            assert isinstance(failed.stop_recording(), RecordingFailed)
            failed.close()
            assert markers.files() == ["aaaa.wav"]

            # A marker that cannot be written (here: a directory in its place): the
            # call goes on unrecorded, and no file is made that nobody could account for.
            (markers.path("cccc.wav") / "in-the-way").mkdir(parents=True)
            unmarked = media(engine, pump, markers, "cccc")
            unmarked.start_recording(recordings / "cccc.wav", channels=2,
                                     started=started("cccc.wav"))
            outcome = unmarked.stop_recording()
            unmarked.close()
            assert isinstance(outcome, RecordingFailed) and outcome.error == "io-error"
            assert not (recordings / "cccc.wav").exists()
            assert sorted(p.name for p in markers.directory.iterdir()) == [
                "aaaa.wav.json", "cccc.wav.json"]  # no temporary file left behind
        finally:
            pump.close()

    asyncio.run(scenario())
