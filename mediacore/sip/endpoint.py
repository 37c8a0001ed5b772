"""The SIP endpoint: parser, transactions and the UAS core rules, still sans-IO.

Bytes and a peer come in with the time; what goes out is a list of
:class:`Transmit` (bytes for a peer) and events for the transaction user
(the B2BUA): :class:`RequestReceived`, :class:`ResponseReceived`,
:class:`TransactionTimedOut`. The asyncio edge (``mediacore.app``) only
moves bytes and calls :meth:`SipEndpoint.handle_timer` at
:meth:`SipEndpoint.next_deadline`.

What is settled here so the TU never sees it (RFC 3261 8.2, 16.3, 18):

* malformed requests get 400 (or the parser's status) statelessly, when the
  message says where to send it; malformed responses are dropped;
* a message from outside ``trusted_sources`` goes through the untrusted
  screen (:mod:`mediacore.sip.screening`) before the parser: a request
  outside a dialog (INVITE, OPTIONS, REGISTER, ...; not ACK or CANCEL) is
  refused there with a stateless, rate-limited 403 or, with
  ``sip.untrusted = "drop"``, not answered; no transaction, no per-message
  log line. Responses and in-dialog requests go on (targets need not be
  trusted);
* every answer of :func:`~mediacore.sip.message.check_request` (405/501,
  416, 420, 415, 406, 483 for INVITEs we would forward);
* OPTIONS is answered 200 here: carriers use it as a keepalive and it must
  not depend on anything above; while draining it is answered 503 with
  Retry-After, like a new INVITE, so a dispatcher that probes with OPTIONS
  (Kamailio's dispatcher module) stops sending us new calls;
* a new INVITE gets 100 Trying at once, so the carrier stops retransmitting;
* RFC 3581: ``received`` and ``rport`` are stamped on the top Via of every
  request, and responses go back to where the request came from.

:class:`SipCounters` counts what passes (plain integers in dicts, read by
the metrics collector at scrape time), so this module stays sans-IO and
imports no metrics library.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mediacore.config import SipConfig
from mediacore.sip import message as sip
from mediacore.sip.dialog import new_tag
from mediacore.sip.headers import _VIA as _VIA_PATTERN
from mediacore.sip.headers import Via, parse_via
from mediacore.sip.screening import UntrustedScreen
from mediacore.sip.transaction import (
    Action,
    ClientTransaction,
    Deliver,
    Send,
    ServerInviteTransaction,
    ServerTransaction,
    Timeout,
    Transaction,
    TransactionLayer,
    TransactionStateError,
)
from mediacore.sip.transport import TCP, UDP, Peer
from mediacore.sip.uri import split_list

log = logging.getLogger("mediacore.sip")

#: What the B2BUA implements; others known to SIP get 405, unknown ones 501.
ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "UPDATE")
#: Extensions we support (RFC 4028 session timers); a Require of others is 420.
SUPPORTED = ("timer",)
ACCEPTED_BODIES = ("application/sdp", "multipart/mixed")
DEFAULT_SIP_PORT = 5060
#: Seconds a caller is asked to wait while the server cannot take calls
#: (``SipEndpoint.unavailable``): a disk someone frees comes back in minutes.
UNAVAILABLE_RETRY_AFTER = 60
#: Methods counted under their own name; any other token counts as "other",
#: so a peer inventing methods cannot grow the counters without bound.
COUNTED_METHODS = frozenset((*ALLOWED_METHODS, "REGISTER", "SUBSCRIBE", "NOTIFY", "REFER",
                             "MESSAGE", "PRACK", "PUBLISH"))


def counted_method(method: str) -> str:
    """``method`` as a counter key: itself if SIP knows it, else ``"other"``."""
    return method if method in COUNTED_METHODS else "other"


class SipCounters:
    """What the endpoint saw and sent since start, for metrics.

    Dicts keyed by method (see :func:`counted_method`) or (method, status);
    statuses are 100-699 (the parser refuses others), timers B/F/H/L, refusal
    reasons a fixed few: every key set is bounded. Incremented on the message
    path, so they are plain ``dict.get`` + 1, nothing more.
    """

    __slots__ = ("calls_refused", "malformed", "messages_refused", "refusal_answers",
                 "requests_received", "requests_sent", "responses_received", "responses_sent",
                 "retransmissions", "timeouts")

    def __init__(self) -> None:
        self.requests_received: dict[str, int] = {}
        self.requests_sent: dict[str, int] = {}
        #: (method of the request answered, status)
        self.responses_sent: dict[tuple[str, int], int] = {}
        self.responses_received: dict[tuple[str, int], int] = {}
        #: Retransmissions sent by transaction timers (A, E, G).
        self.retransmissions = 0
        #: Timeouts by the RFC timer that fired (B, F, H, L).
        self.timeouts: dict[str, int] = {}
        #: Messages that did not parse, and responses that failed their checks.
        self.malformed = 0
        #: New INVITEs answered here before any call existed: "draining", "untrusted".
        self.calls_refused: dict[str, int] = {}
        #: Messages refused by the untrusted screen, by reason
        #: (screening.REFUSAL_REASONS).
        self.messages_refused: dict[str, int] = {}
        #: What the refused untrusted requests' answers became
        #: (screening.ANSWER_OUTCOMES: sent, rate-limited, not-answered).
        self.refusal_answers: dict[str, int] = {}


@dataclass(frozen=True, slots=True)
class Transmit:
    """Bytes to put on the wire to ``peer``."""

    data: bytes
    peer: Peer


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A request for the TU. ``transaction`` is None for an ACK to a 2xx that
    matched no waiting INVITE (the dialog layer decides)."""

    request: sip.Request
    transaction: ServerTransaction | None
    peer: Peer


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response for the TU; ``transaction`` is None for a stray 2xx retransmission."""

    response: sip.Response
    transaction: ClientTransaction | None


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    transaction: Transaction
    timer: str


Event = RequestReceived | ResponseReceived | TransactionTimedOut
Output = Transmit | Event


def warning(reason: str) -> str:
    """A Warning value (RFC 3261 20.43, code 399: miscellaneous) carrying why we
    refused a request, for the carrier's engineer reading a trace."""
    printable = "".join(ch if ch.isprintable() else "?" for ch in reason)
    text = printable.replace("\\", "\\\\").replace('"', '\\"')
    return f'399 mediacore "{text}"'


def response_peer(via: Via | None, source: Peer) -> Peer:
    """Where responses to a request from ``source`` go (RFC 3261 18.2.2, RFC 3581 4).

    Over TCP: back on the connection it came on. Over UDP: to the source
    address (the ``received`` we stamp), at the source port when the client
    asked with ``rport``, else at its sent-by port; ``maddr`` wins when given.
    """
    if source.transport == TCP or via is None:
        return source
    if via.maddr:
        return Peer(UDP, via.maddr, via.port or DEFAULT_SIP_PORT)
    if via.has_rport:
        return Peer(UDP, source.host, source.port)
    return Peer(UDP, source.host, via.port or DEFAULT_SIP_PORT)


def stamp_via(request: sip.Request, source: Peer) -> None:
    """Add ``received`` (18.2.1) and fill ``rport`` (RFC 3581) on the top Via."""
    via = request.top_via
    if via is None:
        return
    wants_rport = via.has_rport
    if via.host == source.host and not wants_rport:
        return
    params = [(name, value) for name, value in via.params
              if name.lower() not in ("received", "rport")]
    params.append(("received", source.host))
    rport = str(source.port)
    if wants_rport:
        params.append(("rport", rport))
    stamped = Via._new(via.protocol, via.transport, via.host, via.port, "", tuple(params))
    text = str(stamped)
    # What Via() checks: it must read back. Everything but received and rport
    # was read from the request already, so parse_via's pattern is enough
    # when it fits and rport is a number (the one check parse_via adds).
    if _VIA_PATTERN(text) is None or not (rport.isascii() and rport.isdigit()):
        try:
            parse_via(text)
        except sip.ParseError:
            _stamp_via_slowly(request, params)  # raises ValueError, as it always did
            return
    headers = request.headers
    lines = headers._values("via")
    first = lines[0]
    if "," in first:
        parts = split_list(first)
        parts[0] = text
        first = ", ".join(parts)
    else:
        first = text
    _replace_first_via(headers, first)  # the other lines were checked when parsed
    headers._cache["via"] = stamped


def _stamp_via_slowly(request: sip.Request, params: list[tuple[str, str | None]]) -> None:
    via = request.top_via
    assert via is not None
    stamped = Via(via.transport, via.host, via.port, tuple(params), protocol=via.protocol)
    headers = request.headers
    first = split_list(headers.get_lines("via")[0])
    first[0] = str(stamped)
    _replace_first_via(headers, ", ".join(first))
    headers._cache["via"] = stamped


def _replace_first_via(headers: sip.Headers, line: str) -> None:
    """Put ``line`` in place of the first Via line, where it stands: responses
    copy the Vias in the order and place the request had them."""
    items = list(headers._items)
    at = next(i for i, item in enumerate(items) if item[2] == "via")
    items[at] = (items[at][0], line, "via")
    headers._items = items
    # Only the first Via value changed, in place: the parse-time lookup index
    # stays right with that one value replaced (a new list: it is shared), so
    # it is not rebuilt for every request received.
    index = headers._index
    if index is not None:
        index = dict(index)
        index["via"] = [line, *index["via"][1:]]
        headers._index = index
    cache = headers._cache
    cache.pop("via", None)
    cache.pop("via*", None)


class SipEndpoint:
    """One SIP endpoint: parse, match, answer what the core answers, report the rest."""

    def __init__(self, config: SipConfig) -> None:
        self.config = config
        #: Our Server/User-Agent value (``sip.user_agent``); "" sends none.
        self.user_agent = config.user_agent
        self.limits = sip.ParserLimits(
            max_message_size=config.limits.max_message_size,
            max_headers=config.limits.max_headers,
            max_line_length=config.limits.max_line_length,
        )
        self.transactions = TransactionLayer(config.timers)
        #: Set while draining: new INVITEs, and OPTIONS outside a dialog, get
        #: 503 with Retry-After.
        self.refuse_new_calls = False
        #: Set by the app while a call could not be recorded as it must be (the
        #: records journal is unwritable): why, e.g. "journal unwritable
        #: (disk-full)". New INVITEs get 503 with Retry-After and this in a
        #: Warning; OPTIONS keeps its 200 (the process is alive; /readyz tells
        #: the rest). Empty: calls are taken. Separate from draining, which ends.
        self.unavailable = ""
        self.counters = SipCounters()
        self.screen = UntrustedScreen(config, self.counters, COUNTED_METHODS)
        self.trusted = self.screen.trusted

    def agent_header(self, name: str) -> list[tuple[str, str]]:
        """``[(name, user_agent)]`` for a Server or User-Agent header, or [] when
        ``sip.user_agent`` is empty (no header at all)."""
        return [(name, self.user_agent)] if self.user_agent else []

    # --- input -----------------------------------------------------------------

    def receive(self, data: bytes, peer: Peer, now: float) -> list[Output]:
        if not self.trusted(peer.host):
            answer = self.screen.screen(data, peer, now)
            if answer is not None:
                return [Transmit(answer, peer)] if answer else []
        counters = self.counters
        try:
            message = sip.parse(data, self.limits)
        except sip.ParseError as error:
            counters.malformed += 1
            return self._refuse_unparsable(error, peer)
        if isinstance(message, sip.Request):
            return self._receive_request(message, peer, now)
        problem = sip.check_response(message)
        if problem is not None:
            counters.malformed += 1
            log.info("dropping response from %s: %s", peer, problem)
            return []
        received = counters.responses_received
        key = (counted_method(message.cseq.method), message.status)
        received[key] = received.get(key, 0) + 1
        return self._outputs(self.transactions.receive_response(message, now))

    def refuse_stream(self, data: bytes, error: sip.ParseError, peer: Peer) -> list[Output]:
        """Answer a stream message that could not be framed, if its head is a request
        we can address; the transport closes the connection after this."""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            log.info("closing %s: %s %s", peer, error.status, error.reason)
            return []
        try:
            parsed = sip.parse(data[:end + 4], self.limits)
            headers, is_request = parsed.headers, isinstance(parsed, sip.Request)
        except sip.ParseError as inner:
            headers, is_request = inner.headers, inner.is_request
        framing = sip.ParseError(error.status, error.reason, is_request=is_request,
                                 headers=headers)
        return self._refuse_unparsable(framing, peer)

    def _refuse_unparsable(self, error: sip.ParseError, peer: Peer) -> list[Output]:
        response = sip.make_error_response(error)
        if response is None:
            log.info("dropping unparsable message from %s: %s %s", peer, error.status,
                     error.reason)
            return []
        via = None
        if error.headers is not None:
            try:
                via = parse_via(split_list(error.headers.get("via"))[0])
            except (sip.ParseError, IndexError, TypeError):
                via = None
        log.info("answering unparsable request from %s with %s %s", peer, error.status,
                 error.reason)
        if self.user_agent:
            response.headers.add("Server", self.user_agent)
        response.headers.add("Warning", warning(error.reason))
        sent = self.counters.responses_sent
        key = ("other", response.status)
        sent[key] = sent.get(key, 0) + 1
        return [Transmit(sip.serialize(response), response_peer(via, peer))]

    def _receive_request(self, request: sip.Request, peer: Peer, now: float) -> list[Output]:
        received = self.counters.requests_received
        if (request.to_tag is None and request.method not in ("ACK", "CANCEL")
                and not self.trusted(peer.host)):
            # What the screen could not tell without the parser (folded lines,
            # a tag in a display name or URI): refused the same way, statelessly.
            answer = self.screen.refuse_parsed(request, peer, now)
            return [Transmit(answer, peer)] if answer else []
        method = counted_method(request.method)
        received[method] = received.get(method, 0) + 1
        stamp_via(request, peer)
        reliable = peer.transport == TCP
        destination = response_peer(request.top_via, peer)
        try:
            actions = self.transactions.receive_request(request, destination, now,
                                                        reliable=reliable)
        except sip.ParseError as error:
            # Matching needs Call-ID, CSeq, From and To; without them there is
            # no transaction to answer from, so the 400 goes out statelessly.
            error.is_request, error.headers = True, request.headers
            return self._refuse_unparsable(error, peer)
        outputs = self._outputs(actions, peer)
        for index, output in enumerate(outputs):
            if _is_new_request(output):
                outputs[index:index + 1] = self._admit(output, now)  # type: ignore[arg-type]
                break
        return outputs

    def _admit(self, received: RequestReceived, now: float) -> list[Output]:
        """The UAS core checks of a new request (8.2), before the TU sees it."""
        request, transaction = received.request, received.transaction
        assert transaction is not None
        method = request.method
        rejection = sip.check_request(
            request,
            methods=ALLOWED_METHODS,
            supported=SUPPORTED,
            accept=_acceptable_bodies(request),
            forwarding=method == "INVITE",
        )
        call_id = request.headers.get("call-id", "-")
        if rejection is not None:
            log.info("call %s: %s from %s answered %s %s", call_id, method, received.peer,
                     rejection.status, rejection.reason)
            headers = rejection.headers
            if rejection.status == 400:
                headers = (*headers, ("Warning", warning(rejection.reason)))
            return self.respond(transaction, rejection.status, rejection.reason,
                                headers=headers, now=now)
        if method == "INVITE" and request.to_tag is None:
            # A new call. (From an untrusted source it never got here: the
            # screen refused it.) A re-INVITE (To tag) belongs to a live call
            # and goes on while draining or while the journal is unwritable:
            # refusing a session refresh would cut the call a drain waits for.
            if self.refuse_new_calls:
                self._count_refusal("draining")
                return self.respond(transaction, 503, "Service Unavailable",
                                    headers=(("Retry-After", "30"),), now=now)
            if self.unavailable:
                self._count_refusal("unavailable")
                return self.respond(transaction, 503, "Service Unavailable", now=now, headers=(
                    ("Retry-After", str(UNAVAILABLE_RETRY_AFTER)),
                    ("Warning", warning(self.unavailable))))
        if method == "INVITE":
            return [*self.respond(transaction, 100, "Trying", now=now), received]
        if method == "OPTIONS" and request.to_tag is None:
            if self.refuse_new_calls:
                # A dispatcher's probe: "not this node for new calls" (in-dialog
                # OPTIONS still get 200 from the B2BUA, the call goes on).
                return self.respond(transaction, 503, "Service Unavailable",
                                    headers=(("Retry-After", "30"),), now=now)
            return self.respond(transaction, 200, "OK", now=now, headers=(
                ("Allow", ", ".join(ALLOWED_METHODS)),
                ("Accept", ", ".join(ACCEPTED_BODIES)),
                ("Supported", ", ".join(SUPPORTED)),
            ))
        return [received]

    # --- output ------------------------------------------------------------------

    def respond(
        self,
        transaction: ServerTransaction,
        status: int,
        reason: str | None = None,
        *,
        now: float,
        headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
        body: bytes = b"",
        to_tag: str | None = None,
    ) -> list[Output]:
        """Answer the request of ``transaction``; a tag is added to final responses.

        Without ``to_tag`` a final response gets a fresh one: every response
        that may create a dialog, or ends one that never was, needs a tag of
        ours (8.2.6.2).
        """
        if transaction.answered:
            raise TransactionStateError(f"request already answered; cannot send {status}")
        if to_tag is None and status > 100:
            to_tag = _tag_for(transaction)
        response = sip.make_response(
            transaction.request, status, reason, to_tag=to_tag,
            extra_headers=[*self.agent_header("Server"), *headers], body=body,
        )
        return self.send_response(transaction, response, now)

    def send_response(
        self, transaction: ServerTransaction, response: sip.Response, now: float
    ) -> list[Output]:
        # The request is let go after the final response (a 2xx repeated in
        # Accepted has none): then the CSeq says which method it answers.
        answered = transaction.request
        method = answered.method if answered is not None else response.cseq.method
        sent = self.counters.responses_sent
        key = (counted_method(method), response.status)
        sent[key] = sent.get(key, 0) + 1
        return self._outputs(self.transactions.send_response(transaction, response, now))

    def send_request(
        self, request: sip.Request, peer: Peer, now: float
    ) -> tuple[ClientTransaction, list[Output]]:
        transaction, actions = self.transactions.send_request(
            request, peer, now, reliable=peer.transport == TCP
        )
        self._count_request_sent(request.method)
        return transaction, self._outputs(actions)

    def find_invite(self, cancel: sip.Request) -> ServerInviteTransaction | None:
        return self.transactions.find_invite_for_cancel(cancel)

    def send_stateless(self, message: sip.Message, peer: Peer) -> Transmit:
        """An ACK for a 2xx, or a 2xx re-sent by the TU: no transaction of its own."""
        if isinstance(message, sip.Request):
            self._count_request_sent(message.method)
        return Transmit(sip.serialize(message), peer)

    def _count_request_sent(self, method: str) -> None:
        sent = self.counters.requests_sent
        key = counted_method(method)
        sent[key] = sent.get(key, 0) + 1

    def _count_refusal(self, reason: str) -> None:
        refused = self.counters.calls_refused
        refused[reason] = refused.get(reason, 0) + 1

    def flush_refusals(self, now: float) -> None:
        """Log the refusals' summary now, whatever window is open (at shutdown)."""
        self.screen.handle_timer(now, force=True)

    # --- time ----------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        deadline = self.transactions.next_deadline()
        summary = self.screen.next_deadline()
        if summary is not None and (deadline is None or summary < deadline):
            return summary
        return deadline

    def handle_timer(self, now: float) -> list[Output]:
        self.screen.handle_timer(now)  # the refusals' summary line, once a minute
        actions = self.transactions.handle_timer(now)
        # Whatever a timer sends is a retransmission (A, E, G); timeouts are
        # counted in _outputs.
        resent = sum(1 for action in actions if type(action) is Send)
        if resent:
            self.counters.retransmissions += resent
        return self._outputs(actions)

    # --- plumbing --------------------------------------------------------------------

    def _outputs(self, actions: list[Action], source: Peer | None = None) -> list[Output]:
        """Transaction actions as the edge and the TU want them; ``source`` is
        where a received request came from."""
        outputs: list[Output] = []
        for action in actions:
            if isinstance(action, Send):
                outputs.append(Transmit(sip.serialize(action.message), action.destination))
            elif isinstance(action, Deliver):
                if isinstance(action.message, sip.Request):
                    assert source is not None
                    outputs.append(RequestReceived(
                        action.message, action.transaction, source))  # type: ignore[arg-type]
                else:
                    outputs.append(ResponseReceived(
                        action.message, action.transaction))  # type: ignore[arg-type]
            elif isinstance(action, Timeout):
                timeouts = self.counters.timeouts
                timeouts[action.timer] = timeouts.get(action.timer, 0) + 1
                outputs.append(TransactionTimedOut(action.transaction, action.timer))
        return outputs


def _acceptable_bodies(request: sip.Request) -> tuple[str, ...]:
    """INFO bodies (DTMF relay, media control) go on to the other leg untouched,
    whatever their type; every other body must be something we read."""
    content_type = request.content_type if request.method == "INFO" else None
    if content_type is not None:
        return (*ACCEPTED_BODIES, content_type.mime)
    return ACCEPTED_BODIES


def _is_new_request(output: Output) -> bool:
    """A request that just opened its server transaction (not an ACK, not a retransmission)."""
    return (
        isinstance(output, RequestReceived)
        and output.transaction is not None
        and output.transaction.request is output.request
        and output.request.method != "ACK"
    )


def _tag_for(transaction: ServerTransaction) -> str:
    """One To tag per server transaction, so all its responses carry the same."""
    if transaction.local_tag is None:
        transaction.local_tag = new_tag()
    return transaction.local_tag
