"""Property tests: what we build or parse serialises into bytes that parse back equal,
and no input makes the parser raise anything but ParseError."""

from __future__ import annotations

import contextlib
import string
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mediacore.sip.headers import Via, header_key, parse_via
from mediacore.sip.message import (
    Headers,
    Message,
    ParseError,
    Request,
    Response,
    message_length,
    parse,
    serialize,
)
from mediacore.sip.uri import (
    AbsoluteURI,
    NameAddr,
    SipURI,
    TelURI,
    parse_name_addr,
    parse_uri,
    quote_string,
)

TORTURE = Path(__file__).resolve().parents[2] / ".." / "shared" / "sip-torture" / "rfc4475"

ALNUM = string.ascii_letters + string.digits
TOKEN = ALNUM + "-.!%*_+`'~"
CHECKED = {"via", "cseq", "call-id", "from", "to", "contact", "route", "record-route",
           "content-length", "max-forwards", "content-type"}
METHODS = ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "UPDATE", "PRACK"]

tokens = st.text(TOKEN, min_size=1, max_size=10)
methods = st.one_of(st.sampled_from(METHODS), tokens)
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
               max_size=24)
escapes = st.sampled_from(["%20", "%41", "%3a", "%40", "%00", "%FF", "%25"])


def escaped(chars: str, max_parts: int = 3) -> st.SearchStrategy[str]:
    return st.lists(st.one_of(st.text(chars, min_size=1, max_size=6), escapes),
                    min_size=1, max_size=max_parts).map("".join)


hostnames = st.lists(st.text(ALNUM + "-_", min_size=1, max_size=8), min_size=1,
                     max_size=4).map(".".join)
hosts = st.one_of(hostnames, st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))
users = escaped(ALNUM + "-_.!~*'()&=+$,;?/")
passwords = escaped(ALNUM + "-_.!~*'()&=+$,")
uri_params = st.lists(
    st.tuples(escaped(ALNUM + "-_.!~*'()[]/:&+$", 2),
              st.one_of(st.none(), escaped(ALNUM + "-_.!~*'()[]/:&+$", 2))),
    max_size=3)
uri_headers = st.lists(st.tuples(escaped(ALNUM + "-_.!~*'()[]/?:+$", 2),
                                 st.one_of(st.just(""), escaped(ALNUM + "-_.!~*'()[]/?:+$", 2))),
                       max_size=2)


@st.composite
def sip_uris(draw: st.DrawFn, *, with_headers: bool = True) -> SipURI:
    user = draw(st.one_of(st.none(), users))
    return SipURI(
        draw(hosts),
        user,
        port=draw(st.one_of(st.none(), st.integers(0, 65535))),
        params=tuple(draw(uri_params)),
        headers=tuple(draw(uri_headers)) if with_headers else (),
        password=draw(st.one_of(st.none(), passwords)) if user is not None else None,
        scheme=draw(st.sampled_from(["sip", "sips", "SIP"])),
    )


tel_uris = st.builds(
    TelURI,
    st.from_regex(r"\+?[0-9][0-9\-.()]{0,12}", fullmatch=True),
    st.lists(st.tuples(st.text(ALNUM + "-", min_size=1, max_size=8),
                       st.one_of(st.none(), st.text(ALNUM + "-.+", min_size=1, max_size=8))),
             max_size=2).map(tuple),
)
absolute_uris = st.builds(
    AbsoluteURI,
    st.from_regex(r"[A-Za-z][A-Za-z0-9+\-.]{0,8}", fullmatch=True).filter(
        lambda s: s.lower() not in ("sip", "sips", "tel")),
    st.text(ALNUM + "-_.!~*'();/?:@&=+$,[]#", min_size=1, max_size=20),
)
request_uris = st.one_of(sip_uris(with_headers=False), tel_uris, absolute_uris)
any_uris = st.one_of(sip_uris(), tel_uris, absolute_uris)

param_values = st.one_of(
    st.none(),
    st.text(TOKEN + ":[]", min_size=1, max_size=10),
    text.map(quote_string),
)
header_params = st.lists(st.tuples(tokens, param_values), max_size=3)
name_addrs = st.builds(
    NameAddr, any_uris, st.one_of(st.none(), text),
    header_params.map(tuple),
)
vias = st.builds(
    Via,
    st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS", "x-custom"]),
    hosts,
    st.one_of(st.none(), st.integers(0, 65535)),
    st.lists(st.tuples(tokens, st.one_of(st.none(), st.text(TOKEN, min_size=1, max_size=12))),
             max_size=3).map(tuple),
)


def spellings(*names: str) -> st.SearchStrategy[str]:
    """A header name as someone might write it: any case, long or compact."""
    return st.sampled_from(names).flatmap(
        lambda name: st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
            lambda upper: "".join(c.upper() if u else c.lower() for c, u in zip(name, upper,
                                                                                strict=True))))


other_names = tokens.filter(lambda name: header_key(name) not in CHECKED)
other_values = st.one_of(
    text,
    text.map(quote_string),
    st.lists(text.map(quote_string), min_size=1, max_size=3).map(", ".join),
)
other_headers = st.tuples(other_names, other_values)
common_headers = st.one_of(
    st.tuples(spellings("Via", "v"), st.lists(vias, min_size=1, max_size=2).map(
        lambda vs: ", ".join(map(str, vs)))),
    st.tuples(spellings("From", "f", "To", "t"), name_addrs.map(str)),
    st.tuples(spellings("Contact", "m", "Route", "Record-Route"),
              st.lists(name_addrs, min_size=1, max_size=2).map(lambda a: ", ".join(map(str, a)))),
    st.tuples(spellings("Call-ID", "i"), st.text(ALNUM + "-.!%*_+`'~()<>:\\\"/[]?{}@",
                                                 min_size=1, max_size=20)),
    st.tuples(spellings("Max-Forwards"), st.integers(0, 255).map(str)),
    st.tuples(spellings("Content-Type", "c"), st.sampled_from(
        ["application/sdp", "text/plain;charset=utf-8", 'multipart/mixed;boundary="x y"'])),
    st.tuples(spellings("Supported", "k", "Require", "Allow"),
              st.lists(tokens, max_size=3).map(", ".join)),
    st.tuples(spellings("Content-Length", "l"), st.integers(0, 99).map(str)),
)
header_lists = st.lists(st.one_of(other_headers, common_headers), max_size=12)
bodies = st.one_of(st.just(b""), st.binary(max_size=64))


def round_trips(message: Message) -> None:
    # Every field of a message we hold can be copied into new headers (a B2BUA does).
    assert Headers(message.headers.items()) == message.headers
    wire = serialize(message)
    again = parse(wire)
    assert again == message
    assert serialize(again) == wire
    assert message_length(wire) == len(wire)
    assert parse(b"\r\n\r\n" + wire) == message


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(methods)
    fields = draw(header_lists)
    fields.insert(draw(st.integers(0, len(fields))),
                  (draw(spellings("CSeq")), f"{draw(st.integers(0, 2**32 - 1))} {method}"))
    return Request(method, draw(request_uris), fields, draw(bodies))


@st.composite
def responses(draw: st.DrawFn) -> Response:
    return Response(draw(st.integers(100, 699)), draw(st.one_of(st.none(), text)),
                    draw(header_lists), draw(bodies))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_requests_round_trip(request: Request) -> None:
    round_trips(request)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(responses())
def test_responses_round_trip(response: Response) -> None:
    round_trips(response)


@settings(max_examples=300, deadline=None)
@given(any_uris)
def test_uris_round_trip(uri: SipURI | TelURI | AbsoluteURI) -> None:
    again = parse_uri(str(uri))
    assert again == uri and str(again) == str(uri) and hash(again) == hash(uri)


@settings(max_examples=300, deadline=None)
@given(name_addrs)
def test_name_addrs_round_trip(address: NameAddr) -> None:
    again = parse_name_addr(str(address))
    assert again == address and str(again) == str(address)


@settings(max_examples=200, deadline=None)
@given(vias)
def test_vias_round_trip(via: Via) -> None:
    assert parse_via(str(via)) == via


@settings(max_examples=200, deadline=None)
@given(sip_uris())
def test_equivalence_is_reflexive(uri: SipURI) -> None:
    assert uri.equivalent(parse_uri(str(uri)))


# --- messages as people write them: odd spacing, folding, compact names -----------------------

separators = st.sampled_from([":", ": ", " : ", ":\t", "  :   "])


@st.composite
def hand_written(draw: st.DrawFn) -> bytes:
    """A request head written with every liberty RFC 3261 allows."""
    method = draw(st.sampled_from(["INVITE", "OPTIONS", "BYE"]))
    lines = [f"{method} {draw(request_uris)} SIP/2.0"]
    fields = [(draw(spellings("CSeq")), f"{draw(st.integers(0, 999))} {method}")]
    fields += draw(header_lists)
    for name, value in fields:
        if header_key(name) == "content-length":
            continue
        line = name + draw(separators) + value
        if draw(st.booleans()) and " " in value:
            cut = value.index(" ")  # fold at a space: the same value, on two lines
            line = name + draw(separators) + value[:cut] + "\r\n" + draw(
                st.sampled_from([" ", "\t", "   "])) + value[cut + 1 :]
        lines.append(line)
    body = draw(bodies)
    if draw(st.booleans()):
        lines.append(f"l: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hand_written())
def test_hand_written_messages_parse_and_round_trip(data: bytes) -> None:
    message = parse(data)
    round_trips(message)


# --- hostile input ----------------------------------------------------------------------------

SAMPLES = sorted(TORTURE.glob("*.dat"))
NASTY = st.sampled_from([b" ", b"\t", b"\r\n", b"\r", b"\n", b":", b";", b",", b"<", b">", b'"',
                         b"\\", b"@", b"%", b"=", b"/", b"[", b"]", b"\x00", b"\xff", b"\r\n ",
                         b"\r\n\r\n", b"SIP/2.0", b"sip:", b"999999999999", b"-1", b"v:", b"l:"])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    assert SAMPLES, f"RFC 4475 messages missing at {TORTURE}"
    data = bytearray(draw(st.sampled_from(SAMPLES)).read_bytes())
    for _ in range(draw(st.integers(1, 6))):
        where = draw(st.integers(0, len(data)))
        action = draw(st.integers(0, 2))
        if action == 0:
            data[where:where] = draw(NASTY)
        elif action == 1:
            del data[where : where + draw(st.integers(1, 20))]
        else:
            data[where : where + 1] = draw(st.binary(min_size=1, max_size=3))
    return bytes(data)


def survives(data: bytes) -> None:
    """Either a clean refusal, or a message that round-trips."""
    try:
        message = parse(data)
    except ParseError as error:
        assert error.__cause__ is None, f"parser accident: {error.__cause__!r}"
        assert 400 <= error.status <= 599
        assert "\r" not in error.reason and "\n" not in error.reason
        return
    assume(True)
    round_trips(message)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_torture_messages_never_crash_the_parser(data: bytes) -> None:
    survives(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_parser(data: bytes) -> None:
    survives(data)
    with contextlib.suppress(ParseError):
        message_length(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(NASTY, st.sampled_from([b"INVITE sip:a@b SIP/2.0", b"Via", b"From",
                                                    b"To", b"Contact", b"CSeq", b"1 INVITE",
                                                    b"<sip:x@y>", b"tag=1", b"Call-ID"])),
                max_size=40).map(b"".join))
def test_sip_shaped_noise_never_crashes_the_parser(data: bytes) -> None:
    survives(data)
