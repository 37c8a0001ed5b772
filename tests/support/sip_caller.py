"""A small SIP caller on a UDP socket, for media tests that need to choose the SDP.

SIPp sends its RTP from the port it signals; the media-source tests need a
caller that signals one address and sends from another (a NATed phone), and
that can watch every datagram its media sockets receive. This one sends an
INVITE with the SDP it is given, ACKs the 200 and hangs up with BYE: just
the caller's side of RFC 3261 that a call to the server needs.
"""

from __future__ import annotations

import socket
import time

from mediacore.sip import message as sip

SERVICE = "+31900123456"


def offer(host: str, port: int, payload_type: int = 8) -> str:
    return (f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP {payload_type}\r\na=ptime:20\r\n")


class SipCaller:
    """One call to ``server_port`` from a SIP socket on ``host``."""

    def __init__(self, server_port: int, *, host: str = "127.0.0.1",
                 call_id: str = "media-source-call") -> None:
        self.server = ("127.0.0.1", server_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.call_id = call_id
        self.final: sip.Response | None = None
        self.responses: list[sip.Response] = []

    def invite(self, sdp: str, number: str = SERVICE) -> None:
        self._send(
            f"INVITE sip:{number}@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch=z9hG4bK{self.call_id}-1;rport\r\n"
            f"From: \"+31612345678\" <sip:+31612345678@{self.host}>;tag=caller\r\n"
            f"To: <sip:{number}@127.0.0.1>\r\nCall-ID: {self.call_id}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:caller@{self.host}:{self.port}>\r\nMax-Forwards: 70\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}")

    def wait_for(self, status: int, timeout: float = 10.0) -> sip.Response:
        """The first response with ``status`` (earlier ones are kept in ``responses``)."""
        deadline = time.monotonic() + timeout
        while True:
            for response in self.responses:
                if response.status == status:
                    return response
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {status}; got {[r.status for r in self.responses]}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            message = sip.parse(data)
            if isinstance(message, sip.Response):
                self.responses.append(message)
                if message.status >= 200 and self.final is None:
                    self.final = message

    def ack(self) -> None:
        """ACK the 200 (a request of its own to the 200's Contact, RFC 3261 13.2.2.4)."""
        assert self.final is not None and self.final.status == 200
        self._in_dialog("ACK", 1, "ack")

    def bye(self) -> sip.Response:
        """Hang up; the 200 to the BYE (a 200 of the INVITE resent meanwhile is skipped)."""
        self.responses = []
        self._in_dialog("BYE", 2, "bye")
        deadline = time.monotonic() + 10
        while True:
            response = self.wait_for(200, max(0.0, deadline - time.monotonic()))
            if response.cseq.method == "BYE":
                return response
            self.responses.remove(response)

    def _in_dialog(self, method: str, cseq: int, branch: str) -> None:
        assert self.final is not None
        to = self.final.headers.get("To")
        contact = self.final.headers.get("Contact") or f"<sip:mediacore@{self.server[0]}>"
        uri = contact.strip().split(">")[0].lstrip("<")
        self._send(
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch=z9hG4bK{self.call_id}-{branch}"
            ";rport\r\n"
            f"From: \"+31612345678\" <sip:+31612345678@{self.host}>;tag=caller\r\n"
            f"To: {to}\r\nCall-ID: {self.call_id}\r\nCSeq: {cseq} {method}\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")

    def _send(self, text: str) -> None:
        self.sock.sendto(text.encode(), self.server)

    def close(self) -> None:
        self.sock.close()
