"""Recording throughput: WavWriter against soundfile and the stdlib wave module.

Each round writes one minute of stereo 8 kHz 16-bit audio, packet by packet,
to a fresh file and closes it; the figure that matters is seconds of audio
written per second of wall time (``extra_info["audio_s_per_s"]``). At 1,000
recorded calls a core must write 1,000 audio-seconds per second on top of
relaying, so the writer's share of a core is 1000 / audio_s_per_s.

    .venv/bin/pytest benchmarks/bench_wav.py --benchmark-only

Packets: 160 frames is 20 ms (what a call delivers per leg and tick);
320 frames (1,280 bytes) is the size the issue asked for, i.e. 40 ms.
"""

from __future__ import annotations

import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mediacore.wav import WavWriter

RATE = 8000
SECONDS = 60


def _packets(frames: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    audio = rng.integers(-3000, 3000, size=(RATE * SECONDS, 2), dtype=np.int16)
    return [audio[i : i + frames] for i in range(0, len(audio), frames)]


def mediacore_wav(path: Path, packets: list[bytes]) -> None:
    with WavWriter(path, sample_rate=RATE, channels=2) as w:
        for p in packets:
            w.write(p)


def mediacore_wav_fsync(path: Path, packets: list[bytes]) -> None:
    with WavWriter(path, sample_rate=RATE, channels=2, fsync=True) as w:
        for p in packets:
            w.write(p)


def soundfile_buffer_write(path: Path, packets: list[bytes]) -> None:
    # libsndfile makes a write(2) per call, and leaves data size 0 until close.
    with sf.SoundFile(path, "w", RATE, 2, "PCM_16", format="WAV") as f:
        for p in packets:
            f.buffer_write(p, dtype="int16")


def soundfile_write_ndarray(path: Path, packets: list[np.ndarray]) -> None:
    with sf.SoundFile(path, "w", RATE, 2, "PCM_16", format="WAV") as f:
        for p in packets:
            f.write(p)


def wave_writeframes(path: Path, packets: list[bytes]) -> None:
    # Patches the header after every call: crash-safe, but seek+write+seek.
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(RATE)
        for p in packets:
            w.writeframes(p)


def wave_writeframesraw(path: Path, packets: list[bytes]) -> None:
    # The header counts the first packet until close: a crash leaves 20 ms.
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(RATE)
        for p in packets:
            w.writeframesraw(p)


WRITERS: dict[str, tuple[Callable[[Path, list], None], bool]] = {
    # name: (function, takes numpy arrays rather than bytes)
    "mediacore.wav": (mediacore_wav, False),
    "mediacore.wav fsync": (mediacore_wav_fsync, False),
    "soundfile buffer_write": (soundfile_buffer_write, False),
    "soundfile write(ndarray)": (soundfile_write_ndarray, True),
    "wave writeframes": (wave_writeframes, False),
    "wave writeframesraw": (wave_writeframesraw, False),
}


@pytest.mark.parametrize("frames", [160, 320], ids=lambda n: f"{n}frames")
@pytest.mark.parametrize("writer", list(WRITERS))
def test_write_one_minute(benchmark, tmp_path: Path, writer: str, frames: int) -> None:  # type: ignore[no-untyped-def]
    fn, wants_arrays = WRITERS[writer]
    arrays = _packets(frames)
    packets = arrays if wants_arrays else [a.tobytes() for a in arrays]
    path = tmp_path / "rec.wav"

    def fresh() -> None:
        # Unlinked outside the timing: truncating a cached file is not the
        # writer's cost.
        path.unlink(missing_ok=True)

    benchmark.group = f"one minute of stereo audio in {frames}-frame packets"
    benchmark.pedantic(fn, args=(path, packets), setup=fresh, rounds=30, warmup_rounds=2)
    mean = benchmark.stats.stats.mean
    benchmark.extra_info["audio_s_per_s"] = round(SECONDS / mean)
    benchmark.extra_info["ns_per_packet"] = round(mean / len(packets) * 1e9)

    data, rate = sf.read(path, dtype="int16")
    assert rate == RATE
    np.testing.assert_array_equal(data, np.concatenate(arrays))
