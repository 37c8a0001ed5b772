"""What the log keeps private: no caller number at the default level, in either format.

A shown caller (From and PAI carry +31612345678) makes a recorded call
through the real server at its default level (no ``--log-level``): the log
must say that the call came in and how it ended, and must not hold the
caller's number in any form, nor the CDR itself (that belongs to the
journal, where it is checked to be whole). With ``[log] format = "json"``
every line is a JSON object and the call's lines carry its id as a field.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import MediacoreServer, free_sip_port
from tests.support.sipp import call_with_pcap

pytestmark = pytest.mark.integration

SERVICE = "+31900123456"
CALLER_FORMS = ("31612345678", "0612345678", "612345678")


def config(sip_port: int, target_port: int, storage: Path, log: str = "") -> str:
    return f"""
[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
[rtp]
port_range = [40800, 40999]
[storage]
dir = "{storage}"
{log}
[[number]]
number = "{SERVICE}"
owner = "acme"
targets = ["sip:+31201234567@127.0.0.1:{target_port}"]
record = true
ring_timeout = 10
"""


def journal_cdrs(config_path: Path) -> list[dict[str, str]]:
    listed = subprocess.run(
        [sys.executable, "-m", "mediacore", "cdr", "list", "--format", "json",
         "-c", str(config_path)], capture_output=True, text=True, timeout=30, check=True)
    return json.loads(listed.stdout)


def one_call(tmp_path: Path, sipp_binary: str, echo_callee: int, log: str) -> tuple[str, dict]:
    sip_port = free_sip_port()
    server = MediacoreServer(tmp_path, config(sip_port, echo_callee, tmp_path / "var", log),
                             sip_port, log_level=None)
    server.start()
    try:
        result = call_with_pcap(sipp_binary, "caller_pcap.xml", service=SERVICE,
                                server_port=sip_port, workdir=tmp_path / "sipp",
                                hold_ms=1000, local_port=free_sip_port())
        assert result.returncode == 0, result.stdout + result.stderr + server.log
        server.wait_for_log("ended answered")
    finally:
        assert server.stop() == 0, server.log
    (cdr,) = journal_cdrs(server.config_path)
    return server.log, cdr


def test_default_level_logs_how_a_call_ended_but_not_who_called(
    tmp_path: Path, sipp_binary: str, echo_callee: int
) -> None:
    log, cdr = one_call(tmp_path, sipp_binary, echo_callee, log="")
    # The journal has the whole CDR, with the shown caller: the log has none of it.
    assert cdr["caller"] == "+31612345678" and cdr["disposition"] == "answered"
    for form in CALLER_FORMS:
        assert form not in log, f"caller number {form} in the INFO log:\n{log}"
    assert ": CDR " not in log
    call = cdr["call_id"]
    assert f"call {call}: INVITE " in log
    assert (f"call {call}: ended answered (200), {cdr['duration']} s billable, hung up by "
            f"caller, recording {cdr['recording']}") in log
    assert " DEBUG " not in log


def test_json_log_lines_carry_the_call_id_as_a_field(
    tmp_path: Path, sipp_binary: str, echo_callee: int
) -> None:
    log, cdr = one_call(tmp_path, sipp_binary, echo_callee, log='[log]\nformat = "json"')
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert lines, "no log lines"
    for line in lines:
        assert set(line) >= {"time", "level", "logger", "message"}, line
        assert line["time"].endswith("Z") and line["level"] in ("info", "warning")
    about_call = [line for line in lines if line.get("call_id") == cdr["call_id"]]
    messages = [line["message"] for line in about_call]
    assert any(m.startswith("INVITE ") for m in messages), messages
    assert any(m.startswith("ended answered (200)") for m in messages), messages
    assert not any(m.startswith("call ") for m in messages)  # the prefix became the field
    for form in CALLER_FORMS:
        assert form not in log
