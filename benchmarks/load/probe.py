"""A latency probe: one more call through the server, carrying timestamped RTP.

Why: DESIGN.md reads relay capacity at p99 added latency, not at loss
(socket queues absorb overload as delay long before they drop). SIPp
measures no RTP latency, and the relay's own counters are not on the wire,
so the probe places one ordinary call (INVITE, ACK, BYE over UDP, like the
SIPp callers) to the same SIPp callee and sends 50 packets a second of
PCMA whose payload starts with the send time. The callee echoes them, so
each packet crosses the relay twice (A to B, then B to A) plus SIPp's echo:
the round trip is an upper bound on twice the relay's added latency, and
its idle value is the floor to compare with.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import threading
import time
from typing import Any

from benchmarks.load.common import SERVICE_NUMBER, percentile

_SDP_PORT = re.compile(rb"^m=audio (\d+) ", re.M)
_SDP_ADDR = re.compile(rb"^c=IN IP4 (\S+)", re.M)


class LatencyProbe:
    """One call, placed with :meth:`call`, measured with :meth:`run`, ended with :meth:`hang_up`."""

    def __init__(self, server_port: int, *, interval: float = 0.02) -> None:
        self.server = ("127.0.0.1", server_port)
        self.interval = interval
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.sip.settimeout(0.2)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp.settimeout(0.2)
        self.sip_port = self.sip.getsockname()[1]
        self.rtp_port = self.rtp.getsockname()[1]
        self.call_id = f"probe-{os.urandom(6).hex()}@127.0.0.1"
        self.tag = os.urandom(4).hex()
        self.to_header = ""
        self.contact = f"sip:{SERVICE_NUMBER}@127.0.0.1:{server_port}"
        self.remote_rtp: tuple[str, int] | None = None
        self.rtts_ms: list[float] = []
        self.sent = 0
        self._stop = threading.Event()

    # --- SIP -------------------------------------------------------------------

    def _request(self, method: str, uri: str, cseq: int, body: bytes = b"",
                 to: str | None = None) -> bytes:
        branch = "z9hG4bK" + os.urandom(6).hex()
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.sip_port};branch={branch};rport",
            f'From: "probe" <sip:+31610000000@127.0.0.1:{self.sip_port}>;tag={self.tag}',
            f"To: {to or f'<sip:{SERVICE_NUMBER}@127.0.0.1:{self.server[1]}>'}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:probe@127.0.0.1:{self.sip_port}>",
            "Max-Forwards: 70",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def _sdp(self) -> bytes:
        return ("v=0\r\no=probe 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
                f"t=0 0\r\nm=audio {self.rtp_port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
                "a=ptime:20\r\n").encode()

    def _answer_request(self, data: bytes) -> None:
        """Say 200 to whatever the server asks inside the dialog (a BYE at shutdown)."""
        head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace").split("\r\n")
        keep = [h for h in head[1:] if h.split(":", 1)[0].lower()
                in ("via", "from", "to", "call-id", "cseq")]
        reply = "\r\n".join(["SIP/2.0 200 OK", *keep, "Content-Length: 0"]) + "\r\n\r\n"
        self.sip.sendto(reply.encode(), self.server)

    def call(self, timeout: float = 20.0) -> bool:
        """INVITE until the 200 (through any 183 of the recording notice), then ACK."""
        uri = f"sip:{SERVICE_NUMBER}@127.0.0.1:{self.server[1]}"
        invite = self._request("INVITE", uri, 1, self._sdp())
        deadline = time.monotonic() + timeout
        provisional = False
        next_send = 0.0
        while time.monotonic() < deadline:
            if not provisional and time.monotonic() >= next_send:
                self.sip.sendto(invite, self.server)
                next_send = time.monotonic() + 0.5
            try:
                data = self.sip.recv(65535)
            except TimeoutError:
                continue
            if not data.startswith(b"SIP/2.0 "):
                self._answer_request(data)
                continue
            status = int(data[8:11])
            if status < 200:
                provisional = True
                continue
            if status >= 300:
                return False
            self._take_answer(data)
            ack = self._request("ACK", self.contact, 1, to=self.to_header)
            self.sip.sendto(ack, self.server)
            return self.remote_rtp is not None
        return False

    def _take_answer(self, data: bytes) -> None:
        head, _, body = data.partition(b"\r\n\r\n")
        for line in head.decode(errors="replace").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() in ("to", "t"):
                self.to_header = value.strip()
            elif name.lower() in ("contact", "m"):
                self.contact = value.strip().strip("<>").split(">")[0]
        port, addr = _SDP_PORT.search(body), _SDP_ADDR.search(body)
        if port and addr:
            self.remote_rtp = (addr.group(1).decode(), int(port.group(1)))

    def hang_up(self, timeout: float = 10.0) -> bool:
        bye = self._request("BYE", self.contact, 2, to=self.to_header)
        deadline = time.monotonic() + timeout
        next_send = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= next_send:
                self.sip.sendto(bye, self.server)
                next_send = time.monotonic() + 0.5
            try:
                data = self.sip.recv(65535)
            except TimeoutError:
                continue
            if data.startswith(b"SIP/2.0 200") and b" BYE" in data.split(b"CSeq:", 1)[-1][:20]:
                return True
            if not data.startswith(b"SIP/2.0 "):
                self._answer_request(data)
        return False

    # --- RTP -------------------------------------------------------------------

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.rtp.recv(2048)
            except TimeoutError:
                continue
            now = time.monotonic_ns()
            if len(data) >= 20 and data[12:14] == b"PB":
                sent = struct.unpack_from("!q", data, 14)[0]
                self.rtts_ms.append((now - sent) / 1e6)

    def run(self, seconds: float) -> None:
        """Send for ``seconds`` at one packet per ``interval``; echoes are timed as they come."""
        assert self.remote_rtp is not None
        receiver = threading.Thread(target=self._receive, name="probe-rx", daemon=True)
        receiver.start()
        ssrc = int.from_bytes(os.urandom(4), "big")
        filler = b"\xd5" * 150
        start = time.monotonic()
        seq = 0
        while time.monotonic() - start < seconds:
            header = struct.pack("!BBHII", 0x80, 8, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF,
                                 ssrc)
            packet = header + b"PB" + struct.pack("!q", time.monotonic_ns()) + filler
            self.rtp.sendto(packet, self.remote_rtp)
            self.sent += 1
            seq += 1
            time.sleep(max(0.0, start + seq * self.interval - time.monotonic()))
        time.sleep(0.5)  # the last echoes
        self._stop.set()
        receiver.join(2)

    def summary(self) -> dict[str, Any]:
        rtts = self.rtts_ms
        return {
            "sent": self.sent,
            "received": len(rtts),
            "lost": max(0, self.sent - len(rtts)),
            "rtt_ms_p50": percentile(rtts, 50),
            "rtt_ms_p95": percentile(rtts, 95),
            "rtt_ms_p99": percentile(rtts, 99),
            "rtt_ms_max": max(rtts) if rtts else None,
        }

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()


def measure(server_port: int, seconds: float) -> dict[str, Any]:
    """Place the probe call, measure for ``seconds``, hang up; the summary (or why not)."""
    probe = LatencyProbe(server_port)
    try:
        if not probe.call():
            return {"error": "the probe call was not answered", "call_id": probe.call_id}
        probe.run(seconds)
        out = probe.summary()
        out["call_id"] = probe.call_id
        out["hung_up"] = probe.hang_up()
        return out
    finally:
        probe.close()
