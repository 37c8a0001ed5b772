"""Loop detection for a B2BUA, sans-IO: what we mark on outbound INVITEs and find on inbound ones.

A proxy finds a loop by its own Via in a request that comes back unchanged
(RFC 3261 16.3 step 4). A B2BUA starts a new Via, a new Call-ID and new
tags on every outbound leg, so what a proxy relies on does not survive a
hop through another B2BUA (RFC 7332 explains the problem), and Max-Forwards,
which we copy minus one, takes 70 hops (70 calls, 140 RTP port pairs, 70
CDRs) to stop a loop. So every outbound INVITE carries a *loop token*: a
short hash of this node's identity (records node, advertised address, SIP
port: two processes on one host differ) and of the service number the call
was dialled to. It rides in two places, each surviving different hops:

* the branch of our Via, ``z9hG4bKmc<token><random>``: proxies keep the Vias
  below their own, so an INVITE that a proxy or carrier routes straight back
  to us still shows it, and so does one we send to ourselves;
* the ``Mediacore-Loop`` header, a list of tokens: proxies pass unknown
  headers on, and every mediacore node copies the list it received (bounded)
  and adds its own token, so a loop through several nodes is seen too.

An inbound INVITE that already holds the token its own call would send is a
loop: the same number reached through this node again would be forwarded the
same way again, for ever. It gets 482 before any call exists. A chain that
comes back for a *different* number is a spiral (a number whose target is
another number we serve): it goes on, and with each number's token added
it stops at the first repeat. Where neither survives (an SBC that strips
everything), Max-Forwards is the bound.
"""

from __future__ import annotations

import hashlib
import re

from mediacore.randomness import random_hex
from mediacore.sip import message as sip
from mediacore.sip.headers import MAGIC_COOKIE
from mediacore.sip.uri import SipURI

__all__ = [
    "LOOP_HEADER",
    "MAX_TOKENS",
    "has_looped",
    "loop_branch",
    "loop_token",
    "node_key",
    "onward_marker",
    "uri_destination",
]

#: The header that lists the loop tokens of the mediacore nodes a call passed.
LOOP_HEADER = "Mediacore-Loop"
#: How many tokens we carry on; the oldest are dropped first (Max-Forwards
#: bounds longer chains anyway). Also bounds what we read of a hostile header.
MAX_TOKENS = 16
#: What follows the RFC 3261 magic cookie in the branch of our outbound INVITEs.
BRANCH_MAGIC = "mc"
TOKEN_LENGTH = 12  # hex digits: 48 bits, no accidental collision in any chain
_TOKEN = re.compile(rf"[0-9a-f]{{{TOKEN_LENGTH}}}")
_PREFIX = MAGIC_COOKIE + BRANCH_MAGIC
DEFAULT_PORT = 5060
_READ_PARTS = 4 * MAX_TOKENS  # of a header value, before the malformed ones are dropped


def node_key(*identity: str) -> bytes:
    """The secret-free key of one node, from what tells it from other nodes
    (``records.node``, the advertised address, the SIP port)."""
    return hashlib.sha256("\0".join(("mediacore-loop", *identity)).encode()).digest()


def loop_token(key: bytes, number: str) -> str:
    """The token this node puts on INVITEs for calls to ``number`` (E.164, normalised)."""
    return hashlib.blake2s(number.encode(), key=key[:32], digest_size=8).hexdigest()[
        :TOKEN_LENGTH]


def loop_branch(token: str) -> str:
    """A Via branch (RFC 3261 8.1.1.7, unique per transaction) that carries ``token``."""
    return _PREFIX + token + random_hex(5)


def _header_tokens(request: sip.Request) -> list[str]:
    """The last MAX_TOKENS well-formed tokens of the request's Mediacore-Loop
    header; anything else in it is ignored, and at most _READ_PARTS are read."""
    parts = [part for line in request.headers.get_lines(LOOP_HEADER)[-_READ_PARTS:]
             for part in line.split(",")[-_READ_PARTS:]]
    found = [token for part in parts[-_READ_PARTS:] if _TOKEN.fullmatch(token := part.strip())]
    return found[-MAX_TOKENS:]


def _via_tokens(request: sip.Request) -> list[str]:
    # Almost no INVITE carries a branch of ours: a substring test on the raw
    # lines spares parsing every Via, which is most of what the check costs.
    if not any(_PREFIX in line for line in request.headers.get_lines("Via")):
        return []
    tokens = []
    try:
        vias = request.vias
    except sip.ParseError:
        return []
    for via in vias:
        branch = via.branch or ""
        if branch.startswith(_PREFIX):
            token = branch[len(_PREFIX):len(_PREFIX) + TOKEN_LENGTH]
            if _TOKEN.fullmatch(token):
                tokens.append(token)
    return tokens


def has_looped(request: sip.Request, token: str) -> bool:
    """Whether ``request`` has passed this node before for the same number:
    ``token`` in one of its Via branches or in its Mediacore-Loop header."""
    return token in _via_tokens(request) or token in _header_tokens(request)


def onward_marker(request: sip.Request, token: str) -> str:
    """The Mediacore-Loop value for the INVITE we send on for ``request``:
    the tokens it came with (the last MAX_TOKENS - 1) and ours."""
    carried = [t for t in _header_tokens(request) if t != token]
    return ", ".join([*carried[-(MAX_TOKENS - 1):], token])


def uri_destination(uri: SipURI) -> tuple[str, str, int]:
    """``(transport, host, port)`` that a request to ``uri`` goes to: the host as
    written (targets and trunks are IP addresses, no DNS on the signalling
    path), port 5060 unless given, ``sips:`` over TCP (TLS is not offered yet).

    One rule for sending (``calls.call.next_hop``) and for the config check
    that a target is not this server itself, so that the two cannot disagree.
    """
    transport = (uri.param("transport") or "udp").lower()
    if uri.scheme == "sips":
        transport = "tcp"
    if transport not in ("udp", "tcp"):
        transport = "udp"
    return transport, uri.host, uri.port or DEFAULT_PORT
