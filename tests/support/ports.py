"""Free local ports for the real processes the integration tests start."""

from __future__ import annotations

import socket


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port the kernel just handed out, so nothing else is listening on it.

    There is a window between closing our socket and the child binding it;
    on a test machine that is the accepted trade for not hard-coding ports.
    """
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
