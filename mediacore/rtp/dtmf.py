"""RFC 4733 telephone-event payloads: DTMF digits as RTP events, both ways.

A telephone-event payload is four bytes (RFC 4733 §2.3)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     event     |E|R| volume    |          duration             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

Events 0-15 are the DTMF keys (§3.2); 16 is flash. ``volume`` is the power
level in -dBm0, so *larger is quieter* (0 is the loudest, 63 the quietest).
``duration`` is in timestamp units (samples at 8 kHz) since the event's
timestamp, which stays the same in every packet of one event: a receiver
learns an event's length from the growing duration, not from the timestamp.

The recorder treats these packets as "not audio" (silence); this module is
for tests that build such packets and for the player, should it ever have
to send a key press itself. Pure Python: events are a few packets per key.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DIGITS",
    "DtmfEvent",
    "decode_event",
    "digit_to_event",
    "encode_event",
    "event_packets",
    "event_to_digit",
]

# Index = event code (RFC 4733 §3.2): 0-9, *, #, A-D, then 16 = flash ("!").
DIGITS: Final = "0123456789*#ABCD!"
_CODE_BY_DIGIT: Final = {d: i for i, d in enumerate(DIGITS)} | {
    c.lower(): i for i, c in enumerate(DIGITS) if c.isalpha()
}
_PAYLOAD: Final = struct.Struct("!BBH")
_RTP_HEADER: Final = struct.Struct("!BBHII")
_END: Final = 0x80
_MAX_VOLUME: Final = 63
_MAX_DURATION: Final = 0xFFFF


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    """One decoded telephone-event payload."""

    event: int
    end: bool
    volume: int
    duration: int

    @property
    def digit(self) -> str | None:
        """The key ("0"-"9", "*", "#", "A"-"D", "!" for flash), None for other events."""
        return DIGITS[self.event] if self.event < len(DIGITS) else None


def digit_to_event(digit: str) -> int:
    """The event code of a key; A-D in either case, "!" is flash."""
    try:
        return _CODE_BY_DIGIT[digit]
    except KeyError:
        raise ValueError(f"not a DTMF key: {digit!r} (expected one of {DIGITS})") from None


def event_to_digit(event: int) -> str:
    """The key of an event code 0-16; other codes (tones, trunk signals) are a ValueError."""
    if not 0 <= event < len(DIGITS):
        raise ValueError(f"event {event} is not a DTMF key or flash")
    return DIGITS[event]


def encode_event(
    event: int | str, *, end: bool = False, volume: int = 10, duration: int = 0
) -> bytes:
    """The 4-byte payload for an event code or key.

    Out-of-range fields are refused rather than masked: a masked duration
    would silently turn a long key press into a short one.
    """
    code = digit_to_event(event) if isinstance(event, str) else event
    if not 0 <= code <= 255:
        raise ValueError(f"event code must be 0-255, not {code}")
    if not 0 <= volume <= _MAX_VOLUME:
        raise ValueError(f"volume must be 0-63 (-dBm0), not {volume}")
    if not 0 <= duration <= _MAX_DURATION:
        raise ValueError(f"duration must be 0-65535 timestamp units, not {duration}")
    return _PAYLOAD.pack(code, (_END if end else 0) | volume, duration)


def decode_event(payload: bytes | bytearray | memoryview) -> DtmfEvent:
    """Decode the first event block of a payload.

    The reserved R bit is ignored, as §2.3 tells receivers to. Trailing
    bytes are allowed: RFC 2198 redundancy or a second block may follow.
    """
    if len(payload) < _PAYLOAD.size:
        raise ValueError(f"a telephone-event payload has 4 bytes, got {len(payload)}")
    code, flags, duration = _PAYLOAD.unpack_from(payload)
    return DtmfEvent(code, bool(flags & _END), flags & _MAX_VOLUME, duration)


def event_packets(
    event: int | str,
    *,
    payload_type: int,
    ssrc: int,
    seq: int,
    timestamp: int,
    duration: int = 800,
    step: int = 160,
    volume: int = 10,
    end_repeats: int = 3,
) -> Iterator[bytes]:
    """RTP packets (12-byte header + payload) for one key press, one per ``step``.

    Every packet carries the event's start ``timestamp`` and the duration so
    far; the first has the marker bit (§2.5.1.1). The final packet, E bit
    set, is sent ``end_repeats`` times with the same sequence number and
    duration (§2.5.1.4 asks for three), as SIPp's and Asterisk's senders do:
    a receiver drops the copies it does not need as duplicates. The caller
    paces them ``step`` samples apart and continues its audio stream with
    ``seq`` advanced by the number of distinct sequence numbers used.
    """
    if step <= 0 or duration < step:
        raise ValueError(f"need 0 < step <= duration, got step={step}, duration={duration}")
    if end_repeats < 1:
        raise ValueError("end_repeats must be at least 1: the E bit must be sent")
    count = -(-duration // step)
    for i in range(count):
        last = i == count - 1
        so_far = duration if last else (i + 1) * step
        header = _RTP_HEADER.pack(
            0x80,
            (0x80 if i == 0 else 0) | payload_type,
            (seq + i) & 0xFFFF,
            timestamp & 0xFFFFFFFF,
            ssrc,
        )
        packet = header + encode_event(event, end=last, volume=volume, duration=so_far)
        for _ in range(end_repeats if last else 1):
            yield packet
