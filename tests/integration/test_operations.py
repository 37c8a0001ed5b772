"""Operators' signals on a running server: SIGTERM drains calls, SIGHUP reloads the plan."""

from __future__ import annotations

import json
import re
import signal
import socket
from pathlib import Path

import pytest
import soundfile

from tests.support.server import MediacoreServer, free_sip_port
from tests.support.sipp import SAMPLE_DIR, SCENARIOS, sipp_in_background

pytestmark = pytest.mark.integration

SERVICE = "+31900123456"


def plan(sip_port: int, storage: Path, numbers: dict[str, int], extra: str = "") -> str:
    text = f"""
[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
drain_timeout = 2
[rtp]
port_range = [40400, 40599]
[storage]
dir = "{storage}"
{extra}
"""
    for number, target_port in numbers.items():
        text += f"""
[[number]]
number = "{number}"
owner = "acme"
targets = ["sip:+31201234567@127.0.0.1:{target_port}"]
record = true
"""
    return text


def send_invite(port: int, number: str, call_id: str,
                sock: socket.socket | None = None) -> None:
    """Send one INVITE with an SDP offer over UDP (from ``sock``, or a throwaway one)."""
    own = sock is None
    if sock is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
    try:
        local = sock.getsockname()[1]
        body = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                "m=audio 40000 RTP/AVP 8\r\n")
        sock.sendto((
            f"INVITE sip:{number}@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{call_id}\r\n"
            f"From: <sip:+31611111111@127.0.0.1>;tag=x\r\nTo: <sip:{number}@127.0.0.1>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:{local}>\r\n"
            f"Max-Forwards: 70\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        ).encode(), ("127.0.0.1", port))
    finally:
        if own:
            sock.close()


def invite_status(port: int, number: str, call_id: str) -> int:
    """Send one INVITE and return the first final status it gets."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        send_invite(port, number, call_id, sock)
        while True:
            status = int(sock.recv(65535).split(b" ", 2)[1])
            if status >= 200:
                return status


def test_sigterm_refuses_new_calls_and_ends_calls_in_progress_cleanly(
    tmp_path: Path, sipp_binary: str
) -> None:
    callee_port = free_sip_port()
    sip_port = free_sip_port()
    storage = tmp_path / "var"
    server = MediacoreServer(tmp_path, plan(sip_port, storage, {SERVICE: callee_port}),
                             sip_port)
    workdir = tmp_path / "sipp"
    workdir.mkdir()
    (workdir / "pcap").symlink_to(SAMPLE_DIR)
    with sipp_in_background(sipp_binary, ["-sn", "uas", "-i", "127.0.0.1",
                                          "-p", str(callee_port), "-m", "1", "-rtp_echo"]):
        server.start()
        try:
            with sipp_in_background(sipp_binary, [
                "-sf", str(SCENARIOS / "caller_pcap.xml"), "-s", SERVICE, "-i", "127.0.0.1",
                "-p", str(free_sip_port()), "-m", "1", "-d", "30000", f"127.0.0.1:{sip_port}",
            ], cwd=workdir):
                server.wait_for_log("recording to", timeout=20)  # announced, answered
                assert server.process is not None
                server.process.send_signal(signal.SIGTERM)
                server.wait_for_log("stopping: no new calls")
                assert invite_status(sip_port, SERVICE, "late-call") == 503
                server.wait_for_log("drain timeout: ending 1 calls", timeout=10)
                assert server.process.wait(timeout=20) == 0
        finally:
            server.stop()
    (cdr,) = [json.loads(m) for m in re.findall(r": CDR (\{.*\})", server.log)]
    assert cdr["hangup_by"] == "system" and cdr["disposition"] == "answered"
    audio, rate = soundfile.read(storage / "recordings" / f"{cdr['recording']}.wav")
    assert abs(len(audio) / rate - float(cdr["duration"])) < 0.1  # finalised, whole


def test_sighup_reloads_the_number_plan_and_refuses_a_bad_file(tmp_path: Path) -> None:
    sip_port = free_sip_port()
    storage = tmp_path / "var"
    new_number = "+31800000001"
    server = MediacoreServer(tmp_path, plan(sip_port, storage, {SERVICE: 5999}), sip_port)
    server.start()
    try:
        assert server.process is not None
        assert invite_status(sip_port, new_number, "before-reload") == 404
        server.config_path.write_text(plan(sip_port, storage, {new_number: 5999}))
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("reloaded")
        send_invite(sip_port, new_number, "after-reload")
        server.wait_for_log(f"INVITE after-reload for {new_number} (owner acme)")
        assert invite_status(sip_port, SERVICE, "old-number") == 404
        server.config_path.write_text("[sip\nthis is not TOML")
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("reload refused, keeping the running config")
        send_invite(sip_port, new_number, "after-bad-reload")
        server.wait_for_log(f"INVITE after-bad-reload for {new_number} (owner acme)")
    finally:
        assert server.stop() == 0, server.log


def test_a_call_without_rtp_is_hung_up_after_the_inactivity_timeout(
    tmp_path: Path, sipp_binary: str
) -> None:
    """SIPp's plain uac and uas send no RTP at all: the call must not live on."""
    callee_port = free_sip_port()
    sip_port = free_sip_port()
    storage = tmp_path / "var"
    config = plan(sip_port, storage, {SERVICE: callee_port}).replace(
        "record = true", "record = false").replace("[rtp]\n", "[rtp]\ninactivity_timeout = 2\n")
    server = MediacoreServer(tmp_path, config, sip_port)
    with sipp_in_background(sipp_binary, ["-sn", "uas", "-i", "127.0.0.1",
                                          "-p", str(callee_port), "-m", "1"]):
        server.start()
        try:
            with sipp_in_background(sipp_binary, [
                "-sn", "uac", "-s", SERVICE, "-i", "127.0.0.1", "-p", str(free_sip_port()),
                "-m", "1", "-d", "30000", f"127.0.0.1:{sip_port}",
            ]):
                server.wait_for_log("no RTP from either side", timeout=20)
                server.wait_for_log(": CDR ")
        finally:
            assert server.stop() == 0, server.log
    (cdr,) = [json.loads(m) for m in re.findall(r": CDR (\{.*\})", server.log)]
    assert cdr["hangup_by"] == "system" and cdr["disposition"] == "answered"
