"""Loops through the B2BUA, sans-IO: an INVITE that comes back is refused 482, not forwarded again.

The server's own address here is 127.0.0.1:5060 (the harness's LocalContact):
what the B2BUA sends there is fed back into the same endpoint, as the
network would deliver it, until nothing is addressed to us any more.
"""

from __future__ import annotations

from pathlib import Path

from mediacore.config import Config, NumberConfig
from mediacore.sip import loops
from mediacore.sip import message as sip
from mediacore.sip.endpoint import Transmit
from mediacore.sip.transport import Peer
from tests.unit.test_call_flows import CARRIER, Harness, answer_from_target, invite, only

SERVICE = "+31900123456"
OTHER = "+31900654321"
US = Peer("udp", "127.0.0.1", 5060)
OURSELVES = f"sip:{SERVICE}@127.0.0.1:5060"


def run_network(h: Harness, data: bytes, peer: Peer, *, limit: int = 1000) -> list[Transmit]:
    """Deliver ``data`` from ``peer``, and every message we address to ourselves
    back to us; what goes elsewhere is returned. ``limit`` stops a loop that
    the server does not (the test then fails on the CDR count, not by hanging)."""
    pending = [(data, peer)]
    outside: list[Transmit] = []
    delivered = 0
    while pending and delivered < limit:
        data, peer = pending.pop(0)
        delivered += 1
        for transmit in h.settle(h.endpoint.receive(data, peer, h.now)):
            if transmit.peer.host == US.host and transmit.peer.port == US.port:
                pending.append((transmit.data, US))
            else:
                outside.append(transmit)
    return outside


def final_to_caller(sent: list[Transmit]) -> sip.Response:
    answers = [m for m in (sip.parse(t.data) for t in sent if t.peer == CARRIER)
               if isinstance(m, sip.Response) and m.status >= 200]
    assert len(answers) == 1, answers
    return answers[0]


def test_a_number_whose_target_is_this_server_makes_one_call_and_a_482(tmp_path: Path) -> None:
    h = Harness(tmp_path, targets=(OURSELVES,))
    sent = run_network(h, invite(), CARRIER)
    final = final_to_caller(sent)
    assert final.status == 482 and final.reason == "Loop Detected"
    (call,) = h.ended  # one CDR: the looped INVITE was refused before it became a call
    cdr = call.cdr()
    assert cdr.disposition == "failed" and cdr.sip_status == 482
    assert len(h.media) == 1 and h.media[0].closed
    assert h.b2bua.counters.refused == {"loop": 1}
    assert h.b2bua.calls == {}


def test_two_numbers_forwarding_to_each_other_stop_at_the_first_repeat(tmp_path: Path) -> None:
    """A spiral (A's target is B on this node) goes on; back at A it is a loop."""
    h = Harness(tmp_path)
    h.b2bua.reload(Config(source="test", numbers=(
        NumberConfig(number=SERVICE, owner="acme", targets=(f"sip:{OTHER}@127.0.0.1:5060",)),
        NumberConfig(number=OTHER, owner="acme", targets=(OURSELVES,)),
    )))
    sent = run_network(h, invite(), CARRIER)
    assert final_to_caller(sent).status == 482
    assert sorted(call.number.number for call in h.ended) == [SERVICE, OTHER]
    assert all(call.cdr().sip_status == 482 for call in h.ended)
    assert h.b2bua.counters.refused == {"loop": 1}


def test_a_spiral_to_another_number_reaches_that_numbers_target(tmp_path: Path) -> None:
    target = "sip:+31201234567@127.0.0.1:5080"
    h = Harness(tmp_path)
    h.b2bua.reload(Config(source="test", numbers=(
        NumberConfig(number=SERVICE, owner="acme", targets=(f"sip:{OTHER}@127.0.0.1:5060",)),
        NumberConfig(number=OTHER, owner="acme", targets=(target,)),
    )))
    sent = run_network(h, invite(), CARRIER)
    onward = only([sip.parse(t.data) for t in sent], sip.Request, method="INVITE")
    assert str(onward.uri) == target
    # It carries both numbers' tokens: each leg starts a new Via, so the
    # header is what keeps the history of a chain through B2BUAs.
    assert len(onward.headers.get(loops.LOOP_HEADER).split(", ")) == 2
    assert h.b2bua.counters.refused == {}


def test_outbound_invites_carry_the_token_in_their_branch_and_header(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    out = h.receive(invite(), CARRIER)
    onward = only(out, sip.Request, method="INVITE")
    token = loops.loop_token(h.b2bua.loop_key, SERVICE)
    assert onward.headers.get(loops.LOOP_HEADER) == token
    assert token in (onward.top_via.branch or "")
    # The CANCEL of that INVITE keeps its branch (RFC 3261 9.1), as it must.
    assert loops.has_looped(onward, token)


def test_a_carriers_loop_header_is_carried_on_with_ours(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    out = h.receive(invite(extra=f"{loops.LOOP_HEADER}: 0123456789ab\r\n"), CARRIER)
    onward = only(out, sip.Request, method="INVITE")
    token = loops.loop_token(h.b2bua.loop_key, SERVICE)
    assert onward.headers.get(loops.LOOP_HEADER) == f"0123456789ab, {token}"


def max_forwards_invite(value: int) -> bytes:
    return invite().replace(b"Max-Forwards: 70", f"Max-Forwards: {value}".encode())


def test_max_forwards_is_copied_minus_one_down_to_zero(tmp_path: Path) -> None:
    for received, sent in ((70, 69), (5, 4), (1, 0), (200, 70)):
        h = Harness(tmp_path)
        out = h.receive(max_forwards_invite(received), CARRIER)
        onward = only(out, sip.Request, method="INVITE")
        assert onward.max_forwards == sent, (received, onward.max_forwards)


def test_an_invite_with_max_forwards_zero_is_483_and_no_call(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    out = h.receive(max_forwards_invite(0), CARRIER)
    assert [m.status for m in out if isinstance(m, sip.Response)] == [483]
    assert not [m for m in out if isinstance(m, sip.Request)]
    assert h.ended == [] and h.media == []


def test_a_target_answering_483_is_passed_on_to_the_caller(tmp_path: Path) -> None:
    h = Harness(tmp_path, targets=("sip:+31201234567@127.0.0.1:5080",))
    out = h.receive(invite(), CARRIER)
    onward = only(out, sip.Request, method="INVITE")
    out = h.receive(answer_from_target(onward, 483), Peer("udp", "127.0.0.1", 5080), at=0.2)
    final = only([m for m in out if isinstance(m, sip.Response)], sip.Response)
    assert final.status == 483
    cdr = h.ended[0].cdr()
    assert cdr.disposition == "failed" and cdr.sip_status == 483


def test_a_loop_through_the_next_target_still_tries_it(tmp_path: Path) -> None:
    """Only the looping target fails: the next one is dialled as usual."""
    target = "sip:+31201234567@127.0.0.1:5080"
    h = Harness(tmp_path, targets=(OURSELVES, target))
    sent = run_network(h, invite(), CARRIER)
    onward = only([sip.parse(t.data) for t in sent], sip.Request, method="INVITE")
    assert str(onward.uri) == target
    assert h.ended == [] and h.b2bua.counters.refused == {"loop": 1}
