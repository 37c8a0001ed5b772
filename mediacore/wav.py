"""Streaming WAV files that survive a crash, and repair of those that did not.

Recordings are written while the call runs, so the one moment a WAV header
is normally made right (close) may never come: the process can be killed,
the host can lose power. A RIFF header holds two sizes (the RIFF form and the
``data`` chunk; G.711 adds a ``fact`` sample count) and a reader trusts them.
So :class:`WavWriter` keeps them true as it goes:

* audio is buffered and handed to the OS in large writes (a packet is only
  160-1280 bytes; a syscall per packet would cost more than the audio);
* at least every ``sync_interval`` seconds *of audio* the buffer goes to the
  OS first and only then are the header's sizes rewritten in place. The
  header therefore never claims bytes that are not in the file, and what the
  OS holds survives the death of the process (the page cache belongs to the
  kernel). A SIGKILLed recording opens in any reader up to its last sync.
* ``fsync=True`` extends that to power loss, at the price of two
  ``fdatasync`` calls per sync: milliseconds each on an SSD, tens on a disk,
  per open recording. Sized for a few files (voicemail), not a thousand.

Anything after the last sync is still in the file unless the OS lost it;
:func:`repair` finds it and fixes the sizes. It also mends files that were
truncated by anything else (a full disk, a cut-short copy).

Samples are not touched: PCM is written as the caller's little-endian bytes
and G.711 as its raw payload (WAVE format tags 7 and 6), so this module needs
no codec and the hot path is a buffer append.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Final, Literal

__all__ = ["Encoding", "RepairResult", "WavWriter", "repair"]

Encoding = Literal["pcm16", "ulaw", "alaw"]

# encoding -> (WAVE format tag, bytes per sample, byte value of silence)
_FORMATS: Final[dict[str, tuple[int, int, int]]] = {
    "pcm16": (1, 2, 0x00),
    "ulaw": (7, 1, 0xFF),  # mu-law has a true zero, encoded 0xFF
    "alaw": (6, 1, 0xD5),  # A-law has none; 0xD5 is the smallest positive step
}

# RIFF sizes are unsigned 32-bit. A module constant so tests can lower it
# instead of writing 4 GiB.
_MAX_RIFF_SIZE = 0xFFFFFFFF

# Large enough that a write costs little per byte, small enough not to
# matter when a thousand recordings are open. At 8 kHz the sync interval
# (32,000 bytes of stereo PCM per second) is what usually triggers a write.
_CHUNK_BYTES: Final = 64 * 1024

# Recordings are personal data: owner read/write, group read (a backup or
# export job), nobody else, whatever the process umask allows beyond that.
FILE_MODE: Final = 0o640


def _header(
    tag: int, channels: int, rate: int, sample_bytes: int, data_bytes: int, padded: bool
) -> bytes:
    """The complete header for ``data_bytes`` of audio.

    The layout never changes during a write, so a sync rewrites this whole
    block with one ``pwrite`` rather than patching two or three fields.
    ``padded`` says whether an odd data chunk's pad byte is on file yet: the
    RIFF size counts it only then, so the header never claims a missing byte.
    """
    block = channels * sample_bytes
    pad = data_bytes & 1 if padded else 0
    if tag == 1:
        # Canonical 44-byte header: every reader knows it.
        return struct.pack(
            "<4sI4s4sIHHIIHH4sI",
            b"RIFF", 36 + data_bytes + pad, b"WAVE",
            b"fmt ", 16, tag, channels, rate, rate * block, block, 8 * sample_bytes,
            b"data", data_bytes,
        )  # fmt: skip
    # Non-PCM needs the 18-byte fmt (cbSize=0) and a fact chunk holding the
    # frame count, because its data size alone does not define one in general.
    return struct.pack(
        "<4sI4s4sIHHIIHHH4sII4sI",
        b"RIFF", 50 + data_bytes + pad, b"WAVE",
        b"fmt ", 18, tag, channels, rate, rate * block, block, 8 * sample_bytes, 0,
        b"fact", 4, data_bytes // block,
        b"data", data_bytes,
    )  # fmt: skip


class WavWriter:
    """Write a WAV file as audio arrives, keeping it readable after a crash.

    ``write`` takes whole frames of raw bytes: little-endian int16 for
    ``pcm16``, G.711 payload for ``ulaw``/``alaw``, channels interleaved.
    The header is brought up to date after every ``sync_interval`` seconds of
    audio (``0`` syncs after every write); see the module docstring for what
    that guarantees and what ``fsync`` adds.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sample_rate: int = 8000,
        channels: int = 1,
        encoding: Encoding = "pcm16",
        sync_interval: float = 1.0,
        fsync: bool = False,
    ) -> None:
        if encoding not in _FORMATS:
            raise ValueError(f"encoding must be one of {sorted(_FORMATS)}, not {encoding!r}")
        tag, sample_bytes, silence = _FORMATS[encoding]
        # More than two channels needs WAVE_FORMAT_EXTENSIBLE; recordings
        # never do, so refuse rather than write a header readers may reject.
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, not {channels!r}")
        if not isinstance(sample_rate, int) or not 0 < sample_rate <= 0xFFFFFFFF // 4:
            raise ValueError(f"sample_rate must be a positive int, not {sample_rate!r}")
        if not (math.isfinite(sync_interval) and sync_interval >= 0):
            raise ValueError(f"sync_interval must be >= 0 seconds, not {sync_interval!r}")

        self._path = os.fspath(path)
        self._rate = sample_rate
        self._channels = channels
        self._encoding: Encoding = encoding
        self._tag = tag
        self._sample_bytes = sample_bytes
        self._frame_size = channels * sample_bytes
        self._silence = bytes([silence]) * self._frame_size
        self._fsync = fsync
        self._sync_bytes = max(1, math.ceil(sync_interval * sample_rate)) * self._frame_size
        self._chunk_bytes = _CHUNK_BYTES - _CHUNK_BYTES % self._frame_size
        header_len = len(_header(tag, channels, sample_rate, sample_bytes, 0, False))
        # One byte is kept back for the pad an odd data chunk needs on close.
        self._max_data = (_MAX_RIFF_SIZE - (header_len - 8) - 1) // self._frame_size
        self._max_data *= self._frame_size

        self._buf = bytearray()
        self._data_bytes = 0  # accepted, including what is still in _buf
        self._synced_bytes = 0  # what the header on file claims
        self._closed = False
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        self._fd = os.open(self._path, flags, FILE_MODE)
        try:
            self._write_all(self._header(0, padded=False))
        except BaseException:
            os.close(self._fd)
            self._closed = True
            raise

    # -- what callers look at -------------------------------------------------

    @property
    def path(self) -> str:
        return self._path

    @property
    def sample_rate(self) -> int:
        return self._rate

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def encoding(self) -> Encoding:
        return self._encoding

    @property
    def frame_size(self) -> int:
        """Bytes per frame: every ``write`` must be a multiple of this."""
        return self._frame_size

    @property
    def frames_written(self) -> int:
        """Frames accepted so far, including any not yet handed to the OS."""
        return self._data_bytes // self._frame_size

    @property
    def frames_synced(self) -> int:
        """Frames the header on file claims: what a reader sees after a crash now."""
        return self._synced_bytes // self._frame_size

    @property
    def duration(self) -> float:
        """Seconds of audio accepted so far."""
        return self.frames_written / self._rate

    @property
    def closed(self) -> bool:
        return self._closed

    # -- writing --------------------------------------------------------------

    def write(self, frames: bytes | bytearray | memoryview) -> None:
        """Append whole frames (any contiguous buffer: bytes, memoryview, numpy).

        A partial frame is rejected whole so the file stays frame-aligned: a
        stray byte would swap the channels of everything after it. If the OS
        refuses the data (a full disk), the OSError propagates and the audio
        stays buffered; the next write, flush or close tries again.
        """
        if self._closed:
            raise ValueError(f"write to closed WavWriter ({self._path})")
        if type(frames) is bytes:
            n = len(frames)  # the common case, without a memoryview (~0.1 µs)
        else:
            frames = memoryview(frames)
            if not frames.contiguous:
                raise ValueError("frames must be a contiguous buffer")
            n = frames.nbytes
        if n % self._frame_size:
            raise ValueError(
                f"{n} bytes is not a whole number of {self._frame_size}-byte frames "
                f"({self._encoding}, {self._channels} channel(s))"
            )
        self._check_room(n)
        self._buf += frames
        self._data_bytes += n
        if len(self._buf) >= self._chunk_bytes:
            self._flush_buffer()
        if self._data_bytes - self._synced_bytes >= self._sync_bytes:
            self._sync()

    def write_silence(self, n_frames: int) -> None:
        """Append ``n_frames`` of digital silence, e.g. for packets that never came."""
        if n_frames < 0:
            raise ValueError(f"n_frames must be >= 0, not {n_frames}")
        if self._closed:
            raise ValueError(f"write to closed WavWriter ({self._path})")
        self._check_room(n_frames * self._frame_size)  # all or nothing, as write()
        # In slices so a long gap does not build one huge bytes object.
        step = max(1, self._chunk_bytes // self._frame_size)
        while n_frames > 0:
            k = min(n_frames, step)
            self.write(self._silence * k)
            n_frames -= k

    def flush(self) -> None:
        """Hand all buffered audio to the OS and bring the header up to date now."""
        if self._closed:
            raise ValueError(f"flush of closed WavWriter ({self._path})")
        self._sync()

    def close(self) -> None:
        """Write what is buffered, pad an odd data chunk, fix the header. Idempotent.

        If the data cannot be written (a full disk), the header is still made
        to cover what did reach the file before the error is raised.
        """
        if self._closed:
            return
        self._closed = True
        padded = False
        try:
            self._flush_buffer()
            if self._data_bytes & 1:
                # RIFF chunks are word-aligned: an odd data chunk (mono G.711
                # with an odd frame count) is followed by a pad byte that its
                # size does not count but the RIFF size does.
                self._write_all(b"\x00")
                padded = True
        finally:
            try:
                self._write_header(padded)
            finally:
                os.close(self._fd)

    def abandon(self) -> int:
        """Stop after a failure: keep what is on file as a valid WAV, close; never raises.

        For a disk that refused the data (full, read-only, failing): the
        buffered audio is dropped rather than retried by every later write
        (it would only grow), the header is made to count exactly the whole
        frames that reached the file, and anything after them (a partial
        frame from a short write) is cut off, so a standard reader opens the
        file as it stands. Shrinking a file needs no free space. If even the
        header cannot be rewritten, the file is cut back to what the header
        on file already claims. Returns the frames kept; idempotent.
        """
        if self._closed:
            return self._data_bytes // self._frame_size
        self._closed = True
        header_len = len(self._header(0, padded=False))
        kept = self._data_bytes - len(self._buf)
        kept -= kept % self._frame_size
        if kept & 1:
            kept -= self._frame_size  # odd G.711 mono: drop a frame rather than need a pad
        self._buf.clear()
        try:
            try:
                os.pwrite(self._fd, self._header(kept, padded=False), 0)
            except OSError:
                kept = self._synced_bytes  # what that header says, exactly
            os.ftruncate(self._fd, header_len + kept)
        except OSError:
            pass  # the header on file counts no more than is there: still readable
        finally:
            os.close(self._fd)
        self._data_bytes = self._synced_bytes = kept
        return kept // self._frame_size

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.duration:.3f}s"
        return (
            f"<WavWriter {self._path!r} {self._encoding} {self._rate}Hz x{self._channels} {state}>"
        )

    # -- internals ------------------------------------------------------------

    def _check_room(self, n: int) -> None:
        if self._data_bytes + n > self._max_data:
            # Past this the 32-bit RIFF sizes would wrap and the file would
            # lie about its length; the caller must start a new file.
            raise OverflowError(
                f"{self._path}: writing {n // self._frame_size} more frames would exceed the "
                f"4 GiB RIFF limit ({self._max_data // self._frame_size} frames)"
            )

    def _header(self, data_bytes: int, padded: bool) -> bytes:
        return _header(
            self._tag, self._channels, self._rate, self._sample_bytes, data_bytes, padded
        )

    def _sync(self) -> None:
        self._flush_buffer()
        if self._synced_bytes != self._data_bytes:
            self._write_header(padded=False)

    def _write_header(self, padded: bool) -> None:
        # Order matters: the audio reaches the OS before the header that
        # counts it. With fsync it must also reach the disk first, or a power
        # cut could leave a header pointing at blocks that were never written.
        on_file = self._data_bytes - len(self._buf)
        on_file -= on_file % self._frame_size  # only after a failed partial write
        if self._fsync:
            os.fdatasync(self._fd)
        os.pwrite(self._fd, self._header(on_file, padded), 0)
        self._synced_bytes = on_file
        if self._fsync:
            os.fdatasync(self._fd)

    def _flush_buffer(self) -> None:
        # If the OS takes only part of the buffer and then fails (a full
        # disk), what it took is gone from the buffer and the rest stays, so
        # the header can still be made to match the file.
        buf = self._buf
        while buf:
            del buf[: os.write(self._fd, buf)]

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]


@dataclass(frozen=True)
class RepairResult:
    """What :func:`repair` found: the file's audio, and whether it had to fix it."""

    path: str
    changed: bool
    frames: int
    sample_rate: int
    channels: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def repair(path: str | os.PathLike[str]) -> RepairResult:
    """Make the sizes in a WAV file's header match the audio that is in it.

    For a recording cut short by a crash or a full disk: the data chunk is
    taken to run to the end of the file, unless its declared size fits and
    what follows it is a clean sequence of chunks (a good file with a
    trailing LIST, say), in which case the declared size stands. A trailing
    partial frame is cut off, an odd data chunk gets its pad byte, and the
    RIFF size and ``fact`` frame count are set to match. A good file is left
    byte for byte alone, so running this twice, or on every recording after
    an unclean shutdown, is safe. Do not run it on a file still being written.

    The one thing it cannot tell apart: a good file cut inside a chunk that
    followed its data gets that chunk's remains counted as audio. Recordings
    from :class:`WavWriter` have no such chunks.

    Raises ``ValueError`` naming the file if it is not RIFF/WAVE, or is cut
    off before its data chunk starts (there is then no format to recover).
    """
    p = os.fspath(path)
    with open(p, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
            raise ValueError(f"{p}: not a RIFF/WAVE file")
        if size - 8 > 0xFFFFFFFF:
            raise ValueError(f"{p}: {size} bytes is too large for a RIFF file")

        fmt: tuple[int, ...] | None = None
        fact_at: int | None = None
        pos = 12
        while True:
            if pos + 8 > size:
                raise ValueError(f"{p}: no data chunk (the file ends at byte {size})")
            f.seek(pos)
            cid, declared = struct.unpack("<4sI", f.read(8))
            if cid == b"data":
                break
            end = pos + 8 + declared
            if end > size:
                raise ValueError(f"{p}: {cid!r} chunk at byte {pos} runs past the end of the file")
            if cid == b"fmt ":
                if declared < 16:
                    raise ValueError(f"{p}: fmt chunk is too short ({declared} bytes)")
                fmt = struct.unpack("<HHIIHH", f.read(16))
            elif cid == b"fact" and declared >= 4:
                fact_at = pos + 8
            pos = end + (declared & 1)
        if fmt is None:
            raise ValueError(f"{p}: no fmt chunk before the data chunk")
        _tag, channels, rate, _avg, block, _bits = fmt
        if block == 0:
            raise ValueError(f"{p}: fmt chunk has a block align of 0")

        data_at = pos + 8
        declared_end = data_at + declared + (declared & 1)
        clean, trailing_fact = _scan_chunks(f, declared_end, size)
        changed = False
        if declared_end < size and clean:
            # Well-formed chunks follow the data: a good file. Its data size
            # stays as it is, even if odd, or the chunks after it would move.
            data_bytes = declared
            fact_at = trailing_fact if fact_at is None else fact_at
            new_size = size
        else:
            # The data runs to the end of the file: trust the file, not the
            # header. This also covers the streaming placeholders 0 and
            # 0xFFFFFFFF and a size that runs past the end.
            in_file = size - data_at
            if declared <= in_file and clean:
                in_file = declared  # what remains is at most its pad byte
            data_bytes = in_file - in_file % block
            new_size = data_at + data_bytes + (data_bytes & 1)
            if new_size - 8 > 0xFFFFFFFF:
                raise ValueError(f"{p}: {new_size} bytes is too large for a RIFF file")
            if new_size < size:
                # A partial frame, or a pad byte no longer needed.
                f.truncate(new_size)
                changed = True
            if data_bytes & 1:
                f.seek(data_at + data_bytes)
                pad = f.read(1)
                # A pad byte the header already accounted for is left as it
                # is; a byte that was audio until now becomes a zero.
                if not pad or (data_bytes != declared and pad != b"\x00"):
                    f.seek(data_at + data_bytes)
                    f.write(b"\x00")
                    changed = True

        fixes = [(4, new_size - 8), (data_at - 4, data_bytes)]
        if fact_at is not None:
            fixes.append((fact_at, data_bytes // block))
        for offset, value in fixes:
            f.seek(offset)
            new = struct.pack("<I", value)
            if f.read(4) != new:
                f.seek(offset)
                f.write(new)
                changed = True
    return RepairResult(p, changed, data_bytes // block, rate, channels)


def _scan_chunks(f: IO[bytes], pos: int, size: int) -> tuple[bool, int | None]:
    """Whether ``pos`` to the end of the file holds only well-formed chunks.

    Also returns where the body of a ``fact`` chunk among them is, if any.
    Audio misread as chunks would need printable ids and sizes that land
    exactly on the end of the file, which in practice it never has.
    """
    fact_at = None
    while pos < size:
        if pos + 8 > size:
            return False, None
        f.seek(pos)
        cid, csize = struct.unpack("<4sI", f.read(8))
        if not all(0x20 <= c <= 0x7E for c in cid) or pos + 8 + csize > size:
            return False, None
        if cid == b"fact" and csize >= 4:
            fact_at = pos + 8
        pos += 8 + csize + (csize & 1)
    return True, fact_at
