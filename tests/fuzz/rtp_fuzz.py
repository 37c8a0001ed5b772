"""A fuzz campaign over RTP/RTCP parsing through the live relay engine.

Two sessions on one running :class:`~mediacore.rtp.engine.MediaEngine`, fed
real UDP datagrams on loopback:

* a strict session with RTCP on its own ports, recorded through the tap
  into a real :class:`~mediacore.rtp.recorder.CallRecorder` (a WAV file);
* a nat session with rtcp-mux (RTCP on the RTP port), whose tap is
  drained and compared record by record.

Each case is one datagram: valid audio, or malformed headers (version not 2,
CSRC counts past the end, extension lengths past the end, padding counts 0
or larger than the payload), zero-length, 1-byte and short datagrams,
datagrams just over and far over the relay's buffer, RTCP compound junk and
RTP/RTCP ambiguities on the muxed port, short and duplicated RFC 4733
payloads, bit flips and cut-offs of valid packets, random bytes; sent from
the signalled source, from another port of the same host, or from another
host (127.0.0.66), to a leg's RTP or RTCP port. Now and then an announcement
packet is injected (``Session.send``).

A model in Python predicts, from ``mediacore.rtp.packet`` (the executable
statement of what the engine accepts) and the latching rule, what the engine
must do with every datagram. After every batch the campaign requires:

* the engine thread alive, no loop errors, no events dropped;
* every datagram counted exactly once, in the class the model predicts
  (``packets``, ``rtcp_packets``, ``garbage``, ``strict_dropped``,
  ``foreign``), every accepted one forwarded, the DTMF events and the
  recorded packets as predicted;
* each peer received exactly the datagrams the model sends it (byte for
  byte; nothing from or to a foreign source), the tap's records exactly the
  accepted RTP packets' fields;

and at the end that valid packets still flow both ways in both sessions and
that the recording closes into a well-formed stereo WAV as long as the run.

The run is deterministic in what it sends for a seed. Run it (results in
benchmarks/RESULTS.md, "RTP/RTCP fuzzing"):

    .venv/bin/python -m tests.fuzz.rtp_fuzz --cases 200000 --seed 1

A short run of the same code is part of the integration tests
(``tests/integration/test_rtp_fuzz.py``).
"""

from __future__ import annotations

import argparse
import random
import socket
import struct
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import soundfile

from mediacore.rtp import _engine
from mediacore.rtp.engine import DtmfEvent, Latching, Leg, MediaEngine, Session
from mediacore.rtp.packet import (
    PacketError,
    build_rtp,
    is_rtcp,
    iter_records,
    parse_rtcp_header,
    parse_rtp,
)
from mediacore.rtp.ports import PortPool
from mediacore.rtp.recorder import CallRecorder

HOST = "127.0.0.1"
ATTACKER = "127.0.0.66"
PT_TE = 101
BATCH = 32
DEADLINE = 5.0
MAX_DATAGRAM = _engine.MAX_DATAGRAM


def classify(data: bytes, rtcp_socket: bool) -> str:
    """What the engine must make of ``data``: "rtp", "rtcp" or "garbage".

    From mediacore.rtp.packet, not from the engine's code: on the RTCP port
    only RTCP; on the RTP port RTCP by its packet type (RFC 5761), else RTP;
    anything longer than the relay's buffer is truncated, hence garbage.
    """
    if len(data) > MAX_DATAGRAM:
        return "garbage"
    try:
        if rtcp_socket or is_rtcp(data):
            parse_rtcp_header(data)
            return "rtcp"
        parse_rtp(data)
        return "rtp"
    except PacketError:
        return "garbage"


# --- the datagrams ---------------------------------------------------------------------


class Generator:
    """The cases, from one seeded RNG; a steady audio stream per sender between them."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.seq: dict[object, int] = {}

    def audio(self, key: object, ssrc: int, pt: int = 8) -> bytes:
        seq = self.seq.get(key, self.rng.randrange(1 << 16))
        self.seq[key] = seq + 1
        return build_rtp(pt, seq, seq * 160, ssrc, bytes([0xD5 ^ (seq & 0x0F)]) * 160)

    def random_rtp(self) -> bytes:
        rng = self.rng
        pt = rng.choice([0, 8, 8, PT_TE, 13, rng.randrange(128)])
        csrcs = tuple(rng.randrange(1 << 32) for _ in range(rng.choice([0, 0, 1, 15])))
        extension = None
        if rng.random() < 0.3:
            extension = (rng.randrange(1 << 16), bytes(rng.randrange(256) for _ in
                                                        range(4 * rng.randrange(4))))
        padding = rng.choice([0, 0, 0, 1, 4, 255])
        payload = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 3, 4, 160, 400])))
        return build_rtp(pt, rng.randrange(1 << 16), rng.randrange(1 << 32),
                         rng.randrange(1 << 32), payload, marker=rng.random() < 0.2,
                         csrcs=csrcs, extension=extension, padding=padding)

    def case(self, key: object, ssrc: int, allow_huge: bool) -> tuple[str, bytes]:
        """(kind, datagram) of one case."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.35:
            return "audio", self.audio(key, ssrc)
        good = bytearray(self.random_rtp())
        kinds: list[tuple[str, Callable[[], bytes]]] = [
            ("valid", lambda: bytes(good)),
            ("version", lambda: bytes([(good[0] & 0x3F) | (rng.choice([0, 1, 3]) << 6)])
             + bytes(good[1:])),
            ("csrc-count", lambda: bytes([(good[0] & 0xF0) | rng.randrange(1, 16)])
             + bytes(good[1:rng.randrange(2, 40)])),
            ("extension", lambda: bytes([0x90]) + bytes(good[1:12]) + struct.pack(
                "!HH", 0xBEDE, rng.choice([1, 2, 64, 0xFFFF])) + bytes(rng.randrange(8))),
            ("padding", self._padding),
            ("tiny", lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(12)))),
            ("rtcp", self._rtcp),
            ("mux-ambiguous", self._ambiguous),
            ("dtmf", self._dtmf),
            ("flip", lambda: self._flip(good)),
            ("cut", lambda: bytes(good[:rng.randrange(len(good) + 1)])),
            ("random", lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(300)))),
            ("edge", lambda: self._sized(rng.choice([MAX_DATAGRAM, MAX_DATAGRAM + 1]))),
        ]
        if allow_huge and rng.random() < 0.05:
            return "huge", self._sized(rng.choice([4096, 9000, 65507]))
        kind, make = rng.choice(kinds)
        return kind, make()

    def _sized(self, size: int) -> bytes:
        head = build_rtp(8, self.rng.randrange(1 << 16), 0, 0xB16, b"")
        return head + bytes([0xD5]) * (size - len(head))

    def _padding(self) -> bytes:
        rng = self.rng
        payload = bytes(rng.randrange(1, 40))
        pad = rng.choice([0, 1, len(payload), len(payload) + 1, len(payload) + 12, 255])
        head = build_rtp(8, rng.randrange(1 << 16), 0, 0xFAD, b"")
        return bytes([head[0] | 0x20]) + head[1:] + payload + bytes([pad & 0xFF])

    def _rtcp(self) -> bytes:
        rng = self.rng
        pt = rng.choice([200, 201, 202, 203, 204, 192, 223, 191, 224])
        length = rng.choice([0, 1, 6, 0xFFFF])
        b0 = rng.choice([0x80, 0x81, 0x9F, 0x40, 0xC0])
        first = struct.pack("!BBHI", b0, pt, length, rng.randrange(1 << 32))
        junk = bytes(rng.randrange(256) for _ in range(rng.choice([0, 3, 20, 200])))
        second = struct.pack("!BBH", 0x80, rng.randrange(256), 0xFFFF) if rng.random() < 0.5 \
            else b""
        return (first + junk + second)[:rng.choice([2, 7, 8, 1000])]

    def _ambiguous(self) -> bytes:
        """RTP payload types 64-95 with the marker bit: RTCP's types on a shared port."""
        rng = self.rng
        data = bytearray(build_rtp(rng.randrange(64, 96), rng.randrange(1 << 16), 0, 7,
                                   bytes(rng.randrange(0, 30)), marker=True))
        return bytes(data[:rng.choice([8, 9, 12, len(data)])])

    def _dtmf(self) -> bytes:
        rng = self.rng
        event = rng.choice([1, 11, 16, 200])
        flags = rng.choice([0x00, 0x80, 0x8A])
        payload = bytes([event, flags, 0, 160])[:rng.choice([0, 1, 2, 3, 4, 4, 4])]
        padding = rng.choice([0, 0, 2, 4])
        ts = rng.choice([8000, 8000, rng.randrange(1 << 32)])  # repeated ends are duplicates
        return build_rtp(PT_TE, rng.randrange(1 << 16), ts, rng.choice([5, 6]), payload,
                         padding=padding, marker=rng.random() < 0.3)

    def _flip(self, good: bytearray) -> bytes:
        data = bytearray(good)
        for _ in range(self.rng.randint(1, 3)):
            i = self.rng.randrange(len(data))
            data[i] ^= 1 << self.rng.randrange(8)
        return bytes(data)


# --- the model ---------------------------------------------------------------------------


@dataclass
class LegModel:
    """What one leg of one session must have done, predicted."""

    rtp_sig: tuple[str, int]
    rtcp_sig: tuple[str, int]
    nat: bool
    latch: dict[bool, tuple[str, int] | None] = field(
        default_factory=lambda: {False: None, True: None})
    counts: Counter[str] = field(default_factory=Counter)
    dtmf_last: tuple[int, int] | None = None
    dtmf: int = 0
    #: The accepted RTP packets' tap fields not yet compared (nat session only).
    recorded: list[tuple[int, int, int, int, bool, bytes]] = field(default_factory=list)
    recorded_count: int = 0
    injected: int = 0

    def accepts(self, src: tuple[str, int], rtcp_socket: bool) -> bool:
        sig = self.rtcp_sig if rtcp_socket else self.rtp_sig
        if not self.nat:
            return src == sig
        latched = self.latch[rtcp_socket]
        if latched is None:
            if src[0] in (self.rtp_sig[0], self.rtcp_sig[0]):
                self.latch[rtcp_socket] = src
                return True
            return False
        return src == latched

    def destination(self, rtcp_socket: bool) -> tuple[str, int]:
        if self.nat and self.latch[rtcp_socket] is not None:
            return self.latch[rtcp_socket]  # type: ignore[return-value]
        return self.rtcp_sig if rtcp_socket else self.rtp_sig


@dataclass
class SessionModel:
    name: str
    session: Session
    legs: tuple[LegModel, LegModel]
    #: Every peer socket's expected datagrams not yet seen (by its address), shared.
    expected: dict[tuple[str, int], Counter[bytes]]
    #: Keep each accepted packet's fields to compare with the drained tap.
    compare_tap: bool = False

    def feed(self, leg: int, src: tuple[str, int], rtcp_socket: bool, data: bytes) -> None:
        model = self.legs[leg]
        kind = classify(data, rtcp_socket)
        if kind == "garbage":
            model.counts["garbage"] += 1
            return
        if not model.accepts(src, rtcp_socket):
            model.counts["foreign" if model.nat else "strict_dropped"] += 1
            return
        model.counts["packets" if kind == "rtp" else "rtcp_packets"] += 1
        destination = self.legs[1 - leg].destination(rtcp_socket)
        self.expected.setdefault(destination, Counter())[data] += 1
        if kind != "rtp":
            return
        packet = parse_rtp(data)
        if packet.payload_type == PT_TE and len(packet.payload) >= 4 and packet.payload[1] & 0x80:
            key = (packet.timestamp, packet.ssrc)
            if model.dtmf_last != key:
                model.dtmf_last = key
                model.dtmf += 1
        model.recorded_count += 1
        if self.compare_tap:
            model.recorded.append((packet.ssrc, packet.timestamp, packet.sequence,
                                   packet.payload_type, packet.marker, packet.payload))

    def inject(self, leg: int, data: bytes) -> None:
        self.legs[leg].injected += 1
        destination = self.legs[leg].destination(False)
        self.expected.setdefault(destination, Counter())[data] += 1


# --- the run -----------------------------------------------------------------------------


@dataclass
class Stats:
    cases: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    dtmf_events: int = 0
    recorded: int = 0
    wav_seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        return (f"{self.cases} datagrams ({len(self.kinds)} kinds): {outcomes}; "
                f"{self.dtmf_events} DTMF events, {self.recorded} packets recorded, "
                f"WAV {self.wav_seconds:.1f} s; {len(self.failures)} failures")


class Campaign:
    """The engine, its two sessions, the peers, the recorder, and the model of them all."""

    def __init__(self, workdir: Path, seed: int) -> None:
        self.rng = random.Random(seed)
        self.gen = Generator(self.rng)
        self._sockets: list[socket.socket] = []
        base = random.Random().randrange(41000, 59000, 1000)
        self.engine = MediaEngine(HOST, PortPool((base, base + 999)))
        self.engine.start()
        self.started_ns = time.monotonic_ns()
        # Strict, RTCP on its own ports, recorded into a WAV.
        self.peer: dict[str, socket.socket] = {
            name: self._socket(HOST) for name in
            ("a", "a_rtcp", "b", "b_rtcp", "a2", "b2", "neighbour")}
        self.peer["attacker"] = self._socket(ATTACKER)
        s1 = self.engine.open_session()
        self.expected: dict[tuple[str, int], Counter[bytes]] = {}
        self.strict = SessionModel("strict", s1, (
            LegModel(self.addr("a"), self.addr("a_rtcp"), nat=False),
            LegModel(self.addr("b"), self.addr("b_rtcp"), nat=False)), self.expected)
        for leg, (rtp, rtcp) in enumerate((("a", "a_rtcp"), ("b", "b_rtcp"))):
            s1.set_remote(Leg(leg), HOST, self.addr(rtp)[1], self.addr(rtcp)[1])
            s1.set_telephone_event(Leg(leg), PT_TE)
        self.wav = workdir / "fuzz.wav"
        self.recorder = CallRecorder(self.wav, codec_by_pt={8: "alaw", 0: "ulaw"},
                                     started_ns=self.started_ns)
        s1.set_recording(True)
        # Nat, rtcp-mux (RTCP signalled on the RTP port), tap drained and compared.
        s2 = self.engine.open_session()
        self.nat = SessionModel("nat", s2, (
            LegModel(self.addr("a2"), self.addr("a2"), nat=True),
            LegModel(self.addr("b2"), self.addr("b2"), nat=True)), self.expected,
            compare_tap=True)
        for leg, name in enumerate(("a2", "b2")):
            s2.set_latching(Leg(leg), Latching.NAT)
            s2.set_remote(Leg(leg), HOST, self.addr(name)[1], self.addr(name)[1])
            s2.set_telephone_event(Leg(leg), PT_TE)
        s2.set_recording(True)
        self.models = (self.strict, self.nat)
        self.dtmf_seen: Counter[tuple[str, int]] = Counter()
        self.received: dict[tuple[str, int], Counter[bytes]] = {}
        self.tap: dict[int, list[tuple[int, int, int, int, bool, bytes]]] = {0: [], 1: []}

    def _socket(self, host: str) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((host, 0))
        sock.setblocking(False)
        self._sockets.append(sock)
        return sock

    def addr(self, name: str) -> tuple[str, int]:
        return self.peer[name].getsockname()

    def legit(self, model: SessionModel, leg: int, rtcp_socket: bool) -> str:
        if model is self.strict:
            return ("a", "b")[leg] + ("_rtcp" if rtcp_socket else "")
        return ("a2", "b2")[leg]

    def send(self, model: SessionModel, leg: int, sender: str, rtcp_socket: bool,
             data: bytes) -> None:
        ports = model.session.ports(Leg(leg))
        self.peer[sender].sendto(data, (HOST, ports.rtcp if rtcp_socket else ports.rtp))
        model.feed(leg, self.addr(sender), rtcp_socket, data)

    def warm_up(self) -> None:
        """Latch the nat session's four sockets onto their legitimate peers."""
        for leg, name in enumerate(("a2", "b2")):
            self.send(self.nat, leg, name, False, self.gen.audio(name, 0xA2 + leg))
            self.send(self.nat, leg, name, True, b"\x80\xc9\x00\x01" + bytes(4))
        self.settle()

    def batch(self, stats: Stats, size: int) -> None:
        huge = True
        for _ in range(size):
            rng = self.rng
            model = rng.choice(self.models)
            leg = rng.randrange(2)
            rtcp_socket = rng.random() < 0.2
            roll = rng.random()
            sender = self.legit(model, leg, rtcp_socket) if roll < 0.85 else (
                "neighbour" if roll < 0.9 else "attacker")
            kind, data = self.gen.case((model.name, leg, rtcp_socket, sender),
                                       0x5000 + leg, allow_huge=huge)
            huge = huge and kind != "huge"  # one huge datagram per batch at most
            self.send(model, leg, sender, rtcp_socket, data)
            stats.cases += 1
            stats.kinds[kind] += 1
            if rng.random() < 0.01:  # an announcement packet now and then
                packet = self.gen.audio(("inject", model.name, leg), 0x1A)
                if model.session.send(Leg(leg), packet):
                    model.inject(leg, packet)
        self.settle()

    def settle(self) -> None:
        """Wait until every datagram is counted and delivered; collect events and taps."""
        deadline = time.monotonic() + DEADLINE
        while not self._accounted():
            if time.monotonic() > deadline:
                raise AssertionError("the engine did not count every datagram: "
                                     + self._counts_text())
            time.sleep(0.0005)
        deadline = time.monotonic() + DEADLINE
        while True:
            self._receive()
            if all(sum(self.received.get(a, Counter()).values()) >= sum(c.values())
                   for a, c in self.expected.items()):
                break
            if time.monotonic() > deadline:
                break  # the comparison in check() says what is missing
            time.sleep(0.0005)
        for event in self.engine.poll_events():
            if isinstance(event, DtmfEvent):
                model = self.strict if event.session is self.strict.session else self.nat
                self.dtmf_seen[(model.name, int(event.leg))] += 1
        blob = self.strict.session.drain_recording()
        self.recorder.feed(blob, time.monotonic_ns())
        for record in iter_records(self.nat.session.drain_recording()):
            self.tap[record.direction].append((record.ssrc, record.timestamp, record.sequence,
                                               record.payload_type, record.marker,
                                               record.payload))

    def _accounted(self) -> bool:
        for model in self.models:
            st = model.session.stats()
            for leg, stream in ((0, st.a_to_b), (1, st.b_to_a)):
                seen = (stream.packets + stream.rtcp_packets + stream.garbage
                        + stream.strict_dropped + stream.foreign)
                if seen != sum(model.legs[leg].counts.values()):
                    return False
        return True

    def _counts_text(self) -> str:
        parts = []
        for model in self.models:
            st = model.session.stats()
            for leg, stream in ((0, st.a_to_b), (1, st.b_to_a)):
                parts.append(f"{model.name}[{leg}] engine {stream} model "
                             f"{dict(model.legs[leg].counts)}")
        return "\n".join(parts)

    def _receive(self) -> None:
        for name, sock in self.peer.items():
            while True:
                try:
                    data, _ = sock.recvfrom(1 << 17)
                except BlockingIOError:
                    break
                self.received.setdefault(self.addr(name), Counter())[data] += 1

    def check(self) -> list[str]:
        """Every invariant of the module doc; the problems found, if any."""
        problems = []
        if not self.engine.running:
            problems.append("the engine thread died")
        counters = self.engine.counters()
        if counters["loop_errors"] or counters["events_dropped"]:
            problems.append(f"engine counters: {counters}")
        for model in self.models:
            st = model.session.stats()
            for leg, stream in ((0, st.a_to_b), (1, st.b_to_a)):
                lm = model.legs[leg]
                got = {key: getattr(stream, key) for key in
                       ("packets", "rtcp_packets", "garbage", "strict_dropped", "foreign")}
                want = {key: lm.counts[key] for key in got}
                if got != want:
                    problems.append(f"{model.name}[{leg}]: counted {got}, expected {want}")
                accepted = stream.packets + stream.rtcp_packets
                if (stream.forwarded, stream.no_destination, stream.send_errors) != (
                        accepted, 0, 0):
                    problems.append(f"{model.name}[{leg}]: {accepted} accepted but forwarded "
                                    f"{stream.forwarded}, no_destination "
                                    f"{stream.no_destination}, send_errors {stream.send_errors}")
                if stream.dtmf_events != lm.dtmf or self.dtmf_seen[(model.name, leg)] != lm.dtmf:
                    problems.append(f"{model.name}[{leg}]: DTMF {stream.dtmf_events} counted, "
                                    f"{self.dtmf_seen[(model.name, leg)]} reported, "
                                    f"{lm.dtmf} expected")
                if stream.injected != lm.injected or stream.relatches != 0:
                    problems.append(f"{model.name}[{leg}]: injected {stream.injected} "
                                    f"(expected {lm.injected}), relatches {stream.relatches}")
            recorded = model.legs[0].recorded_count + model.legs[1].recorded_count
            if (st.recorded_packets, st.recording_dropped) != (recorded, 0):
                problems.append(f"{model.name}: recorded {st.recorded_packets} dropped "
                                f"{st.recording_dropped}, expected {recorded}")
        for direction in (0, 1):
            if self.tap[direction] != self.nat.legs[direction].recorded:
                problems.append(f"nat tap direction {direction}: {len(self.tap[direction])} "
                                f"records differ from the {len(self.nat.legs[direction].recorded)}"
                                " accepted RTP packets")
            else:
                self.tap[direction].clear()
                self.nat.legs[direction].recorded.clear()
        for address in {*self.expected, *self.received}:
            want = self.expected.get(address, Counter())
            got = self.received.get(address, Counter())
            if want != got:
                problems.append(f"{address} received {sum(got.values())} datagrams "
                                f"({sum((got - want).values())} unexpected), expected "
                                f"{sum(want.values())} ({sum((want - got).values())} missing)")
            else:  # all delivered as expected: forget them, so checks stay cheap
                want.clear()
                got.clear()
        return problems

    def finish(self, stats: Stats) -> list[str]:
        """Valid packets still flow; the recording closes into a well-formed WAV."""
        for model in self.models:
            for leg in (0, 1):
                for _ in range(10):
                    name = self.legit(model, leg, False)
                    self.send(model, leg, name, False,
                              self.gen.audio(("final", model.name, leg), 0xF1A1))
        self.settle()
        problems = self.check()
        ended = time.monotonic_ns()
        self.strict.session.set_recording(False)
        self.recorder.feed(self.strict.session.drain_recording(), ended)
        info = self.recorder.close(ended)
        wall = (ended - self.started_ns) / 1e9
        try:
            audio, rate = soundfile.read(self.wav, dtype="int16")
        except Exception as error:  # any reader error is the finding
            return [*problems, f"the WAV does not open: {error!r}"]
        stats.wav_seconds = len(audio) / rate
        if rate != 8000 or audio.ndim != 2 or audio.shape[1] != 2:
            problems.append(f"the WAV is {rate} Hz, shape {audio.shape}")
        if abs(stats.wav_seconds - wall) > 0.25 or info.error:
            problems.append(f"the WAV holds {stats.wav_seconds:.2f} s of a {wall:.2f} s run "
                            f"({info.error or 'no error'})")
        for model in self.models:
            for leg in (0, 1):
                for key, value in model.legs[leg].counts.items():
                    stats.outcomes[key] += value
                stats.dtmf_events += model.legs[leg].dtmf
                stats.recorded += model.legs[leg].recorded_count
        return problems

    def close(self) -> None:
        self.engine.close()
        for sock in self._sockets:
            sock.close()


def run(cases: int, seed: int, workdir: Path | None = None,
        on_failure: Callable[[str], None] | None = None) -> Stats:
    """``cases`` datagrams in batches; stops at the first batch that breaks an invariant."""
    stats = Stats()
    with tempfile.TemporaryDirectory() as scratch:
        campaign = Campaign(workdir or Path(scratch), seed)
        try:
            campaign.warm_up()
            while stats.cases < cases:
                campaign.batch(stats, min(BATCH, cases - stats.cases))
                problems = campaign.check()
                if problems:
                    stats.failures += [f"after {stats.cases} datagrams: {p}" for p in problems]
                    break
            if not stats.failures:
                stats.failures += campaign.finish(stats)
        except Exception:
            stats.failures.append(f"after {stats.cases} datagrams:\n{traceback.format_exc()}")
        finally:
            campaign.close()
    if on_failure is not None:
        for failure in stats.failures:
            on_failure(failure)
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    started = time.monotonic()
    stats = run(args.cases, args.seed)
    for failure in stats.failures[:20]:
        print(failure, file=sys.stderr)
    print(f"{stats.summary()} in {time.monotonic() - started:.1f}s (seed {args.seed})")
    print("kinds: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.kinds.items())))
    return 1 if stats.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
