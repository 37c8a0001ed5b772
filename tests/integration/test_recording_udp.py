"""Recording real RTP that crossed real UDP sockets on 127.0.0.1, in real time.

Caller leg: the payloads of SIPp's ``g711a.pcap`` (PCMA, 30 ms packets, 7 s)
replayed at their captured packet times, headers and all. Callee leg, at the
same time: a synthetic PCMU stream (20 ms) with a click every second, loss,
reordering, jitter, duplicates, an SSRC change and 0.8 s of one-way audio.
A receiver thread timestamps each datagram as it arrives (CLOCK_MONOTONIC,
like the engine), builds tap blobs every 20 ms and feeds them to the
recorder as the call goes. Then:

* the file spans the wall-clock time of the recording, to the frame;
* the caller channel holds every captured packet's decoded samples exactly,
  at the position its RTP timestamp gives (no packet is lost on loopback);
* each leg's audio lands within one packet of the instant it was sent, so
  the two channels are in sync with each other and with the wall clock;
* the callee's lost packets and its silent stretch are silence.

Nothing here asserts a duration: the timing checks compare positions in the
file with the clock readings taken when packets were sent and received. If
the machine stalls the sender for more than the recorder's tolerance, the
recorder re-aligns (a "shift"); the exactness check allows for exactly the
shifts the recorder reports on that leg.
"""

from __future__ import annotations

import random
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mediacore import _codecs
from mediacore.rtp.recorder import TOLERANCE, CallRecorder, pack_tap

PCAP = Path("/usr/share/sip-tester/g711a.pcap")
PCMU, PCMA = 0, 8
CODECS = {PCMU: "ulaw", PCMA: "alaw"}
NS_PER_FRAME = 125_000

pytestmark = pytest.mark.integration


# -- a small pcap reader --------------------------------------------------------


def read_pcap_udp(path: Path) -> list[tuple[float, bytes]]:
    """(capture time in s, UDP payload) of every IPv4/UDP packet of a classic pcap.

    Handles both byte orders, micro- and nanosecond timestamps, and the link
    types SIPp's and tcpdump's captures use: Ethernet (with 802.1Q tags),
    Linux cooked (SLL, SLL2), raw IP and BSD loopback.
    """
    data = path.read_bytes()
    magic = data[:4]
    formats = {
        b"\xd4\xc3\xb2\xa1": ("<", 1e-6), b"\xa1\xb2\xc3\xd4": (">", 1e-6),
        b"\x4d\x3c\xb2\xa1": ("<", 1e-9), b"\xa1\xb2\x3c\x4d": (">", 1e-9),
    }  # fmt: skip
    if magic not in formats:
        raise ValueError(f"{path}: not a classic pcap file (pcapng is not supported)")
    order, unit = formats[magic]
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0x0FFFFFFF
    out = []
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack_from(order + "IIII", data, pos)
        frame = data[pos + 16 : pos + 16 + incl]
        pos += 16 + incl
        ip = _ip_of(frame, linktype)
        if ip is None or len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        udp_len = struct.unpack_from("!H", ip, ihl + 4)[0]
        out.append((sec + frac * unit, bytes(ip[ihl + 8 : ihl + udp_len])))
    return out


def _ip_of(frame: bytes, linktype: int) -> bytes | None:
    if linktype == 1:  # Ethernet
        off, ethertype = 14, struct.unpack_from("!H", frame, 12)[0]
        while ethertype in (0x8100, 0x88A8):  # VLAN tags
            ethertype = struct.unpack_from("!H", frame, off + 2)[0]
            off += 4
        return frame[off:] if ethertype == 0x0800 else None
    if linktype == 113:  # Linux cooked capture
        return frame[16:] if struct.unpack_from("!H", frame, 14)[0] == 0x0800 else None
    if linktype == 276:  # Linux cooked capture v2
        return frame[20:] if struct.unpack_from("!H", frame, 0)[0] == 0x0800 else None
    if linktype in (101, 228):  # raw IP, raw IPv4
        return frame
    if linktype == 0:  # BSD loopback: 4-byte address family in host order
        return frame[4:]
    return None


def parse_rtp(packet: bytes) -> tuple[int, int, int, int, int, bytes] | None:
    """(ssrc, ts, seq, pt, marker, payload) of an RTP packet, None if it is not one."""
    if len(packet) < 12 or packet[0] >> 6 != 2:
        return None
    cc, has_ext, padded = packet[0] & 0x0F, packet[0] & 0x10, packet[0] & 0x20
    seq, ts, ssrc = struct.unpack_from("!HII", packet, 2)
    start = 12 + 4 * cc
    if has_ext:
        start += 4 + 4 * struct.unpack_from("!H", packet, start + 2)[0]
    end = len(packet) - (packet[-1] if padded else 0)
    if start > end:
        return None
    return ssrc, ts, seq, packet[1] & 0x7F, packet[1] >> 7, packet[start:end]


# -- the streams ------------------------------------------------------------------


@dataclass
class Sent:
    """A packet the sender put on the wire (or meant to: ``lost`` ones it withheld)."""

    leg: int
    due: float  # seconds after the start
    packet: bytes
    lost: bool = False
    slot: float = 0.0  # when its audio starts, by the sender's clock (callee leg)
    sent_ns: list[int] = field(default_factory=list)  # a duplicate is sent twice


def caller_leg(start: float) -> list[Sent]:
    captured = read_pcap_udp(PCAP)
    t0 = captured[0][0]
    return [Sent(0, start + t - t0, pkt) for t, pkt in captured]


CALLEE_SSRC = (0x0BADCAFE, 0x5EED5EED)
CLICKS = range(25, 340, 50)
GAP = range(220, 260)  # 0.8 s with nothing sent: one-way audio / silence suppression


def callee_leg(start: float) -> list[Sent]:
    rng = random.Random(2024)
    tone = (1000 * np.sin(2 * np.pi * 400 * np.arange(160) / 8000)).astype("<i2")
    out = []
    seq, ts = 4000, 1_000_000
    for i in range(340):
        if i == 150:  # a new source: seq and timestamp start anew too
            seq, ts = 60_000, 4_000_000_000
        pcm = tone.copy()
        if i in CLICKS:
            pcm[0] = 30000
        header = struct.pack(
            "!BBHII",
            0x80,
            (0x80 if i in (0, 150, GAP.stop) else 0) | PCMU,
            seq,
            ts,
            CALLEE_SSRC[i >= 150],
        )
        due = start + i * 0.020 + rng.uniform(0, 0.006)  # jitter below the tolerance
        if i % 31 == 7:
            due += 0.030  # overtaken by the next packet
        if i not in GAP:
            out.append(
                Sent(
                    1,
                    due,
                    header + _codecs.ulaw_encode(pcm),
                    lost=i % 23 == 11,
                    slot=start + i * 0.020,
                )
            )
            if i % 37 == 5 and not out[-1].lost:
                out.append(Sent(1, due + 0.010, out[-1].packet))  # a duplicate
        seq = (seq + 1) & 0xFFFF
        ts = (ts + 160) & 0xFFFFFFFF
    return out


# -- sending and receiving ---------------------------------------------------------------


def udp_pair() -> tuple[socket.socket, socket.socket]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.connect(rx.getsockname())
    return tx, rx


def send_all(schedule: list[Sent], tx: list[socket.socket], t0: int) -> None:
    """Send each packet at its due time on an absolute schedule (no drift)."""
    for s in sorted(schedule, key=lambda s: s.due):
        wait = t0 / 1e9 + s.due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if not s.lost:
            s.sent_ns.append(time.monotonic_ns())
            tx[s.leg].send(s.packet)


def receive(
    rx: list[socket.socket], recorders: list[CallRecorder], done: threading.Event,
    arrivals: list[tuple[int, int, bytes]],
) -> None:  # fmt: skip
    """Timestamp datagrams as they arrive and feed blobs every 20 ms, as the engine does."""
    sel = selectors.DefaultSelector()
    for leg, sock in enumerate(rx):
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, leg)
    batch: list[tuple[int, int, int, int, int, int, int, bytes]] = []
    next_feed = time.monotonic_ns() + 20_000_000
    while True:
        for key, _ in sel.select(timeout=0.002):
            while True:
                try:
                    data = key.fileobj.recv(2048)  # type: ignore[union-attr]
                except BlockingIOError:
                    break
                now = time.monotonic_ns()
                arrivals.append((key.data, now, data))
                rtp = parse_rtp(data)
                if rtp is not None:
                    ssrc, ts, seq, pt, marker, payload = rtp
                    batch.append((now, ssrc, ts, seq, pt, marker, key.data, payload))
        now = time.monotonic_ns()
        if now >= next_feed or done.is_set():
            feed(recorders, batch, now)
            batch = []
            next_feed = now + 20_000_000
            if done.is_set():
                return


def feed(recorders: list[CallRecorder], batch: list, now: int) -> None:
    """The stereo recorder gets the blob; each leg's mono recorder gets its own leg."""
    recorders[0].feed(pack_tap(batch), now)
    for leg in (0, 1):
        mine = [(*r[:6], 0, r[7]) if r[6] == leg else (*r[:6], 1, r[7]) for r in batch]
        recorders[1 + leg].feed(pack_tap(mine), now)


# -- checking ---------------------------------------------------------------------------


def decode(pt: int, payload: bytes) -> np.ndarray:
    pcm = (_codecs.alaw_decode if pt == PCMA else _codecs.ulaw_decode)(payload)
    return np.frombuffer(pcm, dtype="<i2")


def best_base(channel: np.ndarray, packets: list[tuple[int, np.ndarray]], guesses: set[int]
              ) -> tuple[int, int]:  # fmt: skip
    """The offset (frame - unwrapped ts) at which most packets match exactly, and how many."""
    best = (0, -1)
    for base in sorted(guesses):
        hits = sum(
            1 for ts, pcm in packets
            if base + ts >= 0 and np.array_equal(channel[base + ts : base + ts + len(pcm)], pcm)
        )  # fmt: skip
        best = max(best, (base, hits), key=lambda b: b[1])
    return best


def unwrap(ts: list[int]) -> list[int]:
    out, acc = [], 0
    for i, t in enumerate(ts):
        acc = 0 if i == 0 else acc + ((t - ts[i - 1] + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        out.append(acc)
    return out


def test_recording_real_udp_traffic(tmp_path: Path) -> None:
    if not PCAP.exists():
        pytest.fail(f"{PCAP} is missing: apt-get install -y sip-tester")
    pairs = [udp_pair(), udp_pair()]
    tx = [p[0] for p in pairs]
    rx = [p[1] for p in pairs]
    started = time.monotonic_ns()
    schedule = caller_leg(0.100) + callee_leg(0.150)
    recorders = [
        CallRecorder(tmp_path / "call.wav", codec_by_pt=CODECS, started_ns=started),
        *(CallRecorder(tmp_path / f"leg{leg}.wav", codec_by_pt=CODECS, started_ns=started,
                       channels=1) for leg in (0, 1)),
    ]  # fmt: skip
    done = threading.Event()
    arrivals: list[tuple[int, int, bytes]] = []
    receiver = threading.Thread(target=receive, args=(rx, recorders, done, arrivals))
    receiver.start()
    try:
        send_all(schedule, tx, started)
        time.sleep(0.25)  # the last packets' trip, then hang up
    finally:
        ended = time.monotonic_ns()
        done.set()
        receiver.join()
        for s in tx + rx:
            s.close()
    infos = [r.close(ended) for r in recorders]
    call, rate = sf.read(infos[0].path, dtype="int16", always_2d=True)
    legs = [sf.read(i.path, dtype="int16", always_2d=True)[0][:, 0] for i in infos[1:]]
    frame = lambda ns: (ns - started) // NS_PER_FRAME  # noqa: E731

    # The file is the wall-clock time of the recording (well within 40 ms: to the frame).
    assert rate == 8000 and call.shape[1] == 2
    assert len(call) == frame(ended) == infos[0].frames
    assert abs(len(call) / 8000 - (ended - started) / 1e9) <= 0.040
    # The legs are recorded independently: each channel is its leg's mono recording.
    for leg in (0, 1):
        assert np.array_equal(call[:, leg], legs[leg])

    sent = {leg: [s for s in schedule if s.leg == leg and s.sent_ns] for leg in (0, 1)}
    assert len(arrivals) == sum(len(s.sent_ns) for s in schedule), "loopback lost a datagram"

    # Caller: every captured packet, sample for sample, where its timestamp puts it.
    caller = [parse_rtp(s.packet) for s in sent[0]]
    assert all(c is not None and c[3] == PCMA for c in caller)
    ts = unwrap([c[1] for c in caller])  # type: ignore[index]
    packets = [(t, decode(PCMA, c[5])) for t, c in zip(ts, caller, strict=True)]  # type: ignore[index]
    # The recorder's offset is always some packet's arrival frame minus its timestamp.
    arrived = {p: n for leg, n, p in arrivals if leg == 0}
    guesses = {frame(arrived[s.packet]) - t for s, t in zip(sent[0], ts, strict=True)}
    base, hits = best_base(call[:, 0], packets, guesses)
    shifts = infos[1].stats.shifts
    assert hits >= len(packets) - 2 * shifts, (hits, len(packets), infos[1].stats)
    assert infos[1].stats.late == 0 and infos[1].stats.anchors == 1
    # ... and within one packet (30 ms) of when it was sent
    for s, t in zip(sent[0], ts, strict=True):
        assert abs(base + t - frame(s.sent_ns[0])) <= 240 + TOLERANCE * shifts

    # Callee: clicks within one packet (20 ms) of when they were sent, on both SSRCs.
    callee = call[:, 1]
    for s in sent[1]:
        r = parse_rtp(s.packet)
        assert r is not None
        if decode(PCMU, r[5])[0] > 20000:  # a click packet
            at = frame(s.sent_ns[0])
            hits = np.flatnonzero(callee[max(0, at - 400) : at + 400] > 20000)
            assert len(hits) == 1, (at, hits)
            assert abs(max(0, at - 400) + int(hits[0]) - at) <= 160
    # The one-way stretch and the withheld packets are silence.
    resumed = frame(min(s.sent_ns[0] for s in sent[1] if s.due > 0.150 + GAP.start * 0.02))
    quiet = callee[resumed - 6000 : resumed - 2000]  # inside the 0.8 s (6,400 frames) gap
    assert len(quiet) == 4000 and not quiet.any()
    lost = [s for s in schedule if s.leg == 1 and s.lost]
    assert lost
    for s in lost:
        # the middle of its slot (placement is within the 6 ms of jitter of the slot)
        at = frame(started + int((s.slot + 0.010) * 1e9))
        assert not callee[at - 24 : at + 24].any(), s.slot
    st = infos[2].stats
    dups = len(sent[1]) - len({s.packet for s in sent[1]})
    assert dups > 0 and st.duplicates == dups, st
    assert st.anchors == 2 and st.late == 0, st  # the SSRC change re-anchors, nothing else
