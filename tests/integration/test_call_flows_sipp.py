"""The B2BUA's call flows end to end: real SIPp as the caller and as every target.

The sans-IO versions of these flows are in tests/unit/test_call_flows.py;
here the same flows run between real processes on 127.0.0.1: ``mediacore
serve`` as operators start it, one SIPp process per target (each with its
own scenario, sipp-scenarios/flow_*.xml), a SIPp caller, and a real
redis-server that receives the CDR. Each flow is checked from every side:
SIPp's exit status (a scenario fails on any unexpected message, and the
targets' scenarios check what they receive), the messages each SIPp traced,
the server's log, and the call's one entry in the stream ``mediacore:cdr``.

Every SIPp run is bounded (``-m 1`` and ``-timeout``); every wait is on a
condition with a deadline, never a sleep of a guessed length; durations are
only compared, with a generous tolerance, in the CDR.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
import redis

from tests.support.ports import free_port
from tests.support.server import MediacoreServer, free_sip_port
from tests.support.sipp import SCENARIOS, run_sipp

pytestmark = pytest.mark.integration

SERVICE = "+31900123456"
CALLER = "+31612345678"
CDR_STREAM = "mediacore:cdr"
#: The longest any SIPp may live (-timeout): far above every flow's length.
SIPP_TIMEOUT = 30
#: CDR durations are compared with this much slack (seconds).
TOLERANCE = 1.0


# --- SIPp's message traces ------------------------------------------------------------------

TRACE_SEPARATOR = re.compile(r"^-{10,} \d{4}-\d\d-\d\d .*$", re.MULTILINE)


@dataclass(frozen=True)
class Traced:
    """One SIP message in a SIPp trace (``-trace_msg``), sent or received by that SIPp."""

    sent: bool
    text: str

    @property
    def start_line(self) -> str:
        return self.text.split("\n", 1)[0]

    @property
    def method(self) -> str | None:
        first = self.start_line
        return None if first.startswith("SIP/2.0") else first.split(" ", 1)[0]

    @property
    def status(self) -> int | None:
        first = self.start_line
        return int(first.split(" ")[1]) if first.startswith("SIP/2.0") else None

    def header(self, name: str) -> str | None:
        head = self.text.split("\n\n", 1)[0]
        found = re.search(rf"^{re.escape(name)}\s*:\s*(.*)$", head,
                          re.MULTILINE | re.IGNORECASE)
        return found.group(1).strip() if found else None

    @property
    def cseq(self) -> tuple[int, str]:
        number, method = (self.header("CSeq") or "0 ?").split()
        return int(number), method

    @property
    def branch(self) -> str | None:
        found = re.search(r"branch=([^;\s]+)", self.header("Via") or "")
        return found.group(1) if found else None

    @property
    def body(self) -> str:
        parts = self.text.split("\n\n", 1)
        return parts[1] if len(parts) == 2 else ""

    @property
    def media_port(self) -> int:
        """The port of the SDP body's audio m= line."""
        found = re.search(r"^m=audio (\d+) ", self.body, re.MULTILINE)
        assert found, f"no m=audio in\n{self.text}"
        return int(found.group(1))

    @property
    def connection(self) -> str | None:
        found = re.search(r"^c=IN IP4 (\S+)", self.body, re.MULTILINE)
        return found.group(1) if found else None

    @property
    def direction(self) -> str:
        found = re.search(r"^a=(sendrecv|sendonly|recvonly|inactive)$", self.body,
                          re.MULTILINE)
        return found.group(1) if found else "sendrecv"


def parse_trace(text: str) -> list[Traced]:
    messages = []
    for block in TRACE_SEPARATOR.split(text.replace("\r\n", "\n")):
        kind, _, message = block.strip("\n").partition("\n")
        if "message sent" in kind or "message received" in kind:
            messages.append(Traced("sent" in kind, message.strip("\n") + "\n"))
    return messages


class Traces:
    """What one SIPp sent and received (its ``trace`` file), with finders for the checks."""

    trace: Path

    @property
    def messages(self) -> list[Traced]:
        return parse_trace(self.trace.read_text()) if self.trace.exists() else []

    def received(self, method_or_status: str | int) -> list[Traced]:
        return [m for m in self.messages if not m.sent and _is(m, method_or_status)]

    def sent(self, method_or_status: str | int) -> list[Traced]:
        return [m for m in self.messages if m.sent and _is(m, method_or_status)]

    def summary(self) -> list[str]:
        """Each message's direction and start line, for assertion messages."""
        return [("-> " if m.sent else "<- ") + m.start_line for m in self.messages]


def _is(message: Traced, method_or_status: str | int) -> bool:
    if isinstance(method_or_status, int):
        return message.status == method_or_status
    return message.method == method_or_status


# --- the processes -----------------------------------------------------------------------


def target_uri(index: int, port: int) -> str:
    return f"sip:+3120123456{index}@127.0.0.1:{port}"


#: The RTP port ranges of mediacore in the integration tests: SIPp's media ports
#: stay out of them, so that neither takes a port the other is about to bind.
MEDIACORE_RTP_PORTS = range(40000, 46000)


def sipp_media_port() -> int:
    """A free port for SIPp's ``-mp``: SIPp binds it and the port two above it."""
    for _ in range(100):
        port = free_port(socket.SOCK_DGRAM)
        if port in MEDIACORE_RTP_PORTS or port + 2 in MEDIACORE_RTP_PORTS or port > 65533:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port + 2))
            except OSError:
                continue
        return port
    raise RuntimeError("no free media port pair for SIPp")


def sipp_arguments(scenario: str, *, port: int, trace: Path, hold_ms: int) -> list[str]:
    """What every SIPp of these tests shares: one call, traced, on loopback, its own
    RTP port (``-mp``; no RTP flows in these tests), ``hold_ms`` for its <pause/>."""
    return [
        "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(port),
        "-mp", str(sipp_media_port()), "-m", "1", "-d", str(hold_ms),
        "-trace_msg", "-message_file", str(trace),
        "-trace_err", "-error_file", str(trace.with_suffix(".errors")),
    ]


def udp_bound(port: int) -> bool:
    """Whether something listens on UDP ``port`` (read from /proc: probing by
    binding the port ourselves could take it away from the SIPp starting on it)."""
    local = f":{port:04X}"
    lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    return any(line.split()[1].endswith(local) for line in lines)


def _errors(trace: Path) -> str:
    errors = trace.with_suffix(".errors")
    return errors.read_text() if errors.exists() else ""


@dataclass
class Callee(Traces):
    """A SIPp target, in the background until its one call is done."""

    name: str
    uri: str
    process: subprocess.Popen[str]
    trace: Path

    def wait(self, timeout: float = SIPP_TIMEOUT + 10) -> int:
        return self.process.wait(timeout)

    def report(self) -> str:
        return (f"--- {self.name} {self.uri} (exit {self.process.poll()}) ---\n"
                + "\n".join(self.summary()) + "\n" + _errors(self.trace))


@dataclass
class Caller(Traces):
    """The SIPp caller, run to its end: its exit status and what it traced."""

    result: subprocess.CompletedProcess[str]
    trace: Path

    @property
    def returncode(self) -> int:
        return self.result.returncode

    @property
    def call_id(self) -> str | None:
        invites = self.sent("INVITE")
        return invites[0].header("Call-ID") if invites else None

    def report(self) -> str:
        return (f"--- caller (exit {self.returncode}) ---\n" + "\n".join(self.summary())
                + f"\n{self.result.stderr[-2000:]}\n" + _errors(self.trace))


@dataclass
class Flow:
    """One flow's world: the SIPp targets, the server, the SIPp caller, Redis."""

    tmp_path: Path
    sipp: str
    redis_url: str
    callees: list[Callee] = field(default_factory=list)
    server: MediacoreServer | None = None
    caller: Caller | None = None

    def callee(self, scenario: str, *, hold_ms: int = 0) -> Callee:
        """Start a SIPp target, the number's next target, with ``scenario``."""
        index = len(self.callees) + 1
        port = free_sip_port()
        trace = self.tmp_path / f"target{index}.messages"
        process = subprocess.Popen(
            [self.sipp, *sipp_arguments(scenario, port=port, trace=trace, hold_ms=hold_ms),
             "-nostdin", "-timeout", f"{SIPP_TIMEOUT}s", "-timeout_error"],
            cwd=self.tmp_path, text=True, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        callee = Callee(f"target {index}", target_uri(index, port), process, trace)
        self.callees.append(callee)
        # Ready when it listens; a scenario SIPp refuses ends the process at once.
        deadline = time.monotonic() + 10
        while not udp_bound(port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"SIPp did not start with {scenario}\n{callee.report()}")
            time.sleep(0.01)
        return callee

    def serve(self, first_rtp_port: int, **number: object) -> MediacoreServer:
        """Start mediacore: the number's targets are the callees started so far.

        RTP ports are this flow's own 200 from ``first_rtp_port`` (unique per
        test). ``number`` sets keys of the [[number]] table (TOML literals).
        """
        sip_port = free_sip_port()
        settings = {"ring_timeout": 10, "max_duration": 60, **number}
        targets = ", ".join(f'"{callee.uri}"' for callee in self.callees)
        keys = "\n".join(f"{key} = {value}" for key, value in settings.items())
        config = f"""
[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
advertised_address = "127.0.0.1"
[rtp]
address = "127.0.0.1"
port_range = [{first_rtp_port}, {first_rtp_port + 199}]
[storage]
dir = "{self.tmp_path / 'var'}"
[redis]
url = "{self.redis_url}"
[[number]]
number = "{SERVICE}"
owner = "acme"
targets = [{targets}]
{keys}
"""
        self.server = MediacoreServer(self.tmp_path, config, sip_port)
        self.server.start()
        return self.server

    def call(self, scenario: str, *, hold_ms: int = 0) -> Caller:
        """Run the SIPp caller through its one call, to its end (bounded)."""
        assert self.server is not None
        trace = self.tmp_path / "caller.messages"
        result = run_sipp(self.sipp, [
            *sipp_arguments(scenario, port=free_sip_port(), trace=trace, hold_ms=hold_ms),
            "-s", SERVICE, f"127.0.0.1:{self.server.sip_port}",
        ], timeout=SIPP_TIMEOUT, cwd=self.tmp_path)
        self.caller = Caller(result, trace)
        return self.caller

    def report(self) -> str:
        parts = [callee.report() for callee in self.callees]
        if self.caller is not None:
            parts.append(self.caller.report())
        if self.server is not None:
            parts.append(f"--- mediacore ---\n{self.server.log}")
        return "\n".join(parts)

    def finish(self) -> dict[str, str]:
        """Every SIPp done and successful, the server stopped cleanly, and the
        call's CDR: the one entry of the stream, waited for with a deadline."""
        assert self.caller is not None and self.server is not None
        assert self.caller.returncode == 0, self.report()
        for callee in self.callees:
            try:
                status = callee.wait()
            except subprocess.TimeoutExpired:
                pytest.fail(f"{callee.name} never finished\n{self.report()}")
            assert status == 0, self.report()
        self.server.wait_for_log(": CDR ")
        wait_for_cdrs(self.redis_url, 1)
        assert self.server.stop() == 0, self.report()
        entries = cdr_stream(self.redis_url)  # still one after the shutdown: no duplicate
        assert len(entries) == 1, entries
        cdr = entries[0]
        assert cdr["number"] == SERVICE and cdr["owner"] == "acme", cdr
        assert cdr["caller"] == CALLER, cdr
        assert cdr["sip_call_id"] == self.caller.call_id, cdr
        assert f"call {cdr['call_id']}: CDR " in self.server.log
        return cdr

    def log_of_call(self, cdr: dict[str, str]) -> str:
        """The server's log lines about this call."""
        assert self.server is not None
        prefix = f"call {cdr['call_id']}: "
        return "\n".join(line for line in self.server.log.splitlines() if prefix in line)

    def close(self) -> None:
        for callee in self.callees:
            if callee.process.poll() is None:
                callee.process.kill()
            callee.process.wait(10)
        if self.server is not None:
            self.server.stop()


def cdr_stream(url: str) -> list[dict[str, str]]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return [fields for _, fields in client.xrange(CDR_STREAM)]
    finally:
        client.close()


def wait_for_cdrs(url: str, count: int, timeout: float = 15) -> list[dict[str, str]]:
    deadline = time.monotonic() + timeout
    while len(entries := cdr_stream(url)) < count:
        assert time.monotonic() < deadline, f"{CDR_STREAM} holds {entries}, not {count}"
        time.sleep(0.05)
    return entries


def tag_of(header: str | None) -> str | None:
    found = re.search(r";\s*tag=([^;\s]+)", header or "")
    return found.group(1) if found else None


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


@pytest.fixture
def flow(tmp_path: Path, sipp_binary: str, redis_url: str) -> Iterator[Flow]:
    world = Flow(tmp_path, sipp_binary, redis_url)
    try:
        yield world
    finally:
        world.close()


# --- 1. the first target busy, the second answers ---------------------------------------------


def test_first_target_busy_then_the_second_answers(flow: Flow) -> None:
    busy = flow.callee("callee_busy.xml")
    second = flow.callee("flow_callee_answer.xml")
    flow.serve(41000)
    caller = flow.call("flow_caller.xml", hold_ms=500)
    cdr = flow.finish()

    report = flow.report()
    assert [m.status for m in busy.sent(486)] == [486], report
    assert len(busy.received("ACK")) == 1, report  # the 486 ACKed by mediacore
    assert len(second.received("INVITE")) == 1 and len(second.received("ACK")) == 1, report
    assert len(second.received("BYE")) == 1, report  # the caller's BYE, passed on
    assert not caller.received(486), report  # the busy target is invisible to the caller
    assert [m.cseq for m in caller.received(200)] == [(1, "INVITE"), (2, "BYE")], report

    log = flow.log_of_call(cdr)
    assert "target 1 answered 486" in log and "dialling target 2 of 2" in log, log
    assert "target 2 answered; bridged" in log, log
    assert cdr["disposition"] == "answered" and cdr["sip_status"] == "200", cdr
    assert cdr["target"] == second.uri and cdr["hangup_by"] == "caller", cdr
    assert abs(float(cdr["duration"]) - 0.5) <= TOLERANCE, cdr


# --- 2. the first target rings past ring_timeout: CANCEL, the second answers ------------------


def test_ring_timeout_cancels_the_first_target_and_the_second_answers(flow: Flow) -> None:
    ringing = flow.callee("flow_callee_ring_cancelled.xml")
    second = flow.callee("flow_callee_answer.xml")
    flow.serve(41200, ring_timeout=2)
    caller = flow.call("flow_caller.xml", hold_ms=500)
    cdr = flow.finish()

    report = flow.report()
    (invite,) = ringing.received("INVITE")
    (cancel,) = ringing.received("CANCEL")
    assert cancel.branch == invite.branch and cancel.cseq == (invite.cseq[0], "CANCEL"), report
    assert [m.status for m in ringing.sent(487)] == [487], report
    (ack,) = ringing.received("ACK")
    assert ack.branch == invite.branch, report  # the ACK of the 487: same transaction
    assert len(second.received("INVITE")) == 1 and len(second.received("BYE")) == 1, report
    assert caller.received(180), report  # the first target's ringing reached the caller
    assert not caller.received(487), report

    log = flow.log_of_call(cdr)
    assert "target 1 did not answer in 2s" in log, log
    assert "target 2 answered; bridged" in log, log
    assert cdr["disposition"] == "answered" and cdr["sip_status"] == "200", cdr
    assert cdr["target"] == second.uri and cdr["hangup_by"] == "caller", cdr
    # The answer came after one ring_timeout of ringing at the first target.
    assert abs(seconds_between(cdr["start"], cdr["answer"]) - 2) <= TOLERANCE, cdr


# --- 3. every target busy ---------------------------------------------------------------


def test_every_target_busy_gives_the_caller_486(flow: Flow) -> None:
    first = flow.callee("callee_busy.xml")
    second = flow.callee("callee_busy.xml")
    flow.serve(41400)
    caller = flow.call("flow_caller_busy.xml")
    cdr = flow.finish()

    report = flow.report()
    for target in (first, second):
        assert len(target.sent(486)) == 1 and len(target.received("ACK")) == 1, report
    assert [m.status for m in caller.received(486)] == [486], report
    assert not caller.received(200), report

    log = flow.log_of_call(cdr)
    assert "target 2 answered 486" in log and "answering the caller 486" in log, log
    assert cdr["disposition"] == "busy" and cdr["sip_status"] == "486", cdr
    assert cdr["target"] == "" and cdr["answer"] == "", cdr
    assert float(cdr["duration"]) == 0, cdr


# --- 4. the caller cancels while the target rings ---------------------------------------------


def cancelled_while_ringing(flow: Flow, first_rtp_port: int
                            ) -> tuple[Caller, Callee, dict[str, str]]:
    target = flow.callee("flow_callee_ring_cancelled.xml")
    flow.serve(first_rtp_port)
    caller = flow.call("flow_caller_cancel.xml", hold_ms=300)
    return caller, target, flow.finish()


def test_caller_cancel_while_ringing_cancels_the_target(flow: Flow) -> None:
    caller, target, cdr = cancelled_while_ringing(flow, 41600)

    report = flow.report()
    (invite,) = caller.sent("INVITE")
    (cancel,) = caller.sent("CANCEL")
    assert cancel.branch == invite.branch, report  # else the scenario is wrong, not mediacore
    assert [m.cseq for m in caller.received(200)] == [(1, "CANCEL")], report
    assert [m.cseq for m in caller.received(487)] == [(1, "INVITE")], report
    (target_invite,) = target.received("INVITE")
    (target_cancel,) = target.received("CANCEL")
    assert target_cancel.branch == target_invite.branch, report
    assert len(target.sent(487)) == 1 and len(target.received("ACK")) == 1, report

    log = flow.log_of_call(cdr)
    assert "caller cancelled" in log, log
    assert cdr["disposition"] == "cancelled" and cdr["sip_status"] == "487", cdr
    assert cdr["hangup_by"] == "caller" and cdr["target"] == "", cdr
    assert cdr["answer"] == "", cdr


def test_the_200_to_a_cancel_carries_the_to_tag_of_the_invite_responses(flow: Flow) -> None:
    caller, _, _ = cancelled_while_ringing(flow, 42600)
    (ringing,) = caller.received(180)
    (cancel_ok,) = caller.received(200)
    (terminated,) = caller.received(487)
    invite_tag = tag_of(ringing.header("To"))
    assert tag_of(terminated.header("To")) == invite_tag
    assert tag_of(cancel_ok.header("To")) == invite_tag, flow.report()


# --- 5. the callee hangs up -----------------------------------------------------------------


def test_callee_hangs_up_and_the_caller_gets_a_bye(flow: Flow) -> None:
    target = flow.callee("flow_callee_hangs_up.xml", hold_ms=500)
    flow.serve(41800)
    caller = flow.call("flow_caller_awaits_bye.xml")
    cdr = flow.finish()

    report = flow.report()
    (bye,) = target.sent("BYE")
    assert [m.cseq for m in target.received(200)] == [(1, "BYE")], report
    (caller_bye,) = caller.received("BYE")
    (ok,) = caller.sent(200)
    assert ok.cseq == caller_bye.cseq and ok.cseq[1] == "BYE", report
    # mediacore's BYE belongs to the caller's dialog: its Call-ID and tags.
    (answer,) = [m for m in caller.received(200) if m.cseq == (1, "INVITE")]
    assert caller_bye.header("Call-ID") == caller.call_id, report
    assert tag_of(caller_bye.header("From")) == tag_of(answer.header("To")), report
    assert tag_of(caller_bye.header("To")) == tag_of(caller.sent("INVITE")[0].header("From"))
    assert bye.header("Call-ID") != caller.call_id, report  # a B2BUA: two dialogs

    log = flow.log_of_call(cdr)
    assert "callee hung up" in log, log
    assert cdr["disposition"] == "answered" and cdr["sip_status"] == "200", cdr
    assert cdr["hangup_by"] == "callee" and cdr["target"] == target.uri, cdr
    assert abs(float(cdr["duration"]) - 0.5) <= TOLERANCE, cdr


# --- 6. hold and resume by re-INVITE, SDP anchored on mediacore -------------------------------


def test_hold_and_resume_reinvites_reach_the_callee_anchored_on_our_relay(flow: Flow) -> None:
    target = flow.callee("flow_callee_hold.xml")
    flow.serve(42000)
    caller = flow.call("flow_caller_hold.xml", hold_ms=300)
    cdr = flow.finish()

    report = flow.report()
    caller_invites = caller.sent("INVITE")
    caller_port = caller_invites[0].media_port
    assert [m.direction for m in caller_invites] == ["sendrecv", "sendonly", "sendrecv"]
    target_invites = target.received("INVITE")
    assert len(target_invites) == 3, report
    relay_b = target_invites[0].media_port  # mediacore's port on the target's leg
    assert 42000 <= relay_b < 42200 and relay_b != caller_port, report
    for reinvite, direction in zip(target_invites[1:], ("sendonly", "sendrecv"), strict=True):
        assert reinvite.connection == "127.0.0.1", reinvite.text
        assert reinvite.media_port == relay_b, reinvite.text  # ours, not the caller's
        assert reinvite.direction == direction, reinvite.text
    # Each INVITE (the first and both re-INVITEs) answered 200 by the target, ACKed by us.
    invite_cseqs = [m.cseq[0] for m in target_invites]
    assert [m.cseq for m in target.sent(200)][:3] == [(n, "INVITE") for n in invite_cseqs]
    assert [m.cseq for m in target.received("ACK")] == [(n, "ACK") for n in invite_cseqs]

    # The caller's answers: mediacore's port on the caller's leg, the target's direction.
    answers = [m for m in caller.received(200) if m.cseq[1] == "INVITE"]
    assert [m.cseq[0] for m in answers] == [1, 2, 3], report
    relay_a = answers[0].media_port
    target_port = target.sent(200)[0].media_port
    assert 42000 <= relay_a < 42200 and relay_a not in (relay_b, target_port), report
    for answer, direction in zip(answers[1:], ("recvonly", "sendrecv"), strict=True):
        assert answer.connection == "127.0.0.1" and answer.media_port == relay_a, answer.text
        assert answer.direction == direction, answer.text
    assert [m.cseq for m in caller.sent("ACK")] == [(1, "ACK"), (2, "ACK"), (3, "ACK")]

    log = flow.log_of_call(cdr)
    assert log.count("INVITE from the caller passed on") == 2, log
    assert cdr["disposition"] == "answered" and cdr["hangup_by"] == "caller", cdr
    assert cdr["target"] == target.uri, cdr


# --- 7. max_duration -----------------------------------------------------------------------


def test_max_duration_ends_the_call_on_both_sides(flow: Flow) -> None:
    target = flow.callee("flow_callee_answer.xml")
    flow.serve(42200, max_duration=3)
    caller = flow.call("flow_caller_awaits_bye.xml")
    cdr = flow.finish()

    report = flow.report()
    assert len(caller.received("BYE")) == 1 and len(caller.sent(200)) == 1, report
    assert len(target.received("BYE")) == 1, report
    assert not caller.sent("BYE") and not target.sent("BYE"), report

    log = flow.log_of_call(cdr)
    assert "ending the call: max_duration 3s" in log, log
    assert cdr["disposition"] == "answered" and cdr["sip_status"] == "200", cdr
    assert cdr["hangup_by"] == "system" and cdr["target"] == target.uri, cdr
    assert abs(float(cdr["duration"]) - 3) <= TOLERANCE, cdr


# --- 8. INFO passes through ----------------------------------------------------------------


def test_info_with_dtmf_relay_reaches_the_callee_with_its_body(flow: Flow) -> None:
    target = flow.callee("flow_callee_info.xml")
    flow.serve(42400)
    caller = flow.call("flow_caller_info.xml", hold_ms=300)
    cdr = flow.finish()

    report = flow.report()
    (sent,) = caller.sent("INFO")
    (info,) = target.received("INFO")
    assert info.header("Content-Type") == "application/dtmf-relay", info.text
    assert "Signal=5" in info.body and "Duration=160" in info.body, info.text
    assert info.body == sent.body, (sent.text, info.text)
    assert info.header("Call-ID") != caller.call_id, report  # in the target's dialog
    assert [m.cseq[1] for m in caller.received(200)] == ["INVITE", "INFO", "BYE"], report

    log = flow.log_of_call(cdr)
    assert "INFO from the caller passed on" in log, log
    assert cdr["disposition"] == "answered" and cdr["hangup_by"] == "caller", cdr
