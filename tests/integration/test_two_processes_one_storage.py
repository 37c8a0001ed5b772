"""One process per core: two real ``mediacore serve`` on one storage dir and one Redis.

Each has its own SIP port, RTP port range and ``records.node``; they share
``[storage] dir`` (recordings and the journal tree) and Redis. A real SIPp
call goes through each. Checked: every process journals into its own
``journal/<node>/``, ``mediacore cdr list`` on the shared dir shows both
CDRs, each CDR is in the Redis stream exactly once, and a third process
with a node already running is refused before its SIP socket opens.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from mediacore.records.journal import journal_dir, read_entries
from tests.support.server import MediacoreServer, free_sip_port
from tests.support.sipp import call_with_pcap, sipp_in_background

pytestmark = pytest.mark.integration

SERVICE = "+31900123456"


def config(node: str, sip_port: int, rtp: tuple[int, int], target_port: int, storage: Path,
           redis_url: str) -> str:
    return f"""
[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
[rtp]
port_range = [{rtp[0]}, {rtp[1]}]
inactivity_timeout = 30
[storage]
dir = "{storage}"
[records]
node = "{node}"
[redis]
url = "{redis_url}"
[[number]]
number = "{SERVICE}"
owner = "acme"
targets = ["sip:+31201234567@127.0.0.1:{target_port}"]
record = true
ring_timeout = 10
"""


@pytest.fixture
def callees(sipp_binary: str) -> Iterator[list[int]]:
    """Two SIPp targets, one per server, each answering one call and echoing RTP."""
    ports = [free_sip_port(), free_sip_port()]
    with sipp_in_background(sipp_binary, ["-sn", "uas", "-i", "127.0.0.1", "-p",
                                          str(ports[0]), "-m", "1", "-rtp_echo"]), \
         sipp_in_background(sipp_binary, ["-sn", "uas", "-i", "127.0.0.1", "-p",
                                          str(ports[1]), "-m", "1", "-rtp_echo"]):
        yield ports


def cdrs(log: str) -> list[dict[str, str]]:
    return [json.loads(match) for match in re.findall(r": CDR (\{.*\})", log)]


def test_two_servers_share_one_storage_dir_and_redis(
    tmp_path: Path, sipp_binary: str, callees: list[int], redis_url: str
) -> None:
    storage = tmp_path / "var"
    servers = {}
    for index, (node, rtp) in enumerate((("core1", (40000, 40099)),
                                         ("core2", (40100, 40199)))):
        workdir = tmp_path / node
        workdir.mkdir()
        port = free_sip_port()
        servers[node] = MediacoreServer(
            workdir, config(node, port, rtp, callees[index], storage, redis_url), port)
    try:
        for server in servers.values():
            server.start()
        # A third process with a node that runs already: refused before SIP listens.
        (tmp_path / "third").mkdir()
        taken = free_sip_port()
        third = MediacoreServer(tmp_path / "third",
                                config("core1", taken, (40200, 40299), callees[0], storage,
                                       redis_url), taken)
        with pytest.raises(RuntimeError, match="did not start") as refused:
            third.start()
        assert f"storage dir {storage}" in str(refused.value)
        assert "records.node 'core1'" in str(refused.value)
        assert "must each have their own records.node" in str(refused.value)
        assert third.process is not None and third.process.returncode != 0

        for n, server in enumerate(servers.values()):
            result = call_with_pcap(sipp_binary, "caller_pcap.xml", service=SERVICE,
                                    server_port=server.sip_port, workdir=tmp_path / f"sipp{n}",
                                    hold_ms=1000, local_port=free_sip_port())
            assert result.returncode == 0, result.stdout + result.stderr + server.log
            server.wait_for_log(": CDR ")
    finally:
        for server in servers.values():
            assert server.stop() == 0, server.log

    call_ids = {}
    for node, server in servers.items():
        (cdr,) = cdrs(server.log)
        assert cdr["node"] == node and cdr["disposition"] == "answered"
        call_ids[node] = cdr["call_id"]
        # Each process journaled into its own node dir, and only there.
        journaled = [e.data["call_id"]
                     for e in read_entries(journal_dir(storage, node), types=("cdr",))]
        assert journaled == [cdr["call_id"]]
        assert (storage / "recordings" / f"{cdr['call_id']}.wav").exists()
    assert call_ids["core1"] != call_ids["core2"]
    assert sorted(p.name for p in (storage / "journal").iterdir() if p.is_dir()) == [
        "core1", "core2"]

    listed = subprocess.run(
        [sys.executable, "-m", "mediacore", "cdr", "list", "--format", "json",
         "-c", str(servers["core1"].config_path)],
        capture_output=True, text=True, timeout=30, check=False)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert sorted(r["call_id"] for r in rows) == sorted(call_ids.values())
    assert {r["node"] for r in rows} == {"core1", "core2"}

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        stream = [fields["call_id"] for _, fields in client.xrange("mediacore:cdr")]
    finally:
        client.close()
    assert sorted(stream) == sorted(call_ids.values())  # each exactly once
