"""URIs (sip, sips, tel, and any other scheme) and the name-addr form that carries them.

This is the bottom of the SIP message layer, so it also holds what every part
of the grammar shares: :class:`ParseError`, token and quoted-string rules, and
``;name=value`` parameters. ``message.py`` re-exports :class:`ParseError`.

Components are kept *as written* (percent-escapes intact, case preserved):
a proxy or B2BUA that copies a URI must not change it, and RFC 3261 19.1.4
comparison is a separate question (:meth:`SipURI.equivalent`), not what
``==`` means. ``==`` is structural, which is what round-trip tests need.

Schemes other than sip, sips and tel parse into :class:`AbsoluteURI` with the
scheme available: rejecting them (416) is the application's decision, and a
parser that refuses them cannot answer at all (RFC 4475 3.3.2, 3.3.4).

Speed: the shapes nearly every message has (no LWS inside, no escapes) are
recognised by one compiled regular expression each, which also validates
them; anything else takes the slower, general path, which is also the one
that explains what is wrong. Parameter lists are validated at once but only
split into pairs when first read.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from mediacore.sip.message import Headers

__all__ = [
    "URI",
    "AbsoluteURI",
    "NameAddr",
    "ParseError",
    "SipURI",
    "TelURI",
    "format_params",
    "is_token",
    "parse_hostport",
    "parse_name_addr",
    "parse_params",
    "parse_uri",
    "quote_string",
    "split_list",
    "unescape",
    "unquote_string",
]


class ParseError(Exception):
    """Anything the parser refuses, with the answer it deserves.

    ``status`` and ``reason`` are what to put in the response line (or a
    Warning); ``is_request`` says whether the message was a request (True),
    a response (False: drop it, responses are never answered) or unknown
    (None). ``headers`` holds whatever header fields could still be split off
    the message, which is often enough to address a 400
    (``message.make_error_response`` uses Via, From, To, Call-ID and CSeq).
    """

    def __init__(
        self,
        status: int = 400,
        reason: str = "Bad Request",
        *,
        is_request: bool | None = None,
        headers: Headers | None = None,
    ) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.is_request = is_request
        self.headers = headers

    @property
    def can_respond(self) -> bool:
        """True when this came from a request whose response has somewhere to go."""
        return bool(self.is_request) and self.headers is not None and "via" in self.headers


# --- shared grammar (RFC 3261 25.1) ---------------------------------------------

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
TOKEN_CHARS = frozenset(_ALNUM + "-.!%*_+`'~")
# gen-value = token / host / quoted-string; ':' '[' ']' let IPv6 hosts through.
_GEN_VALUE_CHARS = TOKEN_CHARS | frozenset(":[]")
_WS = " \t"

# Regular-expression pieces. None has nested quantifiers over overlapping
# classes, so matching stays linear in the input however hostile it is.
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_QUOTED_BODY = r'[^"\\\r\n]*(?:\\[^\r\n][^"\\\r\n]*)*'
_GEN_VALUE = rf'(?:[A-Za-z0-9\-.!%*_+`\'~:\[\]]+|"{_QUOTED_BODY}")'
_HPARAMS = rf"(?:;{_TOKEN}(?:={_GEN_VALUE})?)*"
_HOST = r"(?:[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*\.?|\[[0-9A-Fa-f:.]+\])"
_PORT = r"[0-9]{1,5}"
_UPCHAR = r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$%]"
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})").search
_UNESCAPE_PAIR = re.compile(r"\\(.)", re.DOTALL).sub


def is_token(text: str) -> bool:
    """RFC 3261 ``token``: what methods, header names and most parameters are made of."""
    return bool(text) and TOKEN_CHARS.issuperset(text)


def unescape(text: str) -> str:
    """Decode %-escapes (``%75se%72`` -> ``user``), for comparing and displaying, not copying."""
    if "%" not in text:
        return text
    from urllib.parse import unquote

    return unquote(text, errors="surrogateescape")


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """Unescape the quoted-string opening at ``text[start]``; return it and the index after it."""
    end = text.find('"', start + 1)
    if end < 0:
        raise ParseError(400, "Unterminated quoted string")
    if "\\" not in text[start + 1 : end]:
        return text[start + 1 : end], end + 1
    out: list[str] = []
    i = start + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            if i + 1 >= n or text[i + 1] in "\r\n":
                break
            out.append(text[i + 1])
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    raise ParseError(400, "Unterminated quoted string")


def unquote_string(text: str) -> str:
    """The content of a quoted-string (``"a\\"b"`` -> ``a"b``); other text is returned as is."""
    if text[:1] != '"':
        return text
    value, end = _read_quoted(text, 0)
    if end != len(text):
        raise ParseError(400, "Text after a quoted string")
    return value


def quote_string(text: str) -> str:
    """A quoted-string that :func:`unquote_string` turns back into ``text``.

    Backslash and DQUOTE are escaped, and so are control characters other
    than HTAB, because qdtext cannot carry them raw. CR and LF cannot be
    carried at all (quoted-pair excludes them) and raise ValueError.
    """
    if '"' not in text and "\\" not in text and text.isprintable():
        return f'"{text}"'  # nothing to escape (printable: no controls, no CR/LF)
    if "\r" in text or "\n" in text:
        raise ValueError("CR and LF cannot appear in a quoted string")
    out = []
    for c in text:
        if c in '"\\' or (c < " " and c != "\t") or c == "\x7f":
            out.append("\\")
        out.append(c)
    return '"' + "".join(out) + '"'


_SPLIT_LIST = re.compile(rf'"{_QUOTED_BODY}"|<[^>]*>|,')


def split_list(value: str) -> list[str]:
    """Split a header value at the commas that separate its elements.

    Commas inside quoted strings and ``<...>`` do not split (a display name
    "Bell, Alexander" or a URI with a comma in its user part). Elements are
    stripped; empty ones are kept so that typed parsers can refuse them.
    """
    if "," not in value:
        return [value.strip(_WS)]
    if '"' not in value and "<" not in value:
        return [part.strip(_WS) for part in value.split(",")]
    parts = []
    start = 0
    for match in _SPLIT_LIST.finditer(value):
        if match.group() == ",":
            parts.append(value[start : match.start()].strip(_WS))
            start = match.end()
    parts.append(value[start:].strip(_WS))
    return parts


def _split_params(text: str) -> list[str]:
    """``text`` split at semicolons outside quoted strings."""
    if '"' not in text:
        return text.split(";")
    parts = []
    start = 0
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            _, i = _read_quoted(text, i)
            continue
        if c == ";":
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


Params = tuple[tuple[str, str | None], ...]


def parse_params(text: str) -> Params:
    """Header parameters ``;name[=value]...`` (generic-param), LWS allowed around ; and =.

    ``text`` is empty or starts (after optional LWS) with ``;``. Values keep
    their quotes, if any: what was written is what is copied on.
    """
    if not text:
        return ()
    parts = _split_params(text) if '"' in text else text.split(";")
    first = parts[0]
    if first and first.strip(_WS):
        raise ParseError(400, f"Unexpected text {first.strip(_WS)[:40]!r} before parameters")
    lws = " " in text or "\t" in text
    out: list[tuple[str, str | None]] = []
    for part in parts[1:]:
        name, eq, value = part.partition("=")
        if lws:
            name = name.strip(_WS)
            value = value.strip(_WS)
        if not name or not TOKEN_CHARS.issuperset(name):
            raise ParseError(400, f"Malformed parameter {part.strip(_WS)[:40]!r}")
        if eq:
            if not value:
                raise ParseError(400, f"Parameter {name!r} has an empty value")
            if value[0] == '"':
                unquote_string(value)  # validates; the quotes stay
            elif not _GEN_VALUE_CHARS.issuperset(value):
                raise ParseError(400, f"Malformed value of parameter {name!r}")
            out.append((name, value))
        else:
            out.append((name, None))
    return tuple(out)


def _split_checked(text: str) -> Params:
    """Split parameters a pattern has already validated (no LWS; quotes only in values)."""
    if '"' in text:
        return parse_params(text)
    out = []
    for part in text[1:].split(";"):
        name, eq, value = part.partition("=")
        out.append((name, value if eq else None))
    return tuple(out)


def format_params(params: Params) -> str:
    if not params:
        return ""
    return "".join([f";{n}" if v is None else f";{n}={v}" for n, v in params])


def _get_param(params: Params, name: str, default: Any = None) -> Any:
    lname = name.lower()
    for n, v in params:
        if n == name or n.lower() == lname:
            return v
    return default


def _has_param(params: Params, name: str) -> bool:
    lname = name.lower()
    for n, _ in params:  # noqa: SIM110 (a plain loop beats any() over a generator here)
        if n == name or n.lower() == lname:
            return True
    return False


def _checked_params(params: Params, *, uri: bool) -> Params:
    """Parameters given through the API, as a tuple, if they survive formatting."""
    if not params:
        return ()
    params = tuple((str(n), None if v is None else str(v)) for n, v in params)
    text = format_params(params)
    try:
        parsed = _parse_uri_params(text) if uri else parse_params(text)
    except ParseError as error:
        raise ValueError(f"invalid parameters {params!r}: {error.reason}") from None
    if parsed != params:
        raise ValueError(f"parameters {params!r} do not survive formatting")
    return params


# --- URIs --------------------------------------------------------------------------

_USER_CHARS = frozenset(_ALNUM + "-_.!~*'()&=+$,;?/%")
_PASSWORD_CHARS = frozenset(_ALNUM + "-_.!~*'()&=+$,%")
_PARAM_CHARS = frozenset(_ALNUM + "-_.!~*'()[]/:&+$%")
_HNV_CHARS = frozenset(_ALNUM + "-_.!~*'()[]/?:+$%")
_HOST_CHARS = frozenset(_ALNUM + "-_.")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*").fullmatch
_OPAQUE = re.compile(r"[A-Za-z0-9\-_.!~*'();/?:@&=+$,\[\]#%]+").fullmatch
_TEL_NUMBER = re.compile(r"\+?[0-9A-Fa-f*#\-.()]+").fullmatch
# hostport and uri-parameters of a SIP URI (what follows userinfo, before '?').
_SIP_REST = re.compile(rf"({_HOST})(?::({_PORT}))?((?:;{_UPCHAR}+(?:={_UPCHAR}+)?)*)").fullmatch


def _chars(text: str, allowed: frozenset[str]) -> bool:
    """``text`` is made of ``allowed``, any '%' starting a valid escape."""
    return allowed.issuperset(text) and ("%" not in text or _BAD_ESCAPE(text) is None)


def _parse_host(text: str) -> str:
    """Validate a host (hostname, IPv4 or ``[IPv6]``) and return it without brackets."""
    if text and _HOST_CHARS.issuperset(text) and text[0] != "." and ".." not in text:
        return text
    if text[:1] == "[" and text[-1:] == "]":
        inner = text[1:-1]
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise ParseError(400, f"Malformed IPv6 reference {text[:60]!r}") from None
        if "%" not in inner:
            return inner
    raise ParseError(400, f"Malformed host {text[:60]!r}")


def _parse_port(text: str) -> int:
    if len(text) <= 5 and text.isdigit() and text.isascii():
        port = int(text)
        if port <= 65535:
            return port
    raise ParseError(400, f"Malformed port {text[:20]!r}")


def parse_hostport(text: str) -> tuple[str, int | None]:
    """``host[:port]`` -> (host without brackets, port or None)."""
    if text[:1] == "[":
        close = text.find("]")
        if close < 0:
            raise ParseError(400, f"Malformed IPv6 reference {text[:60]!r}")
        host = _parse_host(text[: close + 1])
        rest = text[close + 1 :]
        if not rest:
            return host, None
        if rest[0] != ":":
            raise ParseError(400, f"Malformed host {text[:60]!r}")
        return host, _parse_port(rest[1:])
    host, colon, port = text.partition(":")
    return _parse_host(host), (_parse_port(port) if colon else None)


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _parse_uri_params(text: str) -> Params:
    """URI parameters ``;name[=value]`` (uri-parameter): no LWS, no quoting."""
    if not text:
        return ()
    out: list[tuple[str, str | None]] = []
    for part in text.split(";")[1:]:
        name, eq, value = part.partition("=")
        if not name or not _chars(name, _PARAM_CHARS):
            raise ParseError(400, f"Malformed URI parameter {part[:40]!r}")
        if eq:
            if not value or not _chars(value, _PARAM_CHARS):
                raise ParseError(400, f"Malformed value of URI parameter {name[:40]!r}")
            out.append((name, value))
        else:
            out.append((name, None))
    return tuple(out)


def _parse_uri_headers(text: str) -> tuple[tuple[str, str], ...]:
    out = []
    for part in text.split("&"):
        name, eq, value = part.partition("=")
        if not eq or not name or not _chars(name, _HNV_CHARS) or not _chars(value, _HNV_CHARS):
            raise ParseError(400, f"Malformed URI header {part[:40]!r}")
        out.append((name, value))
    return tuple(out)


class WithParams:
    """``param``/``has_param`` over a ``params`` sequence of (name, value) pairs."""

    __slots__ = ()
    params: Params

    def param(self, name: str, default: Any = None) -> Any:
        """The value of parameter ``name`` (case-insensitive); None for a flag."""
        return _get_param(self.params, name, default)

    def has_param(self, name: str) -> bool:
        return _has_param(self.params, name)


class LazyParams(WithParams):
    """Parameters kept as their text until first read: most are never read,
    and splitting them costs more than the rest of the value's parse."""

    __slots__ = ()
    _params: Params | None
    _ptext: str

    @property  # type: ignore[override]
    def params(self) -> Params:
        params = self._params
        if params is None:
            params = self._params = _split_checked(self._ptext)
        return params


class SipURI(LazyParams):
    """A sip: or sips: URI (RFC 3261 19.1).

    ``user``, ``password``, parameter and header values keep their
    %-escapes (:func:`unescape` them to compare or display). ``host`` has no
    brackets, also for IPv6 (they are added when formatting). Instances are
    immutable by convention: use :meth:`replace`.
    """

    __slots__ = ("_params", "_ptext", "_text", "headers", "host", "password", "port",
                 "scheme", "user")

    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None
    headers: tuple[tuple[str, str], ...]

    def __init__(
        self,
        host: str,
        user: str | None = None,
        *,
        port: int | None = None,
        params: Params = (),
        headers: tuple[tuple[str, str], ...] = (),
        password: str | None = None,
        scheme: str = "sip",
    ) -> None:
        self.scheme = scheme.lower()
        self.user = user
        self.password = password
        self.host = host[1:-1] if host[:1] == "[" else host
        self.port = port
        self._params: Params | None = tuple(params)
        self._ptext = ""
        self.headers = tuple(headers)
        self._text: str | None = None
        if self.scheme not in ("sip", "sips"):
            raise ValueError(f"not a SIP scheme: {scheme!r}")
        try:
            again = parse_uri(str(self))
        except ParseError as error:
            raise ValueError(f"invalid SIP URI {str(self)!r}: {error.reason}") from None
        if again != self:
            raise ValueError(f"SIP URI {str(self)!r} does not survive formatting")

    def __str__(self) -> str:
        text = self._text
        if text is None:
            parts = [self.scheme, ":"]
            if self.user is not None:
                parts.append(self.user)
                if self.password is not None:
                    parts += (":", self.password)
                parts.append("@")
            parts.append(_format_host(self.host))
            if self.port is not None:
                parts.append(f":{self.port}")
            parts.append(format_params(self.params))
            if self.headers:
                parts += ("?", "&".join(f"{n}={v}" for n, v in self.headers))
            text = self._text = "".join(parts)
        return text

    def __repr__(self) -> str:
        return f"SipURI({str(self)!r})"

    def _key(self) -> tuple[Any, ...]:
        return (self.scheme, self.user, self.password, self.host, self.port,
                self.params, self.headers)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SipURI):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def replace(self, **changes: Any) -> SipURI:
        """A copy with some components changed (validated like the constructor)."""
        fields: dict[str, Any] = {
            "host": self.host, "user": self.user, "port": self.port, "params": self.params,
            "headers": self.headers, "password": self.password, "scheme": self.scheme,
        }
        fields.update(changes)
        return SipURI(**fields)

    @property
    def transport(self) -> str | None:
        value = _get_param(self.params, "transport")
        return value.lower() if value else None

    @property
    def secure(self) -> bool:
        return self.scheme == "sips"

    def equivalent(self, other: object) -> bool:
        """RFC 3261 19.1.4 comparison (escapes decoded, host and params case-insensitive)."""
        if not isinstance(other, SipURI) or self.scheme != other.scheme:
            return False
        if _unq(self.user) != _unq(other.user) or _unq(self.password) != _unq(other.password):
            return False
        if self.host.lower() != other.host.lower() or self.port != other.port:
            return False
        mine = {unescape(n).lower(): _unq_lower(v) for n, v in self.params}
        theirs = {unescape(n).lower(): _unq_lower(v) for n, v in other.params}
        for name in mine.keys() | theirs.keys():
            if name in ("user", "ttl", "method", "maddr", "transport"):
                if mine.get(name, "-") != theirs.get(name, "-"):
                    return False
            elif name in mine and name in theirs and mine[name] != theirs[name]:
                return False
        mine_h = sorted((unescape(n).lower(), unescape(v)) for n, v in self.headers)
        theirs_h = sorted((unescape(n).lower(), unescape(v)) for n, v in other.headers)
        return mine_h == theirs_h


def _unq(text: str | None) -> str | None:
    return None if text is None else unescape(text)


def _unq_lower(text: str | None) -> str | None:
    return None if text is None else unescape(text).lower()


class TelURI(WithParams):
    """A tel: URI (RFC 3966): ``number`` as written, with its parameters."""

    __slots__ = ("_text", "number", "params")

    scheme = "tel"

    def __init__(self, number: str, params: Params = ()) -> None:
        self.number = number
        self.params = tuple(params)
        self._text: str | None = None
        try:
            again = parse_uri(str(self))
        except ParseError as error:
            raise ValueError(f"invalid tel URI {str(self)!r}: {error.reason}") from None
        if again != self:
            raise ValueError(f"tel URI {str(self)!r} does not survive formatting")

    def __str__(self) -> str:
        if self._text is None:
            self._text = f"tel:{self.number}{format_params(self.params)}"
        return self._text

    def __repr__(self) -> str:
        return f"TelURI({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TelURI):
            return NotImplemented
        return (self.number, self.params) == (other.number, other.params)

    def __hash__(self) -> int:
        return hash((self.number, self.params))

    @property
    def is_global(self) -> bool:
        return self.number.startswith("+")


class AbsoluteURI:
    """A URI of a scheme we do not interpret: kept whole, ``scheme`` lowercased."""

    __slots__ = ("rest", "scheme")

    def __init__(self, scheme: str, rest: str) -> None:
        if not _SCHEME(scheme) or not _OPAQUE(rest) or _BAD_ESCAPE(rest):
            raise ValueError(f"invalid URI {scheme}:{rest}")
        self.scheme = scheme.lower()
        self.rest = rest

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"

    def __repr__(self) -> str:
        return f"AbsoluteURI({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AbsoluteURI):
            return NotImplemented
        return (self.scheme, self.rest) == (other.scheme, other.rest)

    def __hash__(self) -> int:
        return hash((self.scheme, self.rest))


URI = Union[SipURI, TelURI, AbsoluteURI]  # noqa: UP007 (a runtime alias, also for isinstance)


#: The longest text the parse caches below (and in headers.py and message.py)
#: keep: real values are far shorter, and a sender of 8 KB ones must not make
#: us hold thousands of them.
MAX_KEPT = 512

#: Parsed URIs by their text. URIs are immutable, so one object can serve every
#: message that carries the text: a call repeats its From, To, Contact and
#: Request-URIs in each of its requests and responses.
_URIS: dict[str, URI] = {}
_URIS_MAX = 4096


def parse_uri(text: str) -> URI:
    """Parse a URI as it appears in a Request-Line or between ``<`` and ``>``.

    Raises ParseError (400) for anything that is not a URI, including one
    with whitespace inside (RFC 4475 ``lwsruri``, ``badaspec``).
    """
    uri = _URIS.get(text) if type(text) is str else None
    if uri is None:
        uri = _parse_uri(text)
        if len(text) <= MAX_KEPT:
            if len(_URIS) >= _URIS_MAX:
                _URIS.clear()  # the calls of the last few seconds fill it again
            _URIS[text] = uri
    return uri


def _parse_uri(text: str) -> URI:
    if text.startswith("sip:"):
        return _parse_sip(text, "sip", 4)
    colon = text.find(":")
    if colon <= 0:
        raise ParseError(400, f"Malformed URI {text[:80]!r}")
    scheme = text[:colon].lower()
    if scheme == "sip" or scheme == "sips":
        return _parse_sip(text, scheme, colon + 1)
    rest = text[colon + 1 :]
    if scheme == "tel":
        number, semi, params = rest.partition(";")
        if not _TEL_NUMBER(number):
            raise ParseError(400, f"Malformed tel URI {text[:80]!r}")
        tel = object.__new__(TelURI)
        tel._text = text
        tel.number = number
        tel.params = _parse_uri_params(semi + params)
        return tel
    if not _SCHEME(text[:colon]) or not _OPAQUE(rest) or _BAD_ESCAPE(rest):
        raise ParseError(400, f"Malformed URI {text[:80]!r}")
    uri = object.__new__(AbsoluteURI)
    uri.scheme = scheme
    uri.rest = rest
    return uri


def _parse_sip(text: str, scheme: str, start: int) -> SipURI:
    uri = object.__new__(SipURI)
    uri._text = text
    uri.scheme = scheme
    uri.password = None
    at = text.find("@", start)
    if at >= 0:
        user = text[start:at]
        start = at + 1
        if ":" in user:
            user, _, password = user.partition(":")
            if not _chars(password, _PASSWORD_CHARS):
                raise ParseError(400, f"Malformed password in {text[:80]!r}")
            uri.password = password
        if not user or not _chars(user, _USER_CHARS):
            raise ParseError(400, f"Malformed user part in {text[:80]!r}")
        uri.user = user
    else:
        uri.user = None
    rest = text[start:]
    if "?" in rest:
        rest, _, query = rest.partition("?")
        uri.headers = _parse_uri_headers(query)
    else:
        uri.headers = ()
    match = _SIP_REST(rest)
    if match is not None:
        host, port, ptext = match.groups()
        if ptext and "%" in ptext and _BAD_ESCAPE(ptext):
            raise ParseError(400, f"Malformed escape in {text[:80]!r}")
        uri.host = _parse_host(host) if host[0] == "[" else host
        if port is None:
            uri.port = None
        else:
            uri.port = int(port)  # the pattern took 1-5 digits
            if uri.port > 65535:
                raise ParseError(400, f"Malformed port in {text[:80]!r}")
        uri._ptext = ptext
        uri._params = None if ptext else ()
        return uri
    # Not the usual shape: find which part is wrong, for the reason phrase.
    semi = rest.find(";")
    uri._params = _parse_uri_params(rest[semi:]) if semi >= 0 else ()
    uri._ptext = ""
    hostport = rest[:semi] if semi >= 0 else rest
    if not hostport:
        raise ParseError(400, f"No host in {text[:80]!r}")
    uri.host, uri.port = parse_hostport(hostport)
    raise ParseError(400, f"Malformed SIP URI {text[:80]!r}")


# --- name-addr / addr-spec -----------------------------------------------------------


class NameAddr(LazyParams):
    """``"Display" <uri>;param=value``: From, To, Contact, Route, P-Asserted-Identity...

    ``display_name`` is unescaped (None when absent); ``params`` are the
    header parameters after the address (``tag``, ``expires``, ``q``...), not
    URI parameters (RFC 4475 ``cparam01`` vs ``cparam02``). The URI is
    parsed on first access of :attr:`uri`; a malformed one raises
    ParseError (400) there, and ``check_request`` touches it early.
    """

    __slots__ = ("_params", "_ptext", "_uri", "display_name", "uri_text")

    def __init__(
        self,
        uri: URI | str,
        display_name: str | None = None,
        params: Params = (),
    ) -> None:
        if isinstance(uri, str):
            try:
                uri = parse_uri(uri)
            except ParseError as error:
                raise ValueError(error.reason) from None
        elif not isinstance(uri, (SipURI, TelURI, AbsoluteURI)):
            raise TypeError(f"not a URI: {uri!r}")
        self._uri: URI | None = uri
        self.uri_text = str(uri)
        self.display_name = display_name
        self._params: Params | None = _checked_params(params, uri=False)
        self._ptext = ""
        if display_name is not None:
            quote_string(display_name)  # raises ValueError for CR/LF

    @classmethod
    def _new(cls, uri_text: str, display_name: str | None, ptext: str,
             params: Params | None = None) -> NameAddr:
        self = object.__new__(cls)
        self._uri = None
        self.uri_text = uri_text
        self.display_name = display_name
        self._ptext = ptext
        self._params = params if params is not None else (None if ptext else ())
        return self

    @property
    def uri(self) -> URI:
        uri = self._uri
        if uri is None:
            uri = self._uri = parse_uri(self.uri_text)
        return uri

    @property
    def tag(self) -> str | None:
        return _get_param(self.params, "tag")

    def with_param(self, name: str, value: str | None) -> NameAddr:
        """A copy with parameter ``name`` set (replacing any of that name)."""
        lname = name.lower()
        params = (*(p for p in self.params if p[0].lower() != lname), (name, value))
        return NameAddr(self.uri, self.display_name, params)

    def __str__(self) -> str:
        display = "" if self.display_name is None else quote_string(self.display_name) + " "
        return f"{display}<{self.uri_text}>{format_params(self.params)}"

    def __repr__(self) -> str:
        return f"NameAddr({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NameAddr):
            return NotImplemented
        return (self.display_name, self.uri, self.params) == (
            other.display_name, other.uri, other.params)

    def __hash__(self) -> int:
        return hash((self.display_name, self.uri_text, self.params))


_NAME_ADDR = re.compile(
    rf'(?:"({_QUOTED_BODY})"[ \t]*|({_TOKEN}(?:[ \t]+{_TOKEN})*)[ \t]*)?'
    rf"<([^<>\s]+)>({_HPARAMS})"
).fullmatch
_BRACKETED = re.compile(rf"<([^<>\s]+)>({_HPARAMS})").fullmatch
_ADDR_SPEC = re.compile(rf'([A-Za-z][A-Za-z0-9+\-.]*:[^\s<>";,?]+)({_HPARAMS})').fullmatch


def parse_name_addr(text: str, *, name_addr_only: bool = False) -> NameAddr:
    """One ``( name-addr / addr-spec ) *( SEMI param )`` value.

    In the addr-spec form (no angle brackets) every ``;`` starts a header
    parameter, and a URI with ``?``, ``,`` or whitespace must have been
    bracketed (RFC 3261 20.10; RFC 4475 ``regbadct``). Inside brackets no
    whitespace is allowed (``badaspec``); an unquoted display name must be
    tokens (``baddn``). ``name_addr_only`` refuses the addr-spec form, as
    Route and Record-Route do.
    """
    address = _NAME_ADDRS.get(text) if type(text) is str else None
    if address is None:
        address = _parse_name_addr(text)
        if address is None:
            if not name_addr_only:
                match = _ADDR_SPEC(text)
                if match is not None:
                    return NameAddr._new(match.group(1), None, match.group(2))
            return _parse_name_addr_slow(text.strip(_WS), name_addr_only)
        if len(text) <= MAX_KEPT:
            if len(_NAME_ADDRS) >= _NAME_ADDRS_MAX:
                _NAME_ADDRS.clear()
            _NAME_ADDRS[text] = address
    return address


#: What parse_name_addr() read in the ``<...>`` forms, which either flag accepts,
#: by text: a call's From, To and Contact come back in each of its messages
#: (NameAddr, like URIs, is immutable; its URI is parsed once, on first use).
_NAME_ADDRS: dict[str, NameAddr] = {}
_NAME_ADDRS_MAX = 4096


def _parse_name_addr(text: str) -> NameAddr | None:
    """The name-addr forms the patterns recognise, or None: addr-spec (which
    ``name_addr_only`` refuses), LWS around parameters, errors."""
    if text[:1] == "<":
        match = _BRACKETED(text)
        if match is not None:
            address = object.__new__(NameAddr)
            address.display_name = None
            address._uri = None
            address.uri_text, ptext = match.groups()
            address._ptext = ptext
            address._params = None if ptext else ()
            return address
    match = _NAME_ADDR(text)
    if match is not None:
        quoted, words, uri_text, ptext = match.groups()
        address = object.__new__(NameAddr)
        if quoted is not None:
            address.display_name = (
                _UNESCAPE_PAIR(r"\1", quoted) if "\\" in quoted else quoted)
        elif words is not None:
            address.display_name = " ".join(words.split())
        else:
            address.display_name = None
        address._uri = None
        address.uri_text = uri_text
        address._ptext = ptext
        address._params = None if ptext else ()
        return address
    return None


def _parse_name_addr_slow(s: str, name_addr_only: bool) -> NameAddr:
    """The general path: LWS around parameters, and the reasons for refusing."""
    if not s:
        raise ParseError(400, "Empty address")
    display: str | None
    first = s[0]
    if first == "<":
        display = None
        lt = 0
    elif first == '"':
        display, end = _read_quoted(s, 0)
        lt = end
        while lt < len(s) and s[lt] in _WS:
            lt += 1
        if s[lt : lt + 1] != "<":
            raise ParseError(400, "Display name not followed by <URI>")
    else:
        lt = s.find("<")
        if lt < 0:
            if name_addr_only:
                raise ParseError(400, "Address must be in <...>")
            return _parse_addr_spec(s)
        words = s[:lt].split()
        for word in words:
            if not TOKEN_CHARS.issuperset(word):
                shown = s[:lt].strip()[:60]
                raise ParseError(400, f"Unquoted display name {shown!r} is not tokens")
        display = " ".join(words) if words else None
    gt = s.find(">", lt + 1)
    if gt < 0:
        raise ParseError(400, "Missing > after URI")
    uri_text = s[lt + 1 : gt]
    if not uri_text or any(c in uri_text for c in " \t<"):
        raise ParseError(400, f"Malformed URI <{uri_text[:60]}>")
    return NameAddr._new(uri_text, display, "", parse_params(s[gt + 1 :]))


def _parse_addr_spec(s: str) -> NameAddr:
    semi = s.find(";")
    if semi >= 0:
        uri_text = s[:semi].rstrip(_WS)
        params = parse_params(s[semi:])
    else:
        uri_text = s
        params = ()
    for c in " \t,?\"":
        if c in uri_text:
            raise ParseError(400, f"URI {uri_text[:60]!r} must be enclosed in <>")
    if ":" not in uri_text:
        raise ParseError(400, f"Malformed address {uri_text[:60]!r}")
    return NameAddr._new(uri_text, None, "", params)
