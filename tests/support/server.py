"""A real ``mediacore serve`` process on free loopback ports, for integration tests.

The server is started exactly as an operator starts it (the console script
with ``-c FILE``), its log is collected, and it is stopped with SIGTERM so
that shutdown is exercised too.
"""

from __future__ import annotations

import os
import random
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

READY = "ready:"


#: Where SIP ports for tests come from: below the kernel's ephemeral range
#: (32768-60999), where the tests' RTP ranges (20000-29999 and random bases
#: in 40000-59999) never are. A kernel-chosen port could land inside a test's
#: RTP range, and the host checks rightly refuse that config.
SIP_PORTS = (30000, 32767)


def free_sip_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP, since SIP listens on both."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(*SIP_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            try:
                udp.bind((host, port))
                tcp.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no port in {SIP_PORTS} free for both UDP and TCP")


class MediacoreServer:
    """One server process; ``log`` is everything it wrote to stderr so far."""

    def __init__(self, workdir: Path, config_text: str, sip_port: int, *,
                 log_level: str | None = "debug", nofile: int | None = None) -> None:
        """``log_level`` None: no ``--log-level``, so ``[log] level`` (or info) holds.
        ``nofile``: the process's open-file limit (soft and hard), as LimitNOFILE= sets it."""
        self.workdir = workdir
        self.sip_port = sip_port
        self.log_level = log_level
        self.nofile = nofile
        self.config_path = workdir / "mediacore.toml"
        self.config_path.write_text(config_text)
        self.process: subprocess.Popen[str] | None = None
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def log(self) -> str:
        return "".join(self._lines)

    def start(self, timeout: float = 20.0) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        level = [] if self.log_level is None else ["--log-level", self.log_level]
        self.process = subprocess.Popen(
            # Tests follow every step of a call: debug unless told otherwise.
            [sys.executable, "-m", "mediacore", "serve", "-c", str(self.config_path), *level],
            cwd=self.workdir, env=env, text=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=self._limit_files if self.nofile is not None else None,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while READY not in self.log:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mediacore did not start:\n{self.log}")
            time.sleep(0.02)

    def _limit_files(self) -> None:
        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def _read(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self._lines.append(line)

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until ``text`` appears ``count`` times in the log (it arrives
        through a pipe and a reader thread, a moment after the server acted)."""
        deadline = time.monotonic() + timeout
        while self.log.count(text) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} x{count} not in the log:\n{self.log}")
            time.sleep(0.01)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        return self.process.returncode


def basic_config(sip_port: int, storage: Path, *, trusted: str = "127.0.0.0/8") -> str:
    return f"""
[sip]
listen = ["udp:127.0.0.1:{sip_port}", "tcp:127.0.0.1:{sip_port}"]
advertised_address = "127.0.0.1"
trusted_sources = ["{trusted}"]

[storage]
dir = "{storage}"

[[number]]
number = "+31900123456"
owner = "acme"
targets = ["sip:+31201234567@127.0.0.1:5070"]
"""
