"""A recording whose process is SIGKILLed opens up to its last sync.

DESIGN.md: "A crash leaves a file that a standard reader opens up to its last
second." A real child process writes a known signal and is killed with the
file open; the file is then read, unrepaired, by libsndfile (soundfile) and
by sox, and finally repaired.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mediacore.wav import repair

pytestmark = pytest.mark.integration

CHILD = Path(__file__).with_name("wav_writer_child.py")
REPO = Path(__file__).resolve().parents[2]
HEADER = 44
KILL_AFTER = 3 * 8000 + 1  # frames synced: past three seconds
TIMEOUT = 30.0


def _load_child() -> object:
    spec = importlib.util.spec_from_file_location("wav_writer_child", CHILD)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


expected_signal = _load_child().signal  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Killed:
    scenario: str
    path: Path
    synced: int  # the last header sync the child reported
    on_file: int  # whole frames in the file when it died


def _lines(stream: object) -> queue.Queue[str | None]:
    """Read the child's stdout on a thread, so every wait can have a timeout."""
    q: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:  # type: ignore[attr-defined]
            q.put(line.strip())
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def _next(q: queue.Queue[str | None]) -> str:
    try:
        line = q.get(timeout=TIMEOUT)
    except queue.Empty:
        pytest.fail(f"child wrote nothing for {TIMEOUT}s")
    if line is None:
        pytest.fail("child exited before it was killed")
    return line


# name: (extra child arguments, whether to kill at the first sync past 3 s)
SCENARIOS = {
    # The real thing: killed while writing, wherever the kill happens to land.
    "while-writing": ([], True),
    # Stopped half a second past a sync: at 8 kHz stereo the writer has not
    # handed those frames to the OS yet, so they are lost and the file must
    # hold exactly the synced seconds.
    "mid-second": (["--stop-after", str(KILL_AFTER + 4077)], False),
    # With a long sync interval the writer hands 64 KiB chunks to the OS
    # between syncs: the file then holds audio its header does not count,
    # which only repair() recovers.
    "long-sync-interval": (["--sync-interval", "4", "--stop-after", "50000"], False),
}


@pytest.fixture(scope="module", params=list(SCENARIOS))
def killed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Killed:
    """Run the child, SIGKILL it, and return what it left behind."""
    extra, kill_at_sync = SCENARIOS[request.param]
    path = tmp_path_factory.mktemp("crash") / "rec.wav"
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(path), *extra],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": python_path},
        cwd=REPO,
    )
    try:
        lines = _lines(proc.stdout)
        synced = 0
        while True:
            line = _next(lines)
            if line.startswith("stopped"):
                written, synced = map(int, line.split()[1:])
                assert written > synced
                break
            synced = int(line)
            if kill_at_sync and synced >= KILL_AFTER:
                break
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=TIMEOUT) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=TIMEOUT)
        if proc.stdout:
            proc.stdout.close()
    killed = Killed(request.param, path, synced, (path.stat().st_size - HEADER) // 4)
    if request.param == "mid-second":
        assert killed.synced == killed.on_file == 3 * 8000
    if request.param == "long-sync-interval":
        assert killed.on_file > killed.synced == 4 * 8000
    return killed


@pytest.fixture
def sox() -> Iterator[str]:
    exe = shutil.which("sox")
    if exe is None:
        pytest.skip("sox is not installed (Debian package 'sox'); CI installs it")
    yield exe


def test_soundfile_opens_it_unrepaired(killed: Killed) -> None:
    info = sf.info(killed.path)
    assert (info.samplerate, info.channels, info.subtype) == (8000, 2, "PCM_16")
    assert killed.synced <= info.frames <= killed.on_file
    if killed.scenario != "while-writing":
        assert info.frames == killed.synced  # exactly: nothing happened after it
    data, _ = sf.read(killed.path, dtype="int16")
    np.testing.assert_array_equal(data, expected_signal(0, info.frames))


def test_sox_opens_it_unrepaired(killed: Killed, sox: str) -> None:
    frames = sf.info(killed.path).frames
    assert frames >= killed.synced
    info = subprocess.run(
        [sox, "--i", str(killed.path)], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert info.returncode == 0, info.stderr
    assert re.search(rf"= {frames} samples", info.stdout), info.stdout

    stat = subprocess.run(
        [sox, str(killed.path), "-n", "stat"], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert stat.returncode == 0, stat.stderr
    assert re.search(rf"Samples read:\s+{2 * frames}\b", stat.stderr), stat.stderr

    raw = subprocess.run(
        [sox, str(killed.path), "-t", "raw", "-"], capture_output=True, timeout=TIMEOUT
    )
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout == expected_signal(0, frames).tobytes()


def test_repair_recovers_every_whole_frame(killed: Killed, tmp_path: Path) -> None:
    path = tmp_path / "rec.wav"
    shutil.copyfile(killed.path, path)
    size = path.stat().st_size
    assert (size - HEADER) % 4 == 0  # the writer only ever hands whole frames to the OS

    result = repair(path)
    assert result.frames == killed.on_file >= killed.synced
    data, rate = sf.read(path, dtype="int16")
    assert rate == 8000
    np.testing.assert_array_equal(data, expected_signal(0, killed.on_file))
    assert repair(path).changed is False
