"""A log line that says itself at most once per interval, and how often it kept quiet.

A full disk fails every recording and every journal retry, and the operator
needs to hear it once, not a thousand times a second: a log flooded with
the same line hides the others and, on a full disk, has nowhere to go
either. :class:`RateLimitedLog` lets the first occurrence through, swallows
the next ones for ``interval`` seconds, and the first line after that says
how many it swallowed, so nothing is hidden, only summed up.

The clock is passed in (``time.monotonic`` by default), so the decision is
tested with a fake one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RateLimitedLog"]


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
