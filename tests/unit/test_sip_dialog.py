"""RFC 3261 section 12 dialogs: creation, route sets, CSeq, target refresh."""

from __future__ import annotations

import pytest

from mediacore.sip import message as sip
from mediacore.sip.dialog import Dialog, DialogError, DialogState, new_branch, new_tag

INVITE = (
    "INVITE sip:+31900123456@192.0.2.9 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKcarrier1\r\n"
    "Record-Route: <sip:p1.carrier.example;lr>, <sip:p2.carrier.example;lr>\r\n"
    "From: \"Alice\" <sip:+31612345678@carrier.example>;tag=alice1\r\n"
    "To: <sip:+31900123456@192.0.2.9>\r\n"
    "Call-ID: dialog-test-1\r\n"
    "CSeq: 10 INVITE\r\n"
    "Contact: <sip:alice@192.0.2.1:5060>\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Length: 0\r\n\r\n"
)


def parse_request(text: str) -> sip.Request:
    message = sip.parse(text.encode())
    assert isinstance(message, sip.Request)
    return message


def uas_dialog() -> tuple[Dialog, sip.Request]:
    invite = parse_request(INVITE)
    ok = sip.make_response(invite, 200, to_tag="us1",
                           extra_headers=[("Contact", "<sip:mc@192.0.2.9:5060>")])
    return Dialog.from_uas(invite, ok), invite


def test_uas_dialog_takes_routes_in_order_and_target_from_contact() -> None:
    dialog, _ = uas_dialog()
    assert dialog.id == ("dialog-test-1", "us1", "alice1")
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.remote_target == "sip:alice@192.0.2.1:5060"
    assert dialog.route_set == ["<sip:p1.carrier.example;lr>", "<sip:p2.carrier.example;lr>"]
    assert dialog.remote_cseq == 10


def test_bye_from_the_uas_side_follows_the_route_set() -> None:
    dialog, _ = uas_dialog()
    bye = dialog.create_request("BYE", via=f"SIP/2.0/UDP 192.0.2.9;branch={new_branch()}")
    again = sip.parse(bytes(bye))
    assert again == bye
    assert str(bye.uri) == "sip:alice@192.0.2.1:5060"
    assert [str(r) for r in bye.routes] == dialog.route_set
    assert bye.from_tag == "us1" and bye.to_tag == "alice1"
    assert bye.from_.uri == parse_request(INVITE).to.uri
    assert bye.cseq == (1, "BYE")
    assert dialog.create_request("INFO", via="SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKx").cseq \
        == (2, "INFO")


def test_uac_dialog_reverses_record_route_and_keeps_cseq() -> None:
    invite = parse_request(INVITE.replace("Record-Route: <sip:p1.carrier.example;lr>, "
                                          "<sip:p2.carrier.example;lr>\r\n", ""))
    ringing = sip.make_response(invite, 180, to_tag="callee1", extra_headers=[
        ("Record-Route", "<sip:a.example;lr>"), ("Record-Route", "<sip:b.example;lr>"),
        ("Contact", "<sip:callee@198.51.100.7>"),
    ])
    dialog = Dialog.from_uac(invite, ringing)
    assert dialog.state is DialogState.EARLY
    assert dialog.route_set == ["<sip:b.example;lr>", "<sip:a.example;lr>"]
    assert dialog.local_cseq == 10
    ok = sip.make_response(invite, 200, to_tag="callee1",
                           extra_headers=[("Contact", "<sip:callee@198.51.100.8>")])
    dialog.receive_response(invite, ok)
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.remote_target == "sip:callee@198.51.100.8"
    ack = dialog.create_request("ACK", via="SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKack",
                                cseq=invite.cseq.number)
    assert ack.cseq == (10, "ACK")
    assert dialog.create_request("BYE", via="SIP/2.0/UDP h;branch=z9hG4bKb").cseq == (11, "BYE")


def test_ack_and_cancel_need_the_invite_cseq() -> None:
    dialog, _ = uas_dialog()
    with pytest.raises(ValueError, match="CSeq"):
        dialog.create_request("ACK", via="SIP/2.0/UDP h;branch=z9hG4bKa")


def test_strict_router_gets_the_request_uri_and_the_target_rides_last() -> None:
    invite = parse_request(INVITE.replace(
        "<sip:p1.carrier.example;lr>, <sip:p2.carrier.example;lr>",
        "<sip:strict.carrier.example>, <sip:p2.carrier.example;lr>"))
    ok = sip.make_response(invite, 200, to_tag="us1")
    dialog = Dialog.from_uas(invite, ok)
    bye = dialog.create_request("BYE", via="SIP/2.0/UDP h;branch=z9hG4bKs")
    assert str(bye.uri) == "sip:strict.carrier.example"
    assert [str(r) for r in bye.routes] == ["<sip:p2.carrier.example;lr>",
                                            "<sip:alice@192.0.2.1:5060>"]


def test_in_dialog_requests_are_ordered_by_cseq() -> None:
    dialog, _ = uas_dialog()
    reinvite = parse_request(INVITE.replace("CSeq: 10", "CSeq: 11").replace(
        "To: <sip:+31900123456@192.0.2.9>", "To: <sip:+31900123456@192.0.2.9>;tag=us1").replace(
        "Contact: <sip:alice@192.0.2.1:5060>", "Contact: <sip:alice@192.0.2.77:5062>"))
    assert dialog.matches(reinvite, incoming=True)
    dialog.receive_request(reinvite)
    assert dialog.remote_target == "sip:alice@192.0.2.77:5062"  # target refresh
    old = parse_request(INVITE.replace("CSeq: 10 INVITE", "CSeq: 9 INFO").replace(
        "INVITE sip:", "INFO sip:"))
    with pytest.raises(DialogError) as error:
        dialog.receive_request(old)
    assert error.value.status == 500


def test_a_terminated_dialog_refuses_with_481() -> None:
    dialog, _ = uas_dialog()
    dialog.terminate()
    with pytest.raises(DialogError) as error:
        dialog.create_request("BYE", via="SIP/2.0/UDP h;branch=z9hG4bKz")
    assert error.value.status == 481


def test_481_to_an_in_dialog_request_ends_the_dialog() -> None:
    dialog, _ = uas_dialog()
    bye = dialog.create_request("BYE", via="SIP/2.0/UDP h;branch=z9hG4bKq")
    dialog.receive_response(bye, sip.make_response(bye, 481))
    assert dialog.state is DialogState.TERMINATED


def test_matching_needs_call_id_and_both_tags() -> None:
    dialog, invite = uas_dialog()
    assert not dialog.matches(invite, incoming=True)  # no To tag yet
    bye = dialog.create_request("BYE", via="SIP/2.0/UDP h;branch=z9hG4bKm")
    assert dialog.matches(bye, incoming=False)
    assert dialog.matches(sip.make_response(bye, 200), incoming=True)


def test_tags_and_branches_are_unique_tokens() -> None:
    tags = {new_tag() for _ in range(1000)}
    branches = {new_branch() for _ in range(1000)}
    assert len(tags) == len(branches) == 1000
    assert all(b.startswith("z9hG4bK") and len(b) > 7 for b in branches)
