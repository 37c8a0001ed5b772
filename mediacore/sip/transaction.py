"""RFC 3261 section 17 transactions as sans-IO state machines.

Every transaction is fed with events (a message received, a response the TU
wants sent, the time) and answers with *actions* (send this, hand that to the
TU, the transaction timed out). Timers are deadlines on the caller's clock:
``next_deadline()`` says when to call ``handle_timer(now)`` next. Nothing
here owns a socket, a clock or a task, so every timer and retransmission of
the RFC is tested with a fake clock, deterministically.

Two deliberate choices beyond the letter of RFC 3261:

* RFC 6026's *Accepted* state on both INVITE transactions: a client keeps
  absorbing and handing 2xx retransmissions to the TU for 64*T1 (so they
  are ACKed again, not treated as stray), and a server absorbs retransmitted
  INVITEs after its 2xx instead of presenting them as new requests.
* The server INVITE transaction retransmits its 2xx until the ACK arrives
  (RFC 3261 13.3.1.4 puts that in the UAS core). Keeping it here puts every
  retransmission timer of the stack in one tested place; the TU learns of a
  missing ACK through :class:`Timeout` with ``timer="L"``.

Matching follows 17.1.3 and 17.2.3, with the RFC 2543 fallback for branches
without the magic cookie (RFC 4475 ``badbranch``: a branch that *is* only
the cookie counts as RFC 2543 style).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from mediacore.config import SipTimers
from mediacore.deadlines import DeadlineHeap
from mediacore.sip import message as sip

# --- actions -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Put ``message`` on the wire to ``destination`` (opaque to this layer)."""

    message: sip.Message
    destination: Any


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand ``message`` to the transaction user (TU)."""

    message: sip.Message
    transaction: Transaction | None


@dataclass(frozen=True, slots=True)
class Timeout:
    """The transaction gave up: no (final) response, or no ACK for ours.

    ``timer`` names the RFC timer that fired (B, F, H or L), which tells
    the TU what went missing.
    """

    transaction: Transaction
    timer: str


Action = Send | Deliver | Timeout


class State(Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


# The members as module globals: ``State.X`` goes through the enum metaclass on
# every read, several times per message in the state machines below.
_CALLING = State.CALLING
_TRYING = State.TRYING
_PROCEEDING = State.PROCEEDING
_ACCEPTED = State.ACCEPTED
_COMPLETED = State.COMPLETED
_CONFIRMED = State.CONFIRMED
_TERMINATED = State.TERMINATED


# --- matching keys -------------------------------------------------------------


def server_key(request: sip.Request) -> Hashable:
    """The key that finds the server transaction of ``request`` (17.2.3).

    ACK maps to the INVITE it acknowledges; CANCEL has a transaction of its
    own (``cancel_target_key`` finds the INVITE it cancels).
    """
    method = "INVITE" if request.method == "ACK" else request.method
    return _key(request, method)


def cancel_target_key(cancel: sip.Request) -> Hashable:
    """The key of the INVITE server transaction that ``cancel`` cancels (9.2)."""
    return _key(cancel, "INVITE")


def _key(request: sip.Request, method: str) -> Hashable:
    via = request.top_via
    if via is not None and via.is_rfc3261:
        return ("3261", via.branch, via.host.lower(), via.port, method)
    # RFC 2543 fallback. The To tag is left out for INVITE: the INVITE has none and its ACK
    # carries the tag of our response; the Call-ID, From tag, CSeq number,
    # R-URI and top Via still single the transaction out.
    to_tag = "" if method == "INVITE" else (request.to_tag or "")
    return (
        "2543",
        str(request.uri),
        to_tag,
        request.from_tag or "",
        request.call_id,
        request.cseq.number,
        method,
        str(via),
    )


def _ack_key(request: sip.Request) -> Hashable:
    return (request.call_id, request.from_tag, request.cseq.number)


def client_key(message: sip.Message) -> Hashable:
    """The key that finds a client transaction by its branch and method (17.1.3)."""
    via = message.top_via
    method = message.cseq.method
    if isinstance(message, sip.Request) and message.method in ("ACK", "CANCEL"):
        method = message.method
    return (via.branch if via is not None else None, method)


# --- transactions --------------------------------------------------------------


@dataclass(eq=False)
class Transaction:
    """What the four kinds share: a state, timers as deadlines, a destination."""

    request: sip.Request
    destination: Any
    reliable: bool
    timers: SipTimers
    state: State = _TRYING
    deadlines: dict[str, float] = field(default_factory=dict)
    key: Hashable = None

    @property
    def awaiting_ack(self) -> bool:
        return False

    @property
    def terminated(self) -> bool:
        return self.state is _TERMINATED

    done = terminated

    def next_deadline(self) -> float | None:
        deadlines = self.deadlines
        return min(deadlines.values()) if deadlines else None

    def handle_timer(self, now: float) -> list[Action]:
        """Fire every timer due at ``now``, earliest first."""
        actions: list[Action] = []
        while self.deadlines and not self.terminated:
            name, when = min(self.deadlines.items(), key=lambda item: item[1])
            if when > now:
                break
            del self.deadlines[name]
            actions += self._fire(name, now)
        return actions

    def _fire(self, name: str, now: float) -> list[Action]:
        raise NotImplementedError

    def _set(self, name: str, now: float, delay: float) -> None:
        self.deadlines[name] = now + delay

    def _terminate(self) -> None:
        self.state = _TERMINATED
        self.deadlines.clear()

    def _release_request(self) -> None:
        """Forget the request once it needs no more sending or answering: only the
        key, the state and the timers are needed to absorb retransmissions for
        the next 32 s, and thousands of such transactions are alive at a time
        (under call load, a third of the objects the collector walked)."""
        self.request = None  # type: ignore[assignment]

    def _linger(self, name: str, now: float, delay: float) -> None:
        """Wait ``delay`` to absorb retransmissions; over a reliable transport, don't."""
        if self.reliable:
            self._terminate()
        else:
            self._set(name, now, delay)


@dataclass(eq=False)
class ClientTransaction(Transaction):
    """Common ground of the two client kinds: the interval of the next retransmit."""

    interval: float = 0.0
    last_response: sip.Response | None = None


class ClientInviteTransaction(ClientTransaction):
    """17.1.1, with RFC 6026's Accepted state."""

    def start(self, now: float) -> list[Action]:
        self.state = _CALLING
        self.interval = self.timers.t1
        if not self.reliable:
            self._set("A", now, self.interval)
        self._set("B", now, 64 * self.timers.t1)
        return [Send(self.request, self.destination)]

    def receive_response(self, response: sip.Response, now: float) -> list[Action]:
        status = response.status
        if self.state in (_CALLING, _PROCEEDING):
            self.last_response = response
            if status < 200:
                self.state = _PROCEEDING
                self.deadlines.pop("A", None)
                self.deadlines.pop("B", None)
                return [Deliver(response, self)]
            if status < 300:
                # Accepted only hands 2xx retransmissions to the TU, which ACKs
                # them from its dialog: neither our INVITE nor the 2xx is needed.
                self.state = _ACCEPTED
                self.deadlines.clear()
                self._set("M", now, 64 * self.timers.t1)
                self._release_request()
                self.last_response = None
                return [Deliver(response, self)]
            self.state = _COMPLETED
            self.deadlines.clear()
            self._linger("D", now, 32.0)
            return [Send(self._ack_for(response), self.destination), Deliver(response, self)]
        if self.state is _ACCEPTED and 200 <= status < 300:
            return [Deliver(response, self)]  # a 2xx retransmission: the TU ACKs again
        if self.state is _COMPLETED and status >= 300:
            return [Send(self._ack_for(response), self.destination)]
        return []

    def cancel_sent(self, now: float) -> None:
        """A CANCEL went out for this INVITE: if no final response comes within
        64*T1, the transaction is over (RFC 3261 9.1), whatever the target does."""
        if self.state in (_CALLING, _PROCEEDING):
            self._set("cancel", now, 64 * self.timers.t1)

    def _ack_for(self, response: sip.Response) -> sip.Request:
        """The ACK for a non-2xx final response (17.1.1.3): same branch, same hop."""
        return sip.make_ack_for_non_2xx(self.request, response)

    def _fire(self, name: str, now: float) -> list[Action]:
        if name == "A" and self.state is _CALLING:
            self.interval *= 2
            self._set("A", now, self.interval)
            return [Send(self.request, self.destination)]
        if name == "B" and self.state is _CALLING:
            self._terminate()
            return [Timeout(self, "B")]
        if name == "cancel" and self.state in (_CALLING, _PROCEEDING):
            self._terminate()
            return [Timeout(self, "B")]
        if name in ("D", "M"):
            self._terminate()
        return []


class ClientNonInviteTransaction(ClientTransaction):
    """17.1.2."""

    def start(self, now: float) -> list[Action]:
        self.state = _TRYING
        self.interval = self.timers.t1
        if not self.reliable:
            self._set("E", now, self.interval)
        self._set("F", now, 64 * self.timers.t1)
        return [Send(self.request, self.destination)]

    def receive_response(self, response: sip.Response, now: float) -> list[Action]:
        if self.state not in (_TRYING, _PROCEEDING):
            return []  # Completed absorbs retransmitted finals
        if response.status < 200:
            self.last_response = response
            self.state = _PROCEEDING
            return [Deliver(response, self)]
        self.state = _COMPLETED
        self.deadlines.clear()
        self._linger("K", now, self.timers.t4)
        # Completed absorbs retransmitted finals and sends nothing more.
        self._release_request()
        self.last_response = None
        return [Deliver(response, self)]

    def _fire(self, name: str, now: float) -> list[Action]:
        if name == "E" and self.state in (_TRYING, _PROCEEDING):
            if self.state is _TRYING:
                self.interval = min(2 * self.interval, self.timers.t2)
            else:
                self.interval = self.timers.t2
            self._set("E", now, self.interval)
            return [Send(self.request, self.destination)]
        if name == "F":
            self._terminate()
            return [Timeout(self, "F")]
        if name == "K":
            self._terminate()
        return []


@dataclass(eq=False)
class ServerTransaction(Transaction):
    """Common ground of the server kinds: the last response, resent on retransmits."""

    last_response: sip.Response | None = None
    interval: float = 0.0
    acked: bool = False
    #: Our To tag for this request's responses, chosen once (8.2.6.2).
    local_tag: str | None = None
    #: How the ACK for our 2xx finds this INVITE (Call-ID, From tag, CSeq).
    ack_key: Hashable = None

    @property
    def answered(self) -> bool:
        return self.last_response is not None and self.last_response.status >= 200

    def _resend_last(self) -> list[Action]:
        if self.last_response is None:
            return []
        return [Send(self.last_response, self.destination)]


class ServerInviteTransaction(ServerTransaction):
    """17.2.1, with RFC 6026's Accepted state and 2xx retransmission (13.3.1.4)."""

    @property
    def awaiting_ack(self) -> bool:
        return self.state is _ACCEPTED and not self.acked

    def start(self, now: float) -> list[Action]:
        self.state = _PROCEEDING
        return [Deliver(self.request, self)]

    def receive_request(self, request: sip.Request, now: float) -> list[Action]:
        if request.method == "ACK":
            if self.state is _COMPLETED:
                self.state = _CONFIRMED
                self.deadlines.clear()
                self._linger("I", now, self.timers.t4)
                return []  # an ACK for a non-2xx ends here (17.2.1)
            if self.state is _ACCEPTED and not self.acked:
                self.acked = True
                self.deadlines.pop("G2xx", None)
                return [Deliver(request, self)]
            return []  # an ACK retransmission
        # A retransmitted INVITE: answer it with what we last said.
        if self.state in (_PROCEEDING, _COMPLETED, _ACCEPTED):
            return self._resend_last()
        return []

    def send_response(self, response: sip.Response, now: float) -> list[Action]:
        if self.state not in (_PROCEEDING, _ACCEPTED):
            raise TransactionStateError(f"cannot send {response.status} in state "
                                        f"{self.state.value}")
        self.last_response = response
        status = response.status
        if self.state is _ACCEPTED:
            if not 200 <= status < 300:
                raise TransactionStateError("only 2xx may follow a 2xx")
            return [Send(response, self.destination)]
        if status < 200:
            return [Send(response, self.destination)]
        self._release_request()
        if status < 300:
            self.state = _ACCEPTED
            self.interval = self.timers.t1
            if not self.reliable:
                self._set("G2xx", now, self.interval)
            self._set("L", now, 64 * self.timers.t1)
            return [Send(response, self.destination)]
        self.state = _COMPLETED
        self.interval = self.timers.t1
        if not self.reliable:
            self._set("G", now, self.interval)
        self._set("H", now, 64 * self.timers.t1)
        return [Send(response, self.destination)]

    def _fire(self, name: str, now: float) -> list[Action]:
        if name in ("G", "G2xx"):
            self.interval = min(2 * self.interval, self.timers.t2)
            self._set(name, now, self.interval)
            return self._resend_last()
        if name == "H" and self.state is _COMPLETED:
            self._terminate()
            return [Timeout(self, "H")]
        if name == "L":
            self._terminate()
            return [] if self.acked else [Timeout(self, "L")]
        if name == "I":
            self._terminate()
        return []


class ServerNonInviteTransaction(ServerTransaction):
    """17.2.2."""

    def start(self, now: float) -> list[Action]:
        self.state = _TRYING
        return [Deliver(self.request, self)]

    def receive_request(self, request: sip.Request, now: float) -> list[Action]:
        if self.state in (_PROCEEDING, _COMPLETED):
            return self._resend_last()
        return []  # Trying: absorbed until the TU answers

    def send_response(self, response: sip.Response, now: float) -> list[Action]:
        if self.state not in (_TRYING, _PROCEEDING):
            raise TransactionStateError(f"cannot send {response.status} in state "
                                        f"{self.state.value}")
        self.last_response = response
        if response.status < 200:
            self.state = _PROCEEDING
        else:
            self.state = _COMPLETED
            self._release_request()
            self._linger("J", now, 64 * self.timers.t1)
        return [Send(response, self.destination)]

    def _fire(self, name: str, now: float) -> list[Action]:
        if name == "J":
            self._terminate()
        return []


class TransactionStateError(Exception):
    """The TU asked for something its transaction's state does not allow."""


# --- the layer -------------------------------------------------------------------


class TransactionLayer:
    """All transactions of one endpoint: matching, creation, timers, clean-up.

    Received messages that match no transaction are handed to the TU with
    ``transaction=None``: ACKs for 2xx (their own end-to-end request) and
    2xx retransmissions after the client transaction ended.
    """

    def __init__(self, timers: SipTimers | None = None) -> None:
        self.timers = timers or SipTimers()
        self.server: dict[Hashable, ServerTransaction] = {}
        self.client: dict[Hashable, ClientTransaction] = {}
        self._deadlines: DeadlineHeap[Transaction] = DeadlineHeap()
        # The ACK for a 2xx is a new transaction with a branch of its own, so
        # it is matched to the INVITE that is waiting for it by dialog and
        # CSeq instead (RFC 3261 13.3.1.4, 17.2.1).
        self._awaiting_ack: dict[Hashable, ServerInviteTransaction] = {}

    def receive_request(
        self, request: sip.Request, source: Any, now: float, *, reliable: bool = False
    ) -> list[Action]:
        key = server_key(request)
        existing = self.server.get(key)
        if existing is not None:
            if request.method == "ACK" and not isinstance(existing, ServerInviteTransaction):
                return [Deliver(request, None)]
            return self._after(existing, existing.receive_request(request, now))
        if request.method == "ACK":
            waiting = self._awaiting_ack.get(_ack_key(request))
            if waiting is not None:
                return self._after(waiting, waiting.receive_request(request, now))
            return [Deliver(request, None)]
        kind = ServerInviteTransaction if request.method == "INVITE" else \
            ServerNonInviteTransaction
        transaction = kind(request, source, reliable, self.timers, key=key)
        if isinstance(transaction, ServerInviteTransaction):
            transaction.ack_key = _ack_key(request)
        self.server[key] = transaction
        return self._after(transaction, transaction.start(now))

    def send_response(
        self, transaction: ServerTransaction, response: sip.Response, now: float
    ) -> list[Action]:
        return self._after(transaction, transaction.send_response(response, now))

    def cancel_sent(self, transaction: ClientTransaction, now: float) -> None:
        if isinstance(transaction, ClientInviteTransaction):
            transaction.cancel_sent(now)
            self._after(transaction, [])

    def find_invite_for_cancel(self, cancel: sip.Request) -> ServerInviteTransaction | None:
        found = self.server.get(cancel_target_key(cancel))
        return found if isinstance(found, ServerInviteTransaction) else None

    def send_request(
        self, request: sip.Request, destination: Any, now: float, *, reliable: bool = False
    ) -> tuple[ClientTransaction, list[Action]]:
        """Start a client transaction; the request must carry its own branch."""
        if request.method == "ACK":
            raise ValueError("ACK is not sent in a transaction (17.1.1.3, 13.2.2.4)")
        kind = ClientInviteTransaction if request.method == "INVITE" else \
            ClientNonInviteTransaction
        key = client_key(request)
        if key in self.client:
            raise ValueError(f"a client transaction with key {key} exists")
        transaction = kind(request, destination, reliable, self.timers, key=key)
        self.client[key] = transaction
        return transaction, self._after(transaction, transaction.start(now))

    def receive_response(self, response: sip.Response, now: float) -> list[Action]:
        transaction = self.client.get(client_key(response))
        if transaction is None:
            return [Deliver(response, None)]
        return self._after(transaction, transaction.receive_response(response, now))

    def next_deadline(self) -> float | None:
        """When ``handle_timer`` has something to do next, on the caller's clock."""
        return self._deadlines.next_deadline()

    def handle_timer(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for transaction in self._deadlines.due(now):
            actions += self._after(transaction, transaction.handle_timer(now))
        return actions

    def _after(self, transaction: Transaction, actions: list[Action]) -> list[Action]:
        """Book-keeping after any event: reap the dead, schedule the living."""
        if isinstance(transaction, ServerInviteTransaction):
            ack_key = transaction.ack_key
            if transaction.awaiting_ack:
                self._awaiting_ack[ack_key] = transaction
            elif self._awaiting_ack.get(ack_key) is transaction:
                del self._awaiting_ack[ack_key]
        if transaction.terminated:
            table: dict[Hashable, Any] = (
                self.server if isinstance(transaction, ServerTransaction) else self.client
            )
            if table.get(transaction.key) is transaction:
                del table[transaction.key]
        else:
            self._deadlines.schedule(transaction)
        return actions

    def __len__(self) -> int:
        return len(self.server) + len(self.client)
