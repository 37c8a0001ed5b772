"""SDP (RFC 4566) for a B2BUA that anchors media, and the offer/answer rules (RFC 3264) it needs.

Why a description is kept as lines of text: a B2BUA changes a handful of
fields (``c=``, the ports of ``m=``, ``o=``, ``a=rtcp``) and must pass the rest
through untouched, because the far end may depend on lines we do not
understand (fmtp parameters, ``b=`` lines, vendor attributes). So every
section is an ordered list of ``(type, value)`` pairs, and the typed views
(:attr:`MediaDescription.port`, :attr:`~MediaDescription.connection`,
:meth:`~MediaDescription.rtpmap`, ...) read and write those pairs. A line
nobody wrote to comes out exactly as it went in: for CRLF input,
``serialize(parse(x)) == x`` byte for byte, including line order, spacing
inside values and lines out of RFC order. Input with bare LF line ends is
accepted too (test fixtures and a few UAs send it) and comes out with CRLF,
the only line end RFC 4566 5 allows us to send.

Strict where a mistake would send media to the wrong place or misread the
call: ``v=``, ``o=``, ``s=``, ``t=``, ``c=`` and ``m=`` are checked, and an
unknown type letter rejects the whole description (RFC 4566 5 says such a
description must be ignored, and for a call that means 488). Lenient
elsewhere: attribute values are looked at only when someone asks, line order
inside a section is not enforced and blank lines are skipped. Every refusal
is one :class:`SdpError` whose message names the line; the call layer puts it
in the 488's reason or Warning.

The offer/answer helpers at the bottom (:func:`select_codec`,
:func:`make_answer`, :func:`rewrite_connection`, :func:`is_hold`,
:func:`peer_media`) return new descriptions and never modify their input:
the call layer keeps each leg's last offer and answer, and a helper that
edited them in place would change history.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from mediacore.randomness import random_bits

__all__ = [
    "DIRECTIONS",
    "CodecChoice",
    "Connection",
    "MediaDescription",
    "Origin",
    "PeerMedia",
    "RtpMap",
    "SdpError",
    "SessionDescription",
    "effective_direction",
    "is_hold",
    "make_answer",
    "parse",
    "peer_media",
    "rewrite_connection",
    "select_codec",
    "serialize",
]

#: The direction attributes of RFC 3264 5.1; a section without one is sendrecv.
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_DIRECTION_SET = frozenset(DIRECTIONS)

# RFC 3264 6.1: the answer mirrors the offer's direction.
_ANSWER_DIRECTION = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}
# A peer at 0.0.0.0 cannot receive (RFC 3264 8.4: send it neither RTP nor
# RTCP), whatever its direction attribute says.
_NO_RECEIVE = {
    "sendrecv": "sendonly",
    "sendonly": "sendonly",
    "recvonly": "inactive",
    "inactive": "inactive",
}

_KNOWN_TYPES = frozenset("vosiuepcbtrzkam")
_MAX_DIGITS = 64  # for any number we read; 20 would hold every sane o= and t= value
_MEDIA_TYPES = frozenset("icbka")
_SESSION_ONCE = frozenset("vosc")  # more than one of these is ambiguous, not just untidy

# Where a line goes when a section does not have one yet (RFC 4566 5 order).
_BEFORE_SESSION_O = frozenset("siuepcbtrzka")
_BEFORE_SESSION_C = frozenset("btrzka")
_BEFORE_MEDIA_C = frozenset("bka")

# An anchored stream's ICE candidates would name the other leg's peer, and a
# peer that runs its checks against them bypasses (or fails to reach) our
# relay; without them it falls back to c=/m=, which is us (RFC 8445 5.4).
_ICE_ATTRIBUTES = frozenset({
    "candidate",
    "end-of-candidates",
    "ice-lite",
    "ice-mismatch",
    "ice-options",
    "ice-pacing",
    "ice-pwd",
    "ice-ufrag",
    "remote-candidates",
})


class SdpError(ValueError):
    """A session description we refuse; the call layer answers 488 with ``str(error)``.

    ``line`` is the 1-based line number in the body as received (blank lines
    count), or None when the problem is not on one line (no common codec).
    ``problem`` is the message without the line prefix.
    """

    def __init__(self, problem: str, line: int | None = None) -> None:
        super().__init__(problem if line is None else f"line {line}: {problem}")
        self.problem = problem
        self.line = line


# --- small value types ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connection:
    """A ``c=`` line.

    ``address`` is the connection-address as written, with a multicast
    ``/ttl/count`` suffix if any: a unicast B2BUA never writes one but must
    be able to pass one through.
    """

    nettype: str
    addrtype: str
    address: str

    @classmethod
    def for_address(cls, address: str) -> Connection:
        """``IN IP4`` or ``IN IP6``, whichever ``address`` is (a host name counts as IP4)."""
        return cls("IN", _addrtype(address), address)

    @classmethod
    def parse(cls, value: str, line: int | None = None) -> Connection:
        parts = value.split()
        if len(parts) != 3:
            raise SdpError(
                f"bad c= line {_show(value)}: expected '<nettype> <addrtype> <address>'", line
            )
        return cls(parts[0], parts[1], parts[2])

    @property
    def host(self) -> str:
        """The address without a multicast suffix."""
        return self.address.split("/", 1)[0]

    @property
    def is_unspecified(self) -> bool:
        """0.0.0.0, the RFC 2543 way of saying "send me nothing" (RFC 3264 8.4).

        ``::`` counts too: RFC 3264 says the 0.0.0.0 trick does not work
        with IPv6, but nothing can be sent to ``::`` either, so treating it
        the same is the only safe reading.
        """
        return _is_unspecified(self.host)

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(slots=True)
class Origin:
    """An ``o=`` line, and the state of the one we write on each leg.

    RFC 3264 8: in a dialog, our session id stays fixed and the version goes
    up by one each time our description changes, and only then, because
    peers compare versions to tell a real modification from a refresh (some
    skip a same-version SDP entirely, others tear down media on a changed
    one). So the call layer keeps one Origin per leg, from :meth:`new`, and
    every description we send on that leg goes through :meth:`stamp`, which
    does the bookkeeping; :meth:`next_version` is the bare step.

    Parsed descriptions hand out an Origin as well (``sdp.origin``): a copy
    of their ``o=`` line with no history.
    """

    username: str
    session_id: int
    version: int
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "127.0.0.1"
    _last: bytes | None = field(default=None, repr=False, compare=False)

    @classmethod
    def new(
        cls, address: str, *, username: str = "mediacore", session_id: int | None = None
    ) -> Origin:
        """Our origin for a new leg; pass ``session_id`` to make it deterministic."""
        if session_id is None:
            # Any fresh number will do (RFC 4566 5.2). Staying below 2**31
            # keeps it, and years of version bumps, inside the 32-bit
            # integers some SIP stacks parse these into.
            session_id = random_bits(31)
        return cls(username, session_id, session_id, "IN", _addrtype(address), address)

    @classmethod
    def parse(cls, value: str, line: int | None = None) -> Origin:
        parts = value.split()
        if len(parts) != 6:
            raise SdpError(
                f"bad o= line {_show(value)}: expected '<username> <sess-id> <sess-version>"
                " <nettype> <addrtype> <address>'",
                line,
            )
        username, session_id, version, nettype, addrtype, address = parts
        if not (_is_digits(session_id) and _is_digits(version)):
            raise SdpError(
                f"bad o= line {_show(value)}: session id and version must be numbers"
                f" of at most {_MAX_DIGITS} digits",
                line,
            )
        return cls(username, int(session_id), int(version), nettype, addrtype, address)

    def next_version(self) -> int:
        """Step the version for a changed description, and return it."""
        self.version += 1
        return self.version

    def stamp(self, sdp: SessionDescription) -> None:
        """Put our ``o=`` line into ``sdp``, with a new version if it differs from the last one.

        The comparison is on the whole serialized description, so a
        re-INVITE that re-sends the same media gets the same version (RFC
        3264 8: "MUST be identical to the SDP with that version number").
        """
        sdp.origin = self
        body = sdp.serialize()
        if self._last is not None and body != self._last:
            self.next_version()
            sdp.origin = self
            body = sdp.serialize()
        self._last = body

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


class RtpMap(NamedTuple):
    """What a payload type means: ``a=rtpmap`` or the static table of RFC 3551."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int = 1


# RFC 3551 tables 4 and 5: payload types that mean this without an a=rtpmap.
_STATIC: dict[int, RtpMap] = {
    pt: RtpMap(pt, name, rate, channels)
    for pt, name, rate, channels in (
        (0, "PCMU", 8000, 1),
        (3, "GSM", 8000, 1),
        (4, "G723", 8000, 1),
        (5, "DVI4", 8000, 1),
        (6, "DVI4", 16000, 1),
        (7, "LPC", 8000, 1),
        (8, "PCMA", 8000, 1),
        (9, "G722", 8000, 1),
        (10, "L16", 44100, 2),
        (11, "L16", 44100, 1),
        (12, "QCELP", 8000, 1),
        (13, "CN", 8000, 1),
        (14, "MPA", 90000, 1),
        (15, "G728", 8000, 1),
        (16, "DVI4", 11025, 1),
        (17, "DVI4", 22050, 1),
        (18, "G729", 8000, 1),
        (25, "CelB", 90000, 1),
        (26, "JPEG", 90000, 1),
        (28, "nv", 90000, 1),
        (31, "H261", 90000, 1),
        (32, "MPV", 90000, 1),
        (33, "MP2T", 90000, 1),
        (34, "H263", 90000, 1),
    )
}


# --- sections ---------------------------------------------------------------------


def _direction_in(lines: list[tuple[str, str]]) -> str | None:
    for kind, value in lines:
        if kind == "a" and value in _DIRECTION_SET:
            return value
    return None


class _Lines:
    """What session and media sections share: their lines and the attribute helpers.

    Attributes live among the other lines rather than in a list of their
    own, so that a description with lines out of RFC order still comes back
    byte for byte; :attr:`attributes` is therefore a snapshot, and changes
    go through :meth:`set`, :meth:`add` and :meth:`remove`.
    """

    lines: list[tuple[str, str]]

    @property
    def attributes(self) -> tuple[tuple[str, str | None], ...]:
        """Every ``a=`` line as ``(name, value)`` in order; a flag's value is None."""
        return tuple(_split_attribute(value) for kind, value in self.lines if kind == "a")

    def has(self, name: str) -> bool:
        """Whether the attribute is present; the way to ask about flags, whose value is None."""
        return any(kind == "a" and _split_attribute(v)[0] == name for kind, v in self.lines)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``; None for a flag, ``default`` when absent."""
        for kind, value in self.lines:
            if kind == "a" and value.startswith(name):  # cheap test first
                attr, attr_value = _split_attribute(value)
                if attr == name:
                    return attr_value
        return default

    def get_all(self, name: str) -> list[str | None]:
        """Every value of ``name`` in order (rtpmap, fmtp, candidate... repeat)."""
        return [v for n, v in self.attributes if n == name]

    def set(self, name: str, value: str | None = None) -> None:
        """Make ``name`` occur once with ``value``: the first occurrence keeps its place."""
        line = _join_attribute(name, value)
        found = False
        kept: list[tuple[str, str]] = []
        for kind, text in self.lines:
            if kind == "a" and _split_attribute(text)[0] == name:
                if found:
                    continue
                found = True
                kept.append(("a", line))
            else:
                kept.append((kind, text))
        if not found:
            kept.append(("a", line))
        self.lines[:] = kept

    def add(self, name: str, value: str | None = None) -> None:
        """Append an attribute (a= lines come last in a section, so the end is its place)."""
        self.lines.append(("a", _join_attribute(name, value)))

    def remove(self, name: str) -> int:
        """Remove every occurrence of ``name``; returns how many there were."""
        return self._remove_attributes(frozenset((name,)))

    def _remove_attributes(self, names: frozenset[str]) -> int:
        before = len(self.lines)
        self.lines[:] = [
            (kind, v)
            for kind, v in self.lines
            if not (kind == "a" and _split_attribute(v)[0] in names)
        ]
        return before - len(self.lines)

    def _first(self, kind: str) -> str | None:
        for k, value in self.lines:
            if k == kind:
                return value
        return None

    def _put(self, kind: str, value: str | None, before: frozenset[str]) -> None:
        """Leave one ``kind`` line with ``value`` (None: none), in place or in RFC order."""
        lines = self.lines
        positions = [i for i, (k, _) in enumerate(lines) if k == kind]
        for i in reversed(positions[1:] if value is not None else positions):
            del lines[i]
        if value is None:
            return
        if positions:
            lines[positions[0]] = (kind, value)
        else:
            at = next((i for i, (k, _) in enumerate(lines) if k in before), len(lines))
            lines.insert(at, (kind, value))

    def _own_direction(self) -> str | None:
        return _direction_in(self.lines)

    def _set_direction(self, direction: str) -> None:
        if direction not in _DIRECTION_SET:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}: {direction!r}")
        lines = self.lines
        positions = [i for i, (k, v) in enumerate(lines) if k == "a" and v in _DIRECTION_SET]
        for i in reversed(positions[1:]):
            del lines[i]
        if positions:
            lines[positions[0]] = ("a", direction)
        else:
            lines.append(("a", direction))


@dataclass
class MediaDescription(_Lines):
    """One ``m=`` section: the m= line's fields, and its other lines in order.

    ``formats`` are strings because only RTP profiles make them payload
    type numbers. ``port_count`` is the ``/2`` of layered streams, 1 when
    absent. The m= line is written back exactly as received unless one of
    its fields changed, so an unusual but legal spelling (``49170/1``) is
    not normalised away.
    """

    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int = 1
    lines: list[tuple[str, str]] = field(default_factory=list)
    _m_line: tuple[tuple[object, ...], str] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    #: The session-level lines of the description this section belongs to,
    #: for the direction fallback. The lines, not the description: a
    #: reference back to the description made every parsed SDP a reference
    #: cycle, a few KB per call that only the rare full garbage collection
    #: freed (the soak's RSS grew by that much per call until it ran).
    _session_lines: list[tuple[str, str]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def connection(self) -> Connection | None:
        """The media-level ``c=``, if any; see :func:`effective_direction` for what applies."""
        value = self._first("c")
        return None if value is None else Connection.parse(value)

    @connection.setter
    def connection(self, connection: Connection | None) -> None:
        self._put("c", None if connection is None else str(connection), _BEFORE_MEDIA_C)

    @property
    def direction(self) -> str:
        """sendrecv/sendonly/recvonly/inactive: media-level, else the session's, else sendrecv.

        The session fallback needs the description this media belongs to,
        which :func:`parse`, :meth:`SessionDescription.add_media` and the
        SessionDescription constructor record. It does not look at a
        0.0.0.0 address: :func:`effective_direction` does.
        """
        own = self._own_direction()
        if own is None and self._session_lines is not None:
            own = _direction_in(self._session_lines)
        return own or "sendrecv"

    @direction.setter
    def direction(self, direction: str) -> None:
        self._set_direction(direction)

    @property
    def ptime(self) -> int | None:
        """``a=ptime`` in milliseconds; None when absent or not a positive number."""
        raw = self.get("ptime")
        if raw is None:
            return None
        try:
            value = int(float(raw))
        except (ValueError, OverflowError):
            return None
        return value if value > 0 else None

    def rtpmap(self, payload_type: int | str) -> RtpMap | None:
        """What ``payload_type`` means here: its ``a=rtpmap``, else the RFC 3551 static table."""
        pt = int(payload_type)
        for kind, value in self.lines:
            if kind == "a" and value.startswith("rtpmap:"):
                mapping = _parse_rtpmap(value[7:])
                if mapping is not None and mapping.payload_type == pt:
                    return mapping
        return _STATIC.get(pt)

    def rtpmaps(self) -> dict[int, RtpMap]:
        """Every format of the m= line that has a meaning, in the m= line's (preference) order."""
        explicit: dict[int, RtpMap] = {}
        for kind, value in self.lines:
            if kind == "a" and value.startswith("rtpmap:"):
                mapping = _parse_rtpmap(value[7:])
                if mapping is not None:
                    explicit.setdefault(mapping.payload_type, mapping)
        result: dict[int, RtpMap] = {}
        for fmt in self.formats:
            if _is_digits(fmt):
                pt = int(fmt)
                mapping = explicit.get(pt) or _STATIC.get(pt)
                if mapping is not None:
                    result.setdefault(pt, mapping)
        return result

    def fmtp(self, payload_type: int | str) -> str | None:
        """The ``a=fmtp`` parameters of ``payload_type``, as written."""
        pt = str(int(payload_type))
        for kind, value in self.lines:
            if kind == "a" and value.startswith("fmtp:"):
                fmt, _, params = value[5:].partition(" ")
                if fmt == pt:
                    return params
        return None

    def copy(self) -> MediaDescription:
        """A copy whose lists can be changed without touching this one."""
        other = MediaDescription(
            self.media, self.port, self.proto, list(self.formats), self.port_count, list(self.lines)
        )
        other._m_line = self._m_line
        return other

    def _m_key(self) -> tuple[object, ...]:
        return (self.media, self.port, self.port_count, self.proto, tuple(self.formats))

    def _m_value(self) -> str:
        if self._m_line is not None and self._m_line[0] == self._m_key():
            return self._m_line[1]
        port = str(self.port) if self.port_count == 1 else f"{self.port}/{self.port_count}"
        return f"{self.media} {port} {self.proto} {' '.join(self.formats)}"


@dataclass
class SessionDescription(_Lines):
    """A whole description: the session-level lines (``v=`` first) and the media sections."""

    lines: list[tuple[str, str]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)

    def __post_init__(self) -> None:
        for media in self.media:
            media._session_lines = self.lines

    def __setattr__(self, name: str, value: object) -> None:
        super().__setattr__(name, value)
        if name == "lines":  # the media sections follow a replaced list
            for media in getattr(self, "media", ()):
                media._session_lines = value  # type: ignore[assignment]

    def add_media(self, media: MediaDescription) -> MediaDescription:
        """Append a media section (and let it fall back to our direction)."""
        media._session_lines = self.lines
        self.media.append(media)
        return media

    @property
    def origin(self) -> Origin | None:
        """The ``o=`` line, parsed; a copy, so assign to change it."""
        value = self._first("o")
        return None if value is None else Origin.parse(value)

    @origin.setter
    def origin(self, origin: Origin) -> None:
        self._put("o", str(origin), _BEFORE_SESSION_O)

    @property
    def name(self) -> str | None:
        """The ``s=`` text."""
        return self._first("s")

    @property
    def connection(self) -> Connection | None:
        """The session-level ``c=``, the default for media without their own."""
        value = self._first("c")
        return None if value is None else Connection.parse(value)

    @connection.setter
    def connection(self, connection: Connection | None) -> None:
        self._put("c", None if connection is None else str(connection), _BEFORE_SESSION_C)

    @property
    def direction(self) -> str:
        """The session-level direction attribute, sendrecv when there is none."""
        return self._own_direction() or "sendrecv"

    @direction.setter
    def direction(self, direction: str) -> None:
        self._set_direction(direction)

    def copy(self) -> SessionDescription:
        """A copy that can be changed freely (lines are immutable tuples, so this is cheap)."""
        return SessionDescription(list(self.lines), [media.copy() for media in self.media])

    def serialize(self) -> bytes:
        """The description as a message body: UTF-8, every line ended by CRLF."""
        return str(self).encode("utf-8")

    def __bytes__(self) -> bytes:
        return self.serialize()

    def __str__(self) -> str:
        out = [f"{kind}={value}\r\n" for kind, value in self.lines]
        for media in self.media:
            out.append(f"m={media._m_value()}\r\n")
            out.extend(f"{kind}={value}\r\n" for kind, value in media.lines)
        return "".join(out)


# --- parsing ----------------------------------------------------------------------


def parse(data: bytes | bytearray | memoryview | str) -> SessionDescription:
    """Parse a description, or raise :class:`SdpError` naming the line at fault.

    Lines may end in CRLF or bare LF; what :func:`serialize` gives back
    always uses CRLF. Blank lines are skipped (a trailing one is common
    after a body whose Content-Length counted an extra CRLF).
    """
    text = data if isinstance(data, str) else _decode(bytes(data))
    sdp = SessionDescription()
    session = sdp.lines
    seen: set[str] = set()
    media: MediaDescription | None = None
    media_at = 0
    last = 0  # the last line that was not blank, for "missing ..." at the end
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line or line.isspace():
            continue
        last = number
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"expected '<type>=<value>', got {_show(line)}", number)
        kind, value = line[0], line[2:]
        if kind not in _KNOWN_TYPES:
            raise SdpError(f"unknown line type {kind + '='!r}", number)
        if not session and kind != "v":
            raise SdpError(f"SDP must start with v=0, got {_show(line)}", number)
        if kind == "m":
            if media is None:
                _check_session(seen, number, "before the first m= line")
            else:
                _check_media(sdp, media, media_at)
            media = sdp.add_media(_parse_media_line(value, number))
            media_at = number
        elif media is None:
            _check_session_line(kind, value, number, seen)
            session.append((kind, value))
        else:
            if kind not in _MEDIA_TYPES:
                raise SdpError(
                    f"{kind}= line is not allowed in a media description"
                    f" (the m= line at line {media_at} starts one)",
                    number,
                )
            if kind == "c":
                _check_connection(value, number)
            media.lines.append((kind, value))
    if not session:
        raise SdpError("SDP is empty (expected v=0)", 1)
    if media is None:
        _check_session(seen, last, "at the end of the SDP")
    else:
        _check_media(sdp, media, media_at)
    return sdp


def serialize(sdp: SessionDescription) -> bytes:
    """The body to send: ``serialize(parse(x)) == x`` for any CRLF description we accept."""
    return sdp.serialize()


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise SdpError(
            f"not UTF-8 (byte 0x{data[error.start]:02x}); SDP text must be UTF-8", line
        ) from None


def _check_session_line(kind: str, value: str, number: int, seen: set[str]) -> None:
    if kind in _SESSION_ONCE and kind in seen:
        raise SdpError(f"duplicate {kind}= line in the session section", number)
    seen.add(kind)
    if kind == "v":
        if value != "0":
            raise SdpError(f"unsupported SDP version {value!r} (only v=0 exists)", number)
    elif kind == "o":
        _check_origin(value, number)
    elif kind == "c":
        _check_connection(value, number)
    elif kind == "t":
        parts = value.split()
        if len(parts) != 2 or not all(_is_digits(p) for p in parts):
            raise SdpError(f"bad t= line {_show(value)}: expected '<start> <stop>'", number)


def _check_origin(value: str, number: int) -> None:
    """What Origin.parse refuses, without building the Origin."""
    parts = value.split()
    if len(parts) != 6 or not (_is_digits(parts[1]) and _is_digits(parts[2])):
        Origin.parse(value, number)  # raises, with the reason


def _check_connection(value: str, number: int) -> None:
    """What Connection.parse refuses, without building the Connection."""
    if len(value.split()) != 3:
        Connection.parse(value, number)  # raises, with the reason


def _is_unspecified(host: str) -> bool:
    if host == "0.0.0.0":
        return True
    try:
        return ":" in host and ipaddress.ip_address(host).is_unspecified
    except ValueError:  # a host name, or something only the peer understands
        return False


def _connection_host(value: str) -> str:
    """``Connection.parse(value).host`` without building the Connection."""
    parts = value.split()
    if len(parts) != 3:
        Connection.parse(value)  # raises, with the reason
    return parts[2].split("/", 1)[0]


def _check_session(seen: set[str], number: int, where: str) -> None:
    for kind in "ost":
        if kind not in seen:
            raise SdpError(f"missing {kind}= line {where}", number)


def _check_media(sdp: SessionDescription, media: MediaDescription, number: int) -> None:
    # A rejected stream (port 0) is never sent to, so a missing c= there is
    # harmless, and answers that omit it are common enough to tolerate.
    if media.port != 0 and media._first("c") is None and sdp._first("c") is None:
        raise SdpError(
            f"m={media.media} line has no c= line and there is no session-level c= line", number
        )


def _parse_media_line(value: str, number: int) -> MediaDescription:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError(
            f"bad m= line {_show(value)}: expected '<media> <port> <proto> <format> ...'", number
        )
    kind, port_text, proto, *formats = parts
    port_digits, slash, count_digits = port_text.partition("/")
    if not _is_digits(port_digits) or (slash and not _is_digits(count_digits)):
        raise SdpError(f"bad m= line: port {_show(port_text)} is not a number", number)
    port = int(port_digits)
    if port > 65535:
        raise SdpError(f"m= line port {_show(port_digits)} out of range (0-65535)", number)
    count = int(count_digits) if slash else 1
    if count < 1:
        raise SdpError(f"bad m= line: port count {count_digits!r} must be at least 1", number)
    media = MediaDescription(kind, port, proto, formats, count)
    media._m_line = (media._m_key(), value)
    return media


def _parse_rtpmap(value: str) -> RtpMap | None:
    """``<pt> <encoding>/<rate>[/<channels>]``; None if it is not that (then the PT is unusable)."""
    pt, _, rest = value.strip().partition(" ")
    parts = rest.strip().split("/")
    if not _is_digits(pt) or len(parts) not in (2, 3) or not parts[0]:
        return None
    if not _is_digits(parts[1]) or (len(parts) == 3 and not _is_digits(parts[2])):
        return None
    channels = int(parts[2]) if len(parts) == 3 else 1
    return RtpMap(int(pt), parts[0], int(parts[1]), channels)


def _split_attribute(value: str) -> tuple[str, str | None]:
    name, colon, rest = value.partition(":")
    return (name, rest) if colon else (name, None)


def _join_attribute(name: str, value: str | None) -> str:
    return name if value is None else f"{name}:{value}"


def _is_digits(text: str) -> bool:
    # The length cap keeps int() safe: past 4300 digits it raises a plain
    # ValueError, which would escape as something other than SdpError.
    return len(text) <= _MAX_DIGITS and text.isascii() and text.isdigit()


def _addrtype(address: str) -> str:
    # Neither an IPv4 address nor a host name can contain a colon.
    return "IP6" if ":" in address else "IP4"


def _show(text: str) -> str:
    """Quote input for an error message that ends up in a SIP reason phrase: short, no CR/LF."""
    return repr(text if len(text) <= 40 else text[:40] + "...")


# --- offer/answer (RFC 3264) --------------------------------------------------------


class CodecChoice(NamedTuple):
    """What :func:`select_codec` agreed to, and what :func:`make_answer` answers with.

    ``media_index`` is the m= section it applies to; ``telephone_event`` the
    RFC 4733 payload type when the offer had one at our clock rate;
    ``ptime`` the offer's packet time, if it gave one.
    """

    payload_type: int
    encoding: str
    clock_rate: int
    telephone_event: int | None = None
    ptime: int | None = None
    media_index: int = 0


class PeerMedia(NamedTuple):
    """Where the relay sends one stream of the party that wrote the description, and whether.

    ``direction`` is as the peer sees it, after :func:`effective_direction`:
    ``sendonly`` means the peer sends and must not be sent to.
    """

    media_index: int
    address: str
    port: int
    rtcp_address: str
    rtcp_port: int
    direction: str

    @property
    def on_hold(self) -> bool:
        """The peer has put the stream on hold: it takes no media from us."""
        return self.direction in ("sendonly", "inactive")

    @property
    def receives(self) -> bool:
        """We may send RTP to the peer."""
        return self.direction in ("sendrecv", "recvonly")

    @property
    def sends(self) -> bool:
        """The peer intends to send RTP to us."""
        return self.direction in ("sendrecv", "sendonly")


def effective_direction(sdp: SessionDescription, media: MediaDescription) -> str:
    """The direction ``media`` really has: its attribute, the session's, or sendrecv,
    turned into one that does not receive when its address is 0.0.0.0.

    That last step is the RFC 2543 hold still sent by older gear (RFC 3264
    8.4): a peer at 0.0.0.0 with sendrecv is sendonly for every purpose
    that matters to us, from the answer's direction to the relay.
    """
    direction = media._own_direction() or sdp._own_direction() or "sendrecv"
    value = media._first("c") or sdp._first("c")
    if value is not None and _is_unspecified(_connection_host(value)):
        return _NO_RECEIVE[direction]
    return direction


def is_hold(sdp: SessionDescription) -> bool:
    """Whether the writer put the call on hold: every active stream sendonly or inactive,
    by attribute at media or session level, or by a 0.0.0.0 address.

    A description with no active stream at all is not a hold: it is a
    rejection of everything, which the call layer handles differently. An
    initial offer with 0.0.0.0 (RFC 3264 8.4 allows it when the offerer
    does not know its address yet) also reads as held, which is right for
    the relay: there is nowhere to send until a re-INVITE says where.
    """
    active = [media for media in sdp.media if media.port != 0]
    return bool(active) and all(
        effective_direction(sdp, media) in ("sendonly", "inactive") for media in active
    )


def peer_media(sdp: SessionDescription, media_index: int | None = None) -> PeerMedia | None:
    """The relay's view of one stream (by default the first active audio one), or None.

    RTCP goes where ``a=rtcp`` says (RFC 3605), else to the RTP port + 1.
    """
    if media_index is None:
        media_index = next(
            (i for i, m in enumerate(sdp.media) if m.media == "audio" and m.port != 0), -1
        )
    if not 0 <= media_index < len(sdp.media) or sdp.media[media_index].port == 0:
        return None
    media = sdp.media[media_index]
    value = media._first("c") or sdp._first("c")
    if value is None:
        return None
    address = _connection_host(value)
    rtcp_address, rtcp_port = address, media.port + 1
    rtcp = (media.get("rtcp") or "").split()
    if rtcp and _is_digits(rtcp[0]) and 0 < int(rtcp[0]) <= 65535:
        rtcp_port = int(rtcp[0])
        if len(rtcp) == 4:
            rtcp_address = rtcp[3]
    return PeerMedia(
        media_index,
        address,
        media.port,
        rtcp_address,
        rtcp_port,
        effective_direction(sdp, media),
    )


def select_codec(
    offer: SessionDescription,
    supported: Sequence[str] = ("PCMU", "PCMA"),
    *,
    protos: Iterable[str] = ("RTP/AVP",),
) -> CodecChoice:
    """Choose the offer's first audio format we can handle, plus telephone-event if offered.

    The offer's order wins because it is the offerer's preference (RFC
    3264 5.1) and ours has no reason to override it among codecs we treat
    alike. Only 8 kHz mono counts: what we play, record and relay is
    G.711. Streams that are not audio, are already rejected (port 0) or use
    a profile outside ``protos`` (RTP/SAVP needs keys we do not have) are
    skipped; the first stream with a match is the one we take.

    Raises SdpError when nothing matches, for a 488.
    """
    wanted = {name.upper() for name in supported}
    allowed = set(protos)
    usable = [
        (index, media)
        for index, media in enumerate(offer.media)
        if media.media == "audio" and media.port != 0 and media.proto in allowed
    ]
    for index, media in usable:
        mappings = media.rtpmaps()
        chosen = next(
            (
                mapping
                for mapping in mappings.values()
                if mapping.encoding.upper() in wanted
                and mapping.clock_rate == 8000
                and mapping.channels == 1
            ),
            None,
        )
        if chosen is None:
            continue
        event = next(
            (
                pt
                for pt, mapping in mappings.items()
                if mapping.encoding.lower() == "telephone-event"
                and mapping.clock_rate == chosen.clock_rate
            ),
            None,
        )
        return CodecChoice(
            chosen.payload_type,
            chosen.encoding.upper(),
            chosen.clock_rate,
            event,
            media.ptime,
            index,
        )
    ours = ", ".join(f"{name}/8000" for name in supported)
    if not usable:
        raise SdpError(f"no {'/'.join(sorted(allowed))} audio stream offered (we accept {ours})")
    offered = [_describe(media, fmt) for _, media in usable for fmt in media.formats]
    raise SdpError(f"no common codec: offered {', '.join(offered)}; we accept {ours}")


def make_answer(
    offer: SessionDescription,
    address: str,
    port: int,
    choice: CodecChoice,
    origin: Origin,
) -> SessionDescription:
    """Our answer (RFC 3264 6): the chosen stream on ``address``:``port``, every other one rejected.

    One m= line per offered one, in the same order (6: the answerer may
    not add, drop or reorder). Streams other than ``choice.media_index``
    get port 0, which is how a stream is refused. The accepted one lists
    only the chosen payload type and telephone-event, with the offer's own
    rtpmap/fmtp lines for them, the offer's ptime, and the mirrored
    direction; a held offer (sendonly, inactive, or 0.0.0.0) is answered
    with our real address and the mirrored direction, and the relay learns
    about the hold from :func:`peer_media` or :func:`is_hold` on the offer.
    ``t=`` is copied because 6 requires it to match.
    """
    _check_address(address)
    _check_port(port)
    if not 0 <= choice.media_index < len(offer.media):
        raise ValueError(f"choice.media_index {choice.media_index} is not a stream of the offer")
    answer = SessionDescription(
        [("v", "0"), ("s", "-"), ("c", str(Connection.for_address(address)))]
        + [(kind, value) for kind, value in offer.lines if kind in ("t", "r", "z")]
    )
    for index, offered in enumerate(offer.media):
        if index != choice.media_index or offered.port == 0:
            answer.add_media(
                MediaDescription(offered.media, 0, offered.proto, list(offered.formats))
            )
            continue
        payload_types = [choice.payload_type]
        if choice.telephone_event is not None:
            payload_types.append(choice.telephone_event)
        keep = {str(pt) for pt in payload_types}
        accepted = answer.add_media(
            MediaDescription(offered.media, port, offered.proto, [str(pt) for pt in payload_types])
        )
        for kind, value in offered.lines:
            if kind == "a" and value.startswith(("rtpmap:", "fmtp:")):
                fmt = value.partition(":")[2].partition(" ")[0]
                if fmt in keep:
                    accepted.lines.append((kind, value))
        if choice.ptime is not None:
            accepted.add("ptime", str(choice.ptime))
        accepted.direction = _ANSWER_DIRECTION[effective_direction(offer, offered)]
    origin.stamp(answer)
    return answer


def rewrite_connection(
    sdp: SessionDescription,
    address: str,
    ports: Sequence[int],
    origin: Origin,
) -> SessionDescription:
    """``sdp`` as we pass it on to the other leg, with media anchored on us.

    ``ports`` holds our port for each m= line in order; a stream that
    arrived rejected (port 0) stays rejected whatever its entry says, and an
    entry of 0 rejects a stream we will not relay. One session-level ``c=``
    with ``address`` replaces every ``c=`` (a media-level one would override
    it), ``o=`` becomes ``origin``'s (stamped, so the version follows RFC
    3264 8), and every other line passes through in order, except:

    - ``a=rtcp`` is removed rather than rewritten: it names the peer's RTCP
      port and address, which are no longer where RTCP goes, and without it
      the receiver uses our port + 1 (RFC 3605), which is the port the relay
      pairs with each RTP port;
    - ICE attributes are removed (see ``_ICE_ATTRIBUTES``);
    - a stream held the RFC 2543 way (0.0.0.0) gets the direction that
      address meant (:func:`effective_direction`), since our real address
      replaces it and the hold would otherwise be lost.
    """
    _check_address(address)
    if len(ports) != len(sdp.media):
        raise ValueError(f"{len(ports)} ports for {len(sdp.media)} m= lines")
    for port in ports:
        _check_port(port)
    out = sdp.copy()
    for media, port in zip(out.media, ports, strict=True):
        if media.port != 0:
            value = media._first("c") or out._first("c")
            if value is not None and _is_unspecified(_connection_host(value)):
                media.direction = effective_direction(out, media)
            media.port = port
            media.port_count = 1
        media.connection = None
        media._remove_attributes(_ICE_ATTRIBUTES | {"rtcp"})
    out._remove_attributes(_ICE_ATTRIBUTES)
    out.connection = Connection.for_address(address)
    origin.stamp(out)
    return out


def _describe(media: MediaDescription, fmt: str) -> str:
    """A format as a person reads it: ``PCMU/8000``, or the bare number when it means nothing."""
    mapping = media.rtpmap(fmt) if _is_digits(fmt) else None
    if mapping is None:
        return fmt
    text = f"{mapping.encoding}/{mapping.clock_rate}"
    return text if mapping.channels == 1 else f"{text}/{mapping.channels}"


def _check_address(address: str) -> None:
    if not address or any(c.isspace() for c in address):
        raise ValueError(f"not an address for c=: {address!r}")


def _check_port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range (0-65535)")
