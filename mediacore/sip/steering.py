"""A UDP socket of their own for carriers and targets: the kernel steers by source.

Under a flood the SIP port's receive queue is where carrier traffic is lost:
when the event loop cannot read datagrams as fast as they come, the kernel
drops whatever arrives once the queue is full, a carrier's INVITE as readily
as a scanner's (measured: at 150,000 untrusted datagrams a second 6 of 168
carrier calls failed and setup took up to 3.6 s, benchmarks/RESULTS.md).
No reading order inside the process helps with what never reaches it.

So each IPv4 UDP listener is two sockets bound to the same address and port
(``SO_REUSEPORT``), and a classic BPF program attached to the group
(``SO_ATTACH_REUSEPORT_CBPF``) picks the socket by the datagram's source
address: the *priority* socket (index 0) for ``sip.trusted_sources`` and
the hosts of the number plan's targets (their responses and BYEs are part of
the carriers' calls), the *other* socket (index 1) for everything else. Each
socket has its own receive queue, so a flood fills only the other one; and
the event loop reads at most 32 datagrams from one socket before it serves
the next (libuv's UDP read loop), so the priority socket is read every
iteration however much waits on the other: untrusted work gets a budget per
loop iteration for free.

The program is built here as plain bytes (:func:`steering_program`) and
unit-tested with a small interpreter; :func:`attach` is the one system call.
IPv6 listeners keep one socket (the program reads IPv4 source addresses).
A host whose kernel refuses the program (not Linux, older than 4.5) keeps
both sockets with the kernel's hash spreading datagrams over them, which
serves everything as before, and says so once at start-up.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct
from collections.abc import Iterable

from mediacore.config import Config, Network
from mediacore.sip.uri import ParseError, parse_uri

#: Socket indexes in the reuseport group, in the order the sockets joined.
PRIORITY = 0
OTHER = 1
#: setsockopt option (asm-generic/socket.h); not in Python's socket module.
SO_ATTACH_REUSEPORT_CBPF = 51
#: Classic BPF: offsets from the network header (linux/filter.h SKF_NET_OFF).
SKF_NET_OFF = -0x100000
#: The IPv4 header's source address, from the network header.
IPV4_SOURCE = 12
#: Classic BPF opcodes used (linux/bpf_common.h).
BPF_LD_W_ABS = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS
BPF_ALU_AND_K = 0x04 | 0x50 | 0x00  # BPF_ALU | BPF_AND | BPF_K
BPF_JMP_JEQ_K = 0x05 | 0x10 | 0x00  # BPF_JMP | BPF_JEQ | BPF_K
BPF_RET_K = 0x06 | 0x00  # BPF_RET | BPF_K
#: Instructions a classic BPF program may hold (BPF_MAXINSNS), 4 per network.
MAX_NETWORKS = (4096 - 1) // 4


def instruction(code: int, jt: int, jf: int, k: int) -> bytes:
    """One ``struct sock_filter``: u16 code, u8 jt, u8 jf, u32 k (native order)."""
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def steering_program(networks: Iterable[Network]) -> bytes:
    """The classic BPF program: PRIORITY for a source in ``networks``, else OTHER.

    Per IPv4 network: load the source address, mask it, compare, return
    PRIORITY on a match (IPv6 networks are skipped: IPv4 sockets only).
    More than MAX_NETWORKS networks: ValueError (the kernel's limit).
    """
    v4 = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
    if len(v4) > MAX_NETWORKS:
        raise ValueError(f"{len(v4)} networks: a steering program holds at most "
                         f"{MAX_NETWORKS}")
    code = b""
    for network in v4:
        code += instruction(BPF_LD_W_ABS, 0, 0, SKF_NET_OFF + IPV4_SOURCE)
        code += instruction(BPF_ALU_AND_K, 0, 0, int(network.netmask))
        code += instruction(BPF_JMP_JEQ_K, 0, 1, int(network.network_address))
        code += instruction(BPF_RET_K, 0, 0, PRIORITY)
    return code + instruction(BPF_RET_K, 0, 0, OTHER)


def attach(sock: socket.socket, program: bytes) -> None:
    """Attach ``program`` to ``sock``'s reuseport group (replacing any before);
    OSError when the kernel will not."""
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def priority_sources(config: Config) -> list[Network]:
    """Who gets the priority socket: trusted_sources and every target's host.

    Targets are SIP URIs with an IP address (config.py checks it); one whose
    host is not an address (a name) is left out: it could be anyone.
    """
    networks: list[Network] = list(config.sip.trusted_sources)
    seen = set(networks)
    for number in config.numbers:
        for target in number.targets:
            try:
                host = parse_uri(target).host.strip("[]")
                network = ipaddress.ip_network(host)
            except (ParseError, ValueError):
                continue
            if not any(network.subnet_of(known) for known in seen  # type: ignore[arg-type]
                       if known.version == network.version):
                seen.add(network)
                networks.append(network)
    return networks
