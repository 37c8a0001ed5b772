"""Shared fixtures: the real processes integration tests talk to.

A missing redis-server or sipp fails the test with what to install rather
than skipping it: a skipped integration test would hide a missing install
step in CI, where scripts/test installs both.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis_server import RedisServer, find_redis_server
from tests.support.sipp import find_sipp

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server for the whole session, on a free port."""
    binary = find_redis_server()
    if binary is None:
        pytest.fail("redis-server is not installed: run scripts/test (it installs it) "
                    "or apt-get install redis-server")
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The session's Redis, flushed before each test so tests don't see each other."""
    redis_server.start()  # a previous test may have stopped it
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture(scope="session")
def sipp_binary() -> str:
    """The path of SIPp, the real SIP peer of the integration tests."""
    binary = find_sipp()
    if binary is None:
        pytest.fail("sipp is not installed: run scripts/test (it installs it) "
                    "or apt-get install sip-tester")
    return binary


@pytest.fixture
def echo_callee(sipp_binary: str) -> Iterator[int]:
    """A SIPp target on a free port that answers one call and echoes its RTP."""
    from tests.support.server import free_sip_port
    from tests.support.sipp import sipp_in_background

    port = free_sip_port()
    with sipp_in_background(sipp_binary, ["-sn", "uas", "-i", "127.0.0.1", "-p", str(port),
                                          "-m", "1", "-rtp_echo"]):
        yield port

