"""Every RFC 4475 torture message, over UDP and over TCP, at the running server.

After each one a normal OPTIONS must still be answered: bad input gets its
answer (or is dropped) and never stops the server from serving the next call.
Over TCP the answer comes back on the connection, so its status is checked
against the table of the parser tests; over UDP answers follow the torture
message's own Via to hosts that do not exist, so only survival is checked.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest

from tests.support.server import MediacoreServer, basic_config, free_sip_port
from tests.unit.test_sip_torture import DROP, OUTCOMES, TORTURE

pytestmark = pytest.mark.integration

#: Where TCP differs from the datagram table: a stream message without
#: Content-Length cannot be framed (RFC 3261 18.3), and one whose
#: Content-Length runs past the bytes sent, or whose head never ends (the
#: baddn file has no empty line after its headers), is not complete yet.
TCP_ANSWER: dict[str, int | str | None] = {"inv2543": 400, "clerr": DROP, "baddn": DROP}


def start_server(tmp_path_factory: pytest.TempPathFactory, name: str) -> MediacoreServer:
    workdir = tmp_path_factory.mktemp(name)
    port = free_sip_port()
    process = MediacoreServer(workdir, basic_config(port, workdir / "var"), port)
    process.start()
    return process


def stop_server(process: MediacoreServer) -> None:
    assert process.stop() == 0, process.log
    assert "Traceback" not in process.log, process.log


# One server per transport: the torture messages carry fixed branches, so the
# TCP copy of a message would otherwise be a retransmission of its UDP copy,
# answered (correctly) along the UDP transaction's Via.


@pytest.fixture(scope="module")
def udp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediacoreServer]:
    process = start_server(tmp_path_factory, "torture-udp")
    yield process
    stop_server(process)


@pytest.fixture(scope="module")
def tcp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediacoreServer]:
    process = start_server(tmp_path_factory, "torture-tcp")
    yield process
    stop_server(process)


def options(transport: str, port: int) -> bytes:
    return (
        f"OPTIONS sip:ping@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.3:{port};rport;branch=z9hG4bK{uuid.uuid4().hex}\r\n"
        f"From: <sip:monitor@127.0.0.3>;tag=m1\r\nTo: <sip:ping@127.0.0.1>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def read_statuses(conn: socket.socket, seconds: float = 0.5) -> list[int]:
    """Status codes of everything the server writes back until it goes quiet or closes."""
    conn.settimeout(seconds)
    data = b""
    try:
        while chunk := conn.recv(65535):
            data += chunk
    except TimeoutError:
        pass
    return [int(line.split()[1]) for line in data.split(b"\r\n") if line.startswith(b"SIP/2.0 ")]


def assert_still_answers_options(server: MediacoreServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.3", 0))
        sock.settimeout(5)
        sock.sendto(options("UDP", sock.getsockname()[1]), ("127.0.0.1", server.sip_port))
        while True:
            answer = sock.recv(65535)
            if b"CSeq: 1 OPTIONS" in answer:
                break
    assert answer.startswith(b"SIP/2.0 200 ")


@pytest.mark.parametrize("name", sorted(OUTCOMES))
def test_torture_over_udp(udp_server: MediacoreServer, name: str) -> None:
    server = udp_server
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.3", 0))
        sock.sendto((TORTURE / f"{name}.dat").read_bytes(), ("127.0.0.1", server.sip_port))
    assert_still_answers_options(server)


@pytest.mark.parametrize("name", sorted(OUTCOMES))
def test_torture_over_tcp(tcp_server: MediacoreServer, name: str) -> None:
    server = tcp_server
    data = (TORTURE / f"{name}.dat").read_bytes()
    expected = TCP_ANSWER.get(name, OUTCOMES[name].answer)
    with socket.create_connection(("127.0.0.1", server.sip_port), timeout=5) as conn:
        conn.sendall(data)
        statuses = read_statuses(conn)
    if expected == DROP or data.startswith(b"SIP/2.0 "):  # responses are never answered
        assert statuses == []
    elif isinstance(expected, int):
        assert statuses[:1] == [expected]
    else:
        # Processed as its method: answered, and never with a server error.
        assert statuses and all(status < 500 for status in statuses)
    with socket.create_connection(("127.0.0.1", server.sip_port), timeout=5) as conn:
        conn.sendall(options("TCP", conn.getsockname()[1]))
        assert read_statuses(conn)[:1] == [200]
    assert_still_answers_options(server)
