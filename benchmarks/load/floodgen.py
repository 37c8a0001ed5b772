"""A scanner's INVITE flood over UDP, paced, self-stopping: the generator for flood runs.

What a SIP scanner (sipvicious' svwar, "friendly-scanner") sends: INVITEs
to guessed extensions, each with its own Call-ID and branch, from one
address, without ever ACKing. One template is built before the clock
starts; each datagram is it with a fixed-width counter patched in, and a
tick's worth (``TICK`` seconds) goes out as one batch with ``sendmmsg(2)``
(through ctypes, into buffers set up once: one system call per batch) when
libc has it, else ``sendto`` per datagram; at 10,000 a second that is a few
percent of one core, so the generator does not take the machine it shares
with the server from the server.

Answers are read between batches and counted by status; the summary (JSON
on stdout) says what was sent, at what rate, and what came back.

    python -m benchmarks.load.floodgen --target 127.0.0.1:5060 --source 127.0.0.66 \\
        --rate 10000 --seconds 5

Loopback only: ``--target`` must be a 127.x address (it is a load tool for
one's own server, not a scanner).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import errno
import ipaddress
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field

#: Seconds between batches: small enough that the flood is steady (100
#: datagrams a batch at 10,000/s), large enough that pacing costs nothing.
TICK = 0.01
#: The counter patched into each datagram (Call-ID, branch, From tag).
WIDTH = 10
_MARK = b"#" * WIDTH


def invite_template(target: str, port: int, source: str, source_port: int,
                    method: str = "INVITE") -> bytes:
    """A scanner's request with ``_MARK`` where each datagram's number goes."""
    mark = _MARK.decode()
    text = (
        f"{method} sip:100@{target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {source}:{source_port};branch=z9hG4bK-{mark};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f'From: "sipvicious" <sip:100@1.1.1.1>;tag=6fa1{mark}\r\n'
        f"To: \"sipvicious\" <sip:100@1.1.1.1>\r\n"
        f"Call-ID: {mark}@{source}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Contact: <sip:100@{source}:{source_port}>\r\n"
        f"User-Agent: friendly-scanner\r\n"
        f"Accept: application/sdp\r\n"
        f"Content-Length: 0\r\n\r\n"
    )
    return text.encode()


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(_Iovec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


class Sender:
    """Sends batches of equal-sized datagrams on a connected UDP socket.

    With ``sendmmsg`` the message headers and the iovecs are set up once,
    pointing into one buffer of ``max_batch`` slots of ``size`` bytes; a
    batch is copied into the slots and sent with one system call.
    """

    def __init__(self, sock: socket.socket, size: int, max_batch: int) -> None:
        self.sock = sock
        self.size = size
        self.errors: dict[str, int] = {}
        libc_name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(libc_name, use_errno=True) if libc_name else None
        self._sendmmsg = getattr(libc, "sendmmsg", None) if libc is not None else None
        self.method = "sendmmsg" if self._sendmmsg is not None else "sendto"
        if self._sendmmsg is None:
            return
        self._buffer = ctypes.create_string_buffer(size * max_batch)
        base = ctypes.addressof(self._buffer)
        self._iovecs = (_Iovec * max_batch)()
        self._messages = (_Mmsghdr * max_batch)()
        for i in range(max_batch):
            self._iovecs[i].iov_base = base + i * size
            self._iovecs[i].iov_len = size
            self._messages[i].msg_hdr.msg_iov = ctypes.pointer(self._iovecs[i])
            self._messages[i].msg_hdr.msg_iovlen = 1
        self._base = base

    def send(self, batch: list[bytes]) -> int:
        """Send ``batch`` (each datagram ``size`` bytes); how many went out."""
        if self._sendmmsg is None:
            return self._send_each(batch)
        base, size = self._base, self.size
        for i, data in enumerate(batch):
            ctypes.memmove(base + i * size, data, size)
        count, sent = len(batch), 0
        while sent < count:
            done = self._sendmmsg(self.sock.fileno(),
                                  ctypes.byref(self._messages, sent * ctypes.sizeof(_Mmsghdr)),
                                  count - sent, 0)
            if done < 0:
                code = ctypes.get_errno()
                if code == errno.EINTR:
                    continue
                name = errno.errorcode.get(code, str(code))
                self.errors[name] = self.errors.get(name, 0) + count - sent
                break
            sent += done
        return sent

    def _send_each(self, batch: list[bytes]) -> int:
        sent = 0
        for data in batch:
            try:
                self.sock.send(data)
                sent += 1
            except OSError as error:
                name = errno.errorcode.get(error.errno or 0, str(error.errno))
                self.errors[name] = self.errors.get(name, 0) + 1
        return sent


@dataclass
class FloodResult:
    target: str
    source: str
    method: str
    sender: str
    rate_asked: float
    seconds_asked: float
    sent: int = 0
    seconds: float = 0.0
    rate: float = 0.0
    answers: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    send_errors: dict[str, int] = field(default_factory=dict)
    cpu_seconds: float = 0.0
    #: time.monotonic() at the first and after the last datagram (CLOCK_MONOTONIC:
    #: the same clock in every process, so a harness can cut its samples by it).
    started: float = 0.0
    ended: float = 0.0


def flood(target: tuple[str, int], source: str, rate: float, seconds: float, *,
          method: str = "INVITE", linger: float = 1.0) -> FloodResult:
    """Send ``rate`` datagrams a second for ``seconds`` from ``source``, then
    listen ``linger`` seconds more for answers; what happened."""
    host, port = target
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"--target {host}: loopback addresses only")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind((source, 0))
    sock.connect((host, port))
    sock.setblocking(False)
    template = invite_template(host, port, source, sock.getsockname()[1], method)
    parts = template.split(_MARK)
    total = int(rate * seconds)
    # A batch is what one tick owes; a late tick sends more, up to 10 ticks' worth.
    max_batch = max(1, int(rate * TICK * 10))
    sender = Sender(sock, len(template), max_batch)
    result = FloodResult(f"{host}:{port}", source, method, sender.method, rate, seconds)
    cpu0 = time.process_time()
    start = time.monotonic()
    sent_total = 0
    while sent_total < total:
        tick = int((time.monotonic() - start) / TICK)
        due = min(total, int((tick + 1) * TICK * rate), sent_total + max_batch)
        if due > sent_total:
            # Every datagram a new request: its number patched in (about 0.5 us).
            batch = [(b"%0*d" % (WIDTH, n % 10**WIDTH)).join(parts)
                     for n in range(sent_total, due)]
            result.sent += sender.send(batch)
            sent_total = due
        _drain(sock, result)
        time.sleep(max(0.0, start + (tick + 1) * TICK - time.monotonic()))
    result.started, result.ended = start, time.monotonic()
    result.seconds = result.ended - start
    result.rate = result.sent / result.seconds if result.seconds else 0.0
    end = time.monotonic() + linger
    while time.monotonic() < end:
        _drain(sock, result)
        time.sleep(0.02)
    result.send_errors = sender.errors
    result.cpu_seconds = time.process_time() - cpu0
    sock.close()
    return result


def _drain(sock: socket.socket, result: FloodResult) -> None:
    while True:
        try:
            data = sock.recv(65535)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionRefusedError:  # ICMP port unreachable: no server there
            result.statuses["refused"] = result.statuses.get("refused", 0) + 1
            return
        result.answers += 1
        status = data[8:11].decode("ascii", "replace") if data.startswith(b"SIP/2.0 ") else "?"
        result.statuses[status] = result.statuses.get(status, 0) + 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", required=True, help="HOST:PORT of the server (loopback)")
    parser.add_argument("--source", default="127.0.0.66", help="address to send from")
    parser.add_argument("--rate", type=float, default=10000, help="datagrams a second")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--method", default="INVITE")
    parser.add_argument("--linger", type=float, default=1.0,
                        help="seconds to keep counting answers after the last datagram")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    result = flood((host, int(port)), args.source, args.rate, args.seconds,
                   method=args.method, linger=args.linger)
    json.dump(asdict(result), sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
