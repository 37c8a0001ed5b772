"""The TCP deadlines and connection limits, decided from plain numbers."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from mediacore.config import parse_config
from mediacore.host_checks import (
    MIN_TCP_CONNECTIONS,
    OWN_DESCRIPTORS,
    descriptors_needed,
    rtp_descriptors,
    tcp_connection_budget,
)
from mediacore.sip.transport import (
    CLOSED_IDLE,
    CLOSED_MESSAGE_TIMEOUT,
    Peer,
    SipTransports,
    stream_verdict,
)


def verdict(now: float, started: float | None, last: float = 0.0) -> str | None:
    return stream_verdict(now, message_started=started, last_activity=last,
                          message_timeout=10.0, idle_timeout=300.0)


def test_a_message_must_be_complete_within_its_deadline() -> None:
    assert verdict(9.9, 0.0) is None
    assert verdict(10.1, 0.0) == CLOSED_MESSAGE_TIMEOUT
    # A trickle keeps the idle clock at bay, never the message deadline.
    assert verdict(12.0, 0.0, last=11.0) == CLOSED_MESSAGE_TIMEOUT


def test_a_connection_with_nothing_under_way_is_closed_when_idle() -> None:
    assert verdict(299.0, None) is None
    assert verdict(301.0, None) == CLOSED_IDLE


def connection(host: str, port: int) -> SimpleNamespace:
    return SimpleNamespace(peer=Peer("tcp", host, port))


def test_per_source_and_global_limits(caplog: pytest.LogCaptureFixture) -> None:
    transports = SipTransports(lambda data, peer: None, tcp_connections_per_source=2,
                               tcp_max_connections=3)
    with caplog.at_level(logging.WARNING, "mediacore.sip.transport"):
        a1, a2, a3 = (connection("10.0.0.1", p) for p in (1, 2, 3))
        assert transports.admit(a1) and transports.admit(a2)  # type: ignore[arg-type]
        assert not transports.admit(a3)  # type: ignore[arg-type]
        b1, b2 = connection("10.0.0.2", 1), connection("10.0.0.2", 2)
        assert transports.admit(b1)  # type: ignore[arg-type]
        assert not transports.admit(b2)  # type: ignore[arg-type]  # 3 open in all
        transports.release(a1)  # type: ignore[arg-type]
        assert transports.admit(b2)  # type: ignore[arg-type]
        for port in range(10, 20):
            transports.admit(connection("10.0.0.3", port))  # type: ignore[arg-type]
    assert transports.counters.tcp_refused == {"per-source": 1, "global": 11}
    assert transports.inbound == 3
    assert transports.inbound_by_source == {"10.0.0.1": 1, "10.0.0.2": 2}
    # Logged once a minute per limit, not once per connection.
    assert len(caplog.records) == 2


def test_the_tcp_budget_is_what_the_open_file_limit_leaves_after_rtp() -> None:
    config = parse_config({"rtp": {"port_range": [20000, 29999]}}, "t")
    rtp = rtp_descriptors((20000, 29999))
    assert rtp == 5000 * 2 + 2500
    assert tcp_connection_budget(config, 20000) == 20000 - rtp - OWN_DESCRIPTORS
    # A range that just fits the limit still leaves the minimum for TCP peers.
    needed = descriptors_needed((20000, 29999))
    assert tcp_connection_budget(config, needed) == MIN_TCP_CONNECTIONS
    assert tcp_connection_budget(config, 100) == 0
    assert tcp_connection_budget(config, None) > 0
    explicit = parse_config({"sip": {"tcp_max_connections": 50}}, "t")
    assert tcp_connection_budget(explicit, 20000) == 50
