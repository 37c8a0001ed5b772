"""B2BUA call flows, sans-IO: SIP bytes in, SIP bytes out, a fake clock.

The caller (a carrier trunk on 127.0.0.1:5070) and the targets are played
by this test with hand-written SIP; media is an in-memory stand-in that
records what the call asked of it (the real engine is tested with real
sockets elsewhere). Every flow ends with exactly one CDR.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mediacore.calls.b2bua import B2BUA
from mediacore.calls.call import Call, LocalContact
from mediacore.calls.media import Side
from mediacore.config import Config, NumberConfig, SipConfig
from mediacore.sip import message as sip
from mediacore.sip import sdp
from mediacore.sip.endpoint import Output, SipEndpoint, Transmit
from mediacore.sip.transport import Peer
from tests.support.media import FakeMedia

CARRIER = Peer("udp", "127.0.0.1", 5070)
TARGET_1 = "sip:+31201234567@127.0.0.1:5080"
TARGET_2 = "sip:+31207654321@127.0.0.1:5090"
START = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

OFFER = (
    "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n"
)


class Harness:
    """An endpoint and a B2BUA wired as the server wires them, minus sockets."""

    def __init__(self, tmp_path: Path, *, sip_config: SipConfig | None = None,
                 **number: object) -> None:
        """``sip_config``: the endpoint's settings (trusted sources...), else the defaults."""
        settings: dict[str, object] = {
            "number": "+31900123456", "owner": "acme", "targets": (TARGET_1, TARGET_2),
            "ring_timeout": 20.0, "max_duration": 3600.0,
        }
        settings.update(number)
        self.config = Config(source="test", numbers=(NumberConfig(**settings),),  # type: ignore[arg-type]
                             **({"sip": sip_config} if sip_config is not None else {}))
        self.endpoint = SipEndpoint(self.config.sip)
        self.media: list[FakeMedia] = []
        self.ended: list[Call] = []
        self.b2bua = B2BUA(
            self.config, self.endpoint,
            media_factory=self._media, local=LocalContact("127.0.0.1", 5060),
            recordings_dir=tmp_path, on_call_ended=self.ended.append,
            wall_clock=lambda now: START + timedelta(seconds=now),
        )
        self.now = 0.0

    def _media(self, call_id: str) -> FakeMedia:
        self.media.append(FakeMedia())
        return self.media[-1]

    def settle(self, outputs: list[Output]) -> list[Transmit]:
        sent: list[Transmit] = []
        for output in outputs:
            if isinstance(output, Transmit):
                sent.append(output)
            else:
                outputs += self.b2bua.handle(output, self.now)
        return sent

    def receive(self, data: bytes, peer: Peer, at: float | None = None) -> list[sip.Message]:
        if at is not None:
            self.now = at
        return [sip.parse(t.data) for t in self.settle(self.endpoint.receive(data, peer,
                                                                            self.now))]

    def advance(self, to: float) -> list[sip.Message]:
        """Run SIP and call timers up to ``to``."""
        messages: list[sip.Message] = []
        while True:
            deadlines = [d for d in (self.endpoint.next_deadline(),
                                     self.b2bua.next_deadline()) if d is not None]
            if not deadlines or min(deadlines) > to:
                break
            self.now = min(deadlines)
            outputs = self.endpoint.handle_timer(self.now) + self.b2bua.handle_timer(self.now)
            messages += [sip.parse(t.data) for t in self.settle(outputs)]
        self.now = to
        return messages


def invite(*, from_: str = '"+31612345678" <sip:+31612345678@carrier.example>;tag=c1',
           extra: str = "", body: str = OFFER, number: str = "+31900123456",
           call_id: str = "call-1") -> bytes:
    return (
        f"INVITE sip:{number}@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKcarrier1\r\n"
        f"From: {from_}\r\nTo: <sip:{number}@127.0.0.1>\r\nCall-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\nContact: <sip:carrier@127.0.0.1:5070>\r\nMax-Forwards: 70\r\n"
        f"{extra}Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def in_dialog(method: str, response: sip.Response, cseq: int, branch: str) -> bytes:
    """A request from the caller inside the dialog our 2xx created."""
    return (
        f"{method} sip:mediacore@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n"
        f"From: {response.headers.get('From')}\r\nTo: {response.headers.get('To')}\r\n"
        f"Call-ID: {response.call_id}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def answer_from_target(request: sip.Request, status: int, *, tag: str = "t1",
                       sdp_body: bool = True, direction: str | None = None) -> bytes:
    body = (
        b"v=0\r\no=target 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 41000 RTP/AVP 8\r\n"
    ) if sdp_body and status in (183, 200) else b""
    if body and direction:
        body += f"a={direction}\r\n".encode()
    headers = [("Contact", f"<sip:target@127.0.0.1:{request.uri.port}>")]  # type: ignore[union-attr]
    if body:
        headers.append(("Content-Type", "application/sdp"))
    return sip.serialize(sip.make_response(request, status, to_tag=tag,
                                           extra_headers=headers, body=body))


def only(messages: list[sip.Message], kind: type, **where: object) -> sip.Message:
    found = [m for m in messages if isinstance(m, kind) and all(
        getattr(m, key) == value for key, value in where.items())]
    assert len(found) == 1, (where, messages)
    return found[0]


def target_peer(request: sip.Request) -> Peer:
    return Peer("udp", "127.0.0.1", request.uri.port)  # type: ignore[union-attr]


def ring_and_answer(h: Harness) -> tuple[sip.Request, sip.Response]:
    """INVITE → 100, target 1 rings and answers, the caller ACKs."""
    out = h.receive(invite(), CARRIER)
    assert only(out, sip.Response).status == 100
    onward = only(out, sip.Request, method="INVITE")
    out = h.receive(answer_from_target(onward, 180), target_peer(onward), at=1.0)
    assert only(out, sip.Response).status == 180
    out = h.receive(answer_from_target(onward, 200), target_peer(onward), at=3.0)
    ack = only(out, sip.Request, method="ACK")
    assert ack.to_tag == "t1"
    ok = only(out, sip.Response)
    assert ok.status == 200
    h.receive(in_dialog("ACK", ok, 1, "z9hG4bKack1"), CARRIER, at=3.1)
    return onward, ok


def test_answered_call_is_bridged_and_hung_up_by_the_caller(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    onward, ok = ring_and_answer(h)
    # The target got our media address and one codec, and the caller's identity.
    offer = sdp.parse(onward.body)
    assert offer.media[0].port == 20002 and offer.media[0].formats[0] == "8"
    assert onward.from_.uri.user == "+31612345678"  # type: ignore[union-attr]
    assert onward.p_asserted_identity[0].uri.user == "+31612345678"  # type: ignore[union-attr]
    assert "+31900123456" in onward.headers.get("Diversion")
    # The caller got our SDP, not the target's.
    assert sdp.parse(ok.body).media[0].port == 20000
    media = h.media[0]
    assert media.remotes == {Side.CALLER: ("127.0.0.1", 40000), Side.CALLEE: ("127.0.0.1", 41000)}

    out = h.receive(in_dialog("BYE", ok, 2, "z9hG4bKbye1"), CARRIER, at=63.1)
    assert only(out, sip.Response).status == 200
    bye = only(out, sip.Request, method="BYE")
    assert bye.call_id == onward.call_id and bye.to_tag == "t1"
    assert media.closed
    (call,) = h.ended
    cdr = call.cdr()
    assert cdr.disposition == "answered" and cdr.hangup_by == "caller"
    assert cdr.caller == "+31612345678" and cdr.target == TARGET_1
    assert str(cdr.duration) == "60.100"
    assert cdr.start == START and cdr.answer == START + timedelta(seconds=3)
    assert h.b2bua.calls == {}


def test_bye_from_the_target_hangs_up_the_caller(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    onward, _ = ring_and_answer(h)
    target_bye = (
        f"BYE sip:mediacore@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKtbye\r\n"
        f"From: <{TARGET_1}>;tag=t1\r\nTo: {onward.headers.get('From')}\r\n"
        f"Call-ID: {onward.call_id}\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    out = h.receive(target_bye, target_peer(onward), at=10.0)
    assert only(out, sip.Response).status == 200
    bye = only(out, sip.Request, method="BYE")
    assert bye.call_id == "call-1" and bye.to_tag == "c1"
    assert str(bye.uri) == "sip:carrier@127.0.0.1:5070"
    assert h.ended[0].cdr().hangup_by == "callee"


def test_busy_target_moves_on_to_the_next(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    out = h.receive(invite(), CARRIER)
    first = only(out, sip.Request, method="INVITE")
    out = h.receive(answer_from_target(first, 486), target_peer(first), at=0.5)
    only(out, sip.Request, method="ACK")  # the transaction ACKs the 486
    second = only(out, sip.Request, method="INVITE")
    assert str(second.uri) == TARGET_2 and second.call_id != first.call_id
    out = h.receive(answer_from_target(second, 200, tag="t2"), target_peer(second), at=2.0)
    assert only(out, sip.Response).status == 200
    assert h.b2bua.calls  # still in progress


def test_every_target_busy_answers_486_and_bills_nothing(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    out = h.receive(invite(), CARRIER)
    first = only(out, sip.Request, method="INVITE")
    out = h.receive(answer_from_target(first, 486), target_peer(first), at=0.5)
    second = only(out, sip.Request, method="INVITE")
    out = h.receive(answer_from_target(second, 600, tag="t2"), target_peer(second), at=1.0)
    assert only(out, sip.Response).status == 486
    cdr = h.ended[0].cdr()
    assert cdr.disposition == "busy" and cdr.answer is None and str(cdr.duration) == "0.000"
    assert cdr.target == ""


def test_ring_timeout_cancels_and_tries_the_next_target(tmp_path: Path) -> None:
    h = Harness(tmp_path, ring_timeout=15.0)
    out = h.receive(invite(), CARRIER)
    first = only(out, sip.Request, method="INVITE")
    h.receive(answer_from_target(first, 180), target_peer(first), at=1.0)
    out = h.advance(15.0)
    cancel = only(out, sip.Request, method="CANCEL")
    assert cancel.top_via.branch == first.top_via.branch  # CANCEL matches the INVITE (9.1)
    second = only(out, sip.Request, method="INVITE")
    assert str(second.uri) == TARGET_2
    # The first target answers after all: ACK and BYE it, the call stays on target 2.
    out = h.receive(answer_from_target(first, 200), target_peer(first), at=15.2)
    assert {m.method for m in out if isinstance(m, sip.Request)} == {"ACK", "BYE"}
    assert not [m for m in out if isinstance(m, sip.Response)]


def test_no_answer_anywhere_gives_480_and_a_no_answer_cdr(tmp_path: Path) -> None:
    h = Harness(tmp_path, ring_timeout=10.0)
    out = h.receive(invite(), CARRIER)
    first = only(out, sip.Request, method="INVITE")
    h.receive(answer_from_target(first, 180), target_peer(first), at=0.5)
    out = h.advance(10.0)
    second = only(out, sip.Request, method="INVITE")
    h.receive(answer_from_target(second, 180, tag="t2"), target_peer(second), at=10.5)
    out = h.advance(20.0)
    assert only(out, sip.Response).status == 480
    assert h.ended[0].cdr().disposition == "no-answer"


def test_caller_cancel_gives_487_and_cancels_the_target(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    out = h.receive(invite(), CARRIER)
    first = only(out, sip.Request, method="INVITE")
    h.receive(answer_from_target(first, 180), target_peer(first), at=1.0)
    cancel = invite().replace(b"INVITE sip:", b"CANCEL sip:", 1).replace(
        b"CSeq: 1 INVITE", b"CSeq: 1 CANCEL")
    cancel = cancel.split(b"\r\n\r\n")[0].replace(b"Content-Type: application/sdp\r\n", b"")
    cancel = cancel.rsplit(b"Content-Length:", 1)[0] + b"Content-Length: 0\r\n\r\n"
    out = h.receive(cancel, CARRIER, at=2.0)
    statuses = sorted(m.status for m in out if isinstance(m, sip.Response))
    assert statuses == [200, 487]
    assert only(out, sip.Request, method="CANCEL").top_via.branch == first.top_via.branch
    cdr = h.ended[0].cdr()
    assert cdr.disposition == "cancelled" and cdr.hangup_by == "caller"


def test_withheld_caller_reaches_the_target_as_anonymous(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    out = h.receive(invite(extra="Privacy: id\r\nP-Asserted-Identity: <sip:+31612345678@"
                                 "carrier.example>\r\n"), CARRIER)
    onward = only(out, sip.Request, method="INVITE")
    assert str(onward.from_.uri) == "sip:anonymous@anonymous.invalid"
    assert onward.from_.display_name == "Anonymous"
    assert "P-Asserted-Identity" not in onward.headers
    assert b"31612345678" not in sip.serialize(onward)
    out = h.receive(answer_from_target(onward, 486), target_peer(onward), at=0.5)
    second = only(out, sip.Request, method="INVITE")
    assert b"31612345678" not in sip.serialize(second)
    h.receive(answer_from_target(second, 486, tag="t2"), target_peer(second), at=1.0)
    assert h.ended[0].cdr().caller == "anonymous"


def test_announcement_is_early_media_before_the_target_is_dialled(tmp_path: Path) -> None:
    h = Harness(tmp_path, announcement="welcome", record=True)
    out = h.receive(invite(), CARRIER)
    progress = [m for m in out if isinstance(m, sip.Response)]
    assert [r.status for r in progress] == [100, 183]
    assert sdp.parse(progress[1].body).media[0].port == 20000
    assert not [m for m in out if isinstance(m, sip.Request)]  # nobody dialled yet
    assert h.media[0].played == ["welcome"]
    call = next(iter(h.b2bua.calls.values()))
    out = h.settle(h.b2bua.announcement_finished(call.id, 2.5))
    onward = only([sip.parse(t.data) for t in out], sip.Request, method="INVITE")
    assert h.media[0].recording is None  # never before the announcement and the answer
    h.receive(answer_from_target(onward, 200), target_peer(onward), at=4.0)
    assert h.media[0].recording == tmp_path / f"{call.id}.wav"


def test_recording_number_without_announcement_plays_the_notice(tmp_path: Path) -> None:
    h = Harness(tmp_path, record=True)
    h.receive(invite(), CARRIER)
    assert h.media[0].played == ["recording-notice"]


def test_max_duration_ends_both_legs(tmp_path: Path) -> None:
    h = Harness(tmp_path, max_duration=60.0)
    onward, _ = ring_and_answer(h)
    out = h.advance(64.0)
    byes = [m for m in out if isinstance(m, sip.Request) and m.method == "BYE"]
    assert {b.call_id for b in byes} == {"call-1", onward.call_id}
    cdr = h.ended[0].cdr()
    assert cdr.hangup_by == "system" and str(cdr.duration) == "60.000"


def test_unknown_number_is_404_and_no_call(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    out = h.receive(invite(number="+31800999999"), CARRIER)
    assert [m.status for m in out if isinstance(m, sip.Response)] == [100, 404]
    assert h.ended == [] and h.media == []


@pytest.mark.parametrize("body", ["", "v=0\r\nthis is not sdp\r\n",
                                  OFFER.replace("RTP/AVP 8 0 101", "RTP/AVP 18")])
def test_unusable_offer_is_488_with_a_rejected_cdr(tmp_path: Path, body: str) -> None:
    h = Harness(tmp_path)
    out = h.receive(invite(body=body), CARRIER)
    final = [m for m in out if isinstance(m, sip.Response) and m.status >= 200]
    assert [r.status for r in final] == [488]
    cdr = h.ended[0].cdr()
    assert cdr.disposition == "rejected" and cdr.sip_status == 488
    assert h.media[0].closed


def test_the_national_form_of_a_number_is_routed(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    out = h.receive(invite(number="0900123456"), CARRIER)
    only(out, sip.Request, method="INVITE")


def test_in_dialog_options_is_answered_and_update_passes_through(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    onward, ok = ring_and_answer(h)
    out = h.receive(in_dialog("OPTIONS", ok, 2, "z9hG4bKopt"), CARRIER, at=5.0)
    assert only(out, sip.Response).status == 200
    out = h.receive(in_dialog("UPDATE", ok, 3, "z9hG4bKupd"), CARRIER, at=6.0)
    update = only(out, sip.Request, method="UPDATE")
    assert update.call_id == onward.call_id and update.to_tag == "t1"
    out = h.receive(answer_from_target(update, 200, sdp_body=False), target_peer(onward), at=6.1)
    assert only(out, sip.Response).status == 200
    assert h.b2bua.calls


def reinvite(ok: sip.Response, body: str, cseq: int = 2) -> bytes:
    head = in_dialog("INVITE", ok, cseq, "z9hG4bKreinv").split(b"Content-Length")[0]
    return head + (f"Contact: <sip:carrier@127.0.0.1:5070>\r\nContent-Type: application/sdp"
                   f"\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode()


def test_hold_by_reinvite_passes_through_with_our_media_address(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    onward, ok = ring_and_answer(h)
    hold = OFFER.replace("o=carrier 1 1", "o=carrier 1 2").replace(
        "c=IN IP4 127.0.0.1", "c=IN IP4 127.0.0.9") + "a=sendonly\r\n"
    out = h.receive(reinvite(ok, hold), CARRIER, at=10.0)
    assert [m.status for m in out if isinstance(m, sip.Response)] == [100]
    forwarded = only(out, sip.Request, method="INVITE")
    assert forwarded.call_id == onward.call_id
    offer = sdp.parse(forwarded.body)
    assert offer.connection.address == "127.0.0.1" and offer.media[0].port == 20002
    assert offer.media[0].direction == "sendonly"
    assert h.media[0].remotes[Side.CALLER] == ("127.0.0.9", 40000)  # the caller moved
    answer = answer_from_target(forwarded, 200, direction="recvonly")
    out = h.receive(answer, target_peer(onward), at=10.2)
    only(out, sip.Request, method="ACK")
    reply = only(out, sip.Response)
    assert reply.status == 200
    answered = sdp.parse(reply.body)
    assert answered.media[0].port == 20000 and answered.media[0].direction == "recvonly"
    assert reply.to_tag == ok.to_tag


def test_info_passes_through_with_its_body(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    onward, ok = ring_and_answer(h)
    body = "Signal=5\r\nDuration=160\r\n"
    info = in_dialog("INFO", ok, 2, "z9hG4bKinfo").split(b"Content-Length")[0] + (
        f"Content-Type: application/dtmf-relay\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    out = h.receive(info, CARRIER, at=7.0)
    forwarded = only(out, sip.Request, method="INFO")
    assert forwarded.body == body.encode()
    assert forwarded.headers.get("Content-Type") == "application/dtmf-relay"
    out = h.receive(answer_from_target(forwarded, 200, sdp_body=False), target_peer(onward),
                    at=7.1)
    assert only(out, sip.Response).status == 200


def test_unknown_dialog_gets_481(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    _, ok = ring_and_answer(h)
    stray = in_dialog("BYE", ok, 2, "z9hG4bKx").replace(b"call-1", b"call-unknown")
    assert only(h.receive(stray, CARRIER), sip.Response).status == 481


def no_answer_anywhere(h: Harness) -> list[sip.Message]:
    out = h.receive(invite(), CARRIER)
    first = only(out, sip.Request, method="INVITE")
    out = h.receive(answer_from_target(first, 486), target_peer(first), at=0.5)
    second = only(out, sip.Request, method="INVITE")
    return h.receive(answer_from_target(second, 480, tag="t2"), target_peer(second), at=1.0)


def test_voicemail_answers_greets_beeps_and_records_until_hash(tmp_path: Path) -> None:
    h = Harness(tmp_path, voicemail_email="owner@example.com")
    out = no_answer_anywhere(h)
    ok = only(out, sip.Response)
    assert ok.status == 200 and sdp.parse(ok.body).media[0].port == 20000
    media = h.media[0]
    call = next(iter(h.b2bua.calls.values()))
    assert media.played == ["voicemail-greeting"] and media.recording is None
    h.settle(h.b2bua.announcement_finished(call.id, 5.0))
    assert media.played == ["voicemail-greeting", "beep"] and media.recording is None
    h.settle(h.b2bua.announcement_finished(call.id, 5.3))
    assert media.recording == tmp_path / f"{call.id}-voicemail.wav"
    h.receive(in_dialog("ACK", ok, 1, "z9hG4bKvmack"), CARRIER, at=1.1)
    out = [sip.parse(t.data) for t in h.settle(h.b2bua.dtmf(call.id, "#", 20.0))]
    bye = only(out, sip.Request, method="BYE")
    assert bye.call_id == "call-1"
    (ended,) = h.ended
    cdr = ended.cdr()
    assert cdr.disposition == "voicemail" and cdr.hangup_by == "caller"
    assert str(cdr.duration) == "19.000" and cdr.target == ""
    assert ended.voicemail is not None


def test_voicemail_ends_when_the_caller_hangs_up(tmp_path: Path) -> None:
    h = Harness(tmp_path, voicemail_email="owner@example.com")
    ok = only(no_answer_anywhere(h), sip.Response)
    call = next(iter(h.b2bua.calls.values()))
    h.settle(h.b2bua.announcement_finished(call.id, 5.0))
    h.settle(h.b2bua.announcement_finished(call.id, 5.3))
    out = h.receive(in_dialog("BYE", ok, 2, "z9hG4bKvmbye"), CARRIER, at=30.0)
    assert only(out, sip.Response).status == 200
    assert not [m for m in out if isinstance(m, sip.Request)]  # nobody else to hang up
    assert h.ended[0].cdr().disposition == "voicemail"
    assert h.ended[0].voicemail is not None


def test_hash_before_the_beep_does_not_end_the_voicemail(tmp_path: Path) -> None:
    h = Harness(tmp_path, voicemail_email="owner@example.com")
    no_answer_anywhere(h)
    call = next(iter(h.b2bua.calls.values()))
    assert h.settle(h.b2bua.dtmf(call.id, "#", 2.0)) == []
    assert h.b2bua.calls


# --- RFC 4028 session timers ----------------------------------------------------------


def first_copies(messages: list[sip.Message]) -> list[sip.Message]:
    """Requests without their UDP retransmissions (same method and branch)."""
    seen: set[tuple[str, str | None]] = set()
    out = []
    for message in messages:
        if isinstance(message, sip.Request):
            key = (message.method, message.top_via.branch if message.top_via else None)
            if key not in seen:
                seen.add(key)
                out.append(message)
    return out


def timed_call(h: Harness, caller_headers: str, target_se: str | None = None
               ) -> tuple[sip.Request, sip.Response]:
    out = h.receive(invite(extra=caller_headers), CARRIER)
    onward = only(out, sip.Request, method="INVITE")
    assert onward.headers.get("Session-Expires") == "1800"
    assert "timer" in onward.supported
    answer = answer_from_target(onward, 200)
    if target_se is not None:
        answer = answer.replace(b"Content-Type:", f"Session-Expires: {target_se}\r\n"
                                f"Content-Type:".encode(), 1)
    out = h.receive(answer, target_peer(onward), at=1.0)
    ok = only(out, sip.Response)
    h.receive(in_dialog("ACK", ok, 1, "z9hG4bKstack"), CARRIER, at=1.1)
    return onward, ok


def test_caller_that_refreshes_gets_refresher_uac_and_is_dropped_when_it_stops(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    _, ok = timed_call(h, "Session-Expires: 600\r\nSupported: timer\r\n")
    assert ok.headers.get("Session-Expires") == "600;refresher=uac"
    assert "timer" in ok.require
    out = first_copies(h.advance(600.0))
    assert [m.method for m in out] == ["BYE", "BYE"]  # both legs, before the session expires
    assert h.ended[0].cdr().hangup_by == "system"


def test_a_refresh_from_the_caller_keeps_the_call_up(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    onward, ok = timed_call(h, "Session-Expires: 600\r\nSupported: timer\r\n")
    out = h.receive(in_dialog("UPDATE", ok, 2, "z9hG4bKref1"), CARRIER, at=300.0)
    update = only(out, sip.Request, method="UPDATE")
    h.receive(answer_from_target(update, 200, sdp_body=False), target_peer(onward), at=300.1)
    assert not [m for m in h.advance(800.0) if isinstance(m, sip.Request)]
    assert h.b2bua.calls


def test_we_refresh_a_target_that_leaves_it_to_us(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    onward, _ = timed_call(h, "", target_se="120;refresher=uac")
    out = first_copies(h.advance(61.0))
    update = only(out, sip.Request, method="UPDATE")
    assert update.call_id == onward.call_id
    assert update.headers.get("Session-Expires") == "120;refresher=uac"
    h.receive(answer_from_target(update, 200, sdp_body=False), target_peer(onward), at=61.5)
    out = first_copies(h.advance(125.0))
    assert [m.method for m in out] == ["UPDATE"]
    assert h.b2bua.calls


def test_we_refresh_a_caller_that_does_not_support_timers(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    _, ok = timed_call(h, "Session-Expires: 300\r\n")
    assert ok.headers.get("Session-Expires") == "300;refresher=uas"
    assert "timer" not in ok.require
    out = first_copies(h.advance(152.0))
    update = only(out, sip.Request, method="UPDATE")
    assert update.call_id == "call-1"


def test_too_small_a_session_interval_is_422_with_min_se(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    out = h.receive(invite(extra="Session-Expires: 30\r\nSupported: timer\r\n"), CARRIER)
    final = [m for m in out if isinstance(m, sip.Response) and m.status >= 200]
    assert [r.status for r in final] == [422]
    assert final[0].headers.get("Min-SE") == "90"
    assert h.ended[0].cdr().disposition == "rejected"


def test_media_inactivity_ends_both_legs_as_system(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    onward, _ = ring_and_answer(h)
    call = next(iter(h.b2bua.calls.values()))
    out = first_copies([sip.parse(t.data) for t in
                        h.settle(h.b2bua.media_inactive(call.id, 40.0))])
    assert sorted(m.call_id for m in out if m.method == "BYE") == sorted(["call-1",
                                                                         onward.call_id])
    assert h.ended[0].cdr().hangup_by == "system"


def test_the_200_to_a_cancel_has_the_to_tag_of_the_invite_responses(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    out = h.receive(invite(), CARRIER)
    first = only(out, sip.Request, method="INVITE")
    out = h.receive(answer_from_target(first, 180), target_peer(first), at=1.0)
    ringing_tag = only(out, sip.Response).to_tag
    head = invite().replace(b"INVITE sip:", b"CANCEL sip:", 1).replace(
        b"CSeq: 1 INVITE", b"CSeq: 1 CANCEL").split(b"Content-Type")[0]
    cancel = head + b"Content-Length: 0\r\n\r\n"
    out = h.receive(cancel, CARRIER, at=2.0)
    assert {r.status: r.to_tag for r in out if isinstance(r, sip.Response)} == {
        200: ringing_tag, 487: ringing_tag}


def test_voicemail_stops_at_its_maximum_length(tmp_path: Path) -> None:
    h = Harness(tmp_path, voicemail_email="owner@example.com", voicemail_max_duration=30.0)
    no_answer_anywhere(h)
    call = next(iter(h.b2bua.calls.values()))
    h.settle(h.b2bua.announcement_finished(call.id, 5.0))
    h.settle(h.b2bua.announcement_finished(call.id, 5.3))
    out = first_copies(h.advance(40.0))
    assert [m.method for m in out] == ["BYE"]
    assert h.ended[0].cdr().disposition == "voicemail"
    assert h.ended[0].voicemail is not None


def test_ended_calls_leave_no_index_entries_behind(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    ring_and_answer(h)
    ok_call = next(iter(h.b2bua.calls.values()))
    h.settle(h.b2bua.hang_up_all(70.0, "test"))
    h.advance(200.0)  # every transaction, and the 64*T1 after our CANCELs, runs out
    assert ok_call.ended
    b2bua = h.b2bua
    assert (b2bua.calls, b2bua._by_invite, b2bua._by_dialog, b2bua._by_client,
            b2bua._by_relay, b2bua._entries) == ({}, {}, {}, {}, {}, {})


def test_at_info_a_routine_call_logs_its_start_only_and_failovers_are_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """INFO is for operators under load: the INVITE line here and the CDR line
    the server adds; the steps of a call that went as expected are DEBUG."""
    h = Harness(tmp_path)
    with caplog.at_level("INFO", logger="mediacore"):
        _, ok = ring_and_answer(h)
        h.receive(in_dialog("BYE", ok, 2, "z9hG4bKbye1"), CARRIER, at=10.0)
    lines = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert len(lines) == 1 and " INVITE call-1 for +31900123456 (owner acme)" in lines[0]

    busy = Harness(tmp_path)
    caplog.clear()
    with caplog.at_level("INFO", logger="mediacore"):
        out = busy.receive(invite(call_id="call-2"), CARRIER)
        onward = only(out, sip.Request, method="INVITE")
        busy.receive(answer_from_target(onward, 486), target_peer(onward), at=1.0)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "target 1 answered 486" in text and "dialling target 2 of 2" in text
