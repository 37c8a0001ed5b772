"""SDP per INVITE: parse, serialize, and the B2BUA's two rewrites of a typical carrier offer.

A call parses the caller's offer once, answers it (:func:`select_codec` +
:func:`make_answer`) and passes an anchored copy to the callee
(:func:`rewrite_connection`), and does it again on each re-INVITE. These
figures are microseconds per operation, for comparing changes to sdp.py;
nothing here is asserted.

    .venv/bin/pytest benchmarks/bench_sdp.py --benchmark-only
"""

from __future__ import annotations

from pytest_benchmark.fixture import BenchmarkFixture

from mediacore.sip.sdp import (
    Origin,
    make_answer,
    parse,
    rewrite_connection,
    select_codec,
    serialize,
)

# The shape an SBC at a carrier's edge sends: 20 lines, four codecs, DTMF.
OFFER = (
    b"v=0\r\n"
    b"o=SBC 1686052349 1686052350 IN IP4 203.0.113.10\r\n"
    b"s=SIP Call\r\n"
    b"c=IN IP4 203.0.113.20\r\n"
    b"b=AS:84\r\n"
    b"t=0 0\r\n"
    b"a=X-nat:0\r\n"
    b"m=audio 31546 RTP/AVP 18 8 0 101\r\n"
    b"b=TIAS:64000\r\n"
    b"a=rtpmap:18 G729/8000\r\n"
    b"a=fmtp:18 annexb=no\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\n"
    b"a=ptime:20\r\n"
    b"a=maxptime:40\r\n"
    b"a=rtcp:31547\r\n"
    b"a=X-vendor-id:6a1f;mode=relay\r\n"
    b"a=sendrecv\r\n"
)
ADDRESS = "192.0.2.99"


def test_parse(benchmark: BenchmarkFixture) -> None:
    sdp = benchmark(parse, OFFER)
    assert serialize(sdp) == OFFER


def test_serialize(benchmark: BenchmarkFixture) -> None:
    assert benchmark(serialize, parse(OFFER)) == OFFER


def test_rewrite_connection(benchmark: BenchmarkFixture) -> None:
    offer, origin = parse(OFFER), Origin.new(ADDRESS)
    out = benchmark(rewrite_connection, offer, ADDRESS, [20000], origin)
    assert out.media[0].port == 20000


def test_select_codec_and_make_answer(benchmark: BenchmarkFixture) -> None:
    offer, origin = parse(OFFER), Origin.new(ADDRESS)

    def answer() -> bytes:
        return serialize(make_answer(offer, ADDRESS, 20000, select_codec(offer), origin))

    assert b"m=audio 20000 RTP/AVP 8 101\r\n" in benchmark(answer)


def test_whole_invite(benchmark: BenchmarkFixture) -> None:
    """Everything one INVITE costs: parse, answer, anchored offer to the callee, both bodies."""
    origin_in, origin_out = Origin.new(ADDRESS), Origin.new(ADDRESS)

    def invite() -> tuple[bytes, bytes]:
        offer = parse(OFFER)
        answer = make_answer(offer, ADDRESS, 20000, select_codec(offer), origin_in)
        onward = rewrite_connection(offer, ADDRESS, [20002], origin_out)
        return serialize(answer), serialize(onward)

    benchmark(invite)
