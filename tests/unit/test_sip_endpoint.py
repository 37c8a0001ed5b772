"""The sans-IO SIP endpoint: UAS core answers, Via stamping, response routing."""

from __future__ import annotations

import ipaddress

import pytest

from mediacore.config import SipConfig
from mediacore.sip import message as sip
from mediacore.sip.endpoint import (
    RequestReceived,
    SipEndpoint,
    TransactionTimedOut,
    Transmit,
    response_peer,
)
from mediacore.sip.headers import parse_via
from mediacore.sip.transport import Peer

CARRIER = Peer("udp", "127.0.0.1", 5070)
STRANGER = Peer("udp", "198.51.100.66", 5060)


def request(method: str = "INVITE", *, via: str = "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1",
            extra: str = "", uri: str = "sip:+31900123456@127.0.0.1", to_tag: str = "",
            body: str = "") -> bytes:
    to = "<sip:+31900123456@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "From: <sip:+31612345678@127.0.0.1>;tag=f1\r\n"
        f"To: {to}\r\n"
        "Call-ID: endpoint-1\r\n"
        f"CSeq: 1 {method}\r\n"
        "Contact: <sip:caller@127.0.0.1:5070>\r\n"
        "Max-Forwards: 70\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    )
    return text.encode()


def answers(outputs: list) -> list[sip.Response]:
    responses = []
    for output in outputs:
        if isinstance(output, Transmit):
            parsed = sip.parse(output.data)
            assert isinstance(parsed, sip.Response)
            responses.append(parsed)
    return responses


def statuses(outputs: list) -> list[int]:
    return [response.status for response in answers(outputs)]


@pytest.fixture
def endpoint() -> SipEndpoint:
    return SipEndpoint(SipConfig())


def test_options_is_answered_200_with_what_we_allow(endpoint: SipEndpoint) -> None:
    outputs = endpoint.receive(request("OPTIONS"), CARRIER, 0.0)
    (ok,) = answers(outputs)
    assert ok.status == 200
    assert "INVITE" in ok.allow and ok.to_tag
    assert not any(isinstance(o, RequestReceived) for o in outputs)


def test_invite_gets_100_at_once_and_reaches_the_tu(endpoint: SipEndpoint) -> None:
    outputs = endpoint.receive(request(), CARRIER, 0.0)
    assert statuses(outputs) == [100]
    (event,) = [o for o in outputs if isinstance(o, RequestReceived)]
    assert event.request.method == "INVITE" and event.peer == CARRIER
    # A retransmission is absorbed: 100 again, nothing new for the TU.
    again = endpoint.receive(request(), CARRIER, 0.3)
    assert statuses(again) == [100]
    assert not any(isinstance(o, RequestReceived) for o in again)


def test_untrusted_invite_is_refused_403(endpoint: SipEndpoint,
                                         caplog: pytest.LogCaptureFixture) -> None:
    outputs = endpoint.receive(request(via="SIP/2.0/UDP 198.51.100.66;branch=z9hG4bKx"),
                               STRANGER, 0.0)
    assert statuses(outputs) == [403]
    assert "198.51.100.66" in caplog.text


def test_trusted_sources_come_from_config() -> None:
    config = SipConfig(trusted_sources=(ipaddress.ip_network("198.51.100.0/24"),))
    outputs = SipEndpoint(config).receive(
        request(via="SIP/2.0/UDP 198.51.100.66;branch=z9hG4bKx"), STRANGER, 0.0)
    assert statuses(outputs) == [100]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (request("FOO"), 501),
        (request("REGISTER"), 405),
        (request(uri="mailto:someone@example.com"), 416),
        (request(extra="Require: 100rel, nosuchext\r\n"), 420),
        (request(extra="Max-Forwards: 0\r\n").replace(b"Max-Forwards: 70\r\n", b""), 483),
        (request(extra="Content-Type: text/plain\r\n", body="hello"), 415),
    ],
)
def test_uas_core_answers(endpoint: SipEndpoint, raw: bytes, status: int) -> None:
    outputs = endpoint.receive(raw, CARRIER, 0.0)
    assert statuses(outputs) == [status]
    assert not any(isinstance(o, RequestReceived) for o in outputs)


def test_420_names_what_is_unsupported(endpoint: SipEndpoint) -> None:
    (response,) = answers(endpoint.receive(request(extra="Require: foo\r\n"), CARRIER, 0.0))
    assert response.headers.get("Unsupported") == "foo"


def test_options_with_max_forwards_0_is_still_answered(endpoint: SipEndpoint) -> None:
    raw = request("OPTIONS").replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    assert statuses(endpoint.receive(raw, CARRIER, 0.0)) == [200]


def test_malformed_request_gets_400_with_a_reason(endpoint: SipEndpoint) -> None:
    raw = request().replace(b"CSeq: 1 INVITE", b"CSeq: one INVITE")
    (transmit,) = endpoint.receive(raw, CARRIER, 0.0)
    assert isinstance(transmit, Transmit) and transmit.peer == CARRIER
    status_line, _, rest = transmit.data.partition(b"\r\n")
    assert status_line.startswith(b"SIP/2.0 400 ") and b"CSeq" in status_line
    assert b'\r\nWarning: 399 mediacore "Bad CSeq header' in rest
    # The broken CSeq is copied as it came: the sender matches our answer by it.
    assert b"\r\nCSeq: one INVITE\r\n" in b"\r\n" + rest


def test_malformed_response_is_dropped(endpoint: SipEndpoint) -> None:
    raw = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    assert endpoint.receive(raw, CARRIER, 0.0) == []


def test_garbage_is_dropped_without_an_answer(endpoint: SipEndpoint) -> None:
    assert endpoint.receive(b"\x00\x01 not sip at all", CARRIER, 0.0) == []


def test_draining_refuses_new_invites_with_503_and_retry_after(endpoint: SipEndpoint) -> None:
    endpoint.refuse_new_calls = True
    (response,) = answers(endpoint.receive(request(), CARRIER, 0.0))
    assert response.status == 503 and response.headers.get("Retry-After")


@pytest.mark.parametrize("state", ["draining", "journal unwritable"])
def test_a_re_invite_is_passed_to_the_call_while_new_invites_are_refused(
        endpoint: SipEndpoint, state: str) -> None:
    """A session refresh during a drain must reach the call: a 503 would end
    the very call the drain is waiting for."""
    if state == "draining":
        endpoint.refuse_new_calls = True
    else:
        endpoint.unavailable = "journal unwritable (disk-full)"
    outputs = endpoint.receive(request(to_tag="ours"), CARRIER, 0.0)
    assert statuses(outputs) == [100]
    assert any(isinstance(o, RequestReceived) for o in outputs)
    (refused,) = answers(endpoint.receive(request(via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK2"),
                                          CARRIER, 0.0))
    assert refused.status == 503


def test_via_is_stamped_with_received_and_rport(endpoint: SipEndpoint) -> None:
    raw = request(via="SIP/2.0/UDP carrier.example:5080;rport;branch=z9hG4bK7")
    outputs = endpoint.receive(raw, Peer("udp", "127.0.0.1", 40000), 0.0)
    (trying,) = answers(outputs)
    via = trying.top_via
    assert via.received == "127.0.0.1" and via.rport == 40000
    (transmit,) = [o for o in outputs if isinstance(o, Transmit)]
    assert transmit.peer == Peer("udp", "127.0.0.1", 40000)


@pytest.mark.parametrize(
    ("via", "source", "expected"),
    [
        ("SIP/2.0/UDP 10.0.0.1:5080;branch=z9hG4bKa", Peer("udp", "127.0.0.2", 6000),
         Peer("udp", "127.0.0.2", 5080)),
        ("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa", Peer("udp", "127.0.0.2", 6000),
         Peer("udp", "127.0.0.2", 5060)),
        ("SIP/2.0/UDP 10.0.0.1:5080;rport;branch=z9hG4bKa", Peer("udp", "127.0.0.2", 6000),
         Peer("udp", "127.0.0.2", 6000)),
        ("SIP/2.0/TCP 10.0.0.1:5080;branch=z9hG4bKa", Peer("tcp", "127.0.0.2", 6000),
         Peer("tcp", "127.0.0.2", 6000)),
        ("SIP/2.0/UDP 10.0.0.1:5080;maddr=127.0.0.9;branch=z9hG4bKa",
         Peer("udp", "127.0.0.2", 6000), Peer("udp", "127.0.0.9", 5080)),
    ],
)
def test_response_routing(via: str, source: Peer, expected: Peer) -> None:
    assert response_peer(parse_via(via), source) == expected


def test_tu_answer_is_retransmitted_and_times_out_without_ack(endpoint: SipEndpoint) -> None:
    outputs = endpoint.receive(request(), CARRIER, 0.0)
    (event,) = [o for o in outputs if isinstance(o, RequestReceived)]
    (busy,) = answers(endpoint.respond(event.transaction, 486, now=0.1))
    assert busy.status == 486 and busy.to_tag
    retransmitted = []
    timed_out = []
    while (deadline := endpoint.next_deadline()) is not None:
        for output in endpoint.handle_timer(deadline):
            if isinstance(output, Transmit):
                retransmitted.append(sip.parse(output.data))
            elif isinstance(output, TransactionTimedOut):
                timed_out.append(output.timer)
    assert retransmitted and all(r.to_tag == busy.to_tag for r in retransmitted)
    assert timed_out == ["H"]


def test_ack_for_a_2xx_reaches_the_tu_without_admission_checks(endpoint: SipEndpoint) -> None:
    outputs = endpoint.receive(request(), CARRIER, 0.0)
    (event,) = [o for o in outputs if isinstance(o, RequestReceived)]
    (ok,) = answers(endpoint.respond(event.transaction, 200, now=0.1))
    ack = request("ACK", via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKack",
                  to_tag=ok.to_tag).replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    (delivered,) = endpoint.receive(ack, CARRIER, 0.2)
    assert isinstance(delivered, RequestReceived)
    assert delivered.request.method == "ACK" and delivered.transaction is event.transaction


def test_request_without_call_id_gets_a_stateless_400(endpoint: SipEndpoint) -> None:
    raw = request(via="SIP/2.0/UDP 127.0.0.1:5070").replace(b"Call-ID: endpoint-1\r\n", b"")
    (transmit,) = endpoint.receive(raw, CARRIER, 0.0)
    assert isinstance(transmit, Transmit)
    assert transmit.data.startswith(b"SIP/2.0 400 Missing Call-ID")
    assert len(endpoint.transactions) == 0


def test_a_request_is_answered_finally_only_once(endpoint: SipEndpoint) -> None:
    from mediacore.sip.transaction import TransactionStateError

    outputs = endpoint.receive(request(), CARRIER, 0.0)
    (event,) = [o for o in outputs if isinstance(o, RequestReceived)]
    endpoint.respond(event.transaction, 486, now=0.1)
    with pytest.raises(TransactionStateError):
        endpoint.respond(event.transaction, 200, now=0.2)
    # The transaction let go of the request; retransmissions are still answered.
    assert event.transaction.request is None
    assert statuses(endpoint.receive(request(), CARRIER, 0.3)) == [486]


def test_400_from_the_uas_checks_carries_a_warning(endpoint: SipEndpoint) -> None:
    raw = request().replace(b"From: <sip:+31612345678@127.0.0.1>;tag=f1\r\n",
                            b"From: <sip:a@b>;tag=1\r\nFrom: <sip:c@d>;tag=2\r\n")
    (response,) = answers(endpoint.receive(raw, CARRIER, 0.0))
    assert response.status == 400
    assert response.headers.get("Warning") == '399 mediacore "Multiple From headers"'


def test_parser_limits_come_from_config() -> None:
    from mediacore.config import SipLimits

    small = SipEndpoint(SipConfig(limits=SipLimits(max_message_size=600, max_headers=12,
                                                   max_line_length=200)))
    too_big = request(extra="Content-Type: application/sdp\r\n", body="v=0\r\n" * 100)
    assert statuses(small.receive(too_big, CARRIER, 0.0)) == [413]
    many = request(extra="".join(f"X-H{i}: {i}\r\n" for i in range(10)))
    (response,) = answers(small.receive(many, CARRIER, 0.0))
    assert response.status == 400 and "header" in response.reason.lower()
    assert statuses(SipEndpoint(SipConfig()).receive(many, CARRIER, 0.0)) == [100]


def test_draining_answers_options_outside_a_dialog_503_with_retry_after(
        endpoint: SipEndpoint) -> None:
    """A dispatcher (Kamailio's dispatcher module) probes with OPTIONS: while we
    drain it must hear "not for new calls", like an INVITE does."""
    endpoint.refuse_new_calls = True
    (response,) = answers(endpoint.receive(request("OPTIONS"), CARRIER, 0.0))
    assert response.status == 503
    assert response.headers.get("Retry-After") == "30"
    assert endpoint.counters.responses_sent[("OPTIONS", 503)] == 1
    assert endpoint.counters.calls_refused == {}  # a probe is not a refused call


def test_draining_leaves_in_dialog_options_to_the_call(endpoint: SipEndpoint) -> None:
    endpoint.refuse_new_calls = True
    outputs = endpoint.receive(request("OPTIONS", to_tag="ours"), CARRIER, 0.0)
    assert statuses(outputs) == []
    assert any(isinstance(o, RequestReceived) for o in outputs)


def test_not_draining_options_is_still_200(endpoint: SipEndpoint) -> None:
    endpoint.refuse_new_calls = False
    assert statuses(endpoint.receive(request("OPTIONS"), CARRIER, 0.0)) == [200]
