"""The shipped deploy/systemd/ files, checked by systemd's own tools.

``systemd-analyze verify`` loads the unit as systemd would, and refuses an
ExecStart= binary that does not exist: so it verifies a copy whose
/opt/mediacore/venv path is rewritten to the mediacore console script of the
venv running the tests (a real executable). Its exit status ignores unknown
keys and bad values (they are "ignoring" warnings), so any output at all
fails the test; a misspelt copy shows the check would notice.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mediacore.config import SipConfig
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

UNITS = REPO_ROOT / "deploy" / "systemd"
INSTALLED = "/opt/mediacore/venv/bin/mediacore"


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run scripts/system-deps test "
                    "(it installs systemd) or apt-get install systemd")
    return found


def run(command: list[str | Path], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], cwd=cwd, text=True, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=60, check=False)


def unit_copy(dest: Path, text: str | None = None) -> Path:
    """The template unit with its binary pointed at this venv's ``mediacore``."""
    original = (UNITS / "mediacore@.service").read_text()
    assert INSTALLED in original
    mediacore = Path(sys.executable).parent / "mediacore"
    assert mediacore.is_file(), f"{mediacore}: the venv has no mediacore console script"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "mediacore@.service").write_text(
        (original if text is None else text).replace(INSTALLED, str(mediacore)))
    return dest / "mediacore@core1.service"


def settings(text: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit (all sections), each key's values in order."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"([A-Za-z]+)=(.*)", line.strip())
        if match:
            found.setdefault(match[1], []).append(match[2])
    return found


def test_systemd_analyze_verify_accepts_the_template_unit(tmp_path: Path) -> None:
    instance = unit_copy(tmp_path / "units")
    done = run([tool("systemd-analyze"), "verify", instance], cwd=instance.parent)
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), (
        done.stdout + done.stderr)


def test_verify_would_notice_a_misspelt_key_or_value(tmp_path: Path) -> None:
    text = (UNITS / "mediacore@.service").read_text()
    for name, broken, said in (
            ("key", text.replace("ProtectSystem=", "ProtectSytem="), "Unknown key"),
            ("value", text.replace("ProtectSystem=strict", "ProtectSystem=tight"), "tight")):
        instance = unit_copy(tmp_path / name, broken)
        done = run([tool("systemd-analyze"), "verify", instance], cwd=instance.parent)
        assert said in done.stdout + done.stderr, name


def test_hardening_exposure_stays_low(tmp_path: Path) -> None:
    """systemd's own score of the sandbox, 0 (locked down) to 10 (none): 1.7 when written.

    ``--threshold`` is on a 0-100 scale: 20 fails the test above 2.0.
    """
    instance = unit_copy(tmp_path / "units")
    done = run([tool("systemd-analyze"), "security", "--offline=yes", "--threshold=20",
                "--no-pager", instance.name], cwd=instance.parent)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_unit_keeps_its_promises() -> None:
    """What the README and the server rely on, read from the unit itself."""
    unit = settings((UNITS / "mediacore@.service").read_text())
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["ExecStartPre"] == [f"{INSTALLED} check-config /etc/mediacore/%i.toml"]
    assert unit["ExecStart"] == [f"{INSTALLED} serve -c /etc/mediacore/%i.toml"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["KillSignal"] == ["SIGTERM"]
    # Drain, the BYEs, and the wait for voicemails to reach the spool (app.py).
    stop = int(unit["TimeoutStopSec"][0].removesuffix("s"))
    assert stop > SipConfig().drain_timeout + 0.5 + 30
    assert int(unit["WatchdogSec"][0].removesuffix("s")) > 0
    assert unit["User"] == ["mediacore"] and unit["CapabilityBoundingSet"] == [""]
    assert unit["ProtectSystem"] == ["strict"] and unit["StateDirectory"] == ["mediacore"]
    assert unit["ReadWritePaths"] == ["/var/lib/mediacore"]
    # The README's example: a 10,000-port RTP range per process.
    assert int(unit["LimitNOFILE"][0]) >= 10_000 * 1.5 + 256


def test_sysusers_file_creates_the_user(tmp_path: Path) -> None:
    conf = UNITS / "sysusers.d" / "mediacore.conf"
    done = run([tool("systemd-sysusers"), "--dry-run", conf])
    assert done.returncode == 0, done.stderr
    assert "Failed" not in done.stderr and "ignoring" not in done.stderr, done.stderr
    broken = tmp_path / "broken.conf"
    broken.write_text("u mediacore notanid\n")
    assert run([tool("systemd-sysusers"), "--dry-run", broken]).returncode != 0


def test_journald_drop_in_uses_only_keys_journald_has() -> None:
    """journald has no verify: its keys are those its shipped journald.conf lists."""
    shipped = Path("/etc/systemd/journald.conf")
    if not shipped.is_file():
        pytest.fail(f"{shipped} is missing: apt-get install systemd")
    known = set(re.findall(r"^#?([A-Za-z]+)=", shipped.read_text(), re.MULTILINE))
    drop_in = (UNITS / "journald.conf.d" / "mediacore.conf").read_text()
    assert re.findall(r"^\[(\w+)\]", drop_in, re.MULTILINE) == ["Journal"]
    ours = settings(drop_in)
    assert set(ours) <= known, set(ours) - known
    assert {"SystemMaxUse", "SystemKeepFree", "MaxRetentionSec"} <= set(ours)
