"""The untrusted screen: what a message from outside trusted_sources costs, sans IO.

Every decision is fed bytes, a peer and a time; nothing here opens a socket
or reads a clock.
"""

from __future__ import annotations

import ipaddress
import logging

import pytest

from mediacore.config import SipConfig
from mediacore.sip import message as sip
from mediacore.sip.endpoint import RequestReceived, SipEndpoint, Transmit
from mediacore.sip.screening import (
    BUCKETS,
    LISTED,
    SUMMARY_INTERVAL,
    TrustedSources,
    glance,
    stateless_answer,
)
from mediacore.sip.transport import Peer
from tests.unit.test_sip_endpoint import request

CARRIER = Peer("udp", "127.0.0.1", 5070)
SCANNER = Peer("udp", "127.0.0.66", 40000)
TRUST_ONE = (ipaddress.ip_network("127.0.0.1/32"),)


def endpoint(**settings: object) -> SipEndpoint:
    return SipEndpoint(SipConfig(trusted_sources=TRUST_ONE, **settings))  # type: ignore[arg-type]


def scanner_invite(number: int = 1, method: str = "INVITE", to_tag: str = "") -> bytes:
    return request(method, via=f"SIP/2.0/UDP 127.0.0.66:40000;branch=z9hG4bK-s{number};rport",
                   to_tag=to_tag).replace(b"Call-ID: endpoint-1", b"Call-ID: scan-%d" % number)


def sent(outputs: list) -> list[Transmit]:
    return [o for o in outputs if isinstance(o, Transmit)]


# --- glance ----------------------------------------------------------------------------


@pytest.mark.parametrize(("to_line", "tag"), [
    (b"To: <sip:a@b>", None),
    (b"To: <sip:a@b>;tag=Ab1", b"Ab1"),
    (b"t: <sip:a@b>;tag=x9", b"x9"),
    (b"TO : <sip:a@b> ; TAG = Q", b"Q"),
    (b"To: sip:a@b;tag=bare", b"bare"),
])
def test_glance_finds_the_to_tag_as_the_parser_does(to_line: bytes, tag: bytes | None) -> None:
    data = request().replace(b"To: <sip:+31900123456@127.0.0.1>", to_line)
    seen = glance(data)
    assert seen is not None and seen.method == b"INVITE" and seen.to_tag == tag
    parsed = sip.parse(data)
    assert parsed.to_tag == (tag.decode() if tag else None)


def test_glance_errs_towards_the_full_path_only() -> None:
    """A "tag" inside the URI is no To tag to the parser; the glance sees one
    and sends the message on, where the parser decides."""
    data = request().replace(b"To: <sip:+31900123456@127.0.0.1>", b"To: <sip:a@b;tag=u>")
    assert glance(data).to_tag == b"u"  # type: ignore[union-attr]
    assert sip.parse(data).to_tag is None


def test_glance_reports_a_folded_to_line() -> None:
    data = request().replace(b"To: <sip:+31900123456@127.0.0.1>\r\n",
                             b"To: <sip:+31900123456@127.0.0.1>\r\n ;tag=folded\r\n")
    seen = glance(data)
    assert seen is not None and seen.folded and seen.to_tag is None
    assert sip.parse(data).to_tag == "folded"


@pytest.mark.parametrize("data", [b"\x00\x01\x02", b"hello\r\n\r\n", b"INVITE\r\n\r\n",
                                  b"IN VITE sip:a SIP/3.0\r\n\r\n", b"INV@TE sip:a SIP/2.0\r\n"])
def test_glance_gives_none_without_a_sip_start_line(data: bytes) -> None:
    assert glance(data) is None


def test_glance_tells_responses() -> None:
    seen = glance(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK1\r\n\r\n")
    assert seen is not None and seen.method is None


# --- the stateless answer ----------------------------------------------------------


def test_the_stateless_403_parses_and_matches_the_request() -> None:
    data = scanner_invite().replace(
        b"Via: SIP/2.0/UDP 127.0.0.66:40000;branch=z9hG4bK-s1;rport\r\n",
        b"Via: SIP/2.0/UDP 127.0.0.66:40000;branch=z9hG4bK-s1;rport\r\n"
        b"v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-second\r\n")
    seen = glance(data)
    assert seen is not None
    answer = stateless_answer(data, seen, b"SIP/2.0 403 Forbidden", b"ourtag",
                              b"Server: mediacore\r\n")
    assert answer is not None
    response = sip.parse(answer)
    original = sip.parse(data)
    assert isinstance(response, sip.Response) and response.status == 403
    assert response.to_tag == "ourtag"
    assert response.top_via.branch == "z9hG4bK-s1"  # type: ignore[union-attr]
    assert len(response.headers.get_lines("via")) == 2
    assert response.call_id == original.call_id and response.cseq == original.cseq
    assert response.headers.get("server") == "mediacore"
    assert len(answer) <= len(data) + 40  # no amplification


def test_no_answer_for_a_request_that_cannot_be_matched() -> None:
    data = scanner_invite().replace(b"Call-ID: scan-1\r\n", b"")
    seen = glance(data)
    assert seen is not None
    assert stateless_answer(data, seen, b"SIP/2.0 403 Forbidden", b"t") is None


# --- the screen in the endpoint --------------------------------------------------


def test_an_untrusted_invite_gets_a_stateless_403_and_leaves_nothing_behind() -> None:
    ep = endpoint()
    outputs = ep.receive(scanner_invite(), SCANNER, 0.0)
    (answer,) = sent(outputs)
    assert answer.peer == SCANNER  # back where it came from, whatever the Via says
    response = sip.parse(answer.data)
    assert isinstance(response, sip.Response) and response.status == 403
    assert not any(isinstance(o, RequestReceived) for o in outputs)
    assert len(ep.transactions.server) == 0  # no transaction, no Timer G/H
    assert ep.counters.messages_refused == {"untrusted": 1}
    assert ep.counters.refusal_answers == {"sent": 1}
    assert ep.counters.calls_refused == {"untrusted": 1}
    assert ep.counters.responses_sent == {("INVITE", 403): 1}


def test_the_403_goes_to_the_source_not_to_a_via_maddr() -> None:
    data = scanner_invite().replace(b";rport", b";maddr=192.0.2.99")
    (answer,) = sent(endpoint().receive(data, SCANNER, 0.0))
    assert answer.peer == SCANNER


def test_a_retransmission_gets_the_same_403_again() -> None:
    ep = endpoint()
    first = sent(ep.receive(scanner_invite(), SCANNER, 0.0))[0].data
    again = sent(ep.receive(scanner_invite(), SCANNER, 0.5))[0].data
    assert first == again


def test_the_ack_of_our_403_is_absorbed() -> None:
    ep = endpoint()
    response = sip.parse(sent(ep.receive(scanner_invite(), SCANNER, 0.0))[0].data)
    ack = scanner_invite(method="ACK", to_tag=response.to_tag)  # type: ignore[arg-type]
    assert ep.receive(ack, SCANNER, 0.1) == []
    assert ep.counters.messages_refused == {"untrusted": 1, "refusal-ack": 1}


@pytest.mark.parametrize("method", ["OPTIONS", "REGISTER", "MESSAGE", "FOO"])
def test_other_out_of_dialog_requests_are_refused_too(method: str) -> None:
    ep = endpoint()
    (answer,) = sent(ep.receive(scanner_invite(method=method), SCANNER, 0.0))
    assert sip.parse(answer.data).status == 403  # type: ignore[union-attr]
    assert ep.counters.messages_refused == {"untrusted": 1}


def test_in_dialog_requests_responses_and_cancel_go_on_to_the_full_path() -> None:
    """Targets need not be trusted: their BYEs, re-INVITEs and responses are
    for the dialog and transaction layers to judge."""
    ep = endpoint()
    bye = scanner_invite(method="BYE", to_tag="theirs")
    assert any(isinstance(o, RequestReceived) for o in ep.receive(bye, SCANNER, 0.0))
    ep.receive(scanner_invite(2, method="CANCEL"), SCANNER, 0.0)
    assert ep.counters.requests_received == {"BYE": 1, "CANCEL": 1}
    response = (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKnone\r\n"
                b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: r\r\n"
                b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    ep.receive(response, SCANNER, 0.0)
    assert ep.counters.responses_received  # read by the full path
    assert ep.counters.messages_refused == {}


def test_what_only_the_parser_can_read_is_refused_after_the_parse() -> None:
    ep = endpoint()
    folded = scanner_invite().replace(b"Call-ID: scan-1\r\n", b"Call-ID:\r\n scan-1\r\n")
    (answer,) = sent(ep.receive(folded, SCANNER, 0.0))
    assert sip.parse(answer.data).status == 403  # type: ignore[union-attr]
    fake_tag = scanner_invite(2).replace(b"To: <sip:+31900123456@127.0.0.1>",
                                         b"To: <sip:+31900123456@127.0.0.1;tag=no>")
    (answer,) = sent(ep.receive(fake_tag, SCANNER, 0.0))
    assert sip.parse(answer.data).status == 403  # type: ignore[union-attr]
    assert len(ep.transactions.server) == 0
    assert ep.counters.messages_refused == {"untrusted": 2}


def test_garbage_from_an_untrusted_source_is_dropped_unanswered() -> None:
    ep = endpoint()
    assert ep.receive(b"\x00\x01garbage\r\n\r\n", SCANNER, 0.0) == []
    assert ep.counters.messages_refused == {"unreadable": 1}


def test_trusted_sources_are_not_screened() -> None:
    ep = endpoint()
    outputs = ep.receive(request(), CARRIER, 0.0)
    assert [sip.parse(t.data).status for t in sent(outputs)] == [100]  # type: ignore[union-attr]
    assert ep.counters.messages_refused == {}


def test_drop_mode_answers_nothing() -> None:
    ep = endpoint(untrusted="drop")
    for n in range(20):
        assert ep.receive(scanner_invite(n), SCANNER, n * 0.01) == []
    assert ep.counters.refusal_answers == {"not-answered": 20}
    assert ep.counters.messages_refused == {"untrusted": 20}
    assert ep.counters.responses_sent == {}


def test_answers_are_rate_limited_per_source() -> None:
    ep = endpoint(untrusted_answer_rate=5.0)
    answered = sum(len(sent(ep.receive(scanner_invite(n), SCANNER, n / 1000)))
                   for n in range(1001))  # 1,001 INVITEs over one second
    assert answered == 10 + 5  # a burst of twice the rate, then the rate
    other = Peer("udp", "127.0.0.67", 40000)
    assert sent(ep.receive(scanner_invite(5000), other, 1.0))  # another source: its own bucket
    assert ep.counters.refusal_answers["rate-limited"] == 986


def test_answers_to_all_sources_together_are_capped() -> None:
    """A spoofed-source flood: every source new, each with a fresh bucket; the
    shared bucket holds the answers to its rate, and the table stays bounded."""
    ep = endpoint(untrusted_answer_rate=5.0, untrusted_answer_rate_total=100.0)
    answered = 0
    for n in range(3 * BUCKETS):
        source = Peer("udp", str(ipaddress.ip_address(0x0A000000 + n)), 5060)
        answered += len(sent(ep.receive(scanner_invite(n), source, n / (3 * BUCKETS - 1))))
    # A burst of twice the total rate, then a second of it (12,288 small
    # refills may sum to a hair under 100 tokens).
    assert 200 + 99 <= answered <= 200 + 100
    assert len(ep.screen.buckets) == BUCKETS
    assert ep.screen.buckets.evicted == 2 * BUCKETS


def test_a_refused_source_is_logged_once_then_summed_up(caplog: pytest.LogCaptureFixture) -> None:
    ep = endpoint()
    with caplog.at_level(logging.WARNING, "mediacore.sip.screen"):
        for n in range(500):
            ep.receive(scanner_invite(n), SCANNER, n / 100)
        assert len(caplog.records) == 1
        first = caplog.records[0].getMessage()
        assert first.startswith("call -: INVITE from untrusted source udp:127.0.0.66:40000 "
                                "refused with 403")
        assert ep.next_deadline() == SUMMARY_INTERVAL  # the window opened at 0
        ep.handle_timer(SUMMARY_INTERVAL - 0.1)
        assert len(caplog.records) == 1
        ep.handle_timer(SUMMARY_INTERVAL)
        assert len(caplog.records) == 2
    summary = caplog.records[1].getMessage()
    assert summary.startswith("refused 500 messages from 1 untrusted sources in 60 s")
    assert "127.0.0.66 500" in summary and "403 sent" in summary
    assert "+31612345678" not in caplog.text  # the From is never read, never logged
    assert ep.next_deadline() is None


def test_a_summary_names_at_most_the_busiest_sources(caplog: pytest.LogCaptureFixture) -> None:
    ep = endpoint(untrusted="drop")
    with caplog.at_level(logging.WARNING, "mediacore.sip.screen"):
        for n in range(200):
            source = Peer("udp", f"10.0.{n // 250}.{n % 250}", 5060)
            for _ in range(1 + (n == 7) * 50):
                ep.receive(scanner_invite(n), source, 1.0)
        ep.flush_refusals(2.0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == LISTED + 1  # the first LISTED sources at once, then one summary
    assert "10.0.0.7 51" in lines[-1].split(": ", 1)[1].split(",")[0]  # the busiest first
    assert "190 more sources" in lines[-1]


def test_the_server_header_follows_sip_user_agent() -> None:
    answer = sent(endpoint(user_agent="").receive(scanner_invite(), SCANNER, 0.0))[0]
    assert sip.parse(answer.data).headers.get("server") is None
    answer = sent(endpoint(user_agent="acme-sbc").receive(scanner_invite(), SCANNER, 0.0))[0]
    assert sip.parse(answer.data).headers.get("server") == "acme-sbc"


def test_trust_decisions_are_cached_in_bounded_memory() -> None:
    trusted = TrustedSources(TRUST_ONE, size=8)
    assert trusted("127.0.0.1") and not trusted("127.0.0.2") and not trusted("not-an-ip")
    for n in range(100):
        trusted(f"10.0.0.{n}")
    assert len(trusted._cache) <= 8
