"""Announcement playback: a prompt file in, paced G.711 RTP packets out.

A prompt is read once (any format and rate soundfile reads: WAV, FLAC,
OGG...), turned into what a call can carry, 8 kHz mono 16-bit, and cached
together with its mu-law and A-law encodings. Playing it to a call is then
slicing bytes: a :class:`PromptPlayer` yields the RTP packets, and
:func:`play` sends them at the packet time.

Resampling. The shipped prompts (``mediacore/data/announcements/``, made by
the repository's ``announcements/render.sh``) are 8 kHz already (sox's
``rate`` does the work there). For other files we resample
here with a windowed-sinc polyphase filter in numpy (:func:`resample`):
Kaiser window, beta 8 (about 80 dB stopband), 32 zero crossings either side
at the lower rate, cutoff at 0.91 x the lower Nyquist frequency. Measured
going to 8 kHz from 11.025-48 kHz (tests/unit/test_player.py checks it):
flat within 0.01 dB up to 3.3 kHz, -4 dB at 3.6 kHz, -45 dB at 3.9 kHz and
at least 90 dB down from 4.2 kHz, so what would alias is far below G.711's
own noise floor (~38 dB SNR); the telephone band ends at 3.4 kHz. libsoxr
(the python-soxr package) is the best tool of this field and would be
faster, but it would be a new binary dependency for work done once per
prompt file, and the prompts we ship are resampled by sox (which uses the
same algorithm family) before they get here; the tests measure what this
filter does instead.
Channels are averaged (a stereo prompt's two channels carry the same speech,
and averaging cannot clip).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import glob
import math
import os
import re
import shutil
import struct
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Final, Literal

import numpy as np
import soundfile as sf

from mediacore import _codecs

__all__ = [
    "RATE",
    "Prompt",
    "PromptLibrary",
    "PromptPlayer",
    "default_directory",
    "load_prompt",
    "play",
    "resample",
]

RATE: Final = 8000
Codec = Literal["ulaw", "alaw"]

_ENCODERS: Final = {"ulaw": _codecs.ulaw_encode, "alaw": _codecs.alaw_encode}
_RTP_HEADER: Final = struct.Struct("!BBHII")
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# Resampling filter (see the module docstring).
_ZEROS: Final = 32
_BETA: Final = 8.0
_ROLLOFF: Final = 0.91
_CHUNK: Final = 1024  # output samples per vectorised step: bounds temporary memory

# File extensions tried for a prompt name: soundfile's format names double as
# the usual extensions (wav, flac, ogg, aiff, mp3...), plus common aliases.
_EXTENSIONS: Final = {f.lower() for f in sf.available_formats()} | {"oga", "opus", "aif"}


#: Where the shipped prompts live inside the package (``[storage] announcements``
#: unset means these); ``announcements/render.sh`` in the repository makes them.
SHIPPED: Final = ("data", "announcements")


@functools.cache
def default_directory() -> Path:
    """The prompts shipped in the package, as a directory (config may point elsewhere).

    Found through ``importlib.resources``, not relative to a checkout, so an
    installed wheel finds them wherever it is installed. Installed packages
    are plain directories, used in place; a package imported from a zip
    archive has its prompts copied out once, to a temporary directory that
    lives as long as the process, because prompts are read by path
    (libsndfile, and ``path_of``'s globbing). Cached: one lookup (and at most
    one copy) per process.
    """
    shipped = resources.files("mediacore").joinpath(*SHIPPED)
    if isinstance(shipped, Path):
        return shipped
    return _extract(shipped)


def _extract(shipped: Traversable) -> Path:
    """Copy the prompt files of a non-filesystem package into a directory of their own."""
    target = Path(tempfile.mkdtemp(prefix="mediacore-prompts-"))
    atexit.register(shutil.rmtree, target, ignore_errors=True)
    for entry in shipped.iterdir():
        if entry.is_file():
            (target / entry.name).write_bytes(entry.read_bytes())
    return target


@dataclass(frozen=True, eq=False)
class Prompt:
    """A prompt ready to play: 8 kHz mono signed 16-bit little-endian PCM.

    ``name`` is the file's name without extension; ``path`` the file it came from.
    """

    name: str
    path: str
    pcm: bytes
    _encoded: dict[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def frames(self) -> int:
        return len(self.pcm) // 2

    @property
    def duration(self) -> float:
        return self.frames / RATE

    def samples(self) -> np.ndarray:
        """The PCM as an int16 array (a read-only view)."""
        return np.frombuffer(self.pcm, dtype="<i2")

    def encoded(self, codec: Codec) -> bytes:
        """The whole prompt in G.711, encoded on first use and kept: a call plays slices."""
        try:
            return self._encoded[codec]
        except KeyError:
            pass
        try:
            encode = _ENCODERS[codec]
        except KeyError:
            raise ValueError(f"codec must be 'ulaw' or 'alaw', not {codec!r}") from None
        data = self._encoded[codec] = encode(self.pcm)
        return data


def resample(x: np.ndarray, rate_in: int, rate_out: int = RATE) -> np.ndarray:
    """Resample a 1-D float signal by the exact ratio rate_out/rate_in.

    Polyphase: the signal is notionally upsampled by ``up``, low-pass
    filtered and decimated by ``down`` (``up/down`` = the ratio in lowest
    terms), computing only the outputs that are kept. The filter is centred,
    so there is no delay: output sample i is at time i / rate_out. The
    output has ceil(len * rate_out / rate_in) samples.
    """
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"sample rates must be positive, got {rate_in} -> {rate_out}")
    x = np.asarray(x, dtype=np.float64)
    g = math.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    if up == down:
        return x.copy()
    wide = max(up, down)
    half = _ZEROS * wide
    cutoff = _ROLLOFF * 0.5 / wide  # cycles per sample at the upsampled rate
    taps = np.arange(-half, half + 1)
    h = 2 * cutoff * np.sinc(2 * cutoff * taps) * np.kaiser(2 * half + 1, _BETA) * up
    n_out = -(-len(x) * up // down)
    k_max = 2 * half // up + 2
    pad = k_max + 1
    xp = np.concatenate([np.zeros(pad), x, np.zeros(pad)])
    out = np.empty(n_out)
    ks = np.arange(k_max)
    for start in range(0, n_out, _CHUNK):
        t = np.arange(start, min(n_out, start + _CHUNK), dtype=np.int64) * down
        j = (-((half - t) // up))[:, None] + ks  # input samples within reach of t
        hi = t[:, None] - j * up + half  # their filter taps
        valid = (hi >= 0) & (hi <= 2 * half)
        coeff = np.where(valid, h[np.clip(hi, 0, 2 * half)], 0.0)
        out[start : start + len(t)] = (coeff * xp[j + pad]).sum(axis=1)
    return out


def _to_pcm16(y: np.ndarray) -> bytes:
    # soundfile reads 16-bit files as n / 32768, so this undoes it exactly.
    return np.clip(np.round(y * 32768.0), -32768, 32767).astype("<i2").tobytes()


_cache: dict[str, tuple[tuple[int, int], Prompt]] = {}


def load_prompt(path: str | os.PathLike[str]) -> Prompt:
    """Read a prompt file and convert it to 8 kHz mono 16-bit, once.

    Cached by path, size and modification time: a replaced file is read
    again, an unchanged one never. Conversion of a long 44.1 kHz file takes
    a few hundred ms, so load (or :meth:`PromptLibrary.preload`) prompts at
    start-up, not on the event loop in the middle of a call.
    """
    p = os.path.realpath(path)
    st = os.stat(p)
    key = (st.st_size, st.st_mtime_ns)
    hit = _cache.get(p)
    if hit is not None and hit[0] == key:
        return hit[1]
    try:
        data, rate = sf.read(p, dtype="float64", always_2d=True)
    except sf.LibsndfileError as e:
        raise ValueError(f"{p}: not an audio file soundfile can read ({e})") from None
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    prompt = Prompt(name=Path(p).stem, path=p, pcm=_to_pcm16(resample(mono, rate, RATE)))
    _cache[p] = (key, prompt)
    return prompt


class PromptLibrary:
    """The prompts in a directory, by name: ``recording-notice`` is ``recording-notice.*``.

    The name is the config's ``announcement`` value; the file may be in any
    format soundfile reads. Two files with the same name and different
    extensions are an error rather than a guess.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_directory()

    def path_of(self, name: str) -> Path:
        if not _NAME.fullmatch(name):
            raise ValueError(f"prompt name {name!r}: use letters, digits, '.', '_', '-' only")
        exact = self.directory / name
        if exact.suffix and exact.is_file():
            return exact
        found = sorted(
            p for p in self.directory.glob(f"{glob.escape(name)}.*")
            if p.is_file() and p.suffix.lower().lstrip(".") in _EXTENSIONS
        )  # fmt: skip
        if not found:
            raise FileNotFoundError(f"no prompt {name!r} in {self.directory}")
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise ValueError(f"prompt {name!r} is ambiguous in {self.directory}: {names}")
        return found[0]

    def get(self, name: str) -> Prompt:
        return load_prompt(self.path_of(name))

    def preload(self, names: list[str]) -> list[Prompt]:
        """Load (and convert) prompts now, e.g. every ``announcement`` in the config."""
        return [self.get(n) for n in names]


class PromptPlayer:
    """The RTP packets of one prompt, for one stream: an iterator of bytes.

    Each packet is a 12-byte RTP header (version 2, no CSRC) and ``ptime_ms``
    of G.711; sequence numbers and timestamps continue from ``start_seq`` and
    ``start_ts`` (the stream's own, when the prompt is spliced into a call's
    outgoing audio) and the first packet carries the marker bit, because it
    starts a talkspurt. The last packet is padded with encoded silence so
    every packet has the same duration. :attr:`seq` and :attr:`timestamp` are
    always the *next* values, also after a cancelled playback, so the stream
    can go on without a jump.
    """

    def __init__(
        self,
        prompt: Prompt,
        codec: Codec,
        payload_type: int,
        ssrc: int,
        start_seq: int,
        start_ts: int,
        ptime_ms: int = 20,
    ) -> None:
        if not 0 <= payload_type <= 127:
            raise ValueError(f"payload_type must be 0-127, not {payload_type}")
        if not 0 <= ssrc <= 0xFFFFFFFF:
            raise ValueError(f"ssrc must be a 32-bit unsigned integer, not {ssrc}")
        if not (isinstance(ptime_ms, int) and 0 < ptime_ms <= 1000):
            raise ValueError(f"ptime_ms must be an int from 1 to 1000, not {ptime_ms!r}")
        self.prompt = prompt
        self.codec: Codec = codec
        self.payload_type = payload_type
        self.ssrc = ssrc
        self.ptime_ms = ptime_ms
        self.samples_per_packet = RATE * ptime_ms // 1000
        self.count = -(-prompt.frames // self.samples_per_packet)
        spp = self.samples_per_packet
        silence = _ENCODERS[codec](b"\x00\x00")  # mu-law 0xFF, A-law 0xD5
        self._payload = prompt.encoded(codec) + silence * (self.count * spp - prompt.frames)
        self.seq = start_seq & 0xFFFF
        self.timestamp = start_ts & 0xFFFFFFFF
        self.sent = 0

    @property
    def ptime(self) -> float:
        """Seconds between packets."""
        return self.ptime_ms / 1000

    @property
    def duration(self) -> float:
        """Seconds of audio in all packets (the prompt, padded to whole packets)."""
        return self.count * self.ptime

    @property
    def remaining(self) -> int:
        return self.count - self.sent

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        i = self.sent
        if i >= self.count:
            raise StopIteration
        spp = self.samples_per_packet
        header = _RTP_HEADER.pack(
            0x80,
            (0x80 if i == 0 else 0) | self.payload_type,
            self.seq,
            self.timestamp,
            self.ssrc,
        )
        self.sent = i + 1
        self.seq = (self.seq + 1) & 0xFFFF
        self.timestamp = (self.timestamp + spp) & 0xFFFFFFFF
        return header + self._payload[i * spp : (i + 1) * spp]


async def play(
    player: PromptPlayer,
    send: Callable[[bytes], None],
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    start: float | None = None,
) -> int:
    """Send the player's packets at the packet time; return how many were sent.

    Packet n is due at ``start + n * ptime`` (``start`` defaults to now), an
    absolute schedule: a late wake-up delays one packet, never the ones
    after it, and packets already overdue (the loop was blocked) go out at
    once to catch up. Returns when the last packet's time slot has ended,
    i.e. when the prompt has been heard, so whatever is sent next continues
    the same schedule. Cancel the task to stop (the caller hung up): the
    packet in hand is not sent, and ``player.seq``/``player.timestamp`` are
    where the stream continues.
    """
    t0 = clock() if start is None else start
    interval = player.ptime
    first = player.sent
    for n in range(first, player.count):
        delay = t0 + (n - first) * interval - clock()
        if delay > 0:
            await sleep(delay)
        send(next(player))
    delay = t0 + (player.count - first) * interval - clock()
    if delay > 0:
        await sleep(delay)
    return player.sent - first
