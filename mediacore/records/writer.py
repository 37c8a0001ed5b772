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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from mediacore.records.journal import Journal, Position, encode

__all__ = ["FsyncPolicy", "JournalError", "JournalWriter"]

log = logging.getLogger("mediacore.records.journal")

RETRY_FIRST = 0.05
RETRY_MAX = 5.0


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
    """

    def __init__(
        self,
        journal: Journal,
        policy: FsyncPolicy,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        on_durable: Callable[[Durable], None] | None = None,
    ) -> None:
        self.journal = journal
        self.policy = policy
        self._loop = loop or asyncio.get_running_loop()
        self._on_durable = on_durable
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
                timeout = None
                if unsynced and deadline is not None:
                    timeout = max(0.0, deadline - time.monotonic())
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
                except OSError as error:
                    self.errors += 1
                    # Unsynced lines may be lost with the failed file: write them again.
                    pending = unsynced + pending
                    unsynced, deadline = [], None
                    log.error("journal write failed (%s); %d records held in memory, retrying "
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

    def _take(self, timeout: float | None) -> Any:
        try:
            if timeout == 0.0:
                return self._queue.get_nowait()
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _deliver(self, items: list[_Item], end: Position) -> None:
        self.written += len(items)
        durable = Durable(end, [i.type for i in items], items[0].at)
        results = [(i.future, i.position) for i in items]
        self._call(self._resolve, durable, results)

    def _fail(self, items: list[_Item], error: Exception) -> None:
        log.critical("journal: %d records could not be written: %s", len(items), error)
        self._call(self._reject, [i.future for i in items], error)

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        # A closed loop means nobody is waiting for the answer any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    # --- back on the loop -------------------------------------------------------

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
