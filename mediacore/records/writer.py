"""The journal's writer thread: durable appends without blocking the event loop.

An ``fdatasync`` takes about a millisecond on an SSD and tens on a disk;
the event loop relays audio for a thousand calls and must not wait for one.
So every append goes through one dedicated thread (one, so the journal's
order is the order of submission), and the loop gets an ``asyncio.Future``
that resolves once the record is on disk as the fsync policy defines it:

``record``
    Every record is fsynced before its future resolves and before it can be
    published. Records submitted while an fsync is running are written and
    fsynced together by the next one (group commit), so under load one
    fsync covers many records and no record waits for more than two.
``batch``
    Records are written (to the page cache) as they come and fsynced every
    ``batch_records`` records or ``batch_ms`` milliseconds, whichever comes
    first; futures resolve at that fsync. The trade: a power cut or kernel
    crash loses what was written since the last fsync (at most that many
    records or milliseconds); a crash of the process loses nothing, since
    the page cache belongs to the kernel.

A write or fsync that fails (a full disk, an I/O error) is retried with
backoff and never dropped; the journal starts a fresh file for the retry,
because after a failed fsync the kernel may have thrown the dirty pages
away and the old file can no longer be trusted to hold them. The rare
result is a record that is in the journal twice: readers and publication
both deduplicate by id.

While records wait for such a retry, or while the journal's filesystem has
less than ``min_free`` bytes free (or is read-only: the thread looks with
``statvfs`` every ``probe_interval`` seconds, so a disk that filled while
no call ended is noticed before the next CDR has nowhere to go), the writer
is *unwritable*: :attr:`JournalWriter.writable` is False, ``problem`` says
why (``disk-full``, ``read-only``, ``io-error``...: mediacore.diskspace),
and ``on_state`` is told on the loop, so that the server refuses new calls
(503) until it is writable again. It is writable again once the retried
records are on disk and, if the free space was the trouble, twice
``min_free`` is free (so that a disk hovering at the edge does not flap).
The retry's log line comes once a minute at most, with how many it skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from mediacore.diskspace import reason_of
from mediacore.ratelimit import RateLimitedLog
from mediacore.records.journal import Journal, Position, encode

__all__ = ["FsyncPolicy", "JournalError", "JournalWriter"]

log = logging.getLogger("mediacore.records.journal")

RETRY_FIRST = 0.05
RETRY_MAX = 5.0
#: Bytes that must be free on the journal's filesystem for it to count as
#: writable: room for a few hundred CDRs (below ``[storage] reserve_mb``,
#: where recordings stop, so that they stop first).
MIN_FREE = 256 * 1024
#: Seconds between two looks at the free space while the writer is idle.
PROBE_INTERVAL = 1.0
#: Seconds between two log lines about failing writes.
RETRY_LOG_INTERVAL = 60.0


class JournalError(Exception):
    """The journal could not take a record (the writer is closed or gave up)."""


@dataclass(frozen=True, slots=True)
class FsyncPolicy:
    mode: Literal["record", "batch"] = "record"
    batch_records: int = 100
    batch_ms: float = 200.0


@dataclass(slots=True)
class _Item:
    type: str
    line: bytes
    future: asyncio.Future[Position]
    at: float
    position: Position | None = None


@dataclass(slots=True)
class Durable:
    """What one fsync made durable: the journal's end and the records it covered."""

    end: Position
    types: list[str] = field(default_factory=list)
    first_at: float = 0.0


_STOP = object()


class JournalWriter:
    """Owns a :class:`Journal` and its thread; the loop submits, the thread writes.

    ``on_durable`` is called on the loop after each fsync, before the
    futures it covers resolve, so the publisher learns of new records first.
    ``on_state(writable, problem)`` is called on the loop when the journal
    turns unwritable or writable again (see the module docstring).
    """

    def __init__(
        self,
        journal: Journal,
        policy: FsyncPolicy,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        on_durable: Callable[[Durable], None] | None = None,
        on_state: Callable[[bool, str], None] | None = None,
        min_free: int = MIN_FREE,
        probe_interval: float = PROBE_INTERVAL,
        statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
    ) -> None:
        self.journal = journal
        self.policy = policy
        self._loop = loop or asyncio.get_running_loop()
        self._on_durable = on_durable
        self._on_state = on_state
        self.min_free = min_free
        self.probe_interval = probe_interval
        self._statvfs = statvfs
        #: Read on the loop: False while records wait for a retry or the disk is too full.
        self.writable = True
        #: Why not writable (``disk-full``, ``read-only``, ``io-error``...), else "".
        self.problem = ""
        #: Records submitted and not yet durable (those a failing disk holds in memory).
        self.held = 0
        self._write_problem = ""  # thread-side: a failed write waits for its retry
        self._space_problem = ""  # thread-side: the last probe's verdict
        self._next_probe = 0.0
        self._told = (True, "")
        self._retry_log = RateLimitedLog(log, interval=RETRY_LOG_INTERVAL)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="records-journal", daemon=True)
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._closing = False
        self.written = 0
        self.errors = 0
        self._thread.start()

    def submit(self, type: str, data: dict[str, Any], at: datetime) -> asyncio.Future[Position]:
        """Queue one record; the future resolves with its position once it is durable.

        Encoding happens here, on the caller's side, so a record that cannot
        be serialized fails at once in the caller's code, not in the thread.
        """
        if self._closing:
            raise JournalError("the journal writer is closed")
        future: asyncio.Future[Position] = self._loop.create_future()
        future.add_done_callback(mark_retrieved)
        self._queue.put(_Item(type, encode(type, data, at), future, at.timestamp()))
        self.held += 1
        return future

    async def close(self) -> None:
        """Write and fsync everything submitted, then stop the thread."""
        if not self._closing:
            self._closing = True
            self._queue.put(_STOP)
        await asyncio.shield(self._done)

    # --- the thread ----------------------------------------------------------------

    def _run(self) -> None:
        pending: list[_Item] = []  # submitted, not yet written
        unsynced: list[_Item] = []  # written, waiting for the fsync
        deadline: float | None = None
        stopping = False
        delay = RETRY_FIRST
        try:
            while True:
                self._probe()
                timeout = self.probe_interval
                if unsynced and deadline is not None:
                    timeout = min(timeout, max(0.0, deadline - time.monotonic()))
                if pending or stopping:
                    timeout = 0.0
                item = self._take(timeout)
                while item is not None:
                    if item is _STOP:
                        stopping = True
                    else:
                        pending.append(item)
                    item = self._take(0.0)
                try:
                    if pending:
                        positions = self.journal.append_lines([i.line for i in pending],
                                                              sync=False)
                        for entry, position in zip(pending, positions, strict=True):
                            entry.position = position
                        unsynced += pending
                        pending = []
                        if deadline is None:
                            deadline = time.monotonic() + self.policy.batch_ms / 1000
                    if unsynced and (
                        self.policy.mode == "record" or stopping
                        or len(unsynced) >= self.policy.batch_records
                        or time.monotonic() >= (deadline or 0.0)
                    ):
                        end = self.journal.sync()
                        self._deliver(unsynced, end)
                        unsynced, deadline = [], None
                    delay = RETRY_FIRST
                    if self._write_problem and not pending and not unsynced:
                        log.info("journal: the records held in memory are written")
                        self._write_problem = ""
                        self._tell()
                except OSError as error:
                    self.errors += 1
                    # Unsynced lines may be lost with the failed file: write them again.
                    pending = unsynced + pending
                    unsynced, deadline = [], None
                    if not self._write_problem:
                        self._write_problem = reason_of(error)
                        self._tell()
                    self._retry_log.error(
                        "journal write failed (%s); %d records held in memory, retrying "
                        "in %.2f s in a new file", error, len(pending), delay)
                    if stopping and delay >= RETRY_MAX:
                        self._fail(pending, JournalError(f"journal write failed: {error}"))
                        return
                    time.sleep(delay)
                    delay = min(RETRY_MAX, delay * 2)
                    continue
                if stopping and not pending and not unsynced:
                    return
        except BaseException as error:  # pragma: no cover - a bug; never strand the loop
            log.exception("journal writer thread failed")
            self._fail(pending + unsynced, JournalError(f"journal writer failed: {error}"))
        finally:
            self._call(self._finish)

    def _probe(self) -> None:
        """Look at the journal filesystem's free space, once per ``probe_interval``."""
        now = time.monotonic()
        if now < self._next_probe or self.min_free <= 0:
            return
        self._next_probe = now + self.probe_interval
        try:
            stat = self._statvfs(str(self.journal.directory))
        except OSError as error:
            problem = reason_of(error)
        else:
            free = stat.f_bavail * stat.f_frsize
            # Hysteresis: unwritable below min_free, writable again above twice that.
            needed = self.min_free * (2 if self._space_problem else 1)
            if stat.f_flag & os.ST_RDONLY:
                problem = reason_of(OSError(errno.EROFS, "read-only"))
            elif free < needed:
                problem = reason_of(OSError(errno.ENOSPC, "no space"))
            else:
                problem = ""
        if problem != self._space_problem:
            if problem:
                log.error("journal %s: %s (less than %d bytes free, or read-only)",
                          self.journal.directory, problem, self.min_free)
            else:
                log.info("journal %s: free space is back", self.journal.directory)
            self._space_problem = problem
            self._tell()

    def _tell(self) -> None:
        """Hand the loop the journal's state, when it changed."""
        problem = self._write_problem or self._space_problem
        state = (not problem, problem)
        if state != self._told:
            self._told = state
            self._call(self._set_state, *state)

    def _take(self, timeout: float | None) -> Any:
        try:
            if timeout == 0.0:
                return self._queue.get_nowait()
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _deliver(self, items: list[_Item], end: Position) -> None:
        self.written += len(items)
        self._call(self._release, len(items))
        durable = Durable(end, [i.type for i in items], items[0].at)
        results = [(i.future, i.position) for i in items]
        self._call(self._resolve, durable, results)

    def _fail(self, items: list[_Item], error: Exception) -> None:
        log.critical("journal: %d records could not be written: %s", len(items), error)
        self._call(self._release, len(items))
        self._call(self._reject, [i.future for i in items], error)

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        # A closed loop means nobody is waiting for the answer any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    # --- back on the loop -------------------------------------------------------

    def _release(self, count: int) -> None:
        self.held = max(0, self.held - count)

    def _set_state(self, writable: bool, problem: str) -> None:
        self.writable, self.problem = writable, problem
        if self._on_state is not None:
            try:
                self._on_state(writable, problem)
            except Exception:
                log.exception("journal: on_state callback failed")

    def _resolve(self, durable: Durable,
                 results: list[tuple[asyncio.Future[Position], Position | None]]) -> None:
        if self._on_durable is not None:
            try:
                self._on_durable(durable)
            except Exception:
                log.exception("journal: on_durable callback failed")
        for future, position in results:
            if not future.done():
                future.set_result(position or durable.end)

    @staticmethod
    def _reject(futures: list[asyncio.Future[Position]], error: Exception) -> None:
        for future in futures:
            if not future.done():
                future.set_exception(error)

    def _finish(self) -> None:
        if not self._done.done():
            self._done.set_result(None)


def mark_retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a failure as seen: callers may ignore the future (the log has it)."""
    if not future.cancelled():
        future.exception()
