"""The running server against real SIPp over UDP and TCP on loopback."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import MediacoreServer, basic_config, free_sip_port
from tests.support.sipp import SCENARIOS, run_sipp, sipp_in_background

pytestmark = pytest.mark.integration

SERVICE = "+31900123456"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediacoreServer]:
    workdir = tmp_path_factory.mktemp("sip-server")
    port = free_sip_port()
    # 127.0.0.2 plays a host outside trusted_sources.
    process = MediacoreServer(workdir, basic_config(port, workdir / "var",
                                                    trusted="127.0.0.1/32"), port)
    process.start()
    yield process
    assert process.stop() == 0, process.log


def sipp(server: MediacoreServer, sipp_binary: str, tmp_path: Path, scenario: Path, *,
         service: str = SERVICE, transport: str = "u1", calls: int = 1,
         local_ip: str = "127.0.0.1") -> tuple[int, str]:
    """Run one bounded SIPp client; returns its exit code and its message trace."""
    trace = tmp_path / f"{scenario.stem}-{transport}-messages.log"
    result = run_sipp(sipp_binary, [
        "-sf", str(scenario), "-s", service, "-i", local_ip, "-p", str(free_sip_port(local_ip)),
        "-t", transport, "-m", str(calls), "-trace_msg", "-message_file", str(trace),
        f"127.0.0.1:{server.sip_port}",
    ], timeout=20)
    messages = trace.read_text(errors="replace") if trace.exists() else ""
    return result.returncode, messages + result.stdout + result.stderr


def rejected_scenario(tmp_path: Path, status: int, pause_ms: int = 0) -> Path:
    text = (SCENARIOS / "invite_rejected.xml").read_text()
    path = tmp_path / f"invite_{status}_{pause_ms}.xml"
    path.write_text(text.replace("FINAL_STATUS", str(status)).replace("PAUSE_MS", str(pause_ms)))
    return path


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_options_ping_is_answered(server: MediacoreServer, sipp_binary: str, tmp_path: Path,
                                  transport: str) -> None:
    code, output = sipp(server, sipp_binary, tmp_path, SCENARIOS / "options.xml",
                        transport=transport, calls=3)
    assert code == 0, output


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_invite_gets_a_final_answer_and_is_acked(
    server: MediacoreServer, sipp_binary: str, tmp_path: Path, transport: str
) -> None:
    """A number not in the plan: 404, ACKed (forwarded calls: test_call_end_to_end)."""
    code, output = sipp(server, sipp_binary, tmp_path, rejected_scenario(tmp_path, 404),
                        service="+3100000000", transport=transport, calls=2)
    assert code == 0, output
    assert "SIP/2.0 100 Trying" in output  # at once, before the final answer


def test_final_response_is_retransmitted_over_udp_until_the_ack(
    server: MediacoreServer, sipp_binary: str, tmp_path: Path
) -> None:
    """SIPp holds its ACK back for 1.8 s: Timer G must resend the 404 at 0.5 and 1.5 s."""
    code, output = sipp(server, sipp_binary, tmp_path,
                        rejected_scenario(tmp_path, 404, pause_ms=1800), service="+3111")
    assert code == 0, output
    assert len(re.findall(r"^SIP/2.0 404 ", output, re.MULTILINE)) >= 3


def test_retransmitted_invite_is_answered_but_handled_once(server: MediacoreServer) -> None:
    """A UDP client that lost our answer sends the same INVITE again: the
    transaction answers the copy, the call is handled only once."""
    invite = (
        "INVITE sip:+3122@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-copy-1\r\n"
        "From: <sip:+31612345678@127.0.0.1>;tag=a\r\nTo: <sip:+3122@127.0.0.1>\r\n"
        "Call-ID: retransmitted-invite\r\nCSeq: 1 INVITE\r\n"
        "Contact: <sip:caller@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    before = server.log.count("for +3122: not in the number plan")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        data = invite.format(port=sock.getsockname()[1]).encode()
        answers = []
        for _ in range(2):
            sock.sendto(data, ("127.0.0.1", server.sip_port))
            answers.append(sock.recv(65535))
            if answers[-1].startswith(b"SIP/2.0 100"):
                answers.append(sock.recv(65535))
    assert [a.split(b"\r\n")[0] for a in answers] == [
        b"SIP/2.0 100 Trying", b"SIP/2.0 404 Not Found", b"SIP/2.0 404 Not Found"]
    assert answers[1] == answers[2]  # the same response, the same To tag
    # Log lines are written in order: once a later call's line is there, any
    # second handling of the copy would be too.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(data.replace(b"+3122", b"+3133").replace(b"copy-1", b"copy-2"),
                    ("127.0.0.1", server.sip_port))
    server.wait_for_log("for +3133: not in the number plan")
    assert server.log.count("for +3122: not in the number plan") == before + 1


def test_invite_from_an_untrusted_source_gets_403_and_a_log_line(
    server: MediacoreServer, sipp_binary: str, tmp_path: Path
) -> None:
    code, output = sipp(server, sipp_binary, tmp_path, rejected_scenario(tmp_path, 403),
                        local_ip="127.0.0.2")
    assert code == 0, output
    server.wait_for_log("INVITE from untrusted source udp:127.0.0.2:")


def test_garbage_does_not_stop_the_server(server: MediacoreServer, sipp_binary: str,
                                          tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for junk in (b"", b"\r\n\r\n", b"\x00" * 100, b"INVITE\r\n\r\n", b"SIP/2.0 200\r\n"):
            sock.sendto(junk, ("127.0.0.1", server.sip_port))
    with socket.create_connection(("127.0.0.1", server.sip_port), timeout=5) as conn:
        conn.sendall(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1\r\n\r\n")
        answer = conn.recv(4096)
    assert answer.startswith(b"SIP/2.0 400 ")  # no Content-Length on a stream
    code, output = sipp(server, sipp_binary, tmp_path, SCENARIOS / "options.xml")
    assert code == 0, output
    assert server.alive()


def test_idle_tcp_connections_are_closed(tmp_path: Path) -> None:
    port = free_sip_port()
    config = basic_config(port, tmp_path / "var").replace(
        "[sip]\n", "[sip]\ntcp_idle_timeout = 1\n")
    server = MediacoreServer(tmp_path, config, port)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"\r\n\r\n")  # a keepalive ping (RFC 5626) is answered with CRLF
            assert conn.recv(16) == b"\r\n"
            conn.settimeout(10)
            assert conn.recv(16) == b""  # closed by the server once idle
        server.wait_for_log("idle for")
    finally:
        assert server.stop() == 0


def test_a_burst_of_calls_is_handled_without_a_single_error(
    tmp_path: Path, sipp_binary: str
) -> None:
    """200 short calls at 100 per second through to a SIPp callee: all succeed, and
    the server logs no error (a past-due timer once raised inside every dispatch)."""
    callee_port = free_sip_port()
    sip_port = free_sip_port()
    config = basic_config(sip_port, tmp_path / "var").replace(
        "127.0.0.1:5070", f"127.0.0.1:{callee_port}").replace(
        "[storage]", "[rtp]\nport_range = [43000, 44999]\n[storage]")
    server = MediacoreServer(tmp_path, config, sip_port)
    with sipp_in_background(sipp_binary, ["-sn", "uas", "-i", "127.0.0.1",
                                          "-p", str(callee_port), "-mp", "52000"]):
        server.start()
        try:
            result = run_sipp(sipp_binary, [
                "-sn", "uac", "-s", SERVICE, "-i", "127.0.0.1", "-p", str(free_sip_port()),
                "-r", "100", "-m", "200", "-d", "200", "-mp", "53000",
                f"127.0.0.1:{sip_port}"], timeout=30)
            assert result.returncode == 0, result.stdout[-3000:] + server.log[-3000:]
            server.wait_for_log(": CDR ", count=200)
        finally:
            assert server.stop() == 0
    assert " ERROR " not in server.log and "Traceback" not in server.log, server.log[-5000:]
