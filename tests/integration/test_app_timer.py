"""The server's one timer, on uvloop, when a deadline is already past.

Under load a transaction's deadline can be behind the loop's clock by the
time the timer is armed; uvloop then hands back a plain Handle (no
``when()``), which once made every dispatch raise.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import uvloop

from mediacore.app import Server
from mediacore.config import Config, StorageConfig
from mediacore.sip import message as sip
from mediacore.sip.transport import Peer
from tests.support.messages import CARRIER_INVITE

pytestmark = pytest.mark.integration


def test_a_past_deadline_is_armed_twice_and_fires(tmp_path: Path) -> None:
    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        server = Server(Config(source="t", storage=StorageConfig(dir=tmp_path)))
        request = sip.parse(CARRIER_INVITE.replace(b"INVITE sip:", b"OPTIONS sip:", 1)
                            .replace(b"102 INVITE", b"102 OPTIONS"))
        assert isinstance(request, sip.Request)
        # A request sent ten seconds ago (on the loop's clock): its Timer E is past due.
        server.endpoint.send_request(request, Peer("udp", "127.0.0.1", 9), loop.time() - 10)
        server._arm_timer()
        server._arm_timer()  # the armed timer is now uvloop's plain Handle
        fired = 0
        original = server._on_timer

        def counting() -> None:
            nonlocal fired
            fired += 1
            original()

        server._on_timer = counting  # type: ignore[method-assign]
        server._timer = None
        server._arm_timer()
        await asyncio.sleep(0.05)
        server.engine.close()
        return fired

    assert uvloop.run(scenario()) == 1
