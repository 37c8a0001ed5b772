"""In-dialog requests from strangers, sans-IO: refused 403, and the call is not touched.

The server trusts only 127.0.0.1 (the carrier, on 127.0.0.1:5070); the
target is on 127.0.0.2, which it does not trust: the target's requests are
taken because they come from the target's own address. The stranger on
127.0.0.66 knows the Call-ID and both tags (and the INVITE's branch, for
CANCEL), which is everything matching needs.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from mediacore.calls.call import CallState
from mediacore.calls.media import Side
from mediacore.config import SipConfig
from mediacore.sip import message as sip
from mediacore.sip.transport import Peer
from tests.unit.test_call_flows import (
    CARRIER,
    OFFER,
    Harness,
    answer_from_target,
    in_dialog,
    invite,
    only,
    reinvite,
)

TARGET = "sip:+31201234567@127.0.0.2:5080"
TARGET_PEER = Peer("udp", "127.0.0.2", 5080)
STRANGER = Peer("udp", "127.0.0.66", 5060)
TRUSTED_PROXY = Peer("udp", "127.0.0.5", 5060)


def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path, targets=(TARGET,), sip_config=SipConfig(
        trusted_sources=(ipaddress.ip_network("127.0.0.1/32"),
                         ipaddress.ip_network("127.0.0.5/32"))))


def answered(h: Harness, *, ack: bool = True) -> tuple[sip.Request, sip.Response]:
    out = h.receive(invite(), CARRIER)
    onward = only(out, sip.Request, method="INVITE")
    out = h.receive(answer_from_target(onward, 200), TARGET_PEER, at=1.0)
    ok = only(out, sip.Response)
    assert ok.status == 200
    if ack:
        h.receive(in_dialog("ACK", ok, 1, "z9hG4bKack1"), CARRIER, at=1.1)
    return onward, ok


def responses(messages: list[sip.Message]) -> list[int]:
    return [m.status for m in messages if isinstance(m, sip.Response)]


def requests(messages: list[sip.Message]) -> list[str]:
    return [m.method for m in messages if isinstance(m, sip.Request)]


def test_a_strangers_bye_is_403_and_the_real_caller_still_hangs_up(tmp_path: Path) -> None:
    h = harness(tmp_path)
    _, ok = answered(h)
    out = h.receive(in_dialog("BYE", ok, 2, "z9hG4bKevil1"), STRANGER, at=5.0)
    assert responses(out) == [403] and requests(out) == []  # no BYE to the target
    (call,) = h.b2bua.calls.values()
    assert call.state is CallState.BRIDGED and h.ended == []
    assert h.b2bua.counters.foreign == {"BYE": 1}

    # Its CSeq 2 was not absorbed by the dialog: the caller's own BYE with 2 is taken.
    out = h.receive(in_dialog("BYE", ok, 2, "z9hG4bKbye1"), CARRIER, at=10.0)
    assert responses(out) == [200] and requests(out) == ["BYE"]
    assert h.ended[0].cdr().hangup_by == "caller"


def test_a_strangers_reinvite_moving_the_media_moves_nothing(tmp_path: Path) -> None:
    h = harness(tmp_path)
    _, ok = answered(h)
    before = dict(h.media[0].remotes)
    moved = OFFER.replace("o=carrier 1 1", "o=carrier 1 2").replace(
        "c=IN IP4 127.0.0.1", "c=IN IP4 127.0.0.66")
    out = h.receive(reinvite(ok, moved), STRANGER, at=5.0)
    assert 403 in responses(out) and requests(out) == []
    assert h.media[0].remotes == before


def test_a_strangers_update_with_sdp_moves_nothing(tmp_path: Path) -> None:
    """UPDATE carries an offer as a re-INVITE does, and no endpoint rule stops it first."""
    h = harness(tmp_path)
    _, ok = answered(h)
    before = dict(h.media[0].remotes)
    body = OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 127.0.0.66")
    update = in_dialog("UPDATE", ok, 2, "z9hG4bKevil2").split(b"Content-Length")[0] + (
        f"Contact: <sip:evil@127.0.0.66>\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}").encode()
    out = h.receive(update, STRANGER, at=5.0)
    assert responses(out) == [403] and requests(out) == []
    assert h.media[0].remotes == before
    assert h.b2bua.counters.foreign == {"UPDATE": 1}


def test_a_strangers_info_is_not_passed_on(tmp_path: Path) -> None:
    h = harness(tmp_path)
    _, ok = answered(h)
    out = h.receive(in_dialog("INFO", ok, 2, "z9hG4bKevil3"), STRANGER, at=5.0)
    assert responses(out) == [403] and requests(out) == []


def cancel_of(data: bytes) -> bytes:
    head = data.replace(b"INVITE sip:", b"CANCEL sip:", 1).replace(
        b"CSeq: 1 INVITE", b"CSeq: 1 CANCEL").split(b"Content-Type")[0]
    return head + b"Content-Length: 0\r\n\r\n"


def test_a_strangers_cancel_while_ringing_is_403_and_the_callers_is_taken(
        tmp_path: Path) -> None:
    h = harness(tmp_path)
    out = h.receive(invite(), CARRIER)
    onward = only(out, sip.Request, method="INVITE")
    h.receive(answer_from_target(onward, 180), TARGET_PEER, at=0.5)
    out = h.receive(cancel_of(invite()), STRANGER, at=1.0)
    assert responses(out) == [403] and requests(out) == []
    assert h.b2bua.calls and h.ended == []
    out = h.receive(cancel_of(invite()), CARRIER, at=2.0)
    assert sorted(responses(out)) == [200, 487] and requests(out) == ["CANCEL"]
    assert h.ended[0].cdr().disposition == "cancelled"


def test_a_strangers_ack_does_not_confirm_our_answer(tmp_path: Path) -> None:
    h = harness(tmp_path)
    _, ok = answered(h, ack=False)
    h.receive(in_dialog("ACK", ok, 1, "z9hG4bKevil4"), STRANGER, at=1.2)
    (call,) = h.b2bua.calls.values()
    assert call.state is CallState.ANSWERING and h.b2bua.counters.foreign == {"ACK": 1}
    h.receive(in_dialog("ACK", ok, 1, "z9hG4bKack1"), CARRIER, at=1.3)
    assert call.state is CallState.BRIDGED


def target_bye(onward: sip.Request, branch: str) -> bytes:
    return (
        f"BYE sip:mediacore@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.2:5080;branch={branch}\r\n"
        f"From: <{TARGET}>;tag=t1\r\nTo: {onward.headers.get('From')}\r\n"
        f"Call-ID: {onward.call_id}\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_the_target_hangs_up_from_its_own_untrusted_address(tmp_path: Path) -> None:
    h = harness(tmp_path)
    onward, _ = answered(h)
    out = h.receive(target_bye(onward, "z9hG4bKevil5"), STRANGER, at=5.0)
    assert responses(out) == [403] and h.ended == []  # posing as the target: no
    out = h.receive(target_bye(onward, "z9hG4bKtbye"), TARGET_PEER, at=6.0)
    assert responses(out) == [200] and requests(out) == ["BYE"]
    assert h.ended[0].cdr().hangup_by == "callee"


def test_a_trusted_proxy_of_the_carrier_may_end_the_call(tmp_path: Path) -> None:
    """A carrier's cluster: the BYE comes from another of its (trusted) proxies."""
    h = harness(tmp_path)
    _, ok = answered(h)
    out = h.receive(in_dialog("BYE", ok, 2, "z9hG4bKbye2"), TRUSTED_PROXY, at=5.0)
    assert responses(out) == [200] and requests(out) == ["BYE"]
    assert h.b2bua.counters.foreign == {}


def test_the_callers_contact_address_counts_as_the_caller(tmp_path: Path) -> None:
    """The INVITE came through one address; requests may come from its Contact's."""
    h = harness(tmp_path)
    contact = b"Contact: <sip:carrier@127.0.0.1:5070>"
    data = invite().replace(contact, b"Contact: <sip:carrier@127.0.0.7:5070>")
    out = h.receive(data, CARRIER)
    onward = only(out, sip.Request, method="INVITE")
    out = h.receive(answer_from_target(onward, 200), TARGET_PEER, at=1.0)
    ok = only(out, sip.Response)
    out = h.receive(in_dialog("BYE", ok, 2, "z9hG4bKbye3"), Peer("udp", "127.0.0.7", 5070),
                    at=5.0)
    assert responses(out) == [200]
    assert Side.CALLER in h.media[0].remotes


def test_refusals_show_in_the_metrics(tmp_path: Path) -> None:
    from mediacore.calls.recording_pump import RecordingPump
    from mediacore.calls.voicemail import VoicemailSender
    from mediacore.metrics.collector import Metrics
    from mediacore.records import RecordsService
    from mediacore.rtp.engine import MediaEngine
    from mediacore.rtp.ports import PortPool
    from tests.unit.test_call_loops import run_network
    from tests.unit.test_metrics import View, scrape

    # The first target is this server (a loop), the second answers.
    h = Harness(tmp_path, targets=("sip:+31900123456@127.0.0.1:5060", TARGET),
                sip_config=SipConfig(trusted_sources=(ipaddress.ip_network("127.0.0.1/32"),)))
    engine = MediaEngine("127.0.0.1", PortPool((40000, 40099)))
    try:
        metrics = Metrics()
        metrics.collect_server(View(h.endpoint, h.b2bua, engine, RecordingPump(engine),
                                    RecordsService(h.config),
                                    VoicemailSender(h.config.smtp, tmp_path / "spool")))
        sent = run_network(h, invite(), CARRIER)
        onward = only([sip.parse(t.data) for t in sent], sip.Request, method="INVITE")
        out = h.receive(answer_from_target(onward, 200), TARGET_PEER, at=1.0)
        ok = only(out, sip.Response)
        h.receive(in_dialog("BYE", ok, 2, "z9hG4bKevil6"), STRANGER, at=5.0)
        samples = scrape(metrics)
    finally:
        engine.close()
    assert samples[("mediacore_calls_foreign_requests_total", (("method", "BYE"),))] == 1
    assert samples[("mediacore_calls_foreign_requests_total", (("method", "CANCEL"),))] == 0
    assert samples[("mediacore_calls_refused_total", (("reason", "loop"),))] == 1


def test_a_target_that_was_tried_before_cannot_end_the_next_ones_dialog(tmp_path: Path) -> None:
    first = Peer("udp", "127.0.0.3", 5080)
    h = Harness(tmp_path, targets=("sip:+31201234567@127.0.0.3:5080", TARGET),
                sip_config=SipConfig(trusted_sources=(ipaddress.ip_network("127.0.0.1/32"),)))
    out = h.receive(invite(), CARRIER)
    busy = only(out, sip.Request, method="INVITE")
    out = h.receive(answer_from_target(busy, 486), first, at=0.5)
    onward = only(out, sip.Request, method="INVITE")
    h.receive(answer_from_target(onward, 200, tag="t1"), TARGET_PEER, at=1.0)
    out = h.receive(target_bye(onward, "z9hG4bKold1"), first, at=5.0)
    assert responses(out) == [403] and h.ended == []
    out = h.receive(target_bye(onward, "z9hG4bKtbye2"), TARGET_PEER, at=6.0)
    assert responses(out) == [200] and h.ended[0].cdr().hangup_by == "callee"
