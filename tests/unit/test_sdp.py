"""SDP: exact round trips, clear refusals, and the RFC 3264 offer/answer rules of a B2BUA."""

from __future__ import annotations

import contextlib
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediacore.sip.sdp import (
    CodecChoice,
    Connection,
    MediaDescription,
    Origin,
    SdpError,
    SessionDescription,
    effective_direction,
    is_hold,
    make_answer,
    parse,
    peer_media,
    rewrite_connection,
    select_codec,
    serialize,
)


def crlf(*lines: str) -> bytes:
    return "".join(f"{line}\r\n" for line in lines).encode("utf-8")


# --- real-world descriptions ---------------------------------------------------------

# What an SBC at a carrier's edge typically offers: G.729 first, ptime and
# maxptime, an rtcp port, DTMF events, a vendor attribute, b= at both levels.
CARRIER_OFFER = crlf(
    "v=0",
    "o=SBC 1686052349 1686052350 IN IP4 203.0.113.10",
    "s=SIP Call",
    "c=IN IP4 203.0.113.20",
    "b=AS:84",
    "t=0 0",
    "a=X-nat:0",
    "m=audio 31546 RTP/AVP 18 8 0 101",
    "b=TIAS:64000",
    "a=rtpmap:18 G729/8000",
    "a=fmtp:18 annexb=no",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=ptime:20",
    "a=maxptime:40",
    "a=rtcp:31547",
    "a=X-vendor-id:6a1f;mode=relay",
    "a=sendrecv",
)

# SIPp's built-in uac scenario.
SIPP_DEFAULT = crlf(
    "v=0",
    "o=user1 53655765 2353687637 IN IP4 127.0.0.1",
    "s=-",
    "c=IN IP4 127.0.0.1",
    "t=0 0",
    "m=audio 6000 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
)

# A SIPp scenario found in the wild with t= before c=: out of RFC order, still ours to pass on.
SIPP_OUT_OF_ORDER = crlf(
    "v=0",
    "o=user1 53655765 2353687637 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "c=IN IP4 127.0.0.1",
    "m=audio 6000 RTP/AVP 0 8 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=sendrecv",
)

# A softphone with opus, video and a session-level attribute.
AUDIO_VIDEO = crlf(
    "v=0",
    "o=- 3903398523 1 IN IP4 192.0.2.20",
    "s=Talk",
    "c=IN IP4 192.0.2.20",
    "b=AS:380",
    "t=0 0",
    "a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics",
    "m=audio 7078 RTP/AVP 96 0 8 101",
    "a=rtpmap:96 opus/48000/2",
    "a=fmtp:96 useinbandfec=1",
    "a=rtpmap:101 telephone-event/8000",
    "m=video 9078 RTP/AVP 97 98",
    "c=IN IP4 192.0.2.21",
    "a=rtpmap:97 VP8/90000",
    "a=rtpmap:98 H264/90000",
    "a=fmtp:98 profile-level-id=42801F",
    "a=rtcp-fb:* nack pli",
)

# RFC 2543 hold: the old way, still sent by older PBXs.
HOLD_ZERO = crlf(
    "v=0",
    "o=- 3 4 IN IP4 198.51.100.7",
    "s=-",
    "c=IN IP4 0.0.0.0",
    "t=0 0",
    "m=audio 16384 RTP/AVP 0 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
)

IPV6 = crlf(
    "v=0",
    "o=alice 2890844526 2890844526 IN IP6 2001:db8::1",
    "s= ",
    "t=0 0",
    "m=audio 49170 RTP/AVP 8 0 101",
    "c=IN IP6 2001:db8::2",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=rtcp:49171 IN IP6 2001:db8::3",
    "a=ptime:30",
)

# Every line type of RFC 4566, after its section 5 example, plus UTF-8 text.
EVERY_LINE_TYPE = crlf(
    "v=0",
    "o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5",
    "s=SDP Seminar – Zürich",
    "i=A Seminar on the session description protocol",
    "u=http://www.example.com/seminars/sdp.pdf",
    "e=j.doe@example.com (Jane Doe)",
    "p=+1 617 555-6011",
    "c=IN IP4 224.2.17.12/127",
    "b=X-YZ:128",
    "t=2873397496 2873404696",
    "r=7d 1h 0 25h",
    "t=0 0",
    "z=2882844526 -1h 2898848070 0",
    "k=clear:secret",
    "a=recvonly",
    "a=tool:",
    "m=audio 49170 RTP/AVP 0",
    "i=audio stream",
    "b=AS:64",
    "k=prompt",
    "m=video 51372/2 RTP/AVP 99",
    "a=rtpmap:99 h263-1998/90000",
)

REAL_WORLD = {
    "carrier": CARRIER_OFFER,
    "sipp": SIPP_DEFAULT,
    "sipp-out-of-order": SIPP_OUT_OF_ORDER,
    "audio-video": AUDIO_VIDEO,
    "hold-0.0.0.0": HOLD_ZERO,
    "ipv6": IPV6,
    "every-line-type": EVERY_LINE_TYPE,
}


@pytest.mark.parametrize("body", REAL_WORLD.values(), ids=REAL_WORLD.keys())
def test_real_world_descriptions_round_trip_byte_for_byte(body: bytes) -> None:
    assert serialize(parse(body)) == body
    assert bytes(parse(body)) == body
    assert str(parse(body)) == body.decode()
    assert serialize(parse(body.decode())) == body


@pytest.mark.parametrize("body", REAL_WORLD.values(), ids=REAL_WORLD.keys())
def test_lf_only_input_is_accepted_and_written_with_crlf(body: bytes) -> None:
    assert serialize(parse(body.replace(b"\r\n", b"\n"))) == body


def test_blank_lines_are_skipped() -> None:
    assert serialize(parse(SIPP_DEFAULT + b"\r\n")) == SIPP_DEFAULT
    assert serialize(parse(SIPP_DEFAULT.replace(b"s=-\r\n", b"s=-\r\n\r\n"))) == SIPP_DEFAULT


def test_unusual_but_legal_m_line_spelling_survives() -> None:
    body = SIPP_DEFAULT.replace(b"m=audio 6000 RTP/AVP 0", b"m=audio 06000/1 RTP/AVP 0")
    sdp = parse(body)
    assert (sdp.media[0].port, sdp.media[0].port_count) == (6000, 1)
    assert serialize(sdp) == body
    sdp.media[0].port = 7000  # a changed field is written the canonical way
    assert b"m=audio 7000 RTP/AVP 0\r\n" in serialize(sdp)


# --- the object model --------------------------------------------------------------


def test_session_and_media_fields() -> None:
    sdp = parse(CARRIER_OFFER)
    assert sdp.origin == Origin("SBC", 1686052349, 1686052350, "IN", "IP4", "203.0.113.10")
    assert sdp.name == "SIP Call"
    assert sdp.connection == Connection("IN", "IP4", "203.0.113.20")
    assert sdp.get("X-nat") == "0"
    (audio,) = sdp.media
    assert (audio.media, audio.port, audio.port_count, audio.proto) == (
        "audio",
        31546,
        1,
        "RTP/AVP",
    )
    assert audio.formats == ["18", "8", "0", "101"]
    assert audio.connection is None
    assert audio.ptime == 20
    assert audio.direction == "sendrecv"
    assert audio.get("rtcp") == "31547"
    assert audio.fmtp(18) == "annexb=no"
    assert audio.fmtp("101") == "0-15"
    assert audio.fmtp(8) is None
    assert audio.attributes[:2] == (("rtpmap", "18 G729/8000"), ("fmtp", "18 annexb=no"))
    assert ("sendrecv", None) in audio.attributes
    assert [kind for kind, _ in audio.lines][:1] == ["b"]


def test_every_line_type_is_kept_where_it_was() -> None:
    sdp = parse(EVERY_LINE_TYPE)
    assert [kind for kind, _ in sdp.lines] == list("vosiuepcbtrtzkaa")
    assert sdp.get("tool") == ""  # "a=tool:" has an empty value, not none
    assert sdp.media[0].lines == [("i", "audio stream"), ("b", "AS:64"), ("k", "prompt")]
    video = sdp.media[1]
    assert (video.port, video.port_count) == (51372, 2)
    assert sdp.connection is not None and sdp.connection.host == "224.2.17.12"


def test_rtpmap_knows_static_payload_types_without_an_rtpmap_line() -> None:
    audio = parse(SIPP_OUT_OF_ORDER).media[0]
    assert audio.rtpmap(0) == (0, "PCMU", 8000, 1)
    assert audio.rtpmap("8") == (8, "PCMA", 8000, 1)
    assert audio.rtpmap(101) == (101, "telephone-event", 8000, 1)
    bare = parse(SIPP_DEFAULT.replace(b"a=rtpmap:0 PCMU/8000\r\n", b"")).media[0]
    assert bare.rtpmap(0) == (0, "PCMU", 8000, 1)
    assert bare.rtpmap(8) == (8, "PCMA", 8000, 1)
    assert bare.rtpmap(96) is None
    opus = parse(AUDIO_VIDEO).media[0]
    assert opus.rtpmap(96) == (96, "opus", 48000, 2)
    assert list(opus.rtpmaps()) == [96, 0, 8, 101]


def test_a_malformed_rtpmap_makes_its_payload_type_unknown_not_the_call_fail() -> None:
    body = SIPP_DEFAULT.replace(b"a=rtpmap:0 PCMU/8000", b"a=rtpmap:96 PCMU")
    media = parse(body.replace(b"RTP/AVP 0", b"RTP/AVP 96")).media[0]
    assert media.rtpmap(96) is None
    assert media.rtpmaps() == {}


def test_attribute_helpers() -> None:
    media = parse(CARRIER_OFFER).media[0]
    assert media.get_all("rtpmap") == [
        "18 G729/8000",
        "8 PCMA/8000",
        "0 PCMU/8000",
        "101 telephone-event/8000",
    ]
    assert media.get("missing") is None and media.get("missing", "x") == "x"
    assert media.get("sendrecv") is None and media.has("sendrecv")
    assert not media.has("sendonly")

    media.set("ptime", "30")  # replaced in place
    assert media.attributes[6] == ("ptime", "30")
    media.set("label", "1")  # appended
    assert media.lines[-1] == ("a", "label:1")
    media.add("label", "2")
    media.set("label")  # back to one occurrence, a flag, in the first one's place
    assert media.get_all("label") == [None]
    assert media.remove("rtpmap") == 4
    assert media.remove("rtpmap") == 0
    assert not media.has("rtpmap")


def test_direction_falls_back_to_the_session_then_sendrecv() -> None:
    sdp = parse(EVERY_LINE_TYPE)  # a=recvonly at session level only
    assert sdp.direction == "recvonly"
    assert sdp.media[0].direction == "recvonly"
    sdp.media[0].direction = "inactive"
    assert sdp.media[0].direction == "inactive"
    assert sdp.media[0].lines[-1] == ("a", "inactive")
    assert parse(SIPP_DEFAULT).media[0].direction == "sendrecv"
    assert parse(SIPP_DEFAULT).direction == "sendrecv"
    orphan = MediaDescription("audio", 4000, "RTP/AVP", ["0"])
    assert orphan.direction == "sendrecv"
    assert SessionDescription([("a", "sendonly")], [orphan]).media[0].direction == "sendonly"


def test_setting_a_direction_replaces_the_old_one_in_place() -> None:
    media = parse(CARRIER_OFFER).media[0]
    media.lines.append(("a", "recvonly"))  # a second, contradictory one
    media.direction = "sendonly"
    assert [v for k, v in media.lines if k == "a"][-1] == "sendonly"
    assert media.get_all("recvonly") == [] and media.get_all("sendrecv") == []
    with pytest.raises(ValueError, match="direction must be one of"):
        media.direction = "both"


def test_changes_through_the_api_serialize_in_rfc_order() -> None:
    sdp = parse(IPV6)  # no session-level c=
    sdp.connection = Connection.for_address("192.0.2.1")
    sdp.media[0].connection = None
    sdp.media[0].formats.remove("0")
    text = serialize(sdp).decode()
    assert "s= \r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n" in text
    assert "m=audio 49170 RTP/AVP 8 101\r\na=rtpmap:8" in text
    assert parse(text) == sdp


def test_copies_are_independent() -> None:
    sdp = parse(CARRIER_OFFER)
    other = sdp.copy()
    other.media[0].port = 1
    other.media[0].formats.append("13")
    other.media[0].set("ptime", "40")
    other.set("X-nat", "1")
    assert serialize(sdp) == CARRIER_OFFER
    assert other != sdp


def test_connection_for_address_picks_the_address_type() -> None:
    assert str(Connection.for_address("192.0.2.1")) == "IN IP4 192.0.2.1"
    assert str(Connection.for_address("2001:db8::1")) == "IN IP6 2001:db8::1"
    assert str(Connection.for_address("media.example.net")) == "IN IP4 media.example.net"
    assert Connection("IN", "IP4", "0.0.0.0").is_unspecified
    assert Connection("IN", "IP6", "::").is_unspecified
    assert not Connection("IN", "IP4", "192.0.2.1").is_unspecified
    assert not Connection("IN", "IP4", "host.example").is_unspecified


# --- refusals ----------------------------------------------------------------------

BAD = [
    (b"", 1, "SDP is empty"),
    (b"\r\n\r\n", 1, "SDP is empty"),
    (SIPP_DEFAULT[5:], 1, "SDP must start with v=0, got 'o=user1"),
    (SIPP_DEFAULT.replace(b"v=0", b"v=1"), 1, "unsupported SDP version '1'"),
    (SIPP_DEFAULT.replace(b"o=user1", b"X=user1"), 2, "unknown line type 'X='"),
    (SIPP_DEFAULT.replace(b"s=-", b"y=-"), 3, "unknown line type 'y='"),
    (SIPP_DEFAULT.replace(b"a=rtpmap", b"ab=rtpmap"), 7, "expected '<type>=<value>', got 'ab=rtp"),
    (SIPP_DEFAULT.replace(b"s=-", b"s -"), 3, "expected '<type>=<value>', got 's -'"),
    (SIPP_DEFAULT.replace(b"o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n", b""),
     5, "missing o= line before the first m= line"),
    (SIPP_DEFAULT.replace(b"s=-\r\n", b""), 5, "missing s= line before the first m= line"),
    (SIPP_DEFAULT.replace(b"t=0 0\r\n", b""), 5, "missing t= line before the first m= line"),
    (crlf("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-"), 3, "missing t= line at the end of the SDP"),
    (SIPP_DEFAULT.replace(b"s=-", b"s=-\r\ns=again"), 4, "duplicate s= line"),
    (SIPP_DEFAULT.replace(b"IN IP4 127.0.0.1\r\ns", b"IN IP4\r\ns"), 2, "bad o= line 'user1 "),
    (SIPP_DEFAULT.replace(b"53655765", b"5365x765"), 2, "session id and version must be numbers"),
    (SIPP_DEFAULT.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4"), 4, "bad c= line 'IN IP4'"),
    (SIPP_DEFAULT.replace(b"t=0 0", b"t=now"), 5, "bad t= line 'now'"),
    (SIPP_DEFAULT.replace(b"RTP/AVP 0", b"RTP/AVP"), 6, "bad m= line 'audio 6000 RTP/AVP'"),
    (SIPP_DEFAULT.replace(b"6000", b"port"), 6, "bad m= line: port 'port' is not a number"),
    (SIPP_DEFAULT.replace(b"6000", b"6000/x"), 6, "bad m= line: port '6000/x' is not a number"),
    (SIPP_DEFAULT.replace(b"6000", b"6000/0"), 6, "port count '0' must be at least 1"),
    (SIPP_DEFAULT.replace(b"6000", b"70000"), 6, "m= line port '70000' out of range (0-65535)"),
    (SIPP_DEFAULT.replace(b"6000", b"9" * 5000), 6, "bad m= line: port '99999"),
    (SIPP_DEFAULT.replace(b"53655765", b"1" * 5000), 2, "must be numbers of at most 64 digits"),
    (SIPP_DEFAULT.replace(b"t=0 0", b"t=0 " + b"1" * 5000), 5, "bad t= line"),
    (SIPP_DEFAULT.replace(b"c=IN IP4 127.0.0.1\r\n", b""), 5,
     "m=audio line has no c= line and there is no session-level c= line"),
    (IPV6.replace(b"c=IN IP6 2001:db8::2\r\n", b""), 5,
     "m=audio line has no c= line and there is no session-level c= line"),
    (SIPP_DEFAULT + b"t=0 0\r\n", 8,
     "t= line is not allowed in a media description (the m= line at line 6 starts one)"),
    (SIPP_DEFAULT + b"c=IN\r\n", 8, "bad c= line 'IN'"),
    (SIPP_DEFAULT.replace(b"s=-", b"s=\xe9t\xe9"), 3, "not UTF-8 (byte 0xe9)"),
    (SIPP_DEFAULT + b"a=\xff\r\n", 8, "not UTF-8 (byte 0xff)"),
]


@pytest.mark.parametrize(("body", "line", "problem"), BAD)
def test_bad_sdp_is_refused_naming_the_line_and_the_problem(
    body: bytes, line: int, problem: str
) -> None:
    with pytest.raises(SdpError) as error:
        parse(body)
    assert error.value.line == line
    assert problem in error.value.problem
    assert str(error.value) == f"line {line}: {error.value.problem}"
    assert isinstance(error.value, ValueError)
    assert "\r" not in str(error.value) and "\n" not in str(error.value)


def test_huge_numbers_in_attributes_and_formats_are_just_unknown() -> None:
    huge = "9" * 5000
    body = SIPP_DEFAULT.replace(b"RTP/AVP 0", f"RTP/AVP {huge} 0".encode()) + (
        f"a=rtpmap:{huge} PCMA/{huge}\r\na=rtpmap:0 PCMU/{huge}\r\na=ptime:{huge}\r\n".encode()
    )
    media = parse(body).media[0]
    assert list(media.rtpmaps()) == [0]
    assert media.ptime is None
    assert select_codec(parse(body)).payload_type == 0


def test_a_rejected_stream_needs_no_connection() -> None:
    body = crlf("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "t=0 0", "m=video 0 RTP/AVP 31")
    assert parse(body).media[0].port == 0


def test_long_garbage_is_quoted_short() -> None:
    with pytest.raises(SdpError) as error:
        parse(SIPP_DEFAULT.replace(b"s=-", b"s" + b"x" * 500))
    assert len(str(error.value)) < 100


# --- select_codec --------------------------------------------------------------------


def test_the_offerers_first_supported_codec_wins_with_telephone_event_and_ptime() -> None:
    assert select_codec(parse(CARRIER_OFFER)) == CodecChoice(8, "PCMA", 8000, 101, 20, 0)


def test_static_payload_type_without_rtpmap() -> None:
    bare = parse(SIPP_DEFAULT.replace(b"a=rtpmap:0 PCMU/8000\r\n", b""))
    assert select_codec(bare) == CodecChoice(0, "PCMU", 8000, None, None, 0)


def test_supported_narrows_the_choice() -> None:
    assert select_codec(parse(CARRIER_OFFER), ("PCMU",)).payload_type == 0
    assert select_codec(parse(CARRIER_OFFER), ("pcmu", "g729")).payload_type == 18


def test_dynamic_payload_type_and_case_of_encoding_names() -> None:
    body = SIPP_DEFAULT.replace(b"RTP/AVP 0", b"RTP/AVP 97 98").replace(
        b"a=rtpmap:0 PCMU/8000", b"a=rtpmap:97 pcmu/8000\r\na=rtpmap:98 Telephone-Event/8000"
    )
    assert select_codec(parse(body)) == CodecChoice(97, "PCMU", 8000, 98, None, 0)


def test_wrong_clock_rate_or_channels_is_not_g711() -> None:
    body = SIPP_DEFAULT.replace(b"RTP/AVP 0", b"RTP/AVP 96 97 8 98 99").replace(
        b"a=rtpmap:0 PCMU/8000",
        b"a=rtpmap:96 PCMU/16000\r\na=rtpmap:97 PCMA/8000/2\r\n"
        b"a=rtpmap:98 telephone-event/16000\r\na=rtpmap:99 telephone-event/8000",
    )
    assert select_codec(parse(body)) == CodecChoice(8, "PCMA", 8000, 99, None, 0)


def test_streams_we_cannot_take_are_skipped() -> None:
    body = crlf(
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=video 5000 RTP/AVP 0",  # not audio, whatever its formats
        "m=audio 0 RTP/AVP 0",  # already rejected
        "m=audio 5002 RTP/SAVP 0",  # needs keys
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
        "m=audio 5004 RTP/AVP 8",
    )
    assert select_codec(parse(body)) == CodecChoice(8, "PCMA", 8000, None, None, 3)
    assert select_codec(parse(body), protos=("RTP/AVP", "RTP/SAVP")).media_index == 2


def test_no_common_codec_is_a_488_naming_what_was_offered() -> None:
    with pytest.raises(SdpError) as error:
        select_codec(parse(AUDIO_VIDEO), ("G722",))
    assert error.value.line is None
    assert str(error.value) == (
        "no common codec: offered opus/48000/2, PCMU/8000, PCMA/8000, telephone-event/8000;"
        " we accept G722/8000"
    )


def test_no_common_codec_names_formats_without_a_meaning_by_number() -> None:
    body = SIPP_DEFAULT.replace(b"RTP/AVP 0", b"RTP/AVP 96 18").replace(
        b"a=rtpmap:0 PCMU/8000\r\n", b""
    )
    with pytest.raises(SdpError, match=r"^no common codec: offered 96, G729/8000; we accept"):
        select_codec(parse(body))


def test_no_usable_audio_stream_at_all() -> None:
    video_only = crlf("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1",
                      "t=0 0", "m=video 5000 RTP/AVP 31")
    with pytest.raises(SdpError, match="no RTP/AVP audio stream offered"):
        select_codec(parse(video_only))


# --- make_answer ---------------------------------------------------------------------


def answer_to(offer_body: bytes, address: str = "192.0.2.99", port: int = 20000) -> str:
    offer = parse(offer_body)
    answer = make_answer(offer, address, port, select_codec(offer), Origin.new(address,
                                                                                session_id=42))
    text = serialize(answer)
    assert parse(text) == answer  # what we send is valid SDP
    return text.decode()


def test_answer_to_the_carrier_offer() -> None:
    assert answer_to(CARRIER_OFFER) == crlf(
        "v=0",
        "o=mediacore 42 42 IN IP4 192.0.2.99",
        "s=-",
        "c=IN IP4 192.0.2.99",
        "t=0 0",
        "m=audio 20000 RTP/AVP 8 101",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=ptime:20",
        "a=sendrecv",
    ).decode()


def test_answer_rejects_video_keeping_every_m_line_in_order() -> None:
    assert answer_to(AUDIO_VIDEO, "2001:db8::99") == crlf(
        "v=0",
        "o=mediacore 42 42 IN IP6 2001:db8::99",
        "s=-",
        "c=IN IP6 2001:db8::99",
        "t=0 0",
        "m=audio 20000 RTP/AVP 0 101",
        "a=rtpmap:101 telephone-event/8000",
        "a=sendrecv",
        "m=video 0 RTP/AVP 97 98",
    ).decode()


def test_answer_rejects_every_stream_but_the_chosen_one() -> None:
    offer = crlf(
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=3034423619 3042462419",
        "r=604800 3600 0 90000",
        "m=audio 0 RTP/AVP 0",
        "m=audio 5002 RTP/SAVP 0",
        "m=audio 5004 RTP/AVP 0",
        "m=audio 5006 RTP/AVP 0",
        "m=application 5008 TCP/MSRP *",
    )
    text = answer_to(offer)
    assert "t=3034423619 3042462419\r\nr=604800 3600 0 90000\r\n" in text  # RFC 3264 6
    assert [line for line in text.split("\r\n") if line.startswith("m=")] == [
        "m=audio 0 RTP/AVP 0",
        "m=audio 0 RTP/SAVP 0",
        "m=audio 20000 RTP/AVP 0",
        "m=audio 0 RTP/AVP 0",
        "m=application 0 TCP/MSRP *",
    ]


@pytest.mark.parametrize(
    ("offered", "answered"),
    [
        ("sendrecv", "sendrecv"),
        ("sendonly", "recvonly"),
        ("recvonly", "sendonly"),
        ("inactive", "inactive"),
        (None, "sendrecv"),
    ],
)
@pytest.mark.parametrize("level", ["media", "session"])
def test_answer_direction_mirrors_the_offer(
    offered: str | None, answered: str, level: str
) -> None:
    offer = parse(SIPP_DEFAULT)
    if offered is not None:
        (offer if level == "session" else offer.media[0]).add(offered)
    answer = make_answer(offer, "192.0.2.99", 20000, select_codec(offer), Origin.new("192.0.2.99"))
    assert answer.media[0].direction == answered
    assert answer.media[0].lines[-1] == ("a", answered)


@pytest.mark.parametrize(
    ("offered", "answered"),
    [("sendrecv", "recvonly"), ("sendonly", "recvonly"), ("recvonly", "inactive"),
     ("inactive", "inactive")],
)
def test_rfc2543_hold_is_answered_with_our_real_address(offered: str, answered: str) -> None:
    offer = parse(HOLD_ZERO)
    offer.media[0].add(offered)
    answer = make_answer(offer, "192.0.2.99", 20000, select_codec(offer), Origin.new("192.0.2.99"))
    assert answer.connection == Connection("IN", "IP4", "192.0.2.99")
    assert answer.media[0].port == 20000
    assert answer.media[0].direction == answered
    assert is_hold(offer)
    peer = peer_media(offer)
    assert peer is not None and peer.on_hold and not peer.receives


def test_the_offer_is_not_modified() -> None:
    offer = parse(CARRIER_OFFER)
    make_answer(offer, "192.0.2.99", 20000, select_codec(offer), Origin.new("192.0.2.99"))
    rewrite_connection(offer, "192.0.2.99", [20002], Origin.new("192.0.2.99"))
    assert serialize(offer) == CARRIER_OFFER


def test_a_choice_for_a_stream_that_is_not_there_is_a_programming_error() -> None:
    offer = parse(SIPP_DEFAULT)
    with pytest.raises(ValueError, match="media_index 3"):
        make_answer(offer, "192.0.2.99", 20000, CodecChoice(0, "PCMU", 8000, media_index=3),
                    Origin.new("192.0.2.99"))
    with pytest.raises(ValueError, match="port 70000"):
        make_answer(offer, "192.0.2.99", 70000, select_codec(offer), Origin.new("192.0.2.99"))


# --- rewrite_connection --------------------------------------------------------------


def test_rewrite_anchors_the_carrier_offer_on_us() -> None:
    origin = Origin.new("192.0.2.99", session_id=7)
    out = rewrite_connection(parse(CARRIER_OFFER), "192.0.2.99", [20002], origin)
    expected = (
        CARRIER_OFFER.replace(
            b"o=SBC 1686052349 1686052350 IN IP4 203.0.113.10", b"o=mediacore 7 7 IN IP4 192.0.2.99"
        )
        .replace(b"c=IN IP4 203.0.113.20", b"c=IN IP4 192.0.2.99")
        .replace(b"m=audio 31546", b"m=audio 20002")
        # removed: it named the carrier's RTCP port; ours is the RTP port + 1
        .replace(b"a=rtcp:31547\r\n", b"")
    )
    assert serialize(out) == expected


def test_rewrite_replaces_every_connection_and_keeps_rejected_streams_rejected() -> None:
    body = crlf(
        "v=0",
        "o=- 1 1 IN IP6 2001:db8::1",
        "s=-",
        "t=0 0",
        "a=ice-ufrag:F7gI",
        "a=ice-pwd:x9cml/YzichV2+XlhiMu8g",
        "m=audio 7078 RTP/AVP 0",
        "c=IN IP6 2001:db8::2",
        "a=candidate:1 1 UDP 2130706431 2001:db8::2 7078 typ host",
        "a=rtcp:7079 IN IP6 2001:db8::2",
        "m=video 0 RTP/AVP 31",
        "c=IN IP6 2001:db8::2",
        "m=audio 7080/2 RTP/AVP 8",
        "c=IN IP6 2001:db8::3",
        "b=AS:64",
        "a=end-of-candidates",
    )
    out = rewrite_connection(parse(body), "192.0.2.99", [20000, 20002, 20004],
                             Origin.new("192.0.2.99", session_id=1))
    assert serialize(out) == crlf(
        "v=0",
        "o=mediacore 1 1 IN IP4 192.0.2.99",
        "s=-",
        "c=IN IP4 192.0.2.99",
        "t=0 0",
        "m=audio 20000 RTP/AVP 0",
        "m=video 0 RTP/AVP 31",
        "m=audio 20004 RTP/AVP 8",
        "b=AS:64",
    )


def test_rewrite_to_ipv6_and_rejecting_a_stream_we_will_not_relay() -> None:
    out = rewrite_connection(parse(AUDIO_VIDEO), "2001:db8::99", [20000, 0],
                             Origin.new("2001:db8::99"))
    assert out.connection == Connection("IN", "IP6", "2001:db8::99")
    assert out.origin is not None and out.origin.addrtype == "IP6"
    assert [(m.port, m.connection) for m in out.media] == [(20000, None), (0, None)]
    assert out.media[1].get_all("rtpmap") == ["97 VP8/90000", "98 H264/90000"]


def test_rewrite_turns_an_rfc2543_hold_into_a_direction() -> None:
    out = rewrite_connection(parse(HOLD_ZERO), "192.0.2.99", [20000], Origin.new("192.0.2.99"))
    assert out.connection == Connection("IN", "IP4", "192.0.2.99")
    assert out.media[0].direction == "sendonly"
    assert is_hold(out)


def test_rewrite_needs_a_port_per_m_line() -> None:
    with pytest.raises(ValueError, match="2 ports for 1 m= lines"):
        rewrite_connection(parse(SIPP_DEFAULT), "192.0.2.99", [1, 2], Origin.new("192.0.2.99"))
    with pytest.raises(ValueError, match="not an address"):
        rewrite_connection(parse(SIPP_DEFAULT), "", [1], Origin.new("192.0.2.99"))


# --- Origin: RFC 3264 8 versioning ---------------------------------------------------


def test_origin_version_moves_only_when_our_description_changes() -> None:
    origin = Origin.new("192.0.2.99", session_id=1000)
    assert (origin.username, origin.session_id, origin.version) == ("mediacore", 1000, 1000)
    offer = parse(CARRIER_OFFER)
    first = rewrite_connection(offer, "192.0.2.99", [20000], origin)
    again = rewrite_connection(offer, "192.0.2.99", [20000], origin)  # a refresh: same SDP
    assert first.origin == again.origin
    assert serialize(first) == serialize(again)
    held = offer.copy()
    held.media[0].direction = "sendonly"
    third = rewrite_connection(held, "192.0.2.99", [20000], origin)
    assert third.origin is not None and third.origin.version == 1001
    assert third.origin.session_id == 1000
    assert origin.next_version() == 1002


def test_one_origin_serves_offers_and_answers_on_a_leg() -> None:
    origin = Origin.new("192.0.2.99", session_id=5)
    offer = parse(CARRIER_OFFER)
    answer = make_answer(offer, "192.0.2.99", 20000, select_codec(offer), origin)
    assert answer.origin is not None and answer.origin.version == 5
    reanswer = make_answer(offer, "192.0.2.99", 20000, select_codec(offer), origin)
    assert reanswer.origin is not None and reanswer.origin.version == 5
    moved = make_answer(offer, "192.0.2.99", 20010, select_codec(offer), origin)
    assert moved.origin is not None and moved.origin.version == 6


def test_fresh_origins_differ_and_fit_in_32_bits() -> None:
    ids = {Origin.new("192.0.2.99").session_id for _ in range(20)}
    assert len(ids) > 1
    assert all(0 <= i < 2**31 for i in ids)


# --- hold and the relay's view -------------------------------------------------------


@pytest.mark.parametrize(
    ("session_extra", "media_extra", "held"),
    [
        ([], [], False),
        ([], ["a=sendonly"], True),
        ([], ["a=inactive"], True),
        ([], ["a=recvonly"], False),
        (["a=sendonly"], [], True),
        (["a=inactive"], [], True),
        (["a=sendonly"], ["a=sendrecv"], False),  # media level wins
        ([], ["c=IN IP4 0.0.0.0"], True),
        ([], ["c=IN IP6 ::"], True),
    ],
)
def test_is_hold(session_extra: list[str], media_extra: list[str], held: bool) -> None:
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0",
             *session_extra, "m=audio 5000 RTP/AVP 0", *media_extra]
    assert is_hold(parse(crlf(*lines))) is held


def test_is_hold_edge_cases() -> None:
    assert is_hold(parse(HOLD_ZERO))
    assert not is_hold(parse(SIPP_DEFAULT.replace(b"6000", b"0")))  # rejected, not held
    partly = parse(AUDIO_VIDEO)
    partly.media[0].direction = "sendonly"
    assert not is_hold(partly)
    partly.media[1].direction = "inactive"
    assert is_hold(partly)


def test_effective_direction_reads_0000_as_not_receiving() -> None:
    sdp = parse(HOLD_ZERO)
    assert sdp.media[0].direction == "sendrecv"  # the attribute view
    assert effective_direction(sdp, sdp.media[0]) == "sendonly"  # what it means


def test_peer_media_tells_the_relay_where_to_send() -> None:
    assert peer_media(parse(CARRIER_OFFER)) == (0, "203.0.113.20", 31546, "203.0.113.20",
                                                31547, "sendrecv")
    assert peer_media(parse(SIPP_DEFAULT)) == (0, "127.0.0.1", 6000, "127.0.0.1", 6001,
                                               "sendrecv")
    ipv6 = peer_media(parse(IPV6))
    assert ipv6 == (0, "2001:db8::2", 49170, "2001:db8::3", 49171, "sendrecv")
    assert ipv6.receives and ipv6.sends and not ipv6.on_hold
    video = peer_media(parse(AUDIO_VIDEO), 1)
    assert video is not None and video.address == "192.0.2.21"
    assert peer_media(parse(SIPP_DEFAULT.replace(b"6000", b"0"))) is None
    assert peer_media(parse(SIPP_DEFAULT), 5) is None


# --- properties over generated descriptions ------------------------------------------

_TOKEN = st.text(string.ascii_letters + string.digits + "-.!%*_+`'~", min_size=1, max_size=10)
_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    min_size=1,
    max_size=24,
)
_NUMBER = st.integers(0, 2**64).map(str)
_ADDRESS = st.one_of(
    st.ip_addresses(v=4).map(lambda a: f"IN IP4 {a}"),
    st.ip_addresses(v=6).map(lambda a: f"IN IP6 {a}"),
    st.just("IN IP4 0.0.0.0"),
)
_ATTRIBUTE = st.one_of(
    st.sampled_from(["sendrecv", "sendonly", "recvonly", "inactive", "ptime:20", "rtcp:9",
                     "rtpmap:0 PCMU/8000", "rtpmap:101 telephone-event/8000", "fmtp:101 0-15",
                     "ice-ufrag:abc", "candidate:1 1 UDP 1 192.0.2.1 9 typ host"]),
    st.tuples(_TOKEN, st.one_of(st.none(), st.just(""), _TEXT)).map(
        lambda nv: nv[0] if nv[1] is None else f"{nv[0]}:{nv[1]}"
    ),
)


def _lines(kind: str, values: st.SearchStrategy[str], max_size: int) -> st.SearchStrategy:
    return st.lists(values.map(lambda v: f"{kind}={v}"), max_size=max_size)


@st.composite
def descriptions(draw: st.DrawFn) -> str:
    """Well-formed SDP, every line type in RFC order, with a c= wherever one is needed."""
    session_c = draw(st.booleans())
    lines = [
        "v=0",
        f"o={draw(_TOKEN)} {draw(_NUMBER)} {draw(_NUMBER)} {draw(_ADDRESS)}",
        f"s={draw(_TEXT)}",
    ]
    for kind in "iu":
        lines += draw(_lines(kind, _TEXT, 1))
    for kind in "ep":
        lines += draw(_lines(kind, _TEXT, 2))
    if session_c:
        lines.append(f"c={draw(_ADDRESS)}")
    lines += draw(_lines("b", st.tuples(_TOKEN, _NUMBER).map(":".join), 2))
    for _ in range(draw(st.integers(1, 2))):
        lines.append(f"t={draw(_NUMBER)} {draw(_NUMBER)}")
        lines += draw(_lines("r", _TEXT, 2))
    for kind in "zk":
        lines += draw(_lines(kind, _TEXT, 1))
    lines += draw(_lines("a", _ATTRIBUTE, 4))
    for _ in range(draw(st.integers(0, 3))):
        port = draw(st.one_of(st.just(0), st.integers(0, 65535)))
        count = draw(st.sampled_from(["", "", "/1", "/2"]))
        proto = draw(st.sampled_from(["RTP/AVP", "RTP/SAVP", "udp", "TCP/MSRP"]))
        formats = " ".join(draw(st.lists(st.one_of(_TOKEN, _NUMBER), min_size=1, max_size=5)))
        lines.append(f"m={draw(_TOKEN)} {port}{count} {proto} {formats}")
        lines += draw(_lines("i", _TEXT, 1))
        need_c = not session_c and port != 0
        lines += draw(_lines("c", _ADDRESS, 2).filter(lambda c, need=need_c: c or not need))
        lines += draw(_lines("b", st.tuples(_TOKEN, _NUMBER).map(":".join), 2))
        lines += draw(_lines("k", _TEXT, 1))
        lines += draw(_lines("a", _ATTRIBUTE, 5))
    return "".join(f"{line}\r\n" for line in lines)


PROPERTY = settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(descriptions())
def test_any_well_formed_description_round_trips(text: str) -> None:
    body = text.encode("utf-8")
    sdp = parse(body)
    assert serialize(sdp) == body
    assert serialize(parse(text.replace("\r\n", "\n"))) == body
    assert parse(serialize(sdp.copy())) == sdp


@PROPERTY
@given(descriptions(), st.sampled_from(["192.0.2.99", "2001:db8::99"]), st.data())
def test_rewrite_keeps_what_it_does_not_own(text: str, address: str, data: st.DataObject) -> None:
    offer = parse(text)
    ports = data.draw(st.lists(st.integers(1, 65535), min_size=len(offer.media),
                               max_size=len(offer.media)))
    out = rewrite_connection(offer, address, ports, Origin.new(address, session_id=1))
    assert serialize(offer) == text.encode()  # the input is untouched
    assert parse(serialize(out)) == out  # the output is valid SDP
    assert out.connection == Connection.for_address(address)
    assert out.origin == Origin.new(address, session_id=1)
    assert len(out.media) == len(offer.media)
    owned = {"rtcp", "sendrecv", "sendonly", "recvonly", "inactive", *ICE}
    for before, after, port in zip(offer.media, out.media, ports, strict=True):
        assert after.port == (0 if before.port == 0 else port)
        assert (after.media, after.proto, after.formats) == (before.media, before.proto,
                                                              before.formats)
        assert after.connection is None
        assert not after.has("rtcp") and not after.has("candidate")
        assert [ln for ln in after.lines if _split(ln) not in owned] == [
            ln for ln in before.lines if ln[0] != "c" and _split(ln) not in owned
        ]
        if before.port != 0:  # a rejected stream has no direction worth keeping
            assert effective_direction(out, after) == effective_direction(offer, before)
    assert [ln for ln in out.lines if ln[0] not in "oc" and _split(ln) not in owned] == [
        ln for ln in offer.lines if ln[0] not in "oc" and _split(ln) not in owned
    ]


ICE = {"candidate", "end-of-candidates", "ice-lite", "ice-mismatch", "ice-options", "ice-pacing",
       "ice-pwd", "ice-ufrag", "remote-candidates"}


def _split(line: tuple[str, str]) -> str | None:
    return line[1].partition(":")[0] if line[0] == "a" else None


@PROPERTY
@given(descriptions())
def test_answers_to_generated_offers_follow_rfc_3264(text: str) -> None:
    offer = parse(text)
    try:
        choice = select_codec(offer)
    except SdpError:
        return
    answer = make_answer(offer, "192.0.2.99", 20000, choice, Origin.new("192.0.2.99"))
    assert parse(serialize(answer)) == answer
    assert [m.media for m in answer.media] == [m.media for m in offer.media]
    assert [i for i, m in enumerate(answer.media) if m.port != 0] == [choice.media_index]
    accepted = answer.media[choice.media_index]
    assert accepted.formats[0] == str(choice.payload_type)
    assert accepted.direction == {"sendrecv": "sendrecv", "sendonly": "recvonly",
                                  "recvonly": "sendonly", "inactive": "inactive"}[
        effective_direction(offer, offer.media[choice.media_index])]


@settings(max_examples=300)
@given(st.one_of(st.binary(max_size=300), descriptions().map(str.encode)), st.data())
def test_garbage_gets_sdp_error_never_anything_else(body: bytes, data: st.DataObject) -> None:
    if body and data.draw(st.booleans()):  # damage a valid description somewhere
        at = data.draw(st.integers(0, len(body) - 1))
        body = body[:at] + data.draw(st.binary(max_size=4)) + body[at + 1 :]
    try:
        sdp = parse(body)
    except SdpError as error:
        assert error.line is not None and error.line >= 1
        return
    serialize(sdp)
    for media in sdp.media:
        media.rtpmaps()
        _ = media.ptime, media.direction
    is_hold(sdp)
    peer_media(sdp)
    with contextlib.suppress(SdpError):
        select_codec(sdp)


def test_a_media_section_follows_its_session_direction_without_a_reference_cycle() -> None:
    """A parsed description is freed by reference counting alone (no cycle for
    the garbage collector), and the fallback follows the session's lines even
    when they are replaced."""
    import gc
    import weakref

    sdp = parse(EVERY_LINE_TYPE)
    media = sdp.media[0]
    sdp.lines = [line for line in sdp.lines if line != ("a", "recvonly")] + [("a", "sendonly")]
    assert media.direction == "sendonly"
    gone = weakref.ref(sdp)
    gc.disable()
    try:
        del sdp
        assert gone() is None
    finally:
        gc.enable()
    assert media.direction == "sendonly"  # the section keeps what it fell back to
