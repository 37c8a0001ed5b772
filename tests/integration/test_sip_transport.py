"""SipTransports on real loopback sockets: TCP connection reuse and UDP delivery."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from mediacore.config import ListenAddress
from mediacore.sip.transport import (
    TCP,
    UDP,
    UDP_RECEIVE_BUFFER,
    Peer,
    SipTransports,
    widen_receive_buffer,
)

pytestmark = pytest.mark.integration

MESSAGE = b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nContent-Length: 2\r\n\r\nhi"


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_tcp_requests_to_one_peer_share_one_connection() -> None:
    async def scenario() -> tuple[int, bytes]:
        accepted: list[asyncio.StreamReader] = []

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(reader)

        peer_server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        port = peer_server.sockets[0].getsockname()[1]
        transports = SipTransports(lambda data, peer: None)
        try:
            transports.send(MESSAGE, Peer(TCP, "127.0.0.1", port))
            await wait_for(lambda: len(transports.connections) == 1)
            transports.send(MESSAGE, Peer(TCP, "127.0.0.1", port))
            await wait_for(lambda: len(accepted) == 1)
            received = await asyncio.wait_for(accepted[0].readexactly(2 * len(MESSAGE)), 5)
            return len(accepted), received
        finally:
            await transports.close()
            peer_server.close()
            await peer_server.wait_closed()

    connections, received = asyncio.run(scenario())
    assert connections == 1
    assert received == MESSAGE * 2


def test_a_peer_that_connected_to_us_is_answered_on_its_connection() -> None:
    async def scenario() -> tuple[Peer, bytes]:
        delivered: list[tuple[bytes, Peer]] = []
        transports = SipTransports(lambda data, peer: delivered.append((data, peer)))
        await transports.listen([ListenAddress(TCP, "127.0.0.1", 0)])
        (bound,) = transports.bound(TCP)
        reader, writer = await asyncio.open_connection("127.0.0.1", bound.port)
        try:
            writer.write(MESSAGE)
            await wait_for(lambda: len(delivered) == 1)
            data, peer = delivered[0]
            assert data == MESSAGE
            transports.send(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", peer)
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            return peer, answer
        finally:
            writer.close()
            await transports.close()

    peer, answer = asyncio.run(scenario())
    assert peer.transport == TCP
    assert answer.startswith(b"SIP/2.0 200 OK")


def test_udp_datagrams_are_delivered_and_sent_from_the_listening_socket() -> None:
    async def scenario() -> tuple[bytes, tuple[str, int], int]:
        delivered: list[tuple[bytes, Peer]] = []
        transports = SipTransports(lambda data, peer: delivered.append((data, peer)))
        await transports.listen([ListenAddress(UDP, "127.0.0.1", 0)])
        (bound,) = transports.bound(UDP)
        loop = asyncio.get_running_loop()
        got: asyncio.Future[tuple[bytes, tuple[str, int]]] = loop.create_future()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                if not got.done():
                    got.set_result((data, addr))

        client, _ = await loop.create_datagram_endpoint(Client, local_addr=("127.0.0.1", 0))
        try:
            client.sendto(MESSAGE, ("127.0.0.1", bound.port))
            await wait_for(lambda: len(delivered) == 1)
            transports.send(b"reply", delivered[0][1])
            data, source = await asyncio.wait_for(got, 5)
            return data, source, bound.port
        finally:
            client.close()
            await transports.close()

    data, source, port = asyncio.run(scenario())
    assert data == b"reply"
    assert source == ("127.0.0.1", port)  # symmetric: from the port we listen on


def test_the_udp_listener_asks_for_a_receive_buffer_for_bursts() -> None:
    """The kernel grants min(request, net.core.rmem_max), reported doubled."""
    rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())

    async def scenario() -> int:
        transports = SipTransports(lambda data, peer: None)
        await transports.listen([ListenAddress(UDP, "127.0.0.1", 0)])
        try:
            (listener,) = transports.udp.values()
            sock = listener.transport.get_extra_info("socket")
            return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        finally:
            await transports.close()

    granted = asyncio.run(scenario())
    assert granted == 2 * min(UDP_RECEIVE_BUFFER, rmem_max)


def test_a_receive_buffer_capped_by_the_kernel_is_reported(
        caplog: pytest.LogCaptureFixture) -> None:
    class CappedSocket:
        """What setsockopt/getsockopt look like under the default rmem_max."""

        def setsockopt(self, level: int, option: int, value: int) -> None:
            self.requested = value

        def getsockopt(self, level: int, option: int) -> int:
            return 2 * 212_992

    with caplog.at_level("WARNING"):
        granted = widen_receive_buffer(CappedSocket(), "udp:127.0.0.1:5060")  # type: ignore[arg-type]
    assert granted == 425_984
    assert "receive buffer only 416 KiB (raise net.core.rmem_max" in caplog.text
