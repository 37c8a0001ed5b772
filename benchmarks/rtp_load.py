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
accounts elsewhere is not in it) and its engine thread's share, the CPU
every other task on the machine used meanwhile (this machine is shared, and
that load competes with the relay), the generator's own CPU and how many
of its 1 ms send slots it skipped because it was more than 2 ms late (its
packets are not sent, so not counted as sent either: catching up with a
burst would put the generator's own stalls into the relay's latency), and the relay's RSS per call.
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
import threading
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
LATE_NS = 2_000_000  # a send slot this late is skipped (see run)
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


# --------------------------------------------------------------------------
# The relay side (child process)
# --------------------------------------------------------------------------


def serve(args: argparse.Namespace) -> None:
    """Open N sessions toward the generator's two sockets and relay until stdin says stop."""
    if args.relay_cpu >= 0:
        os.sched_setaffinity(0, {args.relay_cpu})
    ha, pa = args.remote_a.rsplit(":", 1)
    hb, pb = args.remote_b.rsplit(":", 1)
    if args.serve == "engine":
        run_engine(args, ha, int(pa), hb, int(pb))
    else:
        run_python_relay(args, ha, int(pa), hb, int(pb))


def _prioritise(priority: str, tid: int | None) -> None:
    """Give the packet thread precedence over the rest of the CPU's work.

    ``fifo``: SCHED_FIFO 10 (preempts everything normal at once; the kernel's
    RT throttling still leaves 5% to others); ``nice``: nice -15 (CFS then
    lets it preempt normal tasks at wake-up most of the time).
    """
    if tid is None or priority == "normal":
        return
    if priority == "fifo":
        os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(10))
    elif priority == "nice":
        os.setpriority(os.PRIO_PROCESS, tid, -15)


def _report(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def run_engine(args: argparse.Namespace, ha: str, pa: int, hb: str, pb: int) -> None:
    import uvloop

    from mediacore.rtp.engine import Leg, MediaEngine
    from mediacore.rtp.ports import PortPool

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    # Head-room: other programs on this machine may hold ports in the range.
    ports = PortPool((args.port_base, min(65535, args.port_base + 4 * args.calls + 2000)))
    engine = MediaEngine("127.0.0.1", ports)
    events = 0

    def on_events(evs: list) -> None:
        nonlocal events
        events += len(evs)

    engine.start(loop, on_events, realtime_priority=10 if args.priority == "fifo" else None)
    if args.priority == "nice":
        _prioritise(args.priority, engine._thread.native_id)
    rss0 = rss_kb()  # the process with the engine running, before any call
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


def run_python_relay(args: argparse.Namespace, ha: str, pa: int, hb: str, pb: int) -> None:
    """The alternative: one Python callback per packet on uvloop (or a null sink)."""
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    header = struct.Struct("<qIIHBBBxH")
    rtp = struct.Struct("!BBHII")
    clock = time.monotonic_ns
    rss0 = rss_kb()
    socks: list[socket.socket] = []
    ports = []
    port = args.port_base
    for _ in range(args.calls):
        pair = []
        while len(pair) < 2:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:  # held by another program: next one
                s.close()
                port += 2
                continue
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
        _prioritise(args.priority, threading.get_native_id())
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
    """(send time, latency, origin side) of every packet received, kept for the end.

    The window is applied afterwards on the send stamps, so a batch the
    generator sent late at the window's edge is counted on the side it was
    stamped, in both the sent and the received totals.
    """

    def __init__(self) -> None:
        self.sent: list[np.ndarray] = []
        self.latency: list[np.ndarray] = []
        self.side: list[np.ndarray] = []

    def add(self, sent: np.ndarray, arrival: np.ndarray, side: np.ndarray) -> None:
        self.sent.append(sent)
        self.latency.append(arrival - sent)
        self.side.append(side.astype(np.int8))

    def window(self, lo: int, hi: int) -> tuple[np.ndarray, int]:
        """Latencies (ns) of the packets stamped in [lo, hi), and their count."""
        if not self.sent:
            return np.zeros(1, np.int64), 0
        sent = np.concatenate(self.sent)
        inside = (sent >= lo) & (sent < hi)
        return np.concatenate(self.latency)[inside], int(inside.sum())


def cpu_idle_ns(cpu: int) -> int:
    """Idle + iowait time of one CPU (exact under NO_HZ, unlike the busy fields)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            v = line.split()
            return (int(v[4]) + int(v[5])) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    raise RuntimeError(f"cpu{cpu} not in /proc/stat")


def task_cpu_ns() -> dict[str, int]:
    """CPU time of every task on the machine (utime+stime, in ns), by "pid/tid".

    Per task rather than /proc/stat: on this VM the per-CPU figures are
    sampled at the tick and disagree with the tasks' own (exact) runtimes.
    """
    hz = os.sysconf("SC_CLK_TCK")
    out: dict[str, int] = {}
    for stat in Path("/proc").glob("[0-9]*/task/[0-9]*/stat"):
        try:
            out[f"{stat.parent.parent.parent.name}/{stat.parent.name}"] = (
                cpu_ticks(str(stat)) * 1_000_000_000 // hz)
        except (OSError, IndexError):
            continue
    return out


@dataclass
class Result:
    relay: str
    priority: str
    calls: int
    seconds: float
    sent: int
    received: int
    loss_pct: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    offered_calls: float
    relay_cpu_pct: float
    relay_core_busy_pct: float
    relay_us_per_packet: float
    engine_thread_cpu_pct: float | None
    cpu_s_per_call_s: float
    other_cpu_pct: float
    gen_cpu_pct: float
    gen_late_ticks: int
    rss_kb_per_call: float | None
    relay_report: dict


def run(args: argparse.Namespace, calls: int) -> Result:
    if args.gen_cpu >= 0:
        os.sched_setaffinity(0, {args.gen_cpu})
    if args.gen_nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.gen_nice)
    a, b = Side(0, calls), Side(1, calls)
    child = None
    hello: dict = {}
    if args.relay == "direct":
        a.target([b.port] * calls)
        b.target([a.port] * calls)
    else:
        cmd = [sys.executable, str(HERE), "--serve", args.relay, "--calls", str(calls),
               "--remote-a", f"127.0.0.1:{a.port}", "--remote-b", f"127.0.0.1:{b.port}",
               "--relay-cpu", str(args.relay_cpu), "--port-base", str(args.port_base),
               "--priority", args.priority]
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
    tick = 0
    late = 0
    mark0: dict = {}
    window_lo = 0
    sent0 = 0
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
        elif now - due > LATE_NS:
            # The generator itself stalled (another task had its CPU, or a
            # slow sendmmsg). Skip this slot rather than catch up: a burst of
            # back-to-back slots would measure the generator, not the relay.
            if due >= warm_end:
                late += 1
            tick += 1
            continue
        if not mark0 and due >= warm_end:
            mark0 = _cpu_marks(child, hello)
            window_lo = time.clock_gettime_ns(time.CLOCK_REALTIME)
            sent0 = a.sent + b.sent
        g = tick % GROUPS
        k = tick // GROUPS
        lo, hi = bounds[g], bounds[g + 1]
        if hi > lo:
            a.send(lo, hi, k)
            b.send(lo, hi, k)
        tick += 1
    window_hi = time.clock_gettime_ns(time.CLOCK_REALTIME)
    mark1 = _cpu_marks(child, hello)
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
    sent = a.sent + b.sent - sent0
    lat, received = sink.window(window_lo, window_hi)
    if args.dump:
        np.savez(args.dump, sent=np.concatenate(sink.sent), latency=np.concatenate(sink.latency),
                 side=np.concatenate(sink.side), window=np.array([window_lo, window_hi]))
    if not len(lat):
        lat = np.zeros(1, np.int64)
    p50, p99, p999 = np.percentile(lat, [50, 99, 99.9]) / 1e6
    secs = (mark1["t"] - mark0["t"]) / 1e9
    relay_cpu = (mark1["proc"] - mark0["proc"]) / 1e9 / secs
    thread_cpu = ((mark1["thread"] - mark0["thread"]) / 1e9 / secs
                  if mark0["thread"] is not None else None)
    gen_cpu = (mark1["gen"] - mark0["gen"]) / 1e9 / secs
    # The relay's core, whoever used it: the relay, kernel work on its behalf
    # that is not charged to it (softirq), and anything else that ran there.
    core = 1 - (mark1["idle"] - mark0["idle"]) / 1e9 / secs
    # Every other task's CPU in the window: other people's work on this
    # shared machine, which competes with the relay for its core.
    ours = {str(os.getpid())} | ({str(child.pid)} if child else set())
    other = sum(v - mark0["tasks"].get(k, 0) for k, v in mark1["tasks"].items()
                if k.split("/")[0] not in ours) / 1e9 / secs
    rss = None
    if report.get("rss_kb_end") and calls:
        rss = (report["rss_kb_end"] - hello["rss_kb_empty"]) / calls
    return Result(
        relay=args.relay, priority=args.priority, calls=calls, seconds=round(secs, 3),
        sent=sent, received=received, loss_pct=100.0 * (sent - received) / max(1, sent),
        p50_ms=float(p50), p99_ms=float(p99), p999_ms=float(p999),
        max_ms=float(lat.max() / 1e6),
        offered_calls=sent / secs / 100,
        relay_cpu_pct=100 * relay_cpu, relay_core_busy_pct=100 * core,
        relay_us_per_packet=relay_cpu * secs / max(1, sent) * 1e6,
        engine_thread_cpu_pct=None if thread_cpu is None else 100 * thread_cpu,
        cpu_s_per_call_s=relay_cpu / calls,
        other_cpu_pct=100 * other, gen_cpu_pct=100 * gen_cpu, gen_late_ticks=late,
        rss_kb_per_call=rss, relay_report=report,
    )


_RELAY_CPU = [0]


def _cpu_marks(child: subprocess.Popen | None, hello: dict) -> dict:
    hz = os.sysconf("SC_CLK_TCK")
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out: dict = {"t": time.monotonic_ns(), "gen": int((ru.ru_utime + ru.ru_stime) * 1e9),
                 "proc": 0, "thread": None, "tasks": task_cpu_ns(),
                 "idle": cpu_idle_ns(max(0, _RELAY_CPU[0]))}
    if child is not None:
        out["proc"] = cpu_ticks(f"/proc/{child.pid}/stat") * 1_000_000_000 // hz
        tid = hello.get("engine_tid")
        if tid:
            out["thread"] = cpu_ticks(f"/proc/{child.pid}/task/{tid}/stat") * 1_000_000_000 // hz
    return out


def wait_quiet(limit_pct: float, patience: float) -> float:
    """Wait up to ``patience`` s for a second in which other tasks use < limit_pct of a CPU."""
    deadline = time.monotonic() + patience
    while True:
        t0, c0 = time.monotonic_ns(), task_cpu_ns()
        time.sleep(1.0)
        t1, c1 = time.monotonic_ns(), task_cpu_ns()
        busy = 100 * sum(v - c0.get(k, 0) for k, v in c1.items()) / (t1 - t0)
        if busy < limit_pct or time.monotonic() > deadline:
            return busy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", default="100", help="comma-separated call counts, run in turn")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--relay", choices=["engine", "uvloop", "null", "direct"], default="engine")
    p.add_argument("--no-record", dest="record", action="store_false")
    p.add_argument("--relay-cpu", type=int, default=0)
    p.add_argument("--gen-cpu", type=int, default=1)
    p.add_argument("--port-base", type=int, default=36000)
    p.add_argument("--priority", choices=["normal", "nice", "fifo"], default="normal",
                   help="scheduling of the relay's packet thread (see _prioritise)")
    p.add_argument("--gen-nice", type=int, default=0,
                   help="nice value for the generator (e.g. -10 on a busy shared machine)")
    p.add_argument("--quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before each run, wait up to this long for the machine to be idle")
    p.add_argument("--json", help="append one JSON line per run to this file")
    p.add_argument("--dump", help="save every packet's send time and latency (.npz)")
    # Internal: the relay child.
    p.add_argument("--serve", choices=["engine", "uvloop", "null"], help=argparse.SUPPRESS)
    p.add_argument("--remote-a", help=argparse.SUPPRESS)
    p.add_argument("--remote-b", help=argparse.SUPPRESS)
    p.add_argument("--record", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    _RELAY_CPU[0] = args.relay_cpu
    if args.serve:
        args.calls = int(args.calls)
        serve(args)
        return
    columns = ["relay", "prio", "calls", "offer", "sent", "recv", "loss%", "p50ms", "p99ms",
               "p99.9", "maxms", "relay%", "core%", "thr%", "µs/pkt", "other%", "gen%", "late",
               "KB/call"]
    widths = (7, 6, 6, 6, 9, 9, 7, 6, 6, 6, 6, 6, 5, 5, 6, 6, 5, 4, 7)
    print(" ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)), flush=True)
    for calls in (int(c) for c in args.calls.split(",")):
        if args.quiet:
            wait_quiet(5.0, args.quiet)
        r = run(args, calls)
        thr = "-" if r.engine_thread_cpu_pct is None else f"{r.engine_thread_cpu_pct:.1f}"
        rss = "-" if r.rss_kb_per_call is None else f"{r.rss_kb_per_call:.1f}"
        cells = (r.relay, r.priority, r.calls, f"{r.offered_calls:.0f}", r.sent, r.received,
                 f"{r.loss_pct:.3f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.p999_ms:.2f}",
                 f"{r.max_ms:.1f}", f"{r.relay_cpu_pct:.1f}", f"{r.relay_core_busy_pct:.1f}",
                 thr, f"{r.relay_us_per_packet:.2f}", f"{r.other_cpu_pct:.1f}",
                 f"{r.gen_cpu_pct:.1f}", r.gen_late_ticks, rss)
        print(" ".join(f"{c!s:>{w}}" for c, w in zip(cells, widths, strict=True)), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(asdict(r)) + "\n")


if __name__ == "__main__":
    main()
