"""Caller-ID privacy (mediacore.calls.privacy): promise 2 of DESIGN.md.

The caller's number is shown to the target unless the caller withheld it;
then the target sees "anonymous" and the number is never put anywhere.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mediacore.calls.privacy import (
    MAX_PRESENTED,
    CallerIdentity,
    diversion_header,
    history_info_header,
    identify_caller,
    is_anonymous,
    outbound_identity,
    redact,
)
from mediacore.calls.routing import NumberingPlan, number_variants
from mediacore.sip.message import Headers, Request, parse, serialize
from mediacore.sip.uri import parse_name_addr

HOST = "192.0.2.10"
ANON = '"Anonymous" <sip:anonymous@anonymous.invalid>;tag=9802748'


def invite(from_: str, *extra: tuple[str, str]) -> Request:
    return Request("INVITE", "sip:+31900123456@mediacore.example.net;user=phone", [
        ("Via", "SIP/2.0/UDP trunk.example.net;branch=z9hG4bK-123"),
        ("From", from_),
        ("To", "<sip:+31900123456@mediacore.example.net>"),
        ("Call-ID", "245780247857024504"),
        ("CSeq", "1 INVITE"),
        *extra,
    ])


PAI = "P-Asserted-Identity"
RPID = "Remote-Party-ID"
PRIV = "Privacy"

# (From, other headers, number shown or None, withheld)
CASES = [
    # plainly shown
    ('"Alice" <sip:+31201234567@trunk.example.net>;tag=1', (), "+31201234567", False),
    ("<sip:0201234567@trunk.example.net;user=phone>;tag=1", (), "+31201234567", False),
    ("<sip:%2B31201234567@trunk.example.net>;tag=1", (), "+31201234567", False),
    ("<tel:+31-20-1234567>;tag=1", (), "+31201234567", False),
    ("sip:0031201234567@trunk.example.net;tag=1", (), "+31201234567", False),
    # the trunk's P-Asserted-Identity wins over the caller's own From
    ("<sip:+31201234567@trunk.example.net>;tag=1",
     ((PAI, "<sip:+31612345678@trunk.example.net;user=phone>"),), "+31612345678", False),
    ("<sip:+31201234567@trunk.example.net>;tag=1",
     ((PAI, '"Bob" <sip:bob@example.com>, <tel:+31612345678>'),), "+31612345678", False),
    ("<sip:+31201234567@trunk.example.net>;tag=1",
     ((PAI, "<sip:bob@example.com>"),), "+31201234567", False),  # PAI without a number
    ("<sip:+31201234567@trunk.example.net>;tag=1",
     ((PAI, "<<garbage"),), "+31201234567", False),  # unreadable PAI: as if absent
    # Privacy values that do not withhold the number
    ("<sip:+31201234567@t>;tag=1", ((PRIV, "none"),), "+31201234567", False),
    ("<sip:+31201234567@t>;tag=1", ((PRIV, "session"),), "+31201234567", False),
    ("<sip:+31201234567@t>;tag=1", ((PRIV, "critical"),), "+31201234567", False),
    ("<sip:+31201234567@t>;tag=1", ((PRIV, "history"),), "+31201234567", False),
    # Privacy values that do (RFC 3323 4.2, RFC 3325 9.3), alone or listed with others
    ("<sip:+31201234567@t>;tag=1", ((PRIV, "id"),), None, True),
    ("<sip:+31201234567@t>;tag=1", ((PRIV, "header"),), None, True),
    ("<sip:+31201234567@t>;tag=1", ((PRIV, "user"),), None, True),
    ("<sip:+31201234567@t>;tag=1", ((PRIV, "id;critical"),), None, True),
    ("<sip:+31201234567@t>;tag=1", ((PRIV, "header; session; user"),), None, True),
    ("<sip:+31201234567@t>;tag=1", ((PRIV, "ID"),), None, True),
    ("<sip:+31201234567@t>;tag=1", ((PRIV, "session"), (PRIV, "id")), None, True),
    ("<sip:+31201234567@t>;tag=1", ((PRIV, "none;id"),), None, True),  # contradictory
    ("<sip:+31201234567@t>;tag=1", ((PRIV, "id, header"),), None, True),  # unreadable
    ("<sip:+31201234567@t>;tag=1",
     ((PAI, "<sip:+31612345678@t;user=phone>"), (PRIV, "id")), None, True),
    # RFC 3325 10.1: anonymous From, asserted identity, Privacy: id
    (ANON, ((PAI, '"Cullen Jennings" <sip:fluffy@cisco.com>'), (PAI, "tel:+14085264000"),
            (PRIV, "id")), None, True),
    # RFC 3325 10.2: the identity withheld, nothing asserted
    (ANON, ((PRIV, "id"),), None, True),
    # an anonymous From withholds, whatever Privacy says (RFC 5079)
    (ANON, ((PAI, "<tel:+14085264000>"),), None, True),
    (ANON, ((PAI, "<tel:+14085264000>"), (PRIV, "none")), None, True),
    ('"anonymous" <sip:+31201234567@trunk.example.net>;tag=1', (), None, True),
    ('"ANONYMOUS" <sip:+31201234567@trunk.example.net>;tag=1', (), None, True),
    ("Anonymous <sip:+31201234567@trunk.example.net>;tag=1", (), None, True),
    ("<sip:anonymous@trunk.example.net>;tag=1", (), None, True),
    ("<sip:Anonymous@trunk.example.net;user=phone>;tag=1", (), None, True),
    ("<sip:+31201234567@anonymous.invalid>;tag=1", (), None, True),
    ("<sip:+31201234567@ANONYMOUS.INVALID>;tag=1", (), None, True),
    ('"Restricted" <sip:restricted@trunk.example.net>;tag=1', (), None, True),
    ('"Withheld" <sip:+31201234567@t>;tag=1', (), None, True),
    # an anonymous asserted identity withholds too
    ("<sip:+31201234567@t>;tag=1", ((PAI, '"Anonymous" <sip:+31612345678@t>'),), None, True),
    ("<sip:+31201234567@t>;tag=1", ((PAI, "<sip:anonymous@anonymous.invalid>"),), None, True),
    # Remote-Party-ID, as carriers' gateways still send it
    ("<sip:+31201234567@t>;tag=1",
     ((RPID, "<sip:+31612345678@t;user=phone>;party=calling;screen=yes;privacy=off"),),
     "+31612345678", False),
    ("<sip:+31201234567@t>;tag=1",
     ((RPID, "<sip:+31612345678@t;user=phone>;party=calling;screen=yes;privacy=full"),),
     None, True),
    ("<sip:+31201234567@t>;tag=1",
     ((RPID, "<sip:+31612345678@t>;party=calling;privacy=uri"),), None, True),
    ("<sip:+31201234567@t>;tag=1",
     ((RPID, "<sip:+31612345678@t>;party=calling;privacy=name"),), None, True),
    ("<sip:+31201234567@t>;tag=1",
     ((RPID, "<sip:+31999999999@t>;party=called;privacy=full"),), "+31201234567", False),
    ("<sip:+31201234567@t>;tag=1",
     ((PAI, "<tel:+31612345678>"), (RPID, "<sip:+31699999999@t>;party=calling")),
     "+31612345678", False),
    # no number at all, nothing withheld
    ('"Alice" <sip:alice@example.com>;tag=1', (), None, False),
    ("<sip:0900abc@example.com;user=phone>;tag=1", (), None, False),
    # ... or withheld all the same
    ('"Alice" <sip:alice@example.com>;tag=1', ((PRIV, "user"),), None, True),
]


@pytest.mark.parametrize(("from_", "extra", "number", "withheld"), CASES)
def test_identify_caller(from_: str, extra: tuple[tuple[str, str], ...], number: str | None,
                         withheld: bool) -> None:
    identity = identify_caller(invite(from_, *extra))
    assert (identity.number, identity.withheld) == (number, withheld)
    if withheld:
        assert identity.display_name is None
        assert identity.record_value == "anonymous"
    else:
        # a number when there is one, else the identity presented (see below)
        assert (identity.presented is None) == (number is not None)
        assert identity.record_value == (number or identity.presented)


@pytest.mark.parametrize(("from_", "extra", "recorded"), [
    ("<sip:carrier@192.0.2.1:5060;transport=udp>;tag=1", (), "sip:carrier@192.0.2.1"),
    ('"Carrier" <sip:carrier@Trunk.Example.NET>;tag=1', (), "sip:carrier@trunk.example.net"),
    ("<sips:operator@[2001:db8::1]:5061>;tag=1", (), "sips:operator@[2001:db8::1]"),
    ("<sip:alice:secret@example.com>;tag=1", (), "sip:alice@example.com"),  # no password
    ("<sip:trunk.example.net>;tag=1", (), "sip:trunk.example.net"),
    ("<sip:caf%C3%A9@example.com>;tag=1", (), "sip:caf%C3%A9@example.com"),  # as written
    ("<sip:0900abc@example.com;user=phone>;tag=1", (), "sip:0900abc@example.com"),
    ("<urn:service:sos>;tag=1", (), "urn:service:sos"),
    # the network's word first, as for the number
    ("<sip:alice@example.com>;tag=1", ((PAI, "<sip:gateway7@carrier.example>"),),
     "sip:gateway7@carrier.example"),
    (f"<sip:{'x' * 300}@example.com>;tag=1", (), f"sip:{'x' * 124}"),
])
def test_a_caller_without_a_number_is_recorded_as_presented(
        from_: str, extra: tuple[tuple[str, str], ...], recorded: str) -> None:
    identity = identify_caller(invite(from_, *extra))
    assert identity.number is None and not identity.withheld
    assert identity.presented == recorded == identity.record_value
    assert len(identity.record_value) <= MAX_PRESENTED
    # what the target is shown does not change: a number or nothing
    assert str(outbound_identity(identity, HOST).from_) == (
        '"Unavailable" <sip:unavailable@unknown.invalid>')


def test_a_withheld_caller_without_a_number_is_still_anonymous() -> None:
    identity = identify_caller(invite("<sip:carrier@192.0.2.1>;tag=1", (PRIV, "id")))
    assert identity.withheld and identity.presented is None
    assert identity.record_value == "anonymous"
    with pytest.raises(ValueError):
        CallerIdentity(None, True, None, "sip:carrier@192.0.2.1")
    with pytest.raises(ValueError):
        CallerIdentity("+31201234567", False, None, "sip:carrier@192.0.2.1")
    shown = CallerIdentity(None, False, None, "sip:carrier@192.0.2.1")
    assert pickle.loads(pickle.dumps(shown)) == shown


def test_display_name_comes_with_the_number() -> None:
    identity = identify_caller(invite('"Alice" <sip:+31201234567@t>;tag=1'))
    assert identity.display_name == "Alice"
    identity = identify_caller(invite('"Alice" <sip:+31201234567@t>;tag=1',
                                      (PAI, '"Alice B." <tel:+31201234567>')))
    assert identity.display_name == "Alice B."
    identity = identify_caller(invite('"Alice" <sip:+31201234567@t>;tag=1',
                                      (PAI, "<tel:+31201234567>")))
    assert identity.display_name == "Alice"


def test_the_numbering_plan_applies() -> None:
    plan = NumberingPlan(country_code="32")
    identity = identify_caller(invite("<sip:021234567@t;user=phone>;tag=1"), plan)
    assert identity.number == "+3221234567"


def test_received_messages_are_read_as_well() -> None:
    # The RFC 3325 10.1 INVITE as it arrives from the wire.
    raw = (
        b"INVITE sip:+14085551212@gw.pstn.net SIP/2.0\r\n"
        b"Via: SIP/2.0/TCP useragent.cisco.com;branch=z9hG4bK-123\r\n"
        b"To: <sip:+14085551212@proxy.pstn.net>\r\n"
        b'From: "Anonymous" <sip:anonymous@anonymous.invalid>;tag=9802748\r\n'
        b"Call-ID: 245780247857024504\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"Max-Forwards: 69\r\n"
        b'P-Asserted-Identity: "Cullen Jennings" <sip:fluffy@cisco.com>\r\n'
        b"P-Asserted-Identity: tel:+14085264000\r\n"
        b"Privacy: id\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    request = parse(raw)
    assert isinstance(request, Request)
    identity = identify_caller(request)
    assert identity == CallerIdentity(None, True, None)
    assert redact("INVITE from tel:+14085264000", identity) == "INVITE from tel:anonymous"


@pytest.mark.parametrize(("address", "anonymous"), [
    ('"Anonymous" <sip:anonymous@anonymous.invalid>', True),
    ("<sip:anonymous@example.com>", True),
    ("<sip:%61nonymous@example.com>", True),
    ("<sip:alice@anonymous.invalid.>", True),
    ('"Private" <sip:+31201234567@example.com>', True),
    ('"Anonymous Coward Ltd" <sip:+31201234567@example.com>', False),
    ("<sip:+31201234567@example.com>", False),
    ("<tel:+31201234567>", False),
    ("<urn:anonymous@x>", True),
])
def test_is_anonymous(address: str, anonymous: bool) -> None:
    assert is_anonymous(parse_name_addr(address)) is anonymous


def test_an_address_that_cannot_be_read_is_anonymous() -> None:
    # Accepted by the lazy name-addr parser, refused when its URI is read: fail closed.
    assert is_anonymous(parse_name_addr("<sip:@@>")) is True


# --- what the target sees -----------------------------------------------------------------


def test_a_shown_number_is_in_from_and_pai() -> None:
    outbound = outbound_identity(CallerIdentity("+31201234567", False, "Alice"), HOST)
    assert outbound.headers(from_tag="abc") == [
        ("From", '"+31201234567" <sip:+31201234567@192.0.2.10>;tag=abc'),
        ("P-Asserted-Identity", "<sip:+31201234567@192.0.2.10;user=phone>"),
    ]


def test_a_withheld_number_is_anonymous_with_privacy_id_and_no_pai() -> None:
    identity = identify_caller(invite(ANON, (PAI, "<tel:+31201234567>"), (PRIV, "id")))
    outbound = outbound_identity(identity, HOST)
    assert outbound.p_asserted_identity is None
    assert outbound.headers() == [
        ("From", '"Anonymous" <sip:anonymous@anonymous.invalid>'),
        ("Privacy", "id"),
    ]


def test_no_number_shows_unavailable() -> None:
    outbound = outbound_identity(CallerIdentity(None, False, None), HOST)
    assert outbound.headers() == [("From", '"Unavailable" <sip:unavailable@unknown.invalid>')]


def test_outbound_headers_are_valid_sip() -> None:
    for identity in (CallerIdentity("+31201234567", False, None), CallerIdentity(None, True),
                     CallerIdentity(None, False)):
        for host in (HOST, "mediacore.example.net", "2001:db8::1"):
            headers = Headers(outbound_identity(identity, host).headers(from_tag="x1"))
            request = invite(headers.get("From"))
            for name, value in headers:
                request.headers.set(name, value)
            again = parse(serialize(request))
            assert again.from_.tag == "x1"
            assert again.privacy == (["id"] if identity.withheld else [])
            assert len(again.p_asserted_identity) == (1 if identity.number else 0)


def test_ipv6_host_is_bracketed() -> None:
    outbound = outbound_identity(CallerIdentity("+31201234567", False), "2001:db8::1")
    assert str(outbound.from_) == '"+31201234567" <sip:+31201234567@[2001:db8::1]>'


def test_diversion() -> None:
    assert diversion_header("+31900123456", HOST) == (
        "<sip:+31900123456@192.0.2.10>;reason=unconditional;counter=1")
    assert diversion_header("+31900123456", HOST, reason="no-answer", counter=2) == (
        "<sip:+31900123456@192.0.2.10>;reason=no-answer;counter=2")
    with pytest.raises(ValueError):
        diversion_header("0900123456", HOST)
    request = invite("<sip:+31201234567@t>;tag=1")
    request.headers.add("Diversion", diversion_header("+31900123456", HOST))
    assert b"Diversion: <sip:+31900123456@192.0.2.10>;reason=" in serialize(request)


def test_history_info() -> None:
    value = history_info_header("+31900123456", "sip:+31201234567@127.0.0.1:5070", HOST)
    assert value == ("<sip:+31900123456@192.0.2.10>;index=1,"
                     "<sip:+31201234567@127.0.0.1:5070;cause=302>;index=1.1;mp=1")
    value = history_info_header("+31900123456", "sip:owner@pbx.example.com;cause=404", HOST,
                                reason="no-answer")
    assert value.endswith("<sip:owner@pbx.example.com;cause=408>;index=1.1;mp=1")
    with pytest.raises(ValueError):
        history_info_header("+31900123456", "tel:+31201234567", HOST)


# --- no leaks -----------------------------------------------------------------------------


def test_a_withheld_identity_carries_nothing_that_copies_out() -> None:
    identity = identify_caller(invite(ANON, (PAI, "<tel:+31201234567>"), (PRIV, "id")))
    for text in (repr(identity), str(dataclasses.asdict(identity)),
                 str(pickle.loads(pickle.dumps(identity)).__dict__),
                 str(copy.deepcopy(identity).__dict__)):
        assert "1234567" not in text
    assert redact("+31201234567", identity) == "anonymous"  # it can still redact
    with pytest.raises(ValueError):
        CallerIdentity("+31201234567", True, None)
    with pytest.raises(ValueError):
        CallerIdentity(None, True, "Alice")


@pytest.mark.parametrize("line", [
    "call from +31201234567 to +31900123456",
    "call from 0031201234567",
    "call from 0031 20 123 45 67",
    "call from 31201234567",
    "call from 0201234567",
    "call from 020-1234567",
    "call from (020) 123 4567",
    "call from +31 (0)20 123 4567",
    "call from +31-20-1234567",
    "call from %2B31201234567",
    "call from sip:+31201234567@trunk.example.net;user=phone",
    "call from 201234567",
])
def test_redact_finds_every_form(line: str) -> None:
    identity = identify_caller(invite("<sip:+31201234567@t>;tag=1", (PRIV, "id")))
    redacted = redact(line, identity)
    assert "1234567" not in redacted and "anonymous" in redacted
    assert "+31900123456" in redact("to +31900123456", identity)


def test_redact_leaves_other_numbers_and_shown_callers_alone() -> None:
    withheld = identify_caller(invite("<sip:+31201234567@t>;tag=1", (PRIV, "id")))
    line = "port 50201234567 ts 3120123456789 +31201234568 rtp 20000"
    assert redact(line, withheld) == line
    assert redact("rang at 12:00 from 0201234567.", withheld) == "rang at 12:00 from anonymous."
    shown = identify_caller(invite("<sip:+31201234567@t>;tag=1"))
    assert redact("+31201234567", shown) == "+31201234567"
    assert redact("+31201234567", CallerIdentity(None, True)) == "+31201234567"


def test_redact_covers_the_untrusted_and_unreadable_forms_too() -> None:
    identity = identify_caller(invite(
        ANON, (PRIV, "id"), ("P-Preferred-Identity", "<sip:+31612345678@t>"),
        (PAI, "<sip:12-34-56-78-90@t>")))
    assert redact("ppi 0612345678 pai 1234567890", identity) == "ppi anonymous pai anonymous"


# --- property: a withheld number never leaves in a header -------------------------------

SERVICE = "+31900123456"


def digit_runs(value: str) -> list[str]:
    """The digit strings in ``value`` once visual separators are gone."""
    return re.findall(r"[0-9]+", re.sub(r"[\-.() ]", "", value))

dutch = st.from_regex(r"\+31[1-9][0-9]{8}", fullmatch=True)
foreign = st.from_regex(r"\+(1[2-9][0-9]{9}|44[1-9][0-9]{9}|49[1-9][0-9]{6,10})",
                        fullmatch=True)


@st.composite
def written(draw: st.DrawFn, number: str) -> str:
    """``number`` the way some trunk might write it in a user part."""
    body = number[1:]
    forms = ["+" + body, "00" + body, "%2B" + body,
             "+" + body[:2] + "-" + body[2:4] + "-" + body[4:]]
    if body.startswith("31"):
        forms += ["0" + body[2:], body, "0" + body[2:4] + "-" + body[4:]]
    return draw(st.sampled_from(forms))


@st.composite
def withheld_invites(draw: st.DrawFn) -> tuple[str, Request]:
    number = draw(st.one_of(dutch, foreign))
    user = draw(written(number))
    host = draw(st.sampled_from(["trunk.example.net", "10.0.0.1"]))
    sip = f"<sip:{user}@{host};user=phone>"
    tel = f"<tel:{number}>"
    display = draw(st.sampled_from(["", '"Alice" ', '"+31 20 123" ']))
    placement = draw(st.sampled_from(["from", "pai-sip", "pai-tel", "rpid", "all"]))
    signal = draw(st.sampled_from([
        "privacy-id", "privacy-header", "privacy-user", "privacy-mixed",
        "anonymous-from", "anonymous-host", "rpid-full", "anonymous-pai"]))
    if placement in ("from", "all"):
        from_ = f"{display}{sip};tag=1"
    else:
        from_ = f'"Caller" <sip:caller@{host}>;tag=1'
    extra: list[tuple[str, str]] = []
    if placement in ("pai-sip", "all"):
        extra.append((PAI, f"{display}{sip}"))
    if placement in ("pai-tel", "all"):
        extra.append((PAI, tel))
    rpid_privacy = "full" if signal == "rpid-full" else "off"
    if placement in ("rpid", "all") or signal == "rpid-full":
        extra.append((RPID, f"{sip};party=calling;privacy={rpid_privacy}"))
    if signal.startswith("privacy-"):
        value = {"privacy-id": "id", "privacy-header": "header", "privacy-user": "user",
                 "privacy-mixed": draw(st.sampled_from(["session;id", "id;critical",
                                                        "none;header", "user;session"]))}
        extra.append((PRIV, value[signal]))
    elif signal == "anonymous-from":
        from_ = f'"Anonymous" {sip};tag=1'
    elif signal == "anonymous-host":
        from_ = f"<sip:{user}@anonymous.invalid>;tag=1"
    elif signal == "anonymous-pai":
        extra.append((PAI, f'"Anonymous" {sip}'))
    return number, invite(from_, *extra)


@given(withheld_invites(), st.sampled_from([HOST, "mediacore.example.net", "2001:db8::5"]))
def test_a_withheld_number_is_in_no_outbound_header(case: tuple[str, Request],
                                                    host: str) -> None:
    number, request = case
    service_digits = SERVICE[1:]
    variants = number_variants(number)
    assume(not any(v in service_digits or service_digits in v for v in variants))
    identity = identify_caller(request)
    assert identity.withheld and identity.number is None and identity.display_name is None
    assert identity.record_value == "anonymous"
    values = [value for _, value in outbound_identity(identity, host).headers(from_tag="abc")]
    values.append(diversion_header(SERVICE, host))
    values.append(history_info_header(SERVICE, "sip:owner@pbx.example.com", host))
    values.append(repr(identity))
    for value in values:
        for run in digit_runs(value):
            assert not any(variant in run for variant in variants), value
    # and the number as it arrived, in any header, is gone once redacted
    for _, value in request.headers:
        for run in digit_runs(redact(value, identity)):
            assert not any(variant in run for variant in variants), value


@given(st.one_of(dutch, foreign), st.sampled_from([HOST, "mediacore.example.net"]))
def test_a_shown_number_is_what_the_target_sees(number: str, host: str) -> None:
    identity = identify_caller(invite(f"<sip:{number}@trunk.example.net>;tag=1"))
    assert identity == CallerIdentity(number, False, None)
    outbound = outbound_identity(identity, host)
    assert outbound.from_.display_name == number
    assert outbound.p_asserted_identity is not None
    assert str(outbound.p_asserted_identity.uri).startswith(f"sip:{number}@")
    assert outbound.privacy is None
