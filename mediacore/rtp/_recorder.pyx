# cython: language_level=3
"""The recorder's per-packet path, compiled: the same algorithm as
``mediacore.rtp.recorder.ReferenceAligner``, record for record.

Why compiled: the reference spends ~2.7 µs of interpreter time per packet
(its profile: unpacking a header into Python ints, a dozen attribute
updates, min/max calls; the G.711 decode itself is 1% of it); at 100,000
recorded packets per second that is over a quarter of a core. Here a packet
is parsed, checked and decoded into its leg's buffer in 0.19 µs with no
Python object created, and Python is called once per blob (and the writer
once per 100 ms). benchmarks/RESULTS.md has the figures.

Samples are never computed on: the G.711 tables are copied byte for byte
from ``mediacore._codecs`` (the project's one decoder, so the two cannot
disagree) and samples are moved as opaque 2-byte little-endian patterns,
so the output is right on any host byte order.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int16_t, int32_t, int64_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memmove, memset

from mediacore import _codecs
from mediacore.rtp.recorder import (
    DELAY as _DELAY,
    MAX_DROPOUT as _MAX_DROPOUT,
    MAX_EARLY as _MAX_EARLY,
    MAX_MISORDER as _MAX_MISORDER,
    MAX_TS_JUMP as _MAX_TS_JUMP,
    NS_PER_FRAME as _NS_PER_FRAME,
    REPLAY_WINDOW as _REPLAY_WINDOW,
    SETTLE as _SETTLE,
    TOLERANCE as _TOLERANCE,
    WINDOW as _WINDOW,
    WRITE_CHUNK as _WRITE_CHUNK,
    codec_table,
)

# The tuning constants come from the reference module so there is one copy.
cdef int64_t NS_PER_FRAME = _NS_PER_FRAME
cdef int64_t DELAY = _DELAY
cdef int64_t WRITE_CHUNK = _WRITE_CHUNK
cdef int64_t SETTLE = _SETTLE
cdef int64_t WINDOW = _WINDOW
cdef int64_t TOLERANCE = _TOLERANCE
cdef int64_t MAX_TS_JUMP = _MAX_TS_JUMP
cdef int64_t MAX_EARLY = _MAX_EARLY
cdef int MAX_DROPOUT = _MAX_DROPOUT
cdef int MAX_MISORDER = _MAX_MISORDER
cdef int REPLAY_WINDOW = _REPLAY_WINDOW

cdef enum:
    HEADER = 24
    INITIAL_CAP = 4096
    NSTATS = 11
    S_RECORDS = 0
    S_AUDIO = 1
    S_NOT_AUDIO = 2
    S_IGNORED = 3
    S_DUPLICATES = 4
    S_LATE = 5
    S_DISCARDED = 6
    S_ANCHORS = 7
    S_SHIFTS = 8
    S_RESYNCS = 9
    S_MALFORMED = 10

# Decode tables, index = G.711 code, entry = the two little-endian PCM bytes.
cdef uint16_t TABLES[3][256]


cdef void _load_table(int which, bytes pcm):
    memcpy(&TABLES[which][0], PyBytes_AS_STRING(pcm), 512)


_load_table(1, _codecs.ulaw_decode(bytes(range(256))))
_load_table(2, _codecs.alaw_decode(bytes(range(256))))


cdef struct Leg:
    bint anchored
    uint32_t ssrc
    int pt
    uint16_t max_seq
    uint32_t max_ts
    int64_t max_ts_u
    uint64_t seen
    int bad_seq
    int64_t offset
    bint settling
    bint has_early     # the last packet came early; ``early`` is its lateness
    int64_t early
    bint has_win
    int64_t win_min
    int64_t win_end
    int64_t seg_lo
    int64_t seg_hi
    uint16_t *buf      # frames [cursor, cursor + cap), zero after buf_hi
    int64_t cap
    int64_t buf_hi


cdef inline int64_t floordiv(int64_t a, int64_t b) nogil:
    cdef int64_t q = a // b  # C division truncates (cdivision)
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef inline uint64_t rd64(const unsigned char *p) nogil:
    return (<uint64_t>p[0] | <uint64_t>p[1] << 8 | <uint64_t>p[2] << 16 | <uint64_t>p[3] << 24
            | <uint64_t>p[4] << 32 | <uint64_t>p[5] << 40 | <uint64_t>p[6] << 48
            | <uint64_t>p[7] << 56)


cdef inline uint32_t rd32(const unsigned char *p) nogil:
    return <uint32_t>p[0] | <uint32_t>p[1] << 8 | <uint32_t>p[2] << 16 | <uint32_t>p[3] << 24


cdef inline uint16_t rd16(const unsigned char *p) nogil:
    return <uint16_t>(p[0] | p[1] << 8)


cdef class Aligner:
    """Compiled ``ReferenceAligner``: same constructor, methods and results."""

    cdef Leg legs[2]
    cdef int channels
    cdef int64_t started
    cdef int64_t cursor_
    cdef bint has_newest
    cdef int64_t newest
    cdef unsigned char codecs[256]
    cdef object sink
    cdef int64_t counters[NSTATS]

    def __cinit__(self):
        cdef int i
        for i in range(2):
            memset(&self.legs[i], 0, sizeof(Leg))
            self.legs[i].buf = NULL
        memset(self.counters, 0, sizeof(self.counters))

    def __init__(self, sink, *, started_ns, codec_by_pt, channels=2):
        cdef int i
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, not {channels!r}")
        self.sink = sink
        self.started = started_ns
        self.channels = channels
        self.cursor_ = 0
        self.has_newest = False
        self.set_codecs(codec_by_pt)
        for i in range(self.channels):
            self.legs[i].bad_seq = -1
            self.legs[i].buf = <uint16_t *>malloc(INITIAL_CAP * sizeof(uint16_t))
            if self.legs[i].buf == NULL:
                raise MemoryError()
            memset(self.legs[i].buf, 0, INITIAL_CAP * sizeof(uint16_t))
            self.legs[i].cap = INITIAL_CAP

    def __dealloc__(self):
        cdef int i
        for i in range(2):
            free(self.legs[i].buf)
            self.legs[i].buf = NULL

    @property
    def cursor(self):
        """Frames written to the sink so far."""
        return self.cursor_

    def set_codecs(self, codec_by_pt):
        """Replace the payload-type map (after a re-INVITE negotiated new ones)."""
        cdef bytes table = codec_table(codec_by_pt)
        memcpy(self.codecs, PyBytes_AS_STRING(table), 256)

    def stats(self):
        return tuple([self.counters[i] for i in range(NSTATS)])

    def feed(self, blob, now_ns=None):
        """Take a blob of tap records, then write out what is older than DELAY."""
        cdef const unsigned char[::1] view
        cdef const unsigned char *p
        cdef Py_ssize_t n
        cdef int64_t horizon
        if type(blob) is bytes:
            p = <const unsigned char *>PyBytes_AS_STRING(blob)
            n = PyBytes_GET_SIZE(blob)
        else:
            view = blob
            n = view.shape[0]
            p = &view[0] if n else NULL
        self._feed(p, n)
        if now_ns is not None:
            if not self.has_newest or now_ns > self.newest:
                self.newest = now_ns
                self.has_newest = True
        if self.has_newest:
            horizon = floordiv(self.newest - self.started, NS_PER_FRAME) - DELAY
            if horizon - self.cursor_ >= WRITE_CHUNK:
                self._advance(horizon)

    def finish(self, end_frame):
        """Write everything up to ``end_frame`` (audio after it is dropped); return frames."""
        self._advance(end_frame)
        return self.cursor_

    # -- per packet -----------------------------------------------------------

    cdef int _feed(self, const unsigned char *p, Py_ssize_t n) except -1:
        cdef Py_ssize_t pos = 0, start, plen
        cdef int64_t arrival
        cdef unsigned int direction, codec, pt
        cdef const unsigned char *h
        while pos + HEADER <= n:
            h = p + pos
            plen = rd16(h + 22)
            start = pos + HEADER
            if start + plen > n:
                break
            pos = start + plen
            self.counters[S_RECORDS] += 1
            arrival = <int64_t>rd64(h)
            if not self.has_newest or arrival > self.newest:
                self.newest = arrival
                self.has_newest = True
            direction = h[20]
            if direction >= <unsigned int>self.channels:
                self.counters[S_IGNORED] += 1
                continue
            pt = h[18]
            codec = self.codecs[pt]
            if codec == 0 or plen == 0:
                self.counters[S_NOT_AUDIO] += 1
                continue
            self._packet(&self.legs[direction], arrival, rd32(h + 8), rd32(h + 12),
                         rd16(h + 16), pt, h[19], p + start, plen, codec)
        if pos != n:
            self.counters[S_MALFORMED] += 1
        return 0

    cdef int _packet(self, Leg *leg, int64_t arrival, uint32_t ssrc, uint32_t ts,
                     uint16_t seq, int pt, int marker, const unsigned char *payload,
                     Py_ssize_t plen, int codec) except -1:
        cdef int64_t af = floordiv(arrival - self.started, NS_PER_FRAME)
        cdef int dseq
        cdef int64_t dts, ts_u, frame, lateness, delta
        cdef bint newest
        if not leg.anchored or ssrc != leg.ssrc or pt != leg.pt:
            return self._anchor(leg, af, arrival, ssrc, ts, seq, pt, payload, plen, codec)
        dseq = <int16_t>(<uint16_t>(seq - leg.max_seq))
        dts = <int32_t>(ts - leg.max_ts)
        newest = dseq > 0
        if dseq > MAX_DROPOUT or dseq < -MAX_MISORDER:
            if seq != leg.bad_seq:
                leg.bad_seq = (seq + 1) & 0xFFFF
                self.counters[S_DISCARDED] += 1
                return 0
            return self._anchor(leg, af, arrival, ssrc, ts, seq, pt, payload, plen, codec)
        if newest:
            if dts < 0 or dts > MAX_TS_JUMP:
                return self._anchor(leg, af, arrival, ssrc, ts, seq, pt, payload, plen, codec)
        elif dseq == 0:
            self.counters[S_DUPLICATES] += 1
            return 0
        elif -dseq >= REPLAY_WINDOW:
            self.counters[S_LATE] += 1
            return 0
        elif (leg.seen >> (-dseq)) & 1:
            self.counters[S_DUPLICATES] += 1
            return 0
        elif dts > 0 or dts < -MAX_TS_JUMP:
            self.counters[S_DISCARDED] += 1
            return 0

        if arrival >= leg.win_end:
            self._evaluate_window(leg, arrival)
        ts_u = leg.max_ts_u + dts
        frame = ts_u + leg.offset
        lateness = af - frame
        if lateness < -MAX_EARLY:
            return self._anchor(leg, af, arrival, ssrc, ts, seq, pt, payload, plen, codec)
        if newest:
            # A C shift by >= 64 bits is undefined; Python's gives 0.
            leg.seen = ((leg.seen << dseq) | 1) if dseq < 64 else 1
            leg.max_seq = seq
            leg.max_ts = ts
            leg.max_ts_u = ts_u
        else:
            leg.seen |= (<uint64_t>1) << (-dseq)
        if lateness < (0 if leg.settling else -TOLERANCE):
            if leg.settling or leg.has_early:
                delta = lateness
                if leg.has_early and leg.early > delta:
                    delta = leg.early
                self.counters[S_SHIFTS] += 1
                self._shift(leg, delta)
                frame += delta
                lateness -= delta
            else:
                leg.has_early = True
                leg.early = lateness
        else:
            leg.has_early = False
            if marker and newest and lateness > DELAY:
                self.counters[S_RESYNCS] += 1
                leg.offset += lateness
                frame = af
                lateness = 0
        if not leg.has_win or lateness < leg.win_min:
            leg.win_min = lateness
            leg.has_win = True
        return self._place(leg, frame, payload, plen, codec)

    cdef int _anchor(self, Leg *leg, int64_t af, int64_t arrival, uint32_t ssrc, uint32_t ts,
                     uint16_t seq, int pt, const unsigned char *payload, Py_ssize_t plen,
                     int codec) except -1:
        self.counters[S_ANCHORS] += 1
        leg.anchored = True
        leg.ssrc = ssrc
        leg.pt = pt
        leg.max_seq = seq
        leg.max_ts = ts
        leg.max_ts_u = ts
        leg.seen = 1
        leg.bad_seq = -1
        leg.offset = af - <int64_t>ts
        leg.settling = True
        leg.has_early = False
        leg.has_win = True
        leg.win_min = 0
        leg.win_end = arrival + SETTLE
        leg.seg_lo = af
        leg.seg_hi = af
        return self._place(leg, af, payload, plen, codec)

    cdef int _evaluate_window(self, Leg *leg, int64_t arrival) except -1:
        cdef int64_t err = leg.win_min
        if leg.has_win and err > TOLERANCE:
            self.counters[S_SHIFTS] += 1
            self._shift(leg, err)
        leg.settling = False
        leg.has_win = False
        leg.win_end = arrival + WINDOW
        return 0

    cdef int _shift(self, Leg *leg, int64_t delta) except -1:
        cdef int64_t cur = self.cursor_
        cdef int64_t lo = leg.seg_lo if leg.seg_lo > cur else cur
        cdef int64_t hi = leg.seg_hi
        cdef int64_t dst, length, cut
        cdef uint16_t *tmp
        leg.offset += delta
        leg.has_early = False
        leg.seg_lo += delta
        leg.seg_hi += delta
        if lo >= hi:
            return 0
        length = hi - lo
        tmp = <uint16_t *>malloc(length * sizeof(uint16_t))
        if tmp == NULL:
            raise MemoryError()
        memcpy(tmp, leg.buf + (lo - cur), length * sizeof(uint16_t))
        memset(leg.buf + (lo - cur), 0, length * sizeof(uint16_t))
        dst = lo + delta
        cut = 0
        if dst < cur:
            cut = cur - dst
            dst = cur
        if cut < length:
            try:
                self._ensure(leg, dst + length - cut)
            except MemoryError:
                free(tmp)
                raise
            memcpy(leg.buf + (dst - cur), tmp + cut, (length - cut) * sizeof(uint16_t))
            if dst + length - cut > leg.buf_hi:
                leg.buf_hi = dst + length - cut
        free(tmp)
        return 0

    cdef int _place(self, Leg *leg, int64_t frame, const unsigned char *payload,
                    Py_ssize_t plen, int codec) except -1:
        cdef int64_t cur = self.cursor_
        cdef int64_t end = frame + plen
        cdef int64_t skip = 0, i
        cdef uint16_t *out
        cdef const uint16_t *table = TABLES[codec]
        if end <= cur:
            self.counters[S_LATE] += 1
            return 0
        self.counters[S_AUDIO] += 1
        if frame < cur:
            skip = cur - frame
        self._ensure(leg, end)
        out = leg.buf + (frame - cur)
        for i in range(skip, plen):
            out[i] = table[payload[i]]
        if end > leg.buf_hi:
            leg.buf_hi = end
        if frame < leg.seg_lo:
            leg.seg_lo = frame
        if end > leg.seg_hi:
            leg.seg_hi = end
        return 0

    cdef int _ensure(self, Leg *leg, int64_t end_frame) except -1:
        cdef int64_t need = end_frame - self.cursor_
        cdef int64_t size = leg.cap
        cdef uint16_t *grown
        if need <= size:
            return 0
        while size < need:
            size *= 2
        grown = <uint16_t *>realloc(leg.buf, size * sizeof(uint16_t))
        if grown == NULL:
            raise MemoryError()
        memset(grown + leg.cap, 0, (size - leg.cap) * sizeof(uint16_t))
        leg.buf = grown
        leg.cap = size
        return 0

    # -- write-out ------------------------------------------------------------

    cdef int _advance(self, int64_t horizon) except -1:
        # State first, sink last: see ReferenceAligner._advance.
        cdef int64_t cur = self.cursor_
        cdef int64_t k, data_end, m, rest, used, top, i, avail
        cdef int c
        cdef Leg *leg
        cdef bytes out = None
        cdef uint16_t *o
        cdef const uint16_t *left
        cdef const uint16_t *right
        if horizon <= cur:
            return 0
        k = horizon - cur
        top = self.legs[0].buf_hi
        if self.channels == 2 and self.legs[1].buf_hi > top:
            top = self.legs[1].buf_hi
        data_end = horizon if horizon < top else top
        if data_end > cur:
            m = data_end - cur
            out = PyBytes_FromStringAndSize(NULL, m * 2 * self.channels)
            o = <uint16_t *>PyBytes_AS_STRING(out)
            if self.channels == 2:
                # A leg's buffer may be shorter than m (the other one grew):
                # frames past its capacity are past its buf_hi, i.e. silence.
                memset(o, 0, m * 4)
                left = self.legs[0].buf
                avail = m if m < self.legs[0].cap else self.legs[0].cap
                for i in range(avail):
                    o[2 * i] = left[i]
                right = self.legs[1].buf
                avail = m if m < self.legs[1].cap else self.legs[1].cap
                for i in range(avail):
                    o[2 * i + 1] = right[i]
            else:
                memcpy(o, self.legs[0].buf, m * 2)
        if data_end < cur:
            data_end = cur
        for c in range(self.channels):
            leg = &self.legs[c]
            used = leg.buf_hi - cur
            if used <= 0:
                continue
            rest = leg.buf_hi - horizon
            if rest > 0:
                memmove(leg.buf, leg.buf + k, rest * sizeof(uint16_t))
                memset(leg.buf + rest, 0, (used - rest) * sizeof(uint16_t))
            else:
                memset(leg.buf, 0, used * sizeof(uint16_t))
        self.cursor_ = horizon
        if out is not None:
            self.sink.write(out)
        if horizon > data_end:
            self.sink.write_silence(horizon - data_end)
        return 0
