"""A caller that presents no number (``From: sip:carrier@...``): its CDR says who called.

A real SIPp caller whose From is ``sip:carrier@127.0.0.1`` (no number, no
P-Asserted-Identity, nothing withheld) calls through the server to a SIPp
callee. The CDR, in the journal and in the Redis stream, records the
identity presented (docs/contracts.md, ``caller``) instead of an empty
field; the target is shown what it always was for a caller without a
number: "Unavailable", no number and no URI of the caller's.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from mediacore.records.journal import journal_dir, read_entries
from tests.support.server import MediacoreServer, free_sip_port
from tests.support.sipp import call_with_pcap, sipp_in_background

pytestmark = pytest.mark.integration

SERVICE = "+31900123456"


def test_a_caller_without_a_number_is_recorded_as_presented(
    tmp_path: Path, sipp_binary: str, redis_url: str
) -> None:
    callee_port = free_sip_port()
    target_trace = tmp_path / "target-messages.log"
    sip_port = free_sip_port()
    storage = tmp_path / "var"
    server = MediacoreServer(tmp_path, f"""
[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
[rtp]
port_range = [40800, 40899]
[storage]
dir = "{storage}"
[records]
node = "core1"
[redis]
url = "{redis_url}"
[[number]]
number = "{SERVICE}"
owner = "acme"
targets = ["sip:+31201234567@127.0.0.1:{callee_port}"]
""", sip_port, log_level="info")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        with sipp_in_background(sipp_binary, [
            "-sn", "uas", "-i", "127.0.0.1", "-p", str(callee_port), "-m", "1", "-rtp_echo",
            "-trace_msg", "-message_file", str(target_trace),
        ]) as callee:
            server.start()
            try:
                result = call_with_pcap(sipp_binary, "caller_uri_pcap.xml", service=SERVICE,
                                        server_port=sip_port, workdir=tmp_path / "sipp",
                                        hold_ms=500, local_port=free_sip_port())
                assert result.returncode == 0, result.stdout + result.stderr + server.log
                server.wait_for_log(": ended answered")
                deadline = time.monotonic() + 10
                while client.xlen("mediacore:cdr") < 1:
                    assert time.monotonic() < deadline, "the CDR never reached Redis"
                    time.sleep(0.05)
            finally:
                assert server.stop() == 0, server.log
            callee.wait(20)
        ((_, published),) = client.xrange("mediacore:cdr")
    finally:
        client.close()
    (journaled,) = [e.data for e in read_entries(journal_dir(storage, "core1"),
                                                  types=("cdr",))]
    assert journaled["caller"] == published["caller"] == "sip:carrier@127.0.0.1"
    assert journaled["disposition"] == "answered"
    # INFO keeps no caller identity, as for numbers.
    assert "sip:carrier@127.0.0.1" not in server.log
    # What the target saw is unchanged: a number or nothing.
    seen = target_trace.read_text()
    assert 'From: "Unavailable" <sip:unavailable@unknown.invalid>' in seen
    assert "carrier@127.0.0.1" not in seen
    # And the owner's CSV export has it in its column.
    listed = subprocess.run(
        [sys.executable, "-m", "mediacore", "cdr", "list", "--format", "csv",
         "-c", str(server.config_path)], capture_output=True, text=True, timeout=30,
        check=True)
    assert ",sip:carrier@127.0.0.1," in listed.stdout
