"""A caller who withholds their number: it reaches no target, log, record or file.

The caller sends Privacy: id with the number only in P-Asserted-Identity
(RFC 3325), an anonymous From. After a recorded call, every place mediacore
writes to (its log, the journal and recordings under storage.dir, every
Redis key and value, what the target received) is searched for the number
in any of its forms.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import redis

from tests.support.server import MediacoreServer, free_sip_port
from tests.support.sipp import call_with_pcap, sipp_in_background

pytestmark = pytest.mark.integration

SERVICE = "+31900123456"
WITHHELD = "+31687654321"
FORMS = (b"31687654321", b"0687654321", b"687654321")


def redis_contents(url: str) -> bytes:
    """Every key and value in the Redis database, as one blob to search."""
    client = redis.Redis.from_url(url)
    blob = b""
    try:
        for key in client.scan_iter():
            kind = client.type(key)
            blob += key
            if kind == b"string":
                blob += client.get(key) or b""
            elif kind == b"hash":
                blob += b"".join(k + v for k, v in client.hgetall(key).items())
            elif kind == b"zset":
                blob += b"".join(client.zrange(key, 0, -1))
            elif kind == b"stream":
                for _, fields in client.xrange(key):
                    blob += b"".join(k + v for k, v in fields.items())
    finally:
        client.close()
    return blob


def wait_for_stream(url: str, key: str, length: int, timeout: float = 10) -> None:
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + timeout
        while client.xlen(key) < length:
            assert time.monotonic() < deadline, f"{key} never reached {length} entries"
            time.sleep(0.05)
    finally:
        client.close()


def test_withheld_number_is_shown_nowhere_and_stored_nowhere(
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
port_range = [40600, 40799]
[storage]
dir = "{storage}"
[redis]
url = "{redis_url}"
[[number]]
number = "{SERVICE}"
owner = "acme"
targets = ["sip:+31201234567@127.0.0.1:{callee_port}"]
record = true
""", sip_port)
    with sipp_in_background(sipp_binary, [
        "-sn", "uas", "-i", "127.0.0.1", "-p", str(callee_port), "-m", "1", "-rtp_echo",
        "-trace_msg", "-message_file", str(target_trace),
    ]) as callee:
        server.start()
        try:
            result = call_with_pcap(sipp_binary, "caller_withheld_pcap.xml", service=SERVICE,
                                    server_port=sip_port, workdir=tmp_path / "sipp",
                                    hold_ms=1000, local_port=free_sip_port())
            assert result.returncode == 0, result.stdout + result.stderr + server.log
            server.wait_for_log(": CDR ")
            wait_for_stream(redis_url, "mediacore:cdr", 1)
        finally:
            assert server.stop() == 0, server.log
        callee.wait(20)
    (cdr,) = [json.loads(m) for m in re.findall(r": CDR (\{.*\})", server.log)]
    assert cdr["caller"] == "anonymous" and cdr["disposition"] == "answered"
    # What the target saw: anonymous, no P-Asserted-Identity, Privacy: id.
    seen = target_trace.read_bytes()
    assert b'From: "Anonymous" <sip:anonymous@anonymous.invalid>' in seen
    assert b"P-Asserted-Identity" not in seen
    places = {"server log": server.log.encode(), "target's messages": seen,
              "redis": redis_contents(redis_url)}
    assert b"anonymous" in places["redis"]  # the CDR is there, with the caller withheld
    for path in storage.rglob("*"):
        if path.is_file():
            places[str(path)] = path.read_bytes() + str(path).encode()
    assert any(p.endswith(".wav") for p in places)  # the recording is among them
    for place, content in places.items():
        for form in FORMS:
            assert form not in content, f"{form!r} found in {place}"
