"""RFC 4028 session timers, per leg: who refreshes, and when a session is dead.

Carriers that require session timers drop calls whose session is not
refreshed, and use them to clear calls whose far end vanished. The B2BUA
runs one :class:`SessionTimer` per leg: on the caller's leg we are the UAS
and let the caller refresh when it supports the extension; on each target's
leg we are the UAC, ask for ``DEFAULT_INTERVAL`` and refresh it ourselves
with UPDATE when the target leaves it to us. Sans-IO: it only computes
deadlines and header values.
"""

from __future__ import annotations

from dataclasses import dataclass

from mediacore.sip import message as sip

#: What we ask targets for, and grant callers who ask for nothing less than MIN_SE.
DEFAULT_INTERVAL = 1800
#: RFC 4028 4: the smallest interval allowed, and the one we insist on.
MIN_SE = 90


@dataclass
class SessionTimer:
    """One leg's session timer: ``interval`` seconds, refreshed by us or by the peer."""

    interval: int
    we_refresh: bool

    def refresh_at(self, now: float) -> float:
        """When we send the refresh (RFC 4028 10: half the interval)."""
        return now + self.interval / 2

    def expires_at(self, now: float) -> float:
        """When the peer's refresh is overdue: BYE a little before the end (RFC 4028 10)."""
        return now + self.interval - min(32, self.interval / 3)

    def header(self, *, refresher: str) -> str:
        return f"{self.interval};refresher={refresher}"


class SessionIntervalTooSmall(Exception):
    """The caller asked for less than MIN_SE: answer 422 with Min-SE."""


def _parse(value: str | None) -> tuple[int, str | None] | None:
    if value is None:
        return None
    interval, _, params = value.partition(";")
    interval = interval.strip()
    if not interval.isdigit():
        return None
    refresher = None
    for param in params.split(";"):
        name, _, val = param.partition("=")
        if name.strip().lower() == "refresher":
            refresher = val.strip().lower() or None
    return int(interval), refresher


def for_caller(invite: sip.Request) -> SessionTimer | None:
    """The caller leg's timer from their INVITE, or None when they asked for none.

    The caller refreshes when it supports ``timer`` (unless it asked us to);
    otherwise we do, with UPDATE (RFC 4028 9).
    """
    asked = _parse(invite.headers.get("Session-Expires"))
    if asked is None:
        return None
    interval, refresher = asked
    if interval < MIN_SE:
        raise SessionIntervalTooSmall(interval)
    supports = "timer" in invite.supported or "timer" in invite.require
    we_refresh = refresher == "uas" or not supports
    return SessionTimer(interval, we_refresh)


def caller_headers(timer: SessionTimer) -> list[tuple[str, str]]:
    """What our 2xx to the caller says about the timer."""
    headers = [("Session-Expires", timer.header(refresher="uas" if timer.we_refresh
                                                else "uac"))]
    if not timer.we_refresh:
        headers.append(("Require", "timer"))
    return headers


def offer_headers() -> list[tuple[str, str]]:
    """What our INVITE to a target asks for."""
    return [("Session-Expires", str(DEFAULT_INTERVAL)), ("Min-SE", str(MIN_SE))]


def for_target(response: sip.Response) -> SessionTimer | None:
    """The target leg's timer from its 2xx: none when it ignored the extension."""
    granted = _parse(response.headers.get("Session-Expires"))
    if granted is None:
        return None
    interval, refresher = granted
    return SessionTimer(max(interval, MIN_SE), refresher != "uas")
