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
from tests.support.messages import CARRIER_INVITE, TARGET_200_OK

#: A carrier's initial INVITE (about 900 bytes: two Vias, Record-Route,
#: P-Asserted-Identity, Privacy, Allow, Supported, Session-Expires, SDP) and
#: a target's 200 OK, shared with the tests and the fuzzer.
INVITE = CARRIER_INVITE
OK200 = TARGET_200_OK


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
