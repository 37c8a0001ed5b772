"""stamp_via's direct rewrite of the Via lines against the original way of doing it
(a validating Via() and Headers.remove/add), which it must match byte for byte."""

from __future__ import annotations

import pytest

from mediacore.sip import message as sip
from mediacore.sip.endpoint import _stamp_via_slowly, stamp_via
from mediacore.sip.transport import Peer

SOURCE = Peer("udp", "192.0.2.7", 5071)
SOURCE6 = Peer("udp", "2001:db8::7", 5071)

VIAS = [
    "Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKa;rport",
    "Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKa",
    "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKa",
    "Via: SIP/2.0/udp host.example;rport=1;received=10.0.0.1;branch=z9hG4bKa",
    "Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKa;rport",
    "v: SIP/2.0/UDP h1;branch=z9hG4bKa;rport,SIP/2.0/TCP h2;branch=z9hG4bKb",
    "Via: SIP/2.0/UDP h1;branch=z9hG4bKa;rport\r\nVia: SIP/2.0/UDP h2;branch=z9hG4bKb",
    "Via: SIP / 2.0 / UDP h1 : 5060 ;branch=z9hG4bKa ;rport",
    'Via: SIP/2.0/UDP h1;branch=z9hG4bKa;x="a;b";rport',
]


def request(via: str) -> sip.Request:
    message = sip.parse(
        f"OPTIONS sip:a@b SIP/2.0\r\n{via}\r\nFrom: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\n"
        "Call-ID: x\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n".encode()
    )
    assert isinstance(message, sip.Request)
    return message


@pytest.mark.parametrize("source", [SOURCE, SOURCE6])
@pytest.mark.parametrize("via", VIAS)
def test_stamp_via_matches_the_validating_way(via: str, source: Peer) -> None:
    fast, slow = request(via), request(via)
    stamp_via(fast, source)
    top = slow.top_via
    assert top is not None
    if top.host != source.host or top.has_rport:
        params = [(n, v) for n, v in top.params if n.lower() not in ("received", "rport")]
        params.append(("received", source.host))
        if top.has_rport:
            params.append(("rport", str(source.port)))
        _stamp_via_slowly(slow, params)
    assert sip.serialize(fast) == sip.serialize(slow)
    assert fast.top_via == slow.top_via and fast.vias == slow.vias
    assert sip.parse(sip.serialize(fast)) == fast


def test_the_stamped_via_stays_where_the_request_had_it() -> None:
    """Responses copy the request's Vias in place: stamping must not move them
    behind CSeq (SIPp and most UAs do not care, header-order-sensitive
    equipment and humans reading traces do)."""
    message = request("Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKa;rport")
    stamp_via(message, SOURCE)
    text = sip.serialize(message).decode()
    assert text.splitlines()[1] == ("Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKa;"
                                    "received=192.0.2.7;rport=5071")
    response = sip.serialize(sip.make_response(message, 200)).decode()
    assert response.splitlines()[1].startswith("Via: SIP/2.0/UDP 198.51.100.1:5060")
