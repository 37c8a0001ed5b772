"""A recorded call end to end: SIPp caller (g711a.pcap audio) → mediacore → SIPp callee.

Real processes on loopback: the server as operators start it, SIPp as the
carrier's caller and as the target (echoing RTP back, so both channels of
the recording carry audio). Checked: the caller's call succeeds, the CDR
is written, the recording is stereo 8 kHz with audio on both channels and
as long as the billed time.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.support.server import MediacoreServer, free_sip_port
from tests.support.sipp import call_with_pcap

pytestmark = pytest.mark.integration

SERVICE = "+31900123456"


def config(sip_port: int, target_port: int, storage: Path) -> str:
    return f"""
[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
[rtp]
port_range = [40000, 40199]
inactivity_timeout = 30
[storage]
dir = "{storage}"
[[number]]
number = "{SERVICE}"
owner = "acme"
targets = ["sip:+31201234567@127.0.0.1:{target_port}"]
record = true
ring_timeout = 10
"""


def cdrs(log: str) -> list[dict[str, str]]:
    return [json.loads(match) for match in re.findall(r": CDR (\{.*\})", log)]


def test_recorded_call_with_announcement_audio_and_cdr(
    tmp_path: Path, sipp_binary: str, echo_callee: int
) -> None:
    sip_port = free_sip_port()
    storage = tmp_path / "var"
    server = MediacoreServer(tmp_path, config(sip_port, echo_callee, storage), sip_port)
    server.start()
    try:
        result = call_with_pcap(sipp_binary, "caller_pcap.xml", service=SERVICE,
                                server_port=sip_port, workdir=tmp_path / "sipp",
                                hold_ms=3000, local_port=free_sip_port())
        assert result.returncode == 0, result.stdout + result.stderr + server.log
        server.wait_for_log(": CDR ")
    finally:
        assert server.stop() == 0, server.log
    (cdr,) = cdrs(server.log)
    assert cdr["disposition"] == "answered" and cdr["hangup_by"] == "caller"
    assert cdr["caller"] == "+31612345678" and cdr["number"] == SERVICE
    assert cdr["recording"]
    # The announcement came first: recording starts at the answer, after it.
    assert server.log.index("playing recording-notice") < server.log.index("recording to")
    wav = storage / "recordings" / f"{cdr['recording']}.wav"
    # Its marker (for a restart after a crash) went once the handle was journaled.
    assert not list((storage / "journal").rglob("*.wav.json"))
    audio, rate = soundfile.read(wav, dtype="int16")
    assert rate == 8000 and audio.shape[1] == 2
    assert abs(len(audio) / rate - float(cdr["duration"])) < 0.1
    for channel in (0, 1):  # caller's pcap audio, and the callee's echo of it
        assert np.abs(audio[:, channel].astype(np.int32)).mean() > 100
    # At DEBUG the call's relay counters: the pcap's packets came in from the
    # caller, went on to the target and came back, none lost, all recorded.
    (line,) = re.findall(rf"call {cdr['call_id']}: media (.*)", server.log)
    media = {key: float(value) for key, value in
             (word.split("=") for word in line.split())}
    assert media["caller.packets"] > 100 and media["caller.lost"] == 0
    assert media["caller.forwarded"] == media["caller.packets"]
    assert media["target.packets"] > 100 and media["target.lost"] == 0
    assert media["recording_dropped"] == 0
    assert media["recorded"] >= media["caller.packets"] + media["target.packets"] - 10
