"""Hostile networks against the running server: RTP spray, hijacks, a NATed caller.

Real processes on loopback: ``mediacore serve`` as operators start it, SIPp
as the carrier's caller (g711a.pcap) and as the target (echoing RTP back, so
whatever reaches the target comes back towards the caller's leg), a small
SIP caller of our own where the SDP must say one thing and the media do
another, and an attacker on 127.0.0.66 (another host on the network) that
sends RTP to every port of the server's small RTP range. Each attack is
checked where it would show: what the attacker received, what the caller
heard, what the recording holds and what the engine counted.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile
from prometheus_client.parser import text_string_to_metric_families

from mediacore.rtp.packet import build_rtp, parse_rtp
from tests.support.ports import free_port
from tests.support.rtp import ATTACKER, HOST, UdpPeer, wait_for
from tests.support.server import MediacoreServer, free_sip_port
from tests.support.sip_caller import SERVICE, SipCaller, offer
from tests.support.sipp import call_with_pcap

pytestmark = pytest.mark.integration

PCMA = 8
#: The attacker's audio: A-law 0x2A decodes to -32256, a level that speech
#: in g711a.pcap never holds for a whole packet. Any of it in a recording
#: shows as a run of that exact sample.
ATTACK_BYTE = 0x2A
ATTACK_SAMPLE = -32256
#: Our own caller's audio (A-law 0x9A: 4032), in the tests with our caller.
CALLER_BYTE = 0x9A
CALLER_SAMPLE = 4032
ATTACKER_SSRC = 0x66666666
RANGE_PORTS = 12  # six RTP/RTCP pairs: one call uses two


def rtp_range(avoid: int = 0) -> tuple[int, int]:
    """A small random range that does not hold ``avoid`` (the SIP port: host checks)."""
    while True:
        base = random.Random().randrange(42000, 58000, 100)
        if not base <= avoid < base + RANGE_PORTS:
            return base, base + RANGE_PORTS - 1


def config(sip_port: int, metrics_port: int, target_port: int, storage: Path,
           port_range: tuple[int, int], *, latching: str | None, record: bool,
           relatch_after: float = 0) -> str:
    number_latching = f'media_latching = "{latching}"' if latching else ""
    return f"""
[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
drain_timeout = 2
[rtp]
port_range = [{port_range[0]}, {port_range[1]}]
relatch_after = {relatch_after}
[storage]
dir = "{storage}"
[metrics]
listen = "127.0.0.1:{metrics_port}"
[[number]]
number = "{SERVICE}"
owner = "acme"
targets = ["sip:+31201234567@127.0.0.1:{target_port}"]
record = {str(record).lower()}
ring_timeout = 10
{number_latching}
"""


class Sprayer:
    """The attacker: RTP (and RTCP) to every port of the range, every 20 ms.

    One socket on 127.0.0.66, so whatever the server sends back to any of
    the packets arrives on it; ``received`` keeps it all. Bounded: it stops
    on ``stop()`` or after ``limit`` seconds, whichever comes first.
    """

    def __init__(self, port_range: tuple[int, int], limit: float = 40.0) -> None:
        self.peer = UdpPeer(ATTACKER)
        self.ports = range(port_range[0], port_range[1] + 1)
        self.limit = limit
        self.sent = 0
        self.received: list[tuple[bytes, tuple[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sprayer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        seq = 0
        ssrc = ATTACKER_SSRC
        report = b"\x80\xc8\x00\x06" + ssrc.to_bytes(4, "big") + bytes(20)  # an SR
        end = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < end:
            packet = build_rtp(PCMA, seq, seq * 160, ssrc, bytes([ATTACK_BYTE]) * 160)
            for port in self.ports:
                self.peer.send(packet if port % 2 == 0 else report, port)
                self.sent += 1
            seq += 1
            self.received += self.peer.drain()
            self._stop.wait(0.02)
        self.received += self.peer.drain()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.peer.close()


def scrape(metrics_port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        body = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def dropped(samples: dict, reason: str) -> float:
    return sum(value for (name, labels), value in samples.items()
               if name == "mediacore_rtp_packets_dropped_total" and ("reason", reason) in labels)


def cdrs(log: str) -> list[dict[str, str]]:
    return [json.loads(match) for match in re.findall(r": CDR (\{.*\})", log)]


def media_counters(log: str, call_id: str) -> dict[str, float]:
    (line,) = re.findall(rf"call {call_id}: media (.*)", log)
    return {key: float(value) for key, value in (word.split("=") for word in line.split())}


def longest_run(channel: np.ndarray, value: int) -> int:
    """The longest stretch of consecutive samples equal to ``value``."""
    hits = np.concatenate(([0], (channel == value).astype(np.int8), [0]))
    edges = np.flatnonzero(np.diff(hits))
    return int((edges[1::2] - edges[::2]).max()) if len(edges) else 0


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@dataclass
class Served:
    server: MediacoreServer
    port_range: tuple[int, int]
    nat: bool
    metrics_port: int

    def recording(self, cdr: dict[str, str]) -> np.ndarray:
        audio, rate = soundfile.read(self.server.workdir / "var" / "recordings" /
                                     f"{cdr['recording']}.wav", dtype="int16")
        assert rate == 8000 and audio.shape[1] == 2
        return audio


@pytest.fixture
def served(request: pytest.FixtureRequest, tmp_path: Path, echo_callee: int,
           metrics_port: int) -> Iterator[Served]:
    """A server whose number has the test's ``media_latching`` (None: the
    default, strict), recording or not, with a small RTP range."""
    latching, record, relatch_after = request.param
    sip_port = free_sip_port()
    port_range = rtp_range(avoid=sip_port)
    server = MediacoreServer(tmp_path, config(
        sip_port, metrics_port, echo_callee, tmp_path / "var", port_range,
        latching=latching, record=record, relatch_after=relatch_after), sip_port)
    server.start()
    try:
        yield Served(server, port_range, latching == "nat", metrics_port)
    finally:
        assert server.stop() == 0, server.log


@pytest.mark.parametrize("served", [(None, True, 0), ("nat", True, 0)],
                         ids=["strict", "nat"], indirect=True)
def test_an_rtp_spray_gets_nothing_back_and_leaves_nothing_in_the_recording(
        served: Served, sipp_binary: str, tmp_path: Path) -> None:
    """The "RTP bleed" attack: every port of the range, before and during a
    recorded call between a SIPp caller and an echoing SIPp callee."""
    server = served.server
    with Sprayer(served.port_range) as attacker:
        wait_for(lambda: attacker.sent > 10 * RANGE_PORTS, "the spray to start")
        result = call_with_pcap(sipp_binary, "caller_pcap.xml", service=SERVICE,
                                server_port=server.sip_port, workdir=tmp_path / "sipp",
                                hold_ms=3000, local_port=free_sip_port())
        assert result.returncode == 0, result.stdout + result.stderr + server.log
        server.wait_for_log(": CDR ")
    assert attacker.sent > 100 * RANGE_PORTS
    assert attacker.received == []  # no call audio, no announcement, no echo, no RTCP
    (cdr,) = cdrs(server.log)
    assert cdr["disposition"] == "answered" and cdr["recording"]
    audio = served.recording(cdr)
    for channel in (0, 1):  # the real parties: the pcap, and the callee's echo of it
        assert np.abs(audio[:, channel].astype(np.int32)).mean() > 100
        assert longest_run(audio[:, channel], ATTACK_SAMPLE) < 40
    media = media_counters(server.log, cdr["call_id"])
    assert media["caller.foreign"] > 0 and media["target.foreign"] > 0
    assert media["caller.forwarded"] == media["caller.packets"] > 100
    assert media["target.packets"] > 100
    samples = scrape(served.metrics_port)
    # A leg is strict until its SDP arrives, so a nat call counts both reasons.
    assert dropped(samples, "strict") + dropped(samples, "foreign") >= (
        media["caller.foreign"] + media["target.foreign"])
    assert dropped(samples, "foreign" if served.nat else "strict") > 0
    assert re.search(rf"call {cdr['call_id']}: media: dropped packets from unexpected "
                     rf"sources: \d+ on the caller's leg \(the last from {ATTACKER}:\d+\)",
                     server.log)


CALLER_SSRC = 0xCA11E4


def caller_audio(seq: int) -> bytes:
    return build_rtp(PCMA, seq, seq * 160, CALLER_SSRC, bytes([CALLER_BYTE]) * 160)


def from_ssrc(datagrams: list[tuple[bytes, tuple[str, int]]], ssrc: int) -> int:
    """How many of ``datagrams`` are RTP of ``ssrc`` (the echo keeps the SSRC)."""
    count = 0
    for data, _ in datagrams:
        try:
            count += parse_rtp(data).ssrc == ssrc
        except ValueError:
            continue
    return count


def talk(media: UdpPeer, port: int, first_seq: int, count: int) -> None:
    for seq in range(first_seq, first_seq + count):
        media.send(caller_audio(seq), port)
        time.sleep(0.02)


@pytest.mark.parametrize("served", [(None, True, 0), ("nat", True, 0.5)],
                         ids=["strict", "nat-relatch-0.5s"], indirect=True)
def test_hijacks_before_the_first_packet_and_after_silence_fail(served: Served) -> None:
    """The attacker sprays while the caller hears the recording notice and has
    sent nothing (the race to the first packet), then while the caller is
    silent for longer than any relatch delay (1 s before this fix; 0.5 s
    configured in the nat case): neither takes the leg."""
    server = served.server
    media = UdpPeer(HOST)
    caller = SipCaller(server.sip_port, call_id="hijack")
    try:
        with Sprayer(served.port_range) as attacker:
            wait_for(lambda: attacker.sent > 10 * RANGE_PORTS, "the spray to start")
            caller.invite(offer(HOST, media.port))
            caller.wait_for(183)
            # The recording notice, to the caller only, while it sends nothing.
            notice = media.recv(25)
            leg_a = notice[0][1]
            assert {src for _, src in notice} == {leg_a} and leg_a[1] in attacker.ports
            caller.wait_for(200)
            caller.ack()
            talk(media, leg_a[1], 0, 50)  # the callee echoes it back
            time.sleep(1.5)  # silence: longer than relatch_after, and the old 1 s
            talk(media, leg_a[1], 50, 25)
            time.sleep(0.3)
            heard = media.drain()
            assert caller.bye().status == 200
        server.wait_for_log(": CDR ")
    finally:
        caller.close()
        media.close()
    assert attacker.received == []
    assert from_ssrc(notice + heard, ATTACKER_SSRC) == 0  # the callee never echoed the attacker
    assert from_ssrc(heard, CALLER_SSRC) >= 60  # the caller's own audio, echoed, both talks
    (cdr,) = cdrs(server.log)
    stats = media_counters(server.log, cdr["call_id"])
    assert stats["caller.packets"] == 75 and stats["caller.foreign"] > 0
    assert stats["target.packets"] == stats["caller.forwarded"] == 75  # the echo, all of it
    audio = served.recording(cdr)
    assert longest_run(audio[:, 0], CALLER_SAMPLE) >= 160  # the caller, recorded
    for channel in (0, 1):
        assert longest_run(audio[:, channel], ATTACK_SAMPLE) < 40
    assert scrape(served.metrics_port)[("mediacore_rtp_relatches_total",
                                 (("direction", "from_caller"),))] == 0


@pytest.mark.parametrize("served", [("nat", False, 0), (None, False, 0)],
                         ids=["nat", "strict"], indirect=True)
def test_a_natted_caller_has_two_way_audio_only_where_nat_is_configured(
        served: Served) -> None:
    """SDP names a private address (127.0.0.77 here, where nothing listens);
    the media comes from the caller's public address, where its SIP comes
    from (127.0.0.1), on another port."""
    server = served.server
    media = UdpPeer(HOST)
    caller = SipCaller(server.sip_port, call_id="natted")
    try:
        caller.invite(offer("127.0.0.77", 4000))
        answer = caller.wait_for(200)
        caller.ack()
        leg_a = int(re.search(rb"m=audio (\d+)", answer.body).group(1))  # type: ignore[union-attr]
        talk(media, leg_a, 0, 50)
        time.sleep(0.3)
        heard = media.drain()
        assert caller.bye().status == 200
        server.wait_for_log(": CDR ")
    finally:
        caller.close()
        media.close()
    (cdr,) = cdrs(server.log)
    stats = media_counters(server.log, cdr["call_id"])
    echoed = [d for d, src in heard if src[1] == leg_a
              and parse_rtp(d).payload[:1] == bytes([CALLER_BYTE])]
    if served.nat:
        assert len(echoed) >= 45  # there and back through the callee's echo
        assert stats["caller.packets"] == 50 and stats["caller.foreign"] == 0
    else:
        assert heard == []
        assert stats["caller.packets"] == 0 and stats["caller.foreign"] == 50
        assert stats["target.packets"] == 0
        assert re.search(r"dropped packets from unexpected sources: 50 on the caller's leg "
                         rf"\(the last from {HOST}:{media.port}\)", server.log)


def test_a_bad_latching_setting_stops_serve_before_any_socket_opens(tmp_path: Path) -> None:
    sip_port = free_sip_port()
    path = tmp_path / "bad.toml"
    path.write_text(config(sip_port, free_port(), 5070, tmp_path / "var", rtp_range(),
                           latching="symmetric", record=False, relatch_after=-1)
                    .replace("[rtp]\n", '[rtp]\nlatching = "open"\n'))
    result = subprocess.run([sys.executable, "-m", "mediacore", "serve", "-c", str(path)],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    for problem in ("rtp.latching: must be one of strict, nat",
                    "rtp.relatch_after: must not be negative",
                    "number[0].media_latching: must be one of strict, nat"):
        assert f"{path}: {problem}" in result.stderr
    assert "ready:" not in result.stderr and "listening" not in result.stderr
