"""The transaction user above the SIP endpoint: what happens to each request.

This is the first step of the B2BUA (see the call-control issue): it looks
the dialled number up in the number plan and answers what it can answer
without media. A known number is answered 480 Temporarily Unavailable
until forwarding exists, with a Warning that says so, rather than pretending
to connect; an unknown number gets 404. In-dialog requests for dialogs we do
not have get 481 (RFC 3261 12.2.2), an unmatched CANCEL 481 (9.2).
"""

from __future__ import annotations

import logging

from mediacore.config import Config
from mediacore.sip.endpoint import (
    Event,
    Output,
    RequestReceived,
    ResponseReceived,
    SipEndpoint,
    TransactionTimedOut,
)
from mediacore.sip.uri import SipURI, TelURI

log = logging.getLogger("mediacore.calls")


def dialled_number(request_uri: object) -> str | None:
    """The number as dialled: the user part of a sip: R-URI, or a tel: number."""
    if isinstance(request_uri, SipURI):
        return request_uri.user
    if isinstance(request_uri, TelURI):
        return request_uri.number
    return None


class B2BUA:
    """Decides what each request gets. Sans-IO: events in, outputs out."""

    def __init__(self, config: Config, endpoint: SipEndpoint) -> None:
        self.config = config
        self.endpoint = endpoint

    def handle(self, event: Event, now: float) -> list[Output]:
        if isinstance(event, RequestReceived):
            return self._request(event, now)
        if isinstance(event, ResponseReceived | TransactionTimedOut):
            return []  # no client transactions yet
        return []

    def _request(self, event: RequestReceived, now: float) -> list[Output]:
        request, transaction = event.request, event.transaction
        if transaction is None:
            return []  # an ACK for a 2xx of ours: nothing to confirm yet
        call_id = request.call_id
        if request.method == "CANCEL":
            invite = self.endpoint.find_invite(request)
            status = 200 if invite is not None else 481
            return self.endpoint.respond(transaction, status, now=now)
        if request.to_tag is not None:
            log.info("call %s: %s for an unknown dialog: 481", call_id, request.method)
            return self.endpoint.respond(transaction, 481, now=now)
        if request.method != "INVITE":
            return self.endpoint.respond(transaction, 481, now=now)
        number = dialled_number(request.uri)
        plan = self.config.number(number) if number else None
        if plan is None:
            log.info("call %s: INVITE for unknown number %s: 404", call_id, number)
            return self.endpoint.respond(transaction, 404, "Not Found", now=now)
        log.info("call %s: INVITE for %s (owner %s): forwarding not built yet, 480",
                 call_id, plan.number, plan.owner)
        return self.endpoint.respond(
            transaction, 480, "Temporarily Unavailable", now=now,
            headers=(("Warning", '399 mediacore "call forwarding is not available yet"'),),
        )
