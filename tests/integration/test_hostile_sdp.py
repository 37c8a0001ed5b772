"""SDP that cannot aim media, against a running server: real SIPp callers and targets.

Before, an offer with ``c=IN IP4 224.0.0.1/127``, ``c=IN IP6`` on an
IPv4-only media plane, or 200 ``m=`` lines was answered 200 OK, and the relay
would have sent the call's audio there. Now each is 488 with a Warning (RFC
3261 20.43) whose code the SIPp scenario checks, the call gets a CDR, and
nothing is dialled; a target answering with multicast is ACKed and BYEd and
the call fails cleanly; a re-INVITE moving the media to multicast is 488
and the call goes on. The flows reuse tests/integration/test_call_flows_sipp.py's
world: mediacore with one SIPp process per target, a SIPp caller, real Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_call_flows_sipp import Flow, wait_for_cdrs
from tests.support.sipp import SCENARIOS

pytestmark = pytest.mark.integration


@pytest.fixture
def flow(tmp_path: Path, sipp_binary: str, redis_url: str) -> Iterator[Flow]:
    world = Flow(tmp_path, sipp_binary, redis_url)
    try:
        yield world
    finally:
        world.close()


def template(tmp_path: Path, name: str, **values: str) -> str:
    """A scenario of sipp-scenarios/ with its placeholders filled in (an absolute path)."""
    text = (SCENARIOS / name).read_text()
    for key, value in values.items():
        text = text.replace(key, value)
    path = tmp_path / f"{len(list(tmp_path.glob('*.xml')))}-{name}"
    path.write_text(text)
    return str(path)


EXTRA_STREAMS = "\n".join(f"      m=audio {30000 + 2 * n} RTP/AVP 8" for n in range(199))


@pytest.mark.parametrize(("connection", "extra", "code", "rtp"), [
    ("c=IN IP4 224.0.0.1/127", "", "330", 45300),
    ("c=IN IP6 2001:db8::2", "", "301", 45400),
    ("c=IN IP4 255.255.255.255", "", "399", 45500),
    ("c=IN IP4 [local_ip]", EXTRA_STREAMS, "399", 45600),
], ids=["multicast", "ipv6-on-ipv4", "broadcast", "200-media-lines"])
def test_an_offer_that_cannot_aim_media_is_488_with_a_warning(
        flow: Flow, connection: str, extra: str, code: str, rtp: int) -> None:
    flow.callee("flow_callee_answer.xml")  # never dialled: killed at the end
    server = flow.serve(rtp)
    scenario = template(flow.tmp_path, "caller_offer_refused.xml", CONNECTION_LINE=connection,
                        EXTRA_MEDIA=extra, WARNING_CODE=code)
    caller = flow.call(scenario)
    assert caller.returncode == 0, flow.report()  # 488, its Warning code, ACKed
    server.wait_for_log(": CDR ")
    assert "dialling target" not in server.log, flow.report()
    assert not flow.callees[0].received("INVITE"), flow.report()
    (cdr,) = wait_for_cdrs(flow.redis_url, 1)
    assert cdr["disposition"] == "rejected" and cdr["sip_status"] == "488", cdr
    (answer,) = caller.received(488)
    assert answer.header("Warning").startswith(f'{code} mediacore "'), answer.text


def test_a_target_answering_with_multicast_is_hung_up_and_the_call_fails_cleanly(
        flow: Flow) -> None:
    bad = template(flow.tmp_path, "flow_callee_answer.xml", **{
        "c=IN IP[media_ip_type] [media_ip]": "c=IN IP4 224.0.0.1/127"})
    target = flow.callee(bad)
    flow.serve(45700)
    rejected = template(flow.tmp_path, "invite_rejected.xml", FINAL_STATUS="480", PAUSE_MS="0",
                        **{'<recv response="100" optional="true" />':
                           '<recv response="100" optional="true" />\n'
                           '  <recv response="180" optional="true" />'})
    caller = flow.call(rejected)
    cdr = flow.finish()  # every SIPp passed: the target got its ACK and our BYE

    report = flow.report()
    assert len(target.received("ACK")) == 1 and len(target.received("BYE")) == 1, report
    assert not caller.received(200), report
    log = flow.log_of_call(cdr)
    assert "target 1's SDP refused: m= line 1 (audio): 224.0.0.1 is multicast" in log, log
    assert cdr["disposition"] == "failed" and cdr["sip_status"] == "480", cdr
    assert cdr["answer"] == "" and cdr["target"] == "", cdr


def test_a_reinvite_moving_the_callers_media_to_multicast_is_488_and_the_call_goes_on(
        flow: Flow) -> None:
    target = flow.callee("flow_callee_answer.xml")  # any re-INVITE reaching it fails it
    flow.serve(45800)
    scenario = template(flow.tmp_path, "caller_reinvite_refused.xml",
                        CONNECTION_LINE="c=IN IP4 239.1.2.3/16", WARNING_CODE="330")
    caller = flow.call(scenario, hold_ms=500)
    cdr = flow.finish()

    report = flow.report()
    assert len(target.received("INVITE")) == 1, report  # the re-INVITE stayed with us
    assert [m.cseq for m in caller.received(488)] == [(2, "INVITE")], report
    assert [m.cseq for m in caller.received(200)] == [(1, "INVITE"), (3, "BYE")], report
    log = flow.log_of_call(cdr)
    assert "INVITE from the caller refused: m= line 1 (audio): 239.1.2.3 is multicast" in log
    assert cdr["disposition"] == "answered" and cdr["hangup_by"] == "caller", cdr
