"""Feeds Redis from the journal, in journal order, for as long as it takes.

The publisher has no queue of its own: the journal *is* the queue. The
writer thread tells it how far the journal is durable; it reads the new
lines back (from the page cache, in a worker thread) and publishes them in
batches through :class:`RedisSink`. Replay after a restart, catch-up after
an outage and steady state are therefore one code path, and an outage of
any length costs disk, not memory.

How far it got is kept in ``journal/cursor.json``, saved at most every
``cursor_interval`` seconds and on close. The cursor may lag behind Redis
(a crash between publishing and saving): the next start re-sends those
records and the watermark in Redis drops them (redis_sink.py). So the
cursor bounds the work of a restart, and correctness never depends on it.
Before its first batch the publisher reads the watermark once: a journal
*behind* it (restored from a backup, or cut) gets a new identity
(watermark.py), so its new records are not taken for replays.

When Redis fails, batches are retried with capped exponential backoff and
full jitter (many nodes returning at once must not hammer a Redis that has
just come back). The lag is logged as a state, not per record: one line
when publication starts failing, one every ``log_interval`` seconds while
it lasts, one when the backlog is gone.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from redis.exceptions import RedisError

from mediacore.records.journal import (
    JournalReader,
    Position,
    count_entries,
    load_cursor,
    save_cursor,
)
from mediacore.records.redis_sink import PUBLISHED_TYPES, Origin, RedisSink
from mediacore.records.timefmt import parse_utc
from mediacore.records.watermark import load_identity, renew_identity
from mediacore.records.writer import Durable

__all__ = ["Backoff", "Lag", "Publisher"]

log = logging.getLogger("mediacore.records.redis")


@dataclass(frozen=True, slots=True)
class Lag:
    """How far Redis is behind the journal, for logs and metrics.

    ``pending`` counts records that are durable in the journal and not yet
    confirmed in Redis (approximate to one fsync group while a batch is in
    flight); ``oldest_age`` is the age in seconds of the oldest of them.
    """

    pending: int = 0
    oldest_age: float = 0.0
    redis_ok: bool = True
    enabled: bool = True


class Backoff:
    """Capped exponential backoff with full jitter: ``uniform(0, min(cap, first * 2**n))``."""

    def __init__(self, first: float = 0.1, cap: float = 10.0,
                 rng: Callable[[], float] = random.random) -> None:
        self.first = first
        self.cap = cap
        self._rng = rng
        self._attempt = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.first * (2 ** min(self._attempt, 30)))
        self._attempt += 1
        return max(self.first / 10, ceiling * self._rng())

    def reset(self) -> None:
        self._attempt = 0


@dataclass(slots=True)
class _Group:
    end: Position
    count: int
    first_at: float


class Publisher:
    """One per service; everything runs on the event loop except file reads."""

    def __init__(
        self,
        directory: Path,
        sink: RedisSink,
        *,
        batch: int = 500,
        backoff: Backoff | None = None,
        log_interval: float = 30.0,
        cursor_interval: float = 1.0,
        node: str = "",
    ) -> None:
        self.directory = Path(directory)
        self.node = node or self.directory.name
        self.origin = Origin(self.node)
        self._checked = False
        self._start_end = Position(0, 0)
        self.sink = sink
        self.batch = batch
        self.backoff = backoff or Backoff()
        self.log_interval = log_interval
        self.cursor_interval = cursor_interval
        self.published = 0
        self.duplicates = 0
        self.rejected = 0
        self.errors = 0
        #: Publications that succeeded after failed ones: Redis came back (metrics).
        self.reconnects = 0
        self.replayed = 0
        self._end = Position(0, 0)
        self._cursor = Position(0, 0)
        self._saved = Position(0, 0)
        self._saved_at = 0.0
        self._groups: collections.deque[_Group] = collections.deque()
        self._pending = 0
        self._redis_ok = True
        self._lagging_since: float | None = None
        self._last_log = 0.0
        self._last_error = ""
        self._published_while_lagging = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reader: JournalReader | None = None

    async def start(self, durable_end: Position) -> None:
        """Replay from the cursor to ``durable_end``, then follow the journal."""
        cursor = await asyncio.to_thread(load_cursor, self.directory)
        if cursor is not None and cursor > durable_end:
            log.warning("records: the publication cursor (%s) is past the end of the journal "
                        "(%s): the journal was replaced or cut; replaying all of it "
                        "(publication is idempotent)", cursor, durable_end)
            cursor = None
        self._cursor = self._saved = cursor or Position(0, 0)
        self._end = self._start_end = durable_end
        self.origin = Origin(self.node, await asyncio.to_thread(load_identity, self.directory))
        count, oldest = await asyncio.to_thread(
            count_entries, self.directory, cursor, durable_end, PUBLISHED_TYPES)
        if count:
            first_at = _epoch(oldest)
            self._groups.append(_Group(durable_end, count, first_at))
            self._pending = count
            self.replayed = count
            log.info("records: %d journal records may not have reached Redis yet (oldest "
                     "from %s); publishing them (duplicates are dropped by Redis markers)",
                     count, oldest)
        self._reader = JournalReader(self.directory, self._cursor)
        self._task = asyncio.create_task(self._run(), name="records-publisher")

    def durable(self, durable: Durable) -> None:
        """The writer made more of the journal durable (called on the loop)."""
        count = sum(1 for t in durable.types if t in PUBLISHED_TYPES)
        if durable.end > self._end:
            self._end = durable.end
        if count:
            self._groups.append(_Group(durable.end, count, durable.first_at))
            self._pending += count
        if self._reader is not None and self._reader.position < self._end:
            self._idle.clear()
        self._wake.set()

    def lag(self) -> Lag:
        oldest = time.time() - self._groups[0].first_at if self._groups else 0.0
        return Lag(pending=self._pending, oldest_age=max(0.0, oldest),
                   redis_ok=self._redis_ok, enabled=True)

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """True once everything durable so far is published (False on timeout)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self, drain_timeout: float = 5.0) -> None:
        """Publish what Redis will take within ``drain_timeout``, then stop and save the cursor."""
        if self._task is None:
            return
        if self._redis_ok and self._pending:
            await self.wait_idle(drain_timeout)
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        except Exception:  # pragma: no cover - _run logs its own failures
            log.exception("records publisher failed")
        self._task = None
        await self._save_cursor(force=True)
        if self._reader is not None:
            self._reader.close()
        if self._pending:
            log.warning("records: %d records not yet in Redis at shutdown; they stay in the "
                        "journal and are published at the next start", self._pending)

    # --- the loop ------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._reader is not None
        reader = self._reader
        while True:
            before = reader.position
            try:
                if before >= self._end:
                    await self._caught_up()
                    continue
                entries = await asyncio.to_thread(reader.read, self.batch, self._end)
                todo = [e for e in entries if e.type in PUBLISHED_TYPES]
                if todo:
                    await self._publish(todo)
                if reader.position == before:
                    # The journal ends short of what the writer reported (a file
                    # changed under us?): don't spin, look again on news or soon.
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), 1.0)
                    continue
                await self._advance(reader.position)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug, not Redis (that is retried inside _publish): read the
                # same records again rather than step over them.
                log.exception("records publisher: unexpected failure; retrying in 1 s")
                reader.position = before
                await asyncio.sleep(1.0)

    async def _caught_up(self) -> None:
        assert self._reader is not None
        await self._advance(self._reader.position)
        await self._save_cursor(force=False, idle=True)
        if self._reader.position < self._end:
            return  # more became durable while the cursor was saved
        if self._lagging_since is not None:
            log.info("records: Redis publication recovered after %.1f s; %d records "
                     "published meanwhile, none pending",
                     time.monotonic() - self._lagging_since, self._published_while_lagging)
            self._lagging_since = None
        # No await between the check above and the wait: durable() cannot slip in.
        self._idle.set()
        self._wake.clear()
        await self._wake.wait()

    async def _check_watermark(self) -> None:
        """Once, before the first batch: is this journal behind what Redis has from it?"""
        found = await self.sink.watermark(self.node)
        if found is not None and found[0] == self.origin.journal_id and found[1] > self._start_end:
            why = (f"Redis has records of this journal up to {found[1]}, past its end "
                   f"{self._start_end} (restored from a backup, or cut?)")
            identity = await asyncio.to_thread(renew_identity, self.directory, why=why)
            self.origin = Origin(self.node, identity)
        self._checked = True

    async def _publish(self, entries: list) -> None:
        while True:
            try:
                if not self._checked:
                    await self._check_watermark()
                result = await self.sink.publish(entries, self.origin)
            except (RedisError, OSError) as error:
                self.errors += 1
                self._redis_ok = False
                self._note_failure(error)
                await asyncio.sleep(self.backoff.next())
                continue
            self.backoff.reset()
            if not self._redis_ok:
                self.reconnects += 1
            self._redis_ok = True
            self.published += result.published
            self.duplicates += result.duplicates
            self.rejected += result.rejected
            if self._lagging_since is not None:
                self._published_while_lagging += result.published
                self._log_progress()
            return

    async def _advance(self, position: Position) -> None:
        self._cursor = max(self._cursor, position)
        while self._groups and self._groups[0].end <= self._cursor:
            self._pending -= self._groups.popleft().count
        if self._pending < 0:  # pragma: no cover - defensive
            self._pending = 0
        await self._save_cursor(force=False)

    async def _save_cursor(self, force: bool, idle: bool = False) -> None:
        if self._cursor == self._saved:
            return
        now = time.monotonic()
        if not (force or idle) and now - self._saved_at < self.cursor_interval:
            return
        position = self._cursor
        try:
            await asyncio.to_thread(save_cursor, self.directory, position)
        except OSError as error:
            log.error("records: cannot save the publication cursor: %s (a restart will "
                      "re-send more; nothing is lost)", error)
            return
        self._saved, self._saved_at = position, now

    def _note_failure(self, error: Exception) -> None:
        now = time.monotonic()
        self._last_error = f"{type(error).__name__}: {error}"
        lag = self.lag()
        if self._lagging_since is None:
            self._lagging_since = now
            self._last_log = now
            self._published_while_lagging = 0
            log.warning("records: Redis publication is lagging (%s): %d records pending, "
                        "oldest %.1f s; they wait in the journal, retrying with backoff",
                        self._last_error, lag.pending, lag.oldest_age)
        elif now - self._last_log >= self.log_interval:
            self._last_log = now
            log.warning("records: Redis publication still lagging after %.0f s (%s): %d "
                        "records pending, oldest %.1f s", now - self._lagging_since,
                        self._last_error, lag.pending, lag.oldest_age)

    def _log_progress(self) -> None:
        now = time.monotonic()
        if now - self._last_log >= self.log_interval:
            self._last_log = now
            lag = self.lag()
            log.info("records: Redis is back, catching up: %d records pending, oldest %.1f s",
                     lag.pending, lag.oldest_age)


def _epoch(text: str | None) -> float:
    if not text:
        return time.time()
    try:
        return parse_utc(text).timestamp()
    except ValueError:
        return time.time()
