"""RFC 3261 section 17 transactions, driven by a fake clock: no sockets, no sleeps."""

from __future__ import annotations

import itertools

import pytest

from mediacore.config import SipTimers
from mediacore.sip import message as sip
from mediacore.sip.transaction import (
    Deliver,
    Send,
    ServerInviteTransaction,
    State,
    Timeout,
    TransactionLayer,
    TransactionStateError,
)

PEER = ("udp", "192.0.2.1", 5060)
T1, T2, T4 = 0.5, 4.0, 5.0


def request(method: str = "INVITE", branch: str = "z9hG4bKabc", cseq: int = 1,
            to_tag: str | None = None, call_id: str = "call-1") -> sip.Request:
    to = "<sip:+31900123456@192.0.2.9>" + (f";tag={to_tag}" if to_tag else "")
    raw = (
        f"{method} sip:+31900123456@192.0.2.9 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n"
        f"From: <sip:+31612345678@192.0.2.1>;tag=from1\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"Max-Forwards: 70\r\n"
        f"Content-Length: 0\r\n\r\n"
    )
    parsed = sip.parse(raw.encode())
    assert isinstance(parsed, sip.Request)
    return parsed


def response(req: sip.Request, status: int, to_tag: str | None = "callee1") -> sip.Response:
    return sip.make_response(req, status, to_tag=to_tag)


def sends(actions: list) -> list[sip.Message]:
    return [a.message for a in actions if isinstance(a, Send)]


def delivered(actions: list) -> list[sip.Message]:
    return [a.message for a in actions if isinstance(a, Deliver)]


def run_until(layer: TransactionLayer, end: float) -> list[tuple[float, object]]:
    """Fire every timer up to ``end``, returning (time, action) in order."""
    fired: list[tuple[float, object]] = []
    while (deadline := layer.next_deadline()) is not None and deadline <= end:
        fired += [(deadline, action) for action in layer.handle_timer(deadline)]
    return fired


# --- client INVITE (17.1.1) --------------------------------------------------------


def test_client_invite_retransmits_with_doubling_timer_a_until_timer_b() -> None:
    layer = TransactionLayer()
    invite = request()
    _, actions = layer.send_request(invite, PEER, 0.0)
    assert sends(actions) == [invite]
    fired = run_until(layer, 100.0)
    retransmit_times = [t for t, a in fired if isinstance(a, Send)]
    # A doubles from T1 without the T2 cap; B ends it at 64*T1 = 32 s.
    assert retransmit_times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    timeouts = [(t, a) for t, a in fired if isinstance(a, Timeout)]
    assert [(t, a.timer) for t, a in timeouts] == [(32.0, "B")]
    assert len(layer) == 0


def test_client_invite_provisional_stops_retransmission_and_timer_b() -> None:
    layer = TransactionLayer()
    invite = request()
    transaction, _ = layer.send_request(invite, PEER, 0.0)
    ringing = response(invite, 180)
    assert delivered(layer.receive_response(ringing, 0.2)) == [ringing]
    assert transaction.state is State.PROCEEDING
    assert run_until(layer, 300.0) == []  # the TU's ring timeout decides now


def test_client_invite_acks_a_non_2xx_final_and_absorbs_its_retransmissions() -> None:
    layer = TransactionLayer()
    invite = request()
    transaction, _ = layer.send_request(invite, PEER, 0.0)
    busy = response(invite, 486)
    actions = layer.receive_response(busy, 0.1)
    assert delivered(actions) == [busy]
    (ack,) = sends(actions)
    assert isinstance(ack, sip.Request) and ack.method == "ACK"
    assert ack.top_via.branch == invite.top_via.branch  # same transaction, 17.1.1.3
    assert ack.to_tag == "callee1"
    assert ack.cseq == sip.parse(bytes(ack)).cseq and ack.cseq.method == "ACK"
    assert ack.cseq.number == invite.cseq.number
    assert transaction.state is State.COMPLETED

    again = layer.receive_response(busy, 1.0)
    assert delivered(again) == [] and len(sends(again)) == 1
    run_until(layer, 0.1 + 32.0)  # Timer D
    assert transaction.terminated and len(layer) == 0


def test_client_invite_over_tcp_does_not_retransmit_or_linger() -> None:
    layer = TransactionLayer()
    invite = request()
    transaction, _ = layer.send_request(invite, PEER, 0.0, reliable=True)
    assert [a for _, a in run_until(layer, 31.9)] == []
    layer.receive_response(response(invite, 404), 1.0)
    assert transaction.terminated and len(layer) == 0


def test_client_invite_accepted_state_hands_2xx_retransmissions_to_the_tu() -> None:
    layer = TransactionLayer()
    invite = request()
    transaction, _ = layer.send_request(invite, PEER, 0.0)
    ok = response(invite, 200)
    assert delivered(layer.receive_response(ok, 0.1)) == [ok]
    assert transaction.state is State.ACCEPTED
    # Lingering for Timer M, it keeps neither our INVITE nor the 2xx.
    assert transaction.request is None and transaction.last_response is None
    assert sends(layer.receive_response(ok, 0.6)) == []  # the TU sends the ACK
    assert delivered(layer.receive_response(ok, 0.6)) == [ok]
    run_until(layer, 0.1 + 64 * T1)  # Timer M
    assert len(layer) == 0
    # After that a stray 2xx still reaches the TU, with no transaction.
    (stray,) = layer.receive_response(ok, 40.0)
    assert isinstance(stray, Deliver) and stray.transaction is None


# --- client non-INVITE (17.1.2) --------------------------------------------------------


def test_client_non_invite_timer_e_caps_at_t2_and_timer_f_times_out() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    layer.send_request(options, PEER, 0.0)
    fired = run_until(layer, 100.0)
    times = [t for t, a in fired if isinstance(a, Send)]
    assert times[:6] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]
    assert all(b - a == T2 for a, b in itertools.pairwise(times[3:]))
    assert [(t, a.timer) for t, a in fired if isinstance(a, Timeout)] == [(32.0, "F")]


def test_client_non_invite_proceeding_retransmits_every_t2() -> None:
    layer = TransactionLayer()
    bye = request("BYE", to_tag="callee1")
    layer.send_request(bye, PEER, 0.0)
    layer.receive_response(response(bye, 100), 0.1)
    times = [t for t, a in run_until(layer, 10.0) if isinstance(a, Send)]
    assert times == [0.5, 4.5, 8.5]


def test_client_non_invite_completed_absorbs_finals_for_t4() -> None:
    layer = TransactionLayer()
    bye = request("BYE", to_tag="callee1")
    transaction, _ = layer.send_request(bye, PEER, 0.0)
    ok = response(bye, 200)
    assert delivered(layer.receive_response(ok, 0.1)) == [ok]
    # Lingering for Timer K, it keeps neither the request nor the response.
    assert transaction.request is None and transaction.last_response is None
    assert layer.receive_response(ok, 0.2) == []
    run_until(layer, 0.1 + T4)
    assert transaction.terminated and len(layer) == 0


def test_ack_is_never_a_client_transaction() -> None:
    with pytest.raises(ValueError, match="ACK"):
        TransactionLayer().send_request(request("ACK"), PEER, 0.0)


def test_two_client_transactions_may_not_share_a_branch() -> None:
    layer = TransactionLayer()
    layer.send_request(request("OPTIONS"), PEER, 0.0)
    with pytest.raises(ValueError, match="exists"):
        layer.send_request(request("OPTIONS"), PEER, 0.0)


# --- server INVITE (17.2.1) --------------------------------------------------------


def new_server_invite(layer: TransactionLayer, reliable: bool = False
                      ) -> tuple[ServerInviteTransaction, sip.Request]:
    invite = request()
    (deliver,) = layer.receive_request(invite, PEER, 0.0, reliable=reliable)
    assert isinstance(deliver, Deliver) and deliver.message is invite
    assert isinstance(deliver.transaction, ServerInviteTransaction)
    return deliver.transaction, invite


def test_server_invite_answers_retransmissions_with_the_last_provisional() -> None:
    layer = TransactionLayer()
    transaction, invite = new_server_invite(layer)
    assert layer.receive_request(invite, PEER, 0.1) == []  # nothing said yet
    trying = response(invite, 100, to_tag=None)
    assert sends(layer.send_response(transaction, trying, 0.1)) == [trying]
    assert sends(layer.receive_request(invite, PEER, 0.5)) == [trying]


def test_server_invite_retransmits_non_2xx_with_timer_g_until_ack() -> None:
    layer = TransactionLayer()
    transaction, invite = new_server_invite(layer)
    busy = response(invite, 486)
    layer.send_response(transaction, busy, 0.0)
    times = [t for t, a in run_until(layer, 8.0) if isinstance(a, Send)]
    assert times == [0.5, 1.5, 3.5, 7.5]  # G doubles, capped at T2
    ack = request("ACK", to_tag="callee1")
    assert layer.receive_request(ack, PEER, 8.1) == []  # absorbed, not for the TU
    assert transaction.state is State.CONFIRMED
    assert run_until(layer, 8.1 + T4) == []
    assert transaction.terminated and len(layer) == 0


def test_server_invite_without_ack_times_out_with_timer_h() -> None:
    layer = TransactionLayer()
    transaction, invite = new_server_invite(layer)
    layer.send_response(transaction, response(invite, 404), 0.0)
    fired = run_until(layer, 40.0)
    assert [(t, a.timer) for t, a in fired if isinstance(a, Timeout)] == [(32.0, "H")]
    assert len(layer) == 0


def test_server_invite_2xx_is_retransmitted_until_the_ack_with_its_own_branch() -> None:
    layer = TransactionLayer()
    transaction, invite = new_server_invite(layer)
    ok = response(invite, 200)
    layer.send_response(transaction, ok, 0.0)
    assert transaction.state is State.ACCEPTED
    times = [t for t, a in run_until(layer, 2.0) if isinstance(a, Send)]
    assert times == [0.5, 1.5]
    # The ACK for a 2xx is its own transaction: a new branch (17.1.1.3 / 13.2.2.4).
    ack = request("ACK", branch="z9hG4bKack-new", to_tag="callee1")
    (deliver,) = layer.receive_request(ack, PEER, 2.1)
    assert isinstance(deliver, Deliver) and deliver.transaction is transaction
    assert [a for _, a in run_until(layer, 2.1 + 64 * T1) if isinstance(a, Send)] == []
    assert transaction.terminated and len(layer) == 0
    # A late duplicate ACK still reaches the TU, unmatched.
    (late,) = layer.receive_request(ack, PEER, 40.0)
    assert isinstance(late, Deliver) and late.transaction is None


def test_server_invite_2xx_without_ack_times_out_with_timer_l() -> None:
    layer = TransactionLayer()
    transaction, invite = new_server_invite(layer)
    layer.send_response(transaction, response(invite, 200), 0.0)
    fired = run_until(layer, 40.0)
    assert [(t, a.timer) for t, a in fired if isinstance(a, Timeout)] == [(32.0, "L")]


def test_server_invite_accepted_absorbs_retransmitted_invites() -> None:
    layer = TransactionLayer()
    transaction, invite = new_server_invite(layer)
    ok = response(invite, 200)
    layer.send_response(transaction, ok, 0.0)
    again = layer.receive_request(invite, PEER, 0.2)
    assert delivered(again) == [] and sends(again) == [ok]


def test_server_invite_over_tcp_sends_once_and_ends_on_ack() -> None:
    layer = TransactionLayer()
    transaction, invite = new_server_invite(layer, reliable=True)
    layer.send_response(transaction, response(invite, 486), 0.0)
    assert [a for _, a in run_until(layer, 31.0)] == []
    layer.receive_request(request("ACK", to_tag="callee1"), PEER, 1.0)
    assert transaction.terminated


def test_server_invite_refuses_responses_out_of_state() -> None:
    layer = TransactionLayer()
    transaction, invite = new_server_invite(layer)
    layer.send_response(transaction, response(invite, 486), 0.0)
    with pytest.raises(TransactionStateError):
        layer.send_response(transaction, response(invite, 200), 0.1)


def test_cancel_finds_the_invite_it_cancels() -> None:
    layer = TransactionLayer()
    transaction, _ = new_server_invite(layer)
    cancel = request("CANCEL")
    (deliver,) = layer.receive_request(cancel, PEER, 0.1)
    assert deliver.transaction is not transaction  # CANCEL is its own transaction
    assert layer.find_invite_for_cancel(cancel) is transaction
    assert layer.find_invite_for_cancel(request("CANCEL", branch="z9hG4bKother")) is None


# --- server non-INVITE (17.2.2) -------------------------------------------------------


def test_server_non_invite_absorbs_then_repeats_its_final_for_timer_j() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    (deliver,) = layer.receive_request(options, PEER, 0.0)
    transaction = deliver.transaction
    assert layer.receive_request(options, PEER, 0.3) == []  # Trying: absorbed
    ok = response(options, 200)
    layer.send_response(transaction, ok, 0.4)
    assert sends(layer.receive_request(options, PEER, 1.0)) == [ok]
    run_until(layer, 0.4 + 64 * T1)
    assert transaction.terminated and len(layer) == 0


def test_server_non_invite_over_tcp_ends_with_its_final() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    (deliver,) = layer.receive_request(options, PEER, 0.0, reliable=True)
    layer.send_response(deliver.transaction, response(options, 200), 0.1)
    assert len(layer) == 0


# --- RFC 2543 fallback (RFC 4475 3.2.1 badbranch) -------------------------------------


def test_a_branch_that_is_only_the_magic_cookie_matches_rfc2543_style() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS", branch="z9hG4bK")
    (deliver,) = layer.receive_request(options, PEER, 0.0)
    layer.send_response(deliver.transaction, response(options, 200), 0.0)
    # A retransmission matches by Call-ID, tags, CSeq, R-URI and Via...
    assert len(sends(layer.receive_request(options, PEER, 0.5))) == 1
    # ...and another CSeq is another transaction.
    (other,) = layer.receive_request(request("OPTIONS", branch="z9hG4bK", cseq=2), PEER, 0.6)
    assert isinstance(other, Deliver) and other.transaction is not deliver.transaction


def test_rfc2543_ack_matches_the_invite_whatever_its_to_tag() -> None:
    layer = TransactionLayer()
    invite = request(branch="1234")
    (deliver,) = layer.receive_request(invite, PEER, 0.0)
    layer.send_response(deliver.transaction, response(invite, 486), 0.0)
    assert layer.receive_request(request("ACK", branch="1234", to_tag="callee1"), PEER, 0.1) \
        == []
    assert deliver.transaction.state is State.CONFIRMED


def test_timers_come_from_config() -> None:
    layer = TransactionLayer(SipTimers(t1=0.1, t2=0.4, t4=1.0))
    layer.send_request(request("OPTIONS"), PEER, 0.0)
    times = [t for t, a in run_until(layer, 1.0) if isinstance(a, Send)]
    assert times == pytest.approx([0.1, 0.3, 0.7])


def test_many_transactions_fire_in_deadline_order() -> None:
    layer = TransactionLayer()
    for index in range(50):
        layer.send_request(request("OPTIONS", branch=f"z9hG4bK{index:03d}"), PEER, index / 100)
    fired = run_until(layer, 0.5 + 0.49)
    assert [t for t, _ in fired] == sorted(t for t, _ in fired)
    assert len(fired) == 50
