"""The parse caches (URIs, name-addrs, Vias, CSeqs, Content-Types, checked header
fields) must answer exactly as parsing again would: same values, same errors."""

from __future__ import annotations

import pytest

from mediacore.sip import headers, message, uri
from mediacore.sip.headers import parse_content_type, parse_cseq, parse_vias
from mediacore.sip.message import Headers
from mediacore.sip.uri import MAX_KEPT, ParseError, parse_name_addr, parse_uri


def test_the_same_text_gives_an_equal_value_each_time() -> None:
    assert parse_uri("sip:a@b:5060;transport=udp") == parse_uri("sip:a@b:5060;transport=udp")
    first = parse_name_addr('"A" <sip:a@b>;tag=1')
    assert parse_name_addr('"A" <sip:a@b>;tag=1') == first and first.tag == "1"
    assert parse_vias("SIP/2.0/UDP h;branch=z9hG4bKx").branch == "z9hG4bKx"
    assert parse_cseq("1 INVITE") == (1, "INVITE")
    assert parse_content_type("application/sdp").mime == "application/sdp"


@pytest.mark.parametrize(("parse", "text"), [
    (parse_uri, "sip:a b@c"),
    (parse_name_addr, "<sip:a@b"),
    (parse_vias, "SIP/2.0/UDP h;rport=x"),
    (parse_cseq, "99999999999 INVITE"),
    (parse_content_type, "application"),
])
def test_errors_are_raised_every_time(parse: object, text: str) -> None:
    for _ in range(2):
        with pytest.raises(ParseError):
            parse(text)  # type: ignore[operator]


def test_an_addr_spec_is_refused_where_only_name_addr_is_allowed_even_after_a_read() -> None:
    assert parse_name_addr("sip:a@b;tag=1").tag == "1"
    with pytest.raises(ParseError):
        parse_name_addr("sip:a@b;tag=1", name_addr_only=True)
    # and the other way round: a <...> form read for Route is fine for From too
    assert parse_name_addr("<sip:p@q;lr>", name_addr_only=True).uri_text == "sip:p@q;lr"
    assert parse_name_addr("<sip:p@q;lr>").uri_text == "sip:p@q;lr"


def test_long_texts_are_parsed_but_not_kept() -> None:
    long_user = "u" * MAX_KEPT
    text = f"sip:{long_user}@b"
    assert parse_uri(text).user == long_user  # type: ignore[union-attr]
    assert text not in uri._URIS
    via = "SIP/2.0/UDP h;branch=z9hG4bK" + "x" * MAX_KEPT
    assert parse_vias(via).branch is not None
    assert via not in headers._VIAS
    value = "x" * (MAX_KEPT + 1)
    Headers([("X-Long", value)])
    assert ("X-Long", value) not in message._CHECKED


def test_checked_fields_are_checked_again_after_a_refusal() -> None:
    for _ in range(2):
        with pytest.raises(ValueError):
            Headers([("Via", "not a via")])
    assert Headers([("Max-Forwards", "70")]).get("max-forwards") == "70"
    assert Headers([("Max-Forwards", "70")]).get("max-forwards") == "70"
