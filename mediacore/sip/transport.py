"""UDP and TCP transports for SIP on asyncio (uvloop at run time).

This is the thin edge of the sans-IO SIP core: it moves bytes and nothing
else. Datagrams and framed stream messages go to one ``on_message`` callback
with the peer they came from; whatever the core wants sent comes back through
:meth:`SipTransports.send`. Parsing, transactions and policy live above.

Streams are framed by Content-Length (RFC 3261 section 18.3, with
:func:`~mediacore.sip.message.message_length`). A stream message that
cannot be framed (no Content-Length, too large) is reported through
``on_stream_error`` so the core can answer it, and the connection closes:
there is no finding the next message after it. Double-CRLF
keepalives (RFC 5626 section 3.5.1) get a single CRLF back.

An IPv4 UDP listener given ``priority`` networks is two sockets on one port,
the kernel steering carriers' and targets' datagrams to the first and the
rest to the second (:mod:`mediacore.sip.steering`): a flood then fills only
the second one's receive queue.

TCP peers are bounded, since each holds a file descriptor that a call's RTP
sockets may need (the limits come from ``[sip]``; the app derives the global
one from the open-file limit, mediacore.host_checks.tcp_connection_budget):

* a message must be complete within ``tcp_message_timeout`` seconds of its
  first byte, and an accepted connection must send its first bytes within
  that time: a peer trickling a byte every few seconds (slowloris) is closed;
* a connection with no complete message or keepalive ping for
  ``tcp_idle_timeout`` seconds is closed;
* one source address holds at most ``tcp_connections_per_source`` inbound
  connections, all sources together ``tcp_max_connections``: a connection
  beyond either is accepted and closed at once (the kernel's backlog would
  otherwise hold it), counted, and logged at most once a minute.

:func:`stream_verdict` makes the timing decision from plain numbers, so it
is unit-tested without sockets or a clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mediacore.config import ListenAddress, Network
from mediacore.ratelimit import RateLimitedLog
from mediacore.sip import steering
from mediacore.sip.message import ParseError, ParserLimits, message_length

log = logging.getLogger("mediacore.sip.transport")

UDP = "udp"
TCP = "tcp"

#: The largest datagram we read; RFC 3261 18.1.1 keeps us under 1300 for our
#: own requests, but a peer may send up to the UDP maximum.
MAX_DATAGRAM = 65535


@dataclass(frozen=True, slots=True)
class Peer:
    """The other end of one message: where it came from or where it goes."""

    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


#: Why a TCP connection was refused (mediacore_sip_tcp_connections_refused_total).
REFUSED_PER_SOURCE = "per-source"
REFUSED_GLOBAL = "global"
#: Why we closed one (mediacore_sip_tcp_connections_closed_total).
CLOSED_MESSAGE_TIMEOUT = "message-timeout"
CLOSED_IDLE = "idle"
#: Seconds between the sweeps that apply the TCP deadlines (at most).
TCP_SWEEP_INTERVAL = 1.0
#: A limit-refusal or deadline-closure log line at most this often, per kind.
TCP_LOG_INTERVAL = 60.0


def stream_verdict(now: float, *, message_started: float | None, last_activity: float,
                   message_timeout: float, idle_timeout: float) -> str | None:
    """Why a TCP connection is to be closed now, or None.

    ``message_started``: when the first byte of the message still incomplete
    arrived (for an accepted connection that sent nothing yet, when it was
    accepted); None when no message is under way. ``last_activity``: the
    last complete message or keepalive ping, either way.
    """
    if message_started is not None and now - message_started > message_timeout:
        return CLOSED_MESSAGE_TIMEOUT
    if now - last_activity > idle_timeout:
        return CLOSED_IDLE
    return None


class TransportCounters:
    """What the TCP limits did since start, for metrics (plain integers)."""

    __slots__ = ("tcp_closed", "tcp_refused")

    def __init__(self) -> None:
        #: Inbound connections refused at accept, by limit (per-source, global).
        self.tcp_refused: dict[str, int] = {}
        #: Connections we closed, by deadline (message-timeout, idle).
        self.tcp_closed: dict[str, int] = {}


MessageHandler = Callable[[bytes, Peer], None]
#: Gets a framing error, the unframable bytes (their head may still be
#: answerable) and the peer; the connection closes after it returns.
StreamErrorHandler = Callable[[ParseError, bytes, Peer], None]


#: The SIP socket's receive buffer we ask for. The kernel default (208 KiB)
#: holds about 250 datagrams: at 300 calls/s (3,600 SIP messages a second) a
#: 70 ms stall of the event loop (a garbage collection, a burst of call
#: set-ups) overflowed it and SIPp counted failed calls. Linux caps the
#: request at net.core.rmem_max.
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024
#: Below this, say so once at start-up: the operator can raise rmem_max.
UDP_RECEIVE_BUFFER_WARN = 1024 * 1024


def widen_receive_buffer(sock: socket.socket, name: str) -> int:
    """Ask for UDP_RECEIVE_BUFFER on ``sock``; return what the kernel granted."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    except OSError as error:
        log.warning("udp %s: cannot set the receive buffer: %s", name, error)
        return 0
    # Linux reports twice the usable size (it counts its bookkeeping).
    if granted < UDP_RECEIVE_BUFFER_WARN:
        log.warning("udp %s: receive buffer only %d KiB (raise net.core.rmem_max to %d): "
                    "bursts of SIP traffic may be dropped", name, granted // 1024,
                    UDP_RECEIVE_BUFFER)
    return granted


class _UdpListener(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransports, local: ListenAddress,
                 lane: str = "single") -> None:
        self.owner = owner
        self.local = local
        #: "priority" or "other" for a steered pair of sockets, else "single".
        self.lane = lane
        #: Datagrams read (mediacore_sip_udp_datagrams_received_total).
        self.received = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            widen_receive_buffer(sock, str(self.local))

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received += 1
        # A bare CRLF datagram is a keepalive (RFC 5626 4.4.1); nothing to parse.
        if not data.strip(b"\r\n"):
            return
        self.owner.deliver(data, Peer(UDP, addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: UDP has no connection to fail,
        # and the transaction layer's timers deal with the silence.
        log.debug("udp %s: %s", self.local, exc)


class _TcpConnection(asyncio.Protocol):
    """One TCP connection, accepted (``inbound``) or opened by us, reused both ways."""

    def __init__(self, owner: SipTransports, *, inbound: bool) -> None:
        self.owner = owner
        self.inbound = inbound
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        self.last_activity = time.monotonic()
        #: The first byte of the message under way arrived then (None: none is);
        #: an accepted connection owes its first bytes from the moment it came.
        self.message_started: float | None = self.last_activity if inbound else None
        #: Refused at accept by a limit: never registered, never counted.
        self.refused = False
        #: Closed by a deadline; gone from ``connections`` once the close completes.
        self.closing = False
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = Peer(TCP, host, port)
        if self.inbound and not self.owner.admit(self):
            self.refused = True
            transport.close()
            return
        self.owner.connections[(host, port)] = self

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.transport is not None
        if self.refused:
            return
        now = time.monotonic()
        self.buffer += data
        limits = self.owner.limits
        while self.buffer:
            keepalive = self._strip_leading_crlf()
            if keepalive:
                self.last_activity = now
                self.transport.write(b"\r\n")
            if not self.buffer:
                break
            try:
                length = message_length(self.buffer, limits)
            except ParseError as error:
                log.warning("tcp %s: %s; closing the connection", self.peer, error)
                self.owner.on_stream_error(error, bytes(self.buffer), self.peer)
                self.transport.close()
                self.buffer.clear()
                return
            if length is None:
                break
            message = bytes(self.buffer[:length])
            del self.buffer[:length]
            self.last_activity = now
            self.message_started = None
            self.owner.deliver(message, self.peer)
        if not self.buffer:
            # Nothing under way; an accepted connection that only sent CRLFs
            # has sent something, and the idle timeout takes over.
            self.message_started = None
        elif self.message_started is None:
            self.message_started = now

    def _strip_leading_crlf(self) -> bool:
        """Drop CRLFs before a message; True when they made a double-CRLF ping."""
        stripped = 0
        while self.buffer[stripped:stripped + 2] == b"\r\n":
            stripped += 2
        if stripped:
            del self.buffer[:stripped]
        return stripped >= 4

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and not self.refused:
            key = (self.peer.host, self.peer.port)
            if self.owner.connections.get(key) is self:
                del self.owner.connections[key]
            if self.inbound:
                self.owner.release(self)
        if not self.closed.done():
            self.closed.set_result(None)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class SipTransports:
    """All listening sockets and TCP connections of one server.

    ``on_message`` gets every message's bytes with its peer;
    ``on_stream_error`` gets the framing errors of TCP peers (the core may
    answer them, the connection closes either way).
    """

    def __init__(
        self,
        on_message: MessageHandler,
        on_stream_error: StreamErrorHandler | None = None,
        *,
        max_message_size: int = 65536,
        tcp_idle_timeout: float = 300.0,
        tcp_message_timeout: float = 10.0,
        tcp_connections_per_source: int = 32,
        tcp_max_connections: int = 1024,
        priority: list[Network] | None = None,
    ) -> None:
        self.on_message = on_message
        self.on_stream_error = on_stream_error or (lambda error, data, peer: None)
        self.limits = ParserLimits(max_message_size=max_message_size)
        self.tcp_idle_timeout = tcp_idle_timeout
        self.tcp_message_timeout = tcp_message_timeout
        self.tcp_connections_per_source = tcp_connections_per_source
        self.tcp_max_connections = tcp_max_connections
        self.udp: dict[ListenAddress, _UdpListener] = {}
        #: The second socket of each steered IPv4 listener (sources not in ``priority``).
        self.udp_other: dict[ListenAddress, _UdpListener] = {}
        #: Sources whose datagrams get the first socket; None: one socket per listener.
        self.priority = priority
        #: Listeners whose kernel took the steering program.
        self.steered: set[ListenAddress] = set()
        self.tcp_servers: dict[ListenAddress, asyncio.Server] = {}
        self.connections: dict[tuple[str, int], _TcpConnection] = {}
        #: Accepted connections open, in all and per source address.
        self.inbound = 0
        self.inbound_by_source: dict[str, int] = {}
        self.counters = TransportCounters()
        self._refusal_logs = {reason: RateLimitedLog(log, interval=TCP_LOG_INTERVAL)
                              for reason in (REFUSED_PER_SOURCE, REFUSED_GLOBAL)}
        self._closure_logs = {reason: RateLimitedLog(log, interval=TCP_LOG_INTERVAL)
                              for reason in (CLOSED_MESSAGE_TIMEOUT, CLOSED_IDLE)}
        self._idle_task: asyncio.Task[None] | None = None

    def admit(self, connection: _TcpConnection) -> bool:
        """Take an accepted connection within the limits, or count and log why not."""
        assert connection.peer is not None
        host = connection.peer.host
        held = self.inbound_by_source.get(host, 0)
        if held >= self.tcp_connections_per_source:
            self._refuse(REFUSED_PER_SOURCE, connection.peer,
                         f"{host} already holds {held} connections "
                         f"(sip.tcp_connections_per_source)")
            return False
        if self.inbound >= self.tcp_max_connections:
            self._refuse(REFUSED_GLOBAL, connection.peer,
                         f"{self.inbound} connections are open (sip.tcp_max_connections, "
                         "or what the open-file limit leaves after the RTP ports)")
            return False
        self.inbound += 1
        self.inbound_by_source[host] = held + 1
        return True

    def release(self, connection: _TcpConnection) -> None:
        """An admitted connection closed: its place is free again."""
        assert connection.peer is not None
        host = connection.peer.host
        self.inbound -= 1
        held = self.inbound_by_source.get(host, 0) - 1
        if held > 0:
            self.inbound_by_source[host] = held
        else:
            self.inbound_by_source.pop(host, None)

    def _refuse(self, reason: str, peer: Peer, why: str) -> None:
        refused = self.counters.tcp_refused
        refused[reason] = refused.get(reason, 0) + 1
        self._refusal_logs[reason].warning("tcp %s: connection refused (accepted and closed): "
                                           "%s", peer, why)

    def deliver(self, data: bytes, peer: Peer) -> None:
        try:
            self.on_message(data, peer)
        except Exception:
            # One message must never take a listener down with it.
            log.exception("message from %s could not be handled", peer)

    async def listen(self, addresses: Iterable[ListenAddress]) -> None:
        """Open every listener, or none: a failure closes those already open."""
        loop = asyncio.get_running_loop()
        try:
            for address in addresses:
                if address.transport == UDP and self.priority is not None \
                        and ":" not in address.host:
                    await self._listen_steered(address)
                elif address.transport == UDP:
                    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
                    _, protocol = await loop.create_datagram_endpoint(
                        lambda a=address: _UdpListener(self, a),
                        local_addr=(address.host, address.port),
                        family=family,
                    )
                    self.udp[address] = protocol
                else:
                    self.tcp_servers[address] = await loop.create_server(
                        lambda: _TcpConnection(self, inbound=True), address.host, address.port,
                    )
                log.info("listening on %s", address)
        except OSError:
            await self.close()
            raise
        if self.tcp_servers and self._idle_task is None:
            self._idle_task = loop.create_task(self._apply_deadlines())

    async def _listen_steered(self, address: ListenAddress) -> None:
        """Two SO_REUSEPORT sockets on ``address``, the kernel picking by source."""
        loop = asyncio.get_running_loop()
        # A plain bind first: the port must be free (SO_REUSEPORT alone would
        # let a second server on the same port share it silently), and port 0
        # becomes a real one both sockets can take.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((address.host, address.port))
            port = probe.getsockname()[1]
        sockets = []
        try:
            for _ in (steering.PRIORITY, steering.OTHER):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind((address.host, port))
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        self._steer(address, sockets[0])
        for sock, lane, table in ((sockets[0], "priority", self.udp),
                                  (sockets[1], "other", self.udp_other)):
            _, protocol = await loop.create_datagram_endpoint(
                lambda a=address, la=lane: _UdpListener(self, a, la), sock=sock)
            table[address] = protocol  # type: ignore[assignment]

    def _steer(self, address: ListenAddress, sock: socket.socket) -> None:
        assert self.priority is not None
        try:
            steering.attach(sock, steering.steering_program(self.priority))
        except (OSError, ValueError) as error:
            self.steered.discard(address)
            log.warning("udp %s: cannot steer carriers' datagrams to a socket of their own "
                        "(%s): a flood can crowd them out of the receive queue", address, error)
            return
        self.steered.add(address)
        log.info("udp %s: datagrams from %d trusted and target networks have a socket of "
                 "their own", address, len(self.priority))

    def set_priority(self, networks: list[Network]) -> None:
        """New priority sources (a reloaded number plan's targets) for every steered listener."""
        if self.priority is None:
            return
        self.priority = networks
        for address, listener in self.udp.items():
            sock = listener.transport.get_extra_info("socket") if listener.transport else None
            if address in self.udp_other and sock is not None:
                self._steer(address, sock)

    def bound(self, transport: str) -> list[ListenAddress]:
        """The addresses actually bound (port 0 in config becomes the real port)."""
        result = []
        if transport == UDP:
            for listener in self.udp.values():
                if listener.transport is not None:
                    host, port = listener.transport.get_extra_info("sockname")[:2]
                    result.append(ListenAddress(UDP, host, port))
        else:
            for server in self.tcp_servers.values():
                for sock in server.sockets:
                    host, port = sock.getsockname()[:2]
                    result.append(ListenAddress(TCP, host, port))
        return result

    def send(self, data: bytes, peer: Peer) -> None:
        """Send now over UDP or an open TCP connection; else open one and send."""
        if peer.transport == UDP:
            listener = self._udp_for(peer.host)
            if listener is None or listener.transport is None:
                log.warning("no UDP listener to send to %s from", peer)
                return
            listener.transport.sendto(data, (peer.host, peer.port))
            return
        connection = self.connections.get((peer.host, peer.port))
        if connection is not None and connection.transport is not None:
            connection.write(data)
            return
        asyncio.get_running_loop().create_task(self._connect_and_send(data, peer))

    def _udp_for(self, host: str) -> _UdpListener | None:
        want_v6 = ":" in host
        for address, listener in self.udp.items():
            if (":" in address.host) == want_v6:
                return listener
        return None

    async def _connect_and_send(self, data: bytes, peer: Peer) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: _TcpConnection(self, inbound=False),
                                       peer.host, peer.port),
                timeout=10,
            )
        except (OSError, TimeoutError) as error:
            # The transaction layer times out the request; say why in the log.
            log.warning("tcp connect to %s failed: %s", peer, error)
            return
        connection.write(data)

    async def _apply_deadlines(self) -> None:
        interval = max(0.05, min(TCP_SWEEP_INTERVAL, self.tcp_message_timeout / 4,
                                 self.tcp_idle_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            self.sweep(time.monotonic())

    def sweep(self, now: float) -> None:
        """Close the connections past a deadline (stream_verdict), counted and logged."""
        for connection in list(self.connections.values()):
            verdict = stream_verdict(now, message_started=connection.message_started,
                                     last_activity=connection.last_activity,
                                     message_timeout=self.tcp_message_timeout,
                                     idle_timeout=self.tcp_idle_timeout)
            if verdict is None or connection.transport is None or connection.closing:
                continue
            closed = self.counters.tcp_closed
            closed[verdict] = closed.get(verdict, 0) + 1
            if verdict == CLOSED_IDLE:
                self._closure_logs[verdict].log(
                    logging.INFO, "tcp %s idle for %.0fs; closing", connection.peer,
                    now - connection.last_activity)
            else:
                assert connection.message_started is not None
                self._closure_logs[verdict].warning(
                    "tcp %s: no complete message %.0fs after its first byte "
                    "(sip.tcp_message_timeout); closing", connection.peer,
                    now - connection.message_started)
            connection.closing = True
            connection.transport.close()

    async def close(self) -> None:
        if self._idle_task is not None:
            self._idle_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._idle_task
            self._idle_task = None
        for listener in (*self.udp.values(), *self.udp_other.values()):
            if listener.transport is not None:
                listener.transport.close()
        for server in self.tcp_servers.values():
            server.close()
        for connection in list(self.connections.values()):
            if connection.transport is not None:
                connection.transport.close()
        for server in self.tcp_servers.values():
            await server.wait_closed()
        self.udp.clear()
        self.udp_other.clear()
        self.tcp_servers.clear()
