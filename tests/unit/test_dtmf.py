"""RFC 4733 telephone-event payloads, checked against the RFC's layout and SIPp's captures."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediacore.rtp.dtmf import (
    DIGITS,
    DtmfEvent,
    decode_event,
    digit_to_event,
    encode_event,
    event_packets,
    event_to_digit,
)

SIPP_PCAPS = Path("/usr/share/sip-tester")


def test_digit_and_event_codes() -> None:
    # RFC 4733 §3.2: 0-9, then * = 10, # = 11, A-D = 12-15, flash = 16
    assert [digit_to_event(d) for d in "0123456789*#ABCD!"] == list(range(17))
    assert [digit_to_event(d) for d in "abcd"] == [12, 13, 14, 15]
    assert "".join(event_to_digit(e) for e in range(17)) == DIGITS
    for bad in ("E", "10", "", " "):
        with pytest.raises(ValueError):
            digit_to_event(bad)
    with pytest.raises(ValueError):
        event_to_digit(17)


def test_payload_layout() -> None:
    assert encode_event("#", end=True, volume=10, duration=1280) == bytes([11, 0x8A, 0x05, 0x00])
    assert encode_event(1) == bytes([1, 10, 0, 0])
    ev = decode_event(bytes([5, 0x40 | 63, 0xFF, 0xFF]))  # R bit set: ignored
    assert ev == DtmfEvent(event=5, end=False, volume=63, duration=65535)
    assert ev.digit == "5"
    assert DtmfEvent(200, True, 0, 0).digit is None  # a tone, not a key


@given(st.integers(0, 255), st.booleans(), st.integers(0, 63), st.integers(0, 65535))
def test_round_trip(event: int, end: bool, volume: int, duration: int) -> None:
    payload = encode_event(event, end=end, volume=volume, duration=duration)
    assert len(payload) == 4
    assert decode_event(payload) == DtmfEvent(event, end, volume, duration)
    assert decode_event(payload + b"\x01\x02\x03\x04").event == event


@pytest.mark.parametrize("kwargs", [{"volume": 64}, {"volume": -1}, {"duration": 65536}])
def test_out_of_range_fields_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        encode_event("1", **kwargs)
    with pytest.raises(ValueError):
        encode_event(256)
    with pytest.raises(ValueError):
        decode_event(b"\x01\x02\x03")


def test_sipp_key_press_captures_decode() -> None:
    """SIPp ships one capture per key; each decodes to its key, ending with the E bit."""
    names = {str(d): str(d) for d in range(10)} | {"pound": "#", "star": "*"}
    for suffix, key in names.items():
        path = SIPP_PCAPS / f"dtmf_2833_{suffix}.pcap"
        if not path.exists():
            pytest.skip("sip-tester is not installed (apt-get install -y sip-tester)")
        events = [decode_event(p) for p in _rtp_payloads(path.read_bytes())]
        assert {e.digit for e in events} == {key}
        assert events[-1].end and not events[0].end
        assert [e.duration for e in events] == sorted(e.duration for e in events)


def test_event_packets_for_one_key_press() -> None:
    packets = list(
        event_packets(
            "7", payload_type=101, ssrc=0xCAFE, seq=65534, timestamp=12345, duration=800, step=160
        )
    )
    assert len(packets) == 5 + 2  # 5 updates, the last sent 3 times in all
    heads = [struct.unpack("!BBHII", p[:12]) for p in packets]
    events = [decode_event(p[12:]) for p in packets]
    assert [h[1] >> 7 for h in heads] == [1, 0, 0, 0, 0, 0, 0]
    assert {h[1] & 0x7F for h in heads} == {101}
    assert [h[2] for h in heads] == [65534, 65535, 0, 1, 2, 2, 2]
    assert {h[3] for h in heads} == {12345}  # the event's start, in every packet
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert {e.digit for e in events} == {"7"}
    odd = list(
        event_packets(3, payload_type=96, ssrc=1, seq=0, timestamp=0, duration=500, end_repeats=1)
    )
    assert [decode_event(p[12:]).duration for p in odd] == [160, 320, 480, 500]
    with pytest.raises(ValueError):
        list(event_packets(1, payload_type=96, ssrc=1, seq=0, timestamp=0, duration=100))


def _rtp_payloads(pcap: bytes) -> list[bytes]:
    """RTP payloads of a classic little-endian Ethernet/IPv4/UDP pcap."""
    out = []
    pos = 24
    while pos + 16 <= len(pcap):
        incl = struct.unpack_from("<I", pcap, pos + 8)[0]
        frame = pcap[pos + 16 : pos + 16 + incl]
        pos += 16 + incl
        ip = frame[14:]
        udp = ip[(ip[0] & 0x0F) * 4 :]
        out.append(udp[8 + 12 :])
    return out
