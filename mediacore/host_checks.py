"""Checks of a config against the host it is to run on, before any socket opens.

``config.py`` validates what the file says; these ask whether this machine
can do it: is the storage dir writable, is each address one of this host's,
does the RTP port range fit the open-file limit and stay clear of the SIP
ports. Each problem names the key, so ``mediacore check-config`` (and
``ExecStartPre=`` in the systemd unit) stops a bad deploy with a line an
operator can act on, instead of a traceback after the SIP socket opened or
a call that fails its media at 3 a.m. Nothing here writes or keeps a
socket: the address probe binds port 0 and closes at once.
"""

from __future__ import annotations

import errno
import os
import resource
import socket
from dataclasses import replace
from pathlib import Path

from mediacore.config import Config

__all__ = ["descriptors_needed", "host_problems", "open_file_limit", "raise_open_file_limit",
           "rtp_descriptors", "tcp_connection_budget"]

#: Descriptors a process needs besides its RTP sockets, recordings and TCP
#: peers: SIP listening sockets, the journal, Redis, SMTP, the metrics
#: listener and its clients, Python's own files.
OWN_DESCRIPTORS = 128
#: TCP peers a range that just fits the open-file limit still leaves room for.
MIN_TCP_CONNECTIONS = 128
#: What a process needs besides RTP: its own files and a minimum of TCP peers.
BASE_DESCRIPTORS = OWN_DESCRIPTORS + MIN_TCP_CONNECTIONS
#: Inbound TCP connections when the open-file limit is unlimited.
UNLIMITED_TCP_CONNECTIONS = 65536


def rtp_descriptors(port_range: tuple[int, int]) -> int:
    """Open files a full ``port_range`` can hold: every pair's RTP and RTCP
    socket and a recording file per call (a call holds two pairs)."""
    first, last = port_range
    pairs = len(range(first + (first & 1), last, 2))
    return 2 * pairs + pairs // 2


def descriptors_needed(port_range: tuple[int, int]) -> int:
    """Open files a full ``port_range`` can need, with the base besides RTP."""
    return rtp_descriptors(port_range) + BASE_DESCRIPTORS


def tcp_connection_budget(config: Config, open_files: int | None) -> int:
    """Inbound TCP connections the server may hold under ``open_files``.

    ``sip.tcp_max_connections`` when set, else what the limit leaves after a
    full RTP port range and the process's own files, so that idle TCP peers
    can never take the descriptors a call's media needs (at least
    MIN_TCP_CONNECTIONS whenever the range fits, which the host checks make
    sure of). ``open_files`` None: no limit.
    """
    explicit = config.sip.tcp_max_connections
    if explicit:
        return explicit
    if open_files is None:
        return UNLIMITED_TCP_CONNECTIONS
    return max(0, open_files - rtp_descriptors(config.rtp.port_range) - OWN_DESCRIPTORS)


def open_file_limit() -> int | None:
    """The soft open-file limit in force (None: unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def raise_open_file_limit() -> int:
    """Lift the soft open-file limit to the hard one (what ``LimitNOFILE=`` sets);
    returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def host_problems(config: Config) -> list[str]:
    """Everything this host cannot do of ``config``, one ``key: problem`` each."""
    found: list[str] = []
    found += _storage_problems(config.storage.dir)
    found += _address_problems(config)
    found += _port_range_problems(config)
    return found


def _storage_problems(directory: Path) -> list[str]:
    """The storage dir (or the nearest existing parent that would hold it) must be a
    writable directory on a writable filesystem, and so must what exists below it."""
    existing = directory
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        return [f"storage.dir: {existing} is not a directory"]
    checked = [existing] + [directory / sub for sub in ("recordings", "journal")
                            if (directory / sub).is_dir()]
    for path in checked:
        why = _unwritable(path)
        if why is not None:
            what = path if path == directory else (
                f"{path} (below {directory})" if path != existing
                else f"{existing}, which would hold {directory},")
            return [f"storage.dir: {what} is not writable: {why}"]
    return []


def _unwritable(path: Path) -> str | None:
    try:
        flags = os.statvfs(path).f_flag
    except OSError as error:
        return error.strerror
    if flags & os.ST_RDONLY:
        return "the filesystem is mounted read-only"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"no write permission for user id {os.geteuid()}"
    return None


def _address_problems(config: Config) -> list[str]:
    found: list[str] = []
    for index, listen in enumerate(config.sip.listen):
        kind = socket.SOCK_DGRAM if listen.transport == "udp" else socket.SOCK_STREAM
        if (why := _not_local(listen.host, kind)) is not None:
            found.append(f"sip.listen[{index}]: {listen.host} {why}")
    if (why := _not_local(config.rtp.address, socket.SOCK_DGRAM)) is not None:
        found.append(f"rtp.address: {config.rtp.address} {why}")
    if config.metrics is not None:
        host = config.metrics.listen.host
        if (why := _not_local(host, socket.SOCK_STREAM)) is not None:
            found.append(f"metrics.listen: {host} {why}")
    return found


def is_local_address(host: str) -> bool:
    """Whether ``host`` is an address of this host (a UDP socket can bind it)."""
    return _not_local(host, socket.SOCK_DGRAM) is None


def _not_local(host: str, kind: int) -> str | None:
    """Why ``host`` cannot be bound here (None: it can), found by binding port 0."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, kind) as probe:
            probe.bind((host, 0))
    except OSError as error:
        if error.errno == errno.EADDRNOTAVAIL:
            return "is not an address of this host"
        if error.errno == errno.EAFNOSUPPORT:
            return "is of an address family this host does not support"
        return f"cannot be bound: {error.strerror}"
    return None


def _port_range_problems(config: Config) -> list[str]:
    found: list[str] = []
    first, last = config.rtp.port_range
    for index, listen in enumerate(config.sip.listen):
        same_host = listen.host in (config.rtp.address, "0.0.0.0", "::") or \
            config.rtp.address in ("0.0.0.0", "::")
        if listen.transport == "udp" and same_host and first <= listen.port <= last:
            found.append(f"rtp.port_range: {first}-{last} holds sip.listen[{index}]'s port "
                         f"{listen.port}: RTP would fight SIP for it")
    needed = descriptors_needed(config.rtp.port_range)
    limit = _hard_limit()
    if limit is not None and needed > limit:
        found.append(f"rtp.port_range: {first}-{last} can need {needed} open files (2 sockets "
                     f"per port pair, a recording per call, {BASE_DESCRIPTORS} more), but the "
                     f"open-file limit is {limit}: raise it (LimitNOFILE= in the unit, "
                     "ulimit -n) or narrow the range")
    elif limit is not None and config.sip.tcp_max_connections:
        room = tcp_connection_budget(replace(config, sip=replace(
            config.sip, tcp_max_connections=0)), limit)
        if config.sip.tcp_max_connections > room:
            found.append(f"sip.tcp_max_connections: {config.sip.tcp_max_connections} "
                         f"connections do not fit the open-file limit {limit} beside "
                         f"rtp.port_range {first}-{last} ({rtp_descriptors((first, last))} "
                         f"descriptors) and {OWN_DESCRIPTORS} of the process's own: at most "
                         f"{room}, or raise the limit")
    return found


def _hard_limit() -> int | None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if hard == resource.RLIM_INFINITY else hard
