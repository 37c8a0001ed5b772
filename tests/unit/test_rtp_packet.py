"""RTP/RTCP parsing, telephone-event payloads, tap records and the RFC 3550
statistics reference, without sockets."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediacore.rtp.packet import (
    RECORD,
    PacketError,
    build_rtp,
    is_rtcp,
    iter_records,
    parse_rtcp_header,
    parse_rtp,
)
from mediacore.rtp.stats import SourceTracker, rtp_time


def test_minimal_packet() -> None:
    data = bytes.fromhex("80e1 0102 00000a00 deadbeef") + b"pay"
    p = parse_rtp(data)
    assert (p.payload_type, p.marker, p.sequence, p.timestamp, p.ssrc, p.payload) == (
        97, True, 0x0102, 0xA00, 0xDEADBEEF, b"pay")


def test_payload_excludes_csrcs_extension_and_padding() -> None:
    data = build_rtp(0, 1, 2, 3, b"audio", csrcs=(7, 8), extension=(0xBEDE, b"\x11" * 8),
                     padding=3)
    assert len(data) == 12 + 8 + 4 + 8 + 5 + 3
    p = parse_rtp(data)
    assert (p.csrcs, p.extension, p.padding, p.payload) == ((7, 8), (0xBEDE, b"\x11" * 8),
                                                            3, b"audio")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "shorter"),
        (b"\x80\x00" + bytes(9), "shorter"),
        (b"\x40\x00" + bytes(10), "version 1"),
        (b"\x83\x00" + bytes(10) + bytes(8), "CSRC count 3"),
        (b"\x90\x00" + bytes(10) + b"\x00\x00", "extension header"),
        (b"\x90\x00" + bytes(10) + b"\x00\x00\x00\x02" + bytes(4), "extension of 2 words"),
        (b"\xa0\x00" + bytes(10) + b"x\x00", "padding count 0"),
        (b"\xa0\x00" + bytes(10) + b"x\x05", "padding count 5"),
    ],
)
def test_malformed_packets_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(PacketError, match=reason):
        parse_rtp(data)


@given(
    pt=st.integers(0, 127), seq=st.integers(0, 0xFFFF), ts=st.integers(0, 2**32 - 1),
    ssrc=st.integers(0, 2**32 - 1), payload=st.binary(max_size=300), marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 2**32 - 1), max_size=15).map(tuple),
    ext=st.none() | st.tuples(st.integers(0, 0xFFFF),
                              st.binary(max_size=40).map(lambda b: b[: len(b) // 4 * 4])),
    padding=st.integers(0, 255),
)
def test_build_and_parse_round_trip(pt, seq, ts, ssrc, payload, marker, csrcs, ext,
                                    padding) -> None:
    data = build_rtp(pt, seq, ts, ssrc, payload, marker=marker, csrcs=csrcs, extension=ext,
                     padding=padding)
    p = parse_rtp(data)
    assert (p.payload_type, p.sequence, p.timestamp, p.ssrc, p.payload, p.marker, p.csrcs,
            p.extension, p.padding) == (pt, seq, ts, ssrc, payload, marker, csrcs, ext, padding)


@given(st.binary(max_size=64))
def test_parse_never_fails_other_than_packet_error(data: bytes) -> None:
    try:
        p = parse_rtp(data)
    except PacketError:
        return
    assert len(p.payload) <= len(data) - 12


def test_rtcp_demultiplexing_and_header() -> None:
    sr = b"\x80\xc8\x00\x06" + b"\x00\x00\x00\x2a" + bytes(20)
    assert is_rtcp(sr) and not is_rtcp(build_rtp(0, 1, 2, 3, b""))
    assert not is_rtcp(build_rtp(96, 1, 2, 3, b"", marker=True))  # 224: dynamic PT 96
    assert parse_rtcp_header(sr) == (200, 6, 42)
    for bad in (sr[:7], b"\x40" + sr[1:], b"\x80\x60" + sr[2:]):
        with pytest.raises(PacketError):
            parse_rtcp_header(bad)


def test_record_format_is_the_recorders_contract() -> None:
    assert RECORD.format == "<qIIHBBBxH" and RECORD.size == 24
    blob = (RECORD.pack(123, 0xAABBCCDD, 160, 7, 0, 1, 0, 3) + b"abc"
            + RECORD.pack(456, 1, 320, 8, 8, 0, 1, 0))
    records = list(iter_records(blob))
    assert [(r.arrival_ns, r.ssrc, r.timestamp, r.sequence, r.payload_type, r.marker,
             r.direction, r.payload) for r in records] == [
        (123, 0xAABBCCDD, 160, 7, 0, True, 0, b"abc"),
        (456, 1, 320, 8, 8, False, 1, b""),
    ]
    with pytest.raises(PacketError, match="torn"):
        list(iter_records(blob[:-1] + blob[-1:] + b"\x00"))
    with pytest.raises(PacketError, match="past the end"):
        list(iter_records(blob[:26]))


def feed(tracker: SourceTracker, seqs: list[int], ssrc: int = 1) -> None:
    for i, seq in enumerate(seqs):
        tracker.update(ssrc, seq & 0xFFFF, i * 160, i * 20_000_000)


def test_loss_counts_the_gaps_after_probation() -> None:
    t = SourceTracker()
    feed(t, [10, 11, 12, 15, 16, 20])  # 10 is probation; 11..20 expected
    assert (t.expected, t.lost) == (10, 5)


def test_loss_across_the_sequence_wrap() -> None:
    t = SourceTracker()
    feed(t, [65533, 65534, 65535, 1, 2])  # 65534..2 expected, 0 missing
    assert (t.expected, t.lost) == (5, 1)


def test_duplicates_make_loss_negative() -> None:
    t = SourceTracker()
    feed(t, [1, 2, 3, 3, 4])
    assert (t.expected, t.lost) == (3, -1)


def test_a_restarted_sender_is_resynchronised() -> None:
    t = SourceTracker()
    # A.1: a jump is ignored once; a second packet in sequence after it means
    # the sender restarted, and counting starts over from there.
    feed(t, [100, 101, 102, 40000, 40001, 40002])
    assert (t.base_seq, t.received, t.expected, t.lost) == (40001, 2, 2, 0)


def test_a_new_ssrc_starts_a_new_source_and_keeps_the_old_count() -> None:
    t = SourceTracker()
    feed(t, [1, 2, 4], ssrc=1)
    feed(t, [500, 501, 502], ssrc=2)
    assert (t.expected, t.lost) == (3 + 2, 1)


def test_jitter_is_zero_for_a_perfect_clock_and_follows_a8_otherwise() -> None:
    t = SourceTracker(8000)
    for i in range(50):
        t.update(1, i, i * 160, 10**12 + i * 20_000_000)
    assert t.jitter == 0
    # One packet 5 ms late: D = 40 units once going late, 40 coming back.
    t = SourceTracker(8000)
    arrivals = [i * 20_000_000 for i in range(4)]
    arrivals[2] += 5_000_000
    for i, a in enumerate(arrivals):
        t.update(1, i, i * 160, 10**12 + a)
    j = 0
    for d in (0, 40, 40):
        j += d - ((j + 8) >> 4)
    assert t.jitter_q4 == j and t.jitter == j / 16


def test_rtp_time_is_exact_for_large_clocks() -> None:
    ns = 123_456_789 * 10**9 + 999_999_999  # ~4 years of uptime
    assert rtp_time(ns, 48000) == (ns * 48000 // 10**9) % 2**32


def test_struct_of_rtp_header_matches_rfc_layout() -> None:
    data = build_rtp(8, 0xFFFF, 0xFFFFFFFF, 0x01020304, b"", marker=True)
    assert struct.unpack("!BBHII", data) == (0x80, 0x88, 0xFFFF, 0xFFFFFFFF, 0x01020304)
