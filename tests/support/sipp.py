"""Locating SIPp (Debian package ``sip-tester``) and running it bounded.

Every SIPp run in the tests stops by itself: a call limit (``-m``), a
global timeout (``-timeout``) and a subprocess timeout as the last resort.
"""

from __future__ import annotations

import shutil
import subprocess
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
