"""Load generator for the RTP relay: N synthetic G.711 calls through a relay process.

    .venv/bin/python benchmarks/rtp_load.py --calls 100,500,1000 --duration 20

What runs where:

- The relay under test runs in a child process pinned to one CPU
  (``--relay-cpu``, default 0): ``engine`` is mediacore's MediaEngine on
  uvloop with recording on for every call, draining every session's tap
  every 50 ms into a trivial consumer that copies each blob; ``uvloop`` is
  the alternative we measured it against, a pure-Python relay with one
  datagram_received callback per packet (same latching, a recording
  bytearray); ``null`` binds the ports and never reads them (the generator's
  cost against a sink that does nothing); ``direct`` starts no child and
  sends leg A's packets straight to leg B's socket and back (the generator's
  own capacity and latency floor).
- This process is the generator, pinned to another CPU (``--gen-cpu``). It
  plays both ends of every call from two UDP sockets (one for all callers,
  one for all callees), so it can batch: every millisecond it sends the
  packets of the 1/20th of calls whose 20 ms slot it is (calls are spread
  evenly over the packet time, as real calls are) with one sendmmsg per side,
  and reads everything that arrived with recvmmsg, 1,024 at a time. The
  syscalls go through ctypes on numpy arrays laid out as struct mmsghdr, so
  Python runs per batch, not per packet.
- Every packet is 12 bytes of RTP header and 160 bytes of payload; the
  payload starts with the CLOCK_REALTIME send time (taken just before the
  batch's sendmmsg), the call index and the side. Receive times are the
  kernel's SO_TIMESTAMPNS (when the datagram reached our socket), so the
  generator's own scheduling does not count as relay latency. "Added
  latency" is reported raw; run ``--relay direct`` for the floor the
  generator itself contributes.

Reported per run: packets sent and received in the measurement window (the
warm-up is excluded), loss, latency percentiles, the relay process's CPU
seconds per call-second (utime+stime from /proc, so softirq work the kernel
accounts elsewhere is not in it) and its engine thread's share, the busy
share of the relay's CPU from /proc/stat (all processes on that CPU), the
generator's own CPU, and the relay's RSS per call.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

PTIME_NS = 20_000_000
PAYLOAD = 160
PACKET = 12 + PAYLOAD
GROUPS = 20  # send slots per packet time: one every millisecond
BATCH = 1024  # UIO_MAXIOV: the most one sendmmsg/recvmmsg takes
RXBUF = 256
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
HERE = Path(__file__).resolve()

# struct mmsghdr on x86_64 Linux: msghdr (56 bytes) + msg_len, padded to 64.
MMSG = np.dtype([
    ("name", "<u8"), ("namelen", "<u4"), ("_p0", "<u4"), ("iov", "<u8"), ("iovlen", "<u8"),
    ("control", "<u8"), ("controllen", "<u8"), ("flags", "<i4"), ("_p1", "<u4"),
    ("len", "<u4"), ("_p2", "<u4"),
])
IOVEC = np.dtype([("base", "<u8"), ("len", "<u8")])
SOCKADDR_IN = np.dtype([("family", "<u2"), ("port", ">u2"), ("addr", ">u4"), ("zero", "V8")])
# Our packet: RTP header, then the payload's first 16 bytes carry the probe.
PKT = np.dtype([
    ("b0", "u1"), ("b1", "u1"), ("seq", ">u2"), ("ts", ">u4"), ("ssrc", ">u4"),
    ("sent", "<i8"), ("call", "<u4"), ("side", "<u4"), ("fill", "V144"),
])
assert MMSG.itemsize == 64 and PKT.itemsize == PACKET

libc = ctypes.CDLL(None, use_errno=True)
libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
libc.recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                          ctypes.c_void_p]
MSG_DONTWAIT = 0x40


def rss_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_ticks(path: str) -> int:
    """utime + stime (clock ticks) from a /proc stat file."""
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def cpu_busy(cpu: int | None) -> tuple[int, int]:
    """(busy, total) jiffies of one CPU (None: all of them) from /proc/stat."""
    name = "cpu " if cpu is None else f"cpu{cpu} "
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(name):
            v = [int(x) for x in line.split()[1:]]
            idle = v[3] + v[4]
            return sum(v[:8]) - idle, sum(v[:8])
    raise RuntimeError(f"no {name}in /proc/stat")


# --------------------------------------------------------------------------
# The relay side (child process)
# --------------------------------------------------------------------------


def serve(args: argparse.Namespace) -> None:
    """Open N sessions toward the generator's two sockets and relay until stdin says stop."""
    if args.relay_cpu >= 0:
        os.sched_setaffinity(0, {args.relay_cpu})
    ha, pa = args.remote_a.rsplit(":", 1)
    hb, pb = args.remote_b.rsplit(":", 1)
    rss0 = rss_kb()
    if args.serve == "engine":
        run_engine(args, ha, int(pa), hb, int(pb), rss0)
    else:
        run_python_relay(args, ha, int(pa), hb, int(pb), rss0)


def _report(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def run_engine(args: argparse.Namespace, ha: str, pa: int, hb: str, pb: int, rss0: int) -> None:
    import uvloop

    from mediacore.rtp.engine import Leg, MediaEngine
    from mediacore.rtp.ports import PortPool

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    ports = PortPool((args.port_base, args.port_base + 4 * args.calls + 3))
    engine = MediaEngine("127.0.0.1", ports)
    events = 0

    def on_events(evs: list) -> None:
        nonlocal events
        events += len(evs)

    engine.start(loop, on_events)
    sessions = []
    for _ in range(args.calls):
        s = engine.open_session()
        s.set_remote(Leg.A, ha, pa)
        s.set_remote(Leg.B, hb, pb)
        s.set_telephone_event(Leg.A, 101)
        s.set_telephone_event(Leg.B, 101)
        if args.record:
            s.set_recording(True)
        sessions.append(s)
    rss1 = rss_kb()
    sink = bytearray(1 << 20)
    consumed = {"bytes": 0, "blobs": 0}

    async def drain() -> None:
        # The recorder's cadence: every 50 ms, every session's blob, copied.
        while True:
            await asyncio.sleep(0.05)
            for s in sessions:
                blob = s.drain_recording()
                if blob:
                    n = len(blob)
                    sink[:n] = blob
                    consumed["bytes"] += n
                    consumed["blobs"] += 1

    async def main() -> None:
        task = loop.create_task(drain())
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        _report({"pid": os.getpid(), "engine_tid": engine._thread.native_id,
                 "ports": [[s.leg_a.rtp, s.leg_b.rtp] for s in sessions],
                 "rss_kb_empty": rss0, "rss_kb_open": rss1})
        await reader.readline()
        task.cancel()
        totals: dict[str, int] = {}
        for s in sessions:
            st = s.stats()
            for d in (st.a_to_b, st.b_to_a):
                for k in ("packets", "forwarded", "lost", "garbage", "send_errors",
                          "no_destination"):
                    totals[k] = totals.get(k, 0) + getattr(d, k)
            totals["rec_dropped"] = totals.get("rec_dropped", 0) + st.recording_dropped
            totals["recorded"] = totals.get("recorded", 0) + st.recorded_packets
        _report({"rss_kb_end": rss_kb(), "totals": totals, "consumed": consumed,
                 "events": events, "counters": engine.counters()})
        engine.close()

    loop.run_until_complete(main())


def run_python_relay(args: argparse.Namespace, ha: str, pa: int, hb: str, pb: int,
                     rss0: int) -> None:
    """The alternative: one Python callback per packet on uvloop (or a null sink)."""
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    header = struct.Struct("<qIIHBBBxH")
    rtp = struct.Struct("!BBHII")
    clock = time.monotonic_ns
    socks: list[socket.socket] = []
    ports = []
    port = args.port_base
    for _ in range(args.calls):
        pair = []
        for _leg in range(2):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", port))
            s.setblocking(False)
            socks.append(s)
            pair.append(port)
            port += 2
        ports.append(pair)

    class Leg(asyncio.DatagramProtocol):
        def __init__(self, remote: tuple[str, int], direction: int, rec: bytearray) -> None:
            self.remote = remote
            self.direction = direction
            self.rec = rec
            self.peer: Leg | None = None
            self.transport: asyncio.DatagramTransport | None = None
            self.packets = 0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            if len(data) < 12 or data[0] >> 6 != 2:
                return
            self.packets += 1
            self.remote = addr  # latch (simplified: always follow)
            _, b1, seq, ts, ssrc = rtp.unpack_from(data)
            if len(self.rec) < 65536:
                self.rec += header.pack(clock(), ssrc, ts, seq, b1 & 0x7F, b1 >> 7,
                                        self.direction, len(data) - 12)
                self.rec += data[12:]
            peer = self.peer
            if peer is not None and peer.transport is not None:
                peer.transport.sendto(data, peer.remote)

    legs: list[Leg] = []

    async def setup() -> None:
        for i in range(args.calls):
            rec = bytearray()
            a = Leg((ha, pa), 0, rec)
            b = Leg((hb, pb), 1, rec)
            a.peer, b.peer = b, a
            await loop.create_datagram_endpoint(lambda a=a: a, sock=socks[2 * i])
            await loop.create_datagram_endpoint(lambda b=b: b, sock=socks[2 * i + 1])
            legs.extend((a, b))

    if args.serve == "uvloop":
        loop.run_until_complete(setup())
    rss1 = rss_kb()
    recs = {id(leg.rec): leg.rec for leg in legs}
    sink = bytearray(1 << 20)

    async def drain() -> None:
        while True:
            await asyncio.sleep(0.05)
            for rec in recs.values():
                if rec:
                    sink[: len(rec)] = rec
                    del rec[:]

    async def main() -> None:
        task = loop.create_task(drain())
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        _report({"pid": os.getpid(), "engine_tid": None, "ports": ports,
                 "rss_kb_empty": rss0, "rss_kb_open": rss1})
        await reader.readline()
        task.cancel()
        _report({"rss_kb_end": rss_kb(),
                 "totals": {"packets": sum(leg.packets for leg in legs)}})

    loop.run_until_complete(main())


# --------------------------------------------------------------------------
# The generator (this process)
# --------------------------------------------------------------------------


class Side:
    """One end of every call (all callers, or all callees) on one socket."""

    def __init__(self, index: int, calls: int) -> None:
        self.index = index
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 8 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.port = self.sock.getsockname()[1]
        rng = np.random.default_rng(index + 1)
        self.pkts = np.zeros(calls, PKT)
        self.pkts["b0"] = 0x80
        self.pkts["b1"] = 0  # PCMU
        self.pkts["ssrc"] = rng.integers(1, 2**32 - 1, calls, dtype=np.uint64)
        self.pkts["call"] = np.arange(calls)
        self.pkts["side"] = index
        self.seq0 = rng.integers(0, 2**16, calls, dtype=np.uint32)
        self.ts0 = rng.integers(0, 2**32, calls, dtype=np.uint64)
        self.addrs = np.zeros(calls, SOCKADDR_IN)
        self.iov = np.zeros(calls, IOVEC)
        self.iov["base"] = self.pkts.ctypes.data + np.arange(calls) * PACKET
        self.iov["len"] = PACKET
        self.msgs = np.zeros(calls, MMSG)
        self.msgs["name"] = self.addrs.ctypes.data + np.arange(calls) * SOCKADDR_IN.itemsize
        self.msgs["namelen"] = SOCKADDR_IN.itemsize
        self.msgs["iov"] = self.iov.ctypes.data + np.arange(calls) * IOVEC.itemsize
        self.msgs["iovlen"] = 1
        # Receive side.
        self.rx = np.zeros((BATCH, RXBUF), np.uint8)
        self.rx_iov = np.zeros(BATCH, IOVEC)
        self.rx_iov["base"] = self.rx.ctypes.data + np.arange(BATCH) * RXBUF
        self.rx_iov["len"] = RXBUF
        self.ctl = np.zeros((BATCH, 64), np.uint8)
        self.rx_msgs = np.zeros(BATCH, MMSG)
        self.rx_msgs["iov"] = self.rx_iov.ctypes.data + np.arange(BATCH) * IOVEC.itemsize
        self.rx_msgs["iovlen"] = 1
        self.rx_msgs["control"] = self.ctl.ctypes.data + np.arange(BATCH) * 64
        self.rx_msgs["controllen"] = 64
        self.sent = 0

    def target(self, ports: list[int]) -> None:
        self.addrs["family"] = socket.AF_INET
        self.addrs["port"] = ports
        self.addrs["addr"] = 0x7F000001

    def send(self, lo: int, hi: int, k: int) -> None:
        p = self.pkts[lo:hi]
        p["seq"] = (self.seq0[lo:hi] + k) & 0xFFFF
        p["ts"] = (self.ts0[lo:hi] + k * PAYLOAD) & 0xFFFFFFFF
        p["sent"] = time.clock_gettime_ns(time.CLOCK_REALTIME)
        done = lo
        while done < hi:
            r = libc.sendmmsg(self.sock.fileno(), self.msgs.ctypes.data + done * 64,
                              hi - done, 0)
            if r < 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
            done += r
        self.sent += hi - lo

    def receive(self, sink: Sink) -> int:
        total = 0
        while True:
            n = libc.recvmmsg(self.sock.fileno(), self.rx_msgs.ctypes.data, BATCH,
                              MSG_DONTWAIT, None)
            if n <= 0:
                return total
            rows = self.rx[:n, :PACKET].copy().view(PKT).reshape(n)
            # cmsghdr (16 bytes) then struct timespec: the kernel's arrival time.
            ts = self.ctl[:n, 16:32].copy().view("<i8")
            arrival = ts[:, 0] * 1_000_000_000 + ts[:, 1]
            ok = self.rx_msgs["len"][:n] == PACKET
            sink.add(rows["sent"][ok], arrival[ok], rows["side"][ok])
            self.rx_msgs["controllen"][:n] = 64
            total += n
            if n < BATCH:
                return total


class Sink:
    """Latencies of the packets sent inside the measurement window."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.window = (0, 0)
        self.received = [0, 0]  # by origin side, sent inside the window
        self.total = 0
        self.garbled = 0

    def add(self, sent: np.ndarray, arrival: np.ndarray, side: np.ndarray) -> None:
        self.total += len(sent)
        inside = (sent >= self.window[0]) & (sent < self.window[1])
        if inside.any():
            self.chunks.append(arrival[inside] - sent[inside])
            s = side[inside]
            self.received[0] += int((s == 0).sum())
            self.received[1] += int((s == 1).sum())


@dataclass
class Result:
    relay: str
    calls: int
    seconds: float
    sent: int
    received: int
    loss_pct: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    relay_cpu_pct: float
    engine_thread_cpu_pct: float | None
    cpu_s_per_call_s: float
    relay_core_busy_pct: float
    other_cpu_pct: float
    gen_cpu_pct: float
    gen_late_ticks: int
    rss_kb_per_call: float | None
    relay_report: dict


def run(args: argparse.Namespace, calls: int) -> Result:
    if args.gen_cpu >= 0:
        os.sched_setaffinity(0, {args.gen_cpu})
    a, b = Side(0, calls), Side(1, calls)
    child = None
    hello: dict = {}
    if args.relay == "direct":
        a.target([b.port] * calls)
        b.target([a.port] * calls)
    else:
        cmd = [sys.executable, str(HERE), "--serve", args.relay, "--calls", str(calls),
               "--remote-a", f"127.0.0.1:{a.port}", "--remote-b", f"127.0.0.1:{b.port}",
               "--relay-cpu", str(args.relay_cpu), "--port-base", str(args.port_base)]
        if args.record:
            cmd.append("--record")
        child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        hello = json.loads(child.stdout.readline())
        ports = hello["ports"]
        a.target([p[0] for p in ports])
        b.target([p[1] for p in ports])
    sink = Sink()
    period = PTIME_NS // GROUPS
    bounds = [calls * g // GROUPS for g in range(GROUPS + 1)]
    start = time.clock_gettime_ns(time.CLOCK_REALTIME) + 50_000_000
    warm_end = start + int(args.warmup * 1e9)
    end = warm_end + int(args.duration * 1e9)
    sink.window = (warm_end, end)
    tick = 0
    late = 0
    marks: dict[str, object] = {}
    while True:
        due = start + tick * period
        if due >= end:
            break
        now = time.clock_gettime_ns(time.CLOCK_REALTIME)
        if now < due:
            a.receive(sink)
            b.receive(sink)
            now = time.clock_gettime_ns(time.CLOCK_REALTIME)
            if due - now > 200_000:
                time.sleep((due - now - 100_000) / 1e9)
            while time.clock_gettime_ns(time.CLOCK_REALTIME) < due:
                pass
        elif now - due > 2_000_000:
            late += 1
        if "cpu0" not in marks and due >= warm_end:
            marks["cpu0"] = _cpu_marks(child, hello, args)
            a_sent0, b_sent0 = a.sent, b.sent
        g = tick % GROUPS
        k = tick // GROUPS
        lo, hi = bounds[g], bounds[g + 1]
        if hi > lo:
            a.send(lo, hi, k)
            b.send(lo, hi, k)
        tick += 1
    marks["cpu1"] = _cpu_marks(child, hello, args)
    drain_until = time.monotonic() + 0.5
    while time.monotonic() < drain_until:
        a.receive(sink)
        b.receive(sink)
        time.sleep(0.001)
    report: dict = {}
    if child is not None:
        child.stdin.write("stop\n")
        child.stdin.flush()
        report = json.loads(child.stdout.readline())
        child.wait(timeout=30)
    sent = (a.sent - a_sent0) + (b.sent - b_sent0)
    received = sink.received[0] + sink.received[1]
    lat = np.concatenate(sink.chunks) if sink.chunks else np.zeros(1, np.int64)
    p50, p99, p999 = np.percentile(lat, [50, 99, 99.9]) / 1e6
    c0, c1 = marks["cpu0"], marks["cpu1"]
    secs = args.duration
    hz = os.sysconf("SC_CLK_TCK")
    relay_cpu = (c1["proc"] - c0["proc"]) / hz / secs if child else 0.0
    thread_cpu = ((c1["thread"] - c0["thread"]) / hz / secs
                  if child and c0["thread"] is not None else None)
    busy = (c1["busy"][0] - c0["busy"][0]) / max(1, c1["busy"][1] - c0["busy"][1])
    gen_cpu = (c1["gen"] - c0["gen"]) / secs
    # Everything busy on the machine that is neither the relay nor the
    # generator (other people's work, and kernel time not charged to either).
    machine = (c1["all"][0] - c0["all"][0]) / hz / secs
    other = machine - relay_cpu - gen_cpu
    rss = None
    if report.get("rss_kb_end") and calls:
        rss = (report["rss_kb_end"] - hello["rss_kb_empty"]) / calls
    return Result(
        relay=args.relay, calls=calls, seconds=secs, sent=sent, received=received,
        loss_pct=100.0 * (sent - received) / max(1, sent),
        p50_ms=float(p50), p99_ms=float(p99), p999_ms=float(p999),
        max_ms=float(lat.max() / 1e6),
        relay_cpu_pct=100 * relay_cpu,
        engine_thread_cpu_pct=None if thread_cpu is None else 100 * thread_cpu,
        cpu_s_per_call_s=relay_cpu / calls,
        relay_core_busy_pct=100 * busy, other_cpu_pct=100 * other,
        gen_cpu_pct=100 * gen_cpu, gen_late_ticks=late,
        rss_kb_per_call=rss, relay_report=report,
    )


def _cpu_marks(child: subprocess.Popen | None, hello: dict, args: argparse.Namespace) -> dict:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out: dict = {"gen": ru.ru_utime + ru.ru_stime, "proc": 0, "thread": None,
                 "busy": cpu_busy(args.relay_cpu if args.relay_cpu >= 0 else 0),
                 "all": cpu_busy(None)}
    if child is not None:
        out["proc"] = cpu_ticks(f"/proc/{child.pid}/stat")
        tid = hello.get("engine_tid")
        if tid:
            out["thread"] = cpu_ticks(f"/proc/{child.pid}/task/{tid}/stat")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", default="100", help="comma-separated call counts, run in turn")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--relay", choices=["engine", "uvloop", "null", "direct"], default="engine")
    p.add_argument("--no-record", dest="record", action="store_false")
    p.add_argument("--relay-cpu", type=int, default=0)
    p.add_argument("--gen-cpu", type=int, default=1)
    p.add_argument("--port-base", type=int, default=30000)
    p.add_argument("--json", help="append one JSON line per run to this file")
    # Internal: the relay child.
    p.add_argument("--serve", choices=["engine", "uvloop", "null"], help=argparse.SUPPRESS)
    p.add_argument("--remote-a", help=argparse.SUPPRESS)
    p.add_argument("--remote-b", help=argparse.SUPPRESS)
    p.add_argument("--record", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        args.calls = int(args.calls)
        serve(args)
        return
    print(f"{'relay':>7} {'calls':>6} {'sent':>9} {'recv':>9} {'loss%':>7} {'p50ms':>6} "
          f"{'p99ms':>6} {'p99.9':>6} {'maxms':>6} {'relay%':>6} {'thr%':>5} "
          f"{'core%':>5} {'other':>5} {'gen%':>5} {'late':>4} {'µs/pkt':>6} {'KB/call':>7}", flush=True)
    for calls in (int(c) for c in args.calls.split(",")):
        r = run(args, calls)
        pkts_per_s = calls * 100
        us_per_pkt = r.relay_cpu_pct / 100 / pkts_per_s * 1e6 if r.relay_cpu_pct else 0
        print(f"{r.relay:>7} {r.calls:>6} {r.sent:>9} {r.received:>9} {r.loss_pct:>7.3f} "
              f"{r.p50_ms:>6.2f} {r.p99_ms:>6.2f} {r.p999_ms:>6.2f} {r.max_ms:>6.1f} "
              f"{r.relay_cpu_pct:>6.1f} "
              f"{'-' if r.engine_thread_cpu_pct is None else f'{r.engine_thread_cpu_pct:.1f}':>5} "
              f"{r.relay_core_busy_pct:>5.1f} {r.other_cpu_pct:>5.1f} {r.gen_cpu_pct:>5.1f} {r.gen_late_ticks:>4} "
              f"{us_per_pkt:>6.2f} "
              f"{'-' if r.rss_kb_per_call is None else f'{r.rss_kb_per_call:.1f}':>7}",
              flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(asdict(r)) + "\n")


if __name__ == "__main__":
    main()
