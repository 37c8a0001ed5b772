"""The port pool with a fake clock and a fake binder: no sockets, no sleeps."""

from __future__ import annotations

import errno

import pytest

from mediacore.rtp.ports import PortPool, PortsExhausted

ADDR = "192.0.2.10"


class FakeSocket:
    def __init__(self, port: int) -> None:
        self.port = port
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeHost:
    """Binds like the kernel would: a port is bound once, ``held`` ports fail."""

    def __init__(self, held: set[int] = frozenset(), error: int = errno.EADDRINUSE) -> None:
        self.held = set(held)
        self.error = error
        self.bound: dict[int, FakeSocket] = {}
        self.attempts: list[int] = []

    def bind(self, address: str, port: int) -> FakeSocket:
        assert address == ADDR
        self.attempts.append(port)
        if port in self.held or (port in self.bound and not self.bound[port].closed):
            raise OSError(self.error, "taken")
        self.bound[port] = FakeSocket(port)
        return self.bound[port]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(first: int = 20000, last: int = 20009, held: set[int] = frozenset(),
         quarantine: float = 30.0) -> tuple[PortPool, FakeHost, Clock]:
    host, clock = FakeHost(held), Clock()
    pool = PortPool((first, last), quarantine=quarantine, clock=clock, bind=host.bind)  # type: ignore[arg-type]
    return pool, host, clock


def test_pairs_are_even_rtp_and_the_next_odd_rtcp() -> None:
    pool, _, _ = make(20001, 20010)  # odd first port: 20001 cannot be RTP
    pairs = [pool.allocate(ADDR) for _ in range(4)]
    assert [(p.rtp_port, p.rtcp_port) for p in pairs] == [
        (20002, 20003), (20004, 20005), (20006, 20007), (20008, 20009)]
    assert all(p.rtp.port == p.rtp_port and p.rtcp.port == p.rtcp_port for p in pairs)
    assert pool.capacity == 4  # 20010 has no 20011 inside the range
    with pytest.raises(PortsExhausted):
        pool.allocate(ADDR)


def test_a_released_pair_is_reused_at_once_when_nothing_older_is_free() -> None:
    pool, _, clock = make(20000, 20003)  # two pairs
    first = pool.allocate(ADDR)
    pool.allocate(ADDR)
    pool.release(first)
    assert first.rtp.closed and first.rtcp.closed
    assert (pool.in_use, pool.available, pool.cooling) == (1, 1, 1)
    clock.now += 1  # well inside the 30 s a pair should idle: reused all the same
    again = pool.allocate(ADDR)
    assert again.rtp_port == first.rtp_port
    assert pool.reused_early == 1
    with pytest.raises(PortsExhausted):  # now every pair is in use
        pool.allocate(ADDR)


def test_a_pair_idle_for_the_quarantine_is_not_counted_as_early() -> None:
    pool, _, clock = make(20000, 20001)
    pool.release(pool.allocate(ADDR))
    clock.now += 30
    assert pool.cooling == 0
    pool.allocate(ADDR)
    assert pool.reused_early == 0


def test_the_longest_released_pair_goes_first_even_inside_the_quarantine() -> None:
    pool, _, clock = make(20000, 20005)  # three pairs
    pairs = [pool.allocate(ADDR) for _ in range(3)]
    for p in (pairs[1], pairs[2], pairs[0]):
        pool.release(p)
        clock.now += 1
    assert pool.cooling == 3
    assert [pool.allocate(ADDR).rtp_port for _ in range(3)] == [20002, 20004, 20000]


def test_reuse_is_least_recently_used_first() -> None:
    pool, _, clock = make(20000, 20009)  # five pairs
    pairs = [pool.allocate(ADDR) for _ in range(3)]
    for p in reversed(pairs):
        pool.release(p)
        clock.now += 1
    clock.now += 60
    order = [pool.allocate(ADDR).rtp_port for _ in range(5)]
    # Never-used pairs first, then released ones in the order they were released.
    assert order == [20006, 20008, 20004, 20002, 20000]


def test_ports_held_by_another_process_are_skipped_and_retried_later() -> None:
    pool, host, clock = make(20000, 20007, held={20001, 20004})
    pair = pool.allocate(ADDR)
    assert pair.rtp_port == 20002  # 20000's RTCP port is taken
    assert host.bound[20000].closed  # the half-bound RTP socket was let go
    assert pool.allocate(ADDR).rtp_port == 20006  # 20004 is taken
    assert (pool.held_elsewhere, pool.available) == (2, 0)
    attempts = len(host.attempts)
    with pytest.raises(PortsExhausted):
        pool.allocate(ADDR)
    assert len(host.attempts) > attempts  # tried the held ones again before refusing
    host.held.clear()
    clock.now += 30
    assert sorted(pool.allocate(ADDR).rtp_port for _ in range(2)) == [20000, 20004]


def test_a_port_another_process_let_go_of_is_taken_before_its_retry_time() -> None:
    pool, host, _ = make(20000, 20003, held={20002})
    pool.allocate(ADDR)
    host.held.clear()  # the other process closed it a moment later
    assert pool.allocate(ADDR).rtp_port == 20002


def test_exhaustion_says_why() -> None:
    pool, _, _ = make(20000, 20003, held={20002})
    pool.allocate(ADDR)
    with pytest.raises(PortsExhausted) as info:
        pool.allocate(ADDR)
    assert (info.value.in_use, info.value.held_elsewhere) == (1, 1)
    assert "20000-20003" in str(info.value) and "1 in use" in str(info.value)
    assert "1 held by other processes" in str(info.value)


def test_permission_denied_is_skipped_like_in_use() -> None:
    host, clock = FakeHost({20000}, error=errno.EACCES), Clock()
    pool = PortPool((20000, 20003), clock=clock, bind=host.bind)  # type: ignore[arg-type]
    assert pool.allocate(ADDR).rtp_port == 20002


def test_a_bad_address_is_an_error_not_exhaustion() -> None:
    def bind(address: str, port: int) -> FakeSocket:
        raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")

    pool = PortPool((20000, 29999), bind=bind)  # type: ignore[arg-type]
    with pytest.raises(OSError) as info:
        pool.allocate(ADDR)
    assert info.value.errno == errno.EADDRNOTAVAIL
    assert pool.available == 5000


def test_release_is_idempotent() -> None:
    pool, _, _ = make()
    pair = pool.allocate(ADDR)
    pool.release(pair)
    pool.release(pair)
    assert (pool.in_use, pool.available) == (0, 5)
    assert [pool.allocate(ADDR).rtp_port for _ in range(5)] == [
        20002, 20004, 20006, 20008, 20000]


def test_zero_quarantine_reuses_at_once() -> None:
    pool, _, _ = make(20000, 20001, quarantine=0)
    pair = pool.allocate(ADDR)
    pool.release(pair)
    assert pool.allocate(ADDR).rtp_port == 20000


@pytest.mark.parametrize("port_range", [(0, 10), (20000, 19999), (20000, 70000), (20001, 20001)])
def test_bad_ranges_are_refused(port_range: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="port_range"):
        PortPool(port_range)
