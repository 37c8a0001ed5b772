"""Which sources a call's media legs accept: config and SIP peers to a policy.

Sans-IO: the policy is a function of the config and of the call's SIP
messages (calls/latching.py); the engine that enforces it per packet is
tested with real sockets in tests/integration/test_rtp_latching.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mediacore.calls.latching import (
    LegLatching,
    call_leg_latching,
    leg_latching,
    request_source_host,
)
from mediacore.calls.media import Side
from mediacore.config import NumberConfig, RtpConfig
from mediacore.rtp.engine import Latching
from mediacore.sip import message as sip
from mediacore.sip.endpoint import stamp_via
from mediacore.sip.transport import Peer
from tests.unit.test_call_flows import Harness, answer_from_target, invite, only, target_peer

NUMBER = NumberConfig(number="+31900123456", owner="acme", targets=("sip:t@127.0.0.1:5080",))
NAT_NUMBER = NumberConfig(number="+31900123457", owner="acme",
                          targets=("sip:t@127.0.0.1:5080",), media_latching="nat")
STRICT_NUMBER = NumberConfig(number="+31900123458", owner="acme",
                             targets=("sip:t@127.0.0.1:5080",), media_latching="strict")


def test_strict_is_the_default_and_needs_no_hosts() -> None:
    assert leg_latching(RtpConfig(), NUMBER, "192.0.2.7") == LegLatching(Latching.STRICT)
    assert leg_latching(RtpConfig(), None, None) == LegLatching(Latching.STRICT)


def test_the_number_overrides_the_rtp_default_both_ways() -> None:
    assert leg_latching(RtpConfig(), NAT_NUMBER, "192.0.2.7") == LegLatching(
        Latching.NAT, ("192.0.2.7",), None)
    nat_everywhere = RtpConfig(latching="nat")
    assert leg_latching(nat_everywhere, NUMBER, "192.0.2.7").mode is Latching.NAT
    assert leg_latching(nat_everywhere, STRICT_NUMBER, "192.0.2.7") == LegLatching(
        Latching.STRICT)


def test_relatch_after_reaches_nat_legs_and_zero_means_never() -> None:
    assert leg_latching(RtpConfig(latching="nat", relatch_after=5), None, None) == LegLatching(
        Latching.NAT, (), 5.0)
    assert leg_latching(RtpConfig(latching="nat"), None, None).relatch_after is None
    assert leg_latching(RtpConfig(relatch_after=5), None, None) == LegLatching(Latching.STRICT)


def test_a_peer_that_is_not_an_ip_literal_is_not_a_host() -> None:
    assert leg_latching(RtpConfig(latching="nat"), None, "trunk.example.net").hosts == ()


def request(via: str) -> sip.Request:
    message = sip.parse(
        f"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: {via}\r\nFrom: <sip:a@b>;tag=1\r\n"
        "To: <sip:x@127.0.0.1>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n".encode())
    assert isinstance(message, sip.Request)
    return message


@pytest.mark.parametrize(("via", "source", "expected"), [
    ("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1", "127.0.0.1", "127.0.0.1"),
    ("SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1", "203.0.113.9", "203.0.113.9"),  # NAT
    ("SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1;rport", "203.0.113.9", "203.0.113.9"),
    ("SIP/2.0/UDP pbx.example.net;branch=z9hG4bK1", "198.51.100.2", "198.51.100.2"),
])
def test_the_request_source_is_the_stamped_received(via: str, source: str,
                                                     expected: str) -> None:
    message = request(via)
    stamp_via(message, Peer("udp", source, 5070))
    assert request_source_host(message) == expected


def test_a_call_gives_the_invites_source_and_the_targets_next_hop(tmp_path: Path) -> None:
    h = Harness(tmp_path, media_latching="nat")
    # The carrier's Via names its private address; its packets come from 127.0.0.9.
    data = invite().replace(b"Via: SIP/2.0/UDP 127.0.0.1:5070", b"Via: SIP/2.0/UDP 10.0.0.5:5070")
    sent = h.receive(data, Peer("udp", "127.0.0.9", 5070))
    (call,) = h.b2bua.calls.values()
    rtp = RtpConfig(relatch_after=3)
    assert call_leg_latching(rtp, call, Side.CALLER) == LegLatching(
        Latching.NAT, ("127.0.0.9",), 3.0)
    target_invite = only(sent, sip.Request, method="INVITE")
    assert call_leg_latching(rtp, call, Side.CALLEE) == LegLatching(
        Latching.NAT, ("127.0.0.1",), 3.0)  # TARGET_1's host
    h.receive(answer_from_target(target_invite, 200), target_peer(target_invite))
    assert call_leg_latching(rtp, call, Side.CALLEE).hosts == ("127.0.0.1",)
    assert call_leg_latching(rtp, None, Side.CALLER) == LegLatching(Latching.STRICT)


def test_a_call_of_a_number_without_the_key_follows_rtp_latching(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.receive(invite(), Peer("udp", "127.0.0.1", 5070))
    (call,) = h.b2bua.calls.values()
    assert call_leg_latching(RtpConfig(), call, Side.CALLER) == LegLatching(Latching.STRICT)
    assert call_leg_latching(RtpConfig(latching="nat"), call, Side.CALLER).mode is Latching.NAT
