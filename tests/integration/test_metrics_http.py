"""[metrics] on the real server: /metrics moves with a real SIPp call, health and
readiness through a drain, OPTIONS 503 while draining, and hostile HTTP clients.

Real processes and sockets on loopback: ``mediacore serve`` as operators
start it, SIPp as the carrier's caller (g711a.pcap audio) and as the target
(echoing RTP), raw TCP sockets as the attackers.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mediacore.metrics.http import HEAD_TIMEOUT, MAX_CONNECTIONS, MAX_HEAD
from tests.support.ports import free_port
from tests.support.server import MediacoreServer, free_sip_port
from tests.support.sipp import SAMPLE_DIR, SCENARIOS, call_with_pcap, sipp_in_background

pytestmark = pytest.mark.integration

SERVICE = "+31900123456"


def config(sip_port: int, metrics_port: int, target_port: int, storage: Path) -> str:
    return f"""
[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
drain_timeout = 15
[rtp]
port_range = [40200, 40399]
[storage]
dir = "{storage}"
[metrics]
listen = "127.0.0.1:{metrics_port}"
[[number]]
number = "{SERVICE}"
owner = "acme"
targets = ["sip:+31201234567@127.0.0.1:{target_port}"]
ring_timeout = 10
"""


class Served:
    def __init__(self, server: MediacoreServer, metrics_port: int, callee: int) -> None:
        self.server = server
        self.metrics_port = metrics_port
        self.callee = callee

    def get(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, body = self.get("/metrics")
        assert status == 200
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(body) for s in family.samples}

    def wait_for(self, key: tuple[str, tuple[tuple[str, str], ...]], value: float,
                 timeout: float = 10.0) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Scrape until the sample ``key`` reaches ``value``; the last scrape."""
        deadline = time.monotonic() + timeout
        while True:
            samples = self.samples()
            if samples.get(key, 0) >= value:
                return samples
            assert time.monotonic() < deadline, (key, samples.get(key), self.server.log)
            time.sleep(0.1)

    def raw(self, data: bytes, *, wait: float = 5.0) -> bytes:
        """Send ``data`` on a fresh connection and half-close it; what comes back
        until the server closes."""
        with socket.create_connection(("127.0.0.1", self.metrics_port), timeout=wait) as s:
            if data:
                s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            return read_all(s)


def read_all(s: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def status_of(reply: bytes) -> int:
    assert reply.startswith(b"HTTP/1.1 "), reply[:80]
    return int(reply.split(b" ", 2)[1])


@pytest.fixture
def served(tmp_path: Path, sipp_binary: str) -> Iterator[Served]:
    sip_port, metrics_port, callee = free_sip_port(), free_port(), free_sip_port()
    with sipp_in_background(sipp_binary, ["-sn", "uas", "-i", "127.0.0.1", "-p", str(callee),
                                          "-m", "3", "-rtp_echo"], timeout=90):
        server = MediacoreServer(tmp_path, config(sip_port, metrics_port, callee,
                                                  tmp_path / "var"), sip_port, log_level="info")
        server.start()
        try:
            yield Served(server, metrics_port, callee)
        finally:
            server.stop()


def test_a_real_call_moves_the_metrics(served: Served, sipp_binary: str, tmp_path: Path) -> None:
    status, body = served.get("/healthz")
    assert status == 200 and "media engine thread: running" in body
    assert served.get("/readyz") == (200, "ready\n")
    before = served.samples()
    answered = ("mediacore_calls_ended_total", (("disposition", "answered"),))
    invites = ("mediacore_sip_requests_received_total", (("method", "INVITE"),))
    assert before[answered] == 0

    result = call_with_pcap(sipp_binary, "caller_pcap.xml", service=SERVICE,
                            server_port=served.server.sip_port, workdir=tmp_path / "sipp",
                            hold_ms=1000, local_port=free_sip_port())
    assert result.returncode == 0, result.stdout + result.stderr + served.server.log
    after = served.wait_for(answered, 1)
    assert after[answered] == 1
    assert after[("mediacore_calls_started_total", ())] == 1
    assert after[invites] == before.get(invites, 0) + 1
    assert after[("mediacore_sip_responses_sent_total",
                  (("method", "INVITE"), ("status", "200")))] == 1
    assert after[("mediacore_sip_requests_received_total", (("method", "BYE"),))] == 1
    assert after[("mediacore_sip_requests_sent_total", (("method", "INVITE"),))] == 1
    assert after[("mediacore_call_setup_seconds_count", ())] == 1
    for direction in ("from_caller", "from_target"):
        packets = after[("mediacore_rtp_packets_received_total", (("direction", direction),))]
        relayed = after[("mediacore_rtp_packets_relayed_total", (("direction", direction),))]
        assert packets > 20, direction  # about 50 a second while the call lasts
        assert relayed == packets, direction
        assert after[("mediacore_rtp_received_bytes_total",
                      (("direction", direction),))] > packets * 160
        assert after[("mediacore_rtp_packets_lost_total", (("direction", direction),))] == 0
        assert after[("mediacore_rtp_jitter_seconds_count", (("direction", direction),))] == 1
    assert after[("mediacore_calls_active", (("state", "bridged"),))] == 0
    assert after[("mediacore_rtp_port_pairs_in_use", ())] == 0
    # The CDR reaches the journal on the writer thread, a moment after the call's end.
    assert served.wait_for(("mediacore_journal_records_written_total", ()), 1)
    assert after[("mediacore_event_loop_lag_seconds_count", ())] > 0


def test_hostile_http_clients_get_clear_answers_and_the_server_goes_on(served: Served) -> None:
    assert status_of(served.raw(b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")) \
        == 405
    assert status_of(served.raw(b"GET /../../etc/passwd HTTP/1.1\r\n\r\n")) == 404
    assert status_of(served.raw(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" * 10
                                + b"\r\n\r\n")) == 400
    # A head cut short by the client's end of stream.
    assert status_of(served.raw(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")) == 400
    # A head that never ends is cut off at the bound, not buffered on.
    reply = served.raw(b"GET /metrics HTTP/1.1\r\n" + b"X-Filler: " + b"a" * (MAX_HEAD * 4))
    assert status_of(reply) == 431
    # HEAD gets the headers and no body.
    head = served.raw(b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert status_of(head) == 200 and head.endswith(b"\r\n\r\n")

    # A client that connects and sends nothing is answered 408 at the deadline
    # while everyone else is served meanwhile.
    with socket.create_connection(("127.0.0.1", served.metrics_port),
                                  timeout=HEAD_TIMEOUT + 5) as idle:
        started = time.monotonic()
        assert served.get("/healthz")[0] == 200
        reply = read_all(idle)
        assert status_of(reply) == 408
        assert time.monotonic() - started >= HEAD_TIMEOUT - 0.5

    # More connections than the bound: the extra ones get 503, the server lives.
    held = []
    try:
        for _ in range(MAX_CONNECTIONS):
            held.append(socket.create_connection(("127.0.0.1", served.metrics_port),
                                                 timeout=5))
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", served.metrics_port), timeout=5) as extra:
            assert status_of(read_all(extra)) == 503
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    assert served.get("/healthz")[0] == 200
    assert served.get("/metrics")[0] == 200
    assert served.server.alive()


def options(sip_port: int, local: socket.socket, branch: str) -> bytes:
    host, port = local.getsockname()
    return (
        f"OPTIONS sip:{SERVICE}@127.0.0.1:{sip_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{branch};rport\r\n"
        f"From: <sip:probe@{host}>;tag=probe\r\nTo: <sip:{SERVICE}@127.0.0.1>\r\n"
        f"Call-ID: probe-{branch}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_draining_turns_readyz_and_options_to_503(served: Served, sipp_binary: str,
                                                  tmp_path: Path) -> None:
    sipp_dir = tmp_path / "sipp-long"
    sipp_dir.mkdir()
    (sipp_dir / "pcap").symlink_to(SAMPLE_DIR)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        probe.settimeout(5)
        probe.sendto(options(served.server.sip_port, probe, "p1"),
                     ("127.0.0.1", served.server.sip_port))
        assert probe.recv(4096).startswith(b"SIP/2.0 200 ")

        # A call that lasts a few seconds holds the drain open.
        with sipp_in_background(sipp_binary, [
                "-sf", str(SCENARIOS / "caller_pcap.xml"), "-s", SERVICE, "-i", "127.0.0.1",
                "-p", str(free_sip_port()), "-m", "1", "-d", "4000",
                f"127.0.0.1:{served.server.sip_port}"], cwd=sipp_dir, timeout=40) as caller:
            bridged = ("mediacore_calls_active", (("state", "bridged"),))
            deadline = time.monotonic() + 15
            while served.samples().get(bridged, 0) < 1:
                assert time.monotonic() < deadline, served.server.log
                time.sleep(0.1)
            assert served.server.process is not None
            served.server.process.terminate()  # SIGTERM: drain
            served.server.wait_for_log("stopping: no new calls")

            status, body = served.get("/readyz")
            assert status == 503 and "draining" in body
            assert served.get("/healthz")[0] == 200
            assert served.samples()[("mediacore_draining", ())] == 1
            probe.sendto(options(served.server.sip_port, probe, "p2"),
                         ("127.0.0.1", served.server.sip_port))
            reply = probe.recv(4096)
            assert reply.startswith(b"SIP/2.0 503 "), reply
            assert b"\r\nRetry-After: 30\r\n" in reply
            caller.wait(30)
            assert caller.returncode == 0
    assert served.server.process.wait(20) == 0


def test_a_metrics_port_in_use_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sip_port = free_sip_port()
        server = MediacoreServer(tmp_path, config(sip_port, port, 5070, tmp_path / "var"),
                                 sip_port, log_level="info")
        with pytest.raises(RuntimeError, match="did not start"):
            server.start(timeout=15)
        assert server.process is not None
        assert server.process.wait(10) == 1
        assert "metrics.listen 127.0.0.1:" in server.log
        # It stopped before the SIP socket opened.
        assert "listening on udp" not in server.log
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sip:
            sip.bind(("127.0.0.1", sip_port))


def test_a_bad_metrics_address_is_a_config_error(tmp_path: Path) -> None:
    sip_port = free_sip_port()
    text = config(sip_port, 9091, 5070, tmp_path / "var").replace(
        'listen = "127.0.0.1:9091"', 'listen = "127.0.0.1:99999"')
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = subprocess.run(
        [__import__("sys").executable, "-m", "mediacore", "check-config", str(path)],
        capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert "metrics.listen" in result.stderr + result.stdout
