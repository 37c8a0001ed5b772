"""The media policy (mediacore.sip.media_policy): SDP that cannot aim our relay is refused."""

from __future__ import annotations

import pytest

from mediacore.netinfo import broadcasts_from_fib_trie
from mediacore.sip import sdp
from mediacore.sip.media_policy import MAX_MEDIA_SECTIONS, MediaPolicy, MediaRefused, sdp_warning

POLICY = MediaPolicy("192.0.2.10", broadcasts=frozenset({"198.51.100.255"}))
CARRIER = "198.51.100.20"


def description(connection: str = "IN IP4 198.51.100.20", *, media: str = "",
                streams: int = 1) -> sdp.SessionDescription:
    text = (f"v=0\r\no=carrier 1 1 IN IP4 198.51.100.20\r\ns=-\r\nc={connection}\r\nt=0 0\r\n"
            + "m=audio 31000 RTP/AVP 8\r\n" * streams + media)
    return sdp.parse(text)


def refusal(described: sdp.SessionDescription, peer: str | None = CARRIER,
            policy: MediaPolicy = POLICY) -> MediaRefused:
    with pytest.raises(MediaRefused) as error:
        policy.check(described, peer_host=peer)
    return error.value


def test_a_carriers_ordinary_offer_passes() -> None:
    POLICY.check(description(), peer_host=CARRIER)
    POLICY.check(description(streams=MAX_MEDIA_SECTIONS), peer_host=CARRIER)


@pytest.mark.parametrize("connection", ["IN IP4 224.0.0.1/127", "IN IP4 239.1.2.3/16/2",
                                        "IN IP4 224.0.0.1"])
def test_multicast_is_refused_with_warning_330(connection: str) -> None:
    error = refusal(description(connection))
    assert error.code == 330 and "multicast" in str(error)
    assert error.warning().startswith('330 mediacore "m= line 1 (audio): ')


def test_ipv6_on_an_ipv4_media_plane_is_refused_with_warning_301() -> None:
    error = refusal(description("IN IP6 2001:db8::2"))
    assert error.code == 301 and "media plane is IP4 only" in str(error)
    ipv6 = MediaPolicy("2001:db8::10")
    ipv6.check(description("IN IP6 2001:db8::2"), peer_host="2001:db8::20")
    assert refusal(description(), policy=ipv6).code == 301


@pytest.mark.parametrize(("connection", "code"), [
    ("IN IP4 255.255.255.255", 399),
    ("IN IP4 198.51.100.255", 399),  # this host's subnet broadcast, from the edge
    ("IN IP4 0.1.2.3", 399),
    ("IN IP4 240.0.0.7", 399),
    ("IN IP4 2001:db8::1", 301),  # says IP4, is not
    ("IN IP4 media.example.net", 301),  # names are not looked up
    ("IN IP4 198.51.100.20/127", 301),  # a TTL on a unicast address
    ("IN IPX 198.51.100.20", 301),
    ("ATM NSAP 47.0091.8100.0000.0060.3e64.fd01.0060.3e64.fd01.00", 300),
])
def test_addresses_nothing_may_be_sent_to_are_refused(connection: str, code: int) -> None:
    assert refusal(description(connection)).code == code


def test_ipv4_mapped_ipv6_is_refused_on_an_ipv6_plane() -> None:
    ipv6 = MediaPolicy("2001:db8::10")
    assert refusal(description("IN IP6 ::ffff:127.0.0.1"), policy=ipv6).code == 399


def test_loopback_is_refused_from_another_host_and_taken_from_this_one() -> None:
    looped = description("IN IP4 127.0.0.1")
    assert "loopback" in str(refusal(looped, peer=CARRIER))
    assert "loopback" in str(refusal(looped, peer=None))
    MediaPolicy("127.0.0.1").check(looped, peer_host="127.0.0.1")


def test_the_rfc_2543_hold_address_passes_as_hold() -> None:
    POLICY.check(description("IN IP4 0.0.0.0"), peer_host=CARRIER)
    held = description("IN IP4 0.0.0.0")
    assert sdp.is_hold(held)


def test_too_many_media_sections_are_refused() -> None:
    error = refusal(description(streams=200))
    assert error.code == 399 and "200 media sections" in str(error)


def test_only_streams_in_use_are_looked_at() -> None:
    """A rejected stream (port 0) is never sent to; a media-level c= overrides the session's."""
    rejected = description(media="m=video 0 RTP/AVP 96\r\nc=IN IP4 224.0.0.1\r\n")
    POLICY.check(rejected, peer_host=CARRIER)
    overridden = sdp.parse(
        "v=0\r\no=c 1 1 IN IP4 198.51.100.20\r\ns=-\r\nc=IN IP4 224.0.0.1\r\nt=0 0\r\n"
        "m=audio 31000 RTP/AVP 8\r\nc=IN IP4 198.51.100.20\r\n")
    POLICY.check(overridden, peer_host=CARRIER)
    second = description(media="m=video 31002 RTP/AVP 96\r\nc=IN IP4 224.0.0.1\r\n")
    assert "m= line 2 (video)" in str(refusal(second))


def test_our_own_address_passes_for_a_spiral_through_this_node() -> None:
    POLICY.check(description("IN IP4 192.0.2.10"), peer_host=CARRIER)


def test_every_sdp_refusal_has_a_warning() -> None:
    assert sdp_warning(sdp.SdpError("no common codec")) == '399 mediacore "no common codec"'
    quoted = MediaRefused('a "quoted" \\ thing', 399).warning()
    assert quoted == '399 mediacore "a \\"quoted\\" \\\\ thing"'


FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.0.2.0/24 2 0 2
           |-- 192.0.2.2
              /32 host LOCAL
        |-- 192.0.2.255
           /32 link BROADCAST
        |-- 10.1.255.255
           /32 link BROADCAST
"""


def test_the_hosts_broadcasts_are_read_from_the_kernels_fib_trie() -> None:
    assert broadcasts_from_fib_trie(FIB_TRIE) == {"127.255.255.255", "192.0.2.255",
                                                  "10.1.255.255"}
    assert broadcasts_from_fib_trie("") == frozenset()
