"""URIs, name-addr values and the shared grammar helpers (mediacore.sip.uri)."""

from __future__ import annotations

import pytest

from mediacore.sip.uri import (
    AbsoluteURI,
    NameAddr,
    ParseError,
    SipURI,
    TelURI,
    is_token,
    parse_hostport,
    parse_name_addr,
    parse_params,
    parse_uri,
    quote_string,
    split_list,
    unescape,
    unquote_string,
)

# --- SIP URIs ----------------------------------------------------------------------------


def test_a_full_sip_uri() -> None:
    uri = parse_uri("sip:alice:secret@atlanta.example.com:5061;transport=tcp;lr?Subject=hi&X=1")
    assert isinstance(uri, SipURI)
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sip", "alice", "secret", "atlanta.example.com", 5061)
    assert uri.params == (("transport", "tcp"), ("lr", None))
    assert uri.headers == (("Subject", "hi"), ("X", "1"))
    assert uri.transport == "tcp"
    assert uri.param("LR") is None and uri.has_param("lr") and not uri.has_param("maddr")
    assert uri.param("missing", "default") == "default"


def test_the_text_is_kept_as_written() -> None:
    text = "SIP:Alice@Atlanta.Example.COM;Transport=TCP"
    uri = parse_uri(text)
    assert str(uri) == text
    assert isinstance(uri, SipURI) and uri.scheme == "sip" and uri.host == "Atlanta.Example.COM"


def test_sips_and_host_only() -> None:
    uri = parse_uri("sips:example.com")
    assert isinstance(uri, SipURI) and uri.secure and uri.user is None and uri.port is None


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("sip:alice@[2001:db8::10]", "2001:db8::10", None),
        ("sip:alice@[2001:db8::10]:5070;transport=udp", "2001:db8::10", 5070),
        ("sip:[::1]", "::1", None),
        ("sip:[::ffff:192.0.2.1]:5060", "::ffff:192.0.2.1", 5060),
        ("sip:192.0.2.1:0", "192.0.2.1", 0),
        ("sip:host.example.com.", "host.example.com.", None),
    ],
)
def test_hosts_and_ipv6_references(text: str, host: str, port: int | None) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, SipURI) and (uri.host, uri.port) == (host, port)
    assert parse_uri(str(uri)) == uri


def test_ipv6_hosts_get_their_brackets_back() -> None:
    uri = SipURI("2001:db8::1", "bob", port=5060)
    assert str(uri) == "sip:bob@[2001:db8::1]:5060"
    assert SipURI("[2001:db8::1]") == SipURI("2001:db8::1")


def test_user_part_may_hold_semicolons_and_question_marks() -> None:
    uri = parse_uri("sip:user;par=u%40example.net@example.com;transport=udp")
    assert isinstance(uri, SipURI)
    assert uri.user == "user;par=u%40example.net" and uri.params == (("transport", "udp"),)


def test_telephone_subscriber_user() -> None:
    uri = parse_uri("sip:+31-20-123-4567@gw.example.net;user=phone")
    assert isinstance(uri, SipURI) and uri.user == "+31-20-123-4567"
    assert uri.param("user") == "phone"


@pytest.mark.parametrize(
    "text",
    [
        "", "sip", "sip:", ":foo", "sip:@example.com", "sip:user@", "sip:host:99999",
        "sip:host:abc", "sip:host:", "sip:ho st", "sip:[::1", "sip:[zz::1]", "sip:[::1]x",
        "sip:host;=x", "sip:host;a=", "sip:host;a b", "sip:host?x", "sip:host?=v",
        "sip:%zz@host", "sip:a%4@host", "sip:host;x=%g0", "sip:a@b@c", "sip:us er@host",
        "sip:.host", "sip:a..b", "sip:host/path", "<sip:host>", "sip:host>", "tel:", "tel:xyz",
        "tel:+1 234", "1http://x", "http:", "http://a b", "mailto:a%zz",
    ],
)
def test_malformed_uris(text: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_uri(text)
    assert caught.value.status == 400


def test_tel_uris() -> None:
    uri = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert isinstance(uri, TelURI)
    assert uri.number == "+1-201-555-0123" and uri.is_global
    assert uri.param("phone-context") == "example.com"
    local = parse_uri("TEL:7042;phone-context=example.com")
    assert isinstance(local, TelURI) and not local.is_global and local.scheme == "tel"
    assert TelURI("+31201234567") == parse_uri("tel:+31201234567")
    assert str(TelURI("911", (("phone-context", "+1"),))) == "tel:911;phone-context=+1"
    with pytest.raises(ValueError):
        TelURI("12 34")


@pytest.mark.parametrize(
    ("text", "scheme"),
    [
        ("nobodyKnowsThisScheme:totallyopaquecontent", "nobodyknowsthisscheme"),
        ("soap.beep://192.0.2.103:3002", "soap.beep"),
        ("isbn:2983792873", "isbn"),
        ("http://www.example.com/a?b=c#d", "http"),
        ("urn:service:sos", "urn"),
    ],
)
def test_other_schemes_are_opaque_with_the_scheme_visible(text: str, scheme: str) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, AbsoluteURI) and uri.scheme == scheme
    assert parse_uri(str(uri)) == uri
    assert AbsoluteURI(scheme, uri.rest) == uri


def test_constructor_validates() -> None:
    uri = SipURI("example.com", "alice", port=5060, params=(("transport", "tcp"),),
                 headers=(("Subject", "x"),))
    assert str(uri) == "sip:alice@example.com:5060;transport=tcp?Subject=x"
    assert parse_uri(str(uri)) == uri
    for bad in (
        {"host": "exa mple.com"},
        {"host": "example.com", "user": "al ice"},
        {"host": "example.com", "port": 70000},
        {"host": "example.com", "params": (("tr ansport", "tcp"),)},
        {"host": "example.com", "scheme": "http"},
        {"host": "example.com", "password": "a:b", "user": "u"},
    ):
        with pytest.raises(ValueError):
            SipURI(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AbsoluteURI("1x", "y")


def test_replace_makes_a_validated_copy() -> None:
    uri = parse_uri("sip:alice@example.com;transport=udp")
    assert isinstance(uri, SipURI)
    moved = uri.replace(host="192.0.2.7", port=5080)
    assert str(moved) == "sip:alice@192.0.2.7:5080;transport=udp"
    assert str(uri) == "sip:alice@example.com;transport=udp"
    with pytest.raises(ValueError):
        uri.replace(port=-1)


def test_equality_is_structural_and_hashable() -> None:
    a = parse_uri("sip:alice@example.com;lr")
    b = parse_uri("SIP:alice@example.com;lr")
    assert a == b and hash(a) == hash(b)
    assert a != parse_uri("sip:alice@example.com")
    assert a != parse_uri("sips:alice@example.com;lr")
    assert a != "sip:alice@example.com;lr"
    assert len({a, b, parse_uri("tel:+1"), parse_uri("x:y")}) == 3


@pytest.mark.parametrize(
    ("a", "b"),
    [  # RFC 3261 19.1.4, equivalent pairs
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;newparam=5"),
        ("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
         "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"),
        ("sip:alice@atlanta.com?subject=project%20x&priority=urgent",
         "sip:alice@atlanta.com?priority=urgent&subject=project%20x"),
    ],
)
def test_rfc3261_equivalent(a: str, b: str) -> None:
    first, second = parse_uri(a), parse_uri(b)
    assert isinstance(first, SipURI)
    assert first.equivalent(second) and second.equivalent(first)


@pytest.mark.parametrize(
    ("a", "b"),
    [  # RFC 3261 19.1.4, not equivalent
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
        ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
    ],
)
def test_rfc3261_not_equivalent(a: str, b: str) -> None:
    first = parse_uri(a)
    assert isinstance(first, SipURI)
    assert not first.equivalent(parse_uri(b))
    assert not first.equivalent("sip:alice@atlanta.com")


def test_unescape() -> None:
    assert unescape("%75se%72") == "user"
    assert unescape("plain") == "plain"
    assert unescape("null-%00-null") == "null-\x00-null"


# --- name-addr ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "display", "uri", "params"),
    [
        ('"Alice" <sip:alice@example.com>;tag=1', "Alice", "sip:alice@example.com",
         (("tag", "1"),)),
        ("<sip:alice@example.com>", None, "sip:alice@example.com", ()),
        ("sip:alice@example.com;tag=88", None, "sip:alice@example.com", (("tag", "88"),)),
        ("Alice Smith <sip:a@example.com>", "Alice Smith", "sip:a@example.com", ()),
        ("Alice    Smith\t<sip:a@example.com>", "Alice Smith", "sip:a@example.com", ()),
        ("caller<sip:caller@example.com>;tag=323", "caller", "sip:caller@example.com",
         (("tag", "323"),)),
        ('"" <sip:a@example.com>', "", "sip:a@example.com", ()),
        ('"a \\"b\\" \\\\ c"<sip:a@x>', 'a "b" \\ c', "sip:a@x", ()),
        ('"Bell, Alexander" <sip:a.g.bell@example.com>;tag=43', "Bell, Alexander",
         "sip:a.g.bell@example.com", (("tag", "43"),)),
        ("<sip:a@x;lr> ; expires = 60 ; q=0.5", None, "sip:a@x;lr",
         (("expires", "60"), ("q", "0.5"))),
        ('<sip:a@x>;p="quoted;value"', None, "sip:a@x", (("p", '"quoted;value"'),)),
        ("<tel:+31201234567>", None, "tel:+31201234567", ()),
        ("isbn:2983792873", None, "isbn:2983792873", ()),
        ("<sip:[2001:db8::1]:5060>;received=[2001:db8::2]", None, "sip:[2001:db8::1]:5060",
         (("received", "[2001:db8::2]"),)),
    ],
)
def test_name_addr_forms(text: str, display: str | None, uri: str, params: tuple) -> None:
    address = parse_name_addr(text)
    assert address.display_name == display
    assert address.uri_text == uri
    assert str(address.uri) == uri
    assert address.params == params
    assert parse_name_addr(str(address)) == address


def test_addr_spec_parameters_belong_to_the_header() -> None:
    # RFC 4475 cparam01 vs cparam02
    plain = parse_name_addr("sip:+19725552222@gw1.example.net;unknownparam")
    assert plain.params == (("unknownparam", None),)
    assert plain.uri.params == ()  # type: ignore[union-attr]
    bracketed = parse_name_addr("<sip:+19725552222@gw1.example.net;unknownparam>")
    assert bracketed.params == ()
    assert bracketed.uri.params == (("unknownparam", None),)  # type: ignore[union-attr]


def test_tag_and_params() -> None:
    address = parse_name_addr("<sip:a@x>;TAG=abc;foo")
    assert address.tag == "abc"
    assert address.param("FOO") is None and address.has_param("foo")
    assert parse_name_addr("<sip:a@x>").tag is None
    tagged = parse_name_addr('"A" <sip:a@x>;foo=1').with_param("tag", "t9")
    assert str(tagged) == '"A" <sip:a@x>;foo=1;tag=t9'
    assert tagged.with_param("TAG", "t10").tag == "t10"


@pytest.mark.parametrize(
    "text",
    [
        "",
        '"Mr. J. User <sip:j.user@example.com>',  # quotbal
        "< sip:t.watson@example.org >",  # badaspec
        "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",  # baddn
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E",  # regbadct
        "sip:a@b, sip:c@d",
        "sip:a b@c",
        "<sip:a@x",
        "<sip:a@x>;;",
        "<sip:a@x>;tag=",
        "<sip:a@x>;t@g=1",
        "<sip:a@x> junk",
        '"A" junk <sip:a@x>',
        '"A" sip:a@x',
        "nocolon",
        "<sip:a@x>;p=\"unterminated",
        "<<sip:a@x>",
    ],
)
def test_malformed_addresses(text: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_name_addr(text)
    assert caught.value.status == 400


def test_route_style_addresses_need_brackets() -> None:
    assert parse_name_addr("<sip:p@x;lr>", name_addr_only=True).uri_text == "sip:p@x;lr"
    with pytest.raises(ParseError):
        parse_name_addr("sip:p@x;lr", name_addr_only=True)


def test_the_uri_inside_is_checked_when_read() -> None:
    address = parse_name_addr("<sip:a@bad..host>")
    with pytest.raises(ParseError):
        address.uri  # noqa: B018
    lazy = parse_name_addr("<sip:@x>")
    with pytest.raises(ParseError):
        lazy.uri  # noqa: B018


def test_name_addr_constructor() -> None:
    address = NameAddr("sip:alice@example.com", "Alice \"A\" Smith", (("tag", "x1"),))
    assert str(address) == '"Alice \\"A\\" Smith" <sip:alice@example.com>;tag=x1'
    assert parse_name_addr(str(address)) == address
    assert NameAddr(parse_uri("tel:+1")).uri_text == "tel:+1"
    with pytest.raises(ValueError):
        NameAddr("not a uri")
    with pytest.raises(ValueError):
        NameAddr("sip:a@x", "line\r\nbreak")
    with pytest.raises(ValueError):
        NameAddr("sip:a@x", params=(("bad name", "v"),))
    with pytest.raises(TypeError):
        NameAddr(42)  # type: ignore[arg-type]
    assert hash(address) == hash(parse_name_addr(str(address)))


# --- grammar helpers ------------------------------------------------------------------------


def test_is_token() -> None:
    assert is_token("INVITE") and is_token("!interesting-Method0123456789_*+`.%indeed'~")
    assert not is_token("") and not is_token("a b") and not is_token("a/b")


@pytest.mark.parametrize(
    "text", ["", "plain", 'with "quotes"', "back\\slash", "tab\there", "nul\x00 bel\x07 del\x7f",
             "\u00e9t\u00e9 \u5927"],
)
def test_quote_string_round_trip(text: str) -> None:
    assert unquote_string(quote_string(text)) == text


def test_quoting_refuses_line_breaks_and_unquoting_checks() -> None:
    with pytest.raises(ValueError):
        quote_string("a\nb")
    with pytest.raises(ParseError):
        unquote_string('"open')
    with pytest.raises(ParseError):
        unquote_string('"a"b')
    assert unquote_string("bare") == "bare"


def test_split_list() -> None:
    assert split_list("a, b ,c") == ["a", "b", "c"]
    assert split_list('"Bell, A." <sip:a@x>, <sip:b@y;x=1,2>') == [
        '"Bell, A." <sip:a@x>', "<sip:b@y;x=1,2>"]
    assert split_list(";;,;,,") == [";;", ";", "", ""]
    assert split_list("single") == ["single"]
    assert split_list('"a\\", b", c') == ['"a\\", b"', "c"]


def test_parse_params() -> None:
    assert parse_params("") == ()
    assert parse_params(";a;b=1") == (("a", None), ("b", "1"))
    assert parse_params(" ; a = 1 ;b") == (("a", "1"), ("b", None))
    assert parse_params(';x="a;b\\"c"') == (("x", '"a;b\\"c"'),)
    assert parse_params(";maddr=[2001:db8::1]") == (("maddr", "[2001:db8::1]"),)
    for bad in ("x;a", ";", ";a=", ";=b", ";a=b c", ';a="open', ";a b"):
        with pytest.raises(ParseError):
            parse_params(bad)


def test_parse_hostport() -> None:
    assert parse_hostport("example.com") == ("example.com", None)
    assert parse_hostport("192.0.2.1:5060") == ("192.0.2.1", 5060)
    assert parse_hostport("[2001:db8::1]:5061") == ("2001:db8::1", 5061)
    for bad in ("", ":5060", "[2001:db8::1]5061", "host:65536", "a b", "[fe80::1%25eth0]"):
        with pytest.raises(ParseError):
            parse_hostport(bad)


def test_parse_error_carries_status_and_kind() -> None:
    error = ParseError(505, "Version Not Supported", is_request=True)
    assert str(error) == "505 Version Not Supported"
    assert not error.can_respond  # no headers to send it along
    assert ParseError().status == 400
