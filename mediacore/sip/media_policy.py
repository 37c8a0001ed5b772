"""Which session descriptions may aim our media, and where: the relay only sends to unicast peers.

A B2BUA that anchors media sends RTP wherever an SDP's ``c=`` and ``m=``
say. Read naively, that lets whoever writes the SDP aim a stream of our
packets at a multicast group (``c=IN IP4 224.0.0.1/127``), a broadcast
address, this host's own services on loopback, or another call's RTP port
on our own media address, and lets a description with 200 ``m=`` lines cost
an answer line each. So before a description is used (the caller's offer,
a target's answer, a re-INVITE's or UPDATE's offer, the answer to one),
:meth:`MediaPolicy.check` refuses, with the RFC 3261 20.43 warning code a
carrier's engineer can read in a trace:

* more than ``max_media`` media sections (399);
* a network type other than ``IN`` (300), an address type other than
  ``IP4``/``IP6``, an address that is not an IP literal of that type (no DNS
  on the media path) or a unicast address with a multicast ``/ttl`` (301);
* an address of a family our media plane does not serve, e.g. ``IP6`` when
  ``[rtp] address`` is IPv4 (301);
* multicast (330, "multicast not available");
* broadcast: ``255.255.255.255`` and the subnet broadcasts of this host that
  the edge found (399); other addresses nothing can be sent to (``0.x.x.x``
  other than ``0.0.0.0``, ``240.0.0.0/4``, IPv4-mapped IPv6) (399);
* loopback, unless the description came from a loopback peer (a carrier on
  another host has no business aiming our media at this host) (399).

Our own media address is not refused, not even at a port of our own RTP
range: a number whose target is another number on this node (a spiral,
mediacore.sip.loops) has its two calls' media meet exactly there, in the
offer of the second call and the answer of the first, and the first call
cannot tell. Packets that another call would aim at a leg are the RTP
engine's to refuse (strict sources: only what the leg's SDP signalled).

``0.0.0.0`` (and ``::``) is not refused: it is the RFC 2543 hold, "send me
nothing" (RFC 3264 8.4), and the call layer treats it as hold and never
aims the relay at it. Only streams that are in use (port not 0) are looked
at: a rejected stream is never sent to. ``a=rtcp`` addresses are not used
by the relay (RTCP goes to the RTP address, at the ``a=rtcp`` port).

Sans-IO: the host facts (broadcast addresses) come in from the edge.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

from mediacore.sip.sdp import MediaDescription, SdpError, SessionDescription

__all__ = ["MAX_MEDIA_SECTIONS", "MediaPolicy", "MediaRefused"]

#: The most m= lines we take in one description: audio, perhaps video, T.38
#: and a few more are what carriers send; hundreds are an attack on our parser
#: and answer, not a call.
MAX_MEDIA_SECTIONS = 8

#: RFC 3261 20.43 warn-codes used here.
INCOMPATIBLE_NETWORK_PROTOCOL = 300
INCOMPATIBLE_ADDRESS_FORMAT = 301
MULTICAST_NOT_AVAILABLE = 330
MISCELLANEOUS = 399

_LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_RESERVED = ipaddress.IPv4Network("240.0.0.0/4")


class MediaRefused(SdpError):
    """A description that cannot aim our media; the call layer answers 488 with
    :meth:`warning` in a Warning header (RFC 3261 20.43)."""

    def __init__(self, problem: str, code: int) -> None:
        super().__init__(problem)
        self.code = code

    def warning(self, agent: str = "mediacore") -> str:
        text = self.problem.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.code} {agent} "{text}"'


def sdp_warning(error: SdpError, agent: str = "mediacore") -> str:
    """The Warning value for any refused description: a policy refusal's own
    code, 399 for one that did not parse or had no codec we take."""
    if isinstance(error, MediaRefused):
        return error.warning(agent)
    return MediaRefused(str(error), MISCELLANEOUS).warning(agent)


@dataclass(frozen=True, slots=True)
class MediaPolicy:
    """Where our relay may send, from our media address and this host's networks."""

    #: ``[rtp] address``: its family is the one we serve.
    address: str
    #: Subnet broadcast addresses of this host (found by the edge; may be empty).
    broadcasts: frozenset[str] = frozenset()
    max_media: int = MAX_MEDIA_SECTIONS

    @property
    def version(self) -> int:
        address = _address(self.address)
        return 4 if address is None else address.version

    def check(self, description: SessionDescription, *, peer_host: str | None) -> None:
        """Raise :class:`MediaRefused` if ``description`` (from ``peer_host``, the
        address the message carrying it came from) would aim media where it must not."""
        count = len(description.media)
        if count > self.max_media:
            raise MediaRefused(f"{count} media sections; at most {self.max_media} are taken",
                               MISCELLANEOUS)
        peer_is_loopback = _is_loopback(peer_host)
        for index, media in enumerate(description.media):
            if media.port == 0:
                continue
            self._check_stream(description, media, index, peer_is_loopback)

    def _check_stream(self, description: SessionDescription, media: MediaDescription,
                      index: int, peer_is_loopback: bool) -> None:
        """The address one active stream would have the relay send to."""
        value = media._first("c") or description._first("c")
        if value is None:
            return  # sdp.parse refuses an active stream without any c=
        where = f"m= line {index + 1} ({media.media})"
        nettype, addrtype, address = value.split()
        if nettype != "IN":
            raise MediaRefused(f"{where}: network type {nettype!r} (only IN)",
                               INCOMPATIBLE_NETWORK_PROTOCOL)
        versions = {"IP4": 4, "IP6": 6}
        if addrtype not in versions:
            raise MediaRefused(f"{where}: address type {addrtype!r} (only IP4, IP6)",
                               INCOMPATIBLE_ADDRESS_FORMAT)
        host, slash, _ = address.partition("/")
        ip = _address(host)
        if ip is None:
            raise MediaRefused(f"{where}: {_show(host)} is not an {addrtype} address (names "
                               "are not looked up)", INCOMPATIBLE_ADDRESS_FORMAT)
        if ip.version != versions[addrtype]:
            raise MediaRefused(f"{where}: {host} is not an {addrtype} address",
                               INCOMPATIBLE_ADDRESS_FORMAT)
        if ip.is_multicast:
            raise MediaRefused(f"{where}: {host} is multicast; media is unicast only",
                               MULTICAST_NOT_AVAILABLE)
        if slash:
            raise MediaRefused(f"{where}: {_show(address)}: a TTL or count belongs to "
                               "multicast addresses only", INCOMPATIBLE_ADDRESS_FORMAT)
        if ip.version != self.version:
            raise MediaRefused(f"{where}: {addrtype} media, but our media plane is "
                               f"IP{self.version} only", INCOMPATIBLE_ADDRESS_FORMAT)
        if ip.is_unspecified:
            return  # the RFC 2543 hold: nothing is sent there
        if ip == _LIMITED_BROADCAST or host in self.broadcasts:
            raise MediaRefused(f"{where}: {host} is a broadcast address", MISCELLANEOUS)
        if _unreachable(ip):
            raise MediaRefused(f"{where}: {host} is not an address media can be sent to",
                               MISCELLANEOUS)
        if ip.is_loopback and not peer_is_loopback:
            raise MediaRefused(f"{where}: loopback address {host} from a peer on another host",
                               MISCELLANEOUS)


@lru_cache(maxsize=4096)
def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` parsed, or None; cached: a carrier's few media addresses come back
    call after call, and parsing one is most of what a check costs."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_loopback(host: str | None) -> bool:
    address = None if host is None else _address(host)
    return address is not None and address.is_loopback


def _unreachable(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Unicast-looking addresses no packet of ours may go to."""
    if isinstance(ip, ipaddress.IPv4Address):
        return ip in _THIS_NETWORK or ip in _RESERVED
    # An IPv4-mapped address on an IPv6 socket reaches IPv4 hosts, past every
    # IPv4 rule above.
    return ip.ipv4_mapped is not None


def _show(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")
