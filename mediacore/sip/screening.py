"""The untrusted-source screen: what a message from outside ``trusted_sources`` costs.

A scanner sending 10,000 INVITEs a second used to get the whole treatment
for each: a full parse, a server transaction kept for 32 s (Timer H, since a
scanner never ACKs), a 100 Trying, a 403 retransmitted by Timer G, and a log
line. 27 of 40 carrier calls got through, setup took 3.4 s, the log grew
11 MB per 100,000 messages and the transactions held 34 MB (issue 14).

Here such a message costs a dict lookup of its source address and a look at
its start line and its To header (:func:`glance`), not a parse:

* a request outside a dialog (no To tag) other than ACK and CANCEL, from an
  untrusted source, is refused. With ``sip.untrusted = "403"`` (the
  default) it is answered ``403 Forbidden`` *statelessly*: the answer is
  built from the request's own Via, From, To, Call-ID and CSeq lines,
  keeps no transaction, and is sent back to the address and port it came
  from (never to a Via ``maddr``), no larger than the request (no
  amplification); a retransmission simply gets another 403. Answers are
  rate-limited per source address and in all (:class:`TokenBuckets`).
  With ``"drop"`` nothing is answered. OPTIONS is refused like INVITE:
  dispatchers that probe us are carriers' and belong in trusted_sources;
  scanners find servers by OPTIONS (sipvicious' svmap);
* the ACK of one of those 403s (it carries our refusal tag) is absorbed;
* a datagram without a SIP start line is dropped unanswered;
* everything else goes on to the full path: responses (from targets, which
  need not be trusted), requests in a dialog (the dialog layer decides),
  CANCEL, and anything the glance cannot be sure of (folded headers). The
  full path refuses an untrusted out-of-dialog request the same way after
  the parse (:meth:`UntrustedScreen.refuse_parsed`), so the glance only
  ever decides what is cheap, never what is allowed.

Refusals are counted by reason (metrics) and logged as they deserve: the
first refusal of a source in a minute at once (up to ``LISTED`` sources),
the rest as one summary line a minute with the busiest sources
(:class:`SourceTally`). No caller number is logged: the From of an untrusted
request is never read.

Sans-IO: bytes, a peer and ``now`` in; bytes to send back out. The endpoint
calls it before the parser; the summary is due at :meth:`next_deadline`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

from mediacore.config import Network, SipConfig, host_in_networks
from mediacore.ratelimit import SourceTally, TallySummary, TokenBuckets
from mediacore.sip import message as sip
from mediacore.sip.dialog import new_tag

if TYPE_CHECKING:
    from mediacore.sip.endpoint import SipCounters
    from mediacore.sip.transport import Peer

log = logging.getLogger("mediacore.sip.screen")

#: Sources whose first refusal in a window is logged at once, and the
#: number of busiest sources a summary names.
LISTED = 10
#: Seconds per summary window ("count per source per minute").
SUMMARY_INTERVAL = 60.0
#: Sources counted one by one per window; more are summed as "others".
TRACKED_SOURCES = 1024
#: Source addresses with an answer bucket; a new one evicts the least recent.
BUCKETS = 4096
#: Trust decisions kept per source address (the cache is cleared when full).
TRUST_CACHE = 4096

#: Reasons of refused messages (mediacore_sip_refused_messages_total):
#: an out-of-dialog request from an untrusted source, a datagram from one
#: without a SIP start line, the ACK of one of our stateless 403s.
REFUSAL_REASONS = ("untrusted", "unreadable", "refusal-ack")
#: What an untrusted request's answer became (..._refusal_answers_total).
ANSWER_OUTCOMES = ("sent", "rate-limited", "not-answered")

_TOKEN = re.compile(rb"[A-Za-z0-9.!%*_+`'~-]+")
_TAG = re.compile(rb";[ \t]*tag[ \t]*=[ \t]*([^; \t,>\r]*)")
_SIP20 = b" SIP/2.0"
_METHODS = frozenset((b"INVITE", b"ACK", b"CANCEL", b"BYE", b"OPTIONS", b"INFO", b"UPDATE",
                      b"REGISTER", b"SUBSCRIBE", b"NOTIFY", b"REFER", b"MESSAGE", b"PRACK",
                      b"PUBLISH"))

#: Header names (lower case, long and compact) copied into a stateless answer.
_COPIED = {b"via": b"Via", b"v": b"Via", b"from": b"From", b"f": b"From",
           b"to": b"To", b"t": b"To", b"call-id": b"Call-ID", b"i": b"Call-ID",
           b"cseq": b"CSeq"}
_NEEDED = frozenset(_COPIED.values())


class TrustedSources:
    """``host in trusted_sources``, cached per host string.

    ``ipaddress`` parses the address and tests each network on every call
    (microseconds); a flood repeats a handful of addresses, so the answer is
    kept, in at most ``size`` entries (cleared when full, so a spoofed-source
    flood costs the lookup and no memory).
    """

    def __init__(self, networks: Iterable[Network], size: int = TRUST_CACHE) -> None:
        self.networks = tuple(networks)
        self.size = size
        self._cache: dict[str, bool] = {}

    def __call__(self, host: str) -> bool:
        known = self._cache.get(host)
        if known is None:
            known = host_in_networks(host, self.networks)
            if len(self._cache) >= self.size:
                self._cache.clear()
            self._cache[host] = known
        return known


class Glance(NamedTuple):
    """What the start line and the To header say, without a parse.

    ``method`` is None for a response. ``to_tag`` is the To tag's value as
    sent (None: none found). ``line_end`` is the offset of the start line's
    CRLF. ``folded``: the To header line continues on the next line, where
    only the parser reads it right. (A NamedTuple: a frozen dataclass takes
    longer to build than the whole look takes.)
    """

    method: bytes | None
    to_tag: bytes | None
    line_end: int
    folded: bool = False


def glance(data: bytes) -> Glance | None:
    """A look at ``data``'s start line and To header; None: no SIP start line.

    Errs only one way: a tag it sees where the parser would see none (in a
    quoted display name, in the URI, in a body after a head without To)
    sends the message to the full path, which decides properly; it never
    misses a tag the parser would find, except in a folded To line, which it
    reports as ``folded``. It reads each byte about twice (a lower-case copy,
    one search that stops at the To line): every pass over a 900-byte
    INVITE costs most of a microsecond, and a flood pays it per message.
    """
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    line_end = data.find(b"\r\n", start)
    if line_end < 0:
        return None
    first = data[start:line_end]
    if first[:4].upper() == b"SIP/":
        return Glance(None, None, line_end)
    method, space, rest = first.partition(b" ")
    if not space or rest[-8:].upper() != _SIP20 or (
            method not in _METHODS and _TOKEN.fullmatch(method) is None):
        return None
    low = data.lower()
    at = low.find(b"\r\nt", line_end)
    while at >= 0:  # "\r\nto:" or "\r\nt:", spaces allowed before the colon
        colon = at + 3
        if low.startswith(b"o", colon):
            colon += 1
        while low.startswith(b" ", colon) or low.startswith(b"\t", colon):
            colon += 1
        if low.startswith(b":", colon):
            break
        at = low.find(b"\r\nt", at + 3)
    else:
        return Glance(method, None, line_end)
    value_end = low.find(b"\r\n", colon)
    if value_end < 0:
        value_end = len(low)
    folded = low.startswith(b" ", value_end + 2) or low.startswith(b"\t", value_end + 2)
    to_tag = None
    if low.find(b"tag", colon, value_end) >= 0:
        tag = _TAG.search(low, colon, value_end)
        if tag is not None:  # the value as sent: tags compare case-sensitively
            to_tag = data[tag.start(1):tag.end(1)]
    return Glance(method, to_tag, line_end, folded)


def stateless_answer(data: bytes, seen: Glance, status_line: bytes, tag: bytes,
                     extra: bytes = b"") -> bytes | None:
    """A response to the request in ``data``, from its own header lines.

    Via (every one, in order), From, To (with ``tag`` added), Call-ID and
    CSeq are copied as they came, the first of each (continuation lines
    joined); ``extra`` is more header lines (each ending in CRLF). None when
    one of them is missing: such a request cannot be matched to an answer,
    so it gets none.
    """
    head_end = data.find(b"\r\n\r\n", seen.line_end)
    if head_end < 0:
        head_end = len(data)
    copied: list[list[bytes]] = []
    found: set[bytes] = set()
    taking = False
    for line in data[seen.line_end + 2:head_end].split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if taking:
                copied[-1].append(line.strip(b" \t"))
            continue
        name, colon, value = line.partition(b":")
        canonical = _COPIED.get(name.rstrip(b" \t").lower()) if colon else None
        taking = canonical is not None and (canonical == b"Via" or canonical not in found)
        if taking:
            assert canonical is not None
            found.add(canonical)
            copied.append([canonical + b":", value.strip(b" \t")])
    if found != _NEEDED:
        return None
    lines = [status_line]
    for parts in copied:
        if parts[0] == b"To:":
            parts.append(b";tag=" + tag)
            lines.append(b"To: " + b" ".join(parts[1:-1]) + parts[-1])
        else:
            lines.append(b" ".join(parts))
    return b"\r\n".join(lines) + b"\r\n" + extra + b"Content-Length: 0\r\n\r\n"


class UntrustedScreen:
    """Decides, before any parse, what a message from an untrusted source costs.

    ``counters`` is the endpoint's :class:`~mediacore.sip.endpoint.SipCounters`:
    refusals are counted there by reason and by what the answer became, and
    refused requests as requests received (by method, ``methods`` being the
    names counted as themselves) and, for INVITEs, as calls refused.
    """

    def __init__(self, config: SipConfig, counters: SipCounters,
                 methods: Iterable[str] = ()) -> None:
        self.mode = config.untrusted
        self.counters = counters
        self.trusted = TrustedSources(config.trusted_sources)
        rate, total = config.untrusted_answer_rate, config.untrusted_answer_rate_total
        self.buckets = TokenBuckets(rate, max(1.0, 2 * rate), total_rate=total,
                                    total_burst=max(1.0, 2 * total), max_keys=BUCKETS)
        self.tally = SourceTally(interval=SUMMARY_INTERVAL, listed=LISTED,
                                 max_tracked=TRACKED_SOURCES)
        #: The To tag of every stateless refusal: its ACK is known by it.
        self.tag = new_tag()
        self._tag = self.tag.encode()
        self.user_agent = config.user_agent
        self._extra = f"Server: {self.user_agent}\r\n".encode() if self.user_agent else b""
        self._names = {name.encode(): name for name in methods}
        #: What the refusals of the open summary window got.
        self._window: dict[str, int] = {}

    # --- the cheap path ------------------------------------------------------------

    def screen(self, data: bytes, peer: Peer, now: float) -> bytes | None:
        """None: the message goes on to the full path. Otherwise it is refused
        here, and the result is what to send back to ``peer`` (b"": nothing)."""
        seen = glance(data)
        if seen is None:
            self._refused("unreadable", "a message without a SIP start line", peer, now)
            return b""
        method = seen.method
        if method is None:
            return None  # a response: the transaction layer matches it or drops it
        if seen.to_tag is not None:
            if method == b"ACK" and seen.to_tag == self._tag:
                refused = self.counters.messages_refused
                refused["refusal-ack"] = refused.get("refusal-ack", 0) + 1
                return b""
            return None  # in a dialog, or says so: the dialog layer decides
        if method == b"ACK" or method == b"CANCEL":
            return None
        if seen.folded:
            return None  # only the parser reads folded lines right
        name = self._names.get(method, "other")
        if not self._refuse_request(name, peer, now):
            return b""
        answer = stateless_answer(data, seen, b"SIP/2.0 403 Forbidden", self._tag, self._extra)
        if answer is None:
            return b""
        self._count_answer(name)
        return answer

    def refuse_parsed(self, request: sip.Request, peer: Peer, now: float) -> bytes:
        """The same refusal for an untrusted out-of-dialog request that needed
        the parser (folded lines, a tag the glance saw and the parser did not)."""
        name = self._names.get(request.method.encode(), "other")
        if not self._refuse_request(name, peer, now):
            return b""
        extra = [("Server", self.user_agent)] if self.user_agent else []
        response = sip.make_response(request, 403, "Forbidden", to_tag=self.tag,
                                     extra_headers=extra)
        self._count_answer(name)
        return sip.serialize(response)

    def _refuse_request(self, name: str, peer: Peer, now: float) -> bool:
        """Count one refused request; True when it is to be answered."""
        counters = self.counters
        received = counters.requests_received
        received[name] = received.get(name, 0) + 1
        if name == "INVITE":
            calls = counters.calls_refused
            calls["untrusted"] = calls.get("untrusted", 0) + 1
        if self.mode == "drop":
            outcome = "not-answered"
        elif self.buckets.allow(peer.host, now):
            outcome = "sent"
        else:
            outcome = "rate-limited"
        answers = counters.refusal_answers
        answers[outcome] = answers.get(outcome, 0) + 1
        self._refused("untrusted", name, peer, now, outcome)
        return outcome == "sent"

    def _count_answer(self, name: str) -> None:
        sent = self.counters.responses_sent
        key = (name, 403)
        sent[key] = sent.get(key, 0) + 1

    def _refused(self, reason: str, what: str, peer: Peer, now: float,
                 outcome: str = "unreadable") -> None:
        """Count one refusal by reason, tally its source, announce a new source."""
        refused = self.counters.messages_refused
        refused[reason] = refused.get(reason, 0) + 1
        window = self._window
        window[outcome] = window.get(outcome, 0) + 1
        if self.tally.add(peer.host, now):
            done = {"sent": "refused with 403", "rate-limited": "refused (403 rate-limited)",
                    "not-answered": "dropped (sip.untrusted = drop)",
                    "unreadable": "dropped"}[outcome]
            log.warning("call -: %s from untrusted source %s %s; refusals are summed up "
                        "every %.0f s", what, peer, done, SUMMARY_INTERVAL)

    # --- the summary -----------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self.tally.due()

    def handle_timer(self, now: float, *, force: bool = False) -> None:
        """Log the summary of a window that is due (``force``: whatever is open)."""
        due = self.tally.due()
        if due is None or (now < due and not force):
            return
        summary = self.tally.flush(now, force=force)
        window, self._window = self._window, {}
        if summary is not None:
            log.warning("%s", summary_line(summary, window))


_OUTCOME_WORDS = {"sent": "403 sent", "rate-limited": "403 rate-limited",
                  "not-answered": "dropped", "unreadable": "unreadable, dropped"}


def summary_line(summary: TallySummary, answers: dict[str, int]) -> str:
    """One line for a window of refusals: how many, what they got, from whom."""
    seconds = max(summary.ended - summary.started, 0.0)
    got = ", ".join(f"{_OUTCOME_WORDS.get(outcome, outcome)} {count:,}"
                    for outcome, count in answers.items() if count)
    top = ", ".join(f"{source} {count:,}" for source, count in summary.top)
    rest = summary.sources - len(summary.top)
    more = f", {rest:,} more sources" if rest > 0 else ""
    if summary.untracked:
        more += f", {summary.untracked:,} messages from sources not told apart"
    return (f"refused {summary.total:,} messages from {summary.sources:,} untrusted sources "
            f"in {seconds:.0f} s ({got}): {top}{more}")
