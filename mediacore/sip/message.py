"""SIP messages: bytes in, :class:`Request`/:class:`Response` out, and back (RFC 3261 7, 25).

Sans-IO like h11: :func:`parse` takes one complete message (a datagram, or
what :func:`message_length` cut from a stream) and either returns a message
or raises :class:`ParseError` carrying the status to answer with. There is
no socket, clock or state here; the transaction layer feeds on the result.

What parse() checks, and what it leaves for later
-------------------------------------------------
parse() enforces framing (Content-Length), the start line, header syntax,
the limits, and the syntax of what transaction matching and addressing a
response need: every Via value (the top one is parsed into a :class:`Via`),
CSeq (and that its method matches the request's), Call-ID, From, To and
Contact (display name, brackets and parameters; the URI inside is parsed on
first read), and Content-Length. Repeated single-valued headers are checked
too, and the first one counts. :meth:`Headers.add` and :meth:`Headers.set`
apply exactly the same checks, so a value copied from a received message can
always be added, and whatever is added serialises into something parse()
accepts. Everything else is parsed on first access and cached, which keeps
parse() cheap; a malformed value found then raises ParseError(400) from the
accessor. :func:`check_request` (RFC 3261 8.2) touches what a UAS needs and
turns problems into the answer to send: missing or repeated mandatory
headers, 405/501, 416, 420, 415, 406, 483. The RFC 4475 messages of section
3.3 parse, and check_request gives their answers.

Lenient where nothing is lost: the SIP-Version's case, a status line
without a reason phrase, and a datagram that ends right after its last
header line without the empty line (the datagram frames the message).

Datagrams and streams
---------------------
In a datagram the body is the rest of the datagram; a Content-Length larger
than that is an error (400), a smaller one truncates (RFC 3261 18.3: the
rest is noise, RFC 4475 ``dblreq``). On a stream, :func:`message_length`
finds where a message ends; a missing, malformed or conflicting
Content-Length there is fatal for the connection.

Limits and their answers (:class:`ParserLimits`)
-------------------------------------------------
* a head (start line and headers) larger than ``max_message_size``:
  513 Message Too Large (RFC 3261 21.5.8: "the message length exceeded its
  capabilities"), when the end of the head cannot even be found in bounds;
* a message whose Content-Length takes it past ``max_message_size``:
  413 Request Entity Too Large (21.4.11: it is the body that is too big,
  and the head can still be answered);
* more than ``max_headers`` header fields, or a header field (after
  unfolding) longer than ``max_line_length``: 400 with a reason saying which.

Serialisation and equality
--------------------------
Headers keep the name *as received* (compact or long, any case): a B2BUA or
proxy that copies a header should not rewrite it, and signatures (RFC 8224)
cover the bytes. Messages we build use long names: :func:`make_response`,
:func:`make_cancel` and the others write them. Values are stored unfolded and
stripped, which is how they are written back. :func:`serialize` always
writes exactly one Content-Length, equal to the body's length, in place of
the received one (or last, if there was none).

Equality (``==``) is semantic: start line, header keys (lowercase long
names, so ``v`` equals ``Via``) with their values in order, and body.
Content-Length is left out because it is derived from the body. So
``parse(serialize(m)) == m`` for every message ``m`` we can build or parse.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from mediacore.sip.headers import (
    _CANONICAL,
    LIST_HEADERS,
    ContentType,
    CSeq,
    Via,
    _non_empty,
    canonical_name,
    check_via,
    header_key,
    parse_content_type,
    parse_cseq,
    parse_name_addr_list,
    parse_token_list,
    parse_via,
    parse_via_list,
    parse_vias,
)
from mediacore.sip.uri import (
    _WS,
    MAX_KEPT,
    TOKEN_CHARS,
    URI,
    AbsoluteURI,
    NameAddr,
    ParseError,
    SipURI,
    TelURI,
    is_token,
    parse_name_addr,
    parse_uri,
    split_list,
)

__all__ = [
    "DEFAULT_LIMITS",
    "KNOWN_METHODS",
    "REASON_PHRASES",
    "BodyPart",
    "Headers",
    "Message",
    "ParseError",
    "ParserLimits",
    "Rejection",
    "Request",
    "Response",
    "check_request",
    "check_response",
    "make_ack_for_non_2xx",
    "make_cancel",
    "make_error_response",
    "make_response",
    "message_length",
    "parse",
    "serialize",
    "split_multipart",
]

SIP_VERSION = "SIP/2.0"

KNOWN_METHODS = frozenset({
    "ACK", "BYE", "CANCEL", "INFO", "INVITE", "MESSAGE", "NOTIFY", "OPTIONS", "PRACK",
    "PUBLISH", "REFER", "REGISTER", "SUBSCRIBE", "UPDATE",
})

REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated",
    200: "OK", 202: "Accepted", 204: "No Notification",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
    305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    412: "Conditional Request Failed", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 417: "Unknown Resource-Priority", 420: "Bad Extension",
    421: "Extension Required", 422: "Session Interval Too Small", 423: "Interval Too Brief",
    428: "Use Identity Header", 429: "Provide Referrer Identity",
    433: "Anonymity Disallowed", 436: "Bad Identity-Info", 437: "Unsupported Certificate",
    438: "Invalid Identity Header", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending",
    493: "Undecipherable", 494: "Security Agreement Required",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable", 607: "Unwanted",
}


@dataclass(frozen=True, slots=True)
class ParserLimits:
    """What one message may cost us; see the module docstring for the answers."""

    max_message_size: int = 65536
    max_headers: int = 256
    max_line_length: int = 8192


DEFAULT_LIMITS = ParserLimits()


# --- headers ------------------------------------------------------------------------

Item = tuple[str, str, str]  # (name as written, value, key)
_NO_VALUES: list[str] = []


class Headers:
    """The header fields of a message, in order, looked up case-insensitively.

    Each field is one (name, value) line as received or added; several
    values on one line stay one field. :meth:`get_all` gives the *values*
    of a name: every line, and for list headers (Via, Contact, Require...,
    see ``headers.LIST_HEADERS``) every comma-separated element. Names are
    matched by key, so ``get("v")``, ``get("VIA")`` and ``get("Via")`` agree.

    :meth:`add` and :meth:`set` check what they are given (name a token, no
    CR/LF, and the headers that parse() checks must parse), so a message we
    build serialises into something we would parse back.
    """

    __slots__ = ("_cache", "_index", "_items")

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        # What add() does for each field, without forgetting an empty cache each time.
        self._items: list[Item] = [_checked_item(name, value) for name, value in fields]
        self._cache: dict[str, Any] = {}
        self._index: dict[str, list[str]] | None = None

    @classmethod
    def _new(cls, items: list[Item], cache: dict[str, Any] | None = None) -> Headers:
        self = object.__new__(cls)
        self._items = items
        self._cache = {} if cache is None else cache
        self._index = None
        return self

    def _values(self, key: str) -> list[str]:
        """The values of ``key``, in order (shared: do not change the list)."""
        index = self._index
        if index is None:
            index = self._build_index()
        return index.get(key, _NO_VALUES)

    def _build_index(self) -> dict[str, list[str]]:
        """Key -> values; built on the first lookup: one pass, then every lookup is a
        dict hit. Shared: do not change it."""
        index: dict[str, list[str]] = {}
        for _, value, k in self._items:
            values = index.get(k)
            if values is None:
                index[k] = [value]
            else:
                values.append(value)
        self._index = index
        return index

    # reading

    def get(self, name: str, default: Any = None) -> Any:
        """The value of the first field called ``name`` (the whole line), or ``default``."""
        values = self._values(header_key(name))
        return values[0] if values else default

    def get_lines(self, name: str) -> list[str]:
        """One value per field line of ``name``, unsplit."""
        return list(self._values(header_key(name)))

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``; list headers split at top-level commas, empties dropped."""
        key = header_key(name)
        lines = self._values(key)
        if key not in LIST_HEADERS:
            return list(lines)
        return [part for line in lines for part in split_list(line) if part]

    def count(self, name: str) -> int:
        """How many field lines called ``name`` there are."""
        return len(self._values(header_key(name)))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return bool(self._values(header_key(name)))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((name, value) for name, value, _ in self._items)

    def items(self) -> list[tuple[str, str]]:
        return [(name, value) for name, value, _ in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for _, v, k in self._items] == [(k, v) for _, v, k in other._items]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"

    def copy(self) -> Headers:
        return Headers._new(list(self._items), dict(self._cache))

    # writing

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        """Append a field, or with ``first=True`` put it before the first of its name.

        ``first`` is how a Via or Record-Route is pushed on top.
        """
        item = _checked_item(name, value)
        key = item[2]
        self._forget(key)
        if first:
            for i, (_, _, k) in enumerate(self._items):
                if k == key:
                    self._items.insert(i, item)
                    return
        self._items.append(item)

    def set(self, name: str, value: str) -> None:
        """Make ``value`` the only field of ``name``, where the first one was (or last)."""
        item = _checked_item(name, value)
        key = item[2]
        self._forget(key)
        items = self._items
        for i, (_, _, k) in enumerate(items):
            if k == key:
                items[i] = item
                self._items = items[: i + 1] + [it for it in items[i + 1 :] if it[2] != key]
                return
        items.append(item)

    def remove(self, name: str) -> int:
        """Remove every field of ``name``; returns how many there were."""
        key = header_key(name)
        before = len(self._items)
        self._items = [it for it in self._items if it[2] != key]
        self._forget(key)
        return before - len(self._items)

    def _forget(self, key: str) -> None:
        self._index = None
        cache = self._cache
        if cache:
            cache.pop(key, None)
            cache.pop(key + "*", None)


def _check_call_id(value: str) -> str:
    if not value or " " in value or "\t" in value:
        raise ParseError(400, "Malformed Call-ID")
    return value


def _check_digits(value: str, header: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 10:
        raise ParseError(400, f"Malformed {header}")
    return int(value)


def _check_max_forwards(value: str) -> int:
    number = _check_digits(value, "Max-Forwards")
    if number > 255:
        raise ParseError(400, "Max-Forwards above 255")
    return number


def _parse_contacts(value: str) -> list[NameAddr]:
    if value == "*":
        return []
    return parse_name_addr_list(value, "Contact")


# What parse() checks, per header key, and so what Headers.add/set check: the
# same rules both ways, so a value copied from a received message can always
# be added to another, and anything added serialises into something parse()
# accepts.
_VALIDATORS: dict[str, Callable[[str], Any]] = {
    "via": parse_vias,
    "cseq": parse_cseq,
    "call-id": _check_call_id,
    "from": parse_name_addr,
    "to": parse_name_addr,
    "contact": _parse_contacts,
    "content-length": lambda v: _check_digits(v, "Content-Length"),
}


#: Fields already checked, (name, value) -> item: what we add repeats (Max-Forwards,
#: Server, Contact, Content-Type, Allow... on every call). The checks are pure
#: functions of the two strings, so a hit is as good as checking again.
_CHECKED: dict[tuple[str, str], Item] = {}
_CHECKED_MAX = 2048


def _checked_item(name: str, value: str) -> Item:
    if type(name) is str and type(value) is str:
        item = _CHECKED.get((name, value))
        if item is None:
            item = _check_item(name, value)
            if len(value) <= MAX_KEPT:
                if len(_CHECKED) >= _CHECKED_MAX:
                    _CHECKED.clear()  # per-call values (tags, branches) pass through
                _CHECKED[(name, value)] = item
        return item
    return _check_item(name, value)


def _check_item(name: str, value: str) -> Item:
    if not is_token(name):
        raise ValueError(f"invalid header name {name!r}")
    if not isinstance(value, str):
        raise TypeError(f"header value must be str, not {type(value).__name__}")
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name} has CR or LF in its value")
    value = value.strip(_WS)
    # Received values carry undecodable bytes as surrogate escapes; other
    # lone surrogates have no bytes to become and are refused here.
    if not value.isascii():
        value.encode("utf-8", "surrogateescape")
    key = header_key(name)
    validator = _VALIDATORS.get(key)
    if validator is not None:
        try:
            validator(value)
        except ParseError as error:
            raise ValueError(f"invalid {name} header {value!r}: {error.reason}") from None
    return (name, value, key)


# --- messages -----------------------------------------------------------------------


_MISSING = object()


def _header_error(name: str, error: ParseError) -> ParseError:
    return ParseError(400, f"Bad {name} header: {error.reason}"[:200])


class Message:
    """What requests and responses share: headers, body, and typed header access.

    The typed accessors parse on first use and cache in the headers (a
    change through :class:`Headers` forgets the cached value). Mandatory
    headers (``cseq``, ``call_id``, ``from_``, ``to``) raise ParseError(400)
    when missing or malformed; optional ones return None (or an empty list).
    Lists returned are the cached ones: copy one before changing it.
    """

    __slots__ = ("body", "headers", "version")

    headers: Headers
    body: bytes
    version: str

    def _cached(self, key: str, name: str, parse_value: Callable[[str], Any],
                *, required: bool = False) -> Any:
        headers = self.headers
        cache = headers._cache
        result = cache.get(key, _MISSING)
        if result is not _MISSING:
            return result
        values = headers._values(key)
        value = values[0] if values else None
        if value is None:
            if required:
                raise ParseError(400, f"Missing {name} header")
            result = None
        else:
            try:
                result = parse_value(value)
            except ParseError as error:
                raise _header_error(name, error) from None
        cache[key] = result
        return result

    def _cached_list(self, key: str, name: str, parse_value: Callable[[str], list[Any]]) -> Any:
        cache = self.headers._cache
        star = key + "*"
        result = cache.get(star, _MISSING)
        if result is not _MISSING:
            return result
        result = []
        try:
            for value in self.headers._values(key):
                result += parse_value(value)
        except ParseError as error:
            raise _header_error(name, error) from None
        cache[star] = result
        return result

    # the transaction layer's

    @property
    def top_via(self) -> Via | None:
        """The first Via value (the one that addresses the response), or None."""
        result = self.headers._cache.get("via")  # the common case, without a call
        if result is not None:
            return result  # type: ignore[no-any-return]
        return self._cached("via", "Via", parse_vias)

    @property
    def vias(self) -> list[Via]:
        headers = self.headers
        cache = headers._cache
        result = cache.get("via*")
        if result is not None:
            return result  # type: ignore[no-any-return]
        top = cache.get("via")
        if top is None:
            return self._cached_list("via", "Via", parse_via_list)
        # The top one is parsed already (parse() does, and top_via): only the rest now.
        lines = headers._values("via")
        first = lines[0]
        try:
            if "," in first:
                result = [top] + [parse_via(_non_empty(part, "Via"))
                                  for part in split_list(first)[1:]]
            else:
                result = [top]
            for line in lines[1:]:
                result += parse_via_list(line)
        except ParseError as error:
            raise _header_error("Via", error) from None
        cache["via*"] = result
        return result

    @property
    def cseq(self) -> CSeq:
        result = self.headers._cache.get("cseq")
        if result is not None:
            return result  # type: ignore[no-any-return]
        return self._cached("cseq", "CSeq", parse_cseq, required=True)

    @property
    def call_id(self) -> str:
        result = self.headers._cache.get("call-id")
        if result is not None:
            return result  # type: ignore[no-any-return]
        return self._cached("call-id", "Call-ID", _check_call_id, required=True)

    @property
    def from_(self) -> NameAddr:
        result = self.headers._cache.get("from")
        if result is not None:
            return result  # type: ignore[no-any-return]
        return self._cached("from", "From", parse_name_addr, required=True)

    @property
    def to(self) -> NameAddr:
        result = self.headers._cache.get("to")
        if result is not None:
            return result  # type: ignore[no-any-return]
        return self._cached("to", "To", parse_name_addr, required=True)

    @property
    def from_tag(self) -> str | None:
        """The From tag; None without one, or without a From."""
        address = self.headers._cache.get("from")
        if address is None:
            if "from" not in self.headers:
                return None
            address = self.from_
        return address.tag  # type: ignore[no-any-return]

    @property
    def to_tag(self) -> str | None:
        """The To tag; None without one (a request outside a dialog), or without a To."""
        address = self.headers._cache.get("to")
        if address is None:
            if "to" not in self.headers:
                return None
            address = self.to
        return address.tag  # type: ignore[no-any-return]

    @property
    def max_forwards(self) -> int | None:
        return self._cached("max-forwards", "Max-Forwards", _check_max_forwards)

    @property
    def content_length(self) -> int | None:
        """The Content-Length header as received (the body is ``len(body)`` bytes)."""
        return self._cached("content-length", "Content-Length",
                            lambda v: _check_digits(v, "Content-Length"))

    @property
    def content_type(self) -> ContentType | None:
        return self._cached("content-type", "Content-Type", parse_content_type)

    # the dialog layer's

    @property
    def contacts(self) -> list[NameAddr]:
        """Every Contact address in order; empty for none, and for ``Contact: *``."""
        return self._cached_list("contact", "Contact", _parse_contacts)

    @property
    def contact(self) -> NameAddr | None:
        found = self.contacts
        return found[0] if found else None

    @property
    def routes(self) -> list[NameAddr]:
        return self._cached_list(
            "route", "Route", lambda v: parse_name_addr_list(v, "Route", name_addr_only=True))

    @property
    def record_routes(self) -> list[NameAddr]:
        return self._cached_list(
            "record-route", "Record-Route",
            lambda v: parse_name_addr_list(v, "Record-Route", name_addr_only=True))

    # extensions and content

    def _tokens(self, key: str, name: str) -> list[str]:
        cache = self.headers._cache
        star = key + "*"
        if star not in cache:
            try:
                cache[star] = parse_token_list(self.headers.get_lines(key), name)
            except ParseError as error:
                raise _header_error(name, error) from None
        return cache[star]  # type: ignore[no-any-return]

    @property
    def require(self) -> list[str]:
        return self._tokens("require", "Require")

    @property
    def proxy_require(self) -> list[str]:
        return self._tokens("proxy-require", "Proxy-Require")

    @property
    def supported(self) -> list[str]:
        return self._tokens("supported", "Supported")

    @property
    def unsupported(self) -> list[str]:
        return self._tokens("unsupported", "Unsupported")

    @property
    def allow(self) -> list[str]:
        return self._tokens("allow", "Allow")

    @property
    def accept(self) -> list[ContentType] | None:
        """The media ranges of Accept, or None without one (an empty Accept accepts nothing)."""
        if "accept" not in self.headers:
            return None
        return self._cached_list(  # type: ignore[no-any-return]
            "accept", "Accept",
            lambda v: [parse_content_type(p) for p in split_list(v) if p])

    @property
    def p_asserted_identity(self) -> list[NameAddr]:
        return self._cached_list(
            "p-asserted-identity", "P-Asserted-Identity",
            lambda v: parse_name_addr_list(v, "P-Asserted-Identity"))

    @property
    def privacy(self) -> list[str]:
        """RFC 3323 priv-values, lowercased (``Privacy: id;user`` -> ``["id", "user"]``)."""
        return self._cached_list("privacy", "Privacy", _parse_privacy)

    @property
    def expires(self) -> int | None:
        """Expires in seconds; absurdly large values are clamped to 2**32-1 (RFC 4475 3.1.2.4)."""
        return self._cached("expires", "Expires",
                            lambda v: min(_check_digits_any(v, "Expires"), 2**32 - 1))

    # equality and bytes

    def _start(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if type(self) is not type(other):
            return NotImplemented
        assert isinstance(other, Message)
        return (
            self._start() == other._start()
            and _semantic(self.headers) == _semantic(other.headers)
            and self.body == other.body
        )

    __hash__ = None  # type: ignore[assignment]

    def __bytes__(self) -> bytes:
        return serialize(self)


def _semantic(headers: Headers) -> list[tuple[str, str]]:
    return [(k, v) for _, v, k in headers._items if k != "content-length"]


def _parse_privacy(value: str) -> list[str]:
    out = []
    for part in value.split(";"):
        part = part.strip(_WS)
        if not TOKEN_CHARS.issuperset(part) or not part:
            raise ParseError(400, f"Malformed priv-value {part[:40]!r}")
        out.append(part.lower())
    return out


def _check_digits_any(value: str, header: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise ParseError(400, f"Malformed {header}")
    return int(value) if len(value) <= 10 else 2**32 - 1


def _make_headers(headers: Headers | Iterable[tuple[str, str]]) -> Headers:
    return headers if isinstance(headers, Headers) else Headers(headers)


def _check_body(body: bytes) -> bytes:
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError(f"body must be bytes, not {type(body).__name__}")
    return bytes(body)


class Request(Message):
    """A SIP request. ``uri`` is parsed (:data:`~mediacore.sip.uri.URI`)."""

    __slots__ = ("method", "uri")

    method: str
    uri: URI

    def __init__(
        self,
        method: str,
        uri: URI | str,
        headers: Headers | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        *,
        version: str = SIP_VERSION,
    ) -> None:
        if not is_token(method):
            raise ValueError(f"invalid method {method!r}")
        if version != SIP_VERSION:
            raise ValueError(f"we speak {SIP_VERSION}, not {version!r}")
        if isinstance(uri, (SipURI, TelURI, AbsoluteURI)):
            # Parsed or built (the constructors check that it survives formatting),
            # and immutable: only the Request-URI's own rule is left to check.
            if isinstance(uri, SipURI) and uri.headers:
                raise ValueError(f"invalid Request-URI {uri!s}: Request-URI with headers")
            parsed: URI = uri
        else:
            try:
                parsed = _request_uri(uri if isinstance(uri, str) else str(uri))
            except ParseError as error:
                raise ValueError(f"invalid Request-URI {uri!s}: {error.reason}") from None
            if not isinstance(uri, str) and parsed != uri:
                raise ValueError(f"Request-URI {uri!s} does not survive formatting")
        self.method = method
        self.uri = parsed
        self.version = version
        self.headers = _make_headers(headers)
        self.body = _check_body(body)

    def _start(self) -> tuple[Any, ...]:
        return (self.method, self.uri, self.version)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"

    def copy(self) -> Request:
        new = object.__new__(Request)
        new.method, new.uri, new.version = self.method, self.uri, self.version
        new.headers = self.headers.copy()
        new.body = self.body
        return new


class Response(Message):
    """A SIP response; ``reason`` defaults to the RFC's phrase for ``status``."""

    __slots__ = ("reason", "status")

    status: int
    reason: str

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        *,
        version: str = SIP_VERSION,
    ) -> None:
        if not isinstance(status, int) or not 100 <= status <= 699:
            raise ValueError(f"invalid status {status!r}")
        if reason is None:
            reason = REASON_PHRASES.get(status, "")
        if "\r" in reason or "\n" in reason:
            raise ValueError("reason phrase has CR or LF")
        if not reason.isascii():
            reason.encode("utf-8", "surrogateescape")
        if version != SIP_VERSION:
            raise ValueError(f"we speak {SIP_VERSION}, not {version!r}")
        self.status = status
        self.reason = reason.strip(_WS)
        self.version = version
        self.headers = _make_headers(headers)
        self.body = _check_body(body)

    def _start(self) -> tuple[Any, ...]:
        return (self.status, self.reason, self.version)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"

    def copy(self) -> Response:
        new = object.__new__(Response)
        new.status, new.reason, new.version = self.status, self.reason, self.version
        new.headers = self.headers.copy()
        new.body = self.body
        return new


def _request_uri(text: str) -> URI:
    uri = parse_uri(text)
    if isinstance(uri, SipURI) and uri.headers:
        # RFC 3261 19.1.1 table: headers are not allowed in a Request-URI (RFC 4475 escruri).
        raise ParseError(400, "Request-URI with headers")
    return uri


# --- parsing ---------------------------------------------------------------------------

#: raw header name -> (name as we keep it, key, parsed at parse time?)
_NAMES: dict[str, tuple[str, str, bool]] = {}
_EAGER = frozenset({"via", "cseq", "call-id", "from", "to", "contact", "content-length"})
_VERSION_SYNTAX = re.compile(r"SIP/[0-9]+\.[0-9]+").fullmatch


def _name_entry(raw: str) -> tuple[str, str, bool]:
    name = raw.rstrip(_WS)
    if not name or not TOKEN_CHARS.issuperset(name):
        raise ParseError(400, f"Malformed header name {raw[:60]!r}")
    key = header_key(name)
    entry = (name, key, key in _EAGER)
    if len(_NAMES) < 4096:
        _NAMES[raw] = entry
    return entry


def parse(data: bytes, limits: ParserLimits = DEFAULT_LIMITS) -> Request | Response:
    """Parse one whole message: a datagram, or a stream message cut by message_length().

    Leading CRLFs (keepalives) are skipped. Raises ParseError; see the
    module docstring for what is checked here and what answers go with it.
    """
    try:
        return _parse(data, limits)
    except ParseError as error:
        _annotate(error, data, limits)
        raise
    except Exception as exc:  # a parser bug must not take a listener down
        error = ParseError(400, "Unparseable message")
        _annotate(error, data, limits)
        raise error from exc


def _parse(data: bytes, limits: ParserLimits) -> Request | Response:
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    max_size = limits.max_message_size
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        if len(data) - start > max_size:
            raise ParseError(513, "Message Too Large")
        if not data.endswith(b"\r\n") or len(data) - start < 4:
            raise ParseError(400, "Incomplete message: no empty line after the headers")
        # A datagram that ends right after its last header line: the datagram
        # frames the message, so the missing empty line costs nothing.
        end = body_start = len(data) - 2
    else:
        body_start = end + 4
    if end - start > max_size:
        raise ParseError(513, "Message Too Large")
    text = data[start:end].decode("utf-8", "surrogateescape")
    lines = text.split("\r\n")
    try:
        return _parse_lines(data, start, body_start, lines, limits)
    except _Folded:
        # Rare (RFC 4475 wsinv): unfold and go again, rather than look for
        # continuation lines in every message.
        return _parse_lines(data, start, body_start, _unfold(lines), limits)


class _Folded(Exception):
    """A header line starts with SP or HTAB: the head has to be unfolded first."""


def _parse_lines(
    data: bytes, start: int, body_start: int, lines: list[str], limits: ParserLimits
) -> Request | Response:
    max_size = limits.max_message_size
    joined = "".join(lines)
    if "\r" in joined or "\n" in joined:
        raise ParseError(400, "Bare CR or LF in the message head")
    if len(lines) > limits.max_headers + 1:
        raise ParseError(400, "Too Many Headers")
    if len(joined) > limits.max_line_length:
        max_line = limits.max_line_length
        for line in lines:
            if len(line) > max_line:
                raise ParseError(400, "Header Line Too Long")

    start_line = lines[0]
    if start_line[:4].upper() == "SIP/":
        message: Request | Response = _response_line(start_line)
        is_request = False
    else:
        message = _request_line(start_line)
        is_request = True

    # header fields
    items: list[Item] = []
    append = items.append
    eager: list[tuple[str, str]] = []
    hot = eager.append
    names = _NAMES
    ws = _WS
    # The lookup index (Headers._build_index) too, while we are at it: every
    # message is looked up (check_request, the transaction and dialog layers).
    index: dict[str, list[str]] = {}
    for line in lines[1:]:
        raw, colon, value = line.partition(":")
        entry = names.get(raw)
        if entry is None or not colon:
            if line[:1] in (" ", "\t"):
                raise _Folded
            if not colon:
                raise ParseError(400, f"Header line without a colon: {line[:60]!r}")
            entry = _name_entry(raw)
        name, key, now = entry
        value = value.strip(ws)
        append((name, value, key))
        values = index.get(key)
        if values is None:
            index[key] = [value]
        else:
            values.append(value)
        if now:
            hot((key, value))

    # the headers every message needs, parsed now
    cache: dict[str, Any] = {}
    length = None
    try:
        for key, value in eager:
            if key == "via":
                if "via" not in cache:
                    cache["via"] = parse_vias(value)
                elif "," in value:
                    for part in split_list(value):
                        check_via(part)
                else:
                    check_via(value)
            elif key == "contact":
                if value == "*":
                    contacts = []
                elif "," in value:
                    contacts = parse_name_addr_list(value, "Contact")
                else:
                    contacts = [parse_name_addr(value)]
                if "contact*" in cache:
                    cache["contact*"] += contacts
                else:
                    cache["contact*"] = contacts
            elif key == "content-length":
                if not (value.isdigit() and value.isascii() and len(value) <= 10):
                    raise ParseError(400, "Malformed Content-Length")
                number = int(value)
                if length is not None and number != length:
                    raise ParseError(400, "Conflicting Content-Length headers")
                length = number
            elif key == "from" or key == "to":
                address = parse_name_addr(value)
                if key not in cache:  # a repeated one: check_request answers that
                    cache[key] = address
            elif key == "cseq":
                cseq = parse_cseq(value)
                if "cseq" not in cache:
                    cache["cseq"] = cseq
            else:  # call-id
                if not value or " " in value or "\t" in value:
                    raise ParseError(400, "Malformed Call-ID")
                if key not in cache:
                    cache[key] = value
    except ParseError as error:
        raise _header_error(canonical_name(key), error) from None
    if is_request and "cseq" in cache and cache["cseq"].method != message.method:  # type: ignore[union-attr]
        raise ParseError(400, "CSeq method does not match the request method")

    # body
    if length is None:
        body = data[body_start:]
        if len(data) - start > max_size:
            raise ParseError(413, "Request Entity Too Large")
    else:
        cache["content-length"] = length
        if body_start - start + length > max_size:
            raise ParseError(413, "Request Entity Too Large")
        if body_start + length > len(data):
            raise ParseError(400, "Content-Length larger than the message body")
        body = data[body_start : body_start + length]

    headers = message.headers = object.__new__(Headers)
    headers._items = items
    headers._cache = cache
    headers._index = index
    message.body = body
    return message


def _unfold(lines: list[str]) -> list[str]:
    """Join continuation lines (starting with SP or HTAB) to the line before, with one SP."""
    out: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if len(out) < 2:
                raise ParseError(400, "Continuation line before the first header")
            out[-1] = out[-1].rstrip(_WS) + " " + line.strip(_WS)
        else:
            out.append(line)
    return out


def _request_line(line: str) -> Request:
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        # Call it a request only if it starts like one (not, say, a TLS hello).
        looks = is_token(parts[0]) and len(parts) > 1
        raise ParseError(400, "Malformed Request-Line", is_request=True if looks else None)
    method, uri_text, version = parts
    if method not in KNOWN_METHODS and not TOKEN_CHARS.issuperset(method):
        raise ParseError(400, "Malformed method", is_request=True)
    if version != SIP_VERSION:
        upper = version.upper()
        if upper != SIP_VERSION:
            if _VERSION_SYNTAX(upper):
                raise ParseError(505, "Version Not Supported", is_request=True)
            raise ParseError(400, "Malformed SIP-Version", is_request=True)
    try:
        uri = parse_uri(uri_text)
        if isinstance(uri, SipURI) and uri.headers:
            uri = _request_uri(uri_text)  # refuses, with the reason
    except ParseError as error:
        raise ParseError(400, f"Bad Request-URI: {error.reason}"[:200], is_request=True) from None
    request = object.__new__(Request)
    request.method = method
    request.uri = uri
    request.version = SIP_VERSION
    return request


def _response_line(line: str) -> Response:
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version.upper() != SIP_VERSION:
        if _VERSION_SYNTAX(version.upper()):
            raise ParseError(505, "Version Not Supported", is_request=False)
        raise ParseError(400, "Malformed SIP-Version", is_request=False)
    if len(code) != 3 or not code.isdigit() or not code.isascii() or code[0] not in "123456":
        raise ParseError(400, "Malformed status code", is_request=False)
    response = object.__new__(Response)
    response.status = int(code)
    response.reason = reason.strip(_WS)
    response.version = SIP_VERSION
    return response


def _annotate(error: ParseError, data: bytes, limits: ParserLimits) -> None:
    """Add what can still be read of a refused message: kind and header fields."""
    if error.is_request is not None and error.headers is not None:
        return
    try:
        first, fields = _salvage(data, limits)
    except Exception:  # salvage is best effort by nature
        return
    if error.is_request is None and first:
        if first[:4].upper() == "SIP/":
            error.is_request = False
        else:
            method, space, _ = first.partition(" ")
            error.is_request = True if space and is_token(method) else None
    if error.headers is None:
        error.headers = Headers._new(fields)


def _salvage(data: bytes, limits: ParserLimits) -> tuple[str, list[Item]]:
    data = data.lstrip(b"\r\n")[: limits.max_message_size]
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end]
    text = head.decode("utf-8", "surrogateescape").replace("\r\n ", " ").replace("\r\n\t", " ")
    lines = text.split("\r\n")
    items: list[Item] = []
    for line in lines[1 : limits.max_headers + 1]:
        raw, colon, value = line.partition(":")
        name = raw.strip(_WS)
        # A bare CR or LF must not be echoed into our answer (header injection).
        if (colon and is_token(name) and len(line) <= limits.max_line_length
                and "\r" not in value and "\n" not in value):
            items.append((name, value.strip(_WS), header_key(name)))
    return lines[0], items


def message_length(buffer: bytes | bytearray, limits: ParserLimits = DEFAULT_LIMITS) -> int | None:
    """For stream transports: the length of the first complete message in ``buffer``.

    Returns None while more bytes are needed. The length counts leading
    CRLFs (keepalives, which RFC 3261 7.5 says to ignore), so
    ``parse(buffer[:n])`` parses the message and ``del buffer[:n]`` moves on.
    Raises ParseError when the stream cannot be framed: Content-Length
    missing (it is mandatory on streams, 18.3), malformed or conflicting
    (400), or a message beyond the limits (513/413). The connection cannot
    be resynchronised after that and should be closed.
    """
    start = 0
    while buffer.startswith(b"\r\n", start):
        start += 2
    if start == len(buffer):
        return None
    end = buffer.find(b"\r\n\r\n", start)
    max_size = limits.max_message_size
    if end < 0:
        if len(buffer) - start > max_size:
            raise ParseError(513, "Message Too Large")
        return None
    if end - start > max_size:
        raise ParseError(513, "Message Too Large")
    text = bytes(buffer[start:end]).decode("utf-8", "surrogateescape")
    length = None
    for line in _unfold(text.split("\r\n"))[1:] if "\r\n " in text or "\r\n\t" in text \
            else text.split("\r\n")[1:]:
        raw, colon, value = line.partition(":")
        if colon and header_key(raw.strip(_WS)) == "content-length":
            number = _check_digits(value.strip(_WS), "Content-Length")
            if length is not None and number != length:
                raise ParseError(400, "Conflicting Content-Length headers")
            length = number
    if length is None:
        raise ParseError(400, "Missing Content-Length on a stream transport")
    total = end + 4 + length
    if total - start > max_size:
        raise ParseError(413, "Request Entity Too Large")
    return total if len(buffer) >= total else None


# --- serialising -------------------------------------------------------------------------


def serialize(message: Message) -> bytes:
    """The wire form of ``message``, with a Content-Length that matches its body."""
    if isinstance(message, Request):
        cseq = message.headers._cache.get("cseq") if message.headers._cache else None
        if cseq is None and "cseq" in message.headers:
            cseq = message.cseq
        if cseq is not None and cseq.method != message.method:
            raise ValueError(f"CSeq method {cseq.method} does not match {message.method}")
        lines = [f"{message.method} {message.uri} {message.version}"]
    elif isinstance(message, Response):
        lines = [f"{message.version} {message.status} {message.reason}"]
    else:
        raise TypeError(f"not a SIP message: {message!r}")
    body = message.body
    length_written = False
    for name, value, key in message.headers._items:
        if key == "content-length":
            if length_written:
                continue
            value = str(len(body))
            length_written = True
        lines.append(f"{name}: {value}")
    if not length_written:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body


# --- building ------------------------------------------------------------------------------

#: Dialog-creating methods whose 101-299 responses copy Record-Route (RFC 3261 12.1.1).
_DIALOG_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    extra_headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """A response to ``request`` as RFC 3261 8.2.6 builds it.

    Via (all of them, in order), From, Call-ID and CSeq are copied as they
    were received; To too, with ``;tag=to_tag`` added when the request's To
    has no tag yet. A 100 copies Timestamp (8.2.6.1); a 101-299 to a
    dialog-creating request copies Record-Route (12.1.1). ``extra_headers``
    follow (Contact, Allow, Unsupported...), checked like Headers.add.
    """
    if to_tag is not None and not is_token(to_tag):
        raise ValueError(f"invalid To tag {to_tag!r}")
    response = Response(status, reason, (), body)
    items = response.headers._items
    record_route = 100 < status < 300 and request.method in _DIALOG_METHODS
    for _, value, key in request.headers._items:
        if key in _COPIED or (
            key == "timestamp" and status == 100
        ) or (key == "record-route" and record_route):
            items.append((_CANONICAL[key], value, key))
        elif key == "to":
            if to_tag is not None and request.to_tag is None:
                value = f"{value};tag={to_tag}"
            items.append(("To", value, key))
    # What Headers.add does, on headers without a cache or an index yet.
    items += [_checked_item(name, value) for name, value in extra_headers]
    return response


_COPIED = frozenset({"via", "from", "call-id", "cseq"})


def make_error_response(error: ParseError, *, to_tag: str | None = None) -> Response | None:
    """The answer to a request parse() refused, or None when there is none to give.

    None for responses (they are dropped) and for requests without a Via to
    send the answer along. The reason phrase is the error's reason. Header
    values are copied raw, broken ones included, because the sender matches
    our answer to its transaction by them (RFC 4475 ``scalar02``, ``badinv01``).
    """
    if not error.can_respond or error.headers is None:
        return None
    if error.status < 300:
        return None
    if to_tag is not None and not is_token(to_tag):
        raise ValueError(f"invalid To tag {to_tag!r}")
    # The reason may quote what was received; keep the printable ASCII of it.
    reason = "".join(c if " " <= c <= "~" else "?" for c in error.reason[:120])
    response = Response(error.status, reason)
    items = response.headers._items
    has_tag = False
    for _, value, key in error.headers._items:
        if key == "to":
            try:
                has_tag = parse_name_addr(value).tag is not None
            except ParseError:
                has_tag = True  # never add to what we cannot read
            if to_tag is not None and not has_tag:
                value = f"{value};tag={to_tag}"
            items.append(("To", value, key))
        elif key in ("via", "from", "call-id", "cseq"):
            items.append((canonical_name(key), value, key))
    return response


def _top_via_text(request: Request) -> str:
    first = request.headers.get("via")
    if first is None:
        raise ValueError("request has no Via")
    return split_list(first)[0]


def make_ack_for_non_2xx(request: Request, response: Response) -> Request:
    """The ACK a client INVITE transaction sends for a 300-699 (RFC 3261 17.1.1.3).

    Request-URI, Call-ID, From and the top Via come from the INVITE, To from
    the response (it carries the UAS's tag), CSeq keeps the number with
    method ACK, and the INVITE's Route headers are repeated.
    """
    h = request.headers
    fields = [("Via", _top_via_text(request)), ("Max-Forwards", "70")]
    fields += [("Route", v) for v in h.get_lines("route")]
    fields += [
        ("From", h.get("from")),
        ("To", response.headers.get("to")),
        ("Call-ID", h.get("call-id")),
        ("CSeq", f"{request.cseq.number} ACK"),
    ]
    return _own_request("ACK", request.uri, fields)


def make_cancel(request: Request) -> Request:
    """The CANCEL for a pending ``request`` (RFC 3261 9.1): same R-URI, Call-ID, From,
    To, CSeq number and top Via, method CANCEL, and the request's Route headers."""
    h = request.headers
    fields = [("Via", _top_via_text(request)), ("Max-Forwards", "70")]
    fields += [("Route", v) for v in h.get_lines("route")]
    fields += [
        ("From", h.get("from")),
        ("To", h.get("to")),
        ("Call-ID", h.get("call-id")),
        ("CSeq", f"{request.cseq.number} CANCEL"),
    ]
    return _own_request("CANCEL", request.uri, fields)


def _own_request(method: str, uri: URI, fields: list[tuple[str, Any]]) -> Request:
    request = object.__new__(Request)
    request.method = method
    request.uri = uri
    request.version = SIP_VERSION
    request.headers = Headers(
        (name, value) for name, value in fields if value is not None)
    request.body = b""
    return request


# --- what a UAS answers before looking further (RFC 3261 8.2) -------------------------------


class Rejection(NamedTuple):
    """The answer :func:`check_request` chose: status, reason, and headers it needs."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


_MANDATORY = (("via", "Via"), ("from", "From"), ("to", "To"), ("call-id", "Call-ID"),
              ("cseq", "CSeq"))
_SINGLE = (("from", "From"), ("to", "To"), ("call-id", "Call-ID"), ("cseq", "CSeq"),
           ("max-forwards", "Max-Forwards"), ("content-type", "Content-Type"))


def _media_matches(ranges: list[ContentType], mime: str) -> bool:
    mtype, _, subtype = mime.partition("/")
    for r in ranges:
        if (r.type == "*" or r.type == mtype) and (r.subtype == "*" or r.subtype == subtype):
            return True
    return False


def _well_formed(message: Message) -> str | None:
    """Why ``message`` lacks what every request and response needs, or None."""
    headers = message.headers
    index = headers._index
    if index is None:
        index = headers._build_index()
    for key, name in _MANDATORY:
        if key not in index:
            return f"Missing {name} header"
    for key, name in _SINGLE:
        values = index.get(key)
        if values is not None and len(values) > 1:
            return f"Multiple {name} headers"
    try:
        message.vias  # noqa: B018 (each access parses and checks)
        message.from_.uri  # noqa: B018
        message.to.uri  # noqa: B018
        message.cseq  # noqa: B018
        message.call_id  # noqa: B018
        # The optional ones only when present: absent, there is nothing to check.
        if "contact" in index:
            for contact in message.contacts:
                contact.uri  # noqa: B018
        if "record-route" in index:
            for route in message.record_routes:
                route.uri  # noqa: B018
        if "max-forwards" in index:
            message.max_forwards  # noqa: B018
        if "content-type" in index:
            message.content_type  # noqa: B018
    except ParseError as error:
        return error.reason
    return None


def check_request(
    request: Request,
    *,
    methods: Collection[str] | None = None,
    schemes: Collection[str] = ("sip", "sips", "tel"),
    supported: Collection[str] = (),
    accept: Collection[str] = ("application/sdp",),
    answer_type: str | None = "application/sdp",
    forwarding: bool = False,
) -> Rejection | None:
    """What a UAS must answer before processing ``request``, or None to go on.

    In RFC 3261 8.2 order: well-formedness (400: mandatory headers missing
    or repeated, malformed typed values), the method (405 with Allow when
    ``methods`` is given and we know the method, else 501), the
    Request-URI scheme (416), Require (420 with Unsupported), the body's
    Content-Type and Content-Encoding (415 with Accept/Accept-Encoding), and for
    INVITE the Accept header against ``answer_type`` (406). With
    ``forwarding=True`` (the B2BUA is about to send the request on), a
    Max-Forwards of 0 gives 483. An ACK is never answered: a rejection of an
    ACK means "drop it".
    """
    problem = _well_formed(request)
    if problem is not None:
        return Rejection(400, problem)
    try:
        return _check_request(request, methods, schemes, supported, accept, answer_type,
                              forwarding)
    except ParseError as error:
        return Rejection(400, error.reason)


def _check_request(
    request: Request,
    methods: Collection[str] | None,
    schemes: Collection[str],
    supported: Collection[str],
    accept: Collection[str],
    answer_type: str | None,
    forwarding: bool,
) -> Rejection | None:
    method = request.method
    if methods is not None and method not in methods:
        if method in KNOWN_METHODS:
            # A set has no order of its own: sort it, so the Allow header is stable.
            listed = methods if isinstance(methods, (list, tuple)) else sorted(methods)
            return Rejection(405, "Method Not Allowed", (("Allow", ", ".join(listed)),))
        return Rejection(501, "Not Implemented")
    if request.uri.scheme not in schemes:
        return Rejection(416, "Unsupported URI Scheme")
    if method not in ("ACK", "CANCEL"):
        unknown = [tag for tag in request.require if tag not in supported]
        if unknown:
            return Rejection(420, "Bad Extension", (("Unsupported", ", ".join(unknown)),))
    if request.body:
        content_type = request.content_type
        if content_type is None:
            return Rejection(400, "Missing Content-Type header")
        if content_type.mime not in accept:
            return Rejection(415, "Unsupported Media Type", (("Accept", ", ".join(accept)),))
        encodings = [e.lower() for e in request.headers.get_all("content-encoding")]
        if any(e != "identity" for e in encodings):
            return Rejection(415, "Unsupported Media Type", (("Accept-Encoding", "identity"),))
    if method == "INVITE" and answer_type is not None:
        ranges = request.accept
        if ranges is not None and not _media_matches(ranges, answer_type):
            return Rejection(406, "Not Acceptable")
    if forwarding and request.max_forwards == 0:
        return Rejection(483, "Too Many Hops")
    return None


def check_response(response: Response) -> str | None:
    """Why a UAC should drop ``response``, or None to process it.

    Missing or broken mandatory headers, and more than one Via value:
    a response with several was not meant for us (RFC 3261 8.1.3.3; RFC 4475
    ``bcast`` would otherwise be sent on to 255.255.255.255).
    """
    problem = _well_formed(response)
    if problem is not None:
        return problem
    if len(response.vias) != 1:
        return "More than one Via header value"
    return None


# --- bodies ----------------------------------------------------------------------------------


class BodyPart(NamedTuple):
    """One part of a multipart body: its own headers and content bytes."""

    headers: Headers
    body: bytes

    @property
    def content_type(self) -> ContentType | None:
        value = self.headers.get("content-type")
        return None if value is None else parse_content_type(value)


def split_multipart(body: bytes, boundary: str) -> list[BodyPart]:
    """Split a multipart body (RFC 2046 5.1.1) at ``boundary``; preamble and epilogue dropped.

    Part contents are bytes as they were (SDP next to binary S/MIME, as in RFC 4475
    ``mpart01``). Raises ParseError (400) when the boundary never appears or
    the closing delimiter is missing.
    """
    delimiter = b"--" + boundary.encode("utf-8", "surrogateescape")
    if body.startswith(delimiter):
        position = 0
    else:
        position = body.find(b"\r\n" + delimiter)
        if position < 0:
            raise ParseError(400, "Multipart boundary not found")
        position += 2
    parts: list[BodyPart] = []
    separator = b"\r\n" + delimiter
    while True:
        after = position + len(delimiter)
        if body.startswith(b"--", after):
            return parts
        line_end = body.find(b"\r\n", after)
        if line_end < 0:
            raise ParseError(400, "Multipart body ends inside a delimiter line")
        content_start = line_end + 2
        next_delimiter = body.find(separator, content_start - 2)
        if next_delimiter < 0:
            raise ParseError(400, "Multipart body without a closing delimiter")
        parts.append(_body_part(body[content_start:next_delimiter]))
        position = next_delimiter + 2


def _body_part(raw: bytes) -> BodyPart:
    if raw.startswith(b"\r\n"):
        return BodyPart(Headers(), raw[2:])
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        raise ParseError(400, "Multipart part without an empty line after its headers")
    text = raw[:end].decode("utf-8", "surrogateescape")
    lines = _unfold(["", *text.split("\r\n")])[1:]
    items: list[Item] = []
    for line in lines:
        raw_name, colon, value = line.partition(":")
        name = raw_name.strip(_WS)
        if not colon or not is_token(name):
            raise ParseError(400, f"Malformed part header {line[:60]!r}")
        items.append((name, value.strip(_WS), header_key(name)))
    return BodyPart(Headers._new(items), raw[end + 4 :])
