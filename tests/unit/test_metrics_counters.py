"""The counters the sans-IO planes keep for metrics: SIP endpoint and B2BUA.

No sockets, a fake clock: the same bytes in as a carrier sends, and the
counters read as the collector reads them.
"""

from __future__ import annotations

from pathlib import Path

from mediacore.config import SipConfig
from mediacore.sip import message as sip
from mediacore.sip.endpoint import SipEndpoint, counted_method
from mediacore.sip.transport import Peer
from tests.unit.test_call_flows import (
    CARRIER,
    Harness,
    answer_from_target,
    in_dialog,
    invite,
    only,
    ring_and_answer,
    target_peer,
)
from tests.unit.test_sip_endpoint import request

STRANGER = Peer("udp", "198.51.100.66", 5060)


def test_requests_and_responses_are_counted_by_method_and_status() -> None:
    endpoint = SipEndpoint(SipConfig())
    endpoint.receive(request("OPTIONS"), CARRIER, 0.0)
    endpoint.receive(request("OPTIONS"), CARRIER, 0.1)  # a retransmission: counted, answered again
    endpoint.receive(request("INVITE", via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK2"),
                     CARRIER, 0.2)
    c = endpoint.counters
    assert c.requests_received == {"OPTIONS": 2, "INVITE": 1}
    # The OPTIONS retransmission is answered from the transaction, not sent anew.
    assert c.responses_sent == {("OPTIONS", 200): 1, ("INVITE", 100): 1}


def test_invented_methods_count_as_other_so_keys_stay_bounded() -> None:
    endpoint = SipEndpoint(SipConfig())
    for i in range(20):
        via = f"SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx{i}"
        endpoint.receive(request(f"FOO{i}", via=via), CARRIER, float(i))
    assert endpoint.counters.requests_received == {"other": 20}
    assert endpoint.counters.responses_sent == {("other", 501): 20}
    assert counted_method("INVITE") == "INVITE" and counted_method("invite") == "other"


def test_garbage_is_counted_as_malformed() -> None:
    endpoint = SipEndpoint(SipConfig())
    endpoint.receive(b"\x00\x01garbage\r\n\r\n", CARRIER, 0.0)
    endpoint.receive(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", CARRIER, 0.0)
    assert endpoint.counters.malformed == 2
    assert endpoint.counters.requests_received == {}


def test_untrusted_and_draining_invites_are_counted_as_refused() -> None:
    endpoint = SipEndpoint(SipConfig())  # trusts 127.0.0.0/8 by default
    endpoint.receive(request("INVITE"), STRANGER, 0.0)
    endpoint.refuse_new_calls = True
    endpoint.receive(request("INVITE", via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK9"),
                     CARRIER, 0.0)
    assert endpoint.counters.calls_refused == {"untrusted": 1, "draining": 1}
    assert endpoint.counters.responses_sent == {("INVITE", 403): 1, ("INVITE", 503): 1}


def test_an_answered_call_moves_every_counter_once(tmp_path: Path) -> None:
    setups: list[float] = []
    h = Harness(tmp_path)
    h.b2bua.on_setup = setups.append
    _, ok = ring_and_answer(h)
    assert setups == [3.0]  # INVITE at 0, the target's 200 (and ours) at 3.0
    h.receive(in_dialog("BYE", ok, 2, "z9hG4bKbye1"), CARRIER, at=63.1)
    counters = h.b2bua.counters
    assert counters.started == 1
    assert counters.ended["answered"] == 1
    assert sum(counters.ended.values()) == 1
    assert setups == [3.0]  # once per call, not again at its end
    sip_counters = h.endpoint.counters
    assert sip_counters.requests_received == {"INVITE": 1, "ACK": 1, "BYE": 1}
    assert sip_counters.responses_sent[("INVITE", 200)] == 1
    assert sip_counters.responses_sent[("BYE", 200)] == 1
    assert sip_counters.requests_sent == {"INVITE": 1, "ACK": 1, "BYE": 1}
    assert sip_counters.responses_received == {("INVITE", 180): 1, ("INVITE", 200): 1}


def test_an_unanswered_call_reports_setup_until_its_final_response(tmp_path: Path) -> None:
    setups: list[float] = []
    h = Harness(tmp_path, targets=("sip:+31201234567@127.0.0.1:5080",))
    h.b2bua.on_setup = setups.append
    out = h.receive(invite(), CARRIER)
    onward = only(out, sip.Request, method="INVITE")
    out = h.receive(answer_from_target(onward, 486), target_peer(onward), at=2.5)
    assert only(out, sip.Response).status == 486
    assert setups == [2.5]
    assert h.b2bua.counters.ended["busy"] == 1


def test_unknown_numbers_are_counted_as_refused_not_as_calls(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    out = h.receive(invite(number="+31900999999"), CARRIER)
    assert only(out, sip.Response, status=404)
    assert h.b2bua.counters.refused == {"not-found": 1}
    assert h.b2bua.counters.started == 0


def test_transaction_timeouts_and_retransmissions_are_counted(tmp_path: Path) -> None:
    h = Harness(tmp_path, targets=("sip:+31201234567@127.0.0.1:5080",), ring_timeout=60.0)
    h.receive(invite(), CARRIER)
    h.advance(40.0)  # the target never answers: timer A resends, timer B gives up at 32 s
    counters = h.endpoint.counters
    assert counters.timeouts == {"B": 1}
    assert counters.retransmissions >= 6  # 0.5, 1, 2, 4, 8, 16 s
    assert h.b2bua.counters.ended["no-answer"] == 1
