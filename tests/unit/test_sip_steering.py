"""The steering program (classic BPF) read back by a small interpreter, and who gets priority."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from mediacore.config import parse_config
from mediacore.sip import steering
from mediacore.sip.steering import OTHER, PRIORITY, priority_sources, steering_program


def run(program: bytes, source: str) -> int:
    """The subset of classic BPF the program uses, on an IPv4 packet from ``source``."""
    code = [struct.unpack("=HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    a, pc = 0, 0
    while True:
        op, jt, jf, k = code[pc]
        if op == steering.BPF_LD_W_ABS:
            assert k == (steering.SKF_NET_OFF + steering.IPV4_SOURCE) & 0xFFFFFFFF
            a = int(ipaddress.IPv4Address(source))
        elif op == steering.BPF_ALU_AND_K:
            a &= k
        elif op == steering.BPF_JMP_JEQ_K:
            pc += jt if a == k else jf
        elif op == steering.BPF_RET_K:
            return k
        else:
            raise AssertionError(f"opcode {op:#x}")
        pc += 1


NETWORKS = [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("198.51.100.0/24"),
            ipaddress.ip_network("2001:db8::/32")]


@pytest.mark.parametrize(("source", "socket"), [
    ("127.0.0.1", PRIORITY), ("198.51.100.7", PRIORITY), ("198.51.101.7", OTHER),
    ("127.0.0.66", OTHER), ("0.0.0.0", OTHER), ("255.255.255.255", OTHER),
])
def test_the_program_sends_trusted_sources_to_the_priority_socket(source: str,
                                                                  socket: int) -> None:
    assert run(steering_program(NETWORKS), source) == socket


def test_no_networks_sends_everything_to_the_other_socket() -> None:
    assert run(steering_program([]), "127.0.0.1") == OTHER


def test_the_program_stays_within_the_kernels_limit() -> None:
    many = [ipaddress.ip_network(f"10.{n // 256}.{n % 256}.0/24")
            for n in range(steering.MAX_NETWORKS + 1)]
    assert len(steering_program(many[:-1])) // 8 <= 4096
    with pytest.raises(ValueError):
        steering_program(many)


def test_targets_hosts_join_the_trusted_sources() -> None:
    config = parse_config({
        "sip": {"trusted_sources": ["192.0.2.0/24"]},
        "number": [{"number": "+3190012", "owner": "o",
                    "targets": ["sip:+3120@192.0.2.5:5070", "sip:+3121@203.0.113.9",
                                "sip:+3122@[2001:db8::1]:5060"]}],
    }, "t")
    assert priority_sources(config) == [ipaddress.ip_network("192.0.2.0/24"),
                                        ipaddress.ip_network("203.0.113.9/32"),
                                        ipaddress.ip_network("2001:db8::1/128")]
