"""Prompts and their playback: loading, resampling, RTP packets and pacing.

No sockets and no real sleeps: packets are checked as bytes, and ``play`` is
driven by a fake clock whose ``sleep`` advances time (optionally oversleeping,
as a busy event loop does).
"""

from __future__ import annotations

import asyncio
import math
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from mediacore import _codecs
from mediacore.rtp import player as pl
from mediacore.rtp.player import Prompt, PromptLibrary, PromptPlayer, load_prompt, play, resample

DECODE = {"ulaw": _codecs.ulaw_decode, "alaw": _codecs.alaw_decode}
STOCK = ["recording-notice", "voicemail-greeting", "beep"]


def prompt_of(samples: np.ndarray | list[int], name: str = "test") -> Prompt:
    return Prompt(name=name, path="<memory>", pcm=np.asarray(samples, dtype="<i2").tobytes())


def tone(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def level_db(y: np.ndarray) -> float:
    """Peak level of a steady tone, from its RMS, in dB relative to amplitude 1."""
    y = y[800:-800]  # away from the filter's edges
    return 20 * math.log10(math.sqrt(2 * float(np.mean(y**2))) + 1e-15)


def peak_hz(y: np.ndarray, rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.argmax(spectrum)) * rate / len(y)


# -- resampling -----------------------------------------------------------------


@pytest.mark.parametrize("rate", [11025, 16000, 22050, 32000, 44100, 48000])
def test_resampling_keeps_the_telephone_band(rate: int) -> None:
    for freq in (300, 1000, 3000, 3300):
        y = resample(tone(freq, rate, 0.5), rate)
        assert abs(level_db(y) - 20 * math.log10(0.5)) < 0.05, freq
        assert abs(peak_hz(y) - freq) <= 4


@pytest.mark.parametrize("rate", [11025, 16000, 22050, 32000, 44100, 48000])
def test_resampling_suppresses_what_would_alias(rate: int) -> None:
    """A tone above 4 kHz would fold back into the band (4.5 kHz -> 3.5 kHz): it must not."""
    for freq, floor_db in ((3900, -40), (4200, -85), (4500, -85), (5000, -85), (7000, -85)):
        if freq < rate / 2:
            y = resample(tone(freq, rate, 0.5, amplitude=1.0), rate)
            assert level_db(y) < floor_db, freq


def test_resampling_length_and_timing() -> None:
    # ceil(n * 8000 / rate) samples, and no delay: the filter is centred.
    assert len(resample(np.zeros(1001), 44100)) == math.ceil(1001 * 8000 / 44100)
    assert len(resample(np.zeros(3), 16000)) == 2
    x = np.zeros(48000)
    x[24000] = 1.0  # an impulse at 0.5 s
    assert int(np.argmax(resample(x, 48000))) == 4000
    up = resample(tone(1000, 6000, 0.5), 6000)  # upsampling works too
    assert len(up) == 4000 and abs(peak_hz(up) - 1000) <= 4
    assert np.array_equal(resample(np.arange(5.0), 8000), np.arange(5.0))
    with pytest.raises(ValueError):
        resample(np.zeros(4), 0)


# -- loading ---------------------------------------------------------------------


def test_an_8k_mono_16bit_file_loads_bit_exactly(tmp_path: Path) -> None:
    pcm = np.random.default_rng(1).integers(-32768, 32768, 8000, dtype=np.int16)
    sf.write(tmp_path / "p.wav", pcm, 8000, subtype="PCM_16")
    p = load_prompt(tmp_path / "p.wav")
    assert np.array_equal(p.samples(), pcm)
    assert (p.name, p.frames, p.duration) == ("p", 8000, 1.0)


def test_channels_are_averaged(tmp_path: Path) -> None:
    left = np.array([1000, -2000, 32767, -32768, 3], dtype=np.int16)
    right = np.array([3000, 2000, 32767, -32768, 0], dtype=np.int16)
    sf.write(tmp_path / "s.wav", np.stack([left, right], axis=1), 8000, subtype="PCM_16")
    assert load_prompt(tmp_path / "s.wav").samples().tolist() == [2000, 0, 32767, -32768, 2]


@pytest.mark.parametrize(
    ("ext", "subtype"), [("flac", "PCM_16"), ("ogg", "VORBIS"), ("wav", "FLOAT")]
)
def test_other_formats_and_rates_are_converted(tmp_path: Path, ext: str, subtype: str) -> None:
    stereo = np.stack([tone(1000, 44100, 1.0), tone(1000, 44100, 1.0)], axis=1)
    sf.write(tmp_path / f"t.{ext}", stereo, 44100, subtype=subtype)
    p = load_prompt(tmp_path / f"t.{ext}")
    assert p.frames == 8000
    y = p.samples() / 32768
    assert abs(peak_hz(y) - 1000) <= 4
    assert abs(level_db(y) - 20 * math.log10(0.5)) < 0.3  # Vorbis is lossy


def test_conversion_happens_once_and_again_after_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "c.wav"
    sf.write(path, np.zeros(80, dtype=np.int16), 8000)
    first = load_prompt(path)
    assert load_prompt(path) is first
    sf.write(path, np.ones(160, dtype=np.int16), 8000)
    os.utime(path, ns=(1, os.stat(path).st_mtime_ns + 1_000_000_000))
    again = load_prompt(path)
    assert again is not first and again.frames == 160


def test_a_file_that_is_not_audio_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    with pytest.raises(ValueError, match=r"bad\.wav"):
        load_prompt(tmp_path / "bad.wav")


def test_library_finds_prompts_by_name(tmp_path: Path) -> None:
    sf.write(tmp_path / "hello.flac", np.zeros(100, dtype=np.int16), 8000)
    (tmp_path / "hello.txt").write_text("a note, not a prompt")
    sf.write(tmp_path / "twice.wav", np.zeros(10, dtype=np.int16), 8000)
    sf.write(tmp_path / "twice.ogg", np.zeros(10), 8000)
    lib = PromptLibrary(tmp_path)
    assert lib.get("hello").frames == 100
    assert lib.get("hello.flac") is lib.get("hello")  # one file, one conversion
    with pytest.raises(ValueError, match="ambiguous"):
        lib.get("twice")
    with pytest.raises(FileNotFoundError, match="nothere"):
        lib.get("nothere")
    for bad in ("../etc/passwd", "a/b", "", ".hidden", "x*"):
        with pytest.raises(ValueError, match="prompt name"):
            lib.get(bad)


def test_stock_prompts_are_small_8k_mono_16bit_and_not_silent() -> None:
    lib = PromptLibrary()
    shipped = Path(__file__).resolve().parents[2] / "mediacore" / "data" / "announcements"
    assert lib.directory == shipped
    for name, prompt in zip(STOCK, lib.preload(STOCK), strict=True):
        info = sf.info(prompt.path)
        assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16"), name
        assert 0.2 < prompt.duration < 6, name
        peak = int(np.abs(prompt.samples().astype(np.int32)).max())
        assert 8000 < peak < 32767, name  # about -6 dBFS, not clipped


def test_prompts_of_a_zipped_package_are_copied_out_and_play(tmp_path: Path) -> None:
    """A package imported from a zip has no directory to glob: its prompts are extracted."""
    archive = tmp_path / "pkg.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in STOCK:
            z.write(pl.default_directory() / f"{name}.wav",
                    "/".join(("mediacore", *pl.SHIPPED, f"{name}.wav")))
    extracted = pl._extract(zipfile.Path(archive, "mediacore/").joinpath(*pl.SHIPPED))
    assert extracted != pl.default_directory()
    assert sorted(p.name for p in extracted.iterdir()) == sorted(f"{n}.wav" for n in STOCK)
    lib = PromptLibrary(extracted)
    assert lib.get("beep").pcm == PromptLibrary().get("beep").pcm


def test_beep_is_a_1khz_tone_of_300ms() -> None:
    beep = PromptLibrary().get("beep")
    assert beep.frames == 2400
    assert abs(peak_hz(beep.samples() / 32768) - 1000) <= 4


# -- packets ---------------------------------------------------------------------


def parse(packet: bytes) -> tuple[int, int, int, int, int, int, bytes]:
    """(version/flags byte, marker, pt, seq, ts, ssrc, payload)."""
    b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", packet[:12])
    return b0, b1 >> 7, b1 & 0x7F, seq, ts, ssrc, packet[12:]


@pytest.mark.parametrize("codec", ["ulaw", "alaw"])
@pytest.mark.parametrize("frames", [0, 1, 159, 160, 161, 1000])
@pytest.mark.parametrize("ptime", [10, 20, 30])
def test_packets_headers_count_and_padding(codec: str, frames: int, ptime: int) -> None:
    rng = np.random.default_rng(frames)
    samples = rng.integers(-20000, 20000, frames, dtype=np.int16)
    player = PromptPlayer(
        prompt_of(samples),
        codec,
        8 if codec == "alaw" else 0,  # type: ignore[arg-type]
        0xDEADBEEF,
        65534,
        0xFFFFFF00,
        ptime_ms=ptime,
    )
    spp = 8 * ptime
    packets = list(player)
    assert len(packets) == player.count == math.ceil(frames / spp)
    decoded = []
    for i, pkt in enumerate(packets):
        b0, marker, pt, seq, ts, ssrc, payload = parse(pkt)
        assert b0 == 0x80  # version 2, no padding, no extension, no CSRC
        assert marker == (i == 0)
        assert pt == (8 if codec == "alaw" else 0)
        assert seq == (65534 + i) & 0xFFFF
        assert ts == (0xFFFFFF00 + i * spp) & 0xFFFFFFFF
        assert ssrc == 0xDEADBEEF
        assert len(payload) == spp
        decoded.append(np.frombuffer(DECODE[codec](payload), dtype="<i2"))
    if not packets:
        return
    got = np.concatenate(decoded).astype(np.int32)
    x = samples.astype(np.int32)
    # G.711 keeps about 4 bits of mantissa: error within 1/16 of the value, plus a step
    assert (np.abs(got[:frames] - x) <= np.abs(x) // 16 + 16).all()
    silence = np.frombuffer(DECODE[codec](pl._ENCODERS[codec](bytes(2))), dtype="<i2")[0]
    assert (got[frames:] == silence).all()  # the last packet is padded with silence
    assert (player.seq, player.timestamp, player.sent) == (
        (65534 + len(packets)) & 0xFFFF,
        (0xFFFFFF00 + len(packets) * spp) & 0xFFFFFFFF,
        len(packets),
    )


def test_payload_is_exactly_the_encoded_prompt() -> None:
    beep = PromptLibrary().get("beep")
    packets = list(PromptPlayer(beep, "ulaw", 0, 1, 0, 0))
    assert b"".join(p[12:] for p in packets) == _codecs.ulaw_encode(beep.pcm)
    assert beep.encoded("ulaw") is beep.encoded("ulaw")  # encoded once


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.integers(1, 50))
def test_sequence_and_timestamp_wrap(seq: int, ts: int, n: int) -> None:
    player = PromptPlayer(prompt_of(np.zeros(160 * n)), "ulaw", 0, 5, seq, ts)
    heads = [parse(p) for p in player]
    assert [h[3] for h in heads] == [(seq + i) & 0xFFFF for i in range(n)]
    assert [h[4] for h in heads] == [(ts + 160 * i) & 0xFFFFFFFF for i in range(n)]


@pytest.mark.parametrize("kwargs", [
    {"payload_type": 128}, {"ssrc": -1}, {"ptime_ms": 0}, {"ptime_ms": 2.5}, {"codec": "g722"},
])  # fmt: skip
def test_bad_player_arguments(kwargs: dict) -> None:
    args = {
        "prompt": prompt_of([1, 2]),
        "codec": "ulaw",
        "payload_type": 0,
        "ssrc": 1,
        "start_seq": 0,
        "start_ts": 0,
    } | kwargs
    with pytest.raises((ValueError, KeyError)):
        PromptPlayer(**args)


# -- pacing ------------------------------------------------------------------------


class FakeClock:
    """Time that moves only when slept on; each sleep may overshoot (a busy loop)."""

    def __init__(self, start: float = 1000.0, oversleep: list[float] | None = None) -> None:
        self.now = start
        self.oversleep = list(oversleep or [])
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds + (self.oversleep.pop(0) if self.oversleep else 0.0)
        await asyncio.sleep(0)  # a real suspension point, for cancellation


def run_play(player: PromptPlayer, clock: FakeClock, **kw: object) -> tuple[int, list[float]]:
    sent: list[float] = []

    def send(packet: bytes) -> None:
        sent.append(clock())

    n = asyncio.run(play(player, send, clock=clock, sleep=clock.sleep, **kw))  # type: ignore[arg-type]
    return n, sent


def test_packets_go_out_on_an_absolute_schedule() -> None:
    """Every sleep overshoots by 5 ms; the lateness does not add up over 100 packets."""
    clock = FakeClock(oversleep=[0.005] * 1000)
    player = PromptPlayer(prompt_of(np.zeros(160 * 100)), "ulaw", 0, 1, 0, 0)
    n, sent = run_play(player, clock)
    assert n == 100
    for i, t in enumerate(sent):
        due = 1000.0 + i * 0.020
        assert due - 1e-9 <= t <= due + 0.005 + 1e-9, i
    assert clock.now >= 1000.0 + 100 * 0.020  # returns after the last packet's slot


def test_overdue_packets_are_sent_at_once_then_the_schedule_resumes() -> None:
    clock = FakeClock(oversleep=[0.0, 0.0, 0.095])  # the third sleep is 95 ms late
    player = PromptPlayer(prompt_of(np.zeros(160 * 12)), "alaw", 8, 1, 0, 0)
    n, sent = run_play(player, clock)
    assert n == 12
    assert sent[3] == pytest.approx(1000.155)
    assert sent[4:8] == [sent[3]] * 4  # 4-7 were due by then: a burst, no sleeping
    assert sent[8] == pytest.approx(1000.160)
    assert sent[11] == pytest.approx(1000.220)


def test_back_to_back_prompts_share_one_schedule() -> None:
    clock = FakeClock()
    notice = PromptPlayer(prompt_of(np.zeros(800)), "ulaw", 0, 1, 0, 0)
    n1, sent1 = run_play(notice, clock)
    beep = PromptPlayer(prompt_of(np.zeros(480)), "ulaw", 0, 1, notice.seq, notice.timestamp)
    n2, sent2 = run_play(beep, clock, start=1000.0 + n1 * 0.020)
    assert (n1, n2) == (5, 3)
    assert [round(t - 1000.0, 6) for t in sent1 + sent2] == [i * 0.02 for i in range(8)]


def test_playback_can_be_cancelled_and_the_stream_continues_where_it_stopped() -> None:
    clock = FakeClock()
    player = PromptPlayer(prompt_of(np.zeros(160 * 50)), "ulaw", 0, 1, 100, 1000)
    sent: list[bytes] = []

    async def main() -> None:
        task = asyncio.create_task(play(player, sent.append, clock=clock, sleep=clock.sleep))
        while len(sent) < 7:
            await asyncio.sleep(0)
        task.cancel()  # the caller hung up
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert len(sent) == player.sent == 7
    assert (player.seq, player.timestamp) == (107, 1000 + 7 * 160)
    assert parse(sent[-1])[3] == 106


def test_an_empty_prompt_sends_nothing_and_returns_at_once() -> None:
    clock = FakeClock()
    n, sent = run_play(PromptPlayer(prompt_of([]), "ulaw", 0, 1, 0, 0), clock)
    assert (n, sent, clock.sleeps) == (0, [], [])
