# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, binding=False, embedsignature=True
"""The RTP relay's packet path: one native thread, epoll, recvmmsg/sendmmsg.

Why a thread below Python. At 1,000 calls a relay moves 100,000 packets a
second in and as many out; the kernel alone costs about 7 µs per forwarded
packet on our hosts, which leaves nothing for a Python callback per packet
(several µs each). So the packet path is C from epoll_wait to sendmmsg, runs
in its own thread with the GIL released for its whole life, and never
creates a Python object per packet. Python only configures sessions, reads
counters, drains recording buffers and picks up events, each of which costs
one short critical section per call, not per packet.

Thread model and locking.
- One engine thread runs ``_loop``: epoll_wait over every relay socket plus a
  wake-up eventfd, then per readable socket one recvmmsg (up to VLEN
  datagrams), the per-packet work, and one sendmmsg out of the other leg's
  matching socket. Relay sockets are edge-triggered: level-triggered epoll
  re-polls every reported socket on the next epoll_wait, which measured
  about 4% of the engine's CPU (benchmarks/RESULTS.md); so each socket
  is read until recvmmsg comes back short.
- Each session has a pthread mutex. The engine holds it while it handles one
  readable socket of that session (a few µs); Python takes it to change the
  session's configuration, copy its counters or drain its recording buffer.
  Contention is per session, so Python never waits for a whole epoll batch,
  and the engine never waits for the GIL.
- Removing a session: Python marks it dead under its mutex, takes its
  sockets out of the epoll set, wakes the engine and waits (GIL released)
  until the engine finishes the epoll batch it is in. Any event returned
  before the removal belongs to that batch, and the engine skips dead
  sessions; after it, the session's memory and sockets are Python's to free.
- Events for Python (a DTMF digit, a latch, a recording buffer past its
  threshold) go into a bounded ring under its own mutex. The engine writes to
  an eventfd only when the ring goes from empty to non-empty, so a burst of
  events costs one syscall; asyncio watches the eventfd with add_reader.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset

import os
import socket as _socket


cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_init(pthread_mutex_t *, void *)
    int pthread_mutex_destroy(pthread_mutex_t *)
    int pthread_mutex_lock(pthread_mutex_t *)
    int pthread_mutex_unlock(pthread_mutex_t *)


cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len


cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    int recvmmsg(int fd, mmsghdr *vec, unsigned int vlen, int flags, void *timeout)
    int sendmmsg(int fd, mmsghdr *vec, unsigned int vlen, int flags)
    ssize_t sendto(int fd, const void *buf, size_t n, int flags, const void *addr, socklen_t alen)
    int MSG_DONTWAIT
    int MSG_TRUNC
    int AF_INET
    int AF_INET6


cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        void *ptr
        int fd
        uint32_t u32
        uint64_t u64
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    int EPOLL_CTL_ADD
    int EPOLL_CTL_DEL
    int EPOLL_CTL_MOD
    uint32_t EPOLLET
    int EPOLL_CLOEXEC
    uint32_t EPOLLIN


cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    int EFD_NONBLOCK
    int EFD_CLOEXEC


cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void *buf, size_t n)
    ssize_t write(int fd, const void *buf, size_t n)
    int close(int fd)
    int usleep(unsigned int usec)


cdef extern from *:
    """
    #include <netinet/in.h>
    #include <string.h>
    #include <time.h>

    /* A peer address: IPv4 or IPv6, with its length; len == 0 means unset. */
    typedef struct {
        union { struct sockaddr sa; struct sockaddr_in v4; struct sockaddr_in6 v6; } u;
        socklen_t len;
    } mc_addr;

    #define MC_ADDR_CAP ((socklen_t)sizeof(struct sockaddr_in6))

    static inline void *mc_addr_sa(mc_addr *a) { return &a->u; }

    /* Same host and port (and IPv6 scope); flow labels do not matter. */
    static inline int mc_addr_eq(const mc_addr *a, const mc_addr *b) {
        if (a->len == 0 || b->len == 0 || a->u.sa.sa_family != b->u.sa.sa_family) return 0;
        if (a->u.sa.sa_family == AF_INET)
            return a->u.v4.sin_port == b->u.v4.sin_port
                && a->u.v4.sin_addr.s_addr == b->u.v4.sin_addr.s_addr;
        if (a->u.sa.sa_family == AF_INET6)
            return a->u.v6.sin6_port == b->u.v6.sin6_port
                && a->u.v6.sin6_scope_id == b->u.v6.sin6_scope_id
                && memcmp(&a->u.v6.sin6_addr, &b->u.v6.sin6_addr, 16) == 0;
        return 0;
    }

    /* Same host, any port: the nat latching mode admits a first source by host. */
    static inline int mc_addr_host_eq(const mc_addr *a, const mc_addr *b) {
        if (a->len == 0 || b->len == 0 || a->u.sa.sa_family != b->u.sa.sa_family) return 0;
        if (a->u.sa.sa_family == AF_INET)
            return a->u.v4.sin_addr.s_addr == b->u.v4.sin_addr.s_addr;
        if (a->u.sa.sa_family == AF_INET6)
            return a->u.v6.sin6_scope_id == b->u.v6.sin6_scope_id
                && memcmp(&a->u.v6.sin6_addr, &b->u.v6.sin6_addr, 16) == 0;
        return 0;
    }

    static inline void mc_addr_copy(mc_addr *dst, const mc_addr *src) { *dst = *src; }

    static int mc_addr_set(mc_addr *a, int family, const char *packed, Py_ssize_t n,
                           unsigned int port) {
        memset(a, 0, sizeof(*a));
        if (family == AF_INET && n == 4) {
            a->u.v4.sin_family = AF_INET;
            a->u.v4.sin_port = htons((uint16_t)port);
            memcpy(&a->u.v4.sin_addr, packed, 4);
            a->len = sizeof(struct sockaddr_in);
            return 0;
        }
        if (family == AF_INET6 && n == 16) {
            a->u.v6.sin6_family = AF_INET6;
            a->u.v6.sin6_port = htons((uint16_t)port);
            memcpy(&a->u.v6.sin6_addr, packed, 16);
            a->len = sizeof(struct sockaddr_in6);
            return 0;
        }
        return -1;
    }

    /* Family, packed address (4 or 16 bytes into out) and port; returns the
       packed length, 0 when unset. */
    static int mc_addr_get(const mc_addr *a, int *family, char *out, unsigned int *port) {
        if (a->len == 0) return 0;
        *family = a->u.sa.sa_family;
        if (a->u.sa.sa_family == AF_INET) {
            memcpy(out, &a->u.v4.sin_addr, 4);
            *port = ntohs(a->u.v4.sin_port);
            return 4;
        }
        if (a->u.sa.sa_family == AF_INET6) {
            memcpy(out, &a->u.v6.sin6_addr, 16);
            *port = ntohs(a->u.v6.sin6_port);
            return 16;
        }
        return 0;
    }

    static inline int64_t mc_now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    }

    /* floor(ns * rate / 1e9) mod 2^32 without overflow: RFC 3550 A.8's
       "arrival" in timestamp units. stats.rtp_time is the same in Python. */
    static inline uint32_t mc_rtp_time(int64_t ns, uint32_t rate) {
        uint64_t u = (uint64_t)ns;
        uint64_t q = u / 1000000000ULL, r = u % 1000000000ULL;
        return (uint32_t)(q * rate + (r * rate) / 1000000000ULL);
    }

    static inline uint16_t mc_be16(const unsigned char *p) {
        return (uint16_t)((p[0] << 8) | p[1]);
    }
    static inline uint32_t mc_be32(const unsigned char *p) {
        return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    }

    /* The recording record header, struct "<qIIHBBBxH" (24 bytes). */
    static inline void mc_put_record(unsigned char *d, int64_t arrival, uint32_t ssrc,
                                     uint32_t ts, uint16_t seq, uint8_t pt, uint8_t marker,
                                     uint8_t direction, uint16_t plen) {
        uint64_t a = (uint64_t)arrival;
        for (int i = 0; i < 8; i++) d[i] = (unsigned char)(a >> (8 * i));
        for (int i = 0; i < 4; i++) d[8 + i] = (unsigned char)(ssrc >> (8 * i));
        for (int i = 0; i < 4; i++) d[12 + i] = (unsigned char)(ts >> (8 * i));
        d[16] = (unsigned char)seq; d[17] = (unsigned char)(seq >> 8);
        d[18] = pt; d[19] = marker; d[20] = direction; d[21] = 0;
        d[22] = (unsigned char)plen; d[23] = (unsigned char)(plen >> 8);
    }

    static inline int mc_load_int(const int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void mc_store_int(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline uint64_t mc_load_u64(const uint64_t *p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    static inline void mc_inc_u64(uint64_t *p) { __atomic_add_fetch(p, 1, __ATOMIC_RELEASE); }
    """
    ctypedef struct mc_addr:
        socklen_t len
    socklen_t MC_ADDR_CAP
    void *mc_addr_sa(mc_addr *a) nogil
    int mc_addr_eq(const mc_addr *a, const mc_addr *b) nogil
    int mc_addr_host_eq(const mc_addr *a, const mc_addr *b) nogil
    void mc_addr_copy(mc_addr *dst, const mc_addr *src) nogil
    int mc_addr_set(mc_addr *a, int family, const char *packed, Py_ssize_t n, unsigned int port) nogil
    int mc_addr_get(const mc_addr *a, int *family, char *out, unsigned int *port) nogil
    int64_t mc_now_ns() nogil
    uint32_t mc_rtp_time(int64_t ns, uint32_t rate) nogil
    uint16_t mc_be16(const unsigned char *p) nogil
    uint32_t mc_be32(const unsigned char *p) nogil
    void mc_put_record(unsigned char *d, int64_t arrival, uint32_t ssrc, uint32_t ts,
                       uint16_t seq, uint8_t pt, uint8_t marker, uint8_t direction,
                       uint16_t plen) nogil
    int mc_load_int(const int *p) nogil
    void mc_store_int(int *p, int v) nogil
    uint64_t mc_load_u64(const uint64_t *p) nogil
    void mc_inc_u64(uint64_t *p) nogil


cdef enum:
    # Datagrams per recvmmsg. A relay socket gets 50 packets/s, so most calls
    # return one; the batch matters when the engine falls behind and must
    # catch up without one syscall per packet.
    VLEN = 32
    # Largest datagram relayed; anything longer arrives truncated and is
    # dropped as garbage. Audio RTP is far below it; a 1500-byte frame fits.
    BUFSIZE = 2048
    MAX_EVENTS = 256
    # Batches read from one socket per wake-up before it yields to the others.
    MAX_ROUNDS = 4
    RECORD_HEADER = 24
    RTP_SEQ_MOD = 65536
    MAX_DROPOUT = 3000
    MAX_MISORDER = 100
    MIN_SEQUENTIAL = 2
    EV_DTMF = 1
    EV_LATCHED = 2
    EV_RECORDING = 3
    # Latching modes of a leg (engine.py's Latching). STRICT is 0, so a leg
    # that nobody configured (calloc) accepts nothing but its signalled address.
    MODE_STRICT = 0
    MODE_NAT = 1
    # Hosts besides the signalled one a nat leg may latch onto (the SIP peer).
    MAX_HOSTS = 4

# Event kinds, mirrored in engine.py.
EVENT_DTMF = 1
EVENT_LATCHED = 2
EVENT_RECORDING = 3

LEG_A = 0
LEG_B = 1
RECORD_HEADER_SIZE = RECORD_HEADER
#: The longest datagram relayed; longer ones arrive truncated and count as garbage.
MAX_DATAGRAM = BUFSIZE
LATCH_STRICT = MODE_STRICT
LATCH_NAT = MODE_NAT
LATCH_MAX_HOSTS = MAX_HOSTS


cdef struct Stream:
    # Counters for the packets that arrive on one leg.
    uint64_t packets
    uint64_t bytes
    uint64_t payload_bytes
    uint64_t rtcp_packets
    uint64_t rtcp_bytes
    uint64_t forwarded
    uint64_t no_destination
    uint64_t send_errors
    uint64_t garbage
    uint64_t strict_dropped     # from another source than the signalled one (strict leg)
    uint64_t foreign            # from another source than the latched one (nat leg)
    uint64_t relatches
    uint64_t dtmf_events
    uint64_t injected
    int64_t first_ns
    int64_t last_ns
    # RFC 3550 A.1 source state for the current SSRC.
    int have_source
    uint32_t ssrc
    uint16_t max_seq
    uint32_t cycles
    uint32_t base_seq
    uint32_t bad_seq
    uint32_t probation
    uint32_t received
    int64_t expected_before
    int64_t received_before
    # RFC 3550 A.8, integer variant (jitter kept times 16).
    int have_transit
    uint32_t transit
    uint32_t jitter_q4


cdef struct Leg:
    int rtp_fd
    int rtcp_fd
    mc_addr sig_rtp        # signalled in SDP (set_remote)
    mc_addr sig_rtcp
    mc_addr lat_rtp        # latched (nat mode): where this leg's packets come from
    mc_addr lat_rtcp
    int64_t lat_rtp_seen   # last packet from the latched source
    int64_t lat_rtcp_seen
    int mode               # MODE_STRICT or MODE_NAT
    int64_t relatch_ns     # nat: silence after which the latch may move; 0 never
    mc_addr hosts[MAX_HOSTS]   # nat: further hosts (any port) a first packet may come from
    int nhosts
    mc_addr foreign_src    # the last source whose packet was dropped as foreign
    int te_pt              # RFC 4733 payload type received on this leg, -1 none
    uint32_t clock_rate
    int te_have_last
    uint32_t te_last_ts
    uint32_t te_last_ssrc
    Stream st


cdef struct Session


cdef struct Endpoint:
    int fd
    int leg
    int rtcp
    Session *session


cdef struct Session:
    pthread_mutex_t lock
    uint64_t id
    int dead
    int64_t created_ns
    Leg legs[2]
    Endpoint eps[4]
    int rec_on
    unsigned char *rec_buf      # the engine appends here
    unsigned char *rec_spare    # drained blobs are copied out of this one
    size_t rec_cap
    size_t rec_used
    size_t rec_threshold
    int rec_notified
    uint64_t rec_packets
    uint64_t rec_dropped


cdef struct Event:
    int kind
    uint64_t session_id
    int leg
    int rtcp
    int code
    int volume
    int duration
    uint32_t timestamp
    uint32_t ssrc
    int64_t time_ns
    uint64_t value
    mc_addr addr


cdef struct Core:
    int epfd
    int wake_fd
    int notify_fd
    int stop
    int running
    uint64_t gen
    size_t rec_capacity
    size_t rec_threshold
    # The event ring.
    pthread_mutex_t ev_lock
    Event *events
    uint32_t ev_cap
    uint32_t ev_head
    uint32_t ev_count
    uint64_t ev_dropped
    # Receive and send vectors, used by the engine thread only.
    unsigned char *rx_buf
    mmsghdr rx[VLEN]
    iovec rx_iov[VLEN]
    mc_addr rx_addr[VLEN]
    mmsghdr tx[VLEN]
    iovec tx_iov[VLEN]
    uint64_t loop_errors
    # Engine-wide counters, written by the engine thread only.
    uint64_t wakeups         # epoll_wait calls that returned events
    uint64_t ready           # readable sockets handled
    uint64_t received        # datagrams read


cdef inline void _push_event(Core *c, Event *ev) noexcept nogil:
    cdef uint64_t one = 1
    cdef int was_empty = 0
    pthread_mutex_lock(&c.ev_lock)
    if c.ev_count == c.ev_cap:
        c.ev_dropped += 1
    else:
        c.events[(c.ev_head + c.ev_count) % c.ev_cap] = ev[0]
        c.ev_count += 1
        was_empty = c.ev_count == 1
    pthread_mutex_unlock(&c.ev_lock)
    if was_empty:
        write(c.notify_fd, &one, 8)


cdef inline void _latch_event(Core *c, Session *s, int leg, int rtcp, mc_addr *addr,
                              int64_t now) noexcept nogil:
    cdef Event ev
    memset(&ev, 0, sizeof(ev))
    ev.kind = EV_LATCHED
    ev.session_id = s.id
    ev.leg = leg
    ev.rtcp = rtcp
    ev.time_ns = now
    mc_addr_copy(&ev.addr, addr)
    _push_event(c, &ev)


cdef inline int _admissible(Leg *leg, mc_addr *src) noexcept nogil:
    """A nat leg's latch may go to ``src``: its host is the signalled host (SDP
    c=, or a=rtcp's) or one of the leg's configured hosts (the SIP peer)."""
    cdef int i
    if mc_addr_host_eq(src, &leg.sig_rtp) or mc_addr_host_eq(src, &leg.sig_rtcp):
        return 1
    for i in range(leg.nhosts):
        if mc_addr_host_eq(src, &leg.hosts[i]):
            return 1
    return 0


cdef inline int _accept_source(Core *c, Session *s, Leg *leg, int li, int rtcp,
                               mc_addr *src, int64_t now) noexcept nogil:
    """The source check for one well-formed packet; 0 = drop it (and count it).

    The rule (docs in engine.py), per leg and per socket kind (``rtcp``: the
    RTCP port; RTCP multiplexed on the RTP port uses the RTP state):

    - strict: only the exact signalled address (host and port) is accepted.
    - nat: the first packet from an admissible host (_admissible) latches
      the leg; from then on only the latched source is accepted, except
      that after ``relatch_ns`` of its silence (when set) an admissible
      source takes the latch over.

    A dropped packet is never relayed, recorded, answered or latched onto.
    """
    cdef mc_addr *sig = &leg.sig_rtcp if rtcp else &leg.sig_rtp
    cdef mc_addr *lat = &leg.lat_rtcp if rtcp else &leg.lat_rtp
    cdef int64_t *seen = &leg.lat_rtcp_seen if rtcp else &leg.lat_rtp_seen
    if leg.mode == MODE_STRICT:
        if mc_addr_eq(src, sig):
            return 1
        leg.st.strict_dropped += 1
        mc_addr_copy(&leg.foreign_src, src)
        return 0
    if lat.len != 0:
        if mc_addr_eq(src, lat):
            seen[0] = now
            return 1
        if leg.relatch_ns > 0 and now - seen[0] >= leg.relatch_ns and _admissible(leg, src):
            mc_addr_copy(lat, src)
            seen[0] = now
            leg.st.relatches += 1
            _latch_event(c, s, li, rtcp, lat, now)
            return 1
    elif _admissible(leg, src):
        mc_addr_copy(lat, src)
        seen[0] = now
        _latch_event(c, s, li, rtcp, lat, now)
        return 1
    leg.st.foreign += 1
    mc_addr_copy(&leg.foreign_src, src)
    return 0


cdef inline mc_addr *_destination(Leg *leg, int rtcp) noexcept nogil:
    """Where to send to this leg: strict, the signalled address; nat, the
    latched source once there is one, else the signalled address."""
    cdef mc_addr *a
    if rtcp:
        a = &leg.lat_rtcp if (leg.mode == MODE_NAT and leg.lat_rtcp.len != 0) else &leg.sig_rtcp
    else:
        a = &leg.lat_rtp if (leg.mode == MODE_NAT and leg.lat_rtp.len != 0) else &leg.sig_rtp
    return a if a.len != 0 else NULL


cdef inline void _init_seq(Stream *st, uint16_t seq) noexcept nogil:
    st.base_seq = seq
    st.max_seq = seq
    st.bad_seq = RTP_SEQ_MOD + 1
    st.cycles = 0
    st.received = 0


cdef inline int64_t _expected(Stream *st) noexcept nogil:
    if not st.have_source or st.probation:
        return 0
    return <int64_t>st.cycles + st.max_seq - <int64_t>st.base_seq + 1


cdef inline void _update_seq(Stream *st, uint16_t seq) noexcept nogil:
    """RFC 3550 A.1 update_seq, counting into st.received."""
    cdef uint16_t udelta = <uint16_t>(seq - st.max_seq)
    if st.probation:
        if seq == <uint16_t>(st.max_seq + 1):
            st.probation -= 1
            st.max_seq = seq
            if st.probation == 0:
                _init_seq(st, seq)
                st.received += 1
        else:
            st.probation = MIN_SEQUENTIAL - 1
            st.max_seq = seq
        return
    if udelta < MAX_DROPOUT:
        if seq < st.max_seq:
            st.cycles += RTP_SEQ_MOD
        st.max_seq = seq
    elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
        if seq == st.bad_seq:
            _init_seq(st, seq)
        else:
            st.bad_seq = (seq + 1) & (RTP_SEQ_MOD - 1)
            return
    st.received += 1


cdef inline void _account_rtp(Stream *st, uint32_t ssrc, uint16_t seq, uint32_t ts,
                              int64_t now, uint32_t rate, int jitter) noexcept nogil:
    cdef uint32_t transit
    cdef int32_t d
    if not st.have_source or ssrc != st.ssrc:
        if st.have_source:
            st.expected_before += _expected(st)
            st.received_before += st.received
        st.have_source = 1
        st.ssrc = ssrc
        _init_seq(st, seq)
        st.max_seq = <uint16_t>(seq - 1)
        st.probation = MIN_SEQUENTIAL
        st.have_transit = 0
        st.jitter_q4 = 0
    _update_seq(st, seq)
    if jitter:
        transit = mc_rtp_time(now, rate) - ts
        if st.have_transit:
            d = <int32_t>(transit - st.transit)
            if d < 0:
                d = -d
            st.jitter_q4 += <uint32_t>d - ((st.jitter_q4 + 8) >> 4)
        st.transit = transit
        st.have_transit = 1


cdef inline void _telephone_event(Core *c, Session *s, Leg *leg, int li,
                                  const unsigned char *q, uint32_t ts, uint32_t ssrc,
                                  int64_t now) noexcept nogil:
    """Report an RFC 4733 event once, at its first end packet.

    The end packet is usually sent three times (section 2.5.1.4) with the
    event's timestamp; the first one reports, the copies match the
    remembered (SSRC, timestamp) and are skipped.
    """
    cdef Event ev
    if not (q[1] & 0x80):
        return
    if leg.te_have_last and leg.te_last_ts == ts and leg.te_last_ssrc == ssrc:
        return
    leg.te_have_last = 1
    leg.te_last_ts = ts
    leg.te_last_ssrc = ssrc
    leg.st.dtmf_events += 1
    memset(&ev, 0, sizeof(ev))
    ev.kind = EV_DTMF
    ev.session_id = s.id
    ev.leg = li
    ev.code = q[0]
    ev.volume = q[1] & 0x3F
    ev.duration = mc_be16(q + 2)
    ev.timestamp = ts
    ev.ssrc = ssrc
    ev.time_ns = now
    _push_event(c, &ev)


cdef inline void _record(Core *c, Session *s, int li, const unsigned char *p, int hl,
                         int plen, int64_t now) noexcept nogil:
    cdef size_t need = RECORD_HEADER + plen
    cdef Event ev
    if s.rec_used + need > s.rec_cap:
        s.rec_dropped += 1
        return
    mc_put_record(s.rec_buf + s.rec_used, now, mc_be32(p + 8), mc_be32(p + 4), mc_be16(p + 2),
                  p[1] & 0x7F, p[1] >> 7, <uint8_t>li, <uint16_t>plen)
    memcpy(s.rec_buf + s.rec_used + RECORD_HEADER, p + hl, plen)
    s.rec_used += need
    s.rec_packets += 1
    if not s.rec_notified and s.rec_used >= s.rec_threshold:
        s.rec_notified = 1
        memset(&ev, 0, sizeof(ev))
        ev.kind = EV_RECORDING
        ev.session_id = s.id
        ev.time_ns = now
        ev.value = s.rec_used
        _push_event(c, &ev)


cdef inline int _rtp_header_len(const unsigned char *p, int n, int *plen) noexcept nogil:
    """Header length (fixed + CSRCs + extension) or -1 if malformed; same rules
    as packet.parse_rtp. Sets plen to the payload length without padding."""
    cdef int b0 = p[0]
    cdef int hl = 12 + 4 * (b0 & 0x0F)
    cdef int pad = 0
    if hl > n:
        return -1
    if b0 & 0x10:
        if hl + 4 > n:
            return -1
        hl += 4 + 4 * mc_be16(p + hl + 2)
        if hl > n:
            return -1
    if b0 & 0x20:
        pad = p[n - 1]
        if pad == 0 or hl + pad > n:
            return -1
    plen[0] = n - hl - pad
    return hl


cdef void _send_all(Core *c, int fd, int count, Stream *st) noexcept nogil:
    cdef int done = 0
    cdef int r
    while done < count:
        r = sendmmsg(fd, &c.tx[done], count - done, MSG_DONTWAIT)
        if r < 0:
            if errno == EINTR:
                continue
            # The head message failed (EAGAIN: the socket's send buffer is
            # full; EPERM: a firewall): count it, go on with the rest.
            st.send_errors += 1
            done += 1
        else:
            st.forwarded += r
            done += r


cdef int _relay_batch(Core *c, Session *s, Endpoint *ep) noexcept nogil:
    """One recvmmsg on ep's socket and one sendmmsg of what passes; returns the
    number of datagrams read (0 when the socket was empty)."""
    cdef int li = ep.leg
    cdef int from_rtcp_socket = ep.rtcp
    cdef Leg *leg = &s.legs[li]
    cdef Leg *other = &s.legs[1 - li]
    cdef int n, i, k, length, hl, plen, out_fd, as_rtcp
    cdef unsigned char *p
    cdef mc_addr *src
    cdef mc_addr *dest
    cdef int64_t now
    cdef uint8_t pt
    for i in range(VLEN):
        c.rx[i].msg_hdr.msg_namelen = MC_ADDR_CAP
    n = recvmmsg(ep.fd, c.rx, VLEN, MSG_DONTWAIT, NULL)
    if n <= 0:
        return 0
    c.received += n
    now = mc_now_ns()
    out_fd = other.rtcp_fd if from_rtcp_socket else other.rtp_fd
    k = 0
    for i in range(n):
        p = c.rx_buf + i * BUFSIZE
        length = c.rx[i].msg_len
        src = &c.rx_addr[i]
        src.len = c.rx[i].msg_hdr.msg_namelen
        if (c.rx[i].msg_hdr.msg_flags & MSG_TRUNC) or length < 8 or (p[0] >> 6) != 2:
            leg.st.garbage += 1
            continue
        # RFC 5761: RTCP may share the RTP port; its packet types sit where
        # RTP payload types 64-95 with the marker bit would.
        as_rtcp = from_rtcp_socket or (192 <= p[1] <= 223)
        if as_rtcp:
            if not (192 <= p[1] <= 223):
                leg.st.garbage += 1
                continue
            if not _accept_source(c, s, leg, li, from_rtcp_socket, src, now):
                continue
            leg.st.rtcp_packets += 1
            leg.st.rtcp_bytes += length
        else:
            if length < 12:
                leg.st.garbage += 1
                continue
            hl = _rtp_header_len(p, length, &plen)
            if hl < 0:
                leg.st.garbage += 1
                continue
            if not _accept_source(c, s, leg, li, 0, src, now):
                continue
            pt = p[1] & 0x7F
            leg.st.packets += 1
            leg.st.bytes += length
            leg.st.payload_bytes += plen
            if leg.st.first_ns == 0:
                leg.st.first_ns = now
            leg.st.last_ns = now
            _account_rtp(&leg.st, mc_be32(p + 8), mc_be16(p + 2), mc_be32(p + 4), now,
                         leg.clock_rate, pt != leg.te_pt)
            if pt == leg.te_pt and plen >= 4:
                _telephone_event(c, s, leg, li, p + hl, mc_be32(p + 4), mc_be32(p + 8), now)
            if s.rec_on:
                _record(c, s, li, p, hl, plen, now)
        dest = _destination(other, from_rtcp_socket)
        if dest == NULL:
            leg.st.no_destination += 1
            continue
        c.tx_iov[k].iov_base = p
        c.tx_iov[k].iov_len = length
        c.tx[k].msg_hdr.msg_name = mc_addr_sa(dest)
        c.tx[k].msg_hdr.msg_namelen = dest.len
        k += 1
    if k:
        _send_all(c, out_fd, k, &leg.st)
    return n


cdef void _handle(Core *c, Endpoint *ep) noexcept nogil:
    """Empty one readable socket (edge-triggered: read until it is empty).

    A socket that is still full after MAX_ROUNDS batches (a flood, or a
    backlog after a stall) is re-armed instead of drained, so one socket
    cannot keep the engine from the others; EPOLL_CTL_MOD reports it again
    in the next epoll_wait because it is still readable.
    """
    cdef Session *s = ep.session
    cdef int rounds = 0
    cdef int n
    cdef epoll_event ev
    pthread_mutex_lock(&s.lock)
    if s.dead:
        pthread_mutex_unlock(&s.lock)
        return
    c.ready += 1
    while True:
        n = _relay_batch(c, s, ep)
        rounds += 1
        if n < VLEN:
            break
        if rounds == MAX_ROUNDS:
            ev.events = EPOLLIN | EPOLLET
            ev.data.ptr = ep
            epoll_ctl(c.epfd, EPOLL_CTL_MOD, ep.fd, &ev)
            break
    pthread_mutex_unlock(&s.lock)




cdef void _loop(Core *c) noexcept nogil:
    cdef epoll_event events[MAX_EVENTS]
    cdef int n, i
    cdef uint64_t drained
    cdef Endpoint *ep
    while not mc_load_int(&c.stop):
        n = epoll_wait(c.epfd, events, MAX_EVENTS, 1000)
        if n < 0:
            if errno != EINTR:
                c.loop_errors += 1
                usleep(1000)
            n = 0
        if n > 0:
            c.wakeups += 1
        for i in range(n):
            ep = <Endpoint *>events[i].data.ptr
            if ep == NULL:
                read(c.wake_fd, &drained, 8)
                continue
            _handle(c, ep)
        mc_inc_u64(&c.gen)


cdef object _addr_tuple(mc_addr *a):
    cdef int family = 0
    cdef unsigned int port = 0
    cdef char packed[16]
    cdef int n = mc_addr_get(a, &family, packed, &port)
    if n == 0:
        return None
    return (_socket.inet_ntop(family, packed[:n]), port)


cdef dict _stream_dict(Stream *st, uint32_t rate):
    return {
        "packets": st.packets,
        "bytes": st.bytes,
        "payload_bytes": st.payload_bytes,
        "expected": st.expected_before + _expected(st),
        "received": st.received_before + st.received,
        "jitter_q4": st.jitter_q4,
        "clock_rate": rate,
        "ssrc": st.ssrc if st.have_source else None,
        "first_arrival_ns": st.first_ns if st.first_ns else None,
        "last_arrival_ns": st.last_ns if st.last_ns else None,
        "rtcp_packets": st.rtcp_packets,
        "rtcp_bytes": st.rtcp_bytes,
        "forwarded": st.forwarded,
        "no_destination": st.no_destination,
        "send_errors": st.send_errors,
        "garbage": st.garbage,
        "strict_dropped": st.strict_dropped,
        "foreign": st.foreign,
        "relatches": st.relatches,
        "dtmf_events": st.dtmf_events,
        "injected": st.injected,
    }


cdef class SessionHandle:
    """One relay session in the engine: two legs, four sockets, its counters.

    The sockets stay owned by Python (the port pool); the handle only borrows
    their descriptors, and ``Engine.remove`` guarantees the engine thread has
    let go of them before Python closes them.
    """

    cdef Engine engine
    cdef Session *s
    cdef readonly uint64_t id

    cdef Session *_live(self) except NULL:
        if self.s == NULL:
            raise ValueError(f"session {self.id} has been removed")
        return self.s

    def set_remote(self, int leg, int family, bytes rtp_host, unsigned int rtp_port,
                   bytes rtcp_host, unsigned int rtcp_port):
        """Set the signalled addresses of ``leg``; a change forgets its latches.

        The same addresses again (an SDP refresh: session timers re-INVITE
        every few minutes) keep them, so a NATed peer's audio does not go to
        its unreachable signalled address until its next packet."""
        cdef Session *s = self._live()
        cdef mc_addr rtp
        cdef mc_addr rtcp
        if mc_addr_set(&rtp, family, rtp_host, len(rtp_host), rtp_port) < 0 or \
                mc_addr_set(&rtcp, family, rtcp_host, len(rtcp_host), rtcp_port) < 0:
            raise ValueError("bad address family or length")
        _check_leg(leg)
        pthread_mutex_lock(&s.lock)
        if not (mc_addr_eq(&s.legs[leg].sig_rtp, &rtp) and
                mc_addr_eq(&s.legs[leg].sig_rtcp, &rtcp)):
            mc_addr_copy(&s.legs[leg].sig_rtp, &rtp)
            mc_addr_copy(&s.legs[leg].sig_rtcp, &rtcp)
            s.legs[leg].lat_rtp.len = 0
            s.legs[leg].lat_rtcp.len = 0
        pthread_mutex_unlock(&s.lock)

    def set_latching(self, int leg, int mode, int family, list hosts, double relatch_after):
        """The leg's latching mode, the further hosts a nat leg may latch onto
        (packed addresses of ``family``, at most LATCH_MAX_HOSTS) and the
        silence in seconds after which a nat latch may move (0: never).
        A change of mode or hosts forgets the leg's latches; the same policy
        again keeps them, like set_remote."""
        cdef Session *s = self._live()
        cdef mc_addr parsed[MAX_HOSTS]
        cdef int n = 0
        cdef int i
        cdef bint same
        cdef bytes packed
        _check_leg(leg)
        if mode != MODE_STRICT and mode != MODE_NAT:
            raise ValueError(f"latching mode {mode}: must be {MODE_STRICT} or {MODE_NAT}")
        if len(hosts) > MAX_HOSTS:
            raise ValueError(f"at most {MAX_HOSTS} hosts")
        if not relatch_after >= 0:
            raise ValueError("relatch_after must not be negative")
        for packed in hosts:
            if mc_addr_set(&parsed[n], family, packed, len(packed), 0) < 0:
                raise ValueError("bad address family or length")
            n += 1
        pthread_mutex_lock(&s.lock)
        same = s.legs[leg].mode == mode and s.legs[leg].nhosts == n
        for i in range(n):
            same = same and mc_addr_eq(&s.legs[leg].hosts[i], &parsed[i])
        s.legs[leg].mode = mode
        s.legs[leg].relatch_ns = <int64_t>(relatch_after * 1e9)
        s.legs[leg].nhosts = n
        for i in range(n):
            mc_addr_copy(&s.legs[leg].hosts[i], &parsed[i])
        if not same:
            s.legs[leg].lat_rtp.len = 0
            s.legs[leg].lat_rtcp.len = 0
        pthread_mutex_unlock(&s.lock)

    def foreign_source(self, int leg):
        """(host, port) of the last packet ``leg`` dropped for its source, or None."""
        cdef Session *s = self._live()
        cdef mc_addr a
        _check_leg(leg)
        pthread_mutex_lock(&s.lock)
        mc_addr_copy(&a, &s.legs[leg].foreign_src)
        pthread_mutex_unlock(&s.lock)
        return _addr_tuple(&a)

    def set_telephone_event(self, int leg, int payload_type):
        cdef Session *s = self._live()
        _check_leg(leg)
        if not -1 <= payload_type <= 127:
            raise ValueError(f"payload type {payload_type}: must be 0-127 (or -1 for none)")
        pthread_mutex_lock(&s.lock)
        s.legs[leg].te_pt = payload_type
        s.legs[leg].te_have_last = 0
        pthread_mutex_unlock(&s.lock)

    def set_clock_rate(self, int leg, unsigned int rate):
        cdef Session *s = self._live()
        _check_leg(leg)
        if rate == 0:
            raise ValueError("clock rate must be positive")
        pthread_mutex_lock(&s.lock)
        s.legs[leg].clock_rate = rate
        pthread_mutex_unlock(&s.lock)

    def set_recording(self, bint on):
        cdef Session *s = self._live()
        cdef unsigned char *buf = NULL
        cdef unsigned char *spare = NULL
        if on and s.rec_buf == NULL:
            # Not touched until written, so only drained-to sizes become resident.
            buf = <unsigned char *>malloc(self.engine.c.rec_capacity)
            spare = <unsigned char *>malloc(self.engine.c.rec_capacity)
            if buf == NULL or spare == NULL:
                free(buf)
                free(spare)
                raise MemoryError()
        pthread_mutex_lock(&s.lock)
        if buf != NULL:
            s.rec_buf = buf
            s.rec_spare = spare
            s.rec_cap = self.engine.c.rec_capacity
            s.rec_threshold = self.engine.c.rec_threshold
        s.rec_on = on
        pthread_mutex_unlock(&s.lock)

    def drain_recording(self):
        """Everything recorded since the last drain, as one blob (b"" if nothing).

        The buffers are swapped under the session's mutex and the blob is
        built after it is released: the engine thread never waits for an
        allocation, and the lock is held for a few instructions, so the
        engine (which may run at real-time priority) cannot be held up by a
        lower-priority thread preempted while holding it.
        """
        cdef Session *s = self._live()
        cdef unsigned char *full
        cdef size_t used
        if s.rec_used == 0:  # a racy peek is fine: the next drain gets it
            return b""
        pthread_mutex_lock(&s.lock)
        full = s.rec_buf
        used = s.rec_used
        s.rec_buf = s.rec_spare
        s.rec_spare = full
        s.rec_used = 0
        s.rec_notified = 0
        pthread_mutex_unlock(&s.lock)
        # Only this thread (with the GIL) touches rec_spare between drains.
        return PyBytes_FromStringAndSize(<char *>full, used)

    def stats(self):
        """(A-to-B dict, B-to-A dict, recorded packets, recording drops)."""
        cdef Session *s = self._live()
        cdef Stream a, b
        cdef uint32_t rate_a, rate_b
        cdef uint64_t rec_packets, rec_dropped
        pthread_mutex_lock(&s.lock)
        a = s.legs[0].st
        b = s.legs[1].st
        rate_a = s.legs[0].clock_rate
        rate_b = s.legs[1].clock_rate
        rec_packets = s.rec_packets
        rec_dropped = s.rec_dropped
        pthread_mutex_unlock(&s.lock)
        return (_stream_dict(&a, rate_a), _stream_dict(&b, rate_b), rec_packets, rec_dropped)

    def last_rtp_ns(self):
        """(created, last RTP on A or 0, last RTP on B or 0), CLOCK_MONOTONIC ns."""
        cdef Session *s = self._live()
        return (s.created_ns, s.legs[0].st.last_ns, s.legs[1].st.last_ns)

    def remote(self, int leg):
        """((rtp host, port) | None, (rtcp host, port) | None): where packets to
        ``leg`` go now (latched, else signalled)."""
        cdef Session *s = self._live()
        cdef mc_addr rtp, rtcp
        cdef mc_addr *a
        _check_leg(leg)
        pthread_mutex_lock(&s.lock)
        rtp.len = 0
        rtcp.len = 0
        a = _destination(&s.legs[leg], 0)
        if a != NULL:
            mc_addr_copy(&rtp, a)
        a = _destination(&s.legs[leg], 1)
        if a != NULL:
            mc_addr_copy(&rtcp, a)
        pthread_mutex_unlock(&s.lock)
        return (_addr_tuple(&rtp), _addr_tuple(&rtcp))

    def send(self, int leg, bytes packet):
        """Send ``packet`` from leg's RTP socket to its current remote; False if
        it has none yet, OSError if the kernel refuses."""
        cdef Session *s = self._live()
        cdef mc_addr dest
        cdef mc_addr *a
        cdef int fd
        cdef ssize_t r
        cdef const char *data = PyBytes_AS_STRING(packet)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(packet)
        _check_leg(leg)
        pthread_mutex_lock(&s.lock)
        a = _destination(&s.legs[leg], 0)
        dest.len = 0
        if a != NULL:
            mc_addr_copy(&dest, a)
        fd = s.legs[leg].rtp_fd
        pthread_mutex_unlock(&s.lock)
        if dest.len == 0:
            return False
        r = sendto(fd, data, n, MSG_DONTWAIT, mc_addr_sa(&dest), dest.len)
        if r < 0:
            raise OSError(errno, os.strerror(errno))
        pthread_mutex_lock(&s.lock)
        s.legs[leg].st.injected += 1
        pthread_mutex_unlock(&s.lock)
        return True


cdef inline int _check_leg(int leg) except -1:
    if leg != 0 and leg != 1:
        raise ValueError(f"leg {leg}: must be 0 (A) or 1 (B)")
    return 0


cdef class Engine:
    """The relay core: the epoll set, the engine thread's loop, the event ring."""

    cdef Core *c
    cdef dict _sessions
    cdef uint64_t _next_id

    def __cinit__(self, Py_ssize_t recording_capacity=65536,
                  Py_ssize_t recording_threshold=-1, Py_ssize_t event_capacity=4096):
        cdef int i
        cdef epoll_event ev
        if recording_capacity < RECORD_HEADER + 160:
            raise ValueError("recording_capacity is too small for one G.711 packet")
        if event_capacity < 16:
            raise ValueError("event_capacity must be at least 16")
        self.c = <Core *>calloc(1, sizeof(Core))
        if self.c == NULL:
            raise MemoryError()
        self.c.epfd = -1
        self.c.wake_fd = -1
        self.c.notify_fd = -1
        pthread_mutex_init(&self.c.ev_lock, NULL)
        self.c.rec_capacity = recording_capacity
        self.c.rec_threshold = (recording_threshold if recording_threshold > 0
                                else recording_capacity // 2)
        self.c.ev_cap = event_capacity
        self.c.events = <Event *>calloc(event_capacity, sizeof(Event))
        self.c.rx_buf = <unsigned char *>malloc(VLEN * BUFSIZE)
        if self.c.events == NULL or self.c.rx_buf == NULL:
            raise MemoryError()
        for i in range(VLEN):
            self.c.rx_iov[i].iov_base = self.c.rx_buf + i * BUFSIZE
            self.c.rx_iov[i].iov_len = BUFSIZE
            self.c.rx[i].msg_hdr.msg_name = mc_addr_sa(&self.c.rx_addr[i])
            self.c.rx[i].msg_hdr.msg_namelen = MC_ADDR_CAP
            self.c.rx[i].msg_hdr.msg_iov = &self.c.rx_iov[i]
            self.c.rx[i].msg_hdr.msg_iovlen = 1
            self.c.tx[i].msg_hdr.msg_iov = &self.c.tx_iov[i]
            self.c.tx[i].msg_hdr.msg_iovlen = 1
        self._sessions = {}
        self._next_id = 1
        self.c.epfd = epoll_create1(EPOLL_CLOEXEC)
        self.c.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        self.c.notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self.c.epfd < 0 or self.c.wake_fd < 0 or self.c.notify_fd < 0:
            raise OSError(errno, os.strerror(errno))
        ev.events = EPOLLIN
        ev.data.ptr = NULL
        if epoll_ctl(self.c.epfd, EPOLL_CTL_ADD, self.c.wake_fd, &ev) < 0:
            raise OSError(errno, os.strerror(errno))

    def __dealloc__(self):
        cdef SessionHandle h
        if self.c == NULL:
            return
        if mc_load_int(&self.c.running):
            # The thread holds a reference to run(), so this cannot happen;
            # leak rather than free memory it may still use.
            return
        if self._sessions:
            for h in list(self._sessions.values()):
                self._free(h)
        for fd in (self.c.epfd, self.c.wake_fd, self.c.notify_fd):
            if fd >= 0:
                close(fd)
        pthread_mutex_destroy(&self.c.ev_lock)
        free(self.c.events)
        free(self.c.rx_buf)
        free(self.c)
        self.c = NULL

    @property
    def notify_fd(self):
        """Readable when poll_events has something; read 8 bytes to reset it."""
        return self.c.notify_fd

    @property
    def events_dropped(self):
        return self.c.ev_dropped

    @property
    def loop_errors(self):
        return self.c.loop_errors

    @property
    def sessions(self):
        return len(self._sessions)

    def counters(self):
        """Engine-wide totals: epoll wake-ups with work, sockets read, datagrams
        read, events dropped, loop errors. Read without a lock: each is a
        64-bit word only the engine thread writes, so a read is never torn."""
        return {
            "wakeups": self.c.wakeups,
            "ready": self.c.ready,
            "received": self.c.received,
            "events_dropped": self.c.ev_dropped,
            "loop_errors": self.c.loop_errors,
        }

    def run(self):
        """The engine thread's body: relays until stop(). Returns nothing.

        Runs with the GIL released throughout, so the event loop thread and
        the engine thread only meet at the per-session mutexes.
        """
        if mc_load_int(&self.c.running):
            raise RuntimeError("the engine is already running")
        mc_store_int(&self.c.stop, 0)
        mc_store_int(&self.c.running, 1)
        with nogil:
            _loop(self.c)
        mc_store_int(&self.c.running, 0)

    def stop(self):
        """Ask the engine thread to return from run(); join the thread after."""
        cdef uint64_t one = 1
        mc_store_int(&self.c.stop, 1)
        write(self.c.wake_fd, &one, 8)

    def add(self, int rtp_a, int rtcp_a, int rtp_b, int rtcp_b):
        """Register a session over four bound UDP sockets; returns its handle."""
        cdef Session *s = <Session *>calloc(1, sizeof(Session))
        cdef SessionHandle h
        cdef int i, j
        cdef int fds[4]
        cdef epoll_event ev
        if s == NULL:
            raise MemoryError()
        fds[0] = rtp_a
        fds[1] = rtcp_a
        fds[2] = rtp_b
        fds[3] = rtcp_b
        pthread_mutex_init(&s.lock, NULL)
        s.id = self._next_id
        self._next_id += 1
        s.created_ns = mc_now_ns()
        for i in range(2):
            s.legs[i].rtp_fd = fds[2 * i]
            s.legs[i].rtcp_fd = fds[2 * i + 1]
            s.legs[i].te_pt = -1
            s.legs[i].clock_rate = 8000
        for i in range(4):
            s.eps[i].fd = fds[i]
            s.eps[i].leg = i // 2
            s.eps[i].rtcp = i % 2
            s.eps[i].session = s
        h = SessionHandle.__new__(SessionHandle)
        h.engine = self
        h.s = s
        h.id = s.id
        for i in range(4):
            ev.events = EPOLLIN | EPOLLET
            ev.data.ptr = &s.eps[i]
            if epoll_ctl(self.c.epfd, EPOLL_CTL_ADD, fds[i], &ev) < 0:
                err = errno
                for j in range(i):
                    epoll_ctl(self.c.epfd, EPOLL_CTL_DEL, fds[j], NULL)
                pthread_mutex_destroy(&s.lock)
                free(s)
                h.s = NULL
                raise OSError(err, os.strerror(err))
        self._sessions[h.id] = h
        return h

    def remove(self, SessionHandle h):
        """Take a session out of the relay; afterwards its sockets may be closed.

        Blocks (GIL released) until the engine thread has finished the epoll
        batch it is in, at most one batch (well under a millisecond at our
        load); then no engine code can touch the session or its sockets.
        """
        cdef Session *s = h.s
        cdef int i
        cdef uint64_t g0
        cdef uint64_t one = 1
        if s == NULL or h.engine is not self:
            return
        pthread_mutex_lock(&s.lock)
        s.dead = 1
        pthread_mutex_unlock(&s.lock)
        for i in range(4):
            epoll_ctl(self.c.epfd, EPOLL_CTL_DEL, s.eps[i].fd, NULL)
        if mc_load_int(&self.c.running):
            g0 = mc_load_u64(&self.c.gen)
            write(self.c.wake_fd, &one, 8)
            with nogil:
                while mc_load_u64(&self.c.gen) == g0 and mc_load_int(&self.c.running):
                    usleep(50)
        self._free(h)

    cdef void _free(self, SessionHandle h):
        cdef Session *s = h.s
        if s == NULL:
            return
        h.s = NULL
        self._sessions.pop(h.id, None)
        pthread_mutex_destroy(&s.lock)
        free(s.rec_buf)
        free(s.rec_spare)
        free(s)

    def poll_events(self):
        """Every pending event as a tuple, oldest first; see engine.py for the shapes."""
        cdef Event *copy
        cdef uint32_t n, i
        cdef Event *ev
        cdef list out = []
        pthread_mutex_lock(&self.c.ev_lock)
        n = self.c.ev_count
        if n == 0:
            pthread_mutex_unlock(&self.c.ev_lock)
            return out
        copy = <Event *>malloc(n * sizeof(Event))
        if copy == NULL:
            pthread_mutex_unlock(&self.c.ev_lock)
            raise MemoryError()
        for i in range(n):
            copy[i] = self.c.events[(self.c.ev_head + i) % self.c.ev_cap]
        self.c.ev_head = (self.c.ev_head + n) % self.c.ev_cap
        self.c.ev_count = 0
        pthread_mutex_unlock(&self.c.ev_lock)
        try:
            for i in range(n):
                ev = &copy[i]
                if ev.kind == EV_DTMF:
                    out.append((EVENT_DTMF, ev.session_id, ev.leg, ev.time_ns,
                                ev.code, ev.volume, ev.duration, ev.timestamp, ev.ssrc))
                elif ev.kind == EV_LATCHED:
                    out.append((EVENT_LATCHED, ev.session_id, ev.leg, ev.time_ns,
                                bool(ev.rtcp), _addr_tuple(&ev.addr)))
                elif ev.kind == EV_RECORDING:
                    out.append((EVENT_RECORDING, ev.session_id, -1, ev.time_ns, ev.value))
        finally:
            free(copy)
        return out

    def drain_recordings(self):
        """{session id: blob} for every session with recorded data: one call
        per drain cycle instead of one per session."""
        cdef dict out = {}
        cdef SessionHandle h
        for h in self._sessions.values():
            if h.s != NULL and h.s.rec_used:
                out[h.id] = h.drain_recording()
        return out


def monotonic_ns():
    """CLOCK_MONOTONIC in ns: the clock of arrival_ns and last_rtp_ns."""
    return mc_now_ns()
