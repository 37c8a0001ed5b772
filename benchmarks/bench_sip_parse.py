"""What parsing and writing SIP costs, on the messages a carrier trunk sends most.

Run (testpaths is tests/, so name the file):

    .venv/bin/pytest benchmarks/bench_sip_parse.py --benchmark-only

Results, with the machine and Python they came from: benchmarks/RESULTS.md.
parse() checks the start line, framing and the transaction headers at once
and leaves the rest for first access, so ``test_parse_invite_and_read_it``
measures the honest total: parse plus everything the transaction, dialog
and call layers read from an initial INVITE.
"""

from __future__ import annotations

from typing import Any

from mediacore.sip.message import Request, Response, make_response, parse, serialize

SDP = (
    b"v=0\r\n"
    b"o=- 8123456 8123456 IN IP4 198.51.100.20\r\n"
    b"s=-\r\n"
    b"c=IN IP4 198.51.100.20\r\n"
    b"t=0 0\r\n"
    b"m=audio 31000 RTP/AVP 8 0 101\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=ptime:20\r\n"
)

#: A carrier's initial INVITE to a service number, about 900 bytes: two Vias,
#: Record-Route, P-Asserted-Identity, Privacy, Allow, Supported,
#: Session-Expires and an SDP offer.
INVITE = (
    b"INVITE sip:+31900123456@203.0.113.10:5060;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bK-524287-1-a3f2c1d0e9;rport\r\n"
    b"Via: SIP/2.0/UDP 10.20.30.40:5060;received=10.20.30.40;branch=z9hG4bK8d7c6b5a4\r\n"
    b"Record-Route: <sip:198.51.100.20;lr;ftag=as1f2e3d4c>\r\n"
    b"Max-Forwards: 68\r\n"
    b'From: "+31612345678" <sip:+31612345678@carrier.example.net;user=phone>;tag=as1f2e3d4c\r\n'
    b"To: <sip:+31900123456@203.0.113.10;user=phone>\r\n"
    b"Call-ID: 5c1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a@198.51.100.20\r\n"
    b"CSeq: 102 INVITE\r\n"
    b"Contact: <sip:+31612345678@198.51.100.20:5060>\r\n"
    b"P-Asserted-Identity: <sip:+31612345678@carrier.example.net;user=phone>\r\n"
    b"Privacy: none\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK\r\n"
    b"Supported: timer, 100rel\r\n"
    b"Session-Expires: 1800;refresher=uac\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)

#: The 200 OK a target sends back for our outbound INVITE, with its SDP answer.
OK200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK-mc-7f3a9b2c1d;rport=5060;"
    b"received=203.0.113.10\r\n"
    b"Record-Route: <sip:198.51.100.20:5060;lr>\r\n"
    b"From: <sip:+31900123456@203.0.113.10>;tag=mc-1a2b3c4d\r\n"
    b"To: <sip:+31201234567@198.51.100.30;user=phone>;tag=9f8e7d6c\r\n"
    b"Call-ID: mc-0e1d2c3b4a5968778695a4b3c2d1e0f@203.0.113.10\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:+31201234567@198.51.100.30:5060>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n"
    b"Supported: timer\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)


def run(benchmark: Any, function: Any, *args: Any) -> Any:
    """Batches of calls per round: a single 15 us call is too close to the timer's
    own jitter and to scheduling noise on a shared 2-core machine."""
    return benchmark.pedantic(function, args=args, iterations=200, rounds=300,
                              warmup_rounds=10)


def test_message_sizes() -> None:
    assert 850 <= len(INVITE) <= 1000, len(INVITE)


def test_parse_invite(benchmark: Any) -> None:
    message = run(benchmark, parse, INVITE)
    assert isinstance(message, Request) and message.method == "INVITE"


def test_parse_200_ok(benchmark: Any) -> None:
    message = run(benchmark, parse, OK200)
    assert isinstance(message, Response) and message.status == 200


def read_everything(data: bytes) -> Request:
    """Parse, then read what the transaction, dialog and call layers read."""
    request = parse(data)
    assert isinstance(request, Request)
    via = request.top_via
    assert via is not None and via.branch and via.has_rport
    assert request.cseq.number == 102 and request.call_id
    assert request.from_tag and request.to_tag is None
    assert request.uri.user == "+31900123456"  # type: ignore[union-attr]
    assert request.from_.uri.user  # type: ignore[union-attr]
    contact = request.contact
    assert contact is not None and contact.uri.host  # type: ignore[union-attr]
    assert request.record_routes and request.max_forwards == 68
    assert request.p_asserted_identity[0].uri.user  # type: ignore[union-attr]
    assert request.privacy == ["none"] and request.supported
    content_type = request.content_type
    assert content_type is not None and content_type.mime == "application/sdp"
    return request


def test_parse_invite_and_read_it(benchmark: Any) -> None:
    run(benchmark, read_everything, INVITE)


def test_serialize_invite(benchmark: Any) -> None:
    message = parse(INVITE)
    assert run(benchmark, serialize, message) == INVITE


def test_serialize_200_ok(benchmark: Any) -> None:
    message = parse(OK200)
    assert run(benchmark, serialize, message) == OK200


def test_make_and_serialize_180(benchmark: Any) -> None:
    request = parse(INVITE)
    assert isinstance(request, Request)

    def ringing() -> bytes:
        return serialize(make_response(request, 180, to_tag="mc-1a2b3c4d"))

    assert run(benchmark, ringing).startswith(b"SIP/2.0 180 Ringing\r\n")
