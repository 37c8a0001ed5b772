"""Content-Length framing of SIP over stream transports (RFC 3261 18.3)."""

from __future__ import annotations

import pytest

from mediacore.sip.message import ParseError, ParserLimits, message_length


def frame(buffer: bytes, max_size: int) -> int | None:
    return message_length(buffer, ParserLimits(max_message_size=max_size))


OPTIONS = (
    b"OPTIONS sip:a@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"body"
)


def test_a_complete_message_is_framed_exactly() -> None:
    assert frame(OPTIONS, 65536) == len(OPTIONS)
    assert frame(OPTIONS + b"INVITE sip:", 65536) == len(OPTIONS)


@pytest.mark.parametrize("cut", [1, 20, len(OPTIONS) - 5, len(OPTIONS) - 1])
def test_a_partial_message_needs_more(cut: int) -> None:
    assert frame(OPTIONS[:cut], 65536) is None


def test_compact_and_folded_content_length() -> None:
    message = b"OPTIONS sip:a SIP/2.0\r\nl:\r\n  2\r\n\r\nhi"
    assert frame(message, 65536) == len(message)


def test_missing_content_length_cannot_be_framed() -> None:
    with pytest.raises(ParseError) as error:
        frame(b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n", 65536)
    assert error.value.status == 400


@pytest.mark.parametrize("value", [b"-1", b"abc", b"1 2", b""])
def test_malformed_content_length(value: bytes) -> None:
    with pytest.raises(ParseError, match="Malformed Content-Length"):
        frame(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: " + value + b"\r\n\r\n", 65536)


def test_conflicting_content_lengths() -> None:
    with pytest.raises(ParseError, match="Conflicting"):
        frame(b"X sip:a SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\nab", 65536)


def test_oversized_messages_are_refused_before_buffering_them() -> None:
    with pytest.raises(ParseError) as error:
        frame(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 100000\r\n\r\n", 65536)
    assert error.value.status == 413  # the body is too large; the head can be answered
    with pytest.raises(ParseError) as error:
        frame(b"A" * 70000, 65536)  # no end of head within the limit
    assert error.value.status == 513
