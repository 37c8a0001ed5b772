"""Locating SIPp (Debian package ``sip-tester``) and running it bounded.

Every SIPp run in the tests stops by itself: a call limit (``-m``), a
global timeout (``-timeout``) and a subprocess timeout as the last resort.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SAMPLE_DIR = Path("/usr/share/sip-tester")


def find_sipp() -> str | None:
    return shutil.which("sipp") or (
        "/usr/bin/sipp" if Path("/usr/bin/sipp").is_file() else None
    )


def sipp_version(binary: str) -> str:
    """The first line SIPp prints for ``-v`` (it exits non-zero for it)."""
    out = subprocess.run(
        [binary, "-v"], capture_output=True, text=True, timeout=10, check=False
    )
    text = (out.stdout + out.stderr).strip()
    return next((line.strip() for line in text.splitlines() if "SIPp" in line), text)


def run_sipp(
    binary: str,
    args: list[str],
    *,
    timeout: float = 30.0,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run SIPp in the background mode (``-bg`` is not used: we wait for it),
    without its curses screen, bounded by ``timeout`` seconds.
    """
    command = [binary, *args, "-nostdin", "-timeout", f"{int(timeout)}s", "-timeout_error"]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout + 10,
        cwd=cwd,
        check=False,
        stdin=subprocess.DEVNULL,
    )


#: The project's SIPp scenarios (used by tests, benchmarks and the demo).
SCENARIOS = Path(__file__).resolve().parents[2] / "sipp-scenarios"


def call_with_pcap(
    binary: str,
    scenario: str,
    *,
    service: str,
    server_port: int,
    workdir: Path,
    hold_ms: int,
    local_port: int,
) -> subprocess.CompletedProcess[str]:
    """One bounded SIPp call from ``scenario`` that plays g711a.pcap after the 200.

    SIPp reads the capture from ``pcap/`` under its working directory, so
    ``workdir`` gets a link to SIPp's samples. ``hold_ms`` is the hold time
    after the audio started (SIPp's ``-d``).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / "pcap").exists():
        (workdir / "pcap").symlink_to(SAMPLE_DIR)
    return run_sipp(binary, [
        "-sf", str(SCENARIOS / scenario), "-s", service, "-i", "127.0.0.1",
        "-p", str(local_port), "-m", "1", "-d", str(hold_ms), f"127.0.0.1:{server_port}",
    ], timeout=40, cwd=workdir)


@contextmanager
def sipp_in_background(
    binary: str, args: list[str], *, cwd: Path | None = None, timeout: float = 60.0
) -> Iterator[subprocess.Popen[bytes]]:
    """A SIPp process (a callee, or a caller we do not wait for), killed on exit."""
    process = subprocess.Popen(
        [binary, *args, "-nostdin", "-timeout", f"{int(timeout)}s"],
        cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
