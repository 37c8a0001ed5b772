"""Caller-ID privacy: who called, whether they withheld it, and what the target sees.

Sans-IO. The product promise (DESIGN.md, promise 2) is that the target sees
the caller's number unless the caller withheld it, and that a withheld number
is never stored anywhere. Everything here fails closed: when the signals
disagree or cannot be read, the number is withheld.

When is the number withheld
---------------------------
Any one of these withholds it (the RFC 5079 definition of an anonymous
request, plus the carrier header that predates RFC 3325):

* ``Privacy`` (RFC 3323, 3325) lists ``id``, ``header`` or ``user``, alone
  or among other values (``Privacy: id;critical``). ``id`` (RFC 3325 9.3)
  asks that the P-Asserted-Identity not leave the trust domain, and the
  target is outside it; ``header`` asks that headers identifying the user
  be obscured, From among them; ``user`` asks for user-level privacy, which
  is an anonymous From. ``session`` (media privacy) and ``critical`` (do it
  or fail) alone say nothing about the number. ``none`` asks for no privacy
  function but does not outvote another signal: with an anonymous From or
  another value beside it, the number is still withheld. A Privacy header
  that does not parse withholds (we cannot tell what was asked).
* The From, a P-Asserted-Identity or a Remote-Party-ID is anonymous: the
  display name or the URI user is "anonymous" (any case; RFC 3323 4.1.1.3),
  or one of the words carriers use for a restricted presentation
  ("restricted", "withheld", "private"), or the host is ``anonymous.invalid``.
* A Remote-Party-ID (draft-ietf-sip-privacy-04, still sent by carriers'
  gateways) carries ``privacy=`` anything but ``off``.

Where the number comes from
---------------------------
INVITEs only come from trusted trunks (``sip.trusted_sources``), so their
P-Asserted-Identity is the network's word: it is used first (a tel: value
before a sip: one), then a Remote-Party-ID, then the From. The number is
normalised with :func:`mediacore.calls.routing.uri_number`, so the target,
the CDR and the voicemail all see ``+31201234567`` however it arrived. An
identity that is not a phone number (``sip:carrier@192.0.2.1``) gives no
number: what the target is shown is a number or nothing. The CDR, though,
records the identity that was presented (docs/contracts.md, ``caller``):
the first of those sources, in the same order, as ``scheme:user@host``
(:attr:`CallerIdentity.presented`: no port, parameters or password, as
written, at most :data:`MAX_PRESENTED` characters), so that billing sees who
called rather than an empty field. A withheld identity keeps none of it.

What the target sees
--------------------
:func:`outbound_identity` builds the outbound leg's identity: the number in
the From (display and user part) and in a P-Asserted-Identity with
``user=phone``; or, when withheld, ``"Anonymous"
<sip:anonymous@anonymous.invalid>`` (RFC 3323 4.1.1.3), no
P-Asserted-Identity, and ``Privacy: id`` so a proxy downstream does not
try to add one. The number is never put in the outbound request then: not in
the From, not in a PAI. :func:`diversion_header` and
:func:`history_info_header` say which service number the call was for
(RFC 5806 and RFC 7044 with RFC 4458 causes); the B2BUA sends Diversion,
which targets' phones and PBXs still read more widely.

What the B2BUA must do besides: build the outbound request from these
headers only, copying none of the inbound leg's identity headers (From,
P-Asserted-Identity, P-Preferred-Identity, Remote-Party-ID, Diversion,
History-Info), and write :attr:`CallerIdentity.record_value` into the CDR.
:func:`redact` is a last line of defence for log lines, not a licence to
log the number.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from mediacore.calls.routing import (
    DEFAULT_PLAN,
    NumberingPlan,
    RoutingError,
    number_variants,
    uri_number,
)
from mediacore.sip.headers import parse_name_addr_list
from mediacore.sip.message import ParseError, Request
from mediacore.sip.uri import NameAddr, SipURI, TelURI, parse_uri, unescape

__all__ = [
    "ANONYMOUS_FROM",
    "MAX_PRESENTED",
    "UNAVAILABLE_FROM",
    "WITHHOLDING_PRIV_VALUES",
    "CallerIdentity",
    "OutboundIdentity",
    "diversion_header",
    "history_info_header",
    "identify_caller",
    "is_anonymous",
    "outbound_identity",
    "redact",
]

#: Privacy values (RFC 3323 4.2, RFC 3325 9.3) that withhold the caller's identity.
WITHHOLDING_PRIV_VALUES = frozenset({"id", "header", "user"})

#: Display names and URI users that mean "presentation restricted".
ANONYMOUS_NAMES = frozenset({"anonymous", "restricted", "withheld", "private"})
ANONYMOUS_HOST = "anonymous.invalid"

#: The From of a withheld caller (RFC 3323 4.1.1.3).
ANONYMOUS_FROM = '"Anonymous" <sip:anonymous@anonymous.invalid>'
#: The From of a caller without a number who did not withhold one (our choice,
#: in the style of RFC 3323: an .invalid host that routes nowhere).
UNAVAILABLE_FROM = '"Unavailable" <sip:unavailable@unknown.invalid>'

#: What replaces a withheld number in text.
REDACTED = "anonymous"

#: The longest presented identity a CDR records (a URI's user part may be long).
MAX_PRESENTED = 128


@dataclass(frozen=True)
class CallerIdentity:
    """Who called, as far as we may know it.

    ``number`` is the normalised number when shown; None when withheld or
    when the caller has none. ``display_name`` likewise. ``presented`` is
    the identity the caller presented when it is no number
    (``sip:carrier@192.0.2.1``), for the CDR; None otherwise. A withheld
    identity carries none of them, so nothing that copies one (a CDR, a log
    line, asdict) can leak them. It does keep, outside its fields, the
    patterns :func:`redact` needs; they are not in its repr, equality or
    pickle.
    """

    number: str | None
    withheld: bool
    display_name: str | None = None
    presented: str | None = None

    def __post_init__(self) -> None:
        if self.withheld and (self.number is not None or self.display_name is not None
                              or self.presented is not None):
            raise ValueError("a withheld identity carries no number, no name and no URI")
        if self.number is not None and self.presented is not None:
            raise ValueError("an identity with a number records the number")
        object.__setattr__(self, "_redaction", None)

    @property
    def record_value(self) -> str:
        """What a CDR's ``caller`` field holds (docs/contracts.md).

        ``anonymous`` when withheld, else the number, else the identity that
        was presented (``sip:carrier@192.0.2.1``); empty only when nothing
        readable was presented at all.
        """
        if self.withheld:
            return REDACTED
        return self.number or self.presented or ""

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling or copying keeps the fields and drops the redaction patterns.
        return (CallerIdentity, (self.number, self.withheld, self.display_name,
                                 self.presented))


def _withheld(numbers: Iterable[str], plan: NumberingPlan) -> CallerIdentity:
    identity = CallerIdentity(None, True, None)
    object.__setattr__(identity, "_redaction", _redaction_pattern(numbers, plan))
    return identity


# --- reading the request ---------------------------------------------------------------


def is_anonymous(address: NameAddr) -> bool:
    """Whether an address says "anonymous" by its display name, user or host.

    A URI that does not parse counts as anonymous: fail closed.
    """
    display = (address.display_name or "").strip().lower()
    if display in ANONYMOUS_NAMES:
        return True
    try:
        uri = address.uri
    except ParseError:
        return True
    if isinstance(uri, SipURI):
        if uri.host.lower().rstrip(".") == ANONYMOUS_HOST:
            return True
        user = unescape(uri.user or "").partition(";")[0].strip().lower()
        return user in ANONYMOUS_NAMES
    if isinstance(uri, TelURI):
        return False
    return uri.rest.partition("@")[0].lower() in ANONYMOUS_NAMES


def _privacy_withholds(request: Request) -> bool:
    try:
        values = request.privacy
    except ParseError:
        return True
    return not WITHHOLDING_PRIV_VALUES.isdisjoint(values)


def _addresses(request: Request, header: str) -> list[NameAddr]:
    """Every address of ``header``; a value that does not parse is left out."""
    out: list[NameAddr] = []
    for line in request.headers.get_lines(header):
        try:
            out += parse_name_addr_list(line, header)
        except ParseError:
            continue
    return out


def _rpid_withholds(address: NameAddr) -> bool:
    privacy = address.param("privacy")
    return privacy is not None and privacy.strip('"').lower() != "off"


def _calling_rpids(request: Request) -> list[NameAddr]:
    """Remote-Party-IDs about the caller (``party=calling``, or no party at all)."""
    return [a for a in _addresses(request, "Remote-Party-ID")
            if (a.param("party") or "calling").lower() == "calling"]


def _tel_first(addresses: list[NameAddr]) -> list[NameAddr]:
    def is_tel(address: NameAddr) -> bool:
        return address.uri_text[:4].lower() == "tel:"

    return sorted(addresses, key=lambda a: not is_tel(a))


def _number_of(address: NameAddr, plan: NumberingPlan) -> str | None:
    try:
        return uri_number(address.uri, plan)
    except (ParseError, RoutingError):
        return None


def _raw_digits(address: NameAddr) -> str | None:
    """The digits of a user part that is not a valid number, for redaction only."""
    try:
        uri = address.uri
    except ParseError:
        uri = None
    if isinstance(uri, TelURI):
        text = uri.number
    elif isinstance(uri, SipURI) and uri.user:
        text = unescape(uri.user).partition(";")[0]
    else:
        return None
    digits = "".join(c for c in text if c in "0123456789")
    return digits if len(digits) >= 5 else None


def _presented(address: NameAddr) -> str | None:
    """The identity ``address`` presents, for the CDR: ``scheme:user@host``, nothing else.

    The port, parameters, headers and any password are not identity (and a
    password must not be stored); the user part is kept as written, escapes
    and all, so the text is always printable ASCII. None when the URI does
    not parse.
    """
    try:
        uri = address.uri
    except ParseError:
        return None
    if isinstance(uri, SipURI):
        host = f"[{uri.host}]" if ":" in uri.host else uri.host.lower()
        text = f"{uri.scheme}:{uri.user}@{host}" if uri.user else f"{uri.scheme}:{host}"
    elif isinstance(uri, TelURI):
        text = f"tel:{uri.number}"
    else:
        text = f"{uri.scheme}:{uri.rest}"
    text = text[:MAX_PRESENTED]
    return text if text.isascii() and text.isprintable() else None


def identify_caller(request: Request, plan: NumberingPlan = DEFAULT_PLAN) -> CallerIdentity:
    """The caller's identity from an inbound INVITE; see the module docstring."""
    try:
        from_ = request.from_
    except ParseError:
        from_ = None
    asserted = _tel_first(_addresses(request, "P-Asserted-Identity"))
    rpids = _calling_rpids(request)
    sources = [*asserted, *rpids, *([from_] if from_ is not None else [])]
    withheld = (
        _privacy_withholds(request)
        or from_ is None
        or any(is_anonymous(a) for a in sources)
        or any(_rpid_withholds(a) for a in rpids)
    )
    if withheld:
        # Everything that could carry the number, also the caller's own
        # (untrusted) preference, so that redact() finds every form of it.
        everything = [*sources, *_addresses(request, "P-Preferred-Identity")]
        numbers = [n for a in everything if (n := _number_of(a, plan))]
        numbers += [d for a in everything if (d := _raw_digits(a))]
        return _withheld(numbers, plan)
    for address in sources:
        number = _number_of(address, plan)
        if number is not None:
            display = address.display_name or (from_.display_name if from_ else None)
            return CallerIdentity(number, False, display or None)
    # No number anywhere: the CDR records who presented themselves, in the same order.
    for address in sources:
        presented = _presented(address)
        if presented is not None:
            return CallerIdentity(None, False, None, presented)
    return CallerIdentity(None, False, None)


# --- what the target sees --------------------------------------------------------------


@dataclass(frozen=True)
class OutboundIdentity:
    """The caller identity headers of the outbound leg."""

    from_: NameAddr
    p_asserted_identity: NameAddr | None
    privacy: str | None

    def headers(self, from_tag: str | None = None) -> list[tuple[str, str]]:
        """(name, value) pairs for the outbound request; ``from_tag`` is ours."""
        from_ = self.from_ if from_tag is None else self.from_.with_param("tag", from_tag)
        out = [("From", str(from_))]
        if self.p_asserted_identity is not None:
            out.append(("P-Asserted-Identity", str(self.p_asserted_identity)))
        if self.privacy is not None:
            out.append(("Privacy", self.privacy))
        return out


def outbound_identity(identity: CallerIdentity, host: str) -> OutboundIdentity:
    """What the target is shown; ``host`` is ours (``sip.advertised_address``)."""
    if identity.withheld:
        return OutboundIdentity(NameAddr("sip:anonymous@anonymous.invalid", "Anonymous"),
                                None, "id")
    if identity.number is None:
        return OutboundIdentity(NameAddr("sip:unavailable@unknown.invalid", "Unavailable"),
                                None, None)
    number = identity.number
    return OutboundIdentity(
        NameAddr(SipURI(host, number), number),
        NameAddr(SipURI(host, number, params=(("user", "phone"),))),
        None,
    )


def _service_uri(number: str, host: str) -> SipURI:
    if not (number.startswith("+") and number[1:].isdigit() and number[1:].isascii()):
        raise ValueError(f"not a normalised number: {number!r}")
    return SipURI(host, number)


def diversion_header(number: str, host: str, *, reason: str = "unconditional",
                     counter: int = 1) -> str:
    """The Diversion value (RFC 5806) naming the service number the call was for.

    ``<sip:+31900123456@host>;reason=unconditional;counter=1``: the service
    number forwards every call, so the diversion is unconditional.
    """
    params = (("reason", reason), ("counter", str(counter)))
    return str(NameAddr(_service_uri(number, host), params=params))


#: RFC 4458 causes for History-Info, by Diversion reason (RFC 7544 table).
HISTORY_CAUSES = {"unconditional": 302, "user-busy": 486, "no-answer": 408,
                  "deflection": 480, "unavailable": 503, "unknown": 404}


def history_info_header(number: str, target: str, host: str, *,
                        reason: str = "unconditional") -> str:
    """The History-Info value (RFC 7044) for the retarget from ``number`` to ``target``.

    Two entries: the service number we were called at (index 1), and the
    target, marked ``mp`` (mapped: a different user, RFC 7044 4.3.4) with
    the RFC 4458 ``cause`` URI parameter of the diversion, as RFC 7544 maps
    Diversion's reason. ``target`` is a sip:/sips: URI.
    """
    uri = parse_uri(target)
    if not isinstance(uri, SipURI):
        raise ValueError(f"target must be a SIP URI, not {target!r}")
    cause = HISTORY_CAUSES.get(reason, 404)
    params = tuple(p for p in uri.params if p[0].lower() != "cause")
    retargeted = uri.replace(params=(*params, ("cause", str(cause))))
    first = NameAddr(_service_uri(number, host), params=(("index", "1"),))
    second = NameAddr(retargeted, params=(("index", "1.1"), ("mp", "1")))
    return f"{first},{second}"


# --- redaction -------------------------------------------------------------------------

_SEPARATOR = r"[\s\-./()]*"


def _forms(number: str, plan: NumberingPlan) -> Iterator[str]:
    """Digit strings a normalised number may be written as, "(0)" style included."""
    yield from number_variants(number, plan)
    body = number[1:]
    cc = plan.country_code
    if plan.national_prefix and body.startswith(cc) and len(body) > len(cc):
        yield cc + plan.national_prefix + body[len(cc):]  # +31 (0)20 ...


def _redaction_pattern(numbers: Iterable[str], plan: NumberingPlan) -> re.Pattern[str] | None:
    forms: set[str] = set()
    for number in numbers:
        if number.startswith("+"):
            forms.update(_forms(number, plan))
        else:
            forms.add(number)
    if not forms:
        return None
    alternatives = [_SEPARATOR.join(re.escape(d) for d in form)
                    for form in sorted(forms, key=len, reverse=True)]
    # An optional '+' (or its escape) in front; digits on neither side, so a
    # number inside a longer one (a port, a timestamp) is left alone.
    return re.compile(rf"(?<![0-9])(?:(?:\+|%2[bB]){_SEPARATOR})?(?:{'|'.join(alternatives)})"
                      r"(?![0-9])")


def redact(text: str, identity: CallerIdentity) -> str:
    """``text`` with a withheld caller's number, in any usual form, replaced by "anonymous".

    Defence in depth for log lines and error messages: code should not put
    the number there in the first place. A shown number is left as it is.
    """
    pattern: re.Pattern[str] | None = getattr(identity, "_redaction", None)
    if not identity.withheld or pattern is None:
        return text
    return pattern.sub(REDACTED, text)
