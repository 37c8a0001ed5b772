"""A full disk under a running server: calls go on unrecorded, CDRs are never lost.

The real server, real SIPp peers, and real filesystems that fill up: small
tmpfs mounts (we run as root; without the right to mount, the tests skip
and say so). Two arrangements, because recordings and the journal share
the storage dir and each must fail on its own:

* a tmpfs mounted at ``<storage>/recordings``, nearly full: the recordings
  fail, the journal (on the roomy disk beside) takes every CDR, each saying
  ``recording_error = disk-full``, and the log says it once;
* the whole storage dir on a tmpfs, filled to the last byte: the journal is
  unwritable, a new INVITE gets 503 with Retry-After and leaves no CDR, the
  call in progress gets its CDR once space is freed, and a new call goes
  through after that.

Throughout, the server stays alive and answers OPTIONS.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile

from mediacore.records.journal import read_entries
from tests.support.server import MediacoreServer, free_sip_port
from tests.support.sipp import SAMPLE_DIR, SCENARIOS, call_with_pcap, sipp_in_background

pytestmark = pytest.mark.integration

SERVICE = "+31900123456"
MiB = 1 << 20


@contextlib.contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes mounted at ``path``, unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755",
                              "tmpfs", str(path)], capture_output=True, text=True,
                             check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up (needs root and CAP_SYS_ADMIN): "
                    f"{mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def fill(directory: Path, leave: int = 0) -> Path:
    """Fill the filesystem of ``directory`` until ENOSPC, then give ``leave`` bytes back."""
    filler = directory / "filler"
    chunk = b"\xa5" * (64 * 1024)
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(chunk)
        except OSError as error:
            assert error.errno == errno.ENOSPC, error
            # Page by page: a partial chunk may still fit.
            try:
                while True:
                    handle.write(chunk[:4096])
            except OSError:
                pass
        if leave:
            handle.truncate(max(0, os.fstat(handle.fileno()).st_size - leave))
    return filler


def free_bytes(directory: Path) -> int:
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


def config(sip_port: int, target_port: int, storage: Path, *, record: bool,
           reserve_mb: float, port_range: tuple[int, int]) -> str:
    return f"""
[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
[rtp]
port_range = [{port_range[0]}, {port_range[1]}]
[storage]
dir = "{storage}"
reserve_mb = {reserve_mb}
[records]
node = "disk-test"
[[number]]
number = "{SERVICE}"
owner = "acme"
targets = ["sip:+31201234567@127.0.0.1:{target_port}"]
record = {"true" if record else "false"}
ring_timeout = 10
"""


def sip_request(port: int, method: str, *, timeout: float = 5.0) -> tuple[int, str]:
    """Send one out-of-dialog request over UDP; its final status and the whole response."""
    call_id = f"{method.lower()}-{uuid.uuid4().hex[:12]}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        local = sock.getsockname()[1]
        body = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                "m=audio 40000 RTP/AVP 8\r\n") if method == "INVITE" else ""
        headers = "Content-Type: application/sdp\r\n" if body else ""
        sock.sendto((
            f"{method} sip:{SERVICE}@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{call_id}\r\n"
            f"From: <sip:+31611111111@127.0.0.1>;tag=x\r\nTo: <sip:{SERVICE}@127.0.0.1>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nContact: <sip:a@127.0.0.1:{local}>\r\n"
            f"Max-Forwards: 70\r\n{headers}Content-Length: {len(body)}\r\n\r\n{body}"
        ).encode(), ("127.0.0.1", port))
        while True:
            data = sock.recv(65535).decode()
            status = int(data.split(" ", 2)[1])
            if status >= 200:
                return status, data


def answers_options(server: MediacoreServer) -> None:
    assert server.alive(), server.log
    status, _ = sip_request(server.sip_port, "OPTIONS")
    assert status == 200


def journal(storage: Path, kind: str) -> list[dict[str, str]]:
    directory = storage / "journal" / "disk-test"
    return [entry.data for entry in read_entries(directory, types=[kind])]


def wait_until(condition, what: str, server: MediacoreServer, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert server.alive(), f"the server died while waiting for {what}:\n{server.log}"
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s\n{server.log}"
        time.sleep(0.1)


@pytest.fixture
def sipp_dir(tmp_path: Path) -> Path:
    workdir = tmp_path / "sipp"
    workdir.mkdir()
    (workdir / "pcap").symlink_to(SAMPLE_DIR)
    return workdir


def test_recordings_on_a_full_disk_fail_the_recording_not_the_call(
    tmp_path: Path, sipp_binary: str, sipp_dir: Path
) -> None:
    storage = tmp_path / "var"
    callee_port, sip_port = free_sip_port(), free_sip_port()
    calls = 3
    with tmpfs(storage / "recordings", 2 * MiB) as recordings:
        # Room for the headers and a little audio: each call writes 32 kB/s.
        fill(recordings, leave=48 * 1024)
        server = MediacoreServer(tmp_path, config(
            sip_port, callee_port, storage, record=True, reserve_mb=0,
            port_range=(41200, 41399)), sip_port)
        with sipp_in_background(sipp_binary, [
                "-sn", "uas", "-i", "127.0.0.1", "-p", str(callee_port),
                "-m", str(calls), "-rtp_echo"]):
            server.start()
            try:
                answers_options(server)
                caller = subprocess.Popen([
                    sipp_binary, "-sf", str(SCENARIOS / "caller_pcap.xml"), "-s", SERVICE,
                    "-i", "127.0.0.1", "-p", str(free_sip_port()), "-m", str(calls),
                    "-l", str(calls), "-r", "10", "-d", "4000", f"127.0.0.1:{sip_port}",
                    "-nostdin", "-timeout", "40s", "-timeout_error",
                ], cwd=sipp_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                try:
                    while caller.poll() is None:
                        answers_options(server)  # alive and answering while disks fail
                        time.sleep(0.5)
                    assert caller.returncode == 0, caller.stderr.read() + server.log
                finally:
                    if caller.poll() is None:
                        caller.kill()
                    caller.wait(10)
                wait_until(lambda: len(journal(storage, "cdr")) == calls, "three CDRs",
                           server)
                answers_options(server)
            finally:
                assert server.stop() == 0, server.log
        cdrs = journal(storage, "cdr")
        handles = {h["id"]: h for h in journal(storage, "recording")}
        assert len(cdrs) == calls
        for cdr in cdrs:
            # The call went on: answered, billed for its whole length.
            assert cdr["disposition"] == "answered" and cdr["hangup_by"] == "caller"
            assert float(cdr["duration"]) > 3.5
            assert cdr["recording_error"] == "disk-full", cdr
            if cdr["recording"]:
                # What reached the disk before it filled is a valid WAV with a
                # handle (retention destroys it), shorter than the call.
                wav = recordings / f"{cdr['recording']}.wav"
                audio, rate = soundfile.read(wav, dtype="int16")
                assert rate == 8000 and audio.shape[1] == 2
                assert len(audio) / rate < float(cdr["duration"]) - 1
                assert handles[cdr["recording"]]["path"].endswith(wav.name)
                assert int(handles[cdr["recording"]]["bytes"]) == wav.stat().st_size
            else:
                assert not (recordings / f"{cdr['call_id']}.wav").exists()
        assert set(handles) == {c["recording"] for c in cdrs if c["recording"]}
        assert handles, "no recording got as far as its first second: nothing was tested"
        # One line for all of them, not one per call, let alone per write.
        assert server.log.count("recording failed") == 1, server.log
        assert "Traceback" not in server.log


def test_below_the_reserve_calls_are_not_recorded_and_say_why(
    tmp_path: Path, sipp_binary: str, sipp_dir: Path
) -> None:
    storage = tmp_path / "var"
    callee_port, sip_port = free_sip_port(), free_sip_port()
    with tmpfs(storage / "recordings", 1 * MiB) as recordings:
        # 1 MiB free is less than the 2 MiB kept for the journal.
        server = MediacoreServer(tmp_path, config(
            sip_port, callee_port, storage, record=True, reserve_mb=2,
            port_range=(41400, 41599)), sip_port)
        with sipp_in_background(sipp_binary, [
                "-sn", "uas", "-i", "127.0.0.1", "-p", str(callee_port), "-m", "1",
                "-rtp_echo"]):
            server.start()
            try:
                result = call_with_pcap(sipp_binary, "caller_pcap.xml", service=SERVICE,
                                        server_port=sip_port, workdir=sipp_dir,
                                        hold_ms=1500, local_port=free_sip_port())
                assert result.returncode == 0, result.stderr + server.log
                wait_until(lambda: len(journal(storage, "cdr")) == 1, "the CDR", server)
                answers_options(server)
            finally:
                assert server.stop() == 0, server.log
        (cdr,) = journal(storage, "cdr")
        assert cdr["disposition"] == "answered"
        assert cdr["recording"] == "" and cdr["recording_error"] == "disk-full"
        assert list(recordings.glob("*.wav")) == [] and journal(storage, "recording") == []
        assert server.log.count("recording failed") == 1


def test_an_unwritable_journal_refuses_new_calls_and_loses_no_cdr(
    tmp_path: Path, sipp_binary: str, sipp_dir: Path
) -> None:
    storage = tmp_path / "var"
    callee_port, sip_port = free_sip_port(), free_sip_port()
    with tmpfs(storage, 4 * MiB):
        server = MediacoreServer(tmp_path, config(
            sip_port, callee_port, storage, record=False, reserve_mb=0,
            port_range=(41600, 41799)), sip_port)
        with sipp_in_background(sipp_binary, [
                "-sn", "uas", "-i", "127.0.0.1", "-p", str(callee_port), "-m", "2",
                "-rtp_echo"]):
            server.start()
            try:
                with sipp_in_background(sipp_binary, [
                    "-sf", str(SCENARIOS / "caller_pcap.xml"), "-s", SERVICE,
                    "-i", "127.0.0.1", "-p", str(free_sip_port()), "-m", "1",
                    "-d", "6000", f"127.0.0.1:{sip_port}",
                ], cwd=sipp_dir) as in_progress:
                    server.wait_for_log("answered; bridged", timeout=20)
                    filler = fill(storage)
                    assert free_bytes(storage) < 64 * 1024
                    server.wait_for_log("journal unwritable", timeout=10)
                    answers_options(server)
                    status, response = sip_request(sip_port, "INVITE")
                    assert status == 503, response
                    assert "\r\nRetry-After: " in response and "journal unwritable" in response
                    # The call in progress ends while the journal cannot take its CDR:
                    # held in memory and retried, not dropped, and the server lives on.
                    assert in_progress.wait(timeout=30) == 0
                    server.wait_for_log("journal write failed", timeout=10)
                    answers_options(server)
                    assert journal(storage, "cdr") == []
                    filler.unlink()  # the operator frees space
                    wait_until(lambda: len(journal(storage, "cdr")) == 1,
                               "the held CDR in the journal", server)
                    server.wait_for_log("journal writable again", timeout=10)
                # Calls are taken again.
                result = call_with_pcap(sipp_binary, "caller_pcap.xml", service=SERVICE,
                                        server_port=sip_port, workdir=sipp_dir,
                                        hold_ms=1000, local_port=free_sip_port())
                assert result.returncode == 0, result.stderr + server.log
                wait_until(lambda: len(journal(storage, "cdr")) == 2, "the new call's CDR",
                           server)
                answers_options(server)
            finally:
                assert server.stop() == 0, server.log
        held, new = journal(storage, "cdr")
        # In order, exactly once, and nothing for the INVITE that was refused.
        assert held["disposition"] == new["disposition"] == "answered"
        assert held["end"] < new["start"]
        assert not any(c["sip_call_id"].startswith("invite-") for c in (held, new))
        assert server.log.count("journal write failed") <= 2, server.log  # once a minute
        assert "Traceback" not in server.log
