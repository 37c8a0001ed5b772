"""One call through the B2BUA, from the carrier's INVITE to the last BYE. Sans-IO.

A :class:`Call` owns the inbound leg (A, the caller, whose INVITE we answer)
and, one after another, the outbound legs (B, one per target tried). It is
driven by the B2BUA with SIP events, media events and timer deadlines, and
acts through the endpoint (SIP outputs) and :class:`~mediacore.calls.media.CallMedia`.

Media is always anchored: the caller gets *our* SDP answer (our address,
leg A port, one codec chosen from their offer), and every target gets *our*
offer (leg B port, that same codec plus telephone-event). So no transcoding
is needed, the recording has one codec per leg, and the caller's session
description never changes when the call moves from one target to the next.

The flow: route → (announcement as early media, 183) → targets in order,
each for ``ring_timeout`` (486/600: busy, others and timeouts: next) →
first 200 OK bridged, ACKed on both legs, recording started → BYE from
either side, ``max_duration`` or media inactivity ends both legs → one CDR.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from pathlib import Path

from mediacore.calls import session_timer
from mediacore.calls.media import CallMedia, RecordingFailed, RecordingResult, Side
from mediacore.calls.privacy import CallerIdentity, diversion_header, outbound_identity
from mediacore.config import NumberConfig
from mediacore.records.cdr import Cdr
from mediacore.records.open_recordings import RecordingStarted
from mediacore.sip import loops, sdp
from mediacore.sip import message as sip
from mediacore.sip.dialog import Dialog, DialogError, new_branch, new_call_id, new_tag
from mediacore.sip.endpoint import Output, SipEndpoint, Transmit
from mediacore.sip.media_policy import MediaPolicy, MediaRefused, sdp_warning
from mediacore.sip.transaction import (
    ClientTransaction,
    ServerInviteTransaction,
    ServerTransaction,
)
from mediacore.sip.transport import TCP, UDP, Peer
from mediacore.sip.uri import SipURI, parse_name_addr, parse_uri

log = logging.getLogger("mediacore.calls")

#: The prompt played before recording when the number names none.
DEFAULT_RECORDING_NOTICE = "recording-notice"
BUSY_STATUSES = frozenset({486, 600})
#: A target's answers that say the route loops; passed on to the caller when
#: they end the call, as the clearest answer there is.
LOOP_STATUSES = {482: "Loop Detected", 483: "Too Many Hops"}
#: Max-Forwards of our outbound INVITEs when the caller's carries none, and
#: the most we send (RFC 3261 8.1.1.6).
MAX_FORWARDS = 70


class CallState(Enum):
    ANNOUNCING = "announcing"
    DIALING = "dialing"
    ANSWERING = "answering"  # 200 sent to the caller, waiting for their ACK
    BRIDGED = "bridged"
    VOICEMAIL = "voicemail"  # answered by us: greeting, beep, then recording
    ENDED = "ended"


#: The voicemail prompts, in order, before the message is recorded.
VOICEMAIL_PROMPTS = ("voicemail-greeting", "beep")



class CallError(Exception):
    """A call that cannot start; ``status`` is the answer to the caller, with
    ``warning`` as a Warning header (RFC 3261 20.43) when there is one."""

    def __init__(self, status: int, reason: str, warning: str | None = None) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.warning = warning


@dataclass(frozen=True, slots=True)
class LocalContact:
    """How we appear in our own requests: Via sent-by and Contact, per transport."""

    host: str
    port: int
    transport: str = UDP

    def via(self, branch: str) -> str:
        return f"SIP/2.0/{self.transport.upper()} {self.host}:{self.port};branch={branch};rport"

    def contact(self) -> str:
        suffix = ";transport=tcp" if self.transport == TCP else ""
        return f"<sip:mediacore@{self.host}:{self.port}{suffix}>"


def next_hop(request: sip.Request) -> Peer:
    """Where to send a request of ours: the first Route, else the Request-URI (RFC 3261 8.1.2).

    Hosts must be IP addresses: targets and trunks are configured as such
    (no DNS lookups on the signalling path).
    """
    routes = request.routes
    uri = routes[0].uri if routes else request.uri
    if not isinstance(uri, SipURI):
        raise CallError(502, f"cannot send to {uri}")
    return Peer(*loops.uri_destination(uri))


def onward_max_forwards(invite: sip.Request) -> int:
    """Max-Forwards for the INVITE we send on for ``invite``: one less (RFC 7332 3).

    A B2BUA that resets it (or never lets it fall below 1, as we used to) lets
    a loop through another B2BUA or a carrier run until something else runs
    out. An INVITE with 0 never gets here: the endpoint answers it 483.
    """
    received = invite.max_forwards
    if received is None:
        return MAX_FORWARDS
    return max(min(received - 1, MAX_FORWARDS), 0)


@dataclass(eq=False)
class OutboundLeg:
    """One attempt at one target (RFC 3261: a new dialog, a new Call-ID)."""

    target: str
    request: sip.Request
    transaction: ClientTransaction
    peer: Peer
    provisional: bool = False
    cancelled: bool = False  # we gave up on it (ring timeout, caller hung up)
    dialog: Dialog | None = None
    final_status: int | None = None


@dataclass(eq=False)
class Relayed:
    """An in-dialog request passed from one side to the other (re-INVITE, UPDATE, INFO)."""

    side: Side  # who sent it to us
    request: sip.Request
    transaction: ServerTransaction
    onward: sip.Request


@dataclass(eq=False)
class Call:
    id: str
    number: NumberConfig
    caller: CallerIdentity
    invite: sip.Request
    transaction: ServerInviteTransaction
    endpoint: SipEndpoint
    media: CallMedia
    local: LocalContact
    started: float
    wall_start: datetime
    recordings_dir: Path
    node: str = ""
    #: This node's loop token for the call's number, and the Mediacore-Loop
    #: value for its outbound INVITEs (mediacore.sip.loops); empty: unmarked.
    loop_token: str = ""
    loop_marker: str = ""
    #: Where SDP may aim our media (mediacore.sip.media_policy); None: anywhere.
    media_policy: MediaPolicy | None = None
    #: The address the caller's INVITE came from (the policy's loopback rule).
    caller_host: str | None = None
    state: CallState = CallState.DIALING
    local_tag: str = field(default_factory=new_tag)
    choice: sdp.CodecChoice | None = None
    answer_sdp: bytes = b""
    offer_to_targets: bytes = b""
    target_index: int = -1
    leg: OutboundLeg | None = None
    abandoned: list[OutboundLeg] = field(default_factory=list)
    caller_dialog: Dialog | None = None
    early_media_sent: bool = False
    deadlines: dict[str, float] = field(default_factory=dict)
    # What the CDR says.
    answered_at: float | None = None
    ended_at: float | None = None
    disposition: str = "failed"
    sip_status: int = 0
    hangup_by: str = "system"
    delivered_to: str = ""
    recording: RecordingResult | None = None
    recording_id: str = ""
    #: Why the recording is missing or cut short (``disk-full``...), else empty.
    recording_error: str = ""
    last_failure: int | None = None
    busy_seen: bool = False
    voicemail_prompts: list[str] = field(default_factory=list)
    #: The B2BUA reported this call's setup time (metrics; once per call).
    setup_counted: bool = False
    voicemail_recording: bool = False
    origins: dict[Side, sdp.Origin] = field(default_factory=dict)
    relays: dict[ClientTransaction, Relayed] = field(default_factory=dict)
    session_timers: dict[Side, session_timer.SessionTimer] = field(default_factory=dict)
    refreshes: dict[ClientTransaction, Side] = field(default_factory=dict)

    # --- start ------------------------------------------------------------------

    def start(self, now: float) -> list[Output]:
        """Negotiate media with the caller's offer, then announce or dial."""
        try:
            caller_timer = session_timer.for_caller(self.invite)
        except session_timer.SessionIntervalTooSmall:
            outputs = self.endpoint.respond(
                self.transaction, 422, "Session Interval Too Small", now=now,
                to_tag=self.local_tag, headers=(("Min-SE", str(session_timer.MIN_SE)),))
            return outputs + self._end(now, disposition="rejected", status=422,
                                       hangup_by="system")
        if caller_timer is not None:
            self.session_timers[Side.CALLER] = caller_timer
        try:
            self._negotiate(self.invite)
        except CallError as error:
            headers = (("Warning", error.warning),) if error.warning else ()
            return self._reject(error.status, error.reason, now, disposition="rejected",
                                headers=headers)
        prompt = self.number.announcement or (
            DEFAULT_RECORDING_NOTICE if self.number.record else None)
        if prompt is not None:
            self.state = CallState.ANNOUNCING
            outputs = self._early_media(now)
            self.media.play(prompt)
            self._log("playing %s to the caller before forwarding", prompt)
            return outputs
        return self._dial_next(now)

    def _negotiate(self, invite: sip.Request) -> None:
        body = _sdp_body(invite)
        if body is None:
            raise CallError(488, "An SDP offer is required in the INVITE")
        try:
            offer = sdp.parse(body)
            self._check_media(offer, self.caller_host)
            choice = sdp.select_codec(offer)
            remote = sdp.peer_media(offer, choice.media_index)
        except sdp.SdpError as error:
            raise CallError(488, f"Not Acceptable Here: {error}",
                            sdp_warning(error)) from None
        self.choice = choice
        media = self.media
        self._aim(Side.CALLER, remote)
        media.set_codec(Side.CALLER, choice.payload_type, choice.encoding,
                        choice.telephone_event)
        self.origins = {side: sdp.Origin.new(media.address) for side in Side}
        answer = sdp.make_answer(offer, media.address, media.port(Side.CALLER), choice,
                                 self.origins[Side.CALLER])
        self.answer_sdp = answer.serialize()
        onward = sdp.make_answer(offer, media.address, media.port(Side.CALLEE), choice,
                                 self.origins[Side.CALLEE])
        # What we answered the caller is what we offer the target: one codec,
        # sending and receiving (an offer is not an answer to "sendonly").
        for media_line in onward.media:
            if media_line.port:
                media_line.direction = "sendrecv"
        self.offer_to_targets = onward.serialize()

    # --- the caller's side ------------------------------------------------------------

    def _answer_caller(self, status: int, now: float, *, body: bytes = b"",
                       reason: str | None = None) -> list[Output]:
        headers = [("Contact", self.local.contact())]
        timer = self.session_timers.get(Side.CALLER)
        if timer is not None and 200 <= status < 300:
            headers += session_timer.caller_headers(timer)
        if body:
            headers.append(("Content-Type", "application/sdp"))
        response = sip.make_response(
            self.invite, status, reason, to_tag=self.local_tag,
            extra_headers=[*self.endpoint.agent_header("Server"), *headers], body=body)
        if 200 <= status < 300:
            self.caller_dialog = Dialog.from_uas(self.invite, response)
        return self.endpoint.send_response(self.transaction, response, now)

    def _early_media(self, now: float) -> list[Output]:
        if self.early_media_sent:
            return []
        self.early_media_sent = True
        return self._answer_caller(183, now, body=self.answer_sdp, reason="Session Progress")

    def _reject(self, status: int, reason: str, now: float, *, disposition: str,
                headers: tuple[tuple[str, str], ...] = ()) -> list[Output]:
        self._log("answering the caller %s %s", status, reason)
        outputs = self.endpoint.respond(self.transaction, status, reason, now=now,
                                        to_tag=self.local_tag, headers=headers)
        return outputs + self._end(now, disposition=disposition, status=status,
                                   hangup_by="system")

    def announcement_finished(self, now: float) -> list[Output]:
        if self.state is CallState.VOICEMAIL:
            return self._next_voicemail_step(now)
        if self.state is not CallState.ANNOUNCING:
            return []
        self.state = CallState.DIALING
        return self._dial_next(now)

    def caller_cancelled(self, now: float) -> list[Output]:
        """CANCEL from the caller before our final answer: 487, CANCEL onward (9.2)."""
        if self.state in (CallState.BRIDGED, CallState.ANSWERING, CallState.VOICEMAIL,
                          CallState.ENDED):
            return []
        self._log("caller cancelled")
        self.media.stop_playing()
        outputs = self.endpoint.respond(self.transaction, 487, "Request Terminated", now=now,
                                        to_tag=self.local_tag)
        outputs += self._abandon_leg(now)
        return outputs + self._end(now, disposition="cancelled", status=487,
                                   hangup_by="caller")

    def caller_acked(self, now: float) -> list[Output]:
        if self.state is CallState.ANSWERING:
            self.state = CallState.BRIDGED
        return []

    # --- targets -----------------------------------------------------------------

    def _dial_next(self, now: float) -> list[Output]:
        targets = self.number.targets
        while self.target_index + 1 < len(targets):
            self.target_index += 1
            target = targets[self.target_index]
            try:
                return self._dial(target, now)
            except CallError as error:
                self._log("cannot dial target %d: %s", self.target_index + 1, error.reason)
                self.last_failure = error.status
        return self._all_targets_failed(now)

    def _dial(self, target: str, now: float) -> list[Output]:
        identity = outbound_identity(self.caller, self.local.host)
        headers: list[tuple[str, str]] = [
            ("Via", self.local.via(loops.loop_branch(self.loop_token) if self.loop_token
                                   else new_branch())),
            ("Max-Forwards", str(onward_max_forwards(self.invite))),
            *identity.headers(from_tag=new_tag()),
            ("To", f"<{target}>"),
            ("Call-ID", new_call_id(self.local.host)),
            ("CSeq", "1 INVITE"),
            ("Contact", self.local.contact()),
            ("Diversion", diversion_header(self.number.number, self.local.host)),
            ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"),
            ("Supported", "timer"),
            *session_timer.offer_headers(),
            *self.endpoint.agent_header("User-Agent"),
            ("Content-Type", "application/sdp"),
        ]
        if self.loop_marker:
            headers.insert(-1, (loops.LOOP_HEADER, self.loop_marker))
        try:
            request = sip.Request("INVITE", parse_uri(target), headers, self.offer_to_targets)
        except (ValueError, sip.ParseError) as error:
            raise CallError(502, f"bad target {target}: {error}") from None
        peer = next_hop(request)
        transaction, outputs = self.endpoint.send_request(request, peer, now)
        self.leg = OutboundLeg(target, request, transaction, peer)
        self.state = CallState.DIALING
        self.deadlines["ring"] = now + self.number.ring_timeout
        # The first target is every call's routine; a later one is news (failover).
        (self._log if self.target_index else self._debug)(
            "dialling target %d of %d (%s)", self.target_index + 1,
            len(self.number.targets), target)
        return outputs

    def target_response(self, leg: OutboundLeg, response: sip.Response, now: float
                        ) -> list[Output]:
        status = response.status
        if leg is not self.leg or leg.cancelled:
            return self._late_response(leg, response, now)
        if status < 200:
            return self._target_progress(leg, response, now)
        if status < 300:
            return self._target_answered(leg, response, now)
        leg.final_status = status
        self._log("target %d answered %s", self.target_index + 1, status)
        self.deadlines.pop("ring", None)
        self.last_failure = status
        self.busy_seen |= status in BUSY_STATUSES
        self.leg = None
        return self._dial_next(now)

    def _target_progress(self, leg: OutboundLeg, response: sip.Response, now: float
                         ) -> list[Output]:
        if response.status == 100:
            return []
        leg.provisional = True
        outputs: list[Output] = []
        body = _sdp_body(response)
        if body is not None:
            self._take_target_sdp(leg, body)
        if body is not None or self.early_media_sent:
            # The target's ringback or announcement reaches the caller through
            # our relay: the caller keeps our SDP.
            outputs += self._early_media(now)
        elif response.status == 180:
            outputs += self.endpoint.send_response(self.transaction, sip.make_response(
                self.invite, 180, to_tag=self.local_tag,
                extra_headers=[("Contact", self.local.contact())]), now)
        if leg.cancelled:  # a CANCEL waited for this provisional (9.1)
            outputs += self._send_cancel(leg, now)
        return outputs

    def _take_target_sdp(self, leg: OutboundLeg, body: bytes) -> MediaRefused | None:
        """Aim the relay where the target's SDP says; the policy's refusal, if any
        (then the relay is left as it was: nothing is sent where the SDP said)."""
        try:
            answer = sdp.parse(body)
        except sdp.SdpError as error:
            self._log("target's SDP ignored: %s", error)
            return None
        try:
            self._check_media(answer, leg.peer.host)
        except MediaRefused as error:
            self._log("target %d's SDP refused: %s", self.target_index + 1, error)
            return error
        self._aim(Side.CALLEE, sdp.peer_media(answer))
        return None

    def _check_media(self, description: sdp.SessionDescription, peer_host: str | None
                     ) -> None:
        if self.media_policy is not None:
            self.media_policy.check(description, peer_host=peer_host)

    def _aim(self, side: Side, remote: sdp.PeerMedia | None) -> None:
        """Tell the relay where ``side`` receives; not for 0.0.0.0, the RFC 2543
        hold, which means "send nothing" (on Linux a packet to it reaches this host)."""
        if remote is None or remote.address in ("0.0.0.0", "::"):
            return
        self.media.set_remote(side, remote.address, remote.port, remote.rtcp_port)

    def _target_answered(self, leg: OutboundLeg, response: sip.Response, now: float
                         ) -> list[Output]:
        if leg.dialog is not None:
            return [self._ack(leg)]  # a retransmitted 2xx: ACK it again
        leg.dialog = Dialog.from_uac(leg.request, response)
        leg.final_status = response.status
        body = _sdp_body(response)
        if body is not None and self._take_target_sdp(leg, body) is not None:
            return self._target_answer_refused(leg, now)
        if self.choice is not None:
            self.media.set_codec(Side.CALLEE, self.choice.payload_type, self.choice.encoding,
                                 self.choice.telephone_event)
        self.deadlines.pop("ring", None)
        self.answered_at = now
        self.delivered_to = leg.target
        self.state = CallState.ANSWERING
        self._debug("target %d answered; bridged", self.target_index + 1)
        outputs: list[Output] = [self._ack(leg)]
        outputs += self._answer_caller(200, now, body=self.answer_sdp)
        self.deadlines["max_duration"] = now + self.number.max_duration
        target_timer = session_timer.for_target(response)
        if target_timer is not None:
            self.session_timers[Side.CALLEE] = target_timer
        for side in Side:
            self._session_refreshed(side, now)
        if self.number.record:
            path = self.recordings_dir / f"{self.id}.wav"
            self.media.start_recording(path, channels=2,
                                       started=self._recording_started(path, 2, now))
            self._log("recording to %s", path)
        return outputs

    def _target_answer_refused(self, leg: OutboundLeg, now: float) -> list[Output]:
        """A target answered with SDP that cannot aim media: it is not bridged.
        ACK and BYE it (RFC 3261 15: a 2xx we do not want), then the next target."""
        self.deadlines.pop("ring", None)
        self.last_failure = 488
        self.leg = None
        leg.cancelled = True
        self.abandoned.append(leg)
        outputs: list[Output] = [self._ack(leg)]
        outputs += self._bye(leg.dialog, now)
        return outputs + self._dial_next(now)

    def _ack(self, leg: OutboundLeg) -> Transmit:
        assert leg.dialog is not None
        ack = leg.dialog.create_request("ACK", via=self.local.via(new_branch()),
                                        cseq=leg.request.cseq.number)
        return self.endpoint.send_stateless(ack, next_hop(ack))

    def _late_response(self, leg: OutboundLeg, response: sip.Response, now: float
                       ) -> list[Output]:
        """A target we gave up on answers after all: ACK and BYE a 2xx (RFC 3261 15)."""
        if response.status >= 200:
            leg.final_status = response.status
        if 200 <= response.status < 300 and leg.dialog is None:
            leg.dialog = Dialog.from_uac(leg.request, response)
            self._log("target %s answered after we gave up; hanging it up", leg.target)
            return [self._ack(leg), *self._bye(leg.dialog, now)]
        if leg.cancelled and response.status < 200 and not leg.provisional:
            leg.provisional = True
            return self._send_cancel(leg, now)
        return []

    def target_timed_out(self, leg: OutboundLeg, now: float) -> list[Output]:
        if leg is not self.leg:
            return []
        self._log("target %d did not answer the INVITE (timeout)", self.target_index + 1)
        self.deadlines.pop("ring", None)
        self.last_failure = 408
        self.leg = None
        return self._dial_next(now)

    def _abandon_leg(self, now: float) -> list[Output]:
        leg = self.leg
        if leg is None:
            return []
        self.leg = None
        leg.cancelled = True
        self.abandoned.append(leg)
        if leg.provisional:
            return self._send_cancel(leg, now)
        return []  # sent when the first provisional arrives (RFC 3261 9.1)

    def _send_cancel(self, leg: OutboundLeg, now: float) -> list[Output]:
        _, outputs = self.endpoint.send_request(sip.make_cancel(leg.request), leg.peer, now)
        self.endpoint.transactions.cancel_sent(leg.transaction, now)
        return outputs

    def _all_targets_failed(self, now: float) -> list[Output]:
        if self.number.voicemail_email:
            return self._start_voicemail(now)
        if self.busy_seen:
            return self._reject(486, "Busy Here", now, disposition="busy")
        if self.last_failure in LOOP_STATUSES:
            # The caller's network learns that this route goes round in circles.
            return self._reject(self.last_failure, LOOP_STATUSES[self.last_failure], now,
                                disposition="failed")
        no_answer = self.last_failure in (None, 408, 480, 487)
        if no_answer:
            return self._reject(480, "Temporarily Unavailable", now, disposition="no-answer")
        return self._reject(480, "Temporarily Unavailable", now, disposition="failed")

    # --- voicemail -------------------------------------------------------------------

    def _start_voicemail(self, now: float) -> list[Output]:
        """Nobody answered: we answer, play the greeting and the beep, then record."""
        self._log("no target answered; taking a voicemail")
        self.state = CallState.VOICEMAIL
        self.answered_at = now
        self.voicemail_prompts = list(VOICEMAIL_PROMPTS)
        self.media.stop_playing()
        outputs = self._answer_caller(200, now, body=self.answer_sdp)
        return outputs + self._next_voicemail_step(now)

    def _next_voicemail_step(self, now: float) -> list[Output]:
        if self.voicemail_prompts:
            self.media.play(self.voicemail_prompts.pop(0))
            return []
        if not self.voicemail_recording:
            self.voicemail_recording = True
            path = self.recordings_dir / f"{self.id}-voicemail.wav"
            self.media.start_recording(path, channels=1,
                                       started=self._recording_started(path, 1, now))
            self.deadlines["voicemail_max"] = now + self.number.voicemail_max_duration
            self._log("recording a voicemail for %s", self.number.owner)
        return []

    def _recording_started(self, path: Path, channels: int, now: float
                           ) -> RecordingStarted | None:
        """What a restart needs to account for this recording should we die mid-call.

        The CDR's fields as far as they are known now (records/open_recordings.py);
        the media plane writes it before the file (docs/contracts.md, storage layout).
        A recording never ends a call: should the marker be impossible (a bug),
        the call is recorded without one, and a crash would leave the file unmarked.
        """
        def wall(moment: float) -> datetime:
            return self.wall_start + timedelta(seconds=moment - self.started)

        answered = now if self.answered_at is None else self.answered_at
        try:
            return RecordingStarted(
                file=path.name,
                kind="voicemail" if self.state is CallState.VOICEMAIL else "call",
                call_id=self.id, sip_call_id=self.invite.call_id,
                number=self.number.number, owner=self.number.owner,
                caller=self.caller.record_value, target=self.delivered_to,
                retention_days=self.number.retention_days, start=self.wall_start,
                answer=wall(answered), recording_start=wall(now), channels=channels,
                node=self.node)
        except ValueError as error:
            log.error("call %s: recording %s gets no marker: %s", self.id, path.name, error)
            return None

    def dtmf(self, digit: str, now: float) -> list[Output]:
        """A key pressed by the caller: '#' ends a voicemail message."""
        if self.state is CallState.VOICEMAIL and self.voicemail_recording and digit == "#":
            self._log("caller pressed # to end the voicemail")
            outputs = self._bye(self.caller_dialog, now)
            return outputs + self._end(now, disposition="voicemail", status=200,
                                       hangup_by="caller")
        return []

    @property
    def voicemail(self) -> RecordingResult | None:
        """The recorded voicemail message, once the call has ended with one."""
        if self.disposition != "voicemail" or self.recording is None:
            return None
        return self.recording

    # --- in the call ----------------------------------------------------------------

    def dialog_of(self, side: Side) -> Dialog | None:
        if side is Side.CALLER:
            return self.caller_dialog
        return self.leg.dialog if self.leg is not None else None

    def relay_request(self, side: Side, request: sip.Request,
                      transaction: ServerTransaction, now: float,
                      source: str | None = None) -> list[Output]:
        """Pass a re-INVITE, UPDATE or INFO to the other side, SDP anchored on us.

        Hold, resume and codec changes reach the other party this way, and
        the relay learns the sender's new address; the answer comes back
        through :meth:`relayed_response`. Before the other side has a
        dialog (early, voicemail), we answer ourselves with the session we
        already agreed.
        """
        mine = self.dialog_of(side)
        other_side = Side.CALLEE if side is Side.CALLER else Side.CALLER
        other = self.dialog_of(other_side)
        if mine is not None:
            try:
                mine.receive_request(request)
            except DialogError as error:
                return self.endpoint.respond(transaction, error.status, error.reason, now=now,
                                             to_tag=request.to_tag)
        if request.method in ("INVITE", "UPDATE"):
            self._session_refreshed(side, now)  # the peer refreshed its leg
        if other is None or self.state not in (CallState.BRIDGED, CallState.ANSWERING):
            return self._answer_locally(side, request, transaction, now)
        headers: list[tuple[str, str]] = []
        body = b""
        offer = _sdp_body(request)
        if offer is not None:
            try:
                body = self._anchor(offer, sender=side, receiver=other_side,
                                    peer_host=source or self._peer_host(side))
            except sdp.SdpError as error:
                self._log("%s from the %s refused: %s", request.method, _who(side), error)
                return self.endpoint.respond(transaction, 488, f"Not Acceptable Here: {error}",
                                             now=now, to_tag=request.to_tag,
                                             headers=(("Warning", sdp_warning(error)),))
            headers.append(("Content-Type", "application/sdp"))
        elif request.body:
            body = request.body
            headers.append(("Content-Type", request.headers.get("Content-Type",
                                                                "application/octet-stream")))
        if request.method in ("INVITE", "UPDATE"):
            headers.append(("Contact", self.local.contact()))
        onward = other.create_request(request.method, via=self.local.via(new_branch()),
                                      extra_headers=headers, body=body)
        client, outputs = self.endpoint.send_request(onward, next_hop(onward), now)
        self.relays[client] = Relayed(side, request, transaction, onward)
        self._log("%s from the %s passed on", request.method, _who(side))
        return outputs

    def _answer_locally(self, side: Side, request: sip.Request,
                        transaction: ServerTransaction, now: float) -> list[Output]:
        if request.method in ("INVITE", "UPDATE") and self.answer_sdp:
            body = self.answer_sdp if side is Side.CALLER else self.offer_to_targets
            return self.endpoint.respond(
                transaction, 200, now=now, to_tag=request.to_tag, body=body,
                headers=(("Contact", self.local.contact()), ("Content-Type", "application/sdp")))
        return self.endpoint.respond(transaction, 200, now=now, to_tag=request.to_tag)

    def _anchor(self, body: bytes, *, sender: Side, receiver: Side,
                peer_host: str | None) -> bytes:
        """SDP from ``sender`` as ``receiver`` gets it: our address, the receiver leg's port.

        Also tells the relay where ``sender`` now receives (hold, a new address),
        once the media policy took the description: a refusal (an SdpError)
        leaves the relay as it was.
        """
        description = sdp.parse(body)
        self._check_media(description, peer_host)
        remote = sdp.peer_media(description)
        self._aim(sender, remote)
        audio = remote.media_index if remote is not None else -1
        ports = [self.media.port(receiver) if index == audio else 0
                 for index in range(len(description.media))]
        origin = self.origins.setdefault(receiver, sdp.Origin.new(self.media.address))
        return sdp.rewrite_connection(description, self.media.address, ports,
                                      origin).serialize()

    def relayed_response(self, client: ClientTransaction, response: sip.Response,
                         now: float) -> list[Output]:
        if client in self.refreshes:
            return self._refresh_answered(client, response, now)
        relay = self.relays.get(client)
        if relay is None or response.status < 200:
            return []
        del self.relays[client]
        answering = Side.CALLEE if relay.side is Side.CALLER else Side.CALLER
        if 200 <= response.status < 300 and relay.onward.method in ("INVITE", "UPDATE"):
            self._session_refreshed(answering, now)
        dialog = self.dialog_of(answering)
        outputs: list[Output] = []
        if dialog is not None:
            dialog.receive_response(relay.onward, response)
            if relay.onward.method == "INVITE" and 200 <= response.status < 300:
                ack = dialog.create_request("ACK", via=self.local.via(new_branch()),
                                            cseq=relay.onward.cseq.number)
                outputs.append(self.endpoint.send_stateless(ack, next_hop(ack)))
        headers: list[tuple[str, str]] = [("Contact", self.local.contact())]
        body = b""
        answer = _sdp_body(response)
        status, reason = response.status, response.reason
        if answer is not None and 200 <= response.status < 300:
            try:
                body = self._anchor(answer, sender=answering, receiver=relay.side,
                                    peer_host=self._peer_host(answering))
                headers.append(("Content-Type", "application/sdp"))
                self._follow_codec(answer)
            except MediaRefused as error:
                # The answerer took the offer, but where it says it receives we
                # do not send: the offerer keeps the session it had.
                self._log("answer from the %s refused: %s", _who(answering), error)
                status, reason = 488, f"Not Acceptable Here: {error}"
                headers.append(("Warning", error.warning()))
            except sdp.SdpError as error:
                self._log("answer from the %s unusable: %s", _who(answering), error)
        reply = sip.make_response(relay.request, status, reason,
                                  to_tag=relay.request.to_tag, body=body,
                                  extra_headers=[*self.endpoint.agent_header("Server"), *headers])
        outputs += self.endpoint.send_response(relay.transaction, reply, now)
        if response.status in (408, 481):
            outputs += self.hang_up(now, f"the {_who(answering)} answered {response.status} "
                                         "inside the dialog")
        return outputs

    def peer_hosts(self, side: Side, call_id: str | None = None) -> set[str]:
        """The addresses ``side``'s requests may come from: where its signalling
        came from or goes to (the caller's INVITE's source, the address we dial a
        target at), its Contact (the dialog's remote target) and its first route.

        Compared by address, not port: a UDP peer may send from another port
        than its Contact's, and a stranger on the peer's own host is not one
        this check could tell apart anyway. For a target, ``call_id`` (the
        request's) picks the leg it is about: one target cannot speak for another.
        """
        hosts: set[str] = set()
        if side is Side.CALLER:
            hosts.add(self.caller_host or "")
            dialog = self.caller_dialog
            if dialog is not None:
                hosts |= _dialog_hosts(dialog)
            else:  # early: the INVITE says the same
                contact = self.invite.contact
                hosts.add(_uri_host(contact.uri_text) if contact is not None else "")
                hosts |= {_uri_host(str(route)) for route in self.invite.record_routes[:1]}
        else:
            for leg in (self.leg, *self.abandoned):
                if leg is None or (call_id is not None and leg.request.call_id != call_id):
                    continue
                hosts.add(leg.peer.host)
                if leg.dialog is not None:
                    hosts |= _dialog_hosts(leg.dialog)
        hosts.discard("")
        return {normal_host(host) for host in hosts}

    def _peer_host(self, side: Side) -> str | None:
        """Where ``side``'s signalling comes from: the caller's INVITE's source, the
        address we dial the target at."""
        if side is Side.CALLER:
            return self.caller_host
        return self.leg.peer.host if self.leg is not None else None

    def relay_timed_out(self, client: ClientTransaction, now: float) -> list[Output]:
        side = self.refreshes.pop(client, None)
        if side is not None:
            return self.hang_up(now, f"the {_who(side)} did not answer our session refresh")
        relay = self.relays.pop(client, None)
        if relay is None:
            return []
        outputs = self.endpoint.respond(relay.transaction, 408, "Request Timeout", now=now,
                                        to_tag=relay.request.to_tag)
        return outputs + self.hang_up(now, "the other side did not answer inside the dialog")

    # --- session timers (RFC 4028) -------------------------------------------------

    def _session_refreshed(self, side: Side, now: float) -> None:
        """The session on ``side`` was (re)established: restart its clock."""
        timer = self.session_timers.get(side)
        if timer is None or self.state is CallState.ENDED:
            return
        self.deadlines.pop(f"refresh-{side.name}", None)
        self.deadlines.pop(f"expire-{side.name}", None)
        if timer.we_refresh:
            self.deadlines[f"refresh-{side.name}"] = timer.refresh_at(now)
        else:
            self.deadlines[f"expire-{side.name}"] = timer.expires_at(now)

    def _send_refresh(self, side: Side, now: float) -> list[Output]:
        dialog = self.dialog_of(side)
        if dialog is None:
            return []
        timer = self.session_timers[side]
        refresher = "uac" if side is Side.CALLEE else "uas"
        update = dialog.create_request("UPDATE", via=self.local.via(new_branch()), extra_headers=[
            ("Session-Expires", timer.header(refresher=refresher)),
            ("Supported", "timer"), ("Contact", self.local.contact())])
        client, outputs = self.endpoint.send_request(update, next_hop(update), now)
        self.refreshes[client] = side
        return outputs

    def _refresh_answered(self, client: ClientTransaction, response: sip.Response,
                          now: float) -> list[Output]:
        if response.status < 200:
            return []
        side = self.refreshes.pop(client)
        if 200 <= response.status < 300:
            self._session_refreshed(side, now)
            return []
        if response.status in (408, 481):
            return self.hang_up(now, f"the {_who(side)} refused our session refresh "
                                     f"({response.status})")
        # Another refusal (e.g. 501: UPDATE not allowed) leaves the session as it
        # was; try again at the next half-interval rather than dropping a call.
        self._session_refreshed(side, now)
        return []

    def _follow_codec(self, answer: bytes) -> None:
        """After a re-INVITE the codec may have changed: tell the recorder."""
        try:
            choice = sdp.select_codec(sdp.parse(answer))
        except sdp.SdpError:
            return
        for side in Side:
            self.media.set_codec(side, choice.payload_type, choice.encoding,
                                 choice.telephone_event)

    def bye_from(self, side: Side, now: float) -> list[Output]:
        """BYE from one side (already answered 200 by the B2BUA): BYE the other."""
        if self.state is CallState.ENDED:
            return []
        if side is Side.CALLER:
            other = self.leg.dialog if self.leg is not None else None
        else:
            other = self.caller_dialog
        outputs = self._bye(other, now)
        who = "caller" if side is Side.CALLER else "callee"
        self._debug("%s hung up", who)
        return outputs + self._end(now, disposition="answered", status=200, hangup_by=who)

    def _bye(self, dialog: Dialog | None, now: float) -> list[Output]:
        if dialog is None or dialog.state.value == "terminated":
            return []
        bye = dialog.create_request("BYE", via=self.local.via(new_branch()))
        dialog.terminate()
        _, outputs = self.endpoint.send_request(bye, next_hop(bye), now)
        return outputs

    def hang_up(self, now: float, reason: str) -> list[Output]:
        """The system ends the call (max duration, media inactivity, shutdown)."""
        if self.state is CallState.ENDED:
            return []
        self._log("ending the call: %s", reason)
        if self.state in (CallState.BRIDGED, CallState.ANSWERING, CallState.VOICEMAIL):
            outputs = self._bye(self.caller_dialog, now)
            if self.leg is not None:
                outputs += self._bye(self.leg.dialog, now)
            return outputs + self._end(now, disposition="answered", status=200,
                                       hangup_by="system")
        self.media.stop_playing()
        outputs = self._abandon_leg(now)
        outputs += self.endpoint.respond(self.transaction, 480, "Temporarily Unavailable",
                                         now=now, to_tag=self.local_tag)
        return outputs + self._end(now, disposition="failed", status=480, hangup_by="system")

    # --- time ------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return min(self.deadlines.values(), default=None)

    def handle_timer(self, now: float) -> list[Output]:
        outputs: list[Output] = []
        for name, when in sorted(self.deadlines.items(), key=lambda item: item[1]):
            if when > now or name not in self.deadlines:
                continue
            del self.deadlines[name]
            if name == "ring" and self.state is CallState.DIALING:
                self._log("target %d did not answer in %.0fs", self.target_index + 1,
                          self.number.ring_timeout)
                self.last_failure = 408
                outputs += self._abandon_leg(now)
                outputs += self._dial_next(now)
            elif name == "max_duration":
                outputs += self.hang_up(now, f"max_duration {self.number.max_duration:.0f}s")
            elif name == "voicemail_max":
                outputs += self.hang_up(now, "the voicemail reached its maximum length")
            elif name.startswith("refresh-"):
                outputs += self._send_refresh(Side[name.partition("-")[2]], now)
            elif name.startswith("expire-"):
                side = Side[name.partition("-")[2]]
                outputs += self.hang_up(now, f"the {_who(side)} did not refresh the session")
        return outputs

    # --- the end --------------------------------------------------------------------

    def _end(self, now: float, *, disposition: str, status: int, hangup_by: str
             ) -> list[Output]:
        if self.state is CallState.ENDED:
            return []
        voicemail = self.state is CallState.VOICEMAIL
        self.state = CallState.ENDED
        self.deadlines.clear()
        self.ended_at = now
        if voicemail:
            disposition = "voicemail"
        elif self.answered_at is not None:
            disposition = "answered"
        self.disposition = disposition
        self.sip_status = status if self.answered_at is None else 200
        self.hangup_by = hangup_by
        self.media.stop_playing()
        result = self.media.stop_recording()
        if isinstance(result, RecordingFailed):
            # Nothing reached the disk: the call went on unrecorded.
            self.recording, self.recording_error = None, result.error
        else:
            self.recording = result
            if result is not None:
                self.recording_id = self.id
                self.recording_error = result.error
        self.media.close()
        # At DEBUG only: the CDR line that the server logs next says the same.
        self._debug("ended: %s (%s), hangup by %s", self.disposition, self.sip_status,
                    self.hangup_by)
        return []

    @property
    def ended(self) -> bool:
        return self.state is CallState.ENDED

    done = ended

    def cdr(self) -> Cdr:
        """The call's one CDR. Times come from the monotonic clock of the call's
        events, placed on the wall clock at the start, so that a clock step
        during the call cannot make a duration negative or wrong."""
        wall = self.wall_start

        def at(moment: float | None) -> datetime | None:
            return None if moment is None else wall + timedelta(seconds=moment - self.started)

        end = at(self.ended_at) or wall
        return Cdr(
            call_id=self.id,
            sip_call_id=self.invite.call_id,
            number=self.number.number,
            owner=self.number.owner,
            caller=self.caller.record_value,
            target=self.delivered_to,
            start=wall,
            answer=at(self.answered_at),
            end=end,
            disposition=self.disposition,
            sip_status=self.sip_status,
            hangup_by=self.hangup_by,
            recording=self.recording_id,
            recording_error=self.recording_error,
            node=self.node,
        )

    def _log(self, text: str, *args: object) -> None:
        log.info(f"call {self.id}: {text}", *args)

    def _debug(self, text: str, *args: object) -> None:
        """A routine step every call takes. At INFO, eight lines per call cost a
        sixth of the server's CPU at 250 calls/s, four still a tenth at 350
        (benchmarks/RESULTS.md): INFO keeps the INVITE and the CDR."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug(f"call {self.id}: {text}", *args)


def normal_host(host: str) -> str:
    """An address in one spelling (``0:0::1`` is ``::1``); a name as it is."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _uri_host(text: str) -> str:
    """The host of a URI or name-addr, as an address would be written ("" if none)."""
    try:
        uri = parse_name_addr(text).uri if "<" in text else parse_uri(text)
    except (ValueError, sip.ParseError):
        return ""
    return uri.host if isinstance(uri, SipURI) else ""


def _dialog_hosts(dialog: Dialog) -> set[str]:
    return {_uri_host(dialog.remote_target), *(_uri_host(r) for r in dialog.route_set[:1])}


def _who(side: Side) -> str:
    return "caller" if side is Side.CALLER else "target"


def _sdp_body(message: sip.Message) -> bytes | None:
    """The SDP of a message: its body, or the application/sdp part of a multipart one."""
    if not message.body:
        return None
    content_type = message.content_type
    if content_type is None or content_type.mime == "application/sdp":
        return message.body
    if content_type.mime == "multipart/mixed" and content_type.boundary:
        try:
            parts = sip.split_multipart(message.body, content_type.boundary)
        except sip.ParseError:
            return None
        for part in parts:
            part_type = part.content_type
            if part_type is not None and part_type.mime == "application/sdp":
                return part.body
    return None
