"""Rate limits for what hostile traffic makes us do: log lines, answers, tallies.

Three tools, all with bounded memory and the clock passed in (so every
decision is tested with a fake one):

* :class:`RateLimitedLog`: one kind of log line, at most once per interval;
* :class:`TokenBuckets`: a token bucket per key (a source address) plus one
  shared by all keys, holding at most ``max_keys`` buckets, so a flood with
  spoofed source addresses cannot grow the table: it evicts the least
  recently used bucket, and the shared bucket still caps what the evicted
  sources' fresh buckets would allow;
* :class:`SourceTally`: counts per source over a window (a minute), for one
  summary line instead of a line per refused message, tracking at most
  ``max_tracked`` sources individually and summing the rest.

A full disk fails every recording and every journal retry, and the operator
needs to hear it once, not a thousand times a second: a log flooded with
the same line hides the others and, on a full disk, has nowhere to go
either. :class:`RateLimitedLog` lets the first occurrence through, swallows
the next ones for ``interval`` seconds, and the first line after that says
how many it swallowed, so nothing is hidden, only summed up. A scanner
flood is the same problem with many senders: one line per refused message
grew the log by 11 MB per 100,000 messages (issue 14); the SIP screen
answers through :class:`TokenBuckets` and logs through :class:`SourceTally`.

RateLimitedLog takes a clock (``time.monotonic`` by default); the others
take ``now`` with every call, as the sans-IO SIP core does.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateLimitedLog", "SourceTally", "TallySummary", "TokenBuckets"]


class RateLimitedLog:
    """One kind of log line, said at most once per ``interval`` seconds.

    ``suppressed`` counts the lines swallowed since the last one said;
    ``total`` every call, said or not (a counter for metrics and tests).
    """

    def __init__(self, logger: logging.Logger, *, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, not {interval!r}")
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._next: float | None = None
        self.suppressed = 0
        self.total = 0

    def log(self, level: int, msg: str, *args: object,
            exc_info: BaseException | None = None) -> bool:
        """Log ``msg % args`` at ``level`` unless a line was said less than
        ``interval`` ago; True when it was said. A line said after others were
        swallowed ends with how many."""
        self.total += 1
        now = self._clock()
        if self._next is not None and now < self._next:
            self.suppressed += 1
            return False
        self._next = now + self.interval
        if self.suppressed:
            msg = f"{msg} ({self.suppressed} more like this since the last one, not logged)"
            self.suppressed = 0
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def error(self, msg: str, *args: object, exc_info: BaseException | None = None) -> bool:
        return self.log(logging.ERROR, msg, *args, exc_info=exc_info)

    def warning(self, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, msg, *args)


class TokenBuckets:
    """A token bucket per key and one for all keys together, in bounded memory.

    Each key may spend ``rate`` tokens a second with bursts of ``burst``; all
    keys together ``total_rate`` with bursts of ``total_burst``. A key seen
    for the first time starts with a full bucket. At most ``max_keys``
    buckets are kept: a new key beyond that evicts the least recently used
    one, whose source then starts afresh, which the shared bucket bounds.
    """

    def __init__(self, rate: float, burst: float, *, total_rate: float, total_burst: float,
                 max_keys: int = 4096) -> None:
        if not (rate > 0 and burst >= 1 and total_rate > 0 and total_burst >= 1):
            raise ValueError("rates must be > 0 and bursts at least 1 token")
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, not {max_keys!r}")
        self.rate = rate
        self.burst = burst
        self.total_rate = total_rate
        self.total_burst = total_burst
        self.max_keys = max_keys
        #: key -> [tokens, time of the last refill], least recently used first.
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()
        self._total = [total_burst, float("-inf")]  # full, whatever the first "now"
        #: Buckets evicted to make room (a flood of many sources shows here).
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: str, now: float) -> bool:
        """Spend a token of ``key``'s bucket and of the shared one, if both have one."""
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self.max_keys:
                buckets.popitem(last=False)
                self.evicted += 1
            bucket = buckets[key] = [self.burst, now]
        else:
            buckets.move_to_end(key)
            _refill(bucket, now, self.rate, self.burst)
        if bucket[0] < 1.0:
            return False
        total = self._total
        _refill(total, now, self.total_rate, self.total_burst)
        if total[0] < 1.0:
            return False
        bucket[0] -= 1.0
        total[0] -= 1.0
        return True


def _refill(bucket: list[float], now: float, rate: float, burst: float) -> None:
    """Add what ``rate`` earned since the bucket's last refill, up to ``burst``."""
    elapsed = now - bucket[1]
    if elapsed > 0:
        tokens = bucket[0] + elapsed * rate
        bucket[0] = tokens if tokens < burst else burst
        bucket[1] = now


@dataclass(frozen=True, slots=True)
class TallySummary:
    """What a :class:`SourceTally` counted over one window."""

    started: float
    ended: float
    total: int
    #: Sources seen individually (at most ``max_tracked`` of all).
    sources: int
    #: The ``listed`` busiest sources with their counts, busiest first.
    top: tuple[tuple[str, int], ...]
    #: Counts of sources beyond ``max_tracked`` (not told apart).
    untracked: int


class SourceTally:
    """Counts per source over windows of ``interval`` seconds, in bounded memory.

    A window opens with the first :meth:`add` and is due ``interval`` seconds
    later; :meth:`flush` closes a due window and gives its summary. ``add``
    says whether this is the first count of a source in the window and one
    of the first ``listed`` such sources: the caller may then log it at once
    (so an operator sees a new source now, not a minute later), and the
    summary sums up the rest. At most ``max_tracked`` sources are counted
    individually per window; later ones are summed as ``untracked``.
    """

    def __init__(self, *, interval: float = 60.0, listed: int = 10,
                 max_tracked: int = 1024) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, not {interval!r}")
        self.interval = interval
        self.listed = listed
        self.max_tracked = max_tracked
        self._counts: dict[str, int] = {}
        self._started: float | None = None
        self._announced = 0
        self._untracked = 0
        self._total = 0

    def due(self) -> float | None:
        """When the open window is to be flushed; None when none is open."""
        return None if self._started is None else self._started + self.interval

    def add(self, source: str, now: float) -> bool:
        """Count one for ``source``; True when it is to be announced at once."""
        if self._started is None:
            self._started = now
        self._total += 1
        counts = self._counts
        count = counts.get(source)
        if count is not None:
            counts[source] = count + 1
            return False
        if len(counts) >= self.max_tracked:
            self._untracked += 1
            return False
        counts[source] = 1
        if self._announced < self.listed:
            self._announced += 1
            return True
        return False

    def flush(self, now: float, *, force: bool = False) -> TallySummary | None:
        """Close the window if it is due (or ``force``); its summary, or None.

        The summary is None too when the window held nothing beyond what
        :meth:`add` had the caller announce (one line per source said all).
        """
        due = self.due()
        if due is None or (now < due and not force):
            return None
        counts = self._counts
        summary = None
        if self._total > self._announced:
            top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:self.listed]
            summary = TallySummary(started=self._started if self._started is not None else now,
                                   ended=now, total=self._total,
                                   sources=len(counts), top=tuple(top),
                                   untracked=self._untracked)
        self._counts = {}
        self._started = None
        self._announced = self._untracked = self._total = 0
        return summary
