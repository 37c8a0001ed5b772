"""In-dialog requests from a stranger, against live calls: refused, and the call goes on.

The server trusts only 127.0.0.1 (the carrier: a SIPp caller); the target is a
SIPp on 127.0.0.2, which it does not trust; the stranger is this test on
127.0.0.66, with a SIP socket and an RTP socket of its own. It learns what a
sniffer would (Call-ID, tags, the INVITE's branch) from the SIPp traces, and
while the target rings sends a CANCEL, then once the call is up a BYE, a
re-INVITE and an UPDATE that move the media to itself, and a BYE posing as
the target. Each gets 403; the target's scenario fails if any request but
our ACK and the caller's BYE reaches it; the stranger's RTP socket receives
nothing of the call's audio (the target echoes the caller's pcap back, so
there is audio to steal); the caller hangs up when it means to, and the one
CDR says so. A second test has the target hang up from its own (untrusted)
address, which is taken.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.test_call_flows_sipp import (
    Traced,
    cdr_stream,
    parse_trace,
    sipp_media_port,
    udp_bound,
    wait_for_cdrs,
)
from tests.support.server import MediacoreServer, free_sip_port
from tests.support.sipp import SAMPLE_DIR, SCENARIOS

pytestmark = pytest.mark.integration

SERVICE = "+31900123456"
STRANGER = "127.0.0.66"
TARGET_HOST = "127.0.0.2"


def config(sip_port: int, storage: Path, target: str, redis_url: str, rtp: int) -> str:
    return f"""
[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
advertised_address = "127.0.0.1"
trusted_sources = ["127.0.0.1/32"]
[rtp]
port_range = [{rtp}, {rtp + 99}]
[storage]
dir = "{storage}"
[redis]
url = "{redis_url}"
[[number]]
number = "{SERVICE}"
owner = "acme"
targets = ["{target}"]
ring_timeout = 10
max_duration = 60
"""


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def traced(path: Path) -> list[Traced]:
    return parse_trace(path.read_text()) if path.exists() else []


def find(path: Path, *, sent: bool, start: str) -> Traced | None:
    return next((m for m in traced(path) if m.sent == sent and m.start_line.startswith(start)),
                None)


class Stranger:
    """The attacker on 127.0.0.66: sends SIP, reads the answers, and listens for RTP."""

    def __init__(self) -> None:
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind((STRANGER, 0))
        self.sip.settimeout(5.0)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind((STRANGER, 0))
        self.rtp.setblocking(False)
        self.port = self.sip.getsockname()[1]
        self.rtp_port = self.rtp.getsockname()[1]
        self.sequence = 0

    def via(self) -> str:
        self.sequence += 1
        return f"SIP/2.0/UDP {STRANGER}:{self.port};branch=z9hG4bK-stranger-{self.sequence};rport"

    def offer(self) -> str:
        return (f"v=0\r\no=evil 1 2 IN IP4 {STRANGER}\r\ns=-\r\nc=IN IP4 {STRANGER}\r\n"
                f"t=0 0\r\nm=audio {self.rtp_port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n")

    def send(self, head: str, server_port: int, body: str = "") -> int:
        """Send one request to the server; the final status it answers (1xx skipped)."""
        extra = "Content-Type: application/sdp\r\n" if body else ""
        message = f"{head}Max-Forwards: 70\r\n{extra}Content-Length: {len(body)}\r\n\r\n{body}"
        self.sip.sendto(message.encode(), ("127.0.0.1", server_port))
        while True:
            data, _ = self.sip.recvfrom(65536)
            status = int(data.split(b" ", 2)[1])
            if status >= 200:
                return status

    def rtp_received(self) -> int:
        count = 0
        while True:
            try:
                self.rtp.recv(2048)
            except BlockingIOError:
                return count
            count += 1

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()


@pytest.fixture
def stranger() -> Iterator[Stranger]:
    attacker = Stranger()
    try:
        yield attacker
    finally:
        attacker.close()


def sipp_process(sipp: str, scenario: str, *, host: str, trace: Path, hold_ms: int,
                 cwd: Path, extra: list[str] | None = None) -> tuple[subprocess.Popen[str], int]:
    port = free_sip_port(host)
    process = subprocess.Popen(
        [sipp, "-sf", str(SCENARIOS / scenario), "-i", host, "-p", str(port),
         "-mp", str(sipp_media_port()), "-m", "1", "-d", str(hold_ms),
         "-trace_msg", "-message_file", str(trace), "-trace_err",
         "-error_file", str(trace.with_suffix(".errors")), *(extra or []),
         "-nostdin", "-timeout", "30s", "-timeout_error"],
        cwd=cwd, text=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    return process, port


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.wait(10)


def tag(header: str | None) -> str:
    found = re.search(r";\s*tag=([^;\s]+)", header or "")
    assert found, header
    return found.group(1)


def uri_of(header: str | None) -> str:
    found = re.search(r"<([^>]+)>", header or "")
    assert found, header
    return found.group(1)


def report(server: MediacoreServer, *traces: Path) -> str:
    parts = [f"--- {path.name} ---\n" + "\n".join(
        ("-> " if m.sent else "<- ") + m.start_line for m in traced(path))
        + "\n" + (path.with_suffix(".errors").read_text()
                  if path.with_suffix(".errors").exists() else "") for path in traces]
    return "\n".join(parts) + f"\n--- mediacore ---\n{server.log}"


def test_a_strangers_cancel_bye_reinvite_and_update_leave_the_live_call_alone(
        tmp_path: Path, sipp_binary: str, redis_url: str, stranger: Stranger,
        processes: list[subprocess.Popen[str]]) -> None:
    (tmp_path / "pcap").symlink_to(SAMPLE_DIR)
    callee_trace, caller_trace = tmp_path / "target.messages", tmp_path / "caller.messages"
    callee, callee_port = sipp_process(sipp_binary, "callee_rings_then_answers.xml",
                                       host=TARGET_HOST, trace=callee_trace, hold_ms=2500,
                                       cwd=tmp_path, extra=["-rtp_echo"])
    processes.append(callee)
    wait_until(lambda: udp_bound(callee_port), "the target SIPp")
    sip_port = free_sip_port()
    server = MediacoreServer(tmp_path, config(
        sip_port, tmp_path / "var", f"sip:+31201234567@{TARGET_HOST}:{callee_port}",
        redis_url, 45900), sip_port)
    server.start()
    try:
        caller, _ = sipp_process(sipp_binary, "caller_pcap.xml", host="127.0.0.1",
                                 trace=caller_trace, hold_ms=4000, cwd=tmp_path,
                                 extra=["-s", SERVICE, f"127.0.0.1:{sip_port}"])
        processes.append(caller)
        why = lambda: report(server, caller_trace, callee_trace)  # noqa: E731

        # 1. While the target rings: a CANCEL copied from the caller's INVITE.
        wait_until(lambda: find(caller_trace, sent=False, start="SIP/2.0 180") is not None,
                   "the caller's 180")
        invite = find(caller_trace, sent=True, start="INVITE")
        assert invite is not None
        cancel = (f"CANCEL sip:{SERVICE}@127.0.0.1:{sip_port} SIP/2.0\r\n"
                  f"Via: {invite.header('Via')}\r\nFrom: {invite.header('From')}\r\n"
                  f"To: {invite.header('To')}\r\nCall-ID: {invite.header('Call-ID')}\r\n"
                  "CSeq: 1 CANCEL\r\n")
        assert stranger.send(cancel, sip_port) == 403, why()

        # 2. The call is up: BYE, re-INVITE and UPDATE in the caller's dialog.
        wait_until(lambda: find(caller_trace, sent=True, start="ACK") is not None,
                   "the caller's ACK")
        answer = find(caller_trace, sent=False, start="SIP/2.0 200")
        assert answer is not None
        ours = uri_of(answer.header("Contact"))
        dialog = (f"From: {invite.header('From')}\r\nTo: {answer.header('To')}\r\n"
                  f"Call-ID: {invite.header('Call-ID')}\r\n")
        assert stranger.send(f"BYE {ours} SIP/2.0\r\nVia: {stranger.via()}\r\n{dialog}"
                             "CSeq: 10 BYE\r\n", sip_port) == 403, why()
        contact = f"Contact: <sip:evil@{STRANGER}:{stranger.port}>\r\n"
        for number, method in ((11, "INVITE"), (12, "UPDATE")):
            status = stranger.send(f"{method} {ours} SIP/2.0\r\nVia: {stranger.via()}\r\n"
                                   f"{dialog}CSeq: {number} {method}\r\n{contact}", sip_port,
                                   stranger.offer())
            assert status == 403, (method, why())

        # 3. The target's dialog: a BYE posing as the target.
        wait_until(lambda: find(callee_trace, sent=True, start="SIP/2.0 200") is not None,
                   "the target's 200")
        onward = find(callee_trace, sent=False, start="INVITE")
        answered = find(callee_trace, sent=True, start="SIP/2.0 200")
        assert onward is not None and answered is not None
        assert tag(answered.header("To"))
        bye = (f"BYE {uri_of(onward.header('Contact'))} SIP/2.0\r\nVia: {stranger.via()}\r\n"
               f"From: {answered.header('To')}\r\nTo: {onward.header('From')}\r\n"
               f"Call-ID: {onward.header('Call-ID')}\r\nCSeq: 20 BYE\r\n")
        assert stranger.send(bye, sip_port) == 403, why()

        # 4. The real caller hangs up when it means to; the target saw only ACK and BYE.
        assert caller.wait(40) == 0, why()
        assert callee.wait(40) == 0, why()
        server.wait_for_log(": CDR ")
        wait_for_cdrs(redis_url, 1)
    finally:
        server.stop()

    assert stranger.rtp_received() == 0, why()
    (cdr,) = cdr_stream(redis_url)
    assert cdr["disposition"] == "answered" and cdr["hangup_by"] == "caller", cdr
    assert 3.0 <= float(cdr["duration"]) <= 6.0, cdr
    log = server.log
    # The re-INVITE too: in a dialog, the untrusted screen passes it on and
    # the call's own peer check refuses it.
    for method in ("CANCEL", "BYE", "UPDATE", "INVITE"):
        assert f"{method} from udp:{STRANGER}:{stranger.port}, which is neither" in log, log
    media = re.search(r"media caller\.packets=(\d+) .* target\.packets=(\d+) ", log)
    assert media and int(media.group(1)) > 0 and int(media.group(2)) > 0, log  # audio flowed


def test_the_target_hangs_up_from_its_own_untrusted_address(
        tmp_path: Path, sipp_binary: str, redis_url: str,
        processes: list[subprocess.Popen[str]]) -> None:
    callee_trace, caller_trace = tmp_path / "target.messages", tmp_path / "caller.messages"
    callee, callee_port = sipp_process(sipp_binary, "flow_callee_hangs_up.xml",
                                       host=TARGET_HOST, trace=callee_trace, hold_ms=500,
                                       cwd=tmp_path)
    processes.append(callee)
    wait_until(lambda: udp_bound(callee_port), "the target SIPp")
    sip_port = free_sip_port()
    server = MediacoreServer(tmp_path, config(
        sip_port, tmp_path / "var", f"sip:+31201234567@{TARGET_HOST}:{callee_port}",
        redis_url, 46000 - 100), sip_port)
    server.start()
    try:
        caller, _ = sipp_process(sipp_binary, "flow_caller_awaits_bye.xml", host="127.0.0.1",
                                 trace=caller_trace, hold_ms=0, cwd=tmp_path,
                                 extra=["-s", SERVICE, f"127.0.0.1:{sip_port}"])
        processes.append(caller)
        assert caller.wait(40) == 0, report(server, caller_trace, callee_trace)
        assert callee.wait(40) == 0, report(server, caller_trace, callee_trace)
        wait_for_cdrs(redis_url, 1)
    finally:
        server.stop()
    (cdr,) = cdr_stream(redis_url)
    assert cdr["hangup_by"] == "callee" and cdr["disposition"] == "answered", cdr
    assert "which is neither" not in server.log, server.log
