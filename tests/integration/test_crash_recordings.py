"""A server SIGKILLed mid recorded calls: at restart every WAV it left is accounted for.

Real processes on loopback: ``mediacore serve`` with Redis and metrics, a
SIPp callee echoing RTP and a SIPp caller with three concurrent recorded
calls playing g711a.pcap. Once every call is recording and has synced
audio to its file, the server is SIGKILLed: three WAVs with no handle, no
CDR and no journal line, each with its marker. Restarted, the server adopts
them in the background: each WAV is repaired and gets a handle with the
number's retention, each call a CDR with ``recording_error`` ``crash``, in
the journal and once in Redis, counted in ``/metrics``. Restarted again,
nothing is added. A retention sweep past the retention destroys them all.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import redis
import soundfile
import uvloop

from mediacore.config import load_config
from mediacore.records import sweep_once
from mediacore.records.journal import Journal, journal_dir, read_entries
from mediacore.records.open_recordings import OpenRecordings
from mediacore.records.timefmt import parse_utc, utc_now
from tests.integration.records_helpers import make_cdr
from tests.support.ports import free_port
from tests.support.server import MediacoreServer, free_sip_port
from tests.support.sipp import SAMPLE_DIR, SCENARIOS, sipp_in_background

pytestmark = pytest.mark.integration

SERVICE = "+31900123456"
CALLS = 3
RETENTION = 45
NODE = "core1"


def config(sip_port: int, metrics_port: int, target_port: int, storage: Path,
           redis_url: str) -> str:
    return f"""
[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
[rtp]
port_range = [41000, 41099]
inactivity_timeout = 60
[storage]
dir = "{storage}"
[records]
node = "{NODE}"
[redis]
url = "{redis_url}"
[metrics]
listen = "127.0.0.1:{metrics_port}"
[[number]]
number = "{SERVICE}"
owner = "acme"
targets = ["sip:+31201234567@127.0.0.1:{target_port}"]
record = true
retention_days = {RETENTION}
ring_timeout = 10
"""


def journaled(storage: Path) -> list[tuple[str, dict[str, str]]]:
    return [(e.type, e.data) for e in read_entries(journal_dir(storage, NODE))]


def wait(predicate: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def test_recordings_of_a_killed_server_are_adopted_once_and_swept_later(
    tmp_path: Path, sipp_binary: str, redis_url: str
) -> None:
    storage = tmp_path / "var"
    recordings = storage / "recordings"
    sip_port, metrics_port, callee_port = free_sip_port(), free_port(), free_sip_port()
    text = config(sip_port, metrics_port, callee_port, storage, redis_url)
    sipp_dir = tmp_path / "sipp"
    sipp_dir.mkdir()
    (sipp_dir / "pcap").symlink_to(SAMPLE_DIR)

    server = MediacoreServer(tmp_path, text, sip_port, log_level="info")
    with sipp_in_background(sipp_binary, ["-sn", "uas", "-i", "127.0.0.1", "-p",
                                          str(callee_port), "-m", str(CALLS), "-rtp_echo"]), \
         sipp_in_background(sipp_binary, [
             "-sf", str(SCENARIOS / "caller_pcap.xml"), "-s", SERVICE, "-i", "127.0.0.1",
             "-p", str(free_sip_port()), "-m", str(CALLS), "-l", str(CALLS), "-r", "10",
             "-d", "60000", f"127.0.0.1:{sip_port}"], cwd=sipp_dir):
        server.start()
        try:
            server.wait_for_log("recording to", count=CALLS, timeout=30)
            # Every file has at least two seconds of audio behind a synced header.
            wait(lambda: len(list(recordings.glob("*.wav"))) == CALLS and all(
                p.stat().st_size > 44 + 2 * 32000 for p in recordings.glob("*.wav")),
                 "audio in every recording")
        finally:
            assert server.process is not None
            server.process.send_signal(signal.SIGKILL)
            server.process.wait(10)
    left = sorted(p.name for p in recordings.glob("*.wav"))
    assert len(left) == CALLS
    assert journaled(storage) == []  # no CDR, no handle: what the issue found
    assert OpenRecordings(storage, NODE).files() == left  # but each has its marker

    restarted = MediacoreServer(tmp_path, text, sip_port, log_level="info")
    restarted.start()
    try:
        restarted.wait_for_log("records: recordings left by a crash:", timeout=30)
        wait(lambda: f'mediacore_orphan_recordings_total{{outcome="adopted"}} {CALLS}.0'
             in metrics(metrics_port), "the adopted recordings in /metrics")
        scraped = metrics(metrics_port)
        assert 'mediacore_orphan_recordings_total{outcome="destroyed"} 0.0' in scraped
        assert f"mediacore_crashed_calls_recorded_total {CALLS}.0" in scraped
    finally:
        assert restarted.stop() == 0, restarted.log
    assert f"{CALLS} adopted, 0 destroyed, {CALLS} CDRs of calls cut by a crash" in (
        restarted.log)
    assert "+31612345678" not in restarted.log  # counts, never the caller

    records = journaled(storage)
    cdrs = {d["call_id"]: d for t, d in records if t == "cdr"}
    handles = {d["id"]: d for t, d in records if t == "recording"}
    assert len(cdrs) == len(handles) == CALLS and len(records) == 2 * CALLS
    assert sorted(f"{id}.wav" for id in handles) == left
    for id, handle in handles.items():
        cdr = cdrs[handle["call_id"]]
        assert cdr["recording"] == id and cdr["recording_error"] == "crash"
        assert cdr["disposition"] == "answered" and cdr["hangup_by"] == "system"
        assert cdr["caller"] == "+31612345678" and cdr["number"] == SERVICE
        assert cdr["duration"] == handle["duration"] and Decimal(cdr["duration"]) >= 2
        created, expires = parse_utc(handle["created"]), parse_utc(handle["expires"])
        assert handle["created"] == cdr["end"]
        assert expires - created == timedelta(days=RETENTION)
        # The repaired file opens in a standard reader, as long as the handle says.
        audio, rate = soundfile.read(recordings / f"{id}.wav", dtype="int16")
        assert rate == 8000 and audio.shape[1] == 2
        assert abs(len(audio) / rate - float(handle["duration"])) < 0.001
    assert OpenRecordings(storage, NODE).files() == []

    # Started again: nothing left to recover, nothing journaled or published twice.
    again = MediacoreServer(tmp_path, text, sip_port, log_level="info")
    again.start()
    try:
        again.wait_for_log("records: no recordings left by a crash", timeout=30)
    finally:
        assert again.stop() == 0, again.log
    assert journaled(storage) == records
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        stream = [fields["call_id"] for _, fields in client.xrange("mediacore:cdr")]
        assert sorted(stream) == sorted(cdrs)
        assert client.zcard("mediacore:recordings:expiry") == CALLS
    finally:
        client.close()

    # Past the owner's retention, the sweep (as `mediacore retention sweep`) destroys them.
    later = utc_now() + timedelta(days=RETENTION + 1)
    swept = uvloop.run(sweep_once(load_config(restarted.config_path),
                                  clock=lambda: later))
    assert sorted(d.id for d in swept.report.deleted) == sorted(handles)
    assert swept.ok
    assert list(recordings.glob("*.wav")) == []


def node_config(node: str, sip_port: int, rtp: tuple[int, int], target_port: int,
                storage: Path, redis_url: str) -> str:
    return f"""
[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
[rtp]
port_range = [{rtp[0]}, {rtp[1]}]
inactivity_timeout = 60
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


def test_a_restarted_node_leaves_a_live_siblings_recording_alone(
    tmp_path: Path, sipp_binary: str, redis_url: str
) -> None:
    """Two processes on one storage dir (one per core): core1 is killed mid-call and
    restarted while core2 records a call. core1 adopts its own recording and removes a
    stray file nobody knows; core2's file, being written, is neither adopted nor
    touched, and gets its own handle and an ordinary CDR when its call ends."""
    storage = tmp_path / "var"
    recordings = storage / "recordings"
    ports = {"core1": free_sip_port(), "core2": free_sip_port()}
    callees = {"core1": free_sip_port(), "core2": free_sip_port()}
    texts = {node: node_config(node, ports[node], rtp, callees[node], storage, redis_url)
             for node, rtp in (("core1", (41100, 41199)), ("core2", (41200, 41299)))}
    for node in texts:
        (tmp_path / node).mkdir()
    sipp_dir = tmp_path / "sipp"
    sipp_dir.mkdir()
    (sipp_dir / "pcap").symlink_to(SAMPLE_DIR)

    def caller(node: str, hold_ms: int) -> list[str]:
        return ["-sf", str(SCENARIOS / "caller_pcap.xml"), "-s", SERVICE, "-i", "127.0.0.1",
                "-p", str(free_sip_port()), "-m", "1", "-d", str(hold_ms),
                f"127.0.0.1:{ports[node]}"]

    def callee(node: str) -> list[str]:
        return ["-sn", "uas", "-i", "127.0.0.1", "-p", str(callees[node]), "-m", "1",
                "-rtp_echo"]

    core1 = MediacoreServer(tmp_path / "core1", texts["core1"], ports["core1"],
                            log_level="info")
    core2 = MediacoreServer(tmp_path / "core2", texts["core2"], ports["core2"],
                            log_level="info")
    try:
        for server in (core1, core2):
            server.start()
            server.wait_for_log("records: no recordings left by a crash")
        with sipp_in_background(sipp_binary, callee("core2")), \
             sipp_in_background(sipp_binary, caller("core2", 20000), cwd=sipp_dir) as b:
            with sipp_in_background(sipp_binary, callee("core1")), \
                 sipp_in_background(sipp_binary, caller("core1", 60000), cwd=sipp_dir):
                for server in (core1, core2):
                    server.wait_for_log("recording to", timeout=30)
                wait(lambda: len(list(recordings.glob("*.wav"))) == 2 and all(
                    p.stat().st_size > 44 + 2 * 32000 for p in recordings.glob("*.wav")),
                     "audio in both recordings")
                assert core1.process is not None
                core1.process.send_signal(signal.SIGKILL)
                core1.process.wait(10)
            (mine,) = OpenRecordings(storage, "core1").files()
            (theirs,) = OpenRecordings(storage, "core2").files()
            # A node still on a mediacore without markers (a rolling upgrade: it journals,
            # it has no open-recordings/), and a file such a node left by a crash 90 s ago.
            with Journal(journal_dir(storage, "core0")) as old_node:
                old_node.append([("cdr", make_cdr("old-node", node="core0").to_fields())])
            stray = recordings / "0123456789abcdef.wav"
            stray.write_bytes((recordings / mine).read_bytes())
            os.utime(stray, (time.time() - 90, time.time() - 90))

            core1 = MediacoreServer(tmp_path / "core1", texts["core1"], ports["core1"],
                                    log_level="info")
            core1.start()
            core1.wait_for_log("records: recordings left by a crash:", timeout=30)
            assert "node core0 journals without recording markers" in core1.log
            assert "1 adopted, 1 destroyed (1 unknown), 1 CDRs" in core1.log
            assert not stray.exists()
            # core2's call goes on: its file is still there, still growing, still marked,
            # in no journal yet.
            size = (recordings / theirs).stat().st_size
            wait(lambda: (recordings / theirs).stat().st_size > size, "core2 recording on")
            assert OpenRecordings(storage, "core2").files() == [theirs]
            assert all(d.get("path", "").rsplit("/", 1)[-1] != theirs
                       for node in ("core1", "core2")
                       for _, d in journaled_of(storage, node))
            assert b.wait(60) == 0  # core2's caller finishes its call normally
            core2.wait_for_log(": ended answered", timeout=30)
    finally:
        assert core1.stop() == 0, core1.log
        assert core2.stop() == 0, core2.log

    ours = journaled_of(storage, "core1")
    assert [t for t, _ in ours] == ["cdr", "recording"]
    assert ours[0][1]["recording_error"] == "crash" and f"{ours[1][1]['id']}.wav" == mine
    theirs_records = journaled_of(storage, "core2")
    assert [t for t, _ in theirs_records] == ["cdr", "recording"]
    cdr, handle = theirs_records[0][1], theirs_records[1][1]
    assert cdr["recording_error"] == "" and cdr["hangup_by"] == "caller"
    assert f"{handle['id']}.wav" == theirs and handle["node"] == "core2"
    assert OpenRecordings(storage, "core2").files() == []
    assert sorted(p.name for p in recordings.glob("*.wav")) == sorted([mine, theirs])
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        stream = [fields["call_id"] for _, fields in client.xrange("mediacore:cdr")]
    finally:
        client.close()
    assert sorted(stream) == sorted([ours[0][1]["call_id"], cdr["call_id"]])


def journaled_of(storage: Path, node: str) -> list[tuple[str, dict[str, str]]]:
    return [(e.type, e.data) for e in read_entries(journal_dir(storage, node))]
