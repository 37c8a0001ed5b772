"""Which sources each media leg of a call accepts: config and SIP peers to a policy.

The relay engine enforces the rule per packet (mediacore/rtp/engine.py,
"Where a leg's packets may come from"); this module decides, per call and
leg, which mode the rule runs in and which hosts it may latch onto. Pure
functions of the config and the call's SIP messages: no sockets, no clock.

The mapping:

- the mode is the number's ``media_latching`` when set (both legs of its
  calls), else ``rtp.latching`` (``strict`` by default);
- a ``nat`` leg may latch onto the host of its SDP address (the engine
  knows that one) and onto its SIP signalling peer: for the caller's leg
  the source of the INVITE (the top Via's ``received``, else its host),
  for a target's leg the host we send its INVITE to. A NATed phone or
  trunk sends its media from the public address its SIP comes from; a
  third host is neither, so it cannot win the race to the first packet;
- ``rtp.relatch_after`` (0: off) is how long a nat leg's latched source
  must be silent before another source on those hosts may take it over.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mediacore.calls.media import Side
from mediacore.config import NumberConfig, RtpConfig
from mediacore.rtp.engine import Latching
from mediacore.sip import message as sip

if TYPE_CHECKING:
    from mediacore.calls.call import Call


@dataclass(frozen=True, slots=True)
class LegLatching:
    """One leg's policy, as EngineMedia hands it to ``Session.set_latching``."""

    mode: Latching = Latching.STRICT
    #: IP literals a nat leg may latch onto besides its SDP host (the SIP peer).
    hosts: tuple[str, ...] = ()
    #: Seconds of silence before a nat latch may move; None: never.
    relatch_after: float | None = None


def leg_latching(rtp: RtpConfig, number: NumberConfig | None,
                 signalling_host: str | None) -> LegLatching:
    """The policy of a leg of ``number``'s call whose SIP peer is ``signalling_host``.

    A strict leg needs no hosts: it accepts its SDP address only. A host
    that is not an IP literal is left out (it cannot be a packet's source).
    """
    mode = Latching(number.media_latching if number is not None and number.media_latching
                    else rtp.latching)
    if mode is Latching.STRICT:
        return LegLatching(Latching.STRICT)
    hosts = (signalling_host,) if signalling_host and _is_ip(signalling_host) else ()
    return LegLatching(mode, hosts, rtp.relatch_after or None)


def request_source_host(request: sip.Request) -> str | None:
    """Where ``request`` came from: the top Via's ``received``, else its sent-by host.

    The endpoint stamps ``received`` on every request whose Via host is not
    its source (RFC 3261 18.2.1), so this is the packet's source address.
    """
    via = request.top_via
    if via is None:
        return None
    return via.received or via.host


def call_leg_latching(rtp: RtpConfig, call: Call | None, side: Side) -> LegLatching:
    """The policy of ``side`` of ``call`` now (None: a call not known yet, the default).

    The caller's SIP peer is the INVITE's source; the target's is the next
    hop of the current outbound leg (re-evaluated for each target tried).
    """
    if call is None:
        return leg_latching(rtp, None, None)
    if side is Side.CALLER:
        host = request_source_host(call.invite)
    else:
        host = call.leg.peer.host if call.leg is not None else None
    return leg_latching(rtp, call.number, host)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
