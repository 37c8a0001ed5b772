"""Loops against running servers: one looping INVITE makes at most two CDRs and a clear answer.

Before, a number whose target was the server itself made hundreds of nested
calls and CDRs within a second, until the RTP ports ran out. Here the loop
goes round through what the config check cannot see: two real ``mediacore
serve`` processes whose numbers forward to each other (a loop through two
B2BUAs, found by the Mediacore-Loop header), and a SIPp carrier that routes
the target's INVITE straight back (found by our Via under the carrier's).
The caller is SIPp; CDRs are read from the real Redis both servers publish to.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.test_call_flows_sipp import (
    cdr_stream,
    parse_trace,
    sipp_media_port,
    udp_bound,
    wait_for_cdrs,
)
from tests.support.server import MediacoreServer, free_sip_port
from tests.support.sipp import SCENARIOS, run_sipp, sipp_in_background

pytestmark = pytest.mark.integration

SERVICE = "+31900123456"


def node_config(sip_port: int, storage: Path, node: str, rtp: tuple[int, int],
                target: str, redis_url: str) -> str:
    return f"""
[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
advertised_address = "127.0.0.1"
trusted_sources = ["127.0.0.1/32"]
[rtp]
port_range = [{rtp[0]}, {rtp[1]}]
[storage]
dir = "{storage}"
[records]
node = "{node}"
[redis]
url = "{redis_url}"
[[number]]
number = "{SERVICE}"
owner = "acme"
targets = ["{target}"]
ring_timeout = 10
"""


def template(tmp_path: Path, name: str, **values: object) -> Path:
    text = (SCENARIOS / name).read_text()
    for key, value in values.items():
        text = text.replace(key, str(value))
    path = tmp_path / name
    path.write_text(text)
    return path


def call_expecting(sipp: str, tmp_path: Path, server_port: int, status: int
                   ) -> subprocess.CompletedProcess[str]:
    """One SIPp INVITE to ``SERVICE`` that must get ``status`` (and ACKs it)."""
    scenario = template(tmp_path, "invite_rejected.xml", FINAL_STATUS=status, PAUSE_MS=0)
    trace = tmp_path / "caller.messages"
    return run_sipp(sipp, [
        "-sf", str(scenario), "-s", SERVICE, "-i", "127.0.0.1", "-p", str(free_sip_port()),
        "-mp", str(sipp_media_port()), "-m", "1", "-trace_msg", "-message_file", str(trace),
        f"127.0.0.1:{server_port}"], timeout=30, cwd=tmp_path)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[MediacoreServer]]:
    started: list[MediacoreServer] = []
    try:
        yield started
    finally:
        for server in started:
            server.stop()


def test_two_nodes_forwarding_a_number_to_each_other_make_two_cdrs(
        tmp_path: Path, sipp_binary: str, redis_url: str, servers: list[MediacoreServer]
) -> None:
    port_a, port_b = free_sip_port(), free_sip_port()
    storage = tmp_path / "var"
    for name, port, other, rtp in (("core-a", port_a, port_b, (45000, 45099)),
                                   ("core-b", port_b, port_a, (45100, 45199))):
        workdir = tmp_path / name
        workdir.mkdir()
        server = MediacoreServer(workdir, node_config(
            port, storage, name, rtp, f"sip:{SERVICE}@127.0.0.1:{other}", redis_url), port)
        server.start()
        servers.append(server)
    a, b = servers

    result = call_expecting(sipp_binary, tmp_path, port_a, 482)
    report = f"{result.stdout[-3000:]}\n--- a ---\n{a.log}\n--- b ---\n{b.log}"
    assert result.returncode == 0, report  # the caller got 482 and ACKed it

    # A's call reached B, B's call came back to A with A's token: refused there.
    a.wait_for_log("has passed this node before: 482")
    assert "has passed this node before" not in b.log, report
    cdrs = wait_for_cdrs(redis_url, 2)
    for server in servers:
        assert server.stop() == 0, report
    cdrs = cdr_stream(redis_url)
    assert len(cdrs) == 2, cdrs
    assert sorted(cdr["node"] for cdr in cdrs) == ["core-a", "core-b"], cdrs
    assert {(cdr["disposition"], cdr["sip_status"]) for cdr in cdrs} == {("failed", "482")}
    assert calls_started(a) == 1 and calls_started(b) == 1, report


def test_a_carrier_routing_the_target_back_to_us_gets_482_and_one_cdr(
        tmp_path: Path, sipp_binary: str, redis_url: str, servers: list[MediacoreServer]
) -> None:
    sip_port, carrier_port = free_sip_port(), free_sip_port()
    trace = tmp_path / "carrier.messages"
    bounce = template(tmp_path, "loop_bounce.xml", MEDIACORE_PORT=sip_port)
    with sipp_in_background(sipp_binary, [
            "-sf", str(bounce), "-s", SERVICE, "-i", "127.0.0.1", "-p", str(carrier_port),
            "-mp", str(sipp_media_port()), "-m", "1", "-trace_msg", "-message_file",
            str(trace)], cwd=tmp_path, timeout=30) as carrier:
        assert wait_until(lambda: udp_bound(carrier_port)), "the carrier SIPp did not start"
        server = MediacoreServer(tmp_path, node_config(
            sip_port, tmp_path / "var", "core-a", (45200, 45299),
            f"sip:{SERVICE}@127.0.0.1:{carrier_port}", redis_url), sip_port)
        server.start()
        servers.append(server)
        result = call_expecting(sipp_binary, tmp_path, sip_port, 482)
        report = f"{result.stdout[-3000:]}\n--- mediacore ---\n{server.log}"
        assert result.returncode == 0, report
        assert carrier.wait(30) == 0, report + trace_text(trace)

    messages = parse_trace(trace.read_text())
    (ours,) = [m for m in messages if not m.sent and m.method == "INVITE"]
    (bounced,) = [m for m in messages if m.sent and m.method == "INVITE"]
    assert ours.header("Max-Forwards") == "69", ours.text  # the caller's 70, minus one
    assert "Mediacore-Loop" not in bounced.text  # only our Via can tell
    server.wait_for_log("has passed this node before: 482")
    wait_for_cdrs(redis_url, 1)
    assert server.stop() == 0, report
    (cdr,) = cdr_stream(redis_url)
    assert cdr["disposition"] == "failed" and cdr["sip_status"] == "482", cdr
    assert calls_started(server) == 1, report  # one call: the bounce was refused


def calls_started(server: MediacoreServer) -> int:
    """Calls the server took (the INVITE line of a call with an id of ours)."""
    return len(re.findall(r"call [0-9a-f]{16}: INVITE ", server.log))


def trace_text(path: Path) -> str:
    return path.read_text() if path.exists() else "(no carrier trace)"


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_target_at_our_second_listen_address_stops_check_config_and_serve(
        tmp_path: Path) -> None:
    port, second = free_sip_port(), free_sip_port("127.0.0.2")
    path = tmp_path / "loop.toml"
    path.write_text(f"""
[sip]
listen = ["udp:127.0.0.1:{port}", "udp:127.0.0.2:{second}"]
[storage]
dir = "{tmp_path / 'var'}"
[[number]]
number = "{SERVICE}"
owner = "acme"
targets = ["sip:{SERVICE}@127.0.0.2:{second}"]
""")
    expected = (f"number[0].targets[0]: sip:{SERVICE}@127.0.0.2:{second} is this server "
                f"(sip.listen udp:127.0.0.2:{second})")
    for command in (["check-config", str(path)], ["serve", "-c", str(path)]):
        done = subprocess.run([sys.executable, "-m", "mediacore", *command], cwd=tmp_path,
                              capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 1, (command, done.stderr)
        assert expected in done.stderr, (command, done.stderr)
        assert "ready" not in done.stderr, done.stderr  # serve stopped before any socket
