"""The retention sweeper: recordings are destroyed when their owner's retention ends.

DESIGN.md promise 4. What to destroy is known from two places, and a sweep
takes both:

* the journal: every handle this node made, minus those it deleted (an
  in-memory index built from the journal at start, kept up to date after);
  this is all there is without Redis, and it keeps working while Redis is
  down, so an outage never keeps a recording past its end;
* Redis (when configured): members of ``<prefix>:recordings:expiry`` whose
  score has passed, for handles the local journal does not know (written
  by an older node, or by hand). A hash naming another ``node`` is left to
  that node; a path outside our storage dir is never deleted on Redis's
  word alone (whoever can write to Redis must not be able to make a root
  process delete arbitrary files).

For each expired recording the file is deleted (already gone is fine:
``file = "missing"``), then a ``recording-deleted`` record is journaled and
published like any other record: Redis loses the hash and the sorted-set
member and gains one ``{event: deleted, id, reason}`` in
``<prefix>:recording-events``, exactly once (redis_sink.py). A file that
cannot be deleted is logged and counted, its keys stay, and it is tried
again at the next sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from mediacore.records.journal import Entry, read_entries
from mediacore.records.recordings import RecordingDeleted, RecordingHandle
from mediacore.records.redis_sink import RedisSink
from mediacore.records.timefmt import format_utc, parse_utc, utc_now

__all__ = ["Due", "RecordingIndex", "SweepReport", "Sweeper"]

log = logging.getLogger("mediacore.records.retention")

HANDLE_TYPES = ("recording", "voicemail-delivered")
INDEX_TYPES = (*HANDLE_TYPES, "recording-deleted")
REASON = "expired"
REDIS_PAGE = 1000
RECENT_FOR = 3600.0


@dataclass(frozen=True, slots=True)
class Due:
    """What the sweeper needs to know about one recording."""

    id: str
    call_id: str
    kind: str
    path: str
    expires: float  # Unix time

    @classmethod
    def of(cls, handle: RecordingHandle) -> Due:
        return cls(handle.id, handle.call_id, handle.kind, handle.path, handle.expires_unix)


class RecordingIndex:
    """Live recordings by id, and a heap by expiry so a sweep looks only at what is due.

    Kept small on purpose (a ``Due`` per live recording, not the handle):
    a node keeps tens of thousands of recordings within their retention.
    """

    def __init__(self) -> None:
        self._live: dict[str, Due] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, id: object) -> bool:
        return id in self._live

    def add(self, due: Due) -> None:
        self._live[due.id] = due
        heapq.heappush(self._heap, (due.expires, due.id))

    def remove(self, id: str) -> None:
        self._live.pop(id, None)

    def apply(self, entry: Entry) -> None:
        """Follow one journal record (handles add, deletions remove)."""
        try:
            if entry.type in HANDLE_TYPES:
                self.add(Due.of(RecordingHandle.from_fields(entry.data)))
            elif entry.type == "recording-deleted":
                self.remove(str(entry.data["id"]))
        except (ValueError, TypeError, KeyError) as error:
            log.error("journal record at %s (%s) is malformed, not indexed: %s",
                      entry.position, entry.type, error)

    def due(self, now: float) -> list[Due]:
        """Take every live recording expired at ``now`` off the heap (see :meth:`retry`)."""
        found = []
        while self._heap and self._heap[0][0] <= now:
            expires, id = heapq.heappop(self._heap)
            due = self._live.get(id)
            if due is not None and due.expires == expires:
                found.append(due)
        return found

    def retry(self, due: Due) -> None:
        """Put back one that could not be deleted, for the next sweep."""
        if due.id in self._live:
            heapq.heappush(self._heap, (due.expires, due.id))

    def live(self) -> Iterable[Due]:
        return self._live.values()

    @classmethod
    def from_journal(cls, directory: Path) -> RecordingIndex:
        """Scan the whole journal; CDR lines are skipped by their first bytes, undecoded."""
        index = cls()
        for entry in read_entries(directory, types=INDEX_TYPES):
            index.apply(entry)
        return index


@dataclass(slots=True)
class SweepReport:
    deleted: list[RecordingDeleted] = field(default_factory=list)
    failed: list[tuple[Due, str]] = field(default_factory=list)
    skipped: int = 0  # in Redis, but another node's or outside our storage dir
    redis_error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failed


JournalFn = Callable[[str, dict[str, Any]], Awaitable[Any]]


class Sweeper:
    """One sweep at a time; ``journal`` appends a record and returns once it is durable."""

    def __init__(
        self,
        *,
        storage_dir: Path,
        node: str,
        index: RecordingIndex,
        journal: JournalFn,
        sink: RedisSink | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.storage_dir = Path(storage_dir).resolve()
        self.node = node
        self.index = index
        self.sink = sink
        self._journal = journal
        self._clock = clock
        self._recent: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self.deleted = 0
        self.failures = 0
        self.sweeps = 0

    async def sweep(self) -> SweepReport:
        async with self._lock:
            report = await self._sweep()
            self.sweeps += 1
            return report

    async def _sweep(self) -> SweepReport:
        report = SweepReport()
        now_dt = self._clock()
        now = now_dt.timestamp()
        due = {d.id: d for d in self.index.due(now)}
        if self.sink is not None:
            try:
                await self._from_redis(now, due, report)
            except (RedisError, OSError) as error:
                report.redis_error = f"{type(error).__name__}: {error}"
                log.info("retention: Redis unavailable (%s); sweeping by the journal only",
                         report.redis_error)
        if not due:
            return report
        outcomes = await asyncio.to_thread(_delete_files, list(due.values()))
        writes = []
        for item, outcome in outcomes:
            if isinstance(outcome, OSError):
                self.failures += 1
                reason = f"{type(outcome).__name__}: {outcome.strerror or outcome}"
                report.failed.append((item, reason))
                self.index.retry(item)
                log.error("retention: recording %s of call %s: cannot delete %s (%s); "
                          "kept, and tried again at the next sweep",
                          item.id, item.call_id, item.path, reason)
                continue
            deleted = RecordingDeleted(id=item.id, call_id=item.call_id, reason=REASON,
                                       file=outcome, at=now_dt, node=self.node)
            writes.append(self._journal("recording-deleted", deleted.to_fields()))
            report.deleted.append(deleted)
            self.index.remove(item.id)
            self._recent[item.id] = time.monotonic()
            self.deleted += 1
            log.info("retention: recording %s of call %s deleted (retention ended %s; file %s)",
                     item.id, item.call_id,
                     format_utc(datetime.fromtimestamp(item.expires, now_dt.tzinfo)), outcome)
        await asyncio.gather(*writes)
        cutoff = time.monotonic() - RECENT_FOR
        self._recent = {k: v for k, v in self._recent.items() if v >= cutoff}
        return report

    async def _from_redis(self, now: float, due: dict[str, Due], report: SweepReport) -> None:
        assert self.sink is not None
        for id, fields in await self.sink.expired(now, REDIS_PAGE):
            if id in due or id in self._recent:
                continue
            node = fields.get("node", "")
            if node and node != self.node:
                report.skipped += 1
                continue
            path = fields.get("path", "")
            if path and not _inside(path, self.storage_dir):
                report.skipped += 1
                log.warning("retention: recording %s in Redis points outside %s (%s); not "
                            "deleting a file on Redis's word alone", id, self.storage_dir, path)
                continue
            expires = now
            if fields.get("expires"):
                with contextlib.suppress(ValueError):
                    expires = parse_utc(fields["expires"]).timestamp()
            due[id] = Due(id, fields.get("call_id", ""), fields.get("kind", "call"), path,
                          expires)


def _inside(path: str, root: Path) -> bool:
    try:
        return Path(path).resolve().is_relative_to(root)
    except (OSError, ValueError):
        return False


def _delete_files(items: list[Due]) -> list[tuple[Due, str | OSError]]:
    """Unlink each file (in a worker thread): ``deleted``, ``missing``, ``none`` or the error."""
    outcomes: list[tuple[Due, str | OSError]] = []
    for item in items:
        if not item.path:
            outcomes.append((item, "none"))
            continue
        try:
            os.unlink(item.path)
        except FileNotFoundError:
            outcomes.append((item, "missing"))
        except OSError as error:
            outcomes.append((item, error))
        else:
            outcomes.append((item, "deleted"))
    return outcomes
