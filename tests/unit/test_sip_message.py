"""SIP messages: Headers, parse, framing, limits, serialise, builders and checks."""

from __future__ import annotations

import pytest

from mediacore.sip.headers import (
    COMPACT_FORMS,
    LIST_HEADERS,
    ContentType,
    CSeq,
    Via,
    canonical_name,
    header_key,
    parse_content_type,
    parse_cseq,
    parse_token_list,
    parse_via,
)
from mediacore.sip.message import (
    DEFAULT_LIMITS,
    Headers,
    ParseError,
    ParserLimits,
    Rejection,
    Request,
    Response,
    check_request,
    check_response,
    make_ack_for_non_2xx,
    make_cancel,
    make_error_response,
    make_response,
    message_length,
    parse,
    serialize,
    split_multipart,
)
from mediacore.sip.uri import SipURI, TelURI

SDP = (b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
       b"m=audio 4000 RTP/AVP 0\r\n")

INVITE = (
    b"INVITE sip:+31900123456@192.0.2.10;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-1;rport\r\n"
    b"Via: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK-0;received=10.0.0.1\r\n"
    b"Record-Route: <sip:192.0.2.20;lr>\r\n"
    b"Max-Forwards: 69\r\n"
    b'From: "Caller" <sip:+31612345678@carrier.example;user=phone>;tag=f1\r\n'
    b"To: <sip:+31900123456@192.0.2.10;user=phone>\r\n"
    b"Call-ID: abc123@192.0.2.20\r\n"
    b"CSeq: 10 INVITE\r\n"
    b"Contact: <sip:+31612345678@192.0.2.20:5060>\r\n"
    b"Timestamp: 54\r\n"
    b"Supported: timer, 100rel\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)

RINGING = (
    b"SIP/2.0 180 Ringing\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-ours;received=192.0.2.10\r\n"
    b"From: <sip:a@example.com>;tag=ours\r\n"
    b"To: <sip:b@example.com>;tag=theirs\r\n"
    b"Call-ID: c1@example.com\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:b@192.0.2.30>\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def invite() -> Request:
    message = parse(INVITE)
    assert isinstance(message, Request)
    return message


def minimal(method: str = "OPTIONS", extra: bytes = b"", body: bytes = b"") -> bytes:
    return (
        f"{method} sip:u@example.com SIP/2.0\r\n".encode()
        + b"Via: SIP/2.0/UDP h.example.com;branch=z9hG4bK-x\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:u@example.com>\r\n"
        b"Call-ID: m1\r\n" + f"CSeq: 1 {method}\r\n".encode() + extra
        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    )


def request_of(data: bytes) -> Request:
    message = parse(data)
    assert isinstance(message, Request)
    return message


# --- Headers ----------------------------------------------------------------------------------


def test_headers_lookup_is_case_insensitive_and_knows_compact_forms() -> None:
    headers = Headers([("v", "SIP/2.0/UDP a"), ("VIA", "SIP/2.0/UDP b"), ("i", "x@y"),
                       ("X-Thing", "1")])
    assert headers.get("Via") == "SIP/2.0/UDP a"
    assert headers.get_all("via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b"]
    assert headers.get("Call-ID") == headers.get("I") == "x@y"
    assert "x-thing" in headers and "X-Other" not in headers and 42 not in headers
    assert headers.get("missing") is None and headers.get("missing", "d") == "d"
    assert headers.count("VIA") == 2 and len(headers) == 4
    assert headers.items()[0] == ("v", "SIP/2.0/UDP a")  # names as given
    assert list(headers) == headers.items()


def test_get_all_splits_list_headers_only() -> None:
    headers = Headers([
        ("Supported", "timer, 100rel"), ("k", "replaces"), ("Supported", ""),
        ("Contact", '"Bell, A." <sip:a@x>, <sip:b@y>'),
        ("WWW-Authenticate", 'Digest realm="x", nonce="y"'),
        ("Date", "Sat, 13 Nov 2010 23:29:00 GMT"),
        ("X-Unknown", "a, b"),
    ])
    assert headers.get_all("supported") == ["timer", "100rel", "replaces"]
    assert headers.get_all("m") == ['"Bell, A." <sip:a@x>', "<sip:b@y>"]
    assert headers.get_all("www-authenticate") == ['Digest realm="x", nonce="y"']
    assert headers.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert headers.get_all("X-Unknown") == ["a, b"]
    assert headers.get_lines("Supported") == ["timer, 100rel", "replaces", ""]


def test_headers_set_add_remove() -> None:
    headers = Headers([("Route", "<sip:a;lr>"), ("X", "1"), ("Route", "<sip:b;lr>")])
    headers.add("Route", "<sip:top;lr>", first=True)
    assert headers.get_lines("route") == ["<sip:top;lr>", "<sip:a;lr>", "<sip:b;lr>"]
    headers.add("Y", "  padded  ", first=True)  # no Y yet: appended
    assert headers.items()[-1] == ("Y", "padded")
    headers.set("route", "<sip:only;lr>")
    assert headers.items() == [("route", "<sip:only;lr>"), ("X", "1"), ("Y", "padded")]
    headers.set("Z", "new")
    assert headers.items()[-1] == ("Z", "new")
    assert headers.remove("ROUTE") == 1 and headers.remove("route") == 0
    assert headers.items() == [("X", "1"), ("Y", "padded"), ("Z", "new")]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Bad Name", "x"), ("", "x"), ("X:", "x"), ("X", "a\r\nInjected: 1"), ("X", "a\nb"),
        ("X", "\ud800"), ("Via", "garbage"), ("CSeq", "1"), ("From", "<sip:a@x"),
        ("To", "<sip:a@ bad>"), ("Call-ID", "a b"), ("Contact", "sip:a@x?h=1"),
        ("l", "-1"), ("Via", "SIP/2.0/UDP a, SIP/2.0/UDP b;;"), ("CSeq", "99999999999 X"),
    ],
)
def test_headers_refuse_what_parse_would_refuse(name: str, value: str) -> None:
    with pytest.raises(ValueError):
        Headers([(name, value)])
    if ":" in name or "\n" in value or "\ud800" in value:
        return  # on the wire these would be other, valid, headers
    with pytest.raises(ParseError):
        parse(minimal(extra=f"{name}: {value}\r\n".encode()))


@pytest.mark.parametrize(
    ("name", "value"),
    [("Max-Forwards", "lots"), ("Content-Type", "sdp"), ("Route", "sip:a"),
     ("Record-Route", "<sip:@x>"), ("To", "<sip:@x>"), ("Contact", "<sip:a@bad..host>"),
     ("X", "undecodable \udcff byte")],
)
def test_headers_accept_what_parse_accepts(name: str, value: str) -> None:
    # Checked when read, not when parsed: so a copy of a received value is never refused.
    Headers([(name, value)])
    parse(minimal(extra=f"{name}: {value}\r\n".encode("utf-8", "surrogateescape")))


def test_headers_refuse_non_str_values() -> None:
    with pytest.raises(TypeError):
        Headers([("X", 1)])  # type: ignore[list-item]


def test_headers_equality_and_copy() -> None:
    a = Headers([("v", "SIP/2.0/UDP a"), ("X", "1")])
    b = Headers([("Via", "SIP/2.0/UDP a"), ("x", "1")])
    assert a == b and a != Headers([("X", "1"), ("v", "SIP/2.0/UDP a")])
    copy = a.copy()
    copy.add("Y", "2")
    assert len(a) == 2 and len(copy) == 3
    assert a.__eq__(42) is NotImplemented
    assert "Headers(" in repr(a)


# --- header names and typed values ------------------------------------------------------------


@pytest.mark.parametrize(
    ("compact", "long"),
    [("v", "Via"), ("i", "Call-ID"), ("f", "From"), ("t", "To"), ("m", "Contact"),
     ("l", "Content-Length"), ("c", "Content-Type"), ("k", "Supported"), ("s", "Subject"),
     ("e", "Content-Encoding"), ("o", "Event"), ("u", "Allow-Events"), ("r", "Refer-To"),
     ("b", "Referred-By"), ("x", "Session-Expires"), ("y", "Identity")],
)
def test_compact_forms(compact: str, long: str) -> None:
    assert COMPACT_FORMS[compact] == long.lower()
    assert header_key(compact.upper()) == header_key(long) == long.lower()
    assert canonical_name(compact) == long


def test_canonical_names() -> None:
    assert canonical_name("call-id") == "Call-ID"
    assert canonical_name("CSEQ") == "CSeq"
    assert canonical_name("www-authenticate") == "WWW-Authenticate"
    assert canonical_name("X-Custom") == "X-Custom"
    assert "via" in LIST_HEADERS and "date" not in LIST_HEADERS


@pytest.mark.parametrize(
    ("text", "transport", "host", "port", "branch"),
    [
        ("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-a;rport", "UDP", "192.0.2.1", 5060,
         "z9hG4bK-a"),
        ("SIP/2.0/tls example.com;branch=z9hG4bKx", "TLS", "example.com", None, "z9hG4bKx"),
        ("SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bK1", "UDP", "2001:db8::1", 5070,
         "z9hG4bK1"),
        ("SIP  /   2.0 /UDP    192.0.2.2;branch=390skdjuw", "UDP", "192.0.2.2", None,
         "390skdjuw"),
        ("SIP / 2.0 / TCP spindle.example.com ; branch = z9hG4bK9ikj8", "TCP",
         "spindle.example.com", None, "z9hG4bK9ikj8"),
        ("SIP/2.0/UDP host.example.com : 5062;branch=z9hG4bKq", "UDP", "host.example.com", 5062,
         "z9hG4bKq"),
        ("sip/2.0/udp h", "UDP", "h", None, None),
    ],
)
def test_via_forms(text: str, transport: str, host: str, port: int | None,
                   branch: str | None) -> None:
    via = parse_via(text)
    assert (via.transport, via.host, via.port, via.branch) == (transport, host, port, branch)
    assert via.protocol == "SIP/2.0"
    assert parse_via(str(via)) == via


def test_via_parameters() -> None:
    via = parse_via("SIP/2.0/UDP 192.0.2.1;received=198.51.100.7;rport=5080;maddr=224.0.1.75;"
                    "branch=z9hG4bK776")
    assert via.received == "198.51.100.7"
    assert via.rport == 5080 and via.has_rport
    assert via.maddr == "224.0.1.75"
    assert via.is_rfc3261
    assert via.sent_by == ("192.0.2.1", None)
    asking = parse_via("SIP/2.0/UDP 192.0.2.1;rport;branch=z9hG4bK")
    assert asking.has_rport and asking.rport is None
    assert not asking.is_rfc3261  # only the cookie (RFC 4475 badbranch)
    assert parse_via("SIP/7.0/UDP h").protocol == "SIP/7.0"


@pytest.mark.parametrize(
    "text",
    ["", "SIP/2.0/UDP", "SIP/2.0 UDP host", "SIP/2.0/UDP host;;", "SIP/2.0/UDP host:99999",
     "SIP/2.0/UDP host;rport=x", "SIP/2.0/UDP ho st", "SIP/2.0/U@P host", "SIP/2.0/UDP [::1",
     "SIP/2.0/UDP host;branch=a b"],
)
def test_malformed_vias(text: str) -> None:
    with pytest.raises(ParseError):
        parse_via(text)


def test_via_constructor() -> None:
    via = Via("udp", "2001:db8::1", 5060, (("branch", "z9hG4bK1"), ("rport", None)))
    assert str(via) == "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1;rport"
    assert parse_via(str(via)) == via and hash(via) == hash(parse_via(str(via)))
    with pytest.raises(ValueError):
        Via("UDP", "bad host")
    with pytest.raises(ValueError):
        Via("UDP", "h", params=(("branch", "a;b"),))


def test_cseq() -> None:
    assert parse_cseq("0009\t INVITE") == CSeq(9, "INVITE")
    assert parse_cseq("4294967295 BYE").number == 2**32 - 1
    assert str(CSeq(1, "ACK")) == "1 ACK"
    for bad in ("4294967296 INVITE", "-1 INVITE", "1", "INVITE 1", "1 INVITE extra", "x INVITE",
                "1 IN/VITE", "\u0661 INVITE"):
        with pytest.raises(ParseError):
            parse_cseq(bad)


def test_content_type() -> None:
    ctype = parse_content_type('Multipart/Mixed ; boundary="b1" ; charset=utf-8')
    assert ctype == ContentType("multipart", "mixed", (("boundary", '"b1"'), ("charset", "utf-8")))
    assert ctype.mime == "multipart/mixed" and ctype.boundary == "b1"
    assert ctype.param("CHARSET") == "utf-8"
    assert str(parse_content_type("application/sdp")) == "application/sdp"
    assert parse_content_type("application/sdp").boundary is None
    for bad in ("sdp", "application/", "/sdp", "a b/c", "application/sdp;"):
        with pytest.raises(ParseError):
            parse_content_type(bad)


def test_token_lists() -> None:
    assert parse_token_list(["timer, 100rel", "", " replaces ,"], "Supported") == [
        "timer", "100rel", "replaces"]
    with pytest.raises(ParseError):
        parse_token_list(["a b"], "Require")


# --- parse ------------------------------------------------------------------------------------


def test_parse_a_request() -> None:
    message = invite()
    assert message.method == "INVITE" and message.version == "SIP/2.0"
    assert isinstance(message.uri, SipURI) and message.uri.user == "+31900123456"
    via = message.top_via
    assert via is not None and (via.host, via.port, via.branch) == ("192.0.2.20", 5060,
                                                                    "z9hG4bK-1")
    assert [v.host for v in message.vias] == ["192.0.2.20", "10.0.0.1"]
    assert message.cseq == CSeq(10, "INVITE")
    assert message.call_id == "abc123@192.0.2.20"
    assert message.from_.display_name == "Caller" and message.from_tag == "f1"
    assert message.to_tag is None
    assert message.max_forwards == 69
    assert message.content_length == len(SDP) and message.body == SDP
    assert message.content_type == ContentType("application", "sdp")
    contact = message.contact
    assert contact is not None and contact.uri_text == "sip:+31612345678@192.0.2.20:5060"
    assert [r.uri_text for r in message.record_routes] == ["sip:192.0.2.20;lr"]
    assert message.routes == []
    assert message.supported == ["timer", "100rel"]
    assert message.require == [] and message.proxy_require == [] and message.unsupported == []
    assert repr(message) == "<Request INVITE sip:+31900123456@192.0.2.10;user=phone>"


def test_parse_a_response() -> None:
    message = parse(RINGING)
    assert isinstance(message, Response)
    assert (message.status, message.reason) == (180, "Ringing")
    assert message.to_tag == "theirs" and message.from_tag == "ours"
    assert message.body == b""
    assert repr(message) == "<Response 180 Ringing>"
    assert check_response(message) is None


def test_compact_forms_and_odd_spacing() -> None:
    data = (
        b"OPTIONS sip:u@example.com SIP/2.0\r\n"
        b"v : SIP/2.0/UDP h;branch=z9hG4bK1\r\nf:<sip:a@x>;tag=1\r\nt:  <sip:u@example.com>  \r\n"
        b"i:c1\r\nCSEQ:1 OPTIONS\r\nm:<sip:a@h>\r\nk:timer\r\nl:0\r\n\r\n"
    )
    message = request_of(data)
    assert message.call_id == "c1" and message.supported == ["timer"]
    assert message.to.uri_text == "sip:u@example.com"
    assert message.headers.items()[0] == ("v", "SIP/2.0/UDP h;branch=z9hG4bK1")


def test_folded_headers_are_joined_with_one_space() -> None:
    data = minimal(extra=b"Subject: first\r\n  second\r\n\tthird\r\nX: y\r\n")
    message = request_of(data)
    assert message.headers.get("Subject") == "first second third"
    assert message.headers.get("X") == "y"


def test_folding_right_after_the_start_line_is_refused() -> None:
    with pytest.raises(ParseError):
        parse(b"OPTIONS sip:a@b SIP/2.0\r\n folded: x\r\nCall-ID: 1\r\n\r\n")


def test_several_values_in_one_header_and_several_headers() -> None:
    data = minimal(extra=b"Contact: <sip:a@x>, \"B, b\" <sip:b@y>;q=0.5\r\nContact: sip:c@z\r\n")
    message = request_of(data)
    assert [c.uri_text for c in message.contacts] == ["sip:a@x", "sip:b@y", "sip:c@z"]
    assert message.contacts[1].display_name == "B, b"


def test_keepalive_crlfs_before_a_message_are_skipped() -> None:
    assert parse(b"\r\n\r\n" + RINGING) == parse(RINGING)


def test_datagram_without_the_empty_line_is_taken_as_headers_only() -> None:
    message = parse(RINGING[:-2])
    assert isinstance(message, Response) and message.body == b""


def test_body_without_content_length_is_the_rest_of_the_datagram() -> None:
    data = minimal(body=b"")
    data = data.replace(b"Content-Length: 0\r\n", b"") + b"hello"
    assert request_of(data).body == b"hello"


def test_shorter_content_length_truncates_and_longer_is_an_error() -> None:
    data = minimal(body=b"hello")
    assert request_of(data + b"junk").body == b"hello"
    with pytest.raises(ParseError) as caught:
        parse(data[:-1])
    assert caught.value.status == 400 and caught.value.is_request is True


def test_content_length_values() -> None:
    ok = minimal(extra=b"l: 5\r\n", body=b"hello")  # a repeated equal value is harmless
    assert request_of(ok).body == b"hello"
    for value in (b"-1", b"five", b"1 2", b"", b"+5", b"5_0", b"\xd9\xa5", b"99999999999"):
        data = minimal().replace(b"Content-Length: 0", b"Content-Length: " + value)
        with pytest.raises(ParseError) as caught:
            parse(data)
        assert caught.value.status == 400
    with pytest.raises(ParseError, match="Conflicting"):
        parse(minimal(extra=b"l: 4\r\n", body=b"hello"))


@pytest.mark.parametrize(
    ("start", "status", "is_request"),
    [
        (b"OPTIONS sip:a@b SIP/3.0", 505, True),
        (b"OPTIONS sip:a@b sip/2.0", None, None),  # the version is case-insensitive
        (b"OPTIONS sip:a@b SIP/2", 400, True),
        (b"OPTIONS sip:a@b", 400, True),
        (b"OPTIONS  sip:a@b SIP/2.0", 400, True),
        (b"OPTIONS sip:a@b SIP/2.0 ", 400, True),
        (b"OPT/IONS sip:a@b SIP/2.0", 400, True),
        (b"OPTIONS <sip:a@b> SIP/2.0", 400, True),
        (b"OPTIONS sip:a@b?Route=x SIP/2.0", 400, True),
        (b"OPTIONS sips:a@b?Route=x SIP/2.0", 400, True),
        (b"SIP/2.0 99 Low", 400, False),
        (b"SIP/2.0 700 High", 400, False),
        (b"SIP/2.0 2000 OK", 400, False),
        (b"SIP/2.0 2x0 OK", 400, False),
        (b"SIP/3.0 200 OK", 505, False),
        (b"SIP/2 200 OK", 400, False),
        (b"SIP/2.0 200", None, None),  # no reason phrase, no space: tolerated
        (b"\x16\x03\x01\x00", 400, None),  # a TLS hello on the wrong port
    ],
)
def test_start_lines(start: bytes, status: int | None, is_request: bool | None) -> None:
    data = start + b"\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nl: 0\r\n\r\n"
    if status is None:
        parse(data)
        return
    with pytest.raises(ParseError) as caught:
        parse(data)
    assert caught.value.status == status
    assert caught.value.is_request is is_request


def test_header_syntax_errors() -> None:
    for extra in (b"NoColon\r\n", b"Bad Name: x\r\n", b": empty name\r\n",
                  b"X: bare\nLF\r\n", b"X: bare\rCR\r\n"):
        with pytest.raises(ParseError) as caught:
            parse(minimal(extra=extra))
        assert caught.value.status == 400
        assert caught.value.can_respond  # the Via was still read


@pytest.mark.parametrize(
    "extra",
    [b"From: <sip:a@x;tag=2\r\n", b"CSeq: x OPTIONS\r\n", b"Call-ID: a b\r\n",
     b"Via: SIP/2.0/UDP ok, SIP/2.0/UDP ;;\r\n", b"v: SIP/2.0/UDP h:99999\r\n"],
)
def test_repeated_and_lower_values_are_checked_too(extra: bytes) -> None:
    with pytest.raises(ParseError):
        parse(minimal(extra=extra))


def test_cseq_method_must_match() -> None:
    data = minimal().replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE")
    with pytest.raises(ParseError, match="CSeq method"):
        parse(data)


def test_empty_and_tiny_inputs() -> None:
    for data in (b"", b"\r\n", b"\r\n\r\n", b"x", b"INVITE", b"\r\n\r\nOPTIONS"):
        with pytest.raises(ParseError):
            parse(data)


def test_errors_carry_the_headers_that_address_the_answer() -> None:
    data = minimal().replace(b"CSeq: 1 OPTIONS", b"CSeq: 99999999999 OPTIONS")
    with pytest.raises(ParseError) as caught:
        parse(data)
    error = caught.value
    assert error.is_request and error.can_respond
    assert error.headers is not None and error.headers.get("call-id") == "m1"
    assert "CSeq" in error.reason


def test_typed_accessors_of_optional_and_mandatory_headers() -> None:
    bare = request_of(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n")
    assert bare.top_via is None and bare.vias == [] and bare.contact is None
    assert bare.max_forwards is None and bare.content_type is None and bare.accept is None
    assert bare.from_tag is None and bare.to_tag is None and bare.expires is None
    for name in ("cseq", "call_id", "from_", "to"):
        with pytest.raises(ParseError) as caught:
            getattr(bare, name)
        assert caught.value.status == 400


def test_lazily_parsed_values_raise_parse_error_when_read() -> None:
    message = request_of(minimal(extra=b"Max-Forwards: lots\r\nRequire: a b\r\n"
                                       b"Record-Route: sip:no-brackets\r\nPrivacy: id;;\r\n"))
    for name in ("max_forwards", "require", "record_routes", "privacy"):
        with pytest.raises(ParseError):
            getattr(message, name)
    rejection = check_request(message)
    assert rejection is not None and rejection.status == 400


def test_more_typed_accessors() -> None:
    message = request_of(minimal(extra=(
        b"Route: <sip:p1;lr>, <sip:p2;lr>\r\nRoute: <sip:p3;lr>\r\nAllow: INVITE, BYE\r\n"
        b"Accept: application/sdp;q=1, text/*\r\n"
        b"P-Asserted-Identity: \"C\" <sip:+31612345678@x>, <tel:+31612345678>\r\n"
        b"Privacy: id; Header\r\nExpires: 99999999999999\r\nContact: *\r\n")))
    assert [r.uri_text for r in message.routes] == ["sip:p1;lr", "sip:p2;lr", "sip:p3;lr"]
    assert message.allow == ["INVITE", "BYE"]
    assert [a.mime for a in message.accept or []] == ["application/sdp", "text/*"]
    identities = message.p_asserted_identity
    assert identities[0].display_name == "C" and isinstance(identities[1].uri, TelURI)
    assert message.privacy == ["id", "header"]
    assert message.expires == 2**32 - 1
    assert message.contacts == [] and message.contact is None


def test_empty_accept_accepts_nothing() -> None:
    message = request_of(minimal("INVITE", extra=b"Accept:\r\n"))
    assert message.accept == []
    assert check_request(message) == (406, "Not Acceptable", ())


def test_cached_values_follow_header_changes() -> None:
    message = invite()
    assert message.top_via is not None and message.top_via.host == "192.0.2.20"
    message.headers.add("Via", "SIP/2.0/UDP 203.0.113.9;branch=z9hG4bK-new", first=True)
    assert message.top_via is not None and message.top_via.host == "203.0.113.9"
    assert len(message.vias) == 3
    message.headers.set("Max-Forwards", "5")
    assert message.max_forwards == 5
    message.headers.remove("Contact")
    assert message.contact is None


# --- limits -----------------------------------------------------------------------------------


def test_limits_have_sane_defaults() -> None:
    assert ParserLimits(65536, 256, 8192) == DEFAULT_LIMITS
    with pytest.raises(AttributeError):
        DEFAULT_LIMITS.max_headers = 1  # type: ignore[misc]


def test_too_many_headers() -> None:
    data = minimal(extra=b"X: 1\r\n" * 300)
    with pytest.raises(ParseError) as caught:
        parse(data)
    assert (caught.value.status, caught.value.reason) == (400, "Too Many Headers")
    assert parse(data, ParserLimits(max_headers=400))


def test_header_line_too_long() -> None:
    data = minimal(extra=b"X: " + b"a" * 9000 + b"\r\n")
    with pytest.raises(ParseError) as caught:
        parse(data)
    assert (caught.value.status, caught.value.reason) == (400, "Header Line Too Long")
    folded = minimal(extra=b"X: " + b"a" * 5000 + b"\r\n " + b"b" * 5000 + b"\r\n")
    with pytest.raises(ParseError, match="Too Long"):
        parse(folded)
    assert parse(data, ParserLimits(max_line_length=10000))


def test_message_too_large() -> None:
    small = ParserLimits(max_message_size=300)
    body = b"x" * 400
    with pytest.raises(ParseError) as caught:
        parse(minimal(body=body), small)
    assert caught.value.status == 413 and caught.value.can_respond
    with pytest.raises(ParseError) as caught:
        parse(minimal(extra=b"X: " + b"a" * 400 + b"\r\n"), small)
    assert caught.value.status == 513
    no_length = minimal().replace(b"Content-Length: 0\r\n", b"") + body
    with pytest.raises(ParseError) as caught:
        parse(no_length, small)
    assert caught.value.status == 413


# --- stream framing ---------------------------------------------------------------------------


def test_message_length_frames_a_stream() -> None:
    data = minimal(body=b"hello")
    assert message_length(data) == len(data)
    assert message_length(data + b"OPTIONS sip:") == len(data)
    assert message_length(bytearray(data)) == len(data)
    for cut in (1, 30, len(data) - 5, len(data) - 1):
        assert message_length(data[:cut]) is None
    assert message_length(b"") is None and message_length(b"\r\n\r\n") is None
    framed = b"\r\n\r\n" + data
    assert message_length(framed) == len(framed)
    assert parse(framed[: message_length(framed)]) == parse(data)
    folded = b"OPTIONS sip:a SIP/2.0\r\nl:\r\n  2\r\n\r\nhi"
    assert message_length(folded) == len(folded)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n", 400),
        (b"OPTIONS sip:a SIP/2.0\r\nContent-Length: -1\r\n\r\n", 400),
        (b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\nab", 400),
        (b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 99999\r\n\r\n", 413),
        (b"OPTIONS sip:a SIP/2.0\r\nX: " + b"a" * 70000, 513),
        (b"OPTIONS sip:a SIP/2.0\r\nX: " + b"a" * 70000 + b"\r\n\r\n", 513),
    ],
)
def test_message_length_refuses(data: bytes, status: int) -> None:
    with pytest.raises(ParseError) as caught:
        message_length(data)
    assert caught.value.status == status


# --- serialise and equality -------------------------------------------------------------------


def test_serialize_round_trip_keeps_names_and_fixes_content_length() -> None:
    message = invite()
    assert serialize(message) == INVITE
    assert bytes(message) == INVITE
    message.body = b"v=0\r\n"
    wire = serialize(message)
    assert b"\r\nContent-Length: 5\r\n" in wire and parse(wire) == message
    compact = parse(b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nl: 9\r\nl: 9\r\n\r\n"
                    b"123456789")
    assert serialize(compact) == (b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
                                  b"l: 9\r\n\r\n123456789")


def test_serialize_adds_a_missing_content_length() -> None:
    wire = serialize(Response(200, headers=[("Call-ID", "x")], body=b"abc"))
    assert wire == b"SIP/2.0 200 OK\r\nCall-ID: x\r\nContent-Length: 3\r\n\r\nabc"
    assert serialize(Response(183, "")) == b"SIP/2.0 183 \r\nContent-Length: 0\r\n\r\n"


def test_serialize_refuses_a_cseq_for_another_method() -> None:
    request = Request("BYE", "sip:a@x", [("CSeq", "1 INVITE")])
    with pytest.raises(ValueError):
        serialize(request)
    with pytest.raises(TypeError):
        serialize("not a message")  # type: ignore[arg-type]


def test_equality_is_semantic() -> None:
    long_form = parse(b"OPTIONS sip:a@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
                      b"Call-ID: 1\r\nContent-Length: 0\r\n\r\n")
    short_form = parse(b"OPTIONS sip:a@x SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
                       b"i:1\r\n\r\n")
    assert long_form == short_form
    assert long_form != parse(b"OPTIONS sip:a@x SIP/2.0\r\ni: 1\r\n"
                              b"v: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n")
    assert long_form != parse(b"OPTIONS sip:a@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
                              b"Call-ID: 1\r\n\r\nbody")
    assert long_form != parse(RINGING) and long_form.__eq__(1) is NotImplemented


# --- constructing our own messages ------------------------------------------------------------


def test_request_and_response_constructors() -> None:
    request = Request("OPTIONS", "sip:a@example.com", [("Call-ID", "x"), ("CSeq", "1 OPTIONS")])
    assert isinstance(request.uri, SipURI) and request.body == b""
    assert Request("OPTIONS", SipURI("example.com")).uri == SipURI("example.com")
    assert Response(404).reason == "Not Found"
    assert Response(299).reason == ""
    assert Response(200, "  Fine  ").reason == "Fine"
    for bad in (
        lambda: Request("BAD METHOD", "sip:a@x"),
        lambda: Request("INVITE", "sip:a@x?Route=y"),
        lambda: Request("INVITE", "not a uri"),
        lambda: Request("INVITE", "sip:a@x", version="SIP/3.0"),
        lambda: Response(99),
        lambda: Response(700),
        lambda: Response(200, "two\r\nlines"),
        lambda: Response(200, version="SIP/1.0"),
    ):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(TypeError):
        Request("INVITE", "sip:a@x", body="text")  # type: ignore[arg-type]


def test_copies_are_independent() -> None:
    original = invite()
    copy = original.copy()
    copy.headers.set("Max-Forwards", "1")
    assert original.max_forwards == 69 and copy.max_forwards == 1
    assert copy.body == original.body and copy.uri == original.uri
    response = Response(200, headers=[("X", "1")]).copy()
    assert response.headers.get("X") == "1"


def test_make_response_follows_8_2_6() -> None:
    request = invite()
    response = make_response(request, 180, to_tag="ua1", extra_headers=[("Contact", "<sip:us@h>")])
    assert (response.status, response.reason) == (180, "Ringing")
    assert response.headers.get_lines("Via") == request.headers.get_lines("Via")
    assert response.headers.get("From") == request.headers.get("From")
    assert response.to_tag == "ua1"
    assert response.call_id == request.call_id and response.cseq == request.cseq
    assert response.headers.get_lines("Record-Route") == ["<sip:192.0.2.20;lr>"]
    assert "Timestamp" not in response.headers
    assert response.headers.get("Contact") == "<sip:us@h>"
    assert parse(serialize(response)) == response
    trying = make_response(request, 100)
    assert trying.to_tag is None and trying.headers.get("Timestamp") == "54"
    assert "Record-Route" not in trying.headers
    assert "Record-Route" not in make_response(request, 486, to_tag="x").headers
    with pytest.raises(ValueError):
        make_response(request, 200, extra_headers=[("Bad Name", "x")])
    with pytest.raises(ValueError):
        make_response(request, 200, to_tag="a;b")


def test_make_response_keeps_an_existing_to_tag() -> None:
    data = minimal("BYE").replace(b"To: <sip:u@example.com>", b"To: <sip:u@example.com>;tag=9")
    response = make_response(request_of(data), 200, to_tag="other")
    assert response.to_tag == "9"
    assert "Record-Route" not in response.headers


def test_make_error_response() -> None:
    data = minimal().replace(b"To: <sip:u@example.com>",
                             b"To: <sip:u@example.com>\r\nMax-Forwards: 7")
    data = data.replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 BYE")
    with pytest.raises(ParseError) as caught:
        parse(data)
    response = make_error_response(caught.value, to_tag="t")
    assert response is not None
    assert response.status == 400 and response.reason == caught.value.reason
    assert response.to_tag == "t" and response.headers.get("CSeq") == "1 BYE"
    assert "Max-Forwards" not in response.headers
    assert parse(serialize(response)).status == 400  # type: ignore[union-attr]
    with pytest.raises(ParseError) as caught:
        parse(b"SIP/2.0 999 X\r\nVia: SIP/2.0/UDP h\r\n\r\n")
    assert make_error_response(caught.value) is None
    with pytest.raises(ParseError) as caught:
        parse(b"OPTIONS sip:a SIP/9.0\r\nCall-ID: x\r\n\r\n")
    assert make_error_response(caught.value) is None  # no Via: nowhere to send it
    assert make_error_response(ParseError(400, "x", is_request=True)) is None


def test_make_error_response_never_echoes_a_bare_line_break() -> None:
    data = minimal().replace(b"Call-ID: m1", b"Call-ID: m1\nInjected: yes")
    with pytest.raises(ParseError) as caught:
        parse(data)
    response = make_error_response(caught.value)
    assert response is not None and b"Injected" not in serialize(response)


def test_make_error_response_does_not_tag_an_unreadable_to() -> None:
    data = minimal().replace(b"To: <sip:u@example.com>", b'To: "broken <sip:u@example.com>')
    with pytest.raises(ParseError) as caught:
        parse(data)
    response = make_error_response(caught.value, to_tag="t")
    assert response is not None and response.headers.get("To") == '"broken <sip:u@example.com>'


def test_ack_and_cancel() -> None:
    request = invite()
    request.headers.add("Route", "<sip:proxy.example;lr>")
    final = make_response(request, 486, to_tag="busy")
    ack = make_ack_for_non_2xx(request, final)
    assert ack.method == "ACK" and ack.uri == request.uri
    assert ack.headers.get_lines("Via") == ["SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-1;rport"]
    assert ack.to_tag == "busy" and ack.from_tag == "f1"
    assert ack.cseq == CSeq(10, "ACK") and ack.call_id == request.call_id
    assert ack.headers.get_lines("Route") == ["<sip:proxy.example;lr>"]
    assert parse(serialize(ack)) == ack
    cancel = make_cancel(request)
    assert cancel.method == "CANCEL" and cancel.cseq == CSeq(10, "CANCEL")
    assert cancel.to_tag is None and cancel.top_via == request.top_via
    assert len(cancel.vias) == 1
    assert parse(serialize(cancel)) == cancel
    with pytest.raises(ValueError):
        make_cancel(Request("INVITE", "sip:a@x", [("CSeq", "1 INVITE")]))


def test_top_via_of_a_combined_via_line() -> None:
    data = minimal().replace(
        b"Via: SIP/2.0/UDP h.example.com;branch=z9hG4bK-x",
        b"Via: SIP/2.0/UDP first;branch=z9hG4bK-1, SIP/2.0/UDP second;branch=z9hG4bK-2")
    message = request_of(data)
    assert message.top_via is not None and message.top_via.host == "first"
    assert make_cancel(message).headers.get("Via") == "SIP/2.0/UDP first;branch=z9hG4bK-1"


# --- what a UAS answers first -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kwargs", "expected"),
    [
        (minimal(), {}, None),
        (minimal().replace(b"Call-ID: m1\r\n", b""), {}, (400, "Missing Call-ID header")),
        (minimal(extra=b"To: <sip:x@y>\r\n"), {}, (400, "Multiple To headers")),
        (minimal(extra=b"Contact: <sip:a@bad..host>\r\n"), {}, 400),
        (minimal(extra=b"Content-Type: text\r\n"), {}, 400),
        (minimal("REGISTER"), {"methods": ["INVITE", "ACK"]},
         (405, "Method Not Allowed", (("Allow", "INVITE, ACK"),))),
        (minimal("REGISTER"), {"methods": {"INVITE", "BYE"}},
         (405, "Method Not Allowed", (("Allow", "BYE, INVITE"),))),
        (minimal("FOO"), {"methods": ["INVITE"]}, (501, "Not Implemented")),
        (minimal().replace(b"sip:u@example.com SIP", b"tel:+1234 SIP"), {"schemes": ["sip"]},
         (416, "Unsupported URI Scheme")),
        (minimal(extra=b"Require: 100rel, timer\r\n"), {"supported": ["timer"]},
         (420, "Bad Extension", (("Unsupported", "100rel"),))),
        (minimal("CANCEL", extra=b"Require: foo\r\n"), {}, None),
        (minimal(body=b"x"), {}, (400, "Missing Content-Type header")),
        (minimal(extra=b"Content-Type: text/plain\r\n", body=b"x"), {},
         (415, "Unsupported Media Type", (("Accept", "application/sdp"),))),
        (minimal(extra=b"c: application/sdp\r\nContent-Encoding: gzip\r\n", body=b"x"), {},
         (415, "Unsupported Media Type", (("Accept-Encoding", "identity"),))),
        (minimal(extra=b"c: application/sdp\r\ne: identity\r\n", body=b"v=0"), {}, None),
        (minimal("INVITE", extra=b"Accept: application/*\r\n"), {}, None),
        (minimal("INVITE", extra=b"Accept: */*\r\n"), {}, None),
        (minimal("INVITE", extra=b"Accept: text/html\r\n"), {}, (406, "Not Acceptable")),
        (minimal("INVITE", extra=b"Accept: text/html\r\n"), {"answer_type": None}, None),
        (minimal("INVITE", extra=b"Max-Forwards: 0\r\n"), {"forwarding": True},
         (483, "Too Many Hops")),
        (minimal("INVITE", extra=b"Max-Forwards: 1\r\n"), {"forwarding": True}, None),
        (minimal(extra=b"Require: a b\r\n"), {}, 400),
    ],
)
def test_check_request(data: bytes, kwargs: dict, expected: object) -> None:
    result = check_request(request_of(data), **kwargs)
    if expected is None:
        assert result is None
    elif isinstance(expected, int):
        assert result is not None and result.status == expected
    else:
        assert isinstance(result, Rejection)
        assert tuple(result)[: len(expected)] == expected  # type: ignore[arg-type]


def test_check_response() -> None:
    assert check_response(parse(RINGING)) is None  # type: ignore[arg-type]
    missing = parse(RINGING.replace(b"Call-ID: c1@example.com\r\n", b""))
    assert check_response(missing) == "Missing Call-ID header"  # type: ignore[arg-type]
    two = parse(RINGING.replace(b"Via: SIP", b"Via: SIP/2.0/UDP other\r\nVia: SIP"))
    assert check_response(two) == "More than one Via header value"  # type: ignore[arg-type]


# --- multipart --------------------------------------------------------------------------------


def test_split_multipart() -> None:
    body = (b"preamble\r\n--b1\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n\r\n"
            b"--b1 \r\n\r\nno headers\r\n--b1\r\nX: folded\r\n more\r\n\r\n\r\n--b1--\r\nepilogue")
    parts = split_multipart(body, "b1")
    assert [p.body for p in parts] == [b"v=0\r\n", b"no headers", b""]
    assert parts[0].content_type == ContentType("application", "sdp")
    assert parts[1].content_type is None and len(parts[1].headers) == 0
    assert parts[2].headers.get("X") == "folded more"
    assert split_multipart(b"--b\r\n\r\nx\r\n--b--", "b")[0].body == b"x"


@pytest.mark.parametrize(
    "body",
    [b"no boundary here", b"--b", b"--b\r\n\r\nunterminated", b"--b\r\nX: y\r\n--b--",
     b"--b\r\nBad Header\r\n\r\nx\r\n--b--"],
)
def test_split_multipart_refuses(body: bytes) -> None:
    with pytest.raises(ParseError):
        split_multipart(body, "b")
