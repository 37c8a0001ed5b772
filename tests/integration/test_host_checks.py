"""``check-config`` (and ``serve``, before any socket opens) refuse what this host
cannot do: an unwritable storage dir, addresses that are not this host's, an
RTP port range that holds the SIP port or needs more files than the limit.

The real command on real files, filesystems and addresses: a read-only
tmpfs, a file where a directory should be, 192.0.2.1 (TEST-NET-1, never an
address of this host), and a lowered open-file limit.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from mediacore.host_checks import OWN_DESCRIPTORS, descriptors_needed, rtp_descriptors

pytestmark = pytest.mark.integration


def check(tmp_path: Path, text: str, *, nofile: int | None = None,
          command: str = "check-config") -> subprocess.CompletedProcess[str]:
    path = tmp_path / "m.toml"
    path.write_text(text)

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    args = [path] if command == "check-config" else ["-c", str(path)]
    return subprocess.run([sys.executable, "-m", "mediacore", command, *map(str, args)],
                          capture_output=True, text=True, timeout=30, preexec_fn=limit)


def test_a_good_config_passes(tmp_path: Path) -> None:
    result = check(tmp_path, f'[storage]\ndir = "{tmp_path / "var"}"\n')
    assert result.returncode == 0, result.stderr


@pytest.fixture
def read_only_dir(tmp_path: Path):
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs",
                              str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_storage_on_a_read_only_filesystem_is_refused(tmp_path: Path,
                                                      read_only_dir: Path) -> None:
    for storage in (read_only_dir, read_only_dir / "var"):  # existing, or to be made
        result = check(tmp_path, f'[storage]\ndir = "{storage}"\n')
        assert result.returncode == 1
        assert "storage.dir: " in result.stderr
        assert "not writable: the filesystem is mounted read-only" in result.stderr


def test_storage_below_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    result = check(tmp_path, f'[storage]\ndir = "{tmp_path / "afile" / "var"}"\n')
    assert result.returncode == 1
    assert f"storage.dir: {tmp_path / 'afile'} is not a directory" in result.stderr


def test_addresses_that_are_not_this_hosts_are_named(tmp_path: Path) -> None:
    result = check(tmp_path, f"""
[sip]
listen = ["udp:192.0.2.1:5060"]
[rtp]
address = "192.0.2.1"
[metrics]
listen = "192.0.2.1:9091"
[storage]
dir = "{tmp_path / 'var'}"
""")
    assert result.returncode == 1
    for key in ("sip.listen[0]", "rtp.address", "metrics.listen"):
        assert f"{key}: 192.0.2.1 is not an address of this host" in result.stderr


def test_a_port_range_that_holds_the_sip_port_is_refused(tmp_path: Path) -> None:
    result = check(tmp_path, f"""
[sip]
listen = ["udp:127.0.0.1:25060", "tcp:127.0.0.1:25060"]
[storage]
dir = "{tmp_path / 'var'}"
""")
    assert result.returncode == 1
    assert ("rtp.port_range: 20000-29999 holds sip.listen[0]'s port 25060" in result.stderr)
    assert "sip.listen[1]" not in result.stderr  # TCP does not share UDP's ports


def test_a_port_range_beyond_the_open_file_limit_is_refused(tmp_path: Path) -> None:
    config = f'[storage]\ndir = "{tmp_path / "var"}"\n'  # the default range, 5,000 pairs
    needed = descriptors_needed((20000, 29999))
    for command in ("check-config", "serve"):
        result = check(tmp_path, config, nofile=4096, command=command)
        assert result.returncode == 1, result.stderr
        assert (f"rtp.port_range: 20000-29999 can need {needed} open files" in result.stderr)
        assert "the open-file limit is 4096" in result.stderr
        assert "ready:" not in result.stderr  # serve stopped before any socket opened
    assert check(tmp_path, config, nofile=needed).returncode == 0


def test_tcp_max_connections_beyond_the_open_file_limit_is_refused(tmp_path: Path) -> None:
    """The TCP limit must leave the RTP range its descriptors: a bigger one names its key."""
    config = f"""
[sip]
tcp_max_connections = 5000
[rtp]
port_range = [40000, 40999]
[storage]
dir = "{tmp_path / 'var'}"
"""
    room = 4096 - rtp_descriptors((40000, 40999)) - OWN_DESCRIPTORS
    result = check(tmp_path, config, nofile=4096)
    assert result.returncode == 1
    assert ("sip.tcp_max_connections: 5000 connections do not fit the open-file limit 4096"
            in result.stderr)
    assert f"at most {room}" in result.stderr
    assert check(tmp_path, config.replace("5000", str(room)), nofile=4096).returncode == 0
