"""Header names and the typed header values the transaction and dialog layers read.

Names: every header has a *key*, its lowercased long name with compact forms
expanded (``v`` and ``VIA`` are both ``via``). Lookups go by key; the name as
written is kept for faithful copying (see message.py for the serialisation
choice).

Values: Via, CSeq, Content-Type and option-tag lists get small typed
objects here; name-addr values (From, To, Contact, Route...) use
:class:`~mediacore.sip.uri.NameAddr`. Each parser raises ParseError(400) with a
reason that names the problem, for the 400's reason phrase.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from mediacore.sip.uri import (
    _HOST,
    _HPARAMS,
    _PORT,
    _TOKEN,
    _WS,
    MAX_KEPT,
    TOKEN_CHARS,
    LazyParams,
    NameAddr,
    Params,
    ParseError,
    _get_param,
    _has_param,
    _parse_host,
    _parse_port,
    format_params,
    is_token,
    parse_hostport,
    parse_name_addr,
    parse_params,
    split_list,
)

__all__ = [
    "COMPACT_FORMS",
    "LIST_HEADERS",
    "CSeq",
    "ContentType",
    "Via",
    "canonical_name",
    "check_via",
    "header_key",
    "parse_content_type",
    "parse_cseq",
    "parse_name_addr_list",
    "parse_token_list",
    "parse_via",
    "parse_via_list",
    "parse_vias",
]

#: Compact forms (RFC 3261 7.3.3 and the IANA SIP header registry) -> key.
COMPACT_FORMS: dict[str, str] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

#: How we spell the headers we know when we write them.
_CANONICAL = {
    name.lower(): name
    for name in (
        "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info",
        "Allow", "Allow-Events", "Authentication-Info", "Authorization", "Call-ID",
        "Call-Info", "Contact", "Content-Disposition", "Content-Encoding",
        "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date", "Diversion",
        "Error-Info", "Event", "Expires", "From", "History-Info", "Identity",
        "Identity-Info", "In-Reply-To", "Max-Forwards", "Min-Expires", "Min-SE",
        "MIME-Version", "Organization", "P-Asserted-Identity", "P-Preferred-Identity",
        "Path", "Priority", "Privacy", "Proxy-Authenticate", "Proxy-Authorization",
        "Proxy-Require", "RAck", "Reason", "Record-Route", "Refer-To", "Referred-By",
        "Reject-Contact", "Replaces", "Reply-To", "Request-Disposition", "Require",
        "Retry-After", "Route", "RSeq", "Server", "Service-Route", "Session-Expires",
        "SIP-ETag", "SIP-If-Match", "Subject", "Subscription-State", "Supported",
        "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning",
        "WWW-Authenticate",
    )
}

#: Headers whose grammar is a comma-separated list (RFC 3261 7.3.1): several
#: values may share one line, and only these are split on commas. Everything
#: else (Date, WWW-Authenticate, Authorization, unknown headers...) is one
#: value per line, commas and all.
LIST_HEADERS = frozenset({
    "accept", "accept-contact", "accept-encoding", "accept-language",
    "accept-resource-priority", "alert-info", "allow", "allow-events", "call-info",
    "contact", "content-encoding", "content-language", "diversion", "error-info",
    "history-info", "in-reply-to", "p-asserted-identity", "p-associated-uri",
    "p-early-media", "p-preferred-identity", "p-visited-network-id", "path",
    "proxy-require", "reason", "record-route", "recv-info", "reject-contact", "require",
    "resource-priority", "route", "security-client", "security-server", "security-verify",
    "service-route", "supported", "unsupported", "via", "warning",
})

_KEY_CACHE: dict[str, str] = {}


def header_key(name: str) -> str:
    """The lookup key of a header name: lowercased, compact form expanded."""
    key = _KEY_CACHE.get(name)
    if key is None:
        lower = name.lower()
        key = COMPACT_FORMS.get(lower, lower)
        if len(_KEY_CACHE) < 4096:
            _KEY_CACHE[name] = key
    return key


def canonical_name(name: str) -> str:
    """The long form as RFC 3261 spells it (``v`` -> ``Via``, ``call-id`` -> ``Call-ID``).

    Unknown names are returned as given.
    """
    return _CANONICAL.get(header_key(name), name)


# --- Via ---------------------------------------------------------------------------

MAGIC_COOKIE = "z9hG4bK"


class Via(LazyParams):
    """One Via value: ``SIP/2.0/UDP host:port;branch=...;received=...;rport``.

    ``transport`` is uppercased; ``host`` has no IPv6 brackets; ``params``
    are kept as written. ``rport`` is an int when the value is there, and
    ``has_rport`` says whether the parameter is there at all (RFC 3581: a
    request asks with a bare ``;rport``).
    """

    __slots__ = ("_params", "_ptext", "host", "port", "protocol", "transport")

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: Params = (),
        *,
        protocol: str = "SIP/2.0",
    ) -> None:
        self.protocol = protocol
        self.transport = transport.upper()
        self.host = host[1:-1] if host[:1] == "[" else host
        self.port = port
        self._params: Params | None = tuple(params)
        self._ptext = ""
        try:
            again = parse_via(str(self))
        except ParseError as error:
            raise ValueError(f"invalid Via {str(self)!r}: {error.reason}") from None
        if again != self:
            raise ValueError(f"Via {str(self)!r} does not survive formatting")

    @classmethod
    def _new(cls, protocol: str, transport: str, host: str, port: int | None,
             ptext: str, params: Params | None) -> Via:
        self = object.__new__(cls)
        self.protocol = protocol
        self.transport = transport
        self.host = host
        self.port = port
        self._ptext = ptext
        self._params = params
        return self

    @property
    def branch(self) -> str | None:
        return _get_param(self.params, "branch")

    @property
    def is_rfc3261(self) -> bool:
        """The branch carries the magic cookie *and* something after it (RFC 4475 3.2.1)."""
        branch = self.branch
        return branch is not None and len(branch) > 7 and branch.startswith(MAGIC_COOKIE)

    @property
    def received(self) -> str | None:
        return _get_param(self.params, "received")

    @property
    def has_rport(self) -> bool:
        return _has_param(self.params, "rport")

    @property
    def rport(self) -> int | None:
        value = _get_param(self.params, "rport")
        return int(value) if value else None

    @property
    def maddr(self) -> str | None:
        return _get_param(self.params, "maddr")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.transport} {host}{port}{format_params(self.params)}"

    def __repr__(self) -> str:
        return f"Via({str(self)!r})"

    def _key(self) -> tuple[Any, ...]:
        return (self.protocol, self.transport, self.host, self.port, self.params)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Via):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


_VIA = re.compile(rf"SIP/2\.0/({_TOKEN}) ({_HOST})(?::({_PORT}))?({_HPARAMS})").fullmatch


def parse_via(text: str) -> Via:
    """One via-parm. LWS may surround the slashes, the colon and the params (``wsinv``)."""
    match = _VIA(text)
    if match is not None:
        transport, host, port, ptext = match.groups()
        if "rport=" in ptext:
            _check_rport(parse_params(ptext), text)
        via = object.__new__(Via)
        via.protocol = "SIP/2.0"
        via.transport = transport if transport == "UDP" else transport.upper()
        via.host = _parse_host(host) if host[0] == "[" else host
        via.port = None if port is None else _parse_port(port)
        via._ptext = ptext
        via._params = None if ptext else ()
        return via
    return _parse_via_slow(text)


def _check_rport(params: Params, text: str) -> None:
    for n, v in params:
        if v is not None and n.lower() == "rport" and not (v.isascii() and v.isdigit()):
            raise ParseError(400, f"Malformed rport in {text[:80]!r}")


def _parse_via_slow(text: str) -> Via:
    semi = text.find(";")
    if semi >= 0:
        sent = text[:semi]
        params = parse_params(text[semi:])
    else:
        sent = text
        params = ()
    name, _, rest = sent.partition("/")
    version, slash2, rest = rest.partition("/")
    words = rest.split(None, 1)
    if not slash2 or len(words) != 2:
        raise ParseError(400, f"Malformed Via {text[:80]!r}")
    name = name.strip(_WS)
    version = version.strip(_WS)
    transport, sent_by = words
    if not (is_token(name) and is_token(version) and is_token(transport)):
        raise ParseError(400, f"Malformed Via protocol in {text[:80]!r}")
    sent_by = sent_by.rstrip(_WS)
    if " " in sent_by or "\t" in sent_by:
        # sent-by = host [ COLON port ] and COLON may have LWS around it.
        sent_by = "".join(sent_by.split())
        if sent_by.count(":") != 1 and not sent_by.startswith("["):
            raise ParseError(400, f"Malformed Via sent-by in {text[:80]!r}")
    host, port = parse_hostport(sent_by)
    protocol = "SIP/2.0" if name == "SIP" and version == "2.0" else f"{name.upper()}/{version}"
    _check_rport(params, text)
    return Via._new(protocol, transport.upper(), host, port, "", params)


#: Via lines already read, by text (up to MAX_KEPT characters): ours comes
#: back in every response of its transaction (and is checked when we build
#: the request, and read again to match it). Via, like the URIs, is immutable.
_VIAS: dict[str, Via] = {}


def parse_vias(value: str) -> Via:
    """Check every via-parm of a Via line; return the first.

    The first is parsed whole (it addresses the response); the others are
    only validated, by the pattern where they fit it.
    """
    via = _VIAS.get(value) if type(value) is str else None
    if via is None:
        if "," not in value:
            via = parse_via(value)
        else:
            parts = split_list(value)
            via = parse_via(_non_empty(parts[0], "Via"))
            for part in parts[1:]:
                check_via(part)
        if len(value) <= MAX_KEPT:
            if len(_VIAS) >= 4096:
                _VIAS.clear()
            _VIAS[value] = via
    return via


def check_via(text: str) -> None:
    """Validate one via-parm without building it (the Vias below the top one)."""
    match = _VIA(text)
    if (match is None or "rport=" in text or match.group(2)[0] == "["
            or len(match.group(3) or "") == 5):
        parse_via(_non_empty(text, "Via"))  # the thorough check, or the reason


def parse_via_list(value: str) -> list[Via]:
    return [parse_via(_non_empty(part, "Via")) for part in split_list(value)]


def _non_empty(part: str, header: str) -> str:
    if not part:
        raise ParseError(400, f"Empty element in {header}")
    return part


# --- CSeq ---------------------------------------------------------------------------


class CSeq(NamedTuple):
    """``CSeq: 314159 INVITE``."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


_new_tuple = tuple.__new__

#: RFC 3261 8.1.1.5: the number must fit 32 bits (RFC 4475 ``scalar02``).
MAX_CSEQ = 2**32 - 1


_CSEQ = re.compile(rf"([0-9]{{1,10}}) ({_TOKEN})").fullmatch


#: CSeq values by text: "1 INVITE", "2 BYE"... are what nearly every call sends.
_CSEQS: dict[str, CSeq] = {}


def parse_cseq(value: str) -> CSeq:
    cseq = _CSEQS.get(value) if type(value) is str else None
    if cseq is not None:
        return cseq
    match = _CSEQ(value)
    if match is not None:
        number, method = match.groups()
        number = int(number)
        if number <= MAX_CSEQ:
            cseq = _new_tuple(CSeq, (number, method))
            if len(_CSEQS) >= 1024:
                _CSEQS.clear()
            _CSEQS[value] = cseq  # (at most 10 digits and a method: short)
            return cseq  # type: ignore[no-any-return]
    words = value.split()
    if len(words) != 2:
        raise ParseError(400, f"Malformed CSeq {value[:80]!r}")
    number, method = words
    if not (number.isascii() and number.isdigit()) or len(number) > 10 or int(number) > MAX_CSEQ:
        raise ParseError(400, f"CSeq number {number[:40]!r} is not a 32-bit integer")
    if not TOKEN_CHARS.issuperset(method):
        raise ParseError(400, f"Malformed CSeq method {method[:40]!r}")
    return CSeq(int(number), method)


# --- Content-Type ----------------------------------------------------------------------


class ContentType(NamedTuple):
    """``type/subtype;params``; ``type`` and ``subtype`` lowercased, params as written."""

    type: str
    subtype: str
    params: Params = ()

    @property
    def mime(self) -> str:
        return f"{self.type}/{self.subtype}"

    def param(self, name: str, default: Any = None) -> Any:
        return _get_param(self.params, name, default)

    @property
    def boundary(self) -> str | None:
        value = _get_param(self.params, "boundary")
        if value is None:
            return None
        return value[1:-1] if value[:1] == '"' else value

    def __str__(self) -> str:
        return f"{self.type}/{self.subtype}{format_params(self.params)}"


#: Content-Type values by text ("application/sdp" on nearly every INVITE and 2xx).
_CONTENT_TYPES: dict[str, ContentType] = {}


def parse_content_type(value: str) -> ContentType:
    content_type = _CONTENT_TYPES.get(value) if type(value) is str else None
    if content_type is None:
        content_type = _parse_content_type(value)
        if len(value) <= MAX_KEPT:
            if len(_CONTENT_TYPES) >= 256:
                _CONTENT_TYPES.clear()
            _CONTENT_TYPES[value] = content_type
    return content_type


def _parse_content_type(value: str) -> ContentType:
    semi = value.find(";")
    media = value if semi < 0 else value[:semi]
    mtype, slash, subtype = media.partition("/")
    mtype = mtype.strip(_WS)
    subtype = subtype.strip(_WS)
    if not slash or not is_token(mtype) or not is_token(subtype):
        raise ParseError(400, f"Malformed media type {value[:80]!r}")
    params = parse_params(value[semi:]) if semi >= 0 else ()
    return ContentType(mtype.lower(), subtype.lower(), params)


# --- lists ----------------------------------------------------------------------------


def parse_name_addr_list(
    value: str, header: str, *, name_addr_only: bool = False
) -> list[NameAddr]:
    """Contact, Route, Record-Route, P-Asserted-Identity...: comma-separated addresses."""
    if "," not in value:
        return [parse_name_addr(_non_empty(value, header), name_addr_only=name_addr_only)]
    return [
        parse_name_addr(_non_empty(part, header), name_addr_only=name_addr_only)
        for part in split_list(value)
    ]


def parse_token_list(values: list[str], header: str) -> list[str]:
    """Require, Supported, Allow...: tokens, commas and LWS between them."""
    out = []
    for value in values:
        for part in value.split(","):
            part = part.strip(_WS)
            if not part:
                continue  # "Supported:" with no value, or a stray comma: nothing asked
            if not TOKEN_CHARS.issuperset(part):
                raise ParseError(400, f"Malformed {header} value {part[:40]!r}")
            out.append(part)
    return out
