"""What one answered call costs the server's SIP side, sans-IO, and each message of it.

The call is the load test's (sipp-scenarios/load_caller.xml and
load_callee.xml), played against a SipEndpoint and the B2BUA as the server
wires them, minus sockets and with the in-memory media of the call-flow
tests: INVITE from the carrier (100 Trying and the INVITE to the target go
out), 180 and 200 from the target (180, ACK to the target and 200 to the
caller go out), ACK and BYE from the caller (200 and the BYE to the target go
out), and the target's 200 to our BYE. Twelve messages: six parsed, six
written. The clock moves 4 ms per call (250 calls/s) and the timers run
every 50 calls, so transactions linger and are reaped as in the server.

The harness does as little as it can: the caller's messages are templates
filled with a call number, and what the target and the caller answer to our
messages is cut from our bytes with ``bytes.split``, not parsed (about 5 us
of the figure per call, see ``test_harness_only``).

    .venv/bin/pytest benchmarks/bench_call_flow.py --benchmark-only

``test_call`` is microseconds per call; the others per message.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mediacore.sip import message as sip
from mediacore.sip.endpoint import Transmit
from mediacore.sip.transport import Peer
from tests.unit.test_call_flows import Harness

CALLER = Peer("udp", "127.0.0.1", 5070)
TARGET = Peer("udp", "127.0.0.1", 5080)
SERVICE = "+31900123456"  # the Harness's number; it dials 127.0.0.1:5080 first

CALLER_SDP = (
    b"v=0\r\no=carrier 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n"
    b"c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8 101\r\n"
    b"a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\na=ptime:20\r\n"
)
TARGET_SDP = (
    b"v=0\r\no=target 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n"
    b"c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6100 RTP/AVP 8 101\r\n"
    b"a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\n"
)

# What SIPp's load caller sends; %(n)d is the call number. Unlike SIPp, every
# call comes from another number, as on a trunk: nothing the server keeps by
# text (parsed URIs, name-addrs) is reused from one call to the next.
INVITE = (
    b"INVITE sip:" + SERVICE.encode() + b"@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-4242-%(n)d-0;rport\r\n"
    b'From: "+316%(n)08d" <sip:+316%(n)08d@127.0.0.1:5070>;tag=4242SIPpTag00%(n)d\r\n'
    b"To: <sip:" + SERVICE.encode() + b"@127.0.0.1:5060>\r\n"
    b"Call-ID: %(n)d-4242@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:+316%(n)08d@127.0.0.1:5070;transport=UDP>\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(CALLER_SDP)).encode() + b"\r\n\r\n" + CALLER_SDP
)
IN_DIALOG = (
    b"%(method)s sip:" + SERVICE.encode() + b"@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-4242-%(n)d-%(cseq)d;rport\r\n"
    b'From: "+316%(n)08d" <sip:+316%(n)08d@127.0.0.1:5070>;tag=4242SIPpTag00%(n)d\r\n'
    b"%(to)s\r\n"
    b"Call-ID: %(n)d-4242@127.0.0.1\r\n"
    b"CSeq: %(cseq)d %(method)s\r\n"
    b"Contact: <sip:+316%(n)08d@127.0.0.1:5070;transport=UDP>\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 0\r\n\r\n"
)
TARGET_CONTACT = b"Contact: <sip:127.0.0.1:5080;transport=UDP>\r\n"


def header_lines(data: bytes) -> dict[bytes, bytes]:
    """Our message's header lines by their name as written (we write long names)."""
    head = data[: data.index(b"\r\n\r\n")]
    return {line[: line.index(b":")]: line for line in head.split(b"\r\n")[1:]}


def target_answer(request: bytes, status: bytes, n: int, body: bytes = b"") -> bytes:
    """What SIPp's load callee answers: our Via, From, Call-ID and CSeq, To with its tag."""
    h = header_lines(request)
    to = h[b"To"]
    if b";tag=" not in to:
        to += b";tag=4242SIPpTag01%d" % n
    head = b"\r\n".join((b"SIP/2.0 " + status, h[b"Via"], h[b"From"], to, h[b"Call-ID"],
                         h[b"CSeq"]))
    if body:
        return (head + b"\r\n" + TARGET_CONTACT + b"Content-Type: application/sdp\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return head + b"\r\n" + TARGET_CONTACT + b"Content-Length: 0\r\n\r\n"


class Call:
    """One server (endpoint + B2BUA) and the carrier and target SIPp would be."""

    def __init__(self, tmp_path: Path) -> None:
        self.h = Harness(tmp_path)
        self.endpoint = self.h.endpoint
        self.b2bua = self.h.b2bua
        self.n = 0
        self.ended = 0
        self.now = 0.0

    def receive(self, data: bytes, peer: Peer) -> list[Transmit]:
        """The server's side: parse, transactions, B2BUA, and writing what goes out."""
        now = self.now
        handle = self.b2bua.handle
        sent: list[Transmit] = []
        outputs = self.endpoint.receive(data, peer, now)
        for output in outputs:
            if type(output) is Transmit:
                sent.append(output)
            else:
                outputs += handle(output, now)
        return sent

    def run(self) -> None:
        self.n += 1
        n = self.n
        receive = self.receive
        out = receive(INVITE % {b"n": n}, CALLER)
        assert len(out) == 2, out  # 100 Trying, INVITE onward
        onward = out[1].data
        out = receive(target_answer(onward, b"180 Ringing", n), TARGET)
        assert len(out) == 1, out  # 180
        out = receive(target_answer(onward, b"200 OK", n, TARGET_SDP), TARGET)
        assert len(out) == 2, out  # ACK to the target, 200 to the caller
        to = header_lines(out[1].data)[b"To"]
        receive(IN_DIALOG % {b"method": b"ACK", b"n": n, b"cseq": 1, b"to": to}, CALLER)
        out = receive(IN_DIALOG % {b"method": b"BYE", b"n": n, b"cseq": 2, b"to": to}, CALLER)
        assert len(out) == 2, out  # 200 to the caller, BYE onward
        assert not receive(target_answer(out[1].data, b"200 OK", n), TARGET)
        # The server forgets an ended call once its CDR is written; the
        # Harness would keep them all, and the collector would walk them.
        self.ended += len(self.h.ended)
        self.h.ended.clear()
        self.now += 0.004
        if n % 50 == 0:
            self.timers()

    def timers(self) -> None:
        endpoint, b2bua, now = self.endpoint, self.b2bua, self.now
        while True:
            deadlines = [d for d in (endpoint.next_deadline(), b2bua.next_deadline())
                         if d is not None]
            if not deadlines or min(deadlines) > now:
                return
            outputs = endpoint.handle_timer(now) + b2bua.handle_timer(now)
            for output in outputs:
                if type(output) is not Transmit:
                    outputs += b2bua.handle(output, now)

    def messages(self) -> dict[str, bytes]:
        """Every message of one call, as received and as sent, by name."""
        self.n += 1
        n = self.n
        found: dict[str, bytes] = {"invite": INVITE % {b"n": n}}
        out = self.receive(found["invite"], CALLER)
        found["100"], found["onward_invite"] = out[0].data, out[1].data
        found["target_180"] = target_answer(out[1].data, b"180 Ringing", n)
        found["180"] = self.receive(found["target_180"], TARGET)[0].data
        found["target_200"] = target_answer(out[1].data, b"200 OK", n, TARGET_SDP)
        out = self.receive(found["target_200"], TARGET)
        found["onward_ack"], found["200"] = out[0].data, out[1].data
        to = header_lines(found["200"])[b"To"]
        found["ack"] = IN_DIALOG % {b"method": b"ACK", b"n": n, b"cseq": 1, b"to": to}
        self.receive(found["ack"], CALLER)
        found["bye"] = IN_DIALOG % {b"method": b"BYE", b"n": n, b"cseq": 2, b"to": to}
        out = self.receive(found["bye"], CALLER)
        found["bye_200"], found["onward_bye"] = out[0].data, out[1].data
        found["target_bye_200"] = target_answer(out[1].data, b"200 OK", n)
        self.receive(found["target_bye_200"], TARGET)
        return found


@pytest.fixture
def server_gc() -> Iterator[None]:
    """The collector as the server sets it (mediacore.app): frozen, rare gen-0 runs."""
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def test_call(benchmark: Any, tmp_path: Path, server_gc: None) -> None:
    """Microseconds per answered call (12 messages), the server's whole SIP side."""
    call = Call(tmp_path)
    for _ in range(200):  # warm the caches the way a running server has them
        call.run()
    benchmark.pedantic(call.run, iterations=50, rounds=40, warmup_rounds=2)
    assert call.ended == call.n and not call.b2bua.calls


def test_harness_only(benchmark: Any, tmp_path: Path) -> None:
    """What the harness adds to test_call per call: filling templates, cutting lines."""
    found = Call(tmp_path).messages()

    def harness() -> None:
        n = 7
        INVITE % {b"n": n}
        target_answer(found["onward_invite"], b"180 Ringing", n)
        target_answer(found["onward_invite"], b"200 OK", n, TARGET_SDP)
        to = header_lines(found["200"])[b"To"]
        IN_DIALOG % {b"method": b"ACK", b"n": n, b"cseq": 1, b"to": to}
        IN_DIALOG % {b"method": b"BYE", b"n": n, b"cseq": 2, b"to": to}
        target_answer(found["onward_bye"], b"200 OK", n)

    benchmark.pedantic(harness, iterations=200, rounds=50)


RECEIVED = ("invite", "target_180", "target_200", "ack", "bye", "target_bye_200")
SENT = ("100", "onward_invite", "180", "onward_ack", "200", "bye_200", "onward_bye")


@pytest.mark.parametrize("name", RECEIVED + SENT)
def test_parse(benchmark: Any, tmp_path: Path, name: str) -> None:
    """parse() alone of each message of the call, received and sent."""
    data = Call(tmp_path).messages()[name]
    message = benchmark.pedantic(sip.parse, args=(data,), iterations=200, rounds=50)
    assert sip.serialize(message) == data


@pytest.mark.parametrize("name", SENT)
def test_serialize(benchmark: Any, tmp_path: Path, name: str,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    """serialize() of each message we send: the objects the server built."""
    built: list[sip.Message] = []
    serialize = sip.serialize

    def keep(message: sip.Message) -> bytes:
        built.append(message)
        return serialize(message)

    monkeypatch.setattr(sip, "serialize", keep)
    data = Call(tmp_path).messages()[name]
    monkeypatch.undo()
    (message,) = [m for m in built if serialize(m) == data]
    assert benchmark.pedantic(serialize, args=(message,), iterations=200,
                              rounds=50) == data
