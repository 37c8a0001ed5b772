"""RTP and RTCP headers in Python, for tests, tools and the slow path.

The relay never calls this: it parses headers in C (``_engine.pyx``) with
the same rules, so these functions double as the executable statement of
what the engine accepts. A packet this module rejects, the engine drops and
counts as garbage, and the other way round.

Also here: RFC 4733 telephone-event payloads, and the record format of the
recording tap (``RECORD``), which the engine writes and the recorder reads.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "RECORD",
    "PacketError",
    "RecordedPacket",
    "RtpPacket",
    "build_rtp",
    "is_rtcp",
    "iter_records",
    "parse_rtcp_header",
    "parse_rtp",
]

RTP_VERSION = 2
RTP_HEADER = struct.Struct("!BBHII")

#: One record of the recording tap, followed by ``payload_len`` payload bytes:
#: (arrival_ns CLOCK_MONOTONIC, ssrc, timestamp, seq, payload_type, marker,
#: direction 0 = A to B / 1 = B to A, pad, payload_len), little-endian.
RECORD = struct.Struct("<qIIHBBBxH")

#: RFC 4733 event codes 0-15 as the digits people press.
class PacketError(ValueError):
    """The bytes are not a well-formed RTP (or RTCP) packet; the message says why."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """An RTP packet split into its RFC 3550 section 5.1 fields.

    ``payload`` excludes the CSRC list, the header extension and padding:
    it is exactly what the recording tap stores.
    """

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None
    padding: int = 0


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 section 4: on a shared port, payload types 64-95 with the
    marker bit (second byte 192-223) are RTCP packet types, not RTP."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def parse_rtp(data: bytes) -> RtpPacket:
    """Split ``data`` into RTP fields or raise PacketError.

    The checks are the ones a relay can afford and that keep it from reading
    past the datagram: fixed header present, version 2, the CSRC list and
    the extension inside the packet, padding count non-zero and inside the
    packet (RFC 3550 section 5.1 and A.1).
    """
    n = len(data)
    if n < RTP_HEADER.size:
        raise PacketError(f"{n} bytes: shorter than the 12-byte RTP header")
    b0, b1, seq, ts, ssrc = RTP_HEADER.unpack_from(data)
    if b0 >> 6 != RTP_VERSION:
        raise PacketError(f"version {b0 >> 6}, not 2")
    offset = 12 + 4 * (b0 & 0x0F)
    if offset > n:
        raise PacketError(f"CSRC count {b0 & 0x0F} runs past the end of {n} bytes")
    csrcs = struct.unpack_from(f"!{b0 & 0x0F}I", data, 12)
    extension = None
    if b0 & 0x10:
        if offset + 4 > n:
            raise PacketError("extension header runs past the end")
        profile, words = struct.unpack_from("!HH", data, offset)
        start = offset + 4
        offset = start + 4 * words
        if offset > n:
            raise PacketError(f"extension of {words} words runs past the end")
        extension = (profile, bytes(data[start:offset]))
    padding = 0
    if b0 & 0x20:
        padding = data[-1]
        if padding == 0 or offset + padding > n:
            raise PacketError(f"padding count {padding} is invalid for {n} bytes")
    return RtpPacket(
        payload_type=b1 & 0x7F,
        sequence=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload=bytes(data[offset : n - padding]),
        marker=bool(b1 & 0x80),
        csrcs=csrcs,
        extension=extension,
        padding=padding,
    )


def build_rtp(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    *,
    marker: bool = False,
    csrcs: tuple[int, ...] = (),
    extension: tuple[int, bytes] | None = None,
    padding: int = 0,
) -> bytes:
    """Serialise an RTP packet; the inverse of parse_rtp (for tests and announcements)."""
    if len(csrcs) > 15:
        raise ValueError("at most 15 CSRCs")
    if not 0 <= padding <= 255:
        raise ValueError("padding is 0-255 bytes")
    b0 = (RTP_VERSION << 6) | len(csrcs)
    parts = []
    if extension is not None:
        b0 |= 0x10
        profile, body = extension
        if len(body) % 4:
            raise ValueError("extension body must be a whole number of 32-bit words")
        parts.append(struct.pack("!HH", profile, len(body) // 4) + body)
    if padding:
        b0 |= 0x20
    head = RTP_HEADER.pack(
        b0,
        (0x80 if marker else 0) | (payload_type & 0x7F),
        sequence & 0xFFFF,
        timestamp & 0xFFFFFFFF,
        ssrc & 0xFFFFFFFF,
    )
    pad = bytes(padding - 1) + bytes([padding]) if padding else b""
    return head + struct.pack(f"!{len(csrcs)}I", *csrcs) + b"".join(parts) + payload + pad


def parse_rtcp_header(data: bytes) -> tuple[int, int, int]:
    """(packet type, length in 32-bit words minus one, sender SSRC) of the first
    packet of a compound RTCP datagram, or PacketError.

    The engine checks exactly this much before it relays RTCP: at least 8
    bytes, version 2, a packet type in the RTCP range 192-223.
    """
    if len(data) < 8:
        raise PacketError(f"{len(data)} bytes: shorter than an RTCP header")
    b0, pt, length, ssrc = struct.unpack_from("!BBHI", data)
    if b0 >> 6 != RTP_VERSION:
        raise PacketError(f"version {b0 >> 6}, not 2")
    if not 192 <= pt <= 223:
        raise PacketError(f"packet type {pt} is not RTCP")
    return pt, length, ssrc


@dataclass(frozen=True, slots=True)
class RecordedPacket:
    """One record of a recording-tap blob (see RECORD)."""

    arrival_ns: int
    ssrc: int
    timestamp: int
    sequence: int
    payload_type: int
    marker: bool
    direction: int
    payload: bytes


def iter_records(blob: bytes) -> Iterator[RecordedPacket]:
    """Walk a blob from ``drain_recording``; raises PacketError on a torn record.

    A torn record can only mean a bug in the engine: it appends whole
    records or none, so this checks rather than trusts the lengths.
    """
    view = memoryview(blob)
    offset, end = 0, len(blob)
    while offset < end:
        if offset + RECORD.size > end:
            raise PacketError(f"torn record header at offset {offset}")
        arrival, ssrc, ts, seq, pt, marker, direction, length = RECORD.unpack_from(view, offset)
        offset += RECORD.size
        if offset + length > end:
            raise PacketError(f"record at offset {offset - RECORD.size} runs past the end")
        payload = bytes(view[offset : offset + length])
        offset += length
        yield RecordedPacket(arrival, ssrc, ts, seq, pt, bool(marker), direction, payload)
