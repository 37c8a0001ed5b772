"""Dialled-number normalisation and the number plan (mediacore.calls.routing)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediacore.calls.routing import (
    NumberingPlan,
    NumberPlan,
    Route,
    RoutingError,
    dialled_number,
    normalize_number,
    number_variants,
)
from mediacore.config import NumberConfig
from mediacore.sip.message import Request

NL = NumberingPlan()
US = NumberingPlan(country_code="1", national_prefix="1", international_prefix="011")
IT = NumberingPlan(country_code="39", national_prefix="", international_prefix="00")

# --- normalisation ------------------------------------------------------------------------

GOOD = [
    # (as written, plan, phone-context, E.164)
    ("+31900123456", NL, None, "+31900123456"),
    ("0900123456", NL, None, "+31900123456"),
    ("0031900123456", NL, None, "+31900123456"),
    ("31900123456", NL, None, "+31900123456"),  # international without '+', as trunks send it
    ("%2B31900123456", NL, None, "+31900123456"),
    ("%2b31900123456", NL, None, "+31900123456"),
    ("%2B31%20900%20123456", NL, None, "+31900123456"),
    ("020-1234567", NL, None, "+31201234567"),
    ("020 123 4567", NL, None, "+31201234567"),
    ("(020) 123 4567", NL, None, "+31201234567"),
    ("+31-20-1234567", NL, None, "+31201234567"),
    ("+31.20.123.45.67", NL, None, "+31201234567"),
    ("+31 20 123 4567", NL, None, "+31201234567"),
    ("  +31 20 123 4567  ", NL, None, "+31201234567"),
    # the "(0)" trunk prefix in an international number is not dialled
    ("+31 (0)20-123 4567", NL, None, "+31201234567"),
    ("+31(0)201234567", NL, None, "+31201234567"),
    ("0031 (0)20 123 4567", NL, None, "+31201234567"),
    ("+44 (0)20 7946 0000", NL, None, "+442079460000"),
    ("+49 (0)30 1234567", NL, None, "+49301234567"),
    # ... but in a national number it is the prefix itself
    ("(0)20 1234567", NL, None, "+31201234567"),
    # other parentheses are only separators
    ("+1 (212) 555-0100", NL, None, "+12125550100"),
    ("+32 (2) 555 12 12", NL, None, "+3225551212"),
    ("0800-0123", NL, None, "+318000123"),
    ("0044 20 7946 0000", NL, None, "+442079460000"),
    # other plans
    ("1-212-555-0100", US, None, "+12125550100"),
    ("011 31 20 123 4567", US, None, "+31201234567"),
    ("+1 212 555 0100", US, None, "+12125550100"),
    ("06 6982 0000", IT, None, "+390669820000"),  # no trunk prefix: bare digits are national
    ("0039 06 6982 0000", IT, None, "+390669820000"),
    # phone-context (RFC 3966 5.1.5; 3GPP national format)
    ("863-1234", NL, "+1-914-555", "+19145558631234"),
    ("7042", NL, "+31-20-123", "+31201237042"),
    ("0201234567", NL, "+31", "+31201234567"),
    ("201234567", NL, "+31", "+31201234567"),
    ("0044 20 7946 0000", NL, "+31", "+442079460000"),
    ("0201234567", NL, "ims.example.net", "+31201234567"),
    ("+31201234567", NL, "+1-914-555", "+31201234567"),  # a global number ignores it
    ("%2B31201234567", NL, "%2B1", "+31201234567"),
    # the longest E.164 number
    ("+123456789012345", NL, None, "+123456789012345"),
]


@pytest.mark.parametrize(("text", "plan", "context", "expected"), GOOD)
def test_normalises(text: str, plan: NumberingPlan, context: str | None, expected: str) -> None:
    assert normalize_number(text, plan, phone_context=context) == expected


BAD = [
    # (as written, plan, phone-context, status, words in the reason)
    ("0900abc", NL, None, 400, "Not a phone number"),
    ("0900-CALL-NOW", NL, None, 400, "Not a phone number"),
    ("+31 20 123 456#", NL, None, 400, "Not a phone number"),
    ("*31#", NL, None, 400, "Not a phone number"),
    ("+31 20 123 4567 ext 12", NL, None, 400, "Not a phone number"),
    ("+1234567890123456", NL, None, 400, "longer than 15"),
    ("001234567890123456", NL, None, 400, "longer than 15"),
    ("0201234567890123456", NL, None, 400, "longer than 15"),
    ("+0201234567", NL, None, 400, "country code"),
    ("+", NL, None, 400, "Not a phone number"),
    ("", NL, None, 400, "Empty"),
    ("---", NL, None, 400, "Empty"),
    ("00", NL, None, 400, "international prefix"),
    ("0", NL, None, 400, "national prefix"),
    ("+31+20", NL, None, 400, "Not a phone number"),
    ("%C3%28", NL, None, 400, "escape"),
    ("%2", NL, None, 400, "Not a phone number"),
    ("٣١٢٠١٢٣٤٥٦٧", NL, None, 400, "Not a phone number"),  # non-ASCII digits
    ("1234567", NL, None, 404, "no national or international prefix"),
    ("112", NL, None, 404, "no national or international prefix"),
    ("863-1234", NL, "+1-9x4", 400, "phone-context"),
]


@pytest.mark.parametrize(("text", "plan", "context", "status", "words"), BAD)
def test_refuses(text: str, plan: NumberingPlan, context: str | None, status: int,
                 words: str) -> None:
    with pytest.raises(RoutingError) as caught:
        normalize_number(text, plan, phone_context=context)
    assert caught.value.status == status
    assert words in caught.value.reason


def test_a_reason_phrase_is_bounded() -> None:
    with pytest.raises(RoutingError) as caught:
        normalize_number("9" * 5000 + "x")
    assert len(caught.value.reason) < 100


@pytest.mark.parametrize("plan", [NL, US, IT])
@given(st.text(alphabet="0123456789+-.() %2B", max_size=30))
def test_normalisation_is_idempotent(plan: NumberingPlan, text: str) -> None:
    try:
        once = normalize_number(text, plan)
    except RoutingError:
        return
    assert once.startswith("+") and once[1:].isdigit() and len(once) <= 16
    assert normalize_number(once, plan) == once


@given(st.from_regex(r"\+[1-9][0-9]{1,14}", fullmatch=True))
def test_the_prefixed_variants_of_a_number_normalise_back_to_it(number: str) -> None:
    variants = number_variants(number, NL)
    assert "00" + number[1:] in variants and number[1:] in variants
    assert normalize_number("00" + number[1:], NL) == number
    if number.startswith("+31") and number[3:4] not in ("", "0"):  # no Dutch NSN starts with 0
        national = "0" + number[3:]
        assert national in variants
        assert normalize_number(national, NL) == number
        assert normalize_number(number[1:], NL) == number  # "31...": without its '+'


def test_variants() -> None:
    assert number_variants("+31201234567") == [
        "0031201234567", "31201234567", "0201234567", "201234567"]
    assert number_variants("+442079460000") == ["00442079460000", "442079460000"]
    with pytest.raises(ValueError):
        number_variants("0201234567")


@pytest.mark.parametrize("fields", [
    {"country_code": "031"}, {"country_code": "1234"}, {"country_code": "3a"},
    {"country_code": ""}, {"national_prefix": "o"}, {"international_prefix": ""},
    {"national_prefix": "00", "international_prefix": "00"},
])
def test_plan_validation(fields: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        NumberingPlan(**fields)


# --- from a request -----------------------------------------------------------------------


def invite(uri: str, to: str | None = None) -> Request:
    return Request("INVITE", uri, [
        ("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK776asdhds"),
        ("From", "<sip:+31201234567@192.0.2.1>;tag=1928301774"),
        ("To", to or f"<{uri}>"),
        ("Call-ID", "a84b4c76e66710"),
        ("CSeq", "314159 INVITE"),
    ])


REQUESTS = [
    # (Request-URI, To, dialled)
    ("sip:+31900123456@mediacore.example.net", None, "+31900123456"),
    ("sip:+31900123456@10.0.0.1:5060;user=phone", None, "+31900123456"),
    ("sips:+31900123456@mediacore.example.net", None, "+31900123456"),
    ("sip:0900123456@10.0.0.1;user=phone", None, "+31900123456"),
    ("sip:0031900123456@10.0.0.1;transport=tcp", None, "+31900123456"),
    ("sip:31900123456@10.0.0.1", None, "+31900123456"),
    ("sip:%2B31900123456@10.0.0.1", None, "+31900123456"),
    ("sip:+31-900-123456@10.0.0.1;user=phone", None, "+31900123456"),
    ("tel:+31-20-1234567", None, "+31201234567"),
    ("tel:+31201234567;ext=12", None, "+31201234567"),
    ("tel:020-1234567;phone-context=+31", None, "+31201234567"),
    ("tel:863-1234;phone-context=+1-914-555", None, "+19145558631234"),
    ("sip:0201234567;phone-context=+31@10.0.0.1;user=phone", None, "+31201234567"),
    ("sip:+31201234567;isub=1411;postd=pp22@10.0.0.1;user=phone", None, "+31201234567"),
    ("sip:1234;phone-context=+31-20-123@10.0.0.1;user=phone", None, "+31201231234"),
    ("sip:0201234567@10.0.0.1;user=phone;phone-context=+31", None, "+31201234567"),
    # no number in the Request-URI: the To says where the call is going
    ("sip:10.0.0.1", "<sip:+31900123456@carrier.example>", "+31900123456"),
    ("sip:mediacore@10.0.0.1", "<tel:0900-123456>", "+31900123456"),
    ("sip:mediacore@10.0.0.1", '"Service" <sip:0900123456@carrier.example>;tag=x',
     "+31900123456"),
]


@pytest.mark.parametrize(("uri", "to", "expected"), REQUESTS)
def test_dialled_number(uri: str, to: str | None, expected: str) -> None:
    assert dialled_number(invite(uri, to)) == expected


REFUSED = [
    # a malformed number in the Request-URI is not second-guessed from the To
    ("sip:0900abc@10.0.0.1", "<sip:0900123456@10.0.0.1>", 400),
    ("sip:+1234567890123456@10.0.0.1", None, 400),
    ("sip:alice@10.0.0.1;user=phone", "<sip:0900123456@10.0.0.1>", 400),
    ("tel:+31-20-12AB", None, 400),
    ("sip:%C3%28@10.0.0.1;user=phone", None, 400),
    ("sip:mediacore@10.0.0.1", "<sip:alice@example.com>", 404),
    ("sip:10.0.0.1", "<sip:example.com>", 404),
    ("sip:1234567@10.0.0.1", None, 404),
    ("urn:service:sos", "<urn:service:sos>", 404),
]


@pytest.mark.parametrize(("uri", "to", "status"), REFUSED)
def test_dialled_number_refused(uri: str, to: str | None, status: int) -> None:
    with pytest.raises(RoutingError) as caught:
        dialled_number(invite(uri, to))
    assert caught.value.status == status


# --- the number plan ----------------------------------------------------------------------


def number(text: str, owner: str = "acme") -> NumberConfig:
    return NumberConfig(number=text, owner=owner, targets=("sip:+31201234567@127.0.0.1:5070",))


def test_lookup_finds_a_number_however_it_was_dialled_or_configured() -> None:
    service = number("0900123456")
    local = number("+31201234567", owner="bakery")
    plan = NumberPlan([service, local])
    assert len(plan) == 2 and "+31900123456" in plan
    for uri in ("sip:+31900123456@10.0.0.1", "tel:0900-123-456",
                "sip:0031900123456@10.0.0.1;user=phone", "sip:%2B31900123456@h"):
        assert plan.lookup(invite(uri)) == Route("+31900123456", service)
    assert plan.lookup(invite("sip:020-1234567@h;user=phone")) == Route("+31201234567", local)
    assert plan.get("+31201234567") is local


def test_lookup_of_a_number_we_do_not_serve_is_none() -> None:
    plan = NumberPlan([number("+31900123456")])
    assert plan.lookup(invite("sip:+31900999999@10.0.0.1")) is None


def test_lookup_raises_for_what_is_no_number() -> None:
    plan = NumberPlan([number("+31900123456")])
    with pytest.raises(RoutingError) as caught:
        plan.lookup(invite("sip:0900abc@10.0.0.1"))
    assert caught.value.status == 400


def test_the_plan_decides_how_config_numbers_read() -> None:
    plan = NumberPlan([number("0800123456")], NumberingPlan(country_code="32"))
    assert plan.lookup(invite("sip:+32800123456@h")) is not None


def test_two_entries_for_one_number_are_refused() -> None:
    with pytest.raises(ValueError, match="both"):
        NumberPlan([number("0900123456"), number("+31900123456")])


def test_an_entry_that_is_no_number_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"'1234567'.*acme"):
        NumberPlan([number("1234567")])
