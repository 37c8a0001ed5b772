"""RFC 3261 section 12 dialogs, sans-IO: state, not sockets.

A :class:`Dialog` is what two user agents agree on after a 1xx-with-tag or a
2xx to an INVITE: who is who (Call-ID and tags), where to send the next
request (the remote target and the route set), and the CSeq counters that
order requests in each direction. The B2BUA keeps one per leg and builds
every in-dialog request (ACK for 2xx, BYE, re-INVITE, UPDATE, INFO) here,
so that Route, R-URI and CSeq are right in one place.

Route sets are fixed when the dialog is created (12.1.1, 12.1.2); the
remote target is refreshed by target-refresh requests and their 2xx (12.2.1.2,
12.2.2). Strict routers (a first route without ``lr``) get the RFC 3261
12.2.1.1 treatment: R-URI the first route, remote target appended.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from mediacore.randomness import random_hex
from mediacore.sip import message as sip
from mediacore.sip.uri import NameAddr, SipURI, parse_name_addr

#: Requests that refresh the remote target (RFC 3261 12.2, RFC 3311 UPDATE).
TARGET_REFRESH = frozenset({"INVITE", "UPDATE"})


class DialogState(Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class DialogError(Exception):
    """A request that the dialog must refuse; ``status`` says with what."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


def new_tag() -> str:
    """A From/To tag: random, 64 bits, token characters only (19.3)."""
    return random_hex(8)


def new_branch() -> str:
    """A Via branch with the RFC 3261 magic cookie, unique per transaction (8.1.1.7)."""
    return "z9hG4bK" + random_hex(10)


def new_call_id(host: str) -> str:
    return f"{random_hex(12)}@{host}"


@dataclass
class Dialog:
    """One side's view of a dialog. ``local`` is us, ``remote`` the peer."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_party: NameAddr  # From of our requests (without tag)
    remote_party: NameAddr  # To of our requests (without tag)
    remote_target: str  # a URI, from the peer's Contact
    route_set: list[str] = field(default_factory=list)  # name-addr strings, in order
    local_cseq: int = 0
    remote_cseq: int | None = None
    state: DialogState = DialogState.EARLY
    secure: bool = False

    @property
    def id(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    # --- creation ------------------------------------------------------------

    @classmethod
    def from_uas(cls, request: sip.Request, response: sip.Response) -> Dialog:
        """The dialog a UAS enters by answering ``request`` with ``response`` (12.1.1).

        The route set is the request's Record-Route in order; the remote
        target its Contact. ``response`` must carry our To tag.
        """
        to_tag = response.to_tag
        if to_tag is None:
            raise ValueError("a dialog-creating response needs a To tag")
        contact = request.contact
        if contact is None:
            raise DialogError(400, "Missing Contact header in a dialog-creating request")
        return cls(
            call_id=request.call_id,
            local_tag=to_tag,
            remote_tag=request.from_tag or "",
            local_party=_without_tag(request.to),
            remote_party=_without_tag(request.from_),
            remote_target=contact.uri_text,
            route_set=[str(route) for route in request.record_routes],
            local_cseq=0,
            remote_cseq=request.cseq.number,
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
            secure=str(request.uri).startswith("sips:"),
        )

    @classmethod
    def from_uac(cls, request: sip.Request, response: sip.Response) -> Dialog:
        """The dialog a UAC enters on a 1xx-with-tag or 2xx to ``request`` (12.1.2).

        The route set is the response's Record-Route reversed; the remote
        target its Contact (an early 1xx may lack one: then the R-URI).
        """
        remote_tag = response.to_tag
        if remote_tag is None:
            raise ValueError("only a response with a To tag creates a dialog")
        contact = response.contact
        return cls(
            call_id=request.call_id,
            local_tag=request.from_tag or "",
            remote_tag=remote_tag,
            local_party=_without_tag(request.from_),
            remote_party=_without_tag(request.to),
            remote_target=contact.uri_text if contact is not None else str(request.uri),
            route_set=[str(route) for route in reversed(response.record_routes)],
            local_cseq=request.cseq.number,
            remote_cseq=None,
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
            secure=str(request.uri).startswith("sips:"),
        )

    # --- requests we send ------------------------------------------------------

    def create_request(
        self,
        method: str,
        *,
        via: str,
        extra_headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
        cseq: int | None = None,
    ) -> sip.Request:
        """A request inside this dialog (12.2.1.1).

        ``via`` is our complete Via value with a fresh branch. CSeq counts
        up for every request except ACK and CANCEL, which reuse the number
        of the INVITE they belong to (pass it as ``cseq``).
        """
        if self.state is DialogState.TERMINATED:
            raise DialogError(481, "Call/Transaction Does Not Exist")
        if method in ("ACK", "CANCEL"):
            if cseq is None:
                raise ValueError(f"{method} reuses the INVITE's CSeq: pass cseq=")
            number = cseq
        else:
            self.local_cseq += 1
            number = self.local_cseq
        target, routes = self._request_target()
        headers: list[tuple[str, str]] = [("Via", via), ("Max-Forwards", "70")]
        headers += [("Route", route) for route in routes]
        headers += [
            ("From", f"{self.local_party};tag={self.local_tag}"),
            ("To", f"{self.remote_party};tag={self.remote_tag}"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{number} {method}"),
            *extra_headers,
        ]
        return sip.Request(method, target, headers, body)

    def _request_target(self) -> tuple[str, list[str]]:
        """R-URI and Route values: loose routing, or the strict-router rewrite."""
        if not self.route_set:
            return self.remote_target, []
        first = parse_name_addr(self.route_set[0])
        uri = first.uri
        if isinstance(uri, SipURI) and uri.has_param("lr"):
            return self.remote_target, list(self.route_set)
        # Strict router: it gets the R-URI, the remote target rides last.
        return first.uri_text, [*self.route_set[1:], f"<{self.remote_target}>"]

    # --- what we receive -----------------------------------------------------------

    def receive_request(self, request: sip.Request) -> None:
        """Check and absorb an in-dialog request from the peer (12.2.2).

        A CSeq lower than the last one is out of order: 500 (RFC 3261 says
        so; the peer retries). ACK and CANCEL carry the INVITE's number and
        are not ordered. A target refresh updates the remote target.
        """
        if self.state is DialogState.TERMINATED:
            raise DialogError(481, "Call/Transaction Does Not Exist")
        number = request.cseq.number
        if request.method not in ("ACK", "CANCEL"):
            if self.remote_cseq is not None and number <= self.remote_cseq:
                # Equal is a retransmission, which the transaction layer absorbs;
                # reaching us it is a new request reusing a number.
                raise DialogError(500, "CSeq out of order")
            self.remote_cseq = number
        if request.method in TARGET_REFRESH and request.contact is not None:
            self.remote_target = request.contact.uri_text

    def receive_response(self, request: sip.Request, response: sip.Response) -> None:
        """Confirm on 2xx, refresh the target on a 2xx to a target refresh, end on 481/408."""
        status = response.status
        if 200 <= status < 300:
            if request.method == "INVITE" and self.state is DialogState.EARLY:
                self.state = DialogState.CONFIRMED
            if request.method in TARGET_REFRESH and response.contact is not None:
                self.remote_target = response.contact.uri_text
        elif status in (481, 408) and request.method != "INVITE":
            # 12.2.1.2: the dialog is gone at the other end.
            self.state = DialogState.TERMINATED

    def terminate(self) -> None:
        self.state = DialogState.TERMINATED

    def matches(self, message: sip.Message, *, incoming: bool) -> bool:
        """Whether ``message`` belongs here (12.2.2): Call-ID and both tags."""
        if message.call_id != self.call_id:
            return False
        if isinstance(message, sip.Request) == incoming:
            # Requests from the peer and our responses to them: From is the
            # peer's. Our requests and the peer's responses: From is ours.
            return message.from_tag == self.remote_tag and message.to_tag == self.local_tag
        return message.from_tag == self.local_tag and message.to_tag == self.remote_tag


def _without_tag(party: NameAddr) -> NameAddr:
    params = tuple(p for p in party.params if p[0].lower() != "tag")
    return NameAddr(party.uri, party.display_name, params)

