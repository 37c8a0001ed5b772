"""Typical carrier traffic, shared by tests, the fuzzer and the benchmarks."""

from __future__ import annotations

SDP_OFFER = (
    b"v=0\r\n"
    b"o=- 8123456 8123456 IN IP4 198.51.100.20\r\n"
    b"s=-\r\n"
    b"c=IN IP4 198.51.100.20\r\n"
    b"t=0 0\r\n"
    b"m=audio 31000 RTP/AVP 8 0 101\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=ptime:20\r\n"
)

#: A carrier's initial INVITE to a service number, about 900 bytes: two Vias,
#: Record-Route, P-Asserted-Identity, Privacy, Allow, Supported,
#: Session-Expires and an SDP offer.
CARRIER_INVITE = (
    b"INVITE sip:+31900123456@203.0.113.10:5060;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bK-524287-1-a3f2c1d0e9;rport\r\n"
    b"Via: SIP/2.0/UDP 10.20.30.40:5060;received=10.20.30.40;branch=z9hG4bK8d7c6b5a4\r\n"
    b"Record-Route: <sip:198.51.100.20;lr;ftag=as1f2e3d4c>\r\n"
    b"Max-Forwards: 68\r\n"
    b'From: "+31612345678" <sip:+31612345678@carrier.example.net;user=phone>;tag=as1f2e3d4c\r\n'
    b"To: <sip:+31900123456@203.0.113.10;user=phone>\r\n"
    b"Call-ID: 5c1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a@198.51.100.20\r\n"
    b"CSeq: 102 INVITE\r\n"
    b"Contact: <sip:+31612345678@198.51.100.20:5060>\r\n"
    b"P-Asserted-Identity: <sip:+31612345678@carrier.example.net;user=phone>\r\n"
    b"Privacy: none\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK\r\n"
    b"Supported: timer, 100rel\r\n"
    b"Session-Expires: 1800;refresher=uac\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP_OFFER)).encode() + b"\r\n"
    b"\r\n" + SDP_OFFER
)

#: The 200 OK a target sends back for our outbound INVITE, with its SDP answer.
TARGET_200_OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK-mc-7f3a9b2c1d;rport=5060;"
    b"received=203.0.113.10\r\n"
    b"Record-Route: <sip:198.51.100.20:5060;lr>\r\n"
    b"From: <sip:+31900123456@203.0.113.10>;tag=mc-1a2b3c4d\r\n"
    b"To: <sip:+31201234567@198.51.100.30;user=phone>;tag=9f8e7d6c\r\n"
    b"Call-ID: mc-0e1d2c3b4a5968778695a4b3c2d1e0f@203.0.113.10\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:+31201234567@198.51.100.30:5060>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n"
    b"Supported: timer\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP_OFFER)).encode() + b"\r\n"
    b"\r\n" + SDP_OFFER
)
