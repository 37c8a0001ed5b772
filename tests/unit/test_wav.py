"""WavWriter and repair(), checked against independent readers.

soundfile (libsndfile) and the stdlib ``wave`` module read what we write;
stdlib ``audioop`` is the reference G.711 decoder. Crash safety is checked
here without a crash, by reading the file from disk while the writer still
holds it open: that is exactly what a reader would find after SIGKILL, since
everything the writer handed to the OS stays in the page cache. The real
SIGKILL is in tests/integration/test_wav_crash.py.
"""

from __future__ import annotations

import ast
import os
import shutil
import struct
import warnings
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mediacore.wav
from mediacore.wav import WavWriter, repair

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

PCM_HEADER = 44
G711_HEADER = 58
DECODE = {"ulaw": audioop.ulaw2lin, "alaw": audioop.alaw2lin}

# Hypothesis runs many examples in one test call; each one overwrites the
# same file names under tmp_path, so sharing the fixture across them is safe.
# deadline=None: file I/O timing is not what these tests are about.
examples = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None, max_examples=60
)


def chunks(path: Path) -> dict[bytes, tuple[int, bytes]]:
    """The file's chunks by id: (declared size, body as far as it is on file)."""
    raw = path.read_bytes()
    assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE"
    found = {}
    pos = 12
    while pos + 8 <= len(raw):
        cid, size = struct.unpack_from("<4sI", raw, pos)
        found[cid] = (size, raw[pos + 8 : pos + 8 + size])
        pos += 8 + size + (size & 1)
    return found


def pcm_signal(frames: int, channels: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-32768, 32768, size=(frames, channels), dtype=np.int16)


def write_in_pieces(w: WavWriter, data: bytes, seed: int = 2) -> None:
    """Write whole frames in uneven pieces, so buffer and sync edges get crossed."""
    rng = np.random.default_rng(seed)
    pos = 0
    while pos < len(data):
        n = int(rng.integers(0, 700)) * w.frame_size
        w.write(data[pos : pos + n])
        pos += n


def read_int16(path: Path) -> np.ndarray:
    data, _ = sf.read(path, dtype="int16", always_2d=True)
    return data


# -- PCM ---------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_pcm16_reads_back_exactly(tmp_path: Path, rate: int, channels: int) -> None:
    path = tmp_path / "a.wav"
    signal = pcm_signal(int(rate * 1.3), channels)
    with WavWriter(path, sample_rate=rate, channels=channels, sync_interval=0.25) as w:
        write_in_pieces(w, signal.tobytes())
        assert w.frames_written == len(signal)
        assert w.duration == len(signal) / rate

    info = sf.info(path)
    assert (info.samplerate, info.channels, info.frames) == (rate, channels, len(signal))
    assert info.subtype == "PCM_16"
    np.testing.assert_array_equal(read_int16(path), signal)
    with wave.open(str(path), "rb") as r:
        assert (r.getframerate(), r.getnchannels(), r.getsampwidth()) == (rate, channels, 2)
        assert r.getnframes() == len(signal)
        assert r.readframes(len(signal)) == signal.tobytes()


def test_pcm16_header_is_the_canonical_44_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    with WavWriter(path, channels=2) as w:
        w.write(bytes(4 * 10))
    expected = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + 40, b"WAVE",
        b"fmt ", 16, 1, 2, 8000, 32000, 4, 16,
        b"data", 40,
    )  # fmt: skip
    raw = path.read_bytes()
    assert raw[:PCM_HEADER] == expected
    assert len(raw) == PCM_HEADER + 40


def test_accepts_any_contiguous_buffer(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    signal = pcm_signal(30, 2)
    with WavWriter(path, channels=2) as w:
        w.write(signal[:10])  # numpy
        w.write(memoryview(signal[10:20].tobytes()))
        w.write(bytearray(signal[20:].tobytes()))
        with pytest.raises(ValueError, match="contiguous"):
            w.write(signal[:, 0])  # a strided view of one channel
    np.testing.assert_array_equal(read_int16(path), signal)


def test_empty_file_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    WavWriter(path, channels=2).close()
    assert sf.info(path).frames == 0
    assert path.stat().st_size == PCM_HEADER


# -- G.711 -------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize(("encoding", "tag"), [("ulaw", 7), ("alaw", 6)])
def test_g711_is_raw_payload_with_fmt_and_fact(
    tmp_path: Path, encoding: str, tag: int, channels: int
) -> None:
    path = tmp_path / "a.wav"
    payload = bytes(range(256)) * 40  # every code, 10,240 bytes
    with WavWriter(path, encoding=encoding, channels=channels, sync_interval=0.1) as w:  # type: ignore[arg-type]
        write_in_pieces(w, payload)
    frames = len(payload) // channels

    found = chunks(path)
    assert list(found) == [b"fmt ", b"fact", b"data"]
    fmt_size, fmt = found[b"fmt "]
    assert fmt_size == 18
    assert struct.unpack("<HHIIHHH", fmt) == (tag, channels, 8000, 8000 * channels, channels, 8, 0)
    assert found[b"fact"] == (4, struct.pack("<I", frames))
    assert found[b"data"] == (len(payload), payload)
    assert path.stat().st_size == G711_HEADER + len(payload)

    info = sf.info(path)
    assert info.subtype == encoding.upper()
    assert (info.channels, info.frames) == (channels, frames)
    expected = np.frombuffer(DECODE[encoding](payload, 2), dtype=np.int16)
    np.testing.assert_array_equal(read_int16(path).reshape(-1), expected)


@pytest.mark.parametrize("encoding", ["ulaw", "alaw"])
def test_odd_data_chunk_gets_a_pad_byte(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "a.wav"
    with WavWriter(path, encoding=encoding) as w:  # type: ignore[arg-type]
        w.write(b"\x01\x02\x03")
    raw = path.read_bytes()
    assert len(raw) == G711_HEADER + 3 + 1
    assert raw[-1:] == b"\x00"
    assert struct.unpack_from("<I", raw, 4)[0] == len(raw) - 8  # RIFF counts the pad
    assert chunks(path)[b"data"] == (3, b"\x01\x02\x03")  # data does not
    assert chunks(path)[b"fact"][1] == struct.pack("<I", 3)
    assert sf.info(path).frames == 3
    assert repair(path).changed is False
    assert path.read_bytes() == raw


# -- silence -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "channels", "byte"),
    [("pcm16", 2, 0x00), ("pcm16", 1, 0x00), ("ulaw", 1, 0xFF), ("alaw", 2, 0xD5)],
)
def test_write_silence(tmp_path: Path, encoding: str, channels: int, byte: int) -> None:
    path = tmp_path / "a.wav"
    with WavWriter(path, encoding=encoding, channels=channels) as w:  # type: ignore[arg-type]
        w.write(b"\x11" * w.frame_size * 3)
        w.write_silence(0)
        w.write_silence(100_000)  # a long gap goes in slices
        w.write(b"\x22" * w.frame_size)
        assert w.frames_written == 100_004
        with pytest.raises(ValueError, match=">= 0"):
            w.write_silence(-1)
        size = w.frame_size
    data = chunks(path)[b"data"][1]
    assert data == b"\x11" * 3 * size + bytes([byte]) * 100_000 * size + b"\x22" * size


def test_g711_silence_decodes_to_silence() -> None:
    assert audioop.ulaw2lin(b"\xff", 2) == b"\x00\x00"
    # A-law has no zero code: 0xD5 is the smallest positive step (+8).
    assert abs(struct.unpack("<h", audioop.alaw2lin(b"\xd5", 2))[0]) <= 8


# -- misuse ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "channels", "frame_size"),
    [("pcm16", 2, 4), ("pcm16", 1, 2), ("ulaw", 2, 2)],
)
def test_partial_frame_is_rejected_whole(
    tmp_path: Path, encoding: str, channels: int, frame_size: int
) -> None:
    path = tmp_path / "a.wav"
    with WavWriter(path, encoding=encoding, channels=channels) as w:  # type: ignore[arg-type]
        w.write(b"\x01" * frame_size)
        with pytest.raises(ValueError, match=f"{frame_size}-byte frames"):
            w.write(b"\x02" * (frame_size * 3 + 1))
        assert w.frames_written == 1
    assert chunks(path)[b"data"][1] == b"\x01" * frame_size


def test_close_is_idempotent_and_closed_writer_refuses(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    w = WavWriter(path, channels=2)
    w.write(bytes(8))
    assert not w.closed
    w.close()
    w.close()
    assert w.closed
    assert w.frames_written == 2
    with pytest.raises(ValueError, match="closed WavWriter"):
        w.write(bytes(4))
    with pytest.raises(ValueError, match="closed WavWriter"):
        w.write_silence(1)
    with pytest.raises(ValueError, match="closed WavWriter"):
        w.flush()
    assert sf.info(path).frames == 2


def test_context_manager_closes_on_error(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    with pytest.raises(RuntimeError), WavWriter(path, sync_interval=10) as w:
        w.write(bytes(200))
        raise RuntimeError
    assert w.closed
    assert sf.info(path).frames == 100


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"encoding": "gsm"}, "encoding"),
        ({"channels": 0}, "channels"),
        ({"channels": 3}, "channels"),
        ({"sample_rate": 0}, "sample_rate"),
        ({"sample_rate": 8000.0}, "sample_rate"),
        ({"sync_interval": -1}, "sync_interval"),
        ({"sync_interval": float("nan")}, "sync_interval"),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WavWriter(tmp_path / "a.wav", **kwargs)
    assert not (tmp_path / "a.wav").exists()


def test_refuses_to_overflow_the_riff_sizes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real limit is 4 GiB; the check is the same arithmetic at any limit.
    monkeypatch.setattr(mediacore.wav, "_MAX_RIFF_SIZE", 36 + 1000)
    path = tmp_path / "a.wav"
    with WavWriter(path, channels=2) as w:
        w.write(bytes(4 * 249))  # 996 bytes: the most that fits with room for a pad
        with pytest.raises(OverflowError, match="4 GiB"):
            w.write(bytes(4))
        with pytest.raises(OverflowError):
            w.write_silence(1)
        assert w.frames_written == 249
    assert sf.info(path).frames == 249

    with WavWriter(path, channels=2) as w:
        w.write(bytes(4 * 200))
        with pytest.raises(OverflowError):
            w.write_silence(50)  # refused whole, not written up to the limit
        assert w.frames_written == 200
        w.write_silence(49)
    assert sf.info(path).frames == 249


def test_has_no_codec_dependency() -> None:
    # The compiled kernels are optional for this module by design.
    tree = ast.parse(Path(mediacore.wav.__file__).read_text())
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names += [f"{'.' * node.level}{node.module or ''}", *(a.name for a in node.names)]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    assert names and not [n for n in names if "codecs" in n or n.startswith((".", "mediacore"))]


# -- crash safety, observed from outside while the writer is open -------------


def test_default_sync_makes_each_second_readable(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    packet = pcm_signal(160, 2).tobytes()  # 20 ms of stereo 8 kHz
    with WavWriter(path, channels=2) as w:
        for n in range(1, 151):
            w.write(packet)
            seconds = n // 50
            assert w.frames_synced == 8000 * seconds
            assert sf.info(path).frames == 8000 * seconds
            # Never more than a second of audio held back from the OS.
            assert path.stat().st_size - PCM_HEADER > (w.frames_written - 8000) * 4


@examples
@given(
    pieces=st.lists(st.integers(0, 500), max_size=40),
    sync_interval=st.sampled_from([0, 0.01, 0.05, 1.0]),
    flush_at=st.integers(0, 40),
)
def test_header_never_claims_more_than_is_on_file(
    tmp_path: Path, pieces: list[int], sync_interval: float, flush_at: int
) -> None:
    path = tmp_path / "a.wav"
    signal = pcm_signal(sum(pieces), 2)
    sync_frames = max(1, int(np.ceil(sync_interval * 8000)))
    with WavWriter(path, channels=2, sync_interval=sync_interval) as w:
        pos = 0
        for i, n in enumerate(pieces):
            w.write(signal[pos : pos + n])
            pos += n
            if i == flush_at:
                w.flush()
                assert w.frames_synced == w.frames_written
            on_file = (path.stat().st_size - PCM_HEADER) // 4
            claimed = chunks(path)[b"data"][0] // 4
            assert claimed == w.frames_synced <= on_file <= w.frames_written
            assert w.frames_written - w.frames_synced < sync_frames
        # Read while still open: this is the file as a crash would leave it.
        np.testing.assert_array_equal(read_int16(path), signal[: w.frames_synced])
    np.testing.assert_array_equal(read_int16(path), signal)


@examples
@given(
    encoding=st.sampled_from(["pcm16", "ulaw"]),
    pieces=st.lists(st.integers(0, 3000), max_size=30),
    sync_interval=st.sampled_from([0, 0.03, 1.0, 10.0]),
)
def test_each_header_update_counts_only_what_is_already_on_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    encoding: str,
    pieces: list[int],
    sync_interval: float,
) -> None:
    # A SIGKILL can land between any two syscalls, so the check is made at
    # the one moment that matters: each time a header goes to the file.
    headers: list[tuple[int, int]] = []
    real_pwrite = os.pwrite

    def checked_pwrite(fd: int, data: bytes, offset: int) -> int:
        size = os.fstat(fd).st_size
        header = len(data)
        riff, claimed = (
            struct.unpack_from("<I", data, 4)[0],
            struct.unpack_from("<I", data, header - 4)[0],
        )
        assert offset == 0 and header in (PCM_HEADER, G711_HEADER)
        assert header + claimed <= size and riff + 8 <= size
        headers.append((claimed, size))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(mediacore.wav.os, "pwrite", checked_pwrite)
    path = tmp_path / "a.wav"
    with WavWriter(path, encoding=encoding, sync_interval=sync_interval) as w:  # type: ignore[arg-type]
        for n in pieces:
            w.write(b"\x55" * n * w.frame_size)
    monkeypatch.undo()
    assert headers[-1][0] == sum(pieces) * w.frame_size  # the one close wrote
    assert sf.info(path).frames == sum(pieces)


def test_copy_taken_mid_write_opens_and_repairs(tmp_path: Path) -> None:
    # At 48 kHz stereo a second is more than one write chunk, so audio
    # reaches the OS before the header counts it: repair's case.
    path, copy = tmp_path / "a.wav", tmp_path / "copy.wav"
    signal = pcm_signal(48_000 * 2, 2)
    with WavWriter(path, sample_rate=48_000, channels=2) as w:
        for i in range(0, 72_000, 480):
            w.write(signal[i : i + 480])
        shutil.copyfile(path, copy)  # what SIGKILL would leave now
        synced, written = w.frames_synced, w.frames_written
    assert synced == 48_000
    np.testing.assert_array_equal(read_int16(copy), signal[:synced])

    on_file = (copy.stat().st_size - PCM_HEADER) // 4
    assert synced < on_file < written
    result = repair(copy)
    assert (result.changed, result.frames) == (True, on_file)
    np.testing.assert_array_equal(read_int16(copy), signal[:on_file])


# -- repair ------------------------------------------------------------------


def make(path: Path, encoding: str, channels: int, frames: int) -> bytes:
    payload = np.random.default_rng(3).integers(0, 256, frames * channels * 2, dtype=np.uint8)
    sample_bytes = 2 if encoding == "pcm16" else 1
    data = payload[: frames * channels * sample_bytes].tobytes()
    with WavWriter(path, encoding=encoding, channels=channels) as w:  # type: ignore[arg-type]
        w.write(data)
    return data


FILES = [("pcm16", 2, 1500), ("pcm16", 1, 1501), ("ulaw", 1, 2001), ("alaw", 2, 999)]


@pytest.mark.parametrize(("encoding", "channels", "frames"), FILES)
def test_repair_leaves_a_good_file_alone(
    tmp_path: Path, encoding: str, channels: int, frames: int
) -> None:
    path = tmp_path / "a.wav"
    make(path, encoding, channels, frames)
    before = path.read_bytes()
    result = repair(path)
    assert (result.changed, result.frames, result.channels) == (False, frames, channels)
    assert result.duration == frames / 8000
    assert path.read_bytes() == before


@examples
@given(data=st.data())
@pytest.mark.parametrize(("encoding", "channels", "frames"), FILES)
def test_repair_of_a_file_cut_anywhere(
    tmp_path: Path, encoding: str, channels: int, frames: int, data: st.DataObject
) -> None:
    good = tmp_path / f"{encoding}-{channels}.wav"
    if not good.exists():
        make(good, encoding, channels, frames)
    raw = good.read_bytes()
    header = PCM_HEADER if encoding == "pcm16" else G711_HEADER
    frame_size = channels * (2 if encoding == "pcm16" else 1)
    cut = data.draw(
        st.one_of(st.integers(0, len(raw)), st.integers(header - 2, header + 9)), label="cut"
    )
    path = tmp_path / "cut.wav"
    path.write_bytes(raw[:cut])

    if cut < header:
        with pytest.raises(ValueError, match=str(path)):
            repair(path)
        return
    result = repair(path)
    kept = (min(cut, len(raw)) - header) // frame_size
    kept = min(kept, frames)
    assert result.frames == kept
    assert result.changed == (cut != len(raw))
    data_bytes = kept * frame_size
    assert path.stat().st_size == header + data_bytes + (data_bytes & 1)
    assert path.read_bytes()[header : header + data_bytes] == raw[header : header + data_bytes]
    assert sf.info(path).frames == kept
    if encoding == "pcm16":
        with wave.open(str(path), "rb") as r:
            assert r.readframes(kept + 1) == raw[header : header + data_bytes]
    else:
        assert chunks(path)[b"fact"][1] == struct.pack("<I", kept)
    assert repair(path).changed is False


@pytest.mark.parametrize("declared", [0, 0xFFFFFFFF, 10**6])
@pytest.mark.parametrize(("encoding", "channels", "frames"), FILES)
def test_repair_of_placeholder_or_overlong_sizes(
    tmp_path: Path, encoding: str, channels: int, frames: int, declared: int
) -> None:
    path = tmp_path / "a.wav"
    data = make(path, encoding, channels, frames)
    header = PCM_HEADER if encoding == "pcm16" else G711_HEADER
    raw = bytearray(path.read_bytes())
    struct.pack_into("<I", raw, 4, declared)  # the RIFF size too
    struct.pack_into("<I", raw, header - 4, declared)
    if encoding != "pcm16":
        struct.pack_into("<I", raw, 46, 0)
    if len(data) & 1:
        del raw[-1]  # a writer that streamed never got to write the pad
    path.write_bytes(raw)

    result = repair(path)
    assert (result.changed, result.frames) == (True, frames)
    assert sf.info(path).frames == frames
    assert chunks(path)[b"data"] == (len(data), data)
    assert repair(path).changed is False


def test_repair_keeps_chunks_after_the_data(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    data = make(path, "ulaw", 1, 11)  # odd, so the LIST starts after a pad byte
    info = b"INFOISFT" + struct.pack("<I", 9) + b"mediacore\x00"
    raw = bytearray(path.read_bytes()) + b"LIST" + struct.pack("<I", len(info)) + info
    struct.pack_into("<I", raw, 4, len(raw) - 8)
    path.write_bytes(raw)
    assert sf.info(path).frames == 11

    assert repair(path).changed is False
    assert path.read_bytes() == raw

    # A wrong RIFF size alone is fixed without touching the chunks.
    struct.pack_into("<I", raw, 4, 12345)
    path.write_bytes(raw)
    result = repair(path)
    assert (result.changed, result.frames) == (True, 11)
    assert chunks(path)[b"data"] == (11, data)
    assert b"LIST" in chunks(path)
    assert path.stat().st_size == len(raw)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "not a RIFF/WAVE"),
        (b"ID3\x03" + bytes(100), "not a RIFF/WAVE"),
        (b"RIFF" + struct.pack("<I", 4) + b"AVI ", "not a RIFF/WAVE"),
        (b"RIFF" + struct.pack("<I", 4) + b"WAVE", "no data chunk"),
        (b"RIFF\0\0\0\0WAVEdata\0\0\0\0", "no fmt chunk"),
        (b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0\1\0", "runs past the end"),
    ],
)
def test_repair_refuses_what_it_cannot_read(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "not.wav"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match) as err:
        repair(path)
    assert str(path) in str(err.value)
    assert path.read_bytes() == content


def test_recordings_are_not_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "private.wav"
    with WavWriter(path) as writer:
        writer.write(b"\x00\x00")
    assert path.stat().st_mode & 0o007 == 0
