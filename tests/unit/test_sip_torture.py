"""RFC 4475 torture messages: each file gets the outcome its section names.

The files live beside the repository checkout (``/work/shared`` next to
``/work/main``); CI has them, so a missing directory fails rather than skips.

``OUTCOMES`` is the table: what parse() does with the file (parse, or
ParseError with a status), and what the application answers, through
:func:`check_request` with the profile of a B2BUA that handles INVITE, ACK,
BYE, CANCEL and OPTIONS (``PROFILE``), or :func:`check_response`. For a
refused request the answer is :func:`make_error_response`'s status, or
"drop" when nothing can be addressed; refused responses are always dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from mediacore.sip.headers import Via
from mediacore.sip.message import (
    ParseError,
    Request,
    Response,
    check_request,
    check_response,
    make_error_response,
    parse,
    serialize,
    split_multipart,
)
from mediacore.sip.uri import AbsoluteURI, SipURI, unescape

TORTURE = Path(__file__).resolve().parents[2] / ".." / "shared" / "sip-torture" / "rfc4475"

PROFILE = {"methods": ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS")}
DROP = "drop"


@dataclass(frozen=True)
class Outcome:
    section: str
    error: int | None = None  # the ParseError status; None: the message parses
    answer: int | str | None = None  # the answer sent (status), DROP, or None: process it
    why: str = ""


OUTCOMES: dict[str, Outcome] = {
    # 3.1.1 valid messages with unusual syntax: parse, answer as any request of the method.
    "wsinv": Outcome("3.1.1.1", answer=None, why="LWS and folding everywhere"),
    "intmeth": Outcome("3.1.1.2", answer=501, why="a valid, unknown method: 501 Not Implemented"),
    "esc01": Outcome("3.1.1.3", answer=None, why="%-escapes kept as written"),
    "escnull": Outcome("3.1.1.4", answer=405, why="REGISTER; %00 in URIs is fine"),
    "esc02": Outcome("3.1.1.5", answer=501, why="RE%47IST%45R is not REGISTER: unknown method"),
    "lwsdisp": Outcome("3.1.1.6", answer=None, why="display name token right before <"),
    "longreq": Outcome("3.1.1.7", answer=None, why="long values, 34 Vias"),
    "dblreq": Outcome("3.1.1.8", answer=405, why="REGISTER; the INVITE after it is noise"),
    "semiuri": Outcome("3.1.1.9", answer=None, why="';' in the user part"),
    "transports": Outcome("3.1.1.10", answer=None, why="unknown transport in a Via"),
    "mpart01": Outcome("3.1.1.11", answer=405, why="MESSAGE with a multipart body"),
    "unreason": Outcome("3.1.1.12", answer=None, why="UTF-8 reason phrase (response)"),
    "noreason": Outcome("3.1.1.13", answer=None, why="empty reason phrase (response)"),
    # 3.1.2 invalid messages: 400 (505 for the version) where it can be addressed.
    "badinv01": Outcome("3.1.2.1", 400, 400, "empty Via and Contact parameters"),
    "clerr": Outcome("3.1.2.2", 400, 400, "Content-Length past the datagram"),
    "ncl": Outcome("3.1.2.3", 400, 400, "negative Content-Length"),
    "scalar02": Outcome("3.1.2.4", 400, 400, "CSeq beyond 32 bits"),
    "scalarlg": Outcome("3.1.2.5", 400, DROP, "a response with oversized numbers: dropped"),
    "quotbal": Outcome("3.1.2.6", 400, 400, "unterminated quoted string in To"),
    "ltgtruri": Outcome("3.1.2.7", 400, 400, "Request-URI in <>"),
    "lwsruri": Outcome("3.1.2.8", 400, 400, "space inside the Request-URI"),
    "lwsstart": Outcome("3.1.2.9", 400, 400, "two spaces in the Request-Line"),
    "trws": Outcome("3.1.2.10", 400, 400, "trailing space after SIP/2.0"),
    "escruri": Outcome("3.1.2.11", 400, 400, "headers in the Request-URI"),
    "baddate": Outcome("3.1.2.12", None, None, "EST in Date: leniency allowed; Date is opaque"),
    "regbadct": Outcome("3.1.2.13", 400, 400, "URI with ? in Contact needs <>"),
    "badaspec": Outcome("3.1.2.14", 400, 400, "spaces inside <> in To"),
    "baddn": Outcome("3.1.2.15", 400, 400, "unquoted display name with a comma"),
    "badvers": Outcome("3.1.2.16", 505, 505, "SIP/7.0: 505 Version Not Supported"),
    "mismatch01": Outcome("3.1.2.17", 400, 400, "CSeq method OPTIONS vs INVITE"),
    "mismatch02": Outcome("3.1.2.18", 400, 400, "unknown method, CSeq INVITE (501 also allowed)"),
    "bigcode": Outcome("3.1.2.19", 400, DROP, "status code 4294967301: response, dropped"),
    # 3.2 transaction layer
    "badbranch": Outcome("3.2.1", answer=None, why="branch is only the cookie: RFC 2543 matching"),
    # 3.3 application layer: parses; the application gives the named answer.
    "insuf": Outcome("3.3.1", answer=400, why="no Call-ID, From or To"),
    "unkscm": Outcome("3.3.2", answer=416, why="unknown scheme in the Request-URI"),
    "novelsc": Outcome("3.3.3", answer=416, why="soap.beep: scheme we never accept"),
    "unksm2": Outcome("3.3.4", answer=405,
                      why="REGISTER to a non-registrar (a registrar: 400, To not a SIP URI)"),
    "bext01": Outcome("3.3.5", answer=420, why="Require: unknown option tags"),
    "invut": Outcome("3.3.6", answer=415, why="body of an unknown type"),
    "regaut01": Outcome("3.3.7", answer=405,
                        why="REGISTER with an unknown auth scheme; 405 from a non-registrar"),
    "multi01": Outcome("3.3.8", answer=400, why="several Call-ID, To, From, Max-Forwards, CSeq"),
    "mcl01": Outcome("3.3.9", 400, 400, "conflicting Content-Lengths: framing is lost"),
    "bcast": Outcome("3.3.10", answer=DROP, why="response with 2 Vias (one broadcast): dropped"),
    "zeromf": Outcome("3.3.11", answer=None,
                      why="Max-Forwards 0: an endpoint processes it; forwarding it gives 483"),
    "cparam01": Outcome("3.3.12", answer=405, why="REGISTER; unknownparam is a contact-param"),
    "cparam02": Outcome("3.3.13", answer=405, why="REGISTER; unknownparam is a URI parameter"),
    "regescrt": Outcome("3.3.14", answer=405, why="REGISTER; escaped header in Contact URI"),
    "sdp01": Outcome("3.3.15", answer=406, why="Accept without application/sdp"),
    # 3.4 backward compatibility
    "inv2543": Outcome("3.4.1", answer=None, why="RFC 2543: no branch, tag, Max-Forwards, CL"),
    # SIPSorcery's own extra sample: no SIP-Version in the Request-Line, no Via.
    "test": Outcome("extra", 400, DROP, "malformed Request-Line; no Via to answer along"),
}


def load(name: str) -> bytes:
    return (TORTURE / f"{name}.dat").read_bytes()


def parsed(name: str) -> Request | Response:
    return parse(load(name))


def request(name: str) -> Request:
    message = parsed(name)
    assert isinstance(message, Request)
    return message


def test_the_torture_directory_is_there_and_every_file_is_in_the_table() -> None:
    assert TORTURE.is_dir(), f"RFC 4475 messages missing at {TORTURE}"
    files = {path.stem for path in TORTURE.glob("*.dat")}
    assert files == set(OUTCOMES)


@pytest.mark.parametrize("name", sorted(OUTCOMES))
def test_outcome(name: str) -> None:
    expected = OUTCOMES[name]
    data = load(name)
    if expected.error is not None:
        with pytest.raises(ParseError) as caught:
            parse(data)
        error = caught.value
        assert error.status == expected.error, error.reason
        assert error.__cause__ is None  # a deliberate refusal, not a parser accident
        response = make_error_response(error, to_tag="t1")
        if expected.answer == DROP:
            assert response is None
        else:
            assert response is not None
            assert response.status == expected.answer
            assert response.headers.get_lines("via") == error.headers.get_lines("via")  # type: ignore[union-attr]
        return
    message = parse(data)
    if isinstance(message, Request):
        rejection = check_request(message, **PROFILE)  # type: ignore[arg-type]
        assert (rejection.status if rejection else None) == expected.answer, rejection
    else:
        problem = check_response(message)
        assert (DROP if problem else None) == expected.answer, problem
    # Whatever parses, serialises to what parses back equal.
    assert parse(serialize(message)) == message


# --- what the application layer needs, file by file ------------------------------------


def test_wsinv_reads_through_the_whitespace() -> None:
    invite = request("wsinv")
    assert str(invite.uri) == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert invite.to.tag == "1918181833n"
    assert invite.from_.display_name == 'J Rosenberg \\"'
    assert invite.from_.tag == "98asjd8"
    assert invite.max_forwards == 68
    assert tuple(invite.cseq) == (9, "INVITE")
    assert invite.headers.get("Subject") == ""
    assert invite.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert invite.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    vias = invite.vias
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    contact = invite.contact
    assert contact is not None
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == (("newparam", "newvalue"), ("secondparam", None), ("q", "0.33"))
    assert [str(r.uri) for r in invite.routes] == [
        "sip:services.example.com;lr;unknownwith=value;unknown-no-value"]
    assert len(invite.body) == 150


def test_intmeth_keeps_every_token_character() -> None:
    message = request("intmeth")
    assert message.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert message.cseq.method == message.method
    uri = message.uri
    assert isinstance(uri, SipURI)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com"
    assert message.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert message.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert message.from_.tag == "_token~1'+`*%!-."
    assert message.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert message.top_via is not None and message.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    assert message.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff\u5927\u505c\u96fb"


def test_esc01_escapes_are_kept_and_compare_unescaped() -> None:
    invite = request("esc01")
    uri = invite.uri
    assert isinstance(uri, SipURI)
    assert uri.user == "sips%3Auser%40example.com"
    assert unescape(uri.user) == "sips:user@example.com"
    to_uri = invite.to.uri
    assert isinstance(to_uri, SipURI) and unescape(to_uri.user or "") == "user"
    assert to_uri.equivalent(SipURI("example.com", "user"))
    contact = invite.contact
    assert contact is not None
    contact_uri = contact.uri
    assert isinstance(contact_uri, SipURI)
    assert contact_uri.params == (("%6C%72", None), ("n%61me", "v%61lue%25%34%31"))
    assert contact_uri.equivalent(
        SipURI("host5.example.net", "caller", params=(("lr", None), ("name", "value%2541"))))


def test_escnull_has_escaped_nulls() -> None:
    register = request("escnull")
    assert [c.uri_text for c in register.contacts] == [
        "sip:%00@host5.example.com", "sip:%00%00@host5.example.com"]
    assert unescape(register.to.uri.user) == "null-\x00-null"  # type: ignore[union-attr]


def test_esc02_is_not_a_register() -> None:
    message = request("esc02")
    assert message.method == "RE%47IST%45R"
    assert len(message.contacts) == 2  # C%6Fntact is some other header
    assert message.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert message.to.display_name == "%Z%45"


def test_lwsdisp_display_name_without_space() -> None:
    assert request("lwsdisp").from_.display_name == "caller"


def test_longreq_keeps_long_values_and_all_vias() -> None:
    invite = request("longreq")
    vias = invite.vias
    assert len(vias) == 34
    assert vias[0].host == "sip33.example.com"
    assert vias[-1].received == "192.0.2.5"
    assert invite.to.display_name.startswith("I have a user name of extreme")  # type: ignore[union-attr]
    assert invite.from_.tag.startswith("12982982982982")  # type: ignore[union-attr]
    assert invite.to.uri.port == 6000  # type: ignore[union-attr]


def test_dblreq_ignores_what_follows_the_body() -> None:
    register = request("dblreq")
    assert register.method == "REGISTER"
    assert register.body == b""
    assert register.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"


def test_semiuri_user_part_with_semicolon() -> None:
    uri = request("semiuri").uri
    assert isinstance(uri, SipURI)
    assert (uri.user, uri.host, uri.params) == ("user;par=u%40example.net", "example.com", ())
    assert request("semiuri").headers.get_all("Accept") == [
        "application/sdp", "application/pkcs7-mime", "multipart/mixed", "multipart/signed",
        "message/sip", "message/sipfrag"]


def test_transports_unknown_transport() -> None:
    assert [v.transport for v in request("transports").vias] == [
        "UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_mpart01_splits_into_its_parts() -> None:
    message = request("mpart01")
    content_type = message.content_type
    assert content_type is not None and content_type.mime == "multipart/mixed"
    assert content_type.boundary == "7a9cbec02ceef655"
    parts = split_multipart(message.body, content_type.boundary)
    assert [str(p.content_type) for p in parts] == ["text/plain", "application/octet-stream"]
    assert parts[0].body == b"Hello"
    assert len(parts[1].body) == 342 and parts[1].body.startswith(b"0\x82\x01R")


def test_unreason_and_noreason_reason_phrases() -> None:
    unreason = parsed("unreason")
    assert isinstance(unreason, Response) and unreason.status == 200
    assert unreason.reason.startswith("= 2**3 * 5**2 \u043d\u043e")
    noreason = parsed("noreason")
    assert isinstance(noreason, Response) and (noreason.status, noreason.reason) == (100, "")


def test_badbranch_is_rfc2543_style() -> None:
    via = request("badbranch").top_via
    assert via is not None and via.branch == "z9hG4bK" and not via.is_rfc3261


@pytest.mark.parametrize("name", ["badinv01", "scalar02", "quotbal", "badaspec", "baddn"])
def test_refused_requests_are_answered_with_what_was_sent(name: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse(load(name))
    response = make_error_response(caught.value, to_tag="ours")
    assert response is not None
    wire = serialize(response)
    assert wire.startswith(b"SIP/2.0 400 ")
    sent = caught.value.headers
    assert sent is not None
    assert response.headers.get("Call-ID") == sent.get("call-id")
    assert response.headers.get("CSeq") == sent.get("cseq")


def test_badvers_answer_is_505() -> None:
    with pytest.raises(ParseError) as caught:
        parse(load("badvers"))
    response = make_error_response(caught.value)
    assert response is not None and (response.status, response.reason) == (
        505, "Version Not Supported")


def test_baddate_is_accepted_with_the_date_opaque() -> None:
    assert request("baddate").headers.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"


def test_insuf_parses_and_is_answered_400() -> None:
    message = request("insuf")
    assert message.cseq.number == 193942
    assert check_request(message) == (400, "Missing From header", ())
    with pytest.raises(ParseError):
        message.call_id  # noqa: B018


def test_unknown_schemes_parse_with_the_scheme_visible() -> None:
    assert isinstance(request("unkscm").uri, AbsoluteURI)
    assert request("unkscm").uri.scheme == "nobodyknowsthisscheme"
    assert request("novelsc").uri.scheme == "soap.beep"
    unksm2 = request("unksm2")
    assert unksm2.to.uri.scheme == "isbn"
    assert unksm2.from_.uri.scheme == "http"
    contact = unksm2.contact
    assert contact is not None and str(contact.uri) == "name:John_Smith"
    # A registrar (REGISTER allowed) would check To itself: it is not a SIP URI.
    assert check_request(unksm2, methods=("REGISTER",)) is None
    assert not isinstance(unksm2.to.uri, SipURI)


def test_bext01_names_the_unsupported_extensions() -> None:
    message = request("bext01")
    assert message.require == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert message.proxy_require == ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]
    rejection = check_request(message)
    assert rejection == (420, "Bad Extension",
                         (("Unsupported", "nothingSupportsThis, nothingSupportsThisEither"),))
    assert check_request(message, supported=("nothingSupportsThis",)) == (
        420, "Bad Extension", (("Unsupported", "nothingSupportsThisEither"),))


def test_invut_unknown_content_type() -> None:
    message = request("invut")
    assert message.content_type is not None
    assert message.content_type.mime == "application/unknownformat"
    assert check_request(message) == (
        415, "Unsupported Media Type", (("Accept", "application/sdp"),))


def test_regaut01_authorization_is_one_opaque_value() -> None:
    message = request("regaut01")
    assert message.headers.get_all("Authorization") == ["NoOneKnowsThisScheme opaque-data=here"]


def test_multi01_duplicate_single_headers() -> None:
    message = request("multi01")
    assert message.headers.count("Call-ID") == 2
    assert message.call_id == "multi01.98asdh@192.0.2.1"  # the first one
    assert check_request(message)[:2] == (400, "Multiple From headers")  # type: ignore[index]


def test_bcast_is_dropped_for_its_second_via() -> None:
    response = parsed("bcast")
    assert isinstance(response, Response)
    assert [v.host for v in response.vias] == ["192.0.2.198", "255.255.255.255"]
    assert check_response(response) == "More than one Via header value"


def test_zeromf_max_forwards_zero() -> None:
    message = request("zeromf")
    assert message.max_forwards == 0
    assert check_request(message) is None
    assert check_request(message, forwarding=True) == (483, "Too Many Hops", ())


def test_cparam01_and_cparam02_param_placement() -> None:
    contact01 = request("cparam01").contact
    assert contact01 is not None
    assert contact01.params == (("unknownparam", None),)
    assert contact01.uri.params == ()  # type: ignore[union-attr]
    contact02 = request("cparam02").contact
    assert contact02 is not None
    assert contact02.params == ()
    assert contact02.uri.params == (("unknownparam", None),)  # type: ignore[union-attr]


def test_regescrt_contact_uri_keeps_its_escaped_header() -> None:
    contact = request("regescrt").contact
    assert contact is not None
    assert contact.uri.headers == (("Route", "%3Csip:sip.example.com%3E"),)  # type: ignore[union-attr]


def test_sdp01_accept_without_sdp() -> None:
    message = request("sdp01")
    assert [a.mime for a in message.accept or []] == ["text/nobodyknowsthis"]
    assert check_request(message) == (406, "Not Acceptable", ())
    assert check_request(message, answer_type="text/nobodyknowsthis") is None


def test_inv2543_is_accepted() -> None:
    invite = request("inv2543")
    via = invite.top_via
    assert isinstance(via, Via) and via.branch is None and not via.is_rfc3261
    assert invite.from_.tag is None
    assert invite.max_forwards is None
    assert invite.content_length is None and invite.body.startswith(b"v=0")
    assert check_request(invite) is None
