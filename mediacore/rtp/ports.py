"""RTP/RTCP port pairs from the configured range, reused least recently released first.

Every call leg gets an even RTP port and the odd port above it for RTCP
(RFC 3550 section 11: "RTP SHOULD use an even destination port number and
the corresponding RTCP stream SHOULD use the next higher (odd) port"), both
bound before the port numbers go into SDP, so what we advertise is already
ours.

Two rules keep calls apart:

- A port another process holds (its bind fails) is skipped, not fought
  over; it is tried again ``quarantine`` seconds later, by which time it
  may be free.
- Pairs are handed out least recently released first: never-used pairs,
  then released ones in the order they were released. Late packets of an
  ended call, or a peer that still sends to the old port after a
  re-INVITE, would otherwise land in the next call on that port, so a port
  idles as long as the range allows. There is no fixed quarantine that
  refuses calls while pairs sit unused: a pair is refused only when every
  pair is in use (by our calls or another process). A pair handed out less
  than ``quarantine`` seconds after its release is counted
  (``reused_early``), so an operator sees a range that is too small for the
  call rate before strict RTP source checks have to matter.

The pool is sans-IO apart from the ``bind`` callable, which the tests
replace (with a fake clock) to check quarantine, skipping and exhaustion
without opening sockets.
"""

from __future__ import annotations

import errno
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["PortPair", "PortPool", "PortsExhausted", "bind_udp"]

#: Opens and binds a non-blocking UDP socket on (address, port); raises
#: OSError when the port cannot be had.
Binder = Callable[[str, int], socket.socket]
Clock = Callable[[], float]

DEFAULT_QUARANTINE = 30.0


class PortsExhausted(Exception):
    """No pair can be had now: every pair is in use by a call or held by another process.

    The call layer answers the INVITE with 503 Service Unavailable: the
    condition is temporary (calls end), so a short Retry-After is honest.
    """

    def __init__(self, first: int, last: int, in_use: int, held_elsewhere: int) -> None:
        self.first = first
        self.last = last
        self.in_use = in_use
        self.held_elsewhere = held_elsewhere
        super().__init__(
            f"no free RTP port pair in {first}-{last}: {in_use} in use by calls, "
            f"{held_elsewhere} held by other processes"
        )


@dataclass(eq=False)
class PortPair:
    """One leg's bound sockets: RTP on an even port, RTCP on the next odd one."""

    address: str
    rtp_port: int
    rtp: socket.socket
    rtcp: socket.socket
    released: bool = field(default=False, repr=False)

    @property
    def rtcp_port(self) -> int:
        return self.rtp_port + 1


def bind_udp(address: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to (address, port).

    No SO_REUSEADDR: on Linux it would let two UDP sockets share a port, and
    the point of binding is to own it.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


class PortPool:
    """Hands out bound RTP/RTCP pairs from ``port_range`` and takes them back.

    ``port_range`` is inclusive, as in the config (``[first, last]``); a pair
    needs both its even port and the odd one above it inside the range.
    Not thread-safe: it belongs to the event loop that runs the call layer.
    """

    def __init__(
        self,
        port_range: tuple[int, int] | list[int],
        *,
        quarantine: float = DEFAULT_QUARANTINE,
        clock: Clock = time.monotonic,
        bind: Binder = bind_udp,
    ) -> None:
        first, last = int(port_range[0]), int(port_range[1])
        if not 1 <= first <= last <= 65535:
            raise ValueError(f"port_range {first}-{last}: need 1 <= first <= last <= 65535")
        if quarantine < 0:
            raise ValueError(f"quarantine {quarantine}: must not be negative")
        self.first = first
        self.last = last
        self.quarantine = quarantine
        self._clock = clock
        self._bind = bind
        start = first + (first & 1)
        # Free pairs, least recently released at the head: the next to go.
        self._free: deque[int] = deque(range(start, last, 2))
        if not self._free:
            raise ValueError(f"port_range {first}-{last} holds no even/odd pair")
        self.capacity = len(self._free)
        self._released_at: dict[int, float] = {}
        # (time the port may be tried again, rtp port) for ports another
        # process held when we tried them, in the order they were found.
        self._held: deque[tuple[float, int]] = deque()
        self._in_use: set[int] = set()
        #: Pairs handed out less than ``quarantine`` seconds after their release.
        self.reused_early = 0

    @property
    def in_use(self) -> int:
        """Pairs held by our calls."""
        return len(self._in_use)

    @property
    def held_elsewhere(self) -> int:
        """Pairs another process held when we last tried them."""
        return len(self._held)

    @property
    def available(self) -> int:
        """Pairs that can be handed out now (not in use, not held elsewhere)."""
        self._retry_held(self._clock())
        return len(self._free)

    @property
    def cooling(self) -> int:
        """Free pairs released less than ``quarantine`` seconds ago (reused only if need be)."""
        since = self._clock() - self.quarantine
        count = 0
        for port in reversed(self._free):  # released in order: the newest at the tail
            released = self._released_at.get(port)
            if released is None or released <= since:
                break
            count += 1
        return count

    def allocate(self, address: str) -> PortPair:
        """Bind and return the free pair released longest ago, on ``address``.

        Raises PortsExhausted when every pair is in use or held by another
        process (those are tried again, once, before giving up).
        """
        now = self._clock()
        self._retry_held(now)
        pair = self._first_bindable(address, now)
        if pair is None and self._held:
            # Nothing of ours is free: another process may have let go of a
            # port before its retry time came.
            self._free.extend(port for _, port in self._held)
            self._held.clear()
            pair = self._first_bindable(address, now)
        if pair is None:
            raise PortsExhausted(self.first, self.last, len(self._in_use), len(self._held))
        released = self._released_at.pop(pair.rtp_port, None)
        if released is not None and now - released < self.quarantine:
            self.reused_early += 1
        self._in_use.add(pair.rtp_port)
        return pair

    def release(self, pair: PortPair) -> None:
        """Close the pair's sockets and put its ports at the back of the queue.

        Releasing twice is a no-op rather than an error, so that cleanup
        paths (a failed call set-up, then the call's own teardown) need not
        coordinate.
        """
        if pair.released:
            return
        pair.released = True
        pair.rtp.close()
        pair.rtcp.close()
        if pair.rtp_port in self._in_use:
            self._in_use.discard(pair.rtp_port)
            self._released_at[pair.rtp_port] = self._clock()
            self._free.append(pair.rtp_port)

    def _first_bindable(self, address: str, now: float) -> PortPair | None:
        while self._free:
            port = self._free.popleft()
            try:
                pair = self._try_bind(address, port)
            except OSError:
                self._free.appendleft(port)  # not the port's fault
                raise
            if pair is not None:
                return pair
            # Held by someone else: try it again once a quarantine has passed.
            self._released_at.pop(port, None)
            self._held.append((now + self.quarantine, port))
        return None

    def _retry_held(self, now: float) -> None:
        while self._held and self._held[0][0] <= now:
            self._free.append(self._held.popleft()[1])

    def _try_bind(self, address: str, port: int) -> PortPair | None:
        try:
            rtp = self._bind(address, port)
        except OSError as exc:
            _expect_port_taken(exc)
            return None
        try:
            rtcp = self._bind(address, port + 1)
        except OSError as exc:
            rtp.close()
            _expect_port_taken(exc)
            return None
        return PortPair(address, port, rtp, rtcp)


def _expect_port_taken(exc: OSError) -> None:
    """Let "port in use" (and "not allowed") through; anything else is a config error.

    A bad address (EADDRNOTAVAIL: not an address of this host) would fail
    for every port; skipping would turn a config mistake into a misleading
    "exhausted" after thousands of tries.
    """
    if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
        raise exc
