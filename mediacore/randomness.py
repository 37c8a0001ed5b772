"""Cryptographically random tokens and numbers, drawn from the OS in 4 KiB helpings.

RFC 3261 19.3 wants tags and Call-IDs cryptographically random, RFC 3550
wants SSRCs and initial sequence numbers and timestamps random, and our own
call ids must not be guessable. ``secrets`` and ``os.urandom`` make one
getrandom syscall per value: one ``os.urandom`` per tag was 5% of the CPU of
answering an OPTIONS, and the dozen random values of every call (tags,
branches, Call-IDs, SDP session ids, our call id) were still 2% of the
server's CPU under call load (benchmarks/RESULTS.md). So the bytes come from
the OS in bulk and are handed out once each; the quality is the kernel's.

One pool per process; the server does not fork, and nothing here is shared
between threads (the event loop's thread is the only caller).
"""

from __future__ import annotations

import os

__all__ = ["RandomPool", "random_bits", "random_hex"]


class RandomPool:
    """Bytes from ``os.urandom``, fetched ``size`` at a time, each used once."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._pool = b""
        self._offset = 0

    def take(self, nbytes: int) -> bytes:
        if self._offset + nbytes > len(self._pool):
            self._pool = os.urandom(max(self._size, nbytes))
            self._offset = 0
        start = self._offset
        self._offset += nbytes
        return self._pool[start:self._offset]

    def hex(self, nbytes: int) -> str:
        """``nbytes`` random bytes as ``2 * nbytes`` lowercase hex digits."""
        return self.take(nbytes).hex()

    def bits(self, nbits: int) -> int:
        """A uniform integer in ``[0, 2**nbits)``."""
        value = int.from_bytes(self.take((nbits + 7) // 8), "big")
        return value >> (-nbits % 8)


_pool = RandomPool()
random_hex = _pool.hex
random_bits = _pool.bits
