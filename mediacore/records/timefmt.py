"""Time on the wire: ISO 8601 UTC with milliseconds, seconds with three decimals.

Everything the records plane writes (journal, Redis, CSV) uses one format,
``2026-11-23T15:04:11.123Z``, because billing systems compare these strings
and a CDR's ``duration`` must equal ``end - answer`` *as printed*: times are
therefore cut to the millisecond when a record is made, not when it is
written, and durations are computed from the cut values in integer
milliseconds so no float rounding can make them disagree.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

__all__ = [
    "format_seconds",
    "format_utc",
    "millis",
    "parse_seconds",
    "parse_utc",
    "to_utc_ms",
    "utc_now",
]


def utc_now() -> datetime:
    return to_utc_ms(datetime.now(UTC))


def to_utc_ms(value: datetime) -> datetime:
    """``value`` in UTC, cut to the millisecond; naive datetimes are refused.

    A naive datetime would be read in the server's local zone by one program
    and in UTC by another: for billing that ambiguity is a bug, not a default.
    """
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{value.isoformat()} has no time zone; pass an aware datetime (UTC)")
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def format_utc(value: datetime | None) -> str:
    """``2026-11-23T15:04:11.123Z``; ``None`` (e.g. never answered) is ``""``."""
    if value is None:
        return ""
    if value.tzinfo is not UTC:  # what records hold is UTC already: no conversion
        value = to_utc_ms(value)
    # Fields, not strftime: a CDR formats three times, and strftime was half its cost.
    return (f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:"
            f"{value.minute:02d}:{value.second:02d}.{value.microsecond // 1000:03d}Z")


def parse_utc(text: str) -> datetime:
    """The inverse of :func:`format_utc`; any ISO 8601 time with a zone is accepted."""
    try:
        value = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"{text!r} is not an ISO 8601 date-time") from None
    return to_utc_ms(value)


def millis(delta: timedelta) -> int:
    """Whole milliseconds in ``delta`` (exact for values cut by :func:`to_utc_ms`)."""
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def format_seconds(ms: int) -> str:
    """``12340`` ms as ``"12.340"``: seconds with exactly three decimals."""
    sign = "-" if ms < 0 else ""
    ms = abs(ms)
    return f"{sign}{ms // 1000}.{ms % 1000:03d}"


def parse_seconds(text: str) -> Decimal:
    """``"12.340"`` as ``Decimal('12.340')``; more than millisecond precision is refused."""
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError):
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if not value.is_finite() or value != value.quantize(Decimal("0.001")):
        raise ValueError(f"{text!r} is not seconds with at most three decimals")
    return value.quantize(Decimal("0.001"))
