"""What this host's IPv4 networks are, for the media policy: their broadcast addresses.

A session description that aims our relay at a subnet's broadcast address
(``192.0.2.255`` on a /24) would have every host of that subnet receive a
call's audio. Which addresses those are only the host knows: Linux lists
every local route, broadcasts included (secondary addresses too), in
``/proc/net/fib_trie``. Read once at start; where the file is missing (not
Linux, a restricted container) the set is empty and only 255.255.255.255
is refused, which the policy does on its own.
"""

from __future__ import annotations

import contextlib
import ipaddress
from pathlib import Path

__all__ = ["broadcasts_from_fib_trie", "host_broadcasts"]

FIB_TRIE = Path("/proc/net/fib_trie")


def broadcasts_from_fib_trie(text: str) -> frozenset[str]:
    """The addresses ``/proc/net/fib_trie`` marks BROADCAST (each leaf ``|-- A.B.C.D``
    is followed by its routes, one of which says ``/32 link BROADCAST``)."""
    found: set[str] = set()
    leaf: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|-- "):
            leaf = stripped[4:].strip()
        elif leaf is not None and stripped.startswith("/") and "BROADCAST" in stripped.split():
            with contextlib.suppress(ValueError):  # an IPv6 leaf, if a kernel lists one
                found.add(str(ipaddress.IPv4Address(leaf)))
    return frozenset(found)


def host_broadcasts(path: Path = FIB_TRIE) -> frozenset[str]:
    """This host's subnet broadcast addresses, or none when they cannot be read."""
    try:
        return broadcasts_from_fib_trie(path.read_text())
    except OSError:
        return frozenset()
