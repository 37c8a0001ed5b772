"""Call recording: the relay's tap records in, an aligned stereo (or mono) WAV out.

The relay engine hands us, every 20-100 ms, one ``bytes`` blob of *tap
records*: a 24-byte header (:data:`TAP_HEADER`) and the RTP payload, for
every packet it relayed on a recorded call, both directions. We decode
G.711 and write 8 kHz 16-bit PCM through :class:`mediacore.wav.WavWriter`,
caller on channel 1, callee on channel 2. The promise (docs/contracts.md) is
that the file's length is the recorded wall-clock time and that the two
channels are aligned in time, whatever the network did to the packets.

Alignment
---------

Output frame ``f`` is the instant ``started_ns + f / 8000 s``. Each direction
("leg") maps RTP timestamps to frames with one number, ``offset``:
``frame = unwrapped_ts + offset``. Timestamps, not arrival times, place the
audio, because they are jitter-free and say exactly where a lost or late
packet's hole is; arrival times (CLOCK_MONOTONIC, shared by both legs) pick
the offset, which is what keeps the two legs in sync with each other and
with the wall clock:

* **Anchor.** A leg's first packet lands at its arrival frame, and so do the
  first packets after an SSRC change, a payload-type change (codec switch
  after a re-INVITE), a timestamp jump (backwards, or more than
  :data:`MAX_TS_JUMP` forwards) and a sequence restart (RFC 3550 A.1
  probation: two packets in sequence after a jump). A packet whose
  timestamp would put it more than :data:`MAX_EARLY` ahead of its arrival
  re-anchors too: a smaller forward jump.
* **Settle and track.** A packet's lateness ``L = arrival_frame - frame`` is
  its queueing delay relative to the anchor, and jitter only ever adds
  delay. So *early* packets (``L < 0``) prove the offset wrong (the anchor
  packet was itself delayed, or the sender's clock runs fast): the offset
  moves at once so that the packet lands at its arrival. Within
  :data:`SETTLE` of an anchor any error is corrected (nothing of the new
  stream has been written yet, so it is free); after that only errors over
  :data:`TOLERANCE`, so that ~50 ppm of drift costs a 10 ms overlap every few
  minutes rather than channels drifting apart by seconds over a long call,
  and only when two packets in a row come early (the offset moves by the
  later of the two): a lone packet that a sender sent right after the one
  before is placed by its timestamp. SIPp's rtpstream does that every
  second or so, and moving for each such packet, then back, cost 20 ms of
  audio each time (benchmarks/RESULTS.md).
  The other way, the smallest ``L`` over each :data:`WINDOW` is the least
  delayed packet's: when even that exceeds the tolerance (a slow sender
  clock, a longer path) the offset moves later by it. The audio still
  buffered moves with the offset, so a correction happens at the write
  position, once, as a short overlap or a short silence.
* **Talkspurts.** A marker-bit packet (first after silence suppression) that
  would arrive more than :data:`DELAY` late is re-placed at its arrival:
  some senders do not advance the timestamp over silence.
* Reordered packets find their place by timestamp; duplicates (a 64-packet
  replay window on the sequence number) are dropped, as are packets that
  come after their place was written out. Payload types not in
  ``codec_by_pt`` (telephone-event, comfort noise, anything unknown) are
  not audio; holes, one-way audio and silence suppression become silence,
  because nothing is written there.

Write-out: each leg decodes into its own small buffer of pending frames.
Everything older than :data:`DELAY` behind the newest arrival (of either leg,
or a ``now_ns`` the caller passes) is final and goes to the file, both
channels in one write, in pieces of at least :data:`WRITE_CHUNK` (at 1,000
calls the writer's per-call cost, not the audio, is what a write costs).
So memory per call is a few kilobytes, a packet may be up to 200 ms late
and still be recorded, and a crash loses at most 300 ms plus the writer's
sync interval (1 s of audio). :meth:`CallRecorder.close` writes the rest
and pads with silence (or cuts) to exactly ``ended_ns``.

Two implementations of the same algorithm: :class:`ReferenceAligner` here,
in plain Python and numpy, is the readable specification; the compiled
``mediacore.rtp._recorder.Aligner`` is what runs (0.19 against 2.7 µs per
packet for the alignment itself; 0.9 against 4.5 µs with the WAV writer at
1,000 concurrent calls: benchmarks/RESULTS.md). Tests feed both
the same random streams and require byte-identical output.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple, NoReturn, Protocol

import numpy as np

from mediacore import _codecs
from mediacore.diskspace import reason_of
from mediacore.wav import WavWriter

__all__ = [
    "DELAY",
    "MAX_EARLY",
    "MAX_TS_JUMP",
    "RATE",
    "SETTLE",
    "TAP_HEADER",
    "TOLERANCE",
    "WINDOW",
    "WRITE_CHUNK",
    "CallRecorder",
    "RecorderStats",
    "RecordingError",
    "RecordingInfo",
    "ReferenceAligner",
    "TapRecord",
    "iter_tap",
    "pack_tap",
]

TAP_HEADER: Final = struct.Struct("<qIIHBBBxH")
"""(arrival_ns, ssrc, timestamp, seq, payload_type, marker, direction, payload_len)."""

RATE: Final = 8000
"""Sample rate of the recording and the RTP clock rate of G.711."""
NS_PER_FRAME: Final = 1_000_000_000 // RATE

DELAY: Final = 1600
"""Frames (200 ms) the write position stays behind the newest arrival: the jitter buffer."""
WRITE_CHUNK: Final = 800
"""Frames (100 ms) written at least at a time: one WavWriter call per 100 ms, not per blob."""
SETTLE: Final = 100_000_000
"""ns after an anchor at which the offset is corrected freely (before any write-out)."""
WINDOW: Final = 1_000_000_000
"""ns over which the smallest lateness is measured to track the offset."""
TOLERANCE: Final = 80
"""Frames (10 ms) of offset error tolerated before the offset moves."""
MAX_TS_JUMP: Final = 8000
"""A forward timestamp step larger than this (1 s) re-anchors the leg."""
MAX_EARLY: Final = 800
"""Frames (100 ms) a packet may be placed ahead of its arrival before it re-anchors.

Smaller errors are the anchor's jitter or clock drift and move the offset
(with the buffered audio); larger ones are timestamp jumps, and moving the
buffered audio that far back would push it behind the write position."""
MAX_DROPOUT: Final = 3000
"""Sequence jumps forward beyond this need probation (RFC 3550 A.1)."""
MAX_MISORDER: Final = 100
"""Sequence jumps backward beyond this need probation (RFC 3550 A.1)."""
REPLAY_WINDOW: Final = 64
"""How many sequence numbers back duplicates are recognised (and late packets accepted)."""

_CODEC_IDS: Final[dict[str, int]] = {"ulaw": 1, "alaw": 2}
_STAT_NAMES: Final = (
    "records", "audio", "not_audio", "ignored", "duplicates", "late", "discarded",
    "anchors", "shifts", "resyncs", "malformed",
)  # fmt: skip


class TapRecord(NamedTuple):
    """One tap record, as the relay engine writes it (see :data:`TAP_HEADER`)."""

    arrival_ns: int
    ssrc: int
    timestamp: int
    seq: int
    payload_type: int
    marker: int
    direction: int
    payload: bytes


def pack_tap(records: Iterable[tuple[int, int, int, int, int, int, int, bytes]]) -> bytes:
    """Build a blob from (arrival_ns, ssrc, ts, seq, pt, marker, direction, payload) tuples.

    What the engine does in C; here for tests, benchmarks and tools.
    """
    out = bytearray()
    pack = TAP_HEADER.pack
    for arrival, ssrc, ts, seq, pt, marker, direction, payload in records:
        out += pack(arrival, ssrc, ts, seq, pt, marker, direction, len(payload))
        out += payload
    return bytes(out)


def iter_tap(blob: bytes) -> Iterator[TapRecord]:
    """Parse a blob back into records; a truncated record at the end is a ValueError."""
    pos, n, size = 0, len(blob), TAP_HEADER.size
    while pos < n:
        if pos + size > n:
            raise ValueError(f"truncated tap header at byte {pos} of {n}")
        *head, plen = TAP_HEADER.unpack_from(blob, pos)
        start = pos + size
        if start + plen > n:
            raise ValueError(f"tap record at byte {pos} claims {plen} payload bytes past the end")
        yield TapRecord(*head, blob[start : start + plen])
        pos = start + plen


@dataclass(frozen=True, slots=True)
class RecorderStats:
    """What the aligner did with the records it was fed: for metrics and for tests.

    ``records``: all records seen; ``audio``: audio packets placed (possibly
    partly late); ``not_audio``: payload types not in ``codec_by_pt``;
    ``ignored``: directions not recorded (direction 1 in mono, or > 1);
    ``duplicates``; ``late``: arrived after their place was written, or too
    old for the replay window; ``discarded``: timestamps inconsistent with
    their sequence number, and packets held back by sequence probation;
    ``anchors``: first packets plus re-anchors; ``shifts``: offset
    corrections; ``resyncs``: talkspurts re-placed; ``malformed``: records
    cut short at the end of a blob (the rest of that blob is skipped).
    """

    records: int = 0
    audio: int = 0
    not_audio: int = 0
    ignored: int = 0
    duplicates: int = 0
    late: int = 0
    discarded: int = 0
    anchors: int = 0
    shifts: int = 0
    resyncs: int = 0
    malformed: int = 0


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    """A finished recording: what records/ puts in the recording handle.

    ``error`` is empty, or why the recording stopped before the call ended
    (a reason from :mod:`mediacore.diskspace`, e.g. ``disk-full``): the file
    then holds the audio up to that moment, as a valid WAV.
    """

    path: str
    duration: float
    bytes: int
    frames: int
    sha256: str
    sample_rate: int
    channels: int
    stats: RecorderStats
    error: str = ""


class RecordingError(Exception):
    """A recording that left no file worth keeping; ``reason`` says why (``disk-full``...).

    Its file, if one was created, is removed: a file without a handle would
    never be destroyed by retention.
    """

    def __init__(self, reason: str, path: str, cause: BaseException) -> None:
        super().__init__(f"{path}: {reason}: {cause}")
        self.reason = reason
        self.path = path
        self.cause = cause


class Sink(Protocol):
    """Where aligned audio goes: a :class:`WavWriter` in production, a list in tests."""

    def write(self, frames: bytes) -> None: ...
    def write_silence(self, n_frames: int) -> None: ...


class AlignerLike(Protocol):
    """The interface both implementations have (reference and compiled)."""

    def feed(self, blob: bytes, now_ns: int | None = None) -> None: ...
    def finish(self, end_frame: int) -> int: ...
    def set_codecs(self, codec_by_pt: Mapping[int, str]) -> None: ...
    def stats(self) -> tuple[int, ...]: ...
    @property
    def cursor(self) -> int: ...


def codec_table(codec_by_pt: Mapping[int, str]) -> bytes:
    """256 bytes, one per payload type: 0 not audio, 1 mu-law, 2 A-law."""
    table = bytearray(256)
    for pt, codec in codec_by_pt.items():
        if not 0 <= pt <= 127:
            raise ValueError(f"RTP payload types are 0-127, not {pt}")
        try:
            table[pt] = _CODEC_IDS[codec]
        except KeyError:
            raise ValueError(
                f"codec for payload type {pt} must be 'ulaw' or 'alaw', not {codec!r}"
            ) from None
    return bytes(table)


def _frame_of(arrival_ns: int, started_ns: int) -> int:
    """The output frame an instant falls in (floor: frame f covers [f, f + 1) / RATE)."""
    return (arrival_ns - started_ns) // NS_PER_FRAME


class _Leg:
    """One direction's state in :class:`ReferenceAligner`."""

    __slots__ = (
        "anchored", "bad_seq", "buf", "buf_hi", "early", "max_seq", "max_ts", "max_ts_u",
        "offset", "pt", "seen", "seg_hi", "seg_lo", "settling", "ssrc", "win_end", "win_min",
    )  # fmt: skip

    def __init__(self) -> None:
        self.anchored = False
        self.ssrc = self.pt = self.max_seq = self.max_ts = self.max_ts_u = 0
        self.seen = 0
        self.bad_seq = -1
        self.offset = 0
        self.settling = False
        self.early: int | None = None  # lateness of the last packet, if it came early
        self.win_min: int | None = None
        self.win_end = 0
        self.seg_lo = self.seg_hi = 0
        self.buf = np.zeros(4096, dtype=np.int16)  # frames [cursor, cursor + len)
        self.buf_hi = 0  # end frame of the data in buf (all zero after it)


class ReferenceAligner:
    """The alignment algorithm in plain Python and numpy: the specification.

    See the module docstring. The compiled ``_recorder.Aligner`` must behave
    identically (the same frames to the sink, the same stats); tests check that.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        started_ns: int,
        codec_by_pt: Mapping[int, str],
        channels: int = 2,
    ) -> None:
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, not {channels!r}")
        self._sink = sink
        self._started = started_ns
        self._channels = channels
        self._legs = [_Leg() for _ in range(channels)]
        self._codecs = codec_table(codec_by_pt)
        self._cursor = 0
        self._newest: int | None = None
        self._stats = dict.fromkeys(_STAT_NAMES, 0)

    @property
    def cursor(self) -> int:
        """Frames written to the sink so far."""
        return self._cursor

    def set_codecs(self, codec_by_pt: Mapping[int, str]) -> None:
        """Replace the payload-type map (after a re-INVITE negotiated new ones)."""
        self._codecs = codec_table(codec_by_pt)

    def stats(self) -> tuple[int, ...]:
        return tuple(self._stats[k] for k in _STAT_NAMES)

    def feed(self, blob: bytes, now_ns: int | None = None) -> None:
        """Take a blob of tap records, then write out what is older than DELAY."""
        st = self._stats
        pos, n, size = 0, len(blob), TAP_HEADER.size
        while pos + size <= n:
            arrival, ssrc, ts, seq, pt, marker, direction, plen = TAP_HEADER.unpack_from(blob, pos)
            start = pos + size
            if start + plen > n:
                break
            pos = start + plen
            st["records"] += 1
            if self._newest is None or arrival > self._newest:
                self._newest = arrival
            if direction >= self._channels:
                st["ignored"] += 1
                continue
            codec = self._codecs[pt]
            if codec == 0 or plen == 0:
                st["not_audio"] += 1
                continue
            self._packet(
                self._legs[direction], arrival, ssrc, ts, seq, pt, marker, blob[start:pos], codec
            )
        if pos != n:
            st["malformed"] += 1
        if now_ns is not None and (self._newest is None or now_ns > self._newest):
            self._newest = now_ns
        if self._newest is not None:
            horizon = _frame_of(self._newest, self._started) - DELAY
            if horizon - self._cursor >= WRITE_CHUNK:
                self._advance(horizon)

    def finish(self, end_frame: int) -> int:
        """Write everything up to ``end_frame`` (audio after it is dropped); return frames."""
        self._advance(end_frame)
        return self._cursor

    # -- per packet -----------------------------------------------------------

    def _packet(
        self, leg: _Leg, arrival: int, ssrc: int, ts: int, seq: int, pt: int,
        marker: int, payload: bytes, codec: int,
    ) -> None:  # fmt: skip
        st = self._stats
        af = _frame_of(arrival, self._started)
        if not leg.anchored or ssrc != leg.ssrc or pt != leg.pt:
            self._anchor(leg, af, arrival, ssrc, ts, seq, pt, payload, codec)
            return
        dseq = ((seq - leg.max_seq + 0x8000) & 0xFFFF) - 0x8000
        dts = ((ts - leg.max_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        newest = dseq > 0
        if dseq > MAX_DROPOUT or dseq < -MAX_MISORDER:
            if seq != leg.bad_seq:
                leg.bad_seq = (seq + 1) & 0xFFFF
                st["discarded"] += 1
                return
            self._anchor(leg, af, arrival, ssrc, ts, seq, pt, payload, codec)
            return
        if newest:
            if dts < 0 or dts > MAX_TS_JUMP:
                self._anchor(leg, af, arrival, ssrc, ts, seq, pt, payload, codec)
                return
        elif dseq == 0:
            st["duplicates"] += 1
            return
        elif -dseq >= REPLAY_WINDOW:
            st["late"] += 1
            return
        elif leg.seen >> -dseq & 1:
            st["duplicates"] += 1
            return
        elif dts > 0 or dts < -MAX_TS_JUMP:
            st["discarded"] += 1
            return

        if arrival >= leg.win_end:
            self._evaluate_window(leg, arrival)
        ts_u = leg.max_ts_u + dts
        frame = ts_u + leg.offset
        lateness = af - frame
        if lateness < -MAX_EARLY:
            self._anchor(leg, af, arrival, ssrc, ts, seq, pt, payload, codec)
            return
        if newest:
            leg.seen = (leg.seen << dseq | 1) & 0xFFFFFFFFFFFFFFFF
            leg.max_seq, leg.max_ts, leg.max_ts_u = seq, ts, ts_u
        else:
            leg.seen |= 1 << -dseq
        if lateness < (0 if leg.settling else -TOLERANCE):
            # Jitter only ever delays: early packets prove the offset wrong.
            # While settling one does; after that two in a row, so that a lone
            # packet sent early (right after the one before) is placed by its
            # timestamp, and the offset moves only as far as the later of two.
            if leg.settling or leg.early is not None:
                delta = lateness if leg.early is None else max(lateness, leg.early)
                st["shifts"] += 1
                self._shift(leg, delta)
                frame += delta
                lateness -= delta
            else:
                leg.early = lateness
        else:
            leg.early = None
            if marker and newest and lateness > DELAY:
                st["resyncs"] += 1
                leg.offset += lateness
                frame, lateness = af, 0
        if leg.win_min is None or lateness < leg.win_min:
            leg.win_min = lateness
        self._place(leg, frame, payload, codec)

    def _anchor(
        self, leg: _Leg, af: int, arrival: int, ssrc: int, ts: int, seq: int, pt: int,
        payload: bytes, codec: int,
    ) -> None:  # fmt: skip
        self._stats["anchors"] += 1
        leg.anchored = True
        leg.ssrc, leg.pt = ssrc, pt
        leg.max_seq, leg.max_ts, leg.max_ts_u = seq, ts, ts
        leg.seen = 1
        leg.bad_seq = -1
        leg.offset = af - ts
        leg.settling = True
        leg.early = None
        leg.win_min = 0
        leg.win_end = arrival + SETTLE
        leg.seg_lo = leg.seg_hi = af
        self._place(leg, af, payload, codec)

    def _evaluate_window(self, leg: _Leg, arrival: int) -> None:
        err = leg.win_min
        if err is not None and err > TOLERANCE:
            # Even the least delayed packet of the window came late: the
            # sender's clock is slow, or the path got longer.
            self._stats["shifts"] += 1
            self._shift(leg, err)
        leg.settling = False
        leg.win_min = None
        leg.win_end = arrival + WINDOW

    def _shift(self, leg: _Leg, delta: int) -> None:
        """Move the leg's offset, and its not yet written audio of this segment, by delta."""
        leg.offset += delta
        leg.early = None
        cur = self._cursor
        lo, hi = max(leg.seg_lo, cur), leg.seg_hi
        leg.seg_lo += delta
        leg.seg_hi += delta
        if lo >= hi:
            return
        data = leg.buf[lo - cur : hi - cur].copy()
        leg.buf[lo - cur : hi - cur] = 0
        dst = lo + delta
        if dst < cur:
            data = data[cur - dst :]
            dst = cur
        if len(data):
            self._ensure(leg, dst + len(data))
            leg.buf[dst - cur : dst - cur + len(data)] = data
            leg.buf_hi = max(leg.buf_hi, dst + len(data))

    def _place(self, leg: _Leg, frame: int, payload: bytes, codec: int) -> None:
        cur = self._cursor
        n = len(payload)
        if frame + n <= cur:
            self._stats["late"] += 1
            return
        self._stats["audio"] += 1
        skip = cur - frame if frame < cur else 0
        end = frame + n
        self._ensure(leg, end)
        decode = _codecs.ulaw_decode_into if codec == 1 else _codecs.alaw_decode_into
        decode(payload[skip:], leg.buf, 2 * (frame + skip - cur))
        leg.buf_hi = max(leg.buf_hi, end)
        leg.seg_lo = min(leg.seg_lo, frame)
        leg.seg_hi = max(leg.seg_hi, end)

    def _ensure(self, leg: _Leg, end_frame: int) -> None:
        need = end_frame - self._cursor
        if need > len(leg.buf):
            size = len(leg.buf)
            while size < need:
                size *= 2
            grown = np.zeros(size, dtype=np.int16)
            grown[: len(leg.buf)] = leg.buf
            leg.buf = grown

    # -- write-out ------------------------------------------------------------

    def _advance(self, horizon: int) -> None:
        """Hand frames [cursor, horizon) to the sink: final from now on.

        The state moves first and the sink is called last, because a
        WavWriter that raises (a full disk) has still taken the frames and
        retries them itself; writing them again would duplicate audio.
        """
        cur = self._cursor
        if horizon <= cur:
            return
        k = horizon - cur
        data_end = max(cur, min(horizon, max(leg.buf_hi for leg in self._legs)))
        out = b""
        if data_end > cur:
            m = data_end - cur
            if self._channels == 2:
                # A leg's buffer may be shorter than m (the other one grew):
                # frames past its capacity are past its buf_hi, i.e. silence.
                frames = np.zeros((m, 2), dtype=np.int16)
                for c, leg in enumerate(self._legs):
                    avail = min(m, len(leg.buf))
                    frames[:avail, c] = leg.buf[:avail]
                out = frames.tobytes()
            else:
                out = self._legs[0].buf[:m].tobytes()
        for leg in self._legs:
            used = leg.buf_hi - cur
            if used <= 0:
                continue
            rest = leg.buf_hi - horizon
            if rest > 0:
                leg.buf[:rest] = leg.buf[k : k + rest]
                leg.buf[rest:used] = 0
            else:
                leg.buf[:used] = 0
        self._cursor = horizon
        if out:
            self._sink.write(out)
        if horizon > data_end:
            self._sink.write_silence(horizon - data_end)


def _compiled_aligner() -> type[AlignerLike] | None:
    try:
        from mediacore.rtp._recorder import Aligner as Compiled
    except ImportError:  # not built: setup.py build_ext
        return None
    return Compiled  # type: ignore[no-any-return]


class CallRecorder:
    """Record one call (stereo) or one caller (mono, for voicemail) to a WAV file.

    Feed it every tap blob of the call with :meth:`feed`; the engine may also
    call ``feed(b"", now_ns)`` while no packets flow so the file keeps
    growing with silence (otherwise silence is written when packets resume
    or at close). :meth:`close` finishes the file at ``ended_ns`` and hashes
    it. Not thread-safe; one call, one recorder.

    ``codec_by_pt`` maps the call's negotiated payload types to "ulaw" or
    "alaw"; :meth:`set_codecs` replaces it after a re-INVITE. With
    ``channels=1`` only direction 0 (the caller) is recorded.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        codec_by_pt: Mapping[int, str],
        started_ns: int,
        channels: int = 2,
        sync_interval: float = 1.0,
        fsync: bool = False,
        implementation: Literal["compiled", "reference"] = "compiled",
    ) -> None:
        if implementation == "compiled":
            factory = _compiled_aligner()
            if factory is None:
                raise ImportError(
                    "mediacore.rtp._recorder is not built: run "
                    "`python setup.py build_ext --inplace` (or pip install .)"
                )
        elif implementation == "reference":
            factory = ReferenceAligner
        else:
            raise ValueError(
                f"implementation must be 'compiled' or 'reference', not {implementation!r}"
            )
        codec_table(codec_by_pt)  # validate before creating the file
        try:
            self._writer = WavWriter(
                path, sample_rate=RATE, channels=channels, sync_interval=sync_interval,
                fsync=fsync,
            )
        except OSError as error:
            # Created but not even its header fits (a full disk): not a WAV.
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise RecordingError(reason_of(error), os.fspath(path), error) from error
        try:
            self._aligner = factory(
                self._writer, started_ns=started_ns, codec_by_pt=codec_by_pt, channels=channels
            )
        except BaseException:
            self._writer.close()
            raise
        self._started = started_ns
        self._info: RecordingInfo | None = None
        self._error: BaseException | None = None
        self._reason = ""

    @property
    def path(self) -> str:
        return self._writer.path

    @property
    def error(self) -> str:
        """Empty while recording; after a failure, why (``disk-full``, ``io-error``...)."""
        return self._reason

    @property
    def failure(self) -> BaseException | None:
        """The error that stopped the recording, if one did."""
        return self._error

    def fail(self, error: BaseException) -> None:
        """Stop recording for good after ``error``: the file keeps what reached it.

        The recorder calls this itself when the disk refuses audio; its owner
        calls it for anything else that went wrong feeding it. Later feeds are
        ignored, and :meth:`close` reports the file as it stands. Idempotent:
        the first error is the one reported.
        """
        if self._reason:
            return
        self._error = error
        self._reason = reason_of(error)
        self._writer.abandon()

    @property
    def frames_written(self) -> int:
        """Frames handed to the writer so far (the write position)."""
        return self._aligner.cursor

    @property
    def stats(self) -> RecorderStats:
        return RecorderStats(*self._aligner.stats())

    def set_codecs(self, codec_by_pt: Mapping[int, str]) -> None:
        self._aligner.set_codecs(codec_by_pt)

    def feed(self, blob: bytes, now_ns: int | None = None) -> None:
        """Record a blob of tap records; ``now_ns`` (monotonic) may advance the clock."""
        if self._info is not None:
            raise ValueError(f"feed after close ({self.path})")
        if self._reason:
            return  # failed: the call goes on unrecorded
        try:
            self._aligner.feed(blob, now_ns)
        except (OSError, OverflowError) as error:
            # The disk refused the audio (full, read-only, failing) or the
            # file reached 4 GiB: stop here rather than retry with a buffer
            # that only grows; the caller learns of it from the exception.
            self.fail(error)
            raise

    def close(self, ended_ns: int) -> RecordingInfo:
        """Finish the file so that it spans exactly ``started_ns`` to ``ended_ns``.

        Idempotent: a second call returns the first result. The file is read
        back to hash it (about 80 ms per hour of stereo audio, 115 MB, on
        a CPU with SHA extensions); for long calls run this in an executor,
        not on the event loop. If records arrived more than DELAY after
        ``ended_ns`` the file is already longer and stays so (``frames``
        says by how much).

        Never raises for the disk: if it failed, now or earlier, the file
        keeps the audio that reached it (a valid WAV; ``error`` says why it
        is short). Only when no audio reached it, or it cannot be read back,
        is it removed and :class:`RecordingError` raised.
        """
        if self._info is not None:
            return self._info
        end_frame = max(0, _frame_of(ended_ns, self._started))
        if not self._reason:
            try:
                self._aligner.finish(end_frame)
                self._writer.flush()  # what fails on a full disk fails here, not in close
            except (OSError, OverflowError) as error:
                self.fail(error)
        if not self._reason:
            try:
                self._writer.close()
            except OSError as error:
                self.fail(error)  # the writer's close already fixed the header
        frames = self._writer.frames_written
        path = self._writer.path
        if self._reason and frames == 0:
            self._discard(self._error or OSError(self._reason))
        try:
            with open(path, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            size = os.stat(path).st_size
        except OSError as error:
            self._discard(error)
        self._info = RecordingInfo(
            path=path,
            duration=frames / RATE,
            bytes=size,
            frames=frames,
            sha256=digest,
            sample_rate=RATE,
            channels=self._writer.channels,
            stats=self.stats,
            error=self._reason,
        )
        return self._info

    def _discard(self, error: BaseException) -> NoReturn:
        """No file worth a handle (no audio reached it, or it cannot be read): remove it."""
        with contextlib.suppress(OSError):
            os.unlink(self._writer.path)
        raise RecordingError(self._reason or reason_of(error), self._writer.path, error)
