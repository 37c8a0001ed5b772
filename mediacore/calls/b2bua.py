"""The transaction user above the SIP endpoint: which call each event belongs to.

The B2BUA routes new INVITEs to new :class:`~mediacore.calls.call.Call`\\ s
and every later event (responses from targets, in-dialog requests from
either side, CANCEL, timeouts, media events, timers) to the call it belongs
to. It answers what needs no call: OPTIONS inside a dialog, 481 for
dialogs and transactions we do not know (RFC 3261 12.2.2, 9.2), 404 for
numbers not in the plan. Sans-IO: events and ``now`` in, outputs out; the
media plane is reached through a factory of :class:`CallMedia` objects.

:class:`CallCounters` counts calls as they start, end and are refused, for
the metrics collector to read at scrape time; the setup time of each call
(INVITE to answer, or to the final response) goes once per call to the
``on_setup`` callback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mediacore.calls.call import Call, CallError, LocalContact, OutboundLeg, normal_host
from mediacore.calls.media import CallMedia, Side
from mediacore.calls.privacy import identify_caller
from mediacore.calls.routing import NumberingPlan, NumberPlan, RoutingError, dialled_number
from mediacore.config import Config
from mediacore.deadlines import DeadlineHeap
from mediacore.randomness import random_hex
from mediacore.sip import loops
from mediacore.sip import message as sip
from mediacore.sip.endpoint import (
    Event,
    Output,
    RequestReceived,
    ResponseReceived,
    SipEndpoint,
    TransactionTimedOut,
    counted_method,
)
from mediacore.sip.media_policy import MediaPolicy
from mediacore.sip.transaction import (
    ClientTransaction,
    ServerInviteTransaction,
    ServerTransaction,
)

log = logging.getLogger("mediacore.calls")

MediaFactory = Callable[[str], CallMedia]
CallEnded = Callable[[Call], None]

#: Every disposition a CDR can carry (docs/contracts.md), so that each has a
#: counter from the start, at zero.
DISPOSITIONS = ("answered", "no-answer", "busy", "failed", "cancelled", "voicemail",
                "rejected")


class CallCounters:
    """Calls since start. ``refused``: INVITEs answered before a call existed,
    by a fixed few reasons (``not-found``, ``routing``, ``no-media``, ``loop``)."""

    __slots__ = ("ended", "foreign", "refused", "started")

    def __init__(self) -> None:
        self.started = 0
        self.ended: dict[str, int] = dict.fromkeys(DISPOSITIONS, 0)
        self.refused: dict[str, int] = {}
        #: Requests for a live call from an address that is not its peer's
        #: (refused 403, or an ACK dropped), by method (counted_method: bounded).
        self.foreign: dict[str, int] = {}

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1


def new_call_id() -> str:
    """Our own call id: 64 random bits, unguessable, short enough for log lines."""
    return random_hex(8)


@dataclass(frozen=True, slots=True)
class _LegRef:
    call: Call
    leg: OutboundLeg


class B2BUA:
    """Decides what each SIP event does, and keeps the map from events to calls."""

    def __init__(
        self,
        config: Config,
        endpoint: SipEndpoint,
        *,
        media_factory: MediaFactory,
        local: LocalContact,
        recordings_dir: Path,
        on_call_ended: CallEnded,
        wall_clock: Callable[[float], datetime],
        numbering: NumberingPlan | None = None,
        node: str = "",
        on_setup: Callable[[float], None] | None = None,
        broadcasts: frozenset[str] = frozenset(),
    ) -> None:
        self.config = config
        self.endpoint = endpoint
        self.media_factory = media_factory
        self.local = local
        self.recordings_dir = recordings_dir
        self.on_call_ended = on_call_ended
        self.wall_clock = wall_clock
        self.node = node
        #: What our loop tokens are derived from (mediacore.sip.loops): this
        #: node, as other nodes and proxies can tell it from the others.
        self.loop_key = loops.node_key(node, local.host, str(local.port))
        #: Where SDP may aim the relay: our media address's family, unicast, no
        #: broadcast (``broadcasts``: this host's subnet broadcasts, from the
        #: edge). [rtp] changes only on restart, so reload keeps it.
        self.media_policy = MediaPolicy(config.rtp.address, broadcasts)
        self.numbering = numbering or NumberingPlan(**asdict(config.routing))
        self.plan = NumberPlan(config.numbers, self.numbering)
        self.calls: dict[str, Call] = {}
        self._by_invite: dict[ServerInviteTransaction, Call] = {}
        self._by_dialog: dict[Hashable, tuple[Call, Side]] = {}
        self._by_client: dict[ClientTransaction, _LegRef] = {}
        self._by_relay: dict[ClientTransaction, Call] = {}
        # What each call put in the tables above, so that forgetting a call
        # costs its own entries, not a scan of every call's.
        self._entries: dict[str, list[tuple[dict[Any, Any], Hashable]]] = {}
        self._deadlines: DeadlineHeap[Call] = DeadlineHeap()
        self.counters = CallCounters()
        #: Called once per call with its setup time in seconds (metrics).
        self.on_setup = on_setup

    def reload(self, config: Config) -> None:
        """A new number plan for new calls; calls in progress keep theirs."""
        numbering = NumberingPlan(**asdict(config.routing))
        self.plan = NumberPlan(config.numbers, numbering)
        self.numbering = numbering
        self.config = config

    # --- events --------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Output]:
        if isinstance(event, RequestReceived):
            return self._request(event, now)
        if isinstance(event, ResponseReceived):
            return self._response(event, now)
        if isinstance(event, TransactionTimedOut):
            return self._timed_out(event, now)
        return []

    def _request(self, event: RequestReceived, now: float) -> list[Output]:
        request, transaction = event.request, event.transaction
        method = request.method
        if method == "ACK":
            found = self._by_dialog.get((request.call_id, request.to_tag))
            if found is not None and found[1] is Side.CALLER:
                if not self._from_peer(found[0], Side.CALLER, event):
                    return []  # an ACK is never answered
                return self._after(found[0], found[0].caller_acked(now))
            return []
        assert transaction is not None
        if method == "CANCEL":
            invite = self.endpoint.find_invite(request)
            call = self._by_invite.get(invite) if invite is not None else None
            if call is not None and not self._from_peer(call, Side.CALLER, event):
                outputs = self.endpoint.respond(transaction, 403, "Forbidden", now=now)
                # A CANCEL's branch is its INVITE's (9.1), so the caller's own
                # CANCEL matches this transaction: forgotten, it is not taken
                # for a retransmission of the stranger's and answered 403 too.
                server = self.endpoint.transactions.server
                if server.get(transaction.key) is transaction:
                    del server[transaction.key]
                return outputs
            # The 200 to a CANCEL carries the To tag of the INVITE's responses (9.2).
            tag = call.local_tag if call is not None else (invite.local_tag if invite else None)
            outputs = self.endpoint.respond(transaction, 200 if invite else 481, now=now,
                                            to_tag=tag)
            if call is not None:
                outputs += self._after(call, call.caller_cancelled(now))
            return outputs
        if request.to_tag is not None:
            return self._in_dialog(event, transaction, now)
        if method == "INVITE":
            assert isinstance(transaction, ServerInviteTransaction)
            return self._new_call(request, transaction, now, event.peer.host)
        return self.endpoint.respond(transaction, 481, now=now)

    def _new_call(self, request: sip.Request, transaction: ServerInviteTransaction,
                  now: float, source: str) -> list[Output]:
        try:
            route = self.plan.lookup(request)
        except RoutingError as error:
            log.info("call -: INVITE %s refused %s %s", request.call_id, error.status,
                     error.reason)
            self.counters.refuse("routing")
            return self.endpoint.respond(transaction, error.status, error.reason, now=now)
        if route is None:
            log.info("call -: INVITE %s for %s: not in the number plan: 404",
                     request.call_id, dialled_number(request, self.numbering))
            self.counters.refuse("not-found")
            return self.endpoint.respond(transaction, 404, "Not Found", now=now)
        token = loops.loop_token(self.loop_key, route.number)
        if loops.has_looped(request, token):
            # Forwarding it again would go round again: no call, no CDR, no ports.
            log.warning("call -: INVITE %s for %s has passed this node before: 482",
                        request.call_id, route.number)
            self.counters.refuse("loop")
            return self.endpoint.respond(transaction, 482, "Loop Detected", now=now)
        call_id = new_call_id()
        try:
            media = self.media_factory(call_id)
        except CallError as error:
            log.warning("call %s: no media for the call: %s", call_id, error.reason)
            self.counters.refuse("no-media")
            return self.endpoint.respond(transaction, error.status, error.reason, now=now,
                                         headers=(("Retry-After", "5"),))
        call = Call(
            id=call_id,
            number=route.config,
            caller=identify_caller(request, self.numbering),
            invite=request,
            transaction=transaction,
            endpoint=self.endpoint,
            media=media,
            local=self.local,
            started=now,
            wall_start=self.wall_clock(now),
            recordings_dir=self.recordings_dir,
            node=self.node,
            loop_token=token,
            loop_marker=loops.onward_marker(request, token),
            media_policy=self.media_policy,
            caller_host=source,
        )
        self.calls[call_id] = call
        self._by_invite[transaction] = call
        self.counters.started += 1
        log.info("call %s: INVITE %s for %s (owner %s)", call_id, request.call_id,
                 route.number, route.config.owner)
        return self._after(call, call.start(now))

    def _from_peer(self, call: Call, side: Side, event: RequestReceived) -> bool:
        """Whether ``event`` may act on ``call`` as ``side``: it comes from that
        side's peer (Call.peer_hosts) or from a trusted source (a carrier's
        other proxies). A stranger who learnt the Call-ID and tags is counted
        and logged; the caller decides what it gets (403, or nothing for ACK)."""
        host = event.peer.host
        peers = call.peer_hosts(side, event.request.call_id)
        if normal_host(host) in peers or self.endpoint.config.is_trusted(host):
            return True
        method = counted_method(event.request.method)
        self.counters.foreign[method] = self.counters.foreign.get(method, 0) + 1
        log.warning("call %s: %s from %s, which is neither the %s's address nor trusted: "
                    "refused", call.id, method, event.peer,
                    "caller" if side is Side.CALLER else "target")
        return False

    def _in_dialog(self, event: RequestReceived, transaction: ServerTransaction,
                   now: float) -> list[Output]:
        request = event.request
        found = self._by_dialog.get((request.call_id, request.to_tag))
        if found is None:
            log.info("call -: %s for an unknown dialog: 481", request.method)
            return self.endpoint.respond(transaction, 481, now=now)
        call, side = found
        if not self._from_peer(call, side, event):
            # Before anything of the call is touched: its dialog's CSeq, the
            # session timer, the relay's addresses.
            return self.endpoint.respond(transaction, 403, "Forbidden", now=now,
                                         to_tag=request.to_tag)
        method = request.method
        if method == "BYE":
            outputs = self.endpoint.respond(transaction, 200, now=now)
            return outputs + self._after(call, call.bye_from(side, now))
        if method in ("INVITE", "UPDATE", "INFO"):
            return self._after(call, call.relay_request(side, request, transaction, now,
                                                        source=event.peer.host))
        return self.endpoint.respond(transaction, 200, now=now, to_tag=request.to_tag)

    def _response(self, event: ResponseReceived, now: float) -> list[Output]:
        transaction = event.transaction
        relayed = self._by_relay.get(transaction) if transaction is not None else None
        if relayed is not None:
            if event.response.status >= 200:
                del self._by_relay[transaction]  # type: ignore[arg-type]
            return self._after(relayed, relayed.relayed_response(
                transaction, event.response, now))  # type: ignore[arg-type]
        ref = self._by_client.get(transaction) if transaction is not None else None
        if ref is None:
            return self._stray_response(event.response, now)
        outputs = ref.call.target_response(ref.leg, event.response, now)
        if ref.call.ended and event.response.status >= 200:
            self._by_client.pop(transaction, None)  # type: ignore[arg-type]
        return self._after(ref.call, outputs)

    def _stray_response(self, response: sip.Response, now: float) -> list[Output]:
        """A 2xx retransmission after its transaction ended: ACK it again (13.2.2.4)."""
        if not 200 <= response.status < 300 or response.cseq.method != "INVITE":
            return []
        found = self._by_dialog.get((response.call_id, response.from_tag))
        if found is None:
            return []
        call, _ = found
        leg = call.leg
        if leg is not None and leg.dialog is not None:
            return call.target_response(leg, response, now)
        return []

    def _timed_out(self, event: TransactionTimedOut, now: float) -> list[Output]:
        transaction = event.transaction
        if isinstance(transaction, ClientTransaction):
            relayed = self._by_relay.pop(transaction, None)
            if relayed is not None:
                return self._after(relayed, relayed.relay_timed_out(transaction, now))
            ref = self._by_client.pop(transaction, None)
            if ref is not None and transaction.request.method == "INVITE":
                return self._after(ref.call, ref.call.target_timed_out(ref.leg, now))
            return []
        if isinstance(transaction, ServerInviteTransaction) and event.timer == "L":
            call = self._by_invite.get(transaction)
            if call is not None:
                return self._after(call, call.hang_up(now, "the caller never ACKed our 200"))
        return []

    # --- media and time ------------------------------------------------------------------

    def announcement_finished(self, call_id: str, now: float) -> list[Output]:
        call = self.calls.get(call_id)
        return [] if call is None else self._after(call, call.announcement_finished(now))

    def dtmf(self, call_id: str, digit: str, now: float) -> list[Output]:
        call = self.calls.get(call_id)
        return [] if call is None else self._after(call, call.dtmf(digit, now))

    def media_inactive(self, call_id: str, now: float) -> list[Output]:
        call = self.calls.get(call_id)
        if call is None:
            return []
        return self._after(call, call.hang_up(now, "no RTP from either side"))

    def hang_up_all(self, now: float, reason: str) -> list[Output]:
        outputs: list[Output] = []
        for call in list(self.calls.values()):
            outputs += self._after(call, call.hang_up(now, reason))
        return outputs

    def next_deadline(self) -> float | None:
        return self._deadlines.next_deadline()

    def handle_timer(self, now: float) -> list[Output]:
        outputs: list[Output] = []
        for call in self._deadlines.due(now):
            outputs += self._after(call, call.handle_timer(now))
        return outputs

    # --- book-keeping ------------------------------------------------------------------

    def _after(self, call: Call, outputs: list[Output]) -> list[Output]:
        """Index what the call created, forget what it ended, schedule its timers."""
        index = self._index
        for candidate in (call.leg, *call.abandoned):
            if candidate is None:
                continue
            index(call, self._by_client, candidate.transaction, _LegRef(call, candidate))
            if candidate.dialog is not None:
                key = (candidate.dialog.call_id, candidate.dialog.local_tag)
                index(call, self._by_dialog, key, (call, Side.CALLEE))
        if call.caller_dialog is not None:
            index(call, self._by_dialog, (call.invite.call_id, call.local_tag),
                  (call, Side.CALLER))
        for client in (*call.relays, *call.refreshes):
            index(call, self._by_relay, client, call)
        if not call.setup_counted and (call.answered_at is not None or call.ended):
            self._count_setup(call)
        if call.ended:
            self._forget(call)
        else:
            self._deadlines.schedule(call)
        return outputs

    def _count_setup(self, call: Call) -> None:
        """INVITE received to our 200 (a target's answer, or voicemail), or to
        the final response that ended the call unanswered."""
        call.setup_counted = True
        until = call.answered_at if call.answered_at is not None else call.ended_at
        if self.on_setup is not None and until is not None:
            self.on_setup(max(0.0, until - call.started))

    def _index(self, call: Call, table: dict[Any, Any], key: Hashable, value: object) -> None:
        if key not in table:
            table[key] = value
            self._entries.setdefault(call.id, []).append((table, key))

    def _forget(self, call: Call) -> None:
        """Drop an ended call's indexes, except outbound INVITEs still pending: a
        target may yet answer one with a 2xx that must be ACKed and BYEd (the
        entry goes with the transaction's final response or timeout)."""
        if self.calls.pop(call.id, None) is None:
            return
        ended = self.counters.ended
        ended[call.disposition] = ended.get(call.disposition, 0) + 1
        self._by_invite.pop(call.transaction, None)
        for table, key in self._entries.pop(call.id, ()):
            if table is self._by_client and table.get(key) is not None \
                    and table[key].leg.final_status is None:
                continue
            table.pop(key, None)
        try:
            self.on_call_ended(call)
        except Exception:
            log.exception("call %s: recording its end failed", call.id)
