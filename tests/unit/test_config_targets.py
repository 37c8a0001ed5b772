"""Targets that are this server itself are config errors naming ``number[N].targets[M]``.

config.py finds what the file alone shows (a listen address, the advertised
address at a listen port, loopback behind a 0.0.0.0 listener); the checks
that ``check-config`` and ``serve`` run before any socket opens add this
host's other addresses behind a wildcard listener.
"""

from __future__ import annotations

import socket
import tomllib

import pytest

from mediacore import checks
from mediacore.config import ConfigError, parse_config


def config_problems(listen: str, targets: list[str], *, advertised: str = "127.0.0.1"
                    ) -> list[str]:
    text = f"""
[sip]
listen = [{listen}]
advertised_address = "{advertised}"
[[number]]
number = "+31900123456"
owner = "acme"
targets = [{", ".join(f'"{t}"' for t in targets)}]
"""
    try:
        parse_config(tomllib.loads(text), "t.toml")
    except ConfigError as error:
        return error.problems
    return []


def test_a_target_at_our_listen_address_is_refused_naming_the_key() -> None:
    found = config_problems('"udp:127.0.0.1:5060"', [
        "sip:+31201234567@127.0.0.1:5070", "sip:+31900123456@127.0.0.1:5060"])
    assert len(found) == 1
    assert found[0].startswith("number[0].targets[1]: sip:+31900123456@127.0.0.1:5060 is this "
                               "server (sip.listen udp:127.0.0.1:5060)")


def test_the_default_port_counts_as_5060() -> None:
    (problem,) = config_problems('"udp:127.0.0.1:5060"', ["sip:+31900123456@127.0.0.1"])
    assert problem.startswith("number[0].targets[0]: ")


def test_the_transport_must_match_for_a_loop() -> None:
    """TCP to a port where only UDP listens is a failing target, not this server."""
    assert config_problems('"udp:127.0.0.1:5060"',
                           ["sip:+31201234567@127.0.0.1:5060;transport=tcp"]) == []
    (problem,) = config_problems('"udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"',
                                 ["sip:+31201234567@127.0.0.1:5060;transport=tcp"])
    assert "sip.listen tcp:127.0.0.1:5060" in problem
    (problem,) = config_problems('"tcp:127.0.0.1:5060"', ["sips:+31201234567@127.0.0.1:5060"])
    assert problem.startswith("number[0].targets[0]: ")


def test_the_advertised_address_at_a_listen_port_is_us() -> None:
    """Behind NAT: we listen on a private address and are reached at the public one."""
    (problem,) = config_problems('"udp:10.0.0.5:5060"', ["sip:+31201234567@192.0.2.10:5060"],
                                 advertised="192.0.2.10")
    assert "sip.advertised_address 192.0.2.10" in problem
    assert config_problems('"udp:10.0.0.5:5060"', ["sip:+31201234567@192.0.2.10:5070"],
                           advertised="192.0.2.10") == []


def test_a_wildcard_listener_takes_every_loopback_address() -> None:
    for target in ("sip:+31201234567@127.0.0.9:5060", "sip:+31201234567@127.0.0.1:5060"):
        (problem,) = config_problems('"udp:0.0.0.0:5060"', [target])
        assert "address of this host" in problem or "sip.listen" in problem
    (problem,) = config_problems('"udp:[::]:5060"', ["sip:+31201234567@[::1]:5060"],
                                 advertised="::1")
    assert problem.startswith("number[0].targets[0]: ")
    # Another port, or another family, is not us.
    assert config_problems('"udp:0.0.0.0:5060"', ["sip:+31201234567@127.0.0.9:5070"]) == []
    assert config_problems('"udp:[::]:5060"', ["sip:+31201234567@127.0.0.9:5060"],
                           advertised="::1") == []


def test_an_ipv6_target_is_compared_as_an_address() -> None:
    (problem,) = config_problems('"udp:[::1]:5060"', ["sip:+31201234567@[0:0::1]:5060"],
                                 advertised="::1")
    assert problem.startswith("number[0].targets[0]: ")


@pytest.mark.parametrize(("target", "why"), [
    ("sip:+31201234567@pbx.example.net:5070", "must be an IP address"),
    ("sip:+31201234567@0.0.0.0:5070", "not an address a call can be sent to"),
    ("sip:+31201234567@224.0.0.1:5070", "not an address a call can be sent to"),
    ("sip:+31201234567@255.255.255.255:5070", "not an address a call can be sent to"),
    ("sip:+31201234567@[bad:5070", "not a SIP URI"),
])
def test_a_target_must_be_a_unicast_ip_address(target: str, why: str) -> None:
    (problem,) = config_problems('"udp:127.0.0.1:5060"', [target])
    assert problem.startswith("number[0].targets[0]: ") and why in problem, problem


def primary_address() -> str:
    """A non-loopback address of this host (the source of a route to a test network)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            pytest.skip("this host has no IPv4 route besides loopback")
        address = probe.getsockname()[0]
    if address.startswith("127."):
        pytest.skip("this host has no IPv4 address besides loopback")
    return address


def test_behind_a_wildcard_listener_the_hosts_own_addresses_are_found_by_the_checks() -> None:
    address = primary_address()
    text = f"""
[sip]
listen = ["udp:0.0.0.0:5060"]
advertised_address = "127.0.0.1"
[[number]]
number = "+31900123456"
owner = "acme"
targets = ["sip:+31201234567@{address}:5070", "sip:+31201234567@{address}:5060"]
"""
    config = parse_config(tomllib.loads(text), "t.toml")  # the file alone cannot tell
    found = [p for p in checks.problems(config) if p.startswith("number[")]
    assert len(found) == 1, found
    assert found[0].startswith(f"number[0].targets[1]: sip:+31201234567@{address}:5060 is this "
                               "server"), found
