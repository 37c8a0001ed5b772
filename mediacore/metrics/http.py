"""A tiny HTTP/1.x listener for /metrics, /healthz and /readyz, on the server's loop.

It faces the network (a scraper, a load balancer's health check, anyone who
can reach the port), so it is strict and bounded rather than complete:

* one request per connection: the head is read, answered, and the
  connection closed (``Connection: close``); a body is never read;
* the head must arrive within :data:`HEAD_TIMEOUT` seconds (408) and fit in
  :data:`MAX_HEAD` bytes (431); at most :data:`MAX_CONNECTIONS` connections
  are open at once (more are answered 503 and closed);
* only GET and HEAD (405 with ``Allow`` otherwise), only the routes the
  handler knows (404), and anything that is not an HTTP/1.0 or 1.1 request
  head is 400 (505 for another HTTP version).

Parsing is a pure function (:func:`parse_head`) so that every hostile case
is unit-tested without a socket; :class:`HttpListener` is the asyncio edge.
A handler that raises is answered 500 and logged; nothing here can take the
server down.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("mediacore.metrics")

#: Largest request head accepted (request line and headers), bytes.
MAX_HEAD = 8192
#: Seconds a client has to send its whole request head.
HEAD_TIMEOUT = 5.0
#: Connections open at once; a scraper and a health checker need a few.
MAX_CONNECTIONS = 64

ALLOWED = ("GET", "HEAD")

_REASONS = {
    200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"/[\x21-\x7e]*")
_VERSION = re.compile(rb"HTTP/(\d)\.(\d)")
_HEADER = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*")


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()

    def serialize(self, *, head_only: bool = False) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Unknown')}",
                 f"Content-Type: {self.content_type}",
                 f"Content-Length: {len(self.body)}",
                 "Cache-Control: no-store",
                 "Connection: close",
                 *(f"{name}: {value}" for name, value in self.headers)]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
        return head if head_only else head + self.body


def text(status: int, body: str) -> Response:
    return Response(status, body.encode("utf-8"))


def head_end(buffer: bytes | bytearray) -> int:
    """Where the head ends (the index after its blank line), or -1 if not yet."""
    crlf = buffer.find(b"\r\n\r\n")
    lf = buffer.find(b"\n\n")
    ends = [i + 4 for i in (crlf,) if i >= 0] + [i + 2 for i in (lf,) if i >= 0]
    return min(ends) if ends else -1


def parse_head(head: bytes) -> Request | Response:
    """A request head (up to and including its blank line) as a Request, or the
    error Response to send instead. Header values are not needed and only
    checked for shape."""
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    while lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        return text(400, "empty request\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        return text(400, "not an HTTP request line\n")
    method_bytes, target, version_bytes = parts
    version = _VERSION.fullmatch(version_bytes)
    if version is None:
        return text(400, "not an HTTP version\n")
    if version.group(1) != b"1":
        return text(505, "HTTP/1.0 and HTTP/1.1 only\n")
    for line in lines[1:]:
        if not _HEADER.fullmatch(line):
            return text(400, "malformed header line\n")
    method = method_bytes.decode("ascii")
    if method not in ALLOWED:
        return Response(405, b"GET or HEAD only\n", headers=(("Allow", ", ".join(ALLOWED)),))
    if not _TARGET.fullmatch(target):
        return text(400, "the target must be a path\n")
    path = target.decode("ascii").split("?", 1)[0]
    return Request(method, path)


Handler = Callable[[Request], Response]


class _Connection(asyncio.Protocol):
    def __init__(self, listener: HttpListener) -> None:
        self._listener = listener
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = transport  # type: ignore[assignment]
        listener = self._listener
        listener.connections.add(self)
        if len(listener.connections) > listener.max_connections:
            self._answer(text(503, "too many connections\n"))
            return
        self._timer = asyncio.get_running_loop().call_later(
            listener.head_timeout, self._answer, text(408, "request head too slow\n"))

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return
        self._buffer += data
        end = head_end(self._buffer)
        if end < 0:
            if len(self._buffer) > self._listener.max_head:
                self._answer(text(431, "request head too large\n"))
            return
        if end > self._listener.max_head:
            self._answer(text(431, "request head too large\n"))
            return
        parsed = parse_head(bytes(self._buffer[:end]))
        if isinstance(parsed, Response):
            self._answer(parsed)
            return
        try:
            response = self._listener.handler(parsed)
        except Exception:
            log.exception("metrics: %s %s failed", parsed.method, parsed.path)
            response = text(500, "internal error\n")
        self._answer(response, head_only=parsed.method == "HEAD")

    def eof_received(self) -> bool:
        if not self._answered:
            self._answer(text(400, "incomplete request head\n"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._answered = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._listener.connections.discard(self)
        self._buffer.clear()

    def _answer(self, response: Response, *, head_only: bool = False) -> None:
        if self._answered or self._transport is None:
            return
        self._answered = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._buffer.clear()
        transport = self._transport
        if transport.is_closing():
            return
        transport.pause_reading()
        transport.write(response.serialize(head_only=head_only))
        transport.close()  # after the write buffer drains


class HttpListener:
    """Serves ``handler`` on one TCP address; :meth:`start` raises OSError if it cannot bind."""

    def __init__(self, handler: Handler, *, max_head: int = MAX_HEAD,
                 head_timeout: float = HEAD_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.handler = handler
        self.max_head = max_head
        self.head_timeout = head_timeout
        self.max_connections = max_connections
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port,
                                                reuse_address=True)

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port): port 0 in the config becomes the real one."""
        assert self._server is not None and self._server.sockets
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            if connection._transport is not None:
                connection._transport.abort()
        await self._server.wait_closed()
        self._server = None
