# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, always_allow_keywords=False, binding=False
# cython: embedsignature=True, embedsignature.format=clinic
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

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_CheckBuffer
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

import sys

cdef extern from "Python.h":
    # Declared without Cython's "except -1" so that a failure lands in our own
    # cold path, which turns it into a message that names the argument.
    int _get_buffer "PyObject_GetBuffer"(object obj, Py_buffer *view, int flags)

cdef extern from *:
    """
    /* Take the pending exception (there must be one) as a new reference. */
    static PyObject *mediacore_take_error(void) {
    #if PY_VERSION_HEX >= 0x030C0000
        return PyErr_GetRaisedException();
    #else
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL) {
            PyException_SetTraceback(value, tb);
        }
        Py_XDECREF(type);
        Py_XDECREF(tb);
        return value;
    #endif
    }
    """
    object _take_pending_error "mediacore_take_error"()

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

cdef enum:
    _NOGIL_MIN = 65536
NOGIL_MIN_BYTES = _NOGIL_MIN

# --------------------------------------------------------------------------
# Tables, built once at import from the G.711 reference algorithm.

cdef uint16_t _ULAW_DEC[256]     # little-endian bytes of each decoded sample
cdef uint16_t _ALAW_DEC[256]
cdef uint8_t _ULAW_ENC[16384]    # indexed by (uint16)sample >> 2
cdef uint8_t _ALAW_ENC[8192]     # indexed by (uint16)sample >> 3

cdef int _ulaw_to_linear(int u) noexcept nogil:
    cdef int t
    u = ~u & 0xFF
    t = ((u & 0x0F) << 3) + 0x84
    t <<= (u & 0x70) >> 4
    return (0x84 - t) if (u & 0x80) else (t - 0x84)

cdef int _alaw_to_linear(int a) noexcept nogil:
    cdef int t, seg
    a ^= 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if (a & 0x80) else -t

cdef int _linear14_to_ulaw(int p) noexcept nogil:
    # p is the sample shifted right by 2 (-8192..8191), as audioop does.
    cdef int mask, seg, end
    if p < 0:
        p = -p
        mask = 0x7F
    else:
        mask = 0xFF
    p += 0x84 >> 2
    seg = 0
    end = 0x3F
    while seg < 8 and p > end:
        seg += 1
        end = (end << 1) | 1
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((p >> (seg + 1)) & 0x0F)) ^ mask

cdef int _linear13_to_alaw(int p) noexcept nogil:
    # p is the sample shifted right by 3 (-4096..4095), as audioop does.
    cdef int mask, seg, end, q
    if p >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        p = -p - 1
    seg = 0
    end = 0x1F
    while seg < 8 and p > end:
        seg += 1
        end = (end << 1) | 1
    if seg >= 8:
        return 0x7F ^ mask
    q = (p >> 1) if seg < 2 else (p >> seg)
    return ((seg << 4) | (q & 0x0F)) ^ mask

cdef uint16_t _le16(int v) noexcept nogil:
    # The uint16 whose in-memory bytes are v in little-endian order, whatever
    # the host's byte order: the kernels memcpy these two bytes out.
    cdef uint8_t b[2]
    cdef uint16_t r
    b[0] = v & 0xFF
    b[1] = (v >> 8) & 0xFF
    memcpy(&r, b, 2)
    return r

cdef void _build_tables() noexcept nogil:
    cdef int i
    for i in range(256):
        _ULAW_DEC[i] = _le16(_ulaw_to_linear(i))
        _ALAW_DEC[i] = _le16(_alaw_to_linear(i))
    # Index i holds the top bits of a sample as an unsigned number; values
    # with the top bit set are the negative samples.
    for i in range(16384):
        _ULAW_ENC[i] = <uint8_t>_linear14_to_ulaw(i - 16384 if i >= 8192 else i)
    for i in range(8192):
        _ALAW_ENC[i] = <uint8_t>_linear13_to_alaw(i - 8192 if i >= 4096 else i)

_build_tables()

# --------------------------------------------------------------------------
# Inner loops. Plain C, no Python objects, callable without the GIL.
#
# On a little-endian host (x86_64, arm64) the loops handle 4 samples per step
# with one 8-byte load or store instead of 4 small ones: per call, measured
# 1.1-1.3x faster for decode and 1.3-1.4x for encode and stereo decode than
# one sample per step, at packet size and at 1 MiB (benchmarks/RESULTS.md).
# The one-sample loop is the portable definition; it finishes the last 0-3
# samples of every call, so the tests exercise it, and it does all the work on
# a big-endian host.

cdef bint _LITTLE = sys.byteorder == "little"

cdef inline void _decode_1(const uint8_t *src, Py_ssize_t n, uint8_t *dst, Py_ssize_t step,
                           const uint16_t *table) noexcept nogil:
    # Portable: writes sample i's two little-endian bytes at dst + step * i.
    cdef Py_ssize_t i
    cdef uint16_t v
    for i in range(n):
        v = table[src[i]]
        memcpy(dst + step * i, &v, 2)

cdef inline void _decode(const uint8_t *src, Py_ssize_t n, uint8_t *dst,
                         const uint16_t *table) noexcept nogil:
    cdef Py_ssize_t i = 0
    cdef uint64_t w
    if _LITTLE:
        while i + 4 <= n:
            w = (<uint64_t>table[src[i]]
                 | (<uint64_t>table[src[i + 1]] << 16)
                 | (<uint64_t>table[src[i + 2]] << 32)
                 | (<uint64_t>table[src[i + 3]] << 48))
            memcpy(dst + 2 * i, &w, 8)
            i += 4
    _decode_1(src + i, n - i, dst + 2 * i, 2, table)

cdef inline void _decode_stereo(const uint8_t *left, Py_ssize_t nl,
                                const uint8_t *right, Py_ssize_t nr,
                                uint8_t *dst, const uint16_t *table) noexcept nogil:
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t n = nl if nl < nr else nr
    cdef uint64_t w
    if _LITTLE:
        while i + 2 <= n:
            w = (<uint64_t>table[left[i]]
                 | (<uint64_t>table[right[i]] << 16)
                 | (<uint64_t>table[left[i + 1]] << 32)
                 | (<uint64_t>table[right[i + 1]] << 48))
            memcpy(dst + 4 * i, &w, 8)
            i += 2
    _decode_1(left + i, n - i, dst + 4 * i, 4, table)
    _decode_1(right + i, n - i, dst + 4 * i + 2, 4, table)
    # One-way audio: the missing side is silence (PCM zero).
    if nl > n:
        memset(dst + 4 * n, 0, 4 * (nl - n))
        _decode_1(left + n, nl - n, dst + 4 * n, 4, table)
    elif nr > n:
        memset(dst + 4 * n, 0, 4 * (nr - n))
        _decode_1(right + n, nr - n, dst + 4 * n + 2, 4, table)

cdef inline void _encode(const uint8_t *src, Py_ssize_t n, uint8_t *dst,
                         const uint8_t *table, int shift) noexcept nogil:
    # shift is 2 (mu-law, 14-bit table) or 3 (A-law, 13-bit table).
    cdef Py_ssize_t i = 0
    cdef uint64_t x
    cdef uint32_t o
    cdef unsigned int v
    cdef unsigned int mask = 0xFFFF >> shift
    if _LITTLE:
        while i + 4 <= n:
            memcpy(&x, src + 2 * i, 8)
            o = (<uint32_t>table[(x >> shift) & mask]
                 | (<uint32_t>table[(x >> (16 + shift)) & mask] << 8)
                 | (<uint32_t>table[(x >> (32 + shift)) & mask] << 16)
                 | (<uint32_t>table[(x >> (48 + shift)) & mask] << 24))
            memcpy(dst + i, &o, 4)
            i += 4
    while i < n:
        v = src[2 * i] | (<unsigned int>src[2 * i + 1] << 8)
        dst[i] = table[v >> shift]
        i += 1

cdef inline void _interleave(const uint8_t *left, Py_ssize_t nl,
                             const uint8_t *right, Py_ssize_t nr, uint8_t *dst) noexcept nogil:
    # nl and nr count samples (2 bytes each).
    cdef Py_ssize_t i
    cdef Py_ssize_t n = nl if nl < nr else nr
    for i in range(n):
        memcpy(dst + 4 * i, left + 2 * i, 2)
        memcpy(dst + 4 * i + 2, right + 2 * i, 2)
    if nl > n:
        memset(dst + 4 * n, 0, 4 * (nl - n))
        for i in range(n, nl):
            memcpy(dst + 4 * i, left + 2 * i, 2)
    elif nr > n:
        memset(dst + 4 * n, 0, 4 * (nr - n))
        for i in range(n, nr):
            memcpy(dst + 4 * i + 2, right + 2 * i, 2)

# --------------------------------------------------------------------------
# Argument handling. The hot path is: bytes -> pointer, no buffer acquired;
# anything else -> one PyObject_GetBuffer. Errors go to cold functions.

cdef int _not_a_buffer(object obj, str func, str arg) except -1:
    raise TypeError(
        f"{func}() argument '{arg}' must be a bytes-like object (bytes, bytearray, "
        f"memoryview or a contiguous array), not {type(obj).__name__}"
    )

cdef int _buffer_failed(object obj, str func, str arg) except -1:
    # Called with the exporter's exception pending.
    exc = _take_pending_error()
    if isinstance(exc, (BufferError, ValueError)):
        hint = ("decode into a contiguous buffer and copy from there" if arg == "out"
                else "copy it with bytes() or numpy.ascontiguousarray() first")
        raise ValueError(
            f"{func}() argument '{arg}' must be a C-contiguous buffer, which this "
            f"{type(obj).__name__} could not provide ({exc}); {hint}"
        ) from exc
    raise exc

cdef int _writable_failed(object obj, str func, str arg) except -1:
    # Called with the exporter's exception pending: read-only or non-contiguous?
    cdef Py_buffer view
    exc = _take_pending_error()
    if not isinstance(exc, (BufferError, ValueError, TypeError)):
        raise exc
    if _get_buffer(obj, &view, PyBUF_SIMPLE) == 0:
        PyBuffer_Release(&view)
        raise TypeError(
            f"{func}() argument '{arg}' must be a writable buffer (bytearray, writable "
            f"memoryview or array), not a read-only {type(obj).__name__}"
        ) from exc
    _buffer_failed(obj, func, arg)
    return -1

cdef inline int _acquire(object obj, Py_buffer *view, const uint8_t **ptr, Py_ssize_t *n,
                         str func, str arg) except -1:
    """Point ptr/n at obj's bytes; returns 1 if view must be released."""
    if PyBytes_CheckExact(obj):
        ptr[0] = <const uint8_t *>PyBytes_AS_STRING(obj)
        n[0] = PyBytes_GET_SIZE(obj)
        return 0
    if not PyObject_CheckBuffer(obj):
        _not_a_buffer(obj, func, arg)
    if _get_buffer(obj, view, PyBUF_SIMPLE) < 0:
        _buffer_failed(obj, func, arg)
    ptr[0] = <const uint8_t *>view.buf
    n[0] = view.len
    return 1

cdef int _odd_length(Py_ssize_t n, str func, str arg) except -1:
    raise ValueError(
        f"{func}() argument '{arg}' must be 16-bit PCM, a whole number of 2-byte "
        f"samples; got {n} bytes"
    )

# --------------------------------------------------------------------------
# Public API. Docstrings here and in _codecs.pyi are kept identical (a test
# checks it).

cdef inline bytes _decode_obj(object data, const uint16_t *table, str func):
    cdef Py_buffer view
    cdef const uint8_t *src
    cdef Py_ssize_t n
    cdef int held = _acquire(data, &view, &src, &n, func, "data")
    cdef bytes out
    cdef uint8_t *dst
    try:
        out = PyBytes_FromStringAndSize(NULL, 2 * n)
        dst = <uint8_t *>PyBytes_AS_STRING(out)
        if n >= _NOGIL_MIN:
            with nogil:
                _decode(src, n, dst, table)
        else:
            _decode(src, n, dst, table)
    finally:
        if held:
            PyBuffer_Release(&view)
    return out


def ulaw_decode(data, /):
    """Decode G.711 mu-law bytes to 16-bit little-endian PCM, one sample per byte.

    Bit-identical to ``audioop.ulaw2lin(data, 2)`` for every code. Takes any
    C-contiguous buffer so that a payload sliced out of a received datagram
    (a memoryview) is decoded without copying it first.
    """
    return _decode_obj(data, _ULAW_DEC, "ulaw_decode")


def alaw_decode(data, /):
    """Decode G.711 A-law bytes to 16-bit little-endian PCM, one sample per byte.

    Bit-identical to ``audioop.alaw2lin(data, 2)`` for every code. Takes any
    C-contiguous buffer so that a payload sliced out of a received datagram
    (a memoryview) is decoded without copying it first.
    """
    return _decode_obj(data, _ALAW_DEC, "alaw_decode")


cdef inline bytes _encode_obj(object pcm, const uint8_t *table, int shift, str func):
    cdef Py_buffer view
    cdef const uint8_t *src
    cdef Py_ssize_t n
    cdef int held = _acquire(pcm, &view, &src, &n, func, "pcm")
    cdef bytes out
    cdef uint8_t *dst
    try:
        if n & 1:
            _odd_length(n, func, "pcm")
        out = PyBytes_FromStringAndSize(NULL, n >> 1)
        dst = <uint8_t *>PyBytes_AS_STRING(out)
        if n >= _NOGIL_MIN:
            n >>= 1
            with nogil:
                _encode(src, n, dst, table, shift)
        else:
            _encode(src, n >> 1, dst, table, shift)
    finally:
        if held:
            PyBuffer_Release(&view)
    return out


def ulaw_encode(pcm, /):
    """Encode 16-bit little-endian PCM to G.711 mu-law, one byte per sample.

    Bit-identical to ``audioop.lin2ulaw(pcm, 2)`` for every sample, including
    its rounding (mu-law only sees the top 14 bits). A numpy int16 array is
    accepted as is, because announcements are prepared with numpy. Odd byte
    lengths are a ValueError: half a sample means the caller lost track of the
    framing, and guessing would put noise on the line.
    """
    return _encode_obj(pcm, _ULAW_ENC, 2, "ulaw_encode")


def alaw_encode(pcm, /):
    """Encode 16-bit little-endian PCM to G.711 A-law, one byte per sample.

    Bit-identical to ``audioop.lin2alaw(pcm, 2)`` for every sample, including
    its rounding (A-law only sees the top 13 bits). A numpy int16 array is
    accepted as is, because announcements are prepared with numpy. Odd byte
    lengths are a ValueError: half a sample means the caller lost track of the
    framing, and guessing would put noise on the line.
    """
    return _encode_obj(pcm, _ALAW_ENC, 3, "alaw_encode")


def interleave(left_pcm, right_pcm, /):
    """Merge two mono 16-bit PCM streams into one stereo stream (L R L R ...).

    The shorter side is padded with silence (zero samples) to the length of
    the longer one, because a recording must keep both channels aligned in
    time even while only one party's audio arrives (one-way audio, or one leg
    on hold). Odd byte lengths are a ValueError, as in the encoders.
    """
    cdef Py_buffer lview, rview
    cdef const uint8_t *lp
    cdef const uint8_t *rp
    cdef Py_ssize_t nl, nr, frames
    cdef int lheld = 0, rheld = 0
    cdef bytes out
    cdef uint8_t *dst
    try:
        lheld = _acquire(left_pcm, &lview, &lp, &nl, "interleave", "left_pcm")
        rheld = _acquire(right_pcm, &rview, &rp, &nr, "interleave", "right_pcm")
        if nl & 1:
            _odd_length(nl, "interleave", "left_pcm")
        if nr & 1:
            _odd_length(nr, "interleave", "right_pcm")
        nl >>= 1
        nr >>= 1
        frames = nl if nl > nr else nr
        out = PyBytes_FromStringAndSize(NULL, 4 * frames)
        dst = <uint8_t *>PyBytes_AS_STRING(out)
        if 2 * frames >= _NOGIL_MIN:
            with nogil:
                _interleave(lp, nl, rp, nr, dst)
        else:
            _interleave(lp, nl, rp, nr, dst)
    finally:
        if rheld:
            PyBuffer_Release(&rview)
        if lheld:
            PyBuffer_Release(&lview)
    return out


cdef inline bytes _decode_stereo_obj(object left, object right, const uint16_t *table, str func):
    cdef Py_buffer lview, rview
    cdef const uint8_t *lp
    cdef const uint8_t *rp
    cdef Py_ssize_t nl, nr, frames
    cdef int lheld = 0, rheld = 0
    cdef bytes out
    cdef uint8_t *dst
    try:
        lheld = _acquire(left, &lview, &lp, &nl, func, "left_payload")
        rheld = _acquire(right, &rview, &rp, &nr, func, "right_payload")
        frames = nl if nl > nr else nr
        out = PyBytes_FromStringAndSize(NULL, 4 * frames)
        dst = <uint8_t *>PyBytes_AS_STRING(out)
        if frames >= _NOGIL_MIN:
            with nogil:
                _decode_stereo(lp, nl, rp, nr, dst, table)
        else:
            _decode_stereo(lp, nl, rp, nr, dst, table)
    finally:
        if rheld:
            PyBuffer_Release(&rview)
        if lheld:
            PyBuffer_Release(&lview)
    return out


def ulaw_decode_stereo(left_payload, right_payload, /):
    """Decode two mu-law payloads straight into interleaved stereo 16-bit PCM.

    Equal to ``interleave(ulaw_decode(left), ulaw_decode(right))`` without the
    two intermediate objects, for the recorder (caller left, callee right).
    The shorter payload is padded with silence, PCM zero, as in interleave.
    """
    return _decode_stereo_obj(left_payload, right_payload, _ULAW_DEC, "ulaw_decode_stereo")


def alaw_decode_stereo(left_payload, right_payload, /):
    """Decode two A-law payloads straight into interleaved stereo 16-bit PCM.

    Equal to ``interleave(alaw_decode(left), alaw_decode(right))`` without the
    two intermediate objects, for the recorder (caller left, callee right).
    The shorter payload is padded with silence: PCM zero, not the A-law
    "zero" code 0xD5, which decodes to +8.
    """
    return _decode_stereo_obj(left_payload, right_payload, _ALAW_DEC, "alaw_decode_stereo")


cdef Py_ssize_t _decode_into_obj(object data, object out, Py_ssize_t offset,
                                 Py_ssize_t channels, Py_ssize_t channel,
                                 const uint16_t *table, str func) except -1:
    cdef Py_buffer view, oview
    cdef const uint8_t *src
    cdef Py_ssize_t n
    cdef Py_ssize_t end = 0
    cdef int held = 0, oheld = 0
    cdef uint8_t *dst
    try:
        held = _acquire(data, &view, &src, &n, func, "data")
        if not PyObject_CheckBuffer(out):
            _not_a_buffer(out, func, "out")
        if _get_buffer(out, &oview, PyBUF_WRITABLE) < 0:
            _writable_failed(out, func, "out")
        oheld = 1
        if not 1 <= channels <= 65535:
            raise ValueError(f"{func}(): channels must be in 1..65535 (as in WAV), got {channels}")
        if not 0 <= channel < channels:
            raise ValueError(
                f"{func}(): channel must be in range({channels}), got {channel}"
            )
        if offset < 0:
            raise ValueError(f"{func}(): offset must not be negative, got {offset}")
        if offset > oview.len or n > (oview.len - offset) // (2 * channels):
            raise ValueError(
                f"{func}(): {n} samples at offset {offset} with {channels} channel(s) "
                f"need {offset + 2 * channels * n} bytes; out has {oview.len}"
            )
        end = offset + 2 * channels * n
        if n and src < <uint8_t *>oview.buf + end and <uint8_t *>oview.buf + offset < src + n:
            # Decoding in place would overwrite input bytes before they are read.
            raise ValueError(f"{func}(): data and out must not share memory")
        dst = <uint8_t *>oview.buf + offset + 2 * channel
        if n >= _NOGIL_MIN:
            with nogil:
                if channels == 1:
                    _decode(src, n, dst, table)
                else:
                    _decode_1(src, n, dst, 2 * channels, table)
        elif channels == 1:
            _decode(src, n, dst, table)
        else:
            _decode_1(src, n, dst, 2 * channels, table)
    finally:
        if oheld:
            PyBuffer_Release(&oview)
        if held:
            PyBuffer_Release(&view)
    return end


def ulaw_decode_into(data, out, Py_ssize_t offset=0, *, Py_ssize_t channels=1,
                     Py_ssize_t channel=0):
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
    return _decode_into_obj(data, out, offset, channels, channel, _ULAW_DEC,
                            "ulaw_decode_into")


def alaw_decode_into(data, out, Py_ssize_t offset=0, *, Py_ssize_t channels=1,
                     Py_ssize_t channel=0):
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
    return _decode_into_obj(data, out, offset, channels, channel, _ALAW_DEC,
                            "alaw_decode_into")
