"""SDP that cannot aim media, through the B2BUA (sans-IO): 488 with a Warning, or hold,
and the relay is never aimed where the description said.

Same harness as tests/unit/test_call_flows.py: the carrier on 127.0.0.1:5070,
targets on 127.0.0.1:5080/5090, the media plane an in-memory stand-in that
remembers every ``set_remote``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from mediacore.calls.media import Side
from mediacore.config import SipConfig
from mediacore.sip import message as sip
from mediacore.sip.transport import Peer
from tests.unit.test_call_flows import (
    CARRIER,
    OFFER,
    Harness,
    answer_from_target,
    in_dialog,
    invite,
    only,
    reinvite,
    ring_and_answer,
    target_peer,
)

MULTICAST = OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 224.0.0.1/127")
TARGET_SDP = (
    "v=0\r\no=target 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 {address}\r\nt=0 0\r\n"
    "m=audio 41000 RTP/AVP 8\r\n"
)


def finals(messages: list[sip.Message]) -> list[sip.Response]:
    return [m for m in messages if isinstance(m, sip.Response) and m.status >= 200]


def target_answer(request: sip.Request, status: int, address: str, tag: str = "t1") -> bytes:
    return sip.serialize(sip.make_response(
        request, status, to_tag=tag, body=TARGET_SDP.format(address=address).encode(),
        extra_headers=[("Contact", f"<sip:target@127.0.0.1:{request.uri.port}>"),  # type: ignore[union-attr]
                       ("Content-Type", "application/sdp")]))


def test_a_multicast_offer_is_488_with_warning_330_and_a_rejected_cdr(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    out = h.receive(invite(body=MULTICAST), CARRIER)
    (final,) = finals(out)
    assert final.status == 488
    assert final.headers.get("Warning").startswith('330 mediacore "m= line 1 (audio): 224.0.0.1')
    assert not [m for m in out if isinstance(m, sip.Request)]  # no target dialled
    assert h.media[0].remotes == {} and h.media[0].closed
    cdr = h.ended[0].cdr()
    assert cdr.disposition == "rejected" and cdr.sip_status == 488


def test_an_ipv6_offer_on_our_ipv4_media_plane_is_488_with_warning_301(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    body = OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP6 2001:db8::2")
    (final,) = finals(h.receive(invite(body=body), CARRIER))
    assert final.status == 488 and final.headers.get("Warning").startswith("301 ")


def test_two_hundred_media_sections_are_488(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    body = OFFER + "m=audio 40002 RTP/AVP 8\r\n" * 199
    (final,) = finals(h.receive(invite(body=body), CARRIER))
    assert final.status == 488 and "200 media sections" in final.headers.get("Warning")


def test_a_broadcast_offer_is_488(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    body = OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 255.255.255.255")
    (final,) = finals(h.receive(invite(body=body), CARRIER))
    assert final.status == 488 and "broadcast" in final.headers.get("Warning")


def test_a_loopback_offer_from_a_carrier_on_another_host_is_488(tmp_path: Path) -> None:
    h = Harness(tmp_path,
                sip_config=SipConfig(trusted_sources=(ipaddress.ip_network("0.0.0.0/0"),)))
    remote_carrier = Peer("udp", "198.51.100.20", 5060)
    (final,) = finals(h.receive(invite(), remote_carrier))
    assert final.status == 488 and "loopback" in final.headers.get("Warning")
    # The same offer from a carrier on this host is a call (the other tests).


def test_the_rfc_2543_hold_offer_is_a_call_that_sends_nothing(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    body = OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0")
    out = h.receive(invite(body=body), CARRIER)
    only(out, sip.Request, method="INVITE")  # the target is dialled
    assert Side.CALLER not in h.media[0].remotes  # and nothing aimed at 0.0.0.0


def test_a_target_answering_multicast_is_acked_byed_and_the_next_target_dialled(
        tmp_path: Path) -> None:
    h = Harness(tmp_path)
    out = h.receive(invite(), CARRIER)
    first = only(out, sip.Request, method="INVITE")
    out = h.receive(target_answer(first, 200, "224.0.0.1/127"), target_peer(first), at=1.0)
    requests = [m for m in out if isinstance(m, sip.Request)]
    assert [(m.method, m.call_id) for m in requests] == [
        ("ACK", first.call_id), ("BYE", first.call_id), ("INVITE", requests[2].call_id)]
    assert str(requests[2].uri).endswith(":5090")
    assert not finals(out)  # the caller waits for the next target
    assert Side.CALLEE not in h.media[0].remotes


def test_the_only_target_answering_multicast_fails_the_call_cleanly(tmp_path: Path) -> None:
    h = Harness(tmp_path, targets=("sip:+31201234567@127.0.0.1:5080",))
    out = h.receive(invite(), CARRIER)
    first = only(out, sip.Request, method="INVITE")
    out = h.receive(target_answer(first, 200, "224.0.0.1"), target_peer(first), at=1.0)
    assert [r.status for r in finals(out)] == [480]
    assert {m.method for m in out if isinstance(m, sip.Request)} == {"ACK", "BYE"}
    (call,) = h.ended
    cdr = call.cdr()
    assert cdr.disposition == "failed" and cdr.answer is None and cdr.target == ""
    assert Side.CALLEE not in h.media[0].remotes and h.media[0].closed


def test_a_target_ringing_with_multicast_early_media_is_not_aimed_at(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    out = h.receive(invite(), CARRIER)
    first = only(out, sip.Request, method="INVITE")
    h.receive(target_answer(first, 183, "224.0.0.1"), target_peer(first), at=0.5)
    assert Side.CALLEE not in h.media[0].remotes
    assert h.b2bua.calls  # the call goes on; a usable 200 may still come


def test_a_reinvite_moving_the_callers_media_to_multicast_is_488_and_moves_nothing(
        tmp_path: Path) -> None:
    h = Harness(tmp_path)
    _, ok = ring_and_answer(h)
    before = dict(h.media[0].remotes)
    body = MULTICAST.replace("o=carrier 1 1", "o=carrier 1 2")
    out = h.receive(reinvite(ok, body), CARRIER, at=10.0)
    (final,) = finals(out)
    assert final.status == 488 and final.headers.get("Warning").startswith("330 ")
    assert not [m for m in out if isinstance(m, sip.Request)]  # not passed to the target
    assert h.media[0].remotes == before
    assert h.b2bua.calls  # the call goes on


def test_an_update_moving_media_to_broadcast_is_488(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    _, ok = ring_and_answer(h)
    before = dict(h.media[0].remotes)
    body = OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 255.255.255.255")
    update = in_dialog("UPDATE", ok, 2, "z9hG4bKupd2").split(b"Content-Length")[0] + (
        f"Contact: <sip:carrier@127.0.0.1:5070>\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}").encode()
    (final,) = finals(h.receive(update, CARRIER, at=10.0))
    assert final.status == 488 and h.media[0].remotes == before


def test_a_reinvite_answered_with_multicast_is_488_to_the_offerer(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    onward, ok = ring_and_answer(h)
    before = dict(h.media[0].remotes)
    hold = OFFER.replace("o=carrier 1 1", "o=carrier 1 2") + "a=sendonly\r\n"
    out = h.receive(reinvite(ok, hold), CARRIER, at=10.0)
    forwarded = only(out, sip.Request, method="INVITE")
    out = h.receive(target_answer(forwarded, 200, "224.0.0.1"), target_peer(onward), at=10.2)
    only(out, sip.Request, method="ACK")  # the target's 2xx is ACKed all the same
    (reply,) = finals(out)
    assert reply.status == 488 and reply.headers.get("Warning").startswith("330 ")
    assert h.media[0].remotes[Side.CALLEE] == before[Side.CALLEE]
    assert h.b2bua.calls


def test_an_ordinary_target_answer_still_bridges(tmp_path: Path) -> None:
    """The rules leave ordinary calls alone (the flows in test_call_flows.py too)."""
    h = Harness(tmp_path)
    out = h.receive(invite(), CARRIER)
    first = only(out, sip.Request, method="INVITE")
    out = h.receive(answer_from_target(first, 200), target_peer(first), at=1.0)
    assert [r.status for r in finals(out)] == [200]
    assert h.media[0].remotes[Side.CALLEE] == ("127.0.0.1", 41000)
