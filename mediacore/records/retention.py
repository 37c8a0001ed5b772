"""The retention sweeper: recordings are destroyed when their owner's retention ends.

DESIGN.md promise 4. What to destroy is known from two places, and a sweep
takes both:

* the journal: every handle this node made, minus those it deleted (an
  index rebuilt from the journal at start, kept up to date after: those due
  within the hour or two in RAM, the others in bucket files below the
  node's journal dir, see :class:`RecordingIndex`); this is all there is
  without Redis, and it keeps working while Redis is down, so an outage
  never keeps a recording past its end;
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
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from mediacore.records.carried import read_handles
from mediacore.records.journal import Entry
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
BUCKET_SECONDS = 3600.0  # one bucket file per hour of expiry
LOOKAHEAD = 3600.0  # RAM holds what expires before the end of the slot of now + this
FLUSH_LINES = 4096  # entries buffered for bucket files while serving
BUILD_FLUSH_LINES = 65536  # ... while rebuilding at start (fewer, larger writes)


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
    """Live recordings by expiry: those due soon in RAM, the rest in bucket files on disk.

    Memory is bounded by the recordings due soon, not by all live ones (a
    node at 20 recorded calls/s with 30 days' retention has 52 million):

    * RAM holds every recording that expires before the *edge*, the end of
      the ``bucket_seconds`` slot (default an hour) that holds ``now +
      lookahead``: so at most about ``lookahead + bucket_seconds`` (two
      hours) of recordings, plus any overdue ones not swept yet, by id and
      on a heap by expiry so a sweep looks only at what is due.
    * Every later one is appended to the bucket file of its expiry slot,
      ``due-<yyyymmddThhmmss>Z.jsonl`` in ``scratch`` (the server's is
      ``journal/<node>/retention/``, layout.py), through a small buffer of
      at most ``flush_lines`` entries. When the clock moves the edge past a
      slot (:meth:`due`, or :meth:`prepare`, which reads the files in a
      worker thread so the event loop never parses a bucket), the file is
      loaded and deleted.
    * A removal of an id that is not in RAM while buckets exist is kept in a
      small set until the edge passes the last bucket that existed then; a
      bucket's entries in that set are dropped on load. The sweeper's own
      removals are of recordings in RAM; these are deletions by another
      sweeper (``mediacore retention sweep`` beside the server) or of a
      recording Redis named, so the set stays small.

    Hourly slots, not days: a day of recordings at 20/s is 1.7 million
    entries, more than we want to hold or to parse in one go.

    The buckets are derived data, never the truth, so they are never
    fsynced: :meth:`from_journal` deletes them and rebuilds them from the
    journal at every start. A crash between the journal append and a
    bucket write therefore loses nothing. The rebuild replays the journal
    with the clock set to each record's time, so it holds what the index
    held at that time (recordings due soon, and not yet deleted), never all
    of them; records are deleted at or after their expiry, so a deletion
    nearly always meets its recording in RAM.

    Without ``scratch`` everything stays in RAM (the old behaviour; small
    journals and tests).
    """

    def __init__(
        self,
        scratch: Path | None = None,
        *,
        now: float | None = None,
        bucket_seconds: float = BUCKET_SECONDS,
        lookahead: float = LOOKAHEAD,
        flush_lines: int = FLUSH_LINES,
        keep_until: float | None = None,
    ) -> None:
        if bucket_seconds <= 0 or lookahead < 0:
            raise ValueError("bucket_seconds must be > 0 and lookahead >= 0")
        self.scratch = None if scratch is None else Path(scratch)
        self.bucket_seconds = float(bucket_seconds)
        self.lookahead = float(lookahead)
        self.flush_lines = flush_lines
        self.keep_until = keep_until  # a one-shot sweep ignores what expires later
        self._live: dict[str, Due] = {}
        self._heap: list[tuple[float, str]] = []
        # Slots < _edge are in RAM; None: no scratch, everything in RAM.
        self._edge: int | None = None if self.scratch is None else -(1 << 62)
        self._slots: dict[int, int] = {}  # slot -> entries written or buffered for it
        self._slot_heap: list[int] = []
        self._pending: dict[int, list[Due]] = {}
        self._pending_count = 0
        self._loading: set[int] = set()
        self._removed: dict[str, int] = {}  # id -> last slot it may be in
        if now is not None:
            self.advance(now)

    # --- what the sweeper and the service use --------------------------------------

    def __len__(self) -> int:
        """Live recordings known: in RAM plus on disk (may count a removed one on disk)."""
        return len(self._live) + sum(self._slots.values())

    def __contains__(self, id: object) -> bool:
        """In RAM (due before the edge); an id on disk is not looked up."""
        return id in self._live

    def add(self, due: Due) -> None:
        if self.keep_until is not None and due.expires > self.keep_until:
            return
        self._removed.pop(due.id, None)  # a later handle wins, as it always did
        slot = self._slot(due.expires)
        if self._edge is None or slot < self._edge:
            self._live[due.id] = due
            heapq.heappush(self._heap, (due.expires, due.id))
            return
        if slot not in self._slots:
            self._slots[slot] = 0
            heapq.heappush(self._slot_heap, slot)
        self._slots[slot] += 1
        self._pending.setdefault(slot, []).append(due)
        self._pending_count += 1
        if self._pending_count >= self.flush_lines:
            self.flush()

    def remove(self, id: str, expires: float | None = None) -> None:
        """Forget a recording (deleted); ``expires``, when known, spares a lookup on disk."""
        if self._live.pop(id, None) is not None or not self._slots:
            return
        if expires is not None and self._edge is not None and self._slot(expires) < self._edge:
            return  # it would be in RAM: not on disk
        self._removed[id] = max(self._slots)

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
        self.advance(now)
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
        """The recordings in RAM."""
        return self._live.values()

    @property
    def in_memory(self) -> int:
        """Entries held in RAM: indexed, buffered for a bucket, and remembered removals."""
        return len(self._live) + self._pending_count + len(self._removed)

    @property
    def on_disk(self) -> int:
        return sum(self._slots.values()) - self._pending_count

    # --- buckets ---------------------------------------------------------------------

    def _slot(self, expires: float) -> int:
        return math.floor(expires / self.bucket_seconds)

    def bucket_path(self, slot: int) -> Path:
        assert self.scratch is not None
        start = datetime.fromtimestamp(slot * self.bucket_seconds, UTC)
        return self.scratch / f"due-{start:%Y%m%dT%H%M%S}Z.jsonl"

    def _target(self, now: float) -> int:
        return self._slot(now + self.lookahead) + 1

    def _to_load(self, now: float) -> list[int]:
        if self._edge is None:
            return []
        target = max(self._edge, self._target(now))
        return sorted(s for s in self._slots if s < target and s not in self._loading)

    def advance(self, now: float) -> None:
        """Move the edge to ``now + lookahead``: load the buckets it passes (never goes back)."""
        if self._edge is None:
            return
        self._edge = max(self._edge, self._target(now))
        while self._slot_heap and self._slot_heap[0] < self._edge:
            slot = self._slot_heap[0]
            if slot in self._loading:
                break  # prepare() is reading it; it merges it
            try:
                read = _read_bucket(self.bucket_path(slot))
            except OSError as error:
                log.critical("retention: cannot read bucket %s (%s); retried at the next "
                             "sweep (a restart rebuilds it from the journal)",
                             self.bucket_path(slot), error)
                return
            self._merge(slot, read)
        self._prune()

    async def prepare(self, now: float) -> None:
        """:meth:`advance`, with the files read and parsed in a worker thread."""
        slots = self._to_load(now)
        if not slots:
            return
        self.flush()  # the thread reads whole files; what comes meanwhile stays buffered
        self._loading.update(slots)
        try:
            read = await asyncio.to_thread(_read_buckets, [self.bucket_path(s) for s in slots])
        finally:
            self._loading.difference_update(slots)
        assert self._edge is not None
        self._edge = max(self._edge, slots[-1] + 1)
        for slot, entries in zip(slots, read, strict=True):
            if isinstance(entries, OSError):
                log.critical("retention: cannot read bucket %s (%s); retried at the next "
                             "sweep (a restart rebuilds it from the journal)",
                             self.bucket_path(slot), entries)
                continue
            self._merge(slot, entries)
        self._prune()

    def _merge(self, slot: int, read: list[Due]) -> None:
        """A bucket's file and buffer into RAM (the edge is past it), then the file goes."""
        entries = read + self._pending.pop(slot, [])
        self._pending_count -= len(entries) - len(read)
        fresh = [due for due in entries if due.id not in self._removed]
        for due in fresh:
            self._live[due.id] = due
        if len(fresh) > len(self._heap) // 8:
            self._heap.extend((due.expires, due.id) for due in fresh)
            heapq.heapify(self._heap)
        else:
            for due in fresh:
                heapq.heappush(self._heap, (due.expires, due.id))
        del self._slots[slot]
        self._slot_heap = [s for s in self._slot_heap if s != slot]
        heapq.heapify(self._slot_heap)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.bucket_path(slot))

    def _prune(self) -> None:
        edge = self._edge
        if self._removed and edge is not None:
            self._removed = {k: v for k, v in self._removed.items() if v >= edge}

    def flush(self) -> None:
        """Append the buffered entries to their bucket files (not fsynced: derived data)."""
        if not self._pending:
            return
        assert self.scratch is not None
        try:
            self.scratch.mkdir(parents=True, exist_ok=True)
            for slot in [s for s in self._pending if s not in self._loading]:
                entries = self._pending[slot]
                with open(self.bucket_path(slot), "a", encoding="ascii") as file:
                    file.write("".join(_encode(due) for due in entries))
                del self._pending[slot]
                self._pending_count -= len(entries)
        except OSError as error:
            log.error("retention: cannot write a bucket in %s (%s); %d entries kept in "
                      "memory meanwhile", self.scratch, error, self._pending_count)

    def discard(self) -> None:
        """Delete the scratch dir (a restart rebuilds it anyway)."""
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)

    @classmethod
    def from_journal(
        cls,
        directory: Path,
        scratch: Path | None = None,
        *,
        now: float | None = None,
        only_due: bool = False,
        **options: Any,
    ) -> RecordingIndex:
        """Stream the journal (CDR lines skipped by their first bytes, undecoded).

        Handles carried forward out of pruned files (``carried.jsonl``) come
        first, as if their files were still there.

        With ``scratch``, its buckets are deleted and rebuilt: the journal is
        replayed with the edge following each record's time, then moved to
        ``now`` (default: the time now). ``only_due`` (a one-shot sweep)
        ignores recordings that expire after ``now``.
        """
        if now is None:
            now = time.time()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
            options.setdefault("flush_lines", BUILD_FLUSH_LINES)
        index = cls(scratch, keep_until=now if only_due else None, **options)
        hour = ""
        # Handles carried out of pruned journal files first, then the journal
        # (carried.py): the same as replaying every file there ever was.
        for entry in read_handles(directory, types=INDEX_TYPES):
            if scratch is not None and entry.at[:13] != hour:
                hour = entry.at[:13]
                with contextlib.suppress(ValueError):
                    index.advance(parse_utc(entry.at).timestamp())
            index.apply(entry)
        index.advance(now)
        index.flush()
        index.flush_lines = FLUSH_LINES
        return index


def _encode(due: Due) -> str:
    return json.dumps([due.id, due.call_id, due.kind, due.path, due.expires],
                      separators=(",", ":")) + "\n"


def _read_bucket(path: Path) -> list[Due]:
    """A bucket file's entries; a missing file is an empty bucket (all still buffered)."""
    found: list[Due] = []
    try:
        file = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return found
    with file:
        for line in file:
            if not line.endswith(b"\n"):
                continue
            id, call_id, kind, path_, expires = json.loads(line)
            found.append(Due(id, call_id, kind, path_, float(expires)))
    return found


def _read_buckets(paths: list[Path]) -> list[list[Due] | OSError]:
    read: list[list[Due] | OSError] = []
    for path in paths:
        try:
            read.append(_read_bucket(path))
        except OSError as error:
            read.append(error)
    return read


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
        await self.index.prepare(now)
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
            self.index.remove(item.id, item.expires)
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
