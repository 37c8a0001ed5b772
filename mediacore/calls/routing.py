"""Which service number a call is for: the dialled number, normalised to E.164.

Sans-IO: a parsed :class:`~mediacore.sip.message.Request` in, a
:class:`Route` (or a :class:`RoutingError` carrying the SIP answer) out.

Where the number comes from
---------------------------
The Request-URI says where the request is going, so its user part (``sip:``
and ``sips:``) or its number (``tel:``) is the dialled number. Some
proxies rewrite the Request-URI to the host itself (``sip:mediacore@10.0.0.1``);
then, and only then, the To URI is used. A Request-URI whose user part
*tries* to be a number and fails (``0900abc``, 16 digits) is refused, not
second-guessed from the To header: the request was addressed to it.

How it is normalised (:func:`normalize_number`)
------------------------------------------------
Carriers deliver the same number as ``+31900123456``, ``0031900123456``,
``31900123456``, ``0900123456``, ``tel:+31-900-123456`` or ``%2B31900123456``;
all of them must find the same ``[[number]]``. The rules are a
:class:`NumberingPlan` (one per deployment, a ``[routing]`` table):

1. %-escapes are decoded once (RFC 3261 lets a user part escape ``+``).
2. In an international number, a parenthesised national prefix is dropped:
   ``+31 (0)20 123 4567`` is ``+31201234567``. That "(0)" convention tells
   national callers to dial the 0 and international callers not to (ITU-T
   E.123 advises against writing it; people write it anyway, and it is what
   a caller copying a business card dials). Only a group that is exactly
   the national prefix is dropped; other parentheses are visual separators,
   so ``+1 (212) 555-0100`` keeps its area code. In a national number the
   "(0)" is just the prefix: ``(0)20 1234567`` is ``020 1234567``.
3. Visual separators are removed: ``-``, ``.``, ``(``, ``)`` (RFC 3966
   ``visual-separator``) and spaces (from ``%20`` and from config files).
4. The prefix decides: ``+`` is international; the international prefix
   (``00``) is replaced by ``+``; the national prefix (``0``) by
   ``+<country code>``. Bare digits that start with the country code are
   an international number written without its ``+`` (``31900123456``, as
   many trunks send it). Other bare digits are local numbers whose area is
   unknown: refused with 404. With an empty national prefix (plans without
   a trunk prefix), bare digits are national numbers.
5. The result is ``+`` and 1 to 15 digits (E.164), the first not ``0``
   (no country code starts with 0).

URI parameters (``;user=phone``) and telephone-subscriber parameters in the
user part (``;isub=``, ``;ext=``, ``;postd=``) are not part of the number
and are dropped. A ``phone-context`` (in the user part or the tel: URI; as
a SIP URI parameter too, where some gateways put it) is honoured:

* a global number prefix is prefixed to a local number (RFC 3966 5.1.5):
  ``tel:863-1234;phone-context=+1-914-555`` is ``+19145558631234``;
* our own country code means "dialled in our country": the national and
  international prefixes apply first (IMS networks mark a number dialled
  in national format so: ``0201234567;phone-context=+31``), and bare
  digits get the country code;
* a domain name (``phone-context=ims.example.net``) is taken to be our own
  network: our plan applies as if there were no context.

A global number (``+...``) ignores any phone-context: a context belongs to
local numbers only (RFC 3966 5.1.5).

Normalisation is idempotent: a normalised number normalises to itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from mediacore.config import NumberConfig
from mediacore.sip.message import ParseError, Request
from mediacore.sip.uri import URI, SipURI, TelURI

__all__ = [
    "DEFAULT_PLAN",
    "E164_MAX_DIGITS",
    "NumberPlan",
    "NumberingPlan",
    "Route",
    "RoutingError",
    "dialled_number",
    "normalize_number",
    "number_variants",
    "uri_number",
]

#: ITU-T E.164: at most 15 digits, country code included.
E164_MAX_DIGITS = 15

_DIGITS = frozenset("0123456789")
_SEPARATORS = str.maketrans("", "", "-.() \t")
# A number attempt: what a user part must start with to be read as a number
# (after decoding), rather than as a name such as "mediacore" or "alice".
_NUMBERISH = re.compile(r"[\s\-.()]*[+0-9]").match


def _is_digits(text: str) -> bool:
    return bool(text) and _DIGITS.issuperset(text)


class RoutingError(Exception):
    """The request cannot be routed; ``status`` and ``reason`` are the SIP answer.

    400 when the dialled number is malformed (it tries to be a number and is
    not one: letters among digits, more than 15 digits, a bad %-escape); 404
    when there is no number to route on at all, or one we cannot place.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class NumberingPlan:
    """How national and international numbers are dialled where our trunks are.

    One field per key of the ``[routing]`` config table. The defaults are the
    Netherlands: ``0`` for national, ``00`` for international calls, country
    code 31. ``national_prefix`` may be empty for plans without a trunk
    prefix; ``international_prefix`` may not (there is always a way out).
    """

    country_code: str = "31"
    national_prefix: str = "0"
    international_prefix: str = "00"

    def __post_init__(self) -> None:
        if not (1 <= len(self.country_code) <= 3 and _is_digits(self.country_code)
                and self.country_code[0] != "0"):
            raise ValueError(f"country_code must be 1 to 3 digits not starting with 0, "
                             f"got {self.country_code!r}")
        if self.national_prefix and not _is_digits(self.national_prefix):
            raise ValueError(f"national_prefix must be digits (or empty), "
                             f"got {self.national_prefix!r}")
        if not _is_digits(self.international_prefix):
            raise ValueError(f"international_prefix must be digits, "
                             f"got {self.international_prefix!r}")
        if self.national_prefix == self.international_prefix:
            raise ValueError("national_prefix and international_prefix must differ")


DEFAULT_PLAN = NumberingPlan()


def normalize_number(
    text: str,
    plan: NumberingPlan = DEFAULT_PLAN,
    *,
    phone_context: str | None = None,
) -> str:
    """``text`` as an E.164 number with a leading ``+``; RoutingError if it is not one.

    ``text`` is the number alone (a user part without its ``;`` parameters,
    a tel: number, a config value); see the module docstring for the rules.
    """
    try:
        decoded = unquote(text, errors="strict") if "%" in text else text
    except UnicodeDecodeError:
        raise RoutingError(400, f"Malformed escape in number {_show(text)}") from None
    decoded = decoded.strip()
    international = decoded.startswith("+") or decoded.startswith(plan.international_prefix)
    if international and plan.national_prefix:
        # "+31 (0)20 ..." -> "+31 20 ...": see the module docstring, rule 2.
        decoded = decoded.replace(f"({plan.national_prefix})", "", 1)
    digits = decoded.translate(_SEPARATORS)
    if not digits:
        raise RoutingError(400, f"Empty number {_show(text)}")
    if digits[0] == "+":
        body = digits[1:]
        context = None  # a global number ignores any phone-context (module docstring)
    else:
        body = digits
        context = _global_context(phone_context)
    if not _is_digits(body):
        raise RoutingError(400, f"Not a phone number: {_show(text)}")
    if digits[0] != "+":
        body = _globalise(body, plan, context, text)
    if body[0] == "0":
        raise RoutingError(400, f"No country code starts with 0: {_show(text)}")
    if len(body) > E164_MAX_DIGITS:
        raise RoutingError(400, f"Number longer than {E164_MAX_DIGITS} digits: {_show(text)}")
    return "+" + body


def _global_context(phone_context: str | None) -> str | None:
    """The digits of a global-number phone-context; None for none or a domain name.

    A domain-name context is taken to be our own network: our plan applies.
    """
    if not phone_context:
        return None
    try:
        context = unquote(phone_context, errors="strict").translate(_SEPARATORS)
    except UnicodeDecodeError:
        raise RoutingError(400, "Malformed escape in phone-context") from None
    if not context.startswith("+"):
        return None
    if not _is_digits(context[1:]):
        raise RoutingError(400, f"Malformed phone-context {_show(phone_context)}")
    return context[1:]


def _globalise(body: str, plan: NumberingPlan, context: str | None, text: str) -> str:
    """The digits after '+' for a number dialled without a '+'."""
    if context is not None and context != plan.country_code:
        return context + body  # RFC 3966 5.1.5: the context is the prefix
    if body.startswith(plan.international_prefix):
        rest = body[len(plan.international_prefix):]
        if not rest:
            raise RoutingError(400, f"Only an international prefix: {_show(text)}")
        return rest
    if plan.national_prefix and body.startswith(plan.national_prefix):
        rest = body[len(plan.national_prefix):]
        if not rest:
            raise RoutingError(400, f"Only a national prefix: {_show(text)}")
        return plan.country_code + rest
    if context is not None or not plan.national_prefix:
        return plan.country_code + body  # local to our country, by context or by plan
    if body.startswith(plan.country_code) and len(body) > len(plan.country_code):
        return body  # "31900123456": international, written without its '+'
    raise RoutingError(404, f"Number {_show(text)} has no national or international prefix")


def _show(text: str) -> str:
    """A bounded, printable rendering of untrusted input for a reason phrase."""
    return repr(text[:40])


def number_variants(number: str, plan: NumberingPlan = DEFAULT_PLAN) -> list[str]:
    """The digit strings an E.164 ``number`` may be written as, longest first.

    ``+31201234567`` gives ``0031201234567``, ``31201234567``, ``0201234567``
    and ``201234567`` (the last two only for our own country code). Used to
    find a number in text it must not appear in (privacy.redact).
    """
    if not number.startswith("+") or not _is_digits(number[1:]):
        raise ValueError(f"not a normalised number: {number!r}")
    body = number[1:]
    variants = [plan.international_prefix + body, body]
    if body.startswith(plan.country_code) and len(body) > len(plan.country_code):
        national = body[len(plan.country_code):]
        variants += [plan.national_prefix + national, national]
    unique = list(dict.fromkeys(v for v in variants if v))
    return sorted(unique, key=len, reverse=True)


# --- from a request -------------------------------------------------------------------


def _uri_number(uri: URI) -> tuple[str, str | None] | None:
    """(number as written, phone-context) of a URI, or None.

    None when the URI carries no number at all: no user part, a user part
    that is a name (``mediacore``), or a scheme other than sip/sips/tel.
    """
    if isinstance(uri, TelURI):
        return uri.number, uri.param("phone-context")
    if not isinstance(uri, SipURI) or uri.user is None:
        return None
    # A telephone-subscriber user part carries its own parameters after ';'
    # (RFC 3261 19.1.1, RFC 3966): "+1-212-555-0100;isub=12;phone-context=...".
    number, _, user_params = uri.user.partition(";")
    context = None
    for param in user_params.split(";") if user_params else ():
        name, _, value = param.partition("=")
        if name.lower() == "phone-context" and value:
            context = value
    if context is None:
        # Misplaced as a URI parameter by some gateways; the same meaning.
        context = uri.param("phone-context")
    claims = (uri.param("user") or "").lower() == "phone"
    try:
        looks = _NUMBERISH(unquote(number, errors="strict")) is not None
    except UnicodeDecodeError:
        looks = True  # decode again later, for the reason phrase
    if not claims and not looks:
        return None
    return number, context


def uri_number(uri: URI, plan: NumberingPlan = DEFAULT_PLAN) -> str | None:
    """The normalised number ``uri`` carries; None when it carries none.

    Raises RoutingError when the URI tries to be a number and is not one.
    """
    found = _uri_number(uri)
    if found is None:
        return None
    number, context = found
    return normalize_number(number, plan, phone_context=context)


def dialled_number(request: Request, plan: NumberingPlan = DEFAULT_PLAN) -> str:
    """The normalised number ``request`` was dialled to; RoutingError if there is none.

    From the Request-URI; from the To URI only when the Request-URI has no
    number at all (see the module docstring).
    """
    found = _uri_number(request.uri)
    if found is None:
        try:
            to_uri = request.to.uri
        except ParseError as error:
            raise RoutingError(400, error.reason) from None
        found = _uri_number(to_uri)
    if found is None:
        raise RoutingError(404, "No number in the Request-URI or To header")
    number, context = found
    return normalize_number(number, plan, phone_context=context)


@dataclass(frozen=True, slots=True)
class Route:
    """Where a call goes: the normalised dialled ``number`` and its ``[[number]]`` entry."""

    number: str
    config: NumberConfig


class NumberPlan:
    """The service numbers we answer, keyed by their normalised form.

    Built from the ``[[number]]`` entries, whose ``number`` is normalised
    with the same plan as incoming requests, so ``0900123456`` in the
    config and ``tel:+31900123456`` on the wire meet. Two entries that
    normalise to the same number are a ValueError (a config mistake the
    config loader cannot see, since it does not know the plan).
    """

    def __init__(self, numbers: Iterable[NumberConfig],
                 plan: NumberingPlan = DEFAULT_PLAN) -> None:
        self.plan = plan
        self._by_number: dict[str, NumberConfig] = {}
        for entry in numbers:
            try:
                normalised = normalize_number(entry.number, plan)
            except RoutingError as error:
                raise ValueError(f"number {entry.number!r} (owner {entry.owner!r}): "
                                 f"{error.reason}") from None
            other = self._by_number.get(normalised)
            if other is not None:
                raise ValueError(f"numbers {other.number!r} and {entry.number!r} are both "
                                 f"{normalised}")
            self._by_number[normalised] = entry

    def __len__(self) -> int:
        return len(self._by_number)

    def __contains__(self, number: object) -> bool:
        return number in self._by_number

    def get(self, number: str) -> NumberConfig | None:
        """The entry for an already normalised ``number``."""
        return self._by_number.get(number)

    def lookup(self, request: Request) -> Route | None:
        """The route for ``request``; None for a well-formed number we do not serve.

        Raises RoutingError (400/404) when the request has no usable number;
        the caller answers None with 404 too.
        """
        number = dialled_number(request, self.plan)
        entry = self._by_number.get(number)
        return None if entry is None else Route(number, entry)
