"""G.711 kernels for the media path: mu-law/A-law decode and encode, stereo interleave.

Exactness. Every function here is bit-identical to the standard library's
``audioop`` (``ulaw2lin``/``alaw2lin``/``lin2ulaw``/``lin2alaw`` with width 2),
which implements ITU-T G.711 the way the Sun reference code (g711.c) does. The
tables below are computed at import from that reference algorithm, not copied
from audioop, so the module keeps working where audioop is gone (3.13+); the
unit tests compare all 256 codes and all 65,536 samples of both laws against
audioop (or audioop-lts) exhaustively.

Tables. Decoding is one lookup per byte in a 256-entry table of 16-bit samples
(512 bytes per law). Encoding is one lookup per sample in a table indexed by
the sample's top bits: G.711 looks only at the top 14 bits for mu-law and the
top 13 bits for A-law (audioop shifts right by 2 and by 3 before it encodes,
rounding towards minus infinity), so the tables have 16,384 and 8,192 one-byte
entries. 24 KiB for both laws stays in L1 cache next to the data stream; a full
65,536-entry table (64 KiB per law, no shift) measured no faster per packet and
10-15% slower on 1 MiB of noise (benchmarks/RESULTS.md).

Byte order. PCM is 16-bit signed little-endian, as in WAV and as audioop
produces on the machines we run on. The kernels never load or store a native
``int16``: decode tables hold the two little-endian bytes of each sample and
are copied out with ``memcpy``, and encode assembles each sample from its two
bytes. The result is the same on a big-endian host; the compiler turns both
into plain 16-bit moves on x86_64.

Input buffers. Anything with the buffer protocol is read as raw bytes: bytes,
bytearray, memoryview, array.array, numpy arrays (an int16 array is exactly
16-bit PCM in native order, i.e. little-endian on x86_64). ``bytes`` is read
directly, without acquiring a buffer, because it is what sockets hand us. A
buffer that is not C-contiguous (a strided numpy view, a sliced memoryview with
a step) is refused with ValueError rather than copied behind the caller's
back: on the media path a hidden copy is a bug to fix, not to absorb.

The GIL. The loops run in a fraction of a microsecond for a 20 ms packet, where
releasing and re-taking the GIL would cost more than the work and, with other
threads around, could make the event loop wait for them. So the GIL is released
only when the (longer) input has at least ``NOGIL_MIN_BYTES`` (64 KiB), where a
worker thread decoding a whole recording gains more than it pays.
"""

from typing import Final, SupportsIndex

from typing_extensions import Buffer

__all__ = [
    "NOGIL_MIN_BYTES",
    "alaw_decode",
    "alaw_decode_into",
    "alaw_decode_stereo",
    "alaw_encode",
    "interleave",
    "ulaw_decode",
    "ulaw_decode_into",
    "ulaw_decode_stereo",
    "ulaw_encode",
]

NOGIL_MIN_BYTES: Final[int]
"""Inputs at least this long (bytes) are processed with the GIL released."""

def ulaw_decode(data: Buffer, /) -> bytes:
    """Decode G.711 mu-law bytes to 16-bit little-endian PCM, one sample per byte.

    Bit-identical to ``audioop.ulaw2lin(data, 2)`` for every code. Takes any
    C-contiguous buffer so that a payload sliced out of a received datagram
    (a memoryview) is decoded without copying it first.
    """

def alaw_decode(data: Buffer, /) -> bytes:
    """Decode G.711 A-law bytes to 16-bit little-endian PCM, one sample per byte.

    Bit-identical to ``audioop.alaw2lin(data, 2)`` for every code. Takes any
    C-contiguous buffer so that a payload sliced out of a received datagram
    (a memoryview) is decoded without copying it first.
    """

def ulaw_encode(pcm: Buffer, /) -> bytes:
    """Encode 16-bit little-endian PCM to G.711 mu-law, one byte per sample.

    Bit-identical to ``audioop.lin2ulaw(pcm, 2)`` for every sample, including
    its rounding (mu-law only sees the top 14 bits). A numpy int16 array is
    accepted as is, because announcements are prepared with numpy. Odd byte
    lengths are a ValueError: half a sample means the caller lost track of the
    framing, and guessing would put noise on the line.
    """

def alaw_encode(pcm: Buffer, /) -> bytes:
    """Encode 16-bit little-endian PCM to G.711 A-law, one byte per sample.

    Bit-identical to ``audioop.lin2alaw(pcm, 2)`` for every sample, including
    its rounding (A-law only sees the top 13 bits). A numpy int16 array is
    accepted as is, because announcements are prepared with numpy. Odd byte
    lengths are a ValueError: half a sample means the caller lost track of the
    framing, and guessing would put noise on the line.
    """

def interleave(left_pcm: Buffer, right_pcm: Buffer, /) -> bytes:
    """Merge two mono 16-bit PCM streams into one stereo stream (L R L R ...).

    The shorter side is padded with silence (zero samples) to the length of
    the longer one, because a recording must keep both channels aligned in
    time even while only one party's audio arrives (one-way audio, or one leg
    on hold). Odd byte lengths are a ValueError, as in the encoders.
    """

def ulaw_decode_stereo(left_payload: Buffer, right_payload: Buffer, /) -> bytes:
    """Decode two mu-law payloads straight into interleaved stereo 16-bit PCM.

    Equal to ``interleave(ulaw_decode(left), ulaw_decode(right))`` without the
    two intermediate objects, for the recorder (caller left, callee right).
    The shorter payload is padded with silence, PCM zero, as in interleave.
    """

def alaw_decode_stereo(left_payload: Buffer, right_payload: Buffer, /) -> bytes:
    """Decode two A-law payloads straight into interleaved stereo 16-bit PCM.

    Equal to ``interleave(alaw_decode(left), alaw_decode(right))`` without the
    two intermediate objects, for the recorder (caller left, callee right).
    The shorter payload is padded with silence: PCM zero, not the A-law
    "zero" code 0xD5, which decodes to +8.
    """

def ulaw_decode_into(
    data: Buffer,
    out: Buffer,
    offset: SupportsIndex = 0,
    *,
    channels: SupportsIndex = 1,
    channel: SupportsIndex = 0,
) -> int:
    """Decode mu-law bytes into a caller-provided writable buffer; return the end offset.

    Sample i goes to byte ``offset + 2 * (i * channels + channel)`` of ``out``;
    the other channels' bytes are left as they are. This lets the recorder
    keep one preallocated stereo buffer (zeroed, i.e. silent) and decode each
    leg's packet into its own channel at the frame its timestamp says, as the
    packets arrive, with no object allocated per packet. Returns
    ``offset + 2 * channels * n`` for n payload bytes, the offset of the next
    frame, so calls chain. Raises ValueError, writing nothing, if ``out`` is too short
    or shares memory with ``data`` (decoding in place cannot work: the output
    is twice as wide as the input).
    """

def alaw_decode_into(
    data: Buffer,
    out: Buffer,
    offset: SupportsIndex = 0,
    *,
    channels: SupportsIndex = 1,
    channel: SupportsIndex = 0,
) -> int:
    """Decode A-law bytes into a caller-provided writable buffer; return the end offset.

    Sample i goes to byte ``offset + 2 * (i * channels + channel)`` of ``out``;
    the other channels' bytes are left as they are. This lets the recorder
    keep one preallocated stereo buffer (zeroed, i.e. silent) and decode each
    leg's packet into its own channel at the frame its timestamp says, as the
    packets arrive, with no object allocated per packet. Returns
    ``offset + 2 * channels * n`` for n payload bytes, the offset of the next
    frame, so calls chain. Raises ValueError, writing nothing, if ``out`` is too short
    or shares memory with ``data`` (decoding in place cannot work: the output
    is twice as wide as the input).
    """
