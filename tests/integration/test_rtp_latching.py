"""The engine's source rule (strict and nat latching) with real UDP on loopback.

127.0.0.1 plays the call's parties; 127.0.0.66 another host on the network
(the attacker). Each test checks what arrives where, what never arrives
(nothing is relayed to, recorded from or sent back to a foreign source),
and what the engine counted. See mediacore/rtp/engine.py for the rule.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator

import pytest

from mediacore.rtp.engine import LatchedEvent, Latching, Leg, MediaEngine, Session
from mediacore.rtp.packet import iter_records
from mediacore.rtp.ports import PortPool
from tests.support.rtp import ATTACKER, HOST, UdpPeer, rtp, wait_for

pytestmark = pytest.mark.integration

SR = b"\x80\xc8\x00\x06" + bytes(range(24))  # an RTCP sender report
RR = b"\x80\xc9\x00\x01" + b"\x00\x00\x00\x0b"  # a receiver report


@pytest.fixture
def peers() -> Iterator[Callable[..., UdpPeer]]:
    made: list[UdpPeer] = []

    def make(host: str = HOST) -> UdpPeer:
        made.append(UdpPeer(host))
        return made[-1]

    yield make
    for p in made:
        p.close()


@pytest.fixture
def engine() -> Iterator[MediaEngine]:
    base = random.Random().randrange(41000, 59000, 1000)
    with MediaEngine(HOST, PortPool((base, base + 999))) as eng:
        eng.start()
        yield eng


def session(engine: MediaEngine, a: UdpPeer, b: UdpPeer, *, rtcp: bool = False) -> Session:
    s = engine.open_session()
    s.set_remote(Leg.A, a.host, a.port, a.port if rtcp else None)
    s.set_remote(Leg.B, b.host, b.port, b.port if rtcp else None)
    return s


def latches(engine: MediaEngine) -> list[tuple[Leg, bool, tuple[str, int] | None]]:
    return [(e.leg, e.rtcp, e.address) for e in engine.poll_events()
            if isinstance(e, LatchedEvent)]


# --- strict (the default) --------------------------------------------------------------


def test_strict_is_the_default_and_takes_only_the_signalled_address(
        engine: MediaEngine, peers) -> None:
    a, b = peers(), peers()
    same_host, other_host = peers(), peers(ATTACKER)
    s = session(engine, a, b)
    s.set_recording(True)
    for i in range(5):
        same_host.send(rtp(i, b"\x11" * 160), s.leg_a.rtp)
        other_host.send(rtp(i, b"\x22" * 160), s.leg_a.rtp)
    a.send(rtp(10), s.leg_a.rtp)
    assert b.recv()[0][0] == rtp(10)  # the only one: it queued behind the dropped ones
    assert b.nothing()
    b.send(rtp(11), s.leg_b.rtp)
    assert a.recv()[0][0] == rtp(11)
    assert same_host.nothing(0) and other_host.nothing(0)  # never answered
    st = s.stats()
    assert (st.a_to_b.strict_dropped, st.a_to_b.packets, st.a_to_b.forwarded) == (10, 1, 1)
    assert st.a_to_b.foreign == 0 and st.recorded_packets == 2
    assert [r.payload[:1] for r in iter_records(s.drain_recording())] == [b"\xff", b"\xff"]
    assert s.foreign_source(Leg.A) == other_host.address
    assert s.foreign_source(Leg.B) is None
    assert s.remote(Leg.A)[0] == a.address
    assert latches(engine) == []  # a strict leg never latches


def test_strict_leg_without_sdp_takes_nothing(engine: MediaEngine, peers) -> None:
    a, b = peers(), peers()
    s = engine.open_session()
    s.set_remote(Leg.B, HOST, b.port)  # the target has not answered yet
    a.send(rtp(1), s.leg_a.rtp)
    b.send(rtp(2), s.leg_b.rtp)
    assert a.nothing() and b.nothing(0)
    st = s.stats()
    assert (st.a_to_b.strict_dropped, st.b_to_a.no_destination) == (1, 1)
    assert s.remote(Leg.A) == (None, None)


def test_strict_announcements_go_to_the_signalled_address_only(
        engine: MediaEngine, peers) -> None:
    """The recording notice plays before the caller's first packet: a third
    host that sends first must not receive it (nor anything after it)."""
    a, b, attacker = peers(), peers(), peers(ATTACKER)
    s = session(engine, a, b)
    attacker.send(rtp(1), s.leg_a.rtp)
    wait_for(lambda: s.stats().a_to_b.strict_dropped == 1, "the attacker's packet")
    assert s.send(Leg.A, rtp(100))
    assert a.recv()[0][0] == rtp(100)
    assert attacker.nothing()


def test_strict_rtcp_only_from_the_signalled_rtcp_port(engine: MediaEngine, peers) -> None:
    a, a_rtcp, b, b_rtcp, stray = peers(), peers(), peers(), peers(), peers()
    s = engine.open_session()
    s.set_remote(Leg.A, HOST, a.port, a_rtcp.port)
    s.set_remote(Leg.B, HOST, b.port, b_rtcp.port)
    a_rtcp.send(SR, s.leg_a.rtcp)
    assert b_rtcp.recv()[0] == (SR, (HOST, s.leg_b.rtcp))
    b_rtcp.send(RR, s.leg_b.rtcp)
    assert a_rtcp.recv()[0] == (RR, (HOST, s.leg_a.rtcp))
    stray.send(SR, s.leg_a.rtcp)  # another port of the same host
    a.send(SR, s.leg_a.rtcp)  # the RTP port is not the RTCP address
    assert b_rtcp.nothing()
    st = s.stats()
    assert (st.a_to_b.rtcp_packets, st.a_to_b.strict_dropped, st.b_to_a.rtcp_packets) == (1, 2, 1)


def test_rtcp_mux_follows_the_rtp_rule(engine: MediaEngine, peers) -> None:
    a, b, attacker = peers(), peers(), peers(ATTACKER)
    s = session(engine, a, b, rtcp=True)
    attacker.send(RR, s.leg_a.rtp)  # RTCP on the RTP port, from elsewhere
    a.send(RR, s.leg_a.rtp)
    assert b.recv()[0] == (RR, (HOST, s.leg_b.rtp))
    assert b.nothing()
    st = s.stats().a_to_b
    assert (st.rtcp_packets, st.strict_dropped, st.packets) == (1, 1, 0)


# --- nat -------------------------------------------------------------------------------


def test_nat_latches_onto_the_first_source_on_the_signalled_host(
        engine: MediaEngine, peers) -> None:
    signalled, actual, b, late = peers(), peers(), peers(), peers()
    s = session(engine, signalled, b)
    s.set_latching(Leg.A, Latching.NAT)
    b.send(rtp(1), s.leg_b.rtp)
    assert signalled.recv()[0][0] == rtp(1)  # before A speaks: SDP's address
    actual.send(rtp(7, ssrc=0xCA11), s.leg_a.rtp)  # A sends from another port (NAT)
    b.recv()
    b.send(rtp(2), s.leg_b.rtp)
    assert actual.recv()[0][0] == rtp(2)
    assert signalled.nothing()
    assert s.remote(Leg.A)[0] == actual.address
    late.send(rtp(8), s.leg_a.rtp)  # latched: another port of that host is foreign now
    signalled.send(rtp(9), s.leg_a.rtp)  # the signalled address too: only re-INVITEs move it
    assert b.nothing()
    st = s.stats().a_to_b
    assert (st.packets, st.foreign, st.relatches, st.strict_dropped) == (1, 2, 0, 0)
    assert latches(engine) == [(Leg.A, False, actual.address)]  # B is strict: no latch


def test_nat_a_third_host_cannot_win_the_race(engine: MediaEngine, peers) -> None:
    """The hijack before the first packet: the attacker sends before the caller."""
    a, b, attacker = peers(), peers(), peers(ATTACKER)
    s = session(engine, a, b)
    s.set_latching(Leg.A, Latching.NAT)
    s.set_recording(True)
    for i in range(3):
        attacker.send(rtp(i, b"\x22" * 160), s.leg_a.rtp)
        attacker.send(SR, s.leg_a.rtcp)
    b.send(rtp(50), s.leg_b.rtp)  # the callee's audio: not to the attacker
    assert a.recv()[0][0] == rtp(50)
    a.send(rtp(10), s.leg_a.rtp)
    assert b.recv()[0][0] == rtp(10)
    assert b.nothing() and attacker.nothing(0)
    st = s.stats()
    assert (st.a_to_b.foreign, st.a_to_b.packets, st.recorded_packets) == (6, 1, 2)
    assert s.foreign_source(Leg.A)[0] == ATTACKER
    assert latches(engine) == [(Leg.A, False, a.address)]


def test_nat_admits_the_sip_peer_host_when_sdp_names_a_private_one(
        engine: MediaEngine, peers) -> None:
    """A NATed phone: SDP says a private address (here 127.0.0.77, which sends
    nothing), its media comes from its public one, where its SIP came from."""
    public, b, attacker = peers(), peers(), peers(ATTACKER)
    s = engine.open_session()
    s.set_latching(Leg.A, Latching.NAT, hosts=[HOST])
    s.set_remote(Leg.A, "127.0.0.77", 4000)
    s.set_remote(Leg.B, HOST, b.port)
    attacker.send(rtp(1), s.leg_a.rtp)
    public.send(rtp(2), s.leg_a.rtp)
    assert b.recv()[0][0] == rtp(2)
    b.send(rtp(3), s.leg_b.rtp)
    assert public.recv()[0][0] == rtp(3)
    assert attacker.nothing(0) and b.nothing(0)
    assert s.stats().a_to_b.foreign == 1


def test_nat_without_the_peer_host_admits_only_the_sdp_host(engine: MediaEngine, peers) -> None:
    public, b = peers(), peers()
    s = engine.open_session()
    s.set_latching(Leg.A, Latching.NAT)
    s.set_remote(Leg.A, "127.0.0.77", 4000)
    s.set_remote(Leg.B, HOST, b.port)
    public.send(rtp(1), s.leg_a.rtp)
    assert b.nothing()
    assert s.stats().a_to_b.foreign == 1


def test_nat_set_remote_starts_afresh(engine: MediaEngine, peers) -> None:
    a, new_signalled, new_actual, b = peers(), peers(), peers(), peers()
    s = session(engine, a, b)
    s.set_latching(Leg.A, Latching.NAT)
    a.send(rtp(1), s.leg_a.rtp)
    b.recv()
    s.set_remote(Leg.A, HOST, new_signalled.port)  # re-INVITE
    b.send(rtp(2), s.leg_b.rtp)
    assert new_signalled.recv()[0][0] == rtp(2)
    new_actual.send(rtp(3), s.leg_a.rtp)
    b.recv()
    b.send(rtp(4), s.leg_b.rtp)
    assert new_actual.recv()[0][0] == rtp(4)
    assert a.nothing()


def test_nat_the_same_sdp_again_keeps_the_latch(engine: MediaEngine, peers) -> None:
    """A session refresh (RFC 4028 re-INVITE) repeats the SDP: audio must keep
    going to the latched source, not to the signalled address until the next
    packet."""
    signalled, actual, b = peers(), peers(), peers()
    s = session(engine, signalled, b)
    s.set_latching(Leg.A, Latching.NAT, hosts=[HOST])
    actual.send(rtp(1), s.leg_a.rtp)
    b.recv()
    s.set_latching(Leg.A, Latching.NAT, hosts=[HOST])  # what EngineMedia does per SDP
    s.set_remote(Leg.A, HOST, signalled.port)
    b.send(rtp(2), s.leg_b.rtp)
    assert actual.recv()[0][0] == rtp(2) and signalled.nothing()
    s.set_latching(Leg.A, Latching.NAT, hosts=["127.0.0.5"])  # a new SIP peer: afresh
    b.send(rtp(3), s.leg_b.rtp)
    assert signalled.recv()[0][0] == rtp(3)


def test_nat_never_relatches_by_default(engine: MediaEngine, peers) -> None:
    """The hijack after silence: before, 1 s of caller silence gave the leg away."""
    a, b, rebound, attacker = peers(), peers(), peers(), peers(ATTACKER)
    s = session(engine, a, b)
    s.set_latching(Leg.A, Latching.NAT)
    a.send(rtp(1), s.leg_a.rtp)
    b.recv()
    time.sleep(0.3)
    rebound.send(rtp(2), s.leg_a.rtp)
    attacker.send(rtp(3), s.leg_a.rtp)
    b.send(rtp(4), s.leg_b.rtp)
    assert a.recv()[0][0] == rtp(4)
    assert b.nothing(0) and rebound.nothing(0) and attacker.nothing(0)
    assert (s.stats().a_to_b.foreign, s.stats().a_to_b.relatches) == (2, 0)


def test_nat_relatch_after_silence_moves_only_to_a_signalled_host(
        engine: MediaEngine, peers) -> None:
    a, b, rebound, attacker = peers(), peers(), peers(), peers(ATTACKER)
    s = session(engine, a, b)
    s.set_latching(Leg.A, Latching.NAT, relatch_after=0.2)
    a.send(rtp(1), s.leg_a.rtp)
    b.recv()
    rebound.send(rtp(2), s.leg_a.rtp)  # the latched source is not silent yet
    assert b.nothing(0.05)
    time.sleep(0.3)  # longer than relatch_after: the NAT rebinding case
    attacker.send(rtp(3), s.leg_a.rtp)  # silent long enough, but another host
    rebound.send(rtp(4), s.leg_a.rtp)
    assert b.recv()[0][0] == rtp(4)
    b.send(rtp(5), s.leg_b.rtp)
    assert rebound.recv()[0][0] == rtp(5)
    assert attacker.nothing(0) and a.nothing(0)
    st = s.stats().a_to_b
    assert (st.relatches, st.foreign, st.packets) == (1, 2, 2)


def test_nat_rtcp_latches_on_its_own(engine: MediaEngine, peers) -> None:
    a, b, b_rtcp = peers(), peers(), peers()
    a_rtcp_nat, attacker = peers(), peers(ATTACKER)
    s = engine.open_session()
    s.set_latching(Leg.A, Latching.NAT)
    s.set_remote(Leg.A, HOST, a.port)  # RTCP signalled at port + 1
    s.set_remote(Leg.B, HOST, b.port, b_rtcp.port)
    attacker.send(SR, s.leg_a.rtcp)
    a_rtcp_nat.send(SR, s.leg_a.rtcp)
    assert b_rtcp.recv()[0][0] == SR
    b_rtcp.send(RR, s.leg_b.rtcp)
    assert a_rtcp_nat.recv()[0] == (RR, (HOST, s.leg_a.rtcp))
    assert s.remote(Leg.A) == ((HOST, a.port), a_rtcp_nat.address)  # RTP not latched yet
    assert attacker.nothing(0) and b_rtcp.nothing(0)
    st = s.stats().a_to_b
    assert (st.rtcp_packets, st.foreign) == (1, 1)


def test_set_latching_checks_its_arguments(engine: MediaEngine) -> None:
    s = engine.open_session()
    with pytest.raises(ValueError):
        s.set_latching(Leg.A, Latching.NAT, hosts=["not-an-address"])
    with pytest.raises(ValueError, match="at most"):
        s.set_latching(Leg.A, Latching.NAT, hosts=[f"127.0.0.{i}" for i in range(1, 7)])
    with pytest.raises(ValueError, match="relatch_after"):
        s.set_latching(Leg.A, Latching.NAT, relatch_after=0)
    with pytest.raises(ValueError):
        s.set_latching(Leg.A, "loose")  # type: ignore[arg-type]
    s.set_latching(Leg.B, Latching.NAT, hosts=["::1", HOST, HOST])  # IPv6 ignored, deduplicated
