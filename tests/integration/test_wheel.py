"""The release as a media host gets it: sdist, wheel, a fresh venv, ``mediacore serve``.

The working tree is copied out (so nothing is built inside the checkout),
``python -m build`` makes the sdist and then the wheel *from the sdist*, and
the wheel goes into a fresh venv with its dependencies from the package
index, as ``pip install mediacore-*.whl`` on a media host does. The server
is then started from that venv in an empty working directory, so nothing of
the checkout (prompts, example config, sources) can stand in for what the
wheel lacks, and must answer a SIP OPTIONS with 200.

The interpreter is ``$MEDIACORE_WHEEL_PYTHON`` (default: the one running the
tests); ``scripts/wheel-check PYTHON...`` runs this file for each given one.
Building, and installing, happen once per module.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.support.server import READY, free_sip_port

pytestmark = pytest.mark.integration

PYTHON_VARIABLE = "MEDIACORE_WHEEL_PYTHON"
PROMPTS = {"beep.wav", "recording-notice.wav", "voicemail-greeting.wav"}
EXTENSIONS = ("mediacore/_codecs", "mediacore/rtp/_engine", "mediacore/rtp/_recorder")
BUILD_SOURCES = (".pyx", ".pxd", ".c")


def target_python() -> str:
    return os.environ.get(PYTHON_VARIABLE) or sys.executable


def clean_env() -> dict[str, str]:
    """The environment without anything that would import the checkout instead."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(command: list[str | Path], timeout: float, cwd: Path | None = None) -> str:
    """Run a step; on failure the test fails with the step's whole output."""
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=clean_env(), text=True,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=timeout, check=False)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(map(str, command))} exited {done.returncode}:\n{done.stdout}")
    return done.stdout


def copy_working_tree(dest: Path) -> None:
    """The checkout's files as they are now (tracked and new, not ignored ones)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=REPO_ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is gone
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path
    log: str  # everything the build printed


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    root = tmp_path_factory.mktemp("wheel-build")
    copy_working_tree(root / "src")
    run([target_python(), "-m", "venv", root / "builder"], timeout=120)
    builder = root / "builder" / "bin" / "python"
    run([builder, "-m", "pip", "install", "-q", "build"], timeout=300)
    # sdist first, then the wheel built from the unpacked sdist (build's default).
    log = run([builder, "-m", "build", "--outdir", root / "dist", root / "src"], timeout=600)
    (sdist,) = (root / "dist").glob("mediacore-*.tar.gz")
    (wheel,) = (root / "dist").glob("mediacore-*.whl")
    return Dist(sdist, wheel, log)


@pytest.fixture(scope="module")
def venv(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only the wheel (and its dependencies) installed."""
    path = tmp_path_factory.mktemp("wheel-venv") / "venv"
    run([target_python(), "-m", "venv", path], timeout=120)
    run([path / "bin" / "python", "-m", "pip", "install", "-q", dist.wheel], timeout=600)
    return path


def test_build_prints_no_deprecation_warning(dist: Dist) -> None:
    noisy = [line for line in dist.log.splitlines()
             if re.search(r"deprecat|SetuptoolsWarning|!!", line, re.IGNORECASE)]
    assert not noisy, "\n".join(noisy)


def test_sdist_holds_the_cython_sources_not_generated_c(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert {f"{module}.pyx" for module in EXTENSIONS} <= names
    assert {f"mediacore/data/announcements/{p}" for p in PROMPTS} <= names
    assert "setup.py" in names and "pyproject.toml" in names
    assert not [n for n in names if n.endswith((".c", ".so"))]


def test_wheel_has_the_prompts_and_no_build_sources(dist: Dist) -> None:
    tag = run([target_python(), "-c", "import sys; print('cp%d%d' % sys.version_info[:2])"],
              timeout=30).strip()
    assert f"-{tag}-{tag}-" in dist.wheel.name  # built for the interpreter under test
    names = set(zipfile.ZipFile(dist.wheel).namelist())
    assert not [n for n in names if n.endswith(BUILD_SOURCES)], sorted(names)
    assert {f"mediacore/data/announcements/{p}" for p in PROMPTS} <= names
    assert "mediacore/data/example.toml" in names
    for module in EXTENSIONS:
        assert [n for n in names if n.startswith(f"{module}.") and n.endswith(".so")], module
    metadata = zipfile.ZipFile(dist.wheel).read(
        next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: LicenseRef-Proprietary" in metadata


def test_the_venv_runs_the_installed_package_not_the_checkout(
        venv: Path, tmp_path: Path) -> None:
    where = run([venv / "bin" / "python", "-c",
                 "import mediacore, mediacore.rtp.player as p; "
                 "print(mediacore.__file__); print(p.default_directory())"],
                timeout=60, cwd=tmp_path).split()
    assert all(Path(w).is_relative_to(venv) for w in where), where


class WheelServer:
    """``mediacore serve`` from the venv's console script, its stderr in a file."""

    def __init__(self, venv: Path, workdir: Path, args: list[str]) -> None:
        self.log_path = workdir.parent / f"{workdir.name}.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [str(venv / "bin" / "mediacore"), "serve", *args], cwd=workdir,
                env=clean_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while READY not in self.log:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"mediacore from the wheel did not start:\n{self.log}")
            time.sleep(0.05)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(30)


@pytest.fixture
def serving(venv: Path) -> Iterator[list[WheelServer]]:
    started: list[WheelServer] = []
    yield started
    for server in started:
        server.stop()


def options(port: int) -> bytes:
    """Send one OPTIONS over UDP to 127.0.0.1:``port``; return the final response."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        local = sock.getsockname()[1]
        call_id = uuid.uuid4().hex
        sock.sendto((
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-{call_id};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag={call_id[:8]}\r\n"
            f"To: <sip:127.0.0.1:{port}>\r\nCall-ID: {call_id}@127.0.0.1\r\n"
            f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(), ("127.0.0.1", port))
        while True:
            answer = sock.recv(65535)
            if not answer.startswith(b"SIP/2.0 1"):
                return answer


def test_wheel_serves_a_config_from_an_empty_working_dir(
        venv: Path, tmp_path: Path, serving: list[WheelServer]) -> None:
    port = free_sip_port()
    etc, workdir = tmp_path / "etc", tmp_path / "work"
    etc.mkdir()
    workdir.mkdir()
    config = etc / "mediacore.toml"
    # A recorded number: its recording notice must come from the wheel's prompts.
    config.write_text(f"""
[sip]
listen = ["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"]
trusted_sources = ["127.0.0.0/8"]
[rtp]
port_range = [41000, 41099]
[storage]
dir = "{tmp_path / 'var'}"
[[number]]
number = "+31900123456"
owner = "acme"
targets = ["sip:+31201234567@127.0.0.1:5070"]
record = true
voicemail_email = "owner@example.com"
""")
    run([venv / "bin" / "mediacore", "check-config", config], timeout=60, cwd=workdir)
    server = WheelServer(venv, workdir, ["-c", str(config)])
    serving.append(server)
    server.wait_ready()
    answer = options(port)
    assert answer.startswith(b"SIP/2.0 200 "), answer
    assert server.stop() == 0, server.log
    assert not list(workdir.iterdir())  # storage went where the config says


def port_taken(port: int) -> str | None:
    """Which of UDP/TCP 127.0.0.1:``port`` something else holds, if any."""
    taken = []
    for kind, name in ((socket.SOCK_DGRAM, "udp"), (socket.SOCK_STREAM, "tcp")):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                taken.append(name)
    return "/".join(taken) or None


def test_wheel_serves_its_bundled_defaults_on_5060(
        venv: Path, tmp_path: Path, serving: list[WheelServer]) -> None:
    """No config at all: the bundled example, on 127.0.0.1:5060, storage in the working dir."""
    taken = port_taken(5060)
    if taken:
        pytest.fail(f"127.0.0.1:5060 ({taken}) is in use by another process: the bundled "
                    "example config listens there, so this test needs it free "
                    "(`ss -lunpt 'sport = :5060'` shows who holds it)")
    workdir = tmp_path / "empty"
    workdir.mkdir()
    server = WheelServer(venv, workdir, [])
    serving.append(server)
    server.wait_ready()
    answer = options(5060)
    assert answer.startswith(b"SIP/2.0 200 "), answer
    assert (workdir / "var").is_dir()  # the example's storage, under the working dir
    assert server.stop() == 0, server.log
