"""The real peers the integration tests rely on start, answer and stop."""

from __future__ import annotations

import asyncio
import socket
import subprocess

import pytest
import redis.asyncio

from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from tests.support.sipp import run_sipp, sipp_version

pytestmark = pytest.mark.integration


def test_redis_fixture_is_a_real_server(redis_url: str) -> None:
    async def exercise() -> tuple[bytes | None, int]:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            await client.set("probe", "ok")
            await client.xadd("mediacore:cdr", {"call_id": "c1"})
            return await client.get("probe"), await client.xlen("mediacore:cdr")
        finally:
            await client.aclose()

    value, length = asyncio.run(exercise())
    assert value == b"ok"
    assert length == 1


def test_redis_can_be_stopped_and_started_on_the_same_port(
    redis_server: RedisServer, redis_url: str
) -> None:
    port = redis_server.port
    redis_server.stop()
    assert not redis_server.ping()
    redis_server.start()
    assert redis_server.port == port
    assert redis_server.ping()


def test_sipp_is_installed_and_reports_its_version(sipp_binary: str) -> None:
    assert "SIPp" in sipp_version(sipp_binary)


def test_sipp_caller_completes_a_call_against_sipp_callee(sipp_binary: str) -> None:
    """A bounded call between SIPp's built-in uac and uas proves SIPp runs here."""
    port = free_port(kind=socket.SOCK_DGRAM)
    callee = subprocess.Popen(
        [
            sipp_binary,
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "20s",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    caller_port = free_port(kind=socket.SOCK_DGRAM)
    try:
        caller = run_sipp(
            sipp_binary,
            [
                "-sn",
                "uac",
                "-i",
                "127.0.0.1",
                "-p",
                str(caller_port),
                "-m",
                "1",
                "-d",
                "100",
                f"127.0.0.1:{port}",
            ],
            timeout=20,
        )
        assert caller.returncode == 0, caller.stdout + caller.stderr
        assert callee.wait(timeout=20) == 0
    finally:
        if callee.poll() is None:
            callee.kill()
            callee.wait()
        if callee.stderr:
            callee.stderr.close()
