"""A call that finds no free RTP port pair: a plain 503 to the caller, the detail in the log.

The reason phrase goes to whoever sent the INVITE (possibly a scanner): it
must not map our RTP range or say how loaded we are; the operator reads that
in the log line, which carries the call id.
"""

from __future__ import annotations

import logging
import random

import pytest

from mediacore.calls.call import CallError
from mediacore.calls.engine_media import EngineMedia
from mediacore.calls.recording_pump import RecordingPump
from mediacore.rtp.engine import MediaEngine
from mediacore.rtp.player import PromptLibrary
from mediacore.rtp.ports import PortPool


def test_no_free_port_pair_is_a_plain_503_with_the_range_only_in_the_log(
        caplog: pytest.LogCaptureFixture) -> None:
    base = random.Random().randrange(41000, 59000, 4)
    with MediaEngine("127.0.0.1", PortPool((base, base + 3))) as engine:
        first = engine.open_session()  # both pairs: one per leg
        try:
            with caplog.at_level(logging.WARNING, "mediacore.calls"), \
                    pytest.raises(CallError) as caught:
                EngineMedia("call-2", engine, PromptLibrary(), lambda _: None,
                            RecordingPump(engine))
        finally:
            engine.close_session(first)
    assert (caught.value.status, caught.value.reason) == (503, "Service Unavailable")
    (line,) = [r.getMessage() for r in caplog.records if r.name == "mediacore.calls"]
    assert line.startswith("call call-2: ") and str(base) in line
