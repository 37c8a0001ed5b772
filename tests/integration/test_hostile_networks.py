"""Issue 14's scanner flood and TCP attacks, against the running server on loopback.

The server trusts 127.0.0.1/32 only: SIPp there is the carrier (and the
target); 127.0.0.66 and its neighbours stand for hosts outside. The flood
comes from benchmarks/load/floodgen.py (each datagram a new INVITE, as a
scanner sends them), bounded in rate and seconds; every SIPp run and every
socket is bounded too.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from mediacore.host_checks import OWN_DESCRIPTORS, descriptors_needed, rtp_descriptors
from tests.support.ports import free_port
from tests.support.server import MediacoreServer, free_sip_port
from tests.support.sipp import call_with_pcap, run_sipp, sipp_in_background

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SERVICE = "+31900123456"
SCANNER = "127.0.0.66"


def config(sip_port: int, storage: Path, *, target_port: int = 5070, metrics_port: int = 0,
           sip: str = "", rtp: tuple[int, int] = (43000, 43999), record: bool = False) -> str:
    metrics = f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n' if metrics_port else ""
    return f"""
[sip]
listen = ["udp:127.0.0.1:{sip_port}", "tcp:127.0.0.1:{sip_port}"]
trusted_sources = ["127.0.0.1/32"]
{sip}
[rtp]
port_range = [{rtp[0]}, {rtp[1]}]
[storage]
dir = "{storage}"
{metrics}
[[number]]
number = "{SERVICE}"
owner = "acme"
targets = ["sip:+31201234567@127.0.0.1:{target_port}"]
record = {"true" if record else "false"}
"""


def start(tmp_path: Path, text: str, sip_port: int, **options: Any) -> MediacoreServer:
    server = MediacoreServer(tmp_path, text, sip_port, log_level="info", **options)
    server.start()
    return server


@contextmanager
def flood(sip_port: int, *, rate: float, seconds: float, source: str = SCANNER
          ) -> Iterator[dict[str, Any]]:
    """A flood running in the background; its summary is filled in on exit."""
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.load.floodgen", "--target",
         f"127.0.0.1:{sip_port}", "--source", source, "--rate", str(rate),
         "--seconds", str(seconds), "--linger", "1"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    result: dict[str, Any] = {}
    try:
        yield result
        out, _ = process.communicate(timeout=seconds + 30)
        result.update(json.loads(out.strip().splitlines()[-1]))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {name + (labels or ""): float(value) for name, labels, value in
            re.findall(r"^(mediacore_\w+)(\{[^}]*\})? (\S+)$", text, re.MULTILINE)}


def untrusted_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if SCANNER in line]


# --- the UDP flood -------------------------------------------------------------


def test_carrier_calls_all_succeed_through_a_flood(tmp_path: Path, sipp_binary: str) -> None:
    """20,000 untrusted INVITEs a second for 5 s while SIPp places 20 calls:
    every call succeeds, the flood gets a handful of 403s, the server keeps no
    state for it, and the log holds two lines about it, not 100,000."""
    sip_port, callee_port, metrics_port = free_sip_port(), free_sip_port(), free_port()
    text = config(sip_port, tmp_path / "var", target_port=callee_port,
                  metrics_port=metrics_port, sip="untrusted_answer_rate = 5")
    with sipp_in_background(sipp_binary, ["-sn", "uas", "-i", "127.0.0.1",
                                          "-p", str(callee_port), "-mp", "52100"]):
        server = start(tmp_path, text, sip_port)
        try:
            with flood(sip_port, rate=20000, seconds=5) as flooded:
                calls = run_sipp(sipp_binary, [
                    "-sn", "uac", "-s", SERVICE, "-i", "127.0.0.1", "-p", str(free_sip_port()),
                    "-r", "4", "-m", "20", "-d", "1000", "-mp", "52200",
                    f"127.0.0.1:{sip_port}"], timeout=40)
                mid_flood = scrape(metrics_port)
            after = scrape(metrics_port)
        finally:
            assert server.stop() == 0, server.log[-3000:]
    assert calls.returncode == 0, calls.stdout[-3000:] + server.log[-3000:]
    assert flooded["sent"] == 100_000
    # 403s to the scanner: a burst of 10, then 5 a second, for 5 s and the linger.
    assert 0 < flooded["statuses"].get("403", 0) <= 10 + 5 * 7
    refused = after['mediacore_sip_refused_messages_total{reason="untrusted"}']
    assert refused >= 90_000  # what the kernel queued reached the screen
    assert after['mediacore_sip_refusal_answers_total{outcome="rate-limited"}'] >= 89_000
    # No transaction per refused INVITE (there were 100,000 for 32 s each before).
    assert mid_flood['mediacore_sip_transactions{side="server"}'] < 100
    # The flood came in on the other socket, the carrier's calls on their own.
    assert after['mediacore_sip_udp_datagrams_received_total{socket="other"}'] >= refused
    assert after['mediacore_sip_udp_datagrams_received_total{socket="priority"}'] < 1000
    lines = untrusted_lines(server.log)
    assert len(lines) == 2, lines  # the source at once, the summary at shutdown
    assert "INVITE from untrusted source udp:127.0.0.66:" in lines[0]
    assert re.search(r"refused [\d,]+ messages from 1 untrusted sources", lines[1])
    assert "friendly-scanner" not in server.log and "sipvicious" not in server.log


def test_with_untrusted_drop_nothing_is_answered(tmp_path: Path, sipp_binary: str) -> None:
    sip_port = free_sip_port()
    server = start(tmp_path, config(sip_port, tmp_path / "var", sip='untrusted = "drop"'),
                   sip_port)
    try:
        with flood(sip_port, rate=5000, seconds=2) as flooded:
            pass
        # An untrusted OPTIONS probe gets nothing either; the carrier's gets its 200.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((SCANNER, 0))
            probe.settimeout(1.0)
            probe.sendto(options(probe.getsockname()), ("127.0.0.1", sip_port))
            with pytest.raises(TimeoutError):
                probe.recv(65535)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as carrier:
            carrier.bind(("127.0.0.1", 0))
            carrier.settimeout(5.0)
            carrier.sendto(options(carrier.getsockname()), ("127.0.0.1", sip_port))
            assert carrier.recv(65535).startswith(b"SIP/2.0 200 ")
    finally:
        assert server.stop() == 0, server.log[-3000:]
    assert flooded["sent"] == 10_000 and flooded["answers"] == 0
    assert "dropped (sip.untrusted = drop)" in untrusted_lines(server.log)[0]


def test_403s_are_rate_limited_per_source(tmp_path: Path) -> None:
    """Two scanners at once: each gets its own few 403s, neither more."""
    sip_port = free_sip_port()
    server = start(tmp_path, config(sip_port, tmp_path / "var",
                                    sip="untrusted_answer_rate = 2"), sip_port)
    try:
        with flood(sip_port, rate=2000, seconds=3) as first, \
                flood(sip_port, rate=2000, seconds=3, source="127.0.0.67") as second:
            pass
    finally:
        assert server.stop() == 0, server.log[-3000:]
    for flooded in (first, second):
        assert flooded["sent"] == 6000
        # A burst of 4, then 2 a second over 3 s and the linger.
        assert 4 <= flooded["statuses"].get("403", 0) <= 4 + 2 * 5, flooded


def options(local: tuple[str, int]) -> bytes:
    host, port = local
    return (f"OPTIONS sip:{SERVICE}@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-probe-{port};rport\r\n"
            f"From: <sip:probe@{host}>;tag=p{port}\r\nTo: <sip:{SERVICE}@127.0.0.1>\r\n"
            f"Call-ID: probe-{port}@{host}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def tcp_options(local: tuple[str, int]) -> bytes:
    return options(local).replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")


def test_the_server_header_carries_no_version(tmp_path: Path) -> None:
    sip_port = free_sip_port()
    server = start(tmp_path, config(sip_port, tmp_path / "var"), sip_port)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as carrier:
            carrier.bind(("127.0.0.1", 0))
            carrier.settimeout(5.0)
            carrier.sendto(options(carrier.getsockname()), ("127.0.0.1", sip_port))
            answer = carrier.recv(65535)
    finally:
        assert server.stop() == 0
    assert b"\r\nServer: mediacore\r\n" in answer


# --- TCP -----------------------------------------------------------------------


def closed_by_server(conn: socket.socket, wait: float) -> bool:
    """True when the server closed ``conn`` within ``wait`` seconds."""
    conn.settimeout(wait)
    try:
        return conn.recv(65535) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_a_slowloris_peer_is_closed_by_the_message_deadline(tmp_path: Path) -> None:
    """A byte every 0.5 s never lets the connection go idle; the 2 s deadline for
    a complete message closes it. A silent connection goes the same way; one
    that sent a whole message stays open."""
    sip_port = free_sip_port()
    server = start(tmp_path, config(sip_port, tmp_path / "var",
                                    sip="tcp_message_timeout = 2\ntcp_idle_timeout = 60"),
                   sip_port)
    try:
        with ExitStack() as stack:
            trickler = stack.enter_context(socket.create_connection(("127.0.0.1", sip_port)))
            silent = stack.enter_context(socket.create_connection(("127.0.0.1", sip_port)))
            talker = stack.enter_context(socket.create_connection(("127.0.0.1", sip_port)))
            talker.sendall(tcp_options(talker.getsockname()))
            talker.settimeout(5)
            assert talker.recv(65535).startswith(b"SIP/2.0 200 ")
            started = time.monotonic()
            closed = False
            for byte in tcp_options(trickler.getsockname())[:40]:
                try:
                    trickler.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                if closed_by_server(trickler, 0.5):
                    closed = True
                    break
            elapsed = time.monotonic() - started
            assert closed, "the trickling peer was never closed"
            assert 1.5 < elapsed < 8, elapsed  # by the deadline, not at once, not idle
            assert closed_by_server(silent, 5)
            talker.sendall(tcp_options(talker.getsockname()))
            assert talker.recv(65535).startswith(b"SIP/2.0 200 ")  # still open
        server.wait_for_log("no complete message", timeout=5)
    finally:
        assert server.stop() == 0, server.log[-3000:]


def test_the_per_source_tcp_limit_refuses_the_next_connection(tmp_path: Path) -> None:
    sip_port, metrics_port = free_sip_port(), free_port()
    server = start(tmp_path, config(sip_port, tmp_path / "var", metrics_port=metrics_port,
                                    sip="tcp_connections_per_source = 3"), sip_port)
    try:
        with ExitStack() as stack:
            held = []
            for _ in range(3):
                conn = stack.enter_context(socket.create_connection(
                    ("127.0.0.1", sip_port), source_address=(SCANNER, 0)))
                conn.sendall(tcp_options(conn.getsockname()))
                conn.settimeout(5)
                assert conn.recv(65535).startswith(b"SIP/2.0 403 ")  # served, and refused
                held.append(conn)
            fourth = stack.enter_context(socket.create_connection(
                ("127.0.0.1", sip_port), source_address=(SCANNER, 0)))
            assert closed_by_server(fourth, 5)
            other = stack.enter_context(socket.create_connection(("127.0.0.1", sip_port)))
            other.sendall(tcp_options(other.getsockname()))
            other.settimeout(5)
            assert other.recv(65535).startswith(b"SIP/2.0 200 ")  # another source: fine
            metrics = scrape(metrics_port)
    finally:
        assert server.stop() == 0, server.log[-3000:]
    assert metrics['mediacore_sip_tcp_connections_refused_total{reason="per-source"}'] == 1
    assert metrics["mediacore_sip_tcp_connections"] == 4
    assert "127.0.0.66 already holds 3 connections" in server.log


def test_calls_keep_their_media_while_tcp_peers_hold_the_connection_limit(
    tmp_path: Path, sipp_binary: str, echo_callee: int
) -> None:
    """The open-file limit leaves TCP what the RTP range does not need: peers
    that fill it are refused beyond it, and a recorded call still gets its
    sockets, its recording and its audio."""
    sip_port, metrics_port = free_sip_port(), free_port()
    rtp = (43100, 43179)  # 40 pairs: 100 descriptors with their recordings
    nofile = descriptors_needed(rtp) + 20
    budget = nofile - rtp_descriptors(rtp) - OWN_DESCRIPTORS
    text = config(sip_port, tmp_path / "var", target_port=echo_callee, rtp=rtp, record=True,
                  metrics_port=metrics_port, sip="tcp_message_timeout = 30")
    server = MediacoreServer(tmp_path, text, sip_port, nofile=nofile)
    server.start()
    try:
        with ExitStack() as stack:
            peers = []
            for index in range(budget + 5):
                source = f"127.0.0.{10 + index // 30}"
                conn = stack.enter_context(socket.create_connection(
                    ("127.0.0.1", sip_port), source_address=(source, 0)))
                conn.sendall(b"\r\n\r\n")  # a keepalive ping: an idle, well-behaved peer
                peers.append(conn)
            answered = 0
            for conn in peers:
                conn.settimeout(5)
                with suppress(ConnectionResetError, TimeoutError):
                    answered += conn.recv(16) == b"\r\n"
            assert answered == budget
            metrics = scrape(metrics_port)
            assert metrics['mediacore_sip_tcp_connections_refused_total{reason="global"}'] == 5
            assert metrics["mediacore_sip_tcp_connections_limit"] == budget
            result = call_with_pcap(sipp_binary, "caller_pcap.xml", service=SERVICE,
                                    server_port=sip_port, workdir=tmp_path / "sipp",
                                    hold_ms=1000, local_port=free_sip_port())
            assert result.returncode == 0, result.stdout[-3000:] + server.log[-3000:]
            server.wait_for_log(": CDR ")
    finally:
        assert server.stop() == 0, server.log[-3000:]
    cdr = json.loads(re.findall(r": CDR (\{.*\})", server.log)[-1])
    assert cdr["disposition"] == "answered" and cdr["recording"]
    (media,) = re.findall(rf"call {cdr['call_id']}: media (.*)", server.log)
    forwarded = dict(word.split("=") for word in media.split())
    # A second of g711a.pcap (30 ms packets) each way, relayed and echoed.
    assert float(forwarded["caller.forwarded"]) > 25 and float(forwarded["target.forwarded"]) > 25
    assert "Too many open files" not in server.log
    assert "connection refused (accepted and closed)" in server.log
