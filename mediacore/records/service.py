"""The records plane as the app sees it: one object, started and closed with the server.

Wiring (app.py)::

    records = RecordsService(config)
    await records.start()                 # before the SIP transports listen
    ...
    records.record_cdr(cdr)               # when a call ends: returns at once
    records.record_recording(handle)      # when a recording is closed
    records.record_voicemail_delivery(h)  # when a voicemail was e-mailed
    ...
    await records.close()                 # on SIGTERM, after calls have drained

``record_*`` never block the event loop: the record is encoded on the
caller's side (so a bad one fails in the caller) and handed to the journal's
writer thread; the returned future resolves once it is durable per
``[records] fsync``. Awaiting it is optional: a failure is logged and
counted either way, and the record is retried, never dropped, while the
process lives. Records are published to Redis only after they are durable.

While the journal cannot take records (a write failed and waits for its
retry, or its filesystem is full or read-only), :attr:`RecordsService.journal_writable`
is False and ``journal_problem`` says why; ``on_journal_state`` (set by the
app) hears each change, so the server can refuse new calls meanwhile: a
call whose CDR has nowhere to go is not taken.

Several servers may share a storage dir (one process per core), each with
its own ``[records] node``: the journal, its cursor and its publisher are
one node's (``journal/<node>/``, layout.py), and only one service may own a
node (``journal/<node>/service.lock``, an ``flock``): two publishers and
two cursors over one journal would be a mess, so a second server with the
same node is refused before any socket opens. A flat journal from before
per-node journals is moved into the node's dir at start, once.
``mediacore retention sweep`` and ``cdr list`` may run beside it.

A crash leaves recordings no journal knows (records/orphans.py): each
recording in progress has a marker in ``journal/<node>/open-recordings/``
(open_recordings.py: written by the call layer before the file, removed
here once the handle is durable), those found at :meth:`RecordsService.start`
are a dead incarnation's, and :meth:`RecordsService.start_recovery` (the app
calls it once SIP listens) adopts or destroys them, and the unmarked files
no journal names, in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol, cast

from redis.exceptions import RedisError

from mediacore.config import Config
from mediacore.records.cdr import Cdr
from mediacore.records.journal import Entry, Journal, Position, journal_dir
from mediacore.records.layout import (
    LayoutError,
    NodeClaim,
    claim_node,
    journal_dirs,
    retention_dir,
)
from mediacore.records.open_recordings import OpenRecordings
from mediacore.records.orphans import (
    Decision,
    OrphanReport,
    UnmarkedScan,
    examine_marked,
    unlink_orphan,
    unmarked_scan_due,
)
from mediacore.records.pruning import Pruner, PruneResult
from mediacore.records.publisher import Backoff, Lag, Publisher
from mediacore.records.recordings import RecordingHandle
from mediacore.records.redis_sink import DEFAULT_MIN_MAXLEN, DEFAULT_WINDOW, RedisSink
from mediacore.records.retention import Due, RecordingIndex, Sweeper, SweepReport
from mediacore.records.timefmt import utc_now
from mediacore.records.writer import (
    Durable,
    FsyncPolicy,
    JournalError,
    JournalWriter,
    mark_retrieved,
)

__all__ = [
    "RecordsError",
    "RecordsService",
    "RecordsStats",
    "SweepOnce",
    "VoicemailDelivered",
    "sweep_nodes",
    "sweep_once",
]

log = logging.getLogger("mediacore.records")

DEFAULT_RETENTION_DAYS = 30  # a number no longer in the config: NumberConfig's default


class VoicemailDelivered(Protocol):
    """What the voicemail sender knows once the owner's mail server took a message."""

    @property
    def call_id(self) -> str: ...
    @property
    def number(self) -> str: ...
    @property
    def owner(self) -> str: ...
    @property
    def accepted_at(self) -> datetime: ...
    @property
    def bytes(self) -> int: ...


class RecordsError(Exception):
    """The records plane cannot start (storage unusable, dir owned by another process)."""


@dataclass(frozen=True, slots=True)
class RecordsStats:
    """Counters since start, for metrics."""

    journaled: int
    journal_errors: int
    published: int
    duplicates: int
    rejected: int
    publish_errors: int
    replayed: int
    sweeps: int
    recordings_deleted: int
    sweep_failures: int
    redis_reconnects: int = 0
    journal_files_pruned: int = 0
    journal_bytes_pruned: int = 0
    #: Recordings left by a crash (records/orphans.py): given a handle, removed,
    #: and the CDRs made for their calls.
    orphans_adopted: int = 0
    orphans_destroyed: int = 0
    crashed_calls: int = 0


class RecordsService:
    """CDRs and recording handles: journal first, Redis second, retention last."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], datetime] = utc_now,
        publish_batch: int = 500,
        lag_log_interval: float = 30.0,
        close_timeout: float = 5.0,
        marker_window: int = DEFAULT_WINDOW,
    ) -> None:
        self.config = config
        self._marker_window = marker_window
        self.settings = config.records
        self.node = config.records.node
        self.storage_dir = Path(config.storage.dir)
        self.journal_dir = journal_dir(self.storage_dir, self.node)
        self.recordings_dir = self.storage_dir / "recordings"
        #: Markers of the recordings in progress (the call layer adds them).
        self.open_recordings = OpenRecordings(self.storage_dir, self.node)
        self._left_marked: list[str] = []  # markers found at start: a crash's
        self._first_marked_start = False  # no marker directory before this start
        self._recovery: asyncio.Task[OrphanReport] | None = None
        self.orphans = OrphanReport()
        self._clock = clock
        self._publish_batch = publish_batch
        self._lag_log_interval = lag_log_interval
        self._close_timeout = close_timeout
        self._journal: Journal | None = None
        self._writer: JournalWriter | None = None
        self._publisher: Publisher | None = None
        self._sink: RedisSink | None = None
        self._sweeper: Sweeper | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        # Set at close: the sweep loop ends on it even if a cancellation is lost.
        self._stop_sweeping = asyncio.Event()
        self._pruner: Pruner | None = None
        self._claim: NodeClaim | None = None
        self._state = "new"
        #: Told ``(writable, problem)`` on the loop when the journal turns
        #: unwritable or writable again (the app refuses new calls meanwhile).
        self.on_journal_state: Callable[[bool, str], None] | None = None

    # --- life cycle --------------------------------------------------------------

    async def start(self) -> None:
        """Open the journal, replay what Redis may lack, start publisher and sweeper."""
        if self._state != "new":
            raise RecordsError(f"RecordsService.start() called when {self._state}")
        try:
            await asyncio.to_thread(self._open_storage)
        except LayoutError as error:
            raise RecordsError(f"records: {error}") from None
        except OSError as error:
            raise RecordsError(f"records: cannot use {self.storage_dir}: {error}") from error
        try:
            await self._start_tasks()
        except BaseException:
            self._state = "closed"
            await self._shutdown()
            raise
        self._state = "running"

    async def _start_tasks(self) -> None:
        assert self._journal is not None
        durable_end = await asyncio.to_thread(self._journal.sync)
        index = await asyncio.to_thread(
            RecordingIndex.from_journal, self.journal_dir,
            retention_dir(self.storage_dir, self.node), now=self._clock().timestamp())
        mode = cast(Literal["record", "batch"], self.settings.fsync)
        policy = FsyncPolicy(mode, self.settings.batch_records, self.settings.batch_ms)
        self._writer = JournalWriter(self._journal, policy, on_durable=self._on_durable,
                                     on_state=self._journal_state)
        redis = self.config.redis
        if redis is not None:
            self._sink = _sink(self.config, min_maxlen=2 * self._publish_batch,
                               window=self._marker_window)
            self._publisher = Publisher(
                self.journal_dir, self._sink, batch=self._publish_batch,
                backoff=Backoff(cap=self.settings.retry_max_delay),
                log_interval=self._lag_log_interval, node=self.node,
            )
            await self._publisher.start(durable_end)
        self._pruner = Pruner(self.journal_dir, keep_days=self.settings.journal_keep_days,
                              redis=redis is not None,
                              without_redis=self.settings.journal_prune_without_redis,
                              clock=self._clock)
        self._sweeper = Sweeper(storage_dir=self.storage_dir, node=self.node, index=index,
                                journal=self._journal_deletion, sink=self._sink,
                                clock=self._clock)
        self._sweep_task = asyncio.create_task(self._sweep_loop(), name="records-sweeper")
        log.info("records: journal %s (fsync %s), %d live recordings (%d due within the "
                 "hour, in memory), %s; %s", self.journal_dir,
                 self.settings.fsync, len(index), index.in_memory,
                 f"publishing to Redis {redis.prefix}:*" if redis else "no Redis (journal only)",
                 self._pruner.describe())

    async def close(self) -> None:
        """Stop sweeping, make every record durable, publish what Redis takes, let go.

        Call it after calls have drained (SIGTERM): a record submitted after
        this still reaches the journal, synchronously, with a warning.
        """
        if self._state != "running":
            return
        self._state = "closing"
        await self._shutdown()
        self._state = "closed"

    async def _shutdown(self) -> None:
        if self._recovery is not None and not self._recovery.done():
            self._recovery.cancel()  # every step is idempotent: the next start goes on
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._recovery
        if self._sweep_task is not None:
            self._stop_sweeping.set()
            self._sweep_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweep_task
        if self._sweeper is not None:
            await asyncio.to_thread(self._sweeper.index.discard)  # rebuilt at start anyway
        if self._writer is not None:
            await self._writer.close()
        if self._publisher is not None:
            await self._publisher.close(self._close_timeout)
        if self._sink is not None:
            with contextlib.suppress(Exception):
                await self._sink.close()
        if self._journal is not None:
            self._journal.close()
        self._release_lock()

    async def __aenter__(self) -> RecordsService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- what the call layer calls ---------------------------------------------

    def record_cdr(self, cdr: Cdr) -> asyncio.Future[Position]:
        """Journal a finished call's CDR, then publish it. Never blocks the loop.

        An empty ``cdr.node`` is filled with this node's name.
        """
        if not cdr.node:
            cdr = dataclasses.replace(cdr, node=self.node)
        return self._submit("cdr", cdr.to_fields())

    def record_recording(self, handle: RecordingHandle) -> asyncio.Future[Position]:
        """Journal and publish a finished recording's handle; the sweeper takes it from here."""
        if not handle.node:
            handle = dataclasses.replace(handle, node=self.node)
        if handle.kind != "call":
            raise ValueError("record_recording takes call recordings; voicemail goes to "
                             "record_voicemail_delivery")
        future = self._submit("recording", handle.to_fields(), handle)
        # The marker has done its job once the handle is durable: from then on
        # the journal accounts for the file (a crash before this keeps the
        # marker, and recovery finds the handle and only removes it).
        name = os.path.basename(handle.path)
        future.add_done_callback(lambda done: self._handle_durable(done, name))
        return future

    def _handle_durable(self, future: asyncio.Future[Position], name: str) -> None:
        if not future.cancelled() and future.exception() is None:
            self.open_recordings.discard(name)

    def record_voicemail_delivery(
        self, delivery: RecordingHandle | VoicemailDelivered
    ) -> asyncio.Future[Position]:
        """Journal and publish that a voicemail was delivered; the handle keeps no path.

        Takes a handle (``RecordingHandle.voicemail``) or the voicemail
        sender's report as it is (``calls.voicemail.DeliveryReport`` fits
        :class:`VoicemailDelivered`), so it can be the sender's
        ``on_delivered`` callback directly. From a report, the retention is
        the number's in the config now, and the message's id is a new one.
        Deleting the message itself is the voicemail module's job.
        """
        if isinstance(delivery, RecordingHandle):
            handle = delivery
        else:
            number = self.config.number(delivery.number)
            handle = RecordingHandle.voicemail(
                call_id=delivery.call_id, number=delivery.number, owner=delivery.owner,
                delivered=delivery.accepted_at, bytes=delivery.bytes,
                retention_days=number.retention_days if number else DEFAULT_RETENTION_DAYS)
        if not handle.node:
            handle = dataclasses.replace(handle, node=self.node)
        if handle.kind != "voicemail" or handle.delivered is None:
            raise ValueError("a voicemail delivery needs kind 'voicemail' and a delivered time")
        return self._submit("voicemail-delivered", handle.to_fields(), handle)

    @property
    def journal_writable(self) -> bool:
        """True while the journal takes records (what ``/readyz`` reports).

        False before start and after close, while records wait in memory for
        a failed write's retry, and while the journal's filesystem is full
        or read-only.
        """
        return self._state == "running" and self._writer is not None and self._writer.writable

    @property
    def journal_problem(self) -> str:
        """Why the journal is not writable (``disk-full``, ``read-only``, ``io-error``...)."""
        if self._state != "running" or self._writer is None:
            return self._state
        return self._writer.problem

    @property
    def journal_held(self) -> int:
        """Records submitted and not yet durable in the journal (a failing disk's backlog)."""
        return self._writer.held if self._writer is not None else 0

    def _journal_state(self, writable: bool, problem: str) -> None:
        if self.on_journal_state is not None:
            self.on_journal_state(writable, problem)

    def lag(self) -> Lag:
        """Records durable in the journal and not yet in Redis (all zero without Redis)."""
        if self._publisher is None:
            return Lag(enabled=False)
        return self._publisher.lag()

    def stats(self) -> RecordsStats:
        writer, publisher, sweeper = self._writer, self._publisher, self._sweeper
        return RecordsStats(
            journaled=writer.written if writer else 0,
            journal_errors=writer.errors if writer else 0,
            published=publisher.published if publisher else 0,
            duplicates=publisher.duplicates if publisher else 0,
            rejected=publisher.rejected if publisher else 0,
            publish_errors=publisher.errors if publisher else 0,
            replayed=publisher.replayed if publisher else 0,
            sweeps=sweeper.sweeps if sweeper else 0,
            recordings_deleted=sweeper.deleted if sweeper else 0,
            sweep_failures=sweeper.failures if sweeper else 0,
            redis_reconnects=publisher.reconnects if publisher else 0,
            journal_files_pruned=self._pruner.files_removed if self._pruner else 0,
            journal_bytes_pruned=self._pruner.bytes_removed if self._pruner else 0,
            orphans_adopted=self.orphans.adopted,
            orphans_destroyed=self.orphans.destroyed,
            crashed_calls=self.orphans.calls,
        )

    async def sweep(self) -> SweepReport:
        """Run a retention sweep now (the sweeper also runs every ``sweep_interval``)."""
        if self._sweeper is None or self._state != "running":
            raise RecordsError("the records service is not running")
        return await self._sweeper.sweep()

    async def prune(self) -> PruneResult | None:
        """Remove the journal files that may go now (the sweep loop does, after each sweep).

        ``None`` when pruning is off (``journal_keep_days = 0``, or no Redis
        without ``journal_prune_without_redis``); pruning.py has the rules.
        """
        if self._pruner is None or self._state != "running":
            raise RecordsError("the records service is not running")
        return await self._pruner.run()

    async def wait_published(self, timeout: float | None = None) -> bool:
        """True once everything journaled so far is in Redis (tests, drains)."""
        if self._publisher is None:
            return True
        return await self._publisher.wait_idle(timeout)

    # --- recordings left by a crash -------------------------------------------------

    def start_recovery(self, *, quiet: float | None = None) -> asyncio.Task[OrphanReport]:
        """Account for the recordings a crash left, in the background (orphans.py).

        Called once the server takes calls: readiness never waits for it,
        and what it journals goes through the writer like any record.
        ``quiet`` overrides how long an unmarked file must have been left
        untouched (tests).
        """
        if self._state != "running":
            raise RecordsError("the records service is not running")
        if self._recovery is None:
            self._recovery = asyncio.create_task(self.recover(quiet=quiet),
                                                 name="records-recovery")
        return self._recovery

    async def recover(self, *, quiet: float | None = None) -> OrphanReport:
        """Adopt or destroy this node's marked recordings, then the unmarked ones."""
        report = OrphanReport()
        try:
            if self._left_marked:
                decisions = await asyncio.to_thread(examine_marked, self.storage_dir,
                                                    self.node, self._left_marked)
                await self._carry_out(decisions, report)
            await self._recover_unmarked(report, quiet)
        finally:
            self.orphans.add(report)
            if report.adopted or report.destroyed or report.calls or report.failed:
                log.warning("records: recordings left by a crash: %s", report.describe())
            else:
                log.info("records: no recordings left by a crash (%d marked, %d left alone)",
                         len(self._left_marked), report.kept)
        return report

    async def _recover_unmarked(self, report: OrphanReport, quiet: float | None) -> None:
        due = await asyncio.to_thread(unmarked_scan_due, self.storage_dir,
                                      first_start=self._first_marked_start)
        if due is None:
            return  # every node marks its recordings, and all was scanned before
        log.info("records: looking for recordings no journal knows in %s (%s)",
                 self.recordings_dir, due)
        options = {} if quiet is None else {"quiet": quiet}
        scan = UnmarkedScan(self.storage_dir, self.node, retention_of=self._retention_of,
                            clock=lambda: self._clock().timestamp(), **options)
        if not await asyncio.to_thread(scan.begin):
            log.info("records: another process is scanning %s for recordings no journal "
                     "knows; leaving it to that one", self.recordings_dir)
            return
        finished = False
        try:
            while (batch := await asyncio.to_thread(scan.next_batch)) is not None:
                await self._carry_out(batch, report, quiet=scan.quiet)
            finished = True
        finally:
            report.kept += scan.kept
            if finished:
                await asyncio.to_thread(scan.finish)
            else:
                await asyncio.shield(asyncio.to_thread(scan.abandon))

    def _retention_of(self, number: str) -> int:
        found = self.config.number(number)
        return found.retention_days if found is not None else DEFAULT_RETENTION_DAYS

    async def _carry_out(self, decisions: list[Decision], report: OrphanReport, *,
                         quiet: float | None = None) -> None:
        """Journal what the decisions say (durably), then unlink, then drop markers."""
        futures: list[asyncio.Future[Position]] = []
        for decision in decisions:
            if decision.action == "fail":
                continue  # counted below, with the rest
            if decision.cdr is not None:
                futures.append(self.record_cdr(decision.cdr))
            if decision.handle is not None:
                futures.append(self.record_recording(decision.handle))  # its marker goes
        if futures:
            # wait, not gather: a cancelled recovery must not cancel the records.
            done, _ = await asyncio.wait(futures)
            if any(f.exception() is not None for f in done):
                report.failed += len(decisions)
                log.error("records: recovered records could not be journaled yet; the "
                          "recordings are looked at again at the next start")
                return
        options = {} if quiet is None else {"quiet": quiet}
        outcomes = await asyncio.to_thread(self._finish_decisions, decisions, options)
        for decision, outcome in zip(decisions, outcomes, strict=True):
            self._count(decision, outcome, report)

    def _finish_decisions(self, decisions: list[Decision],
                          options: dict[str, float]) -> list[str]:
        clock = lambda: self._clock().timestamp()  # noqa: E731
        outcomes = []
        for decision in decisions:
            outcome = decision.action
            if decision.action == "destroy":
                try:
                    outcome = unlink_orphan(self.storage_dir, decision, clock=clock, **options)
                except OSError as error:
                    log.error("records: recording %s: cannot remove it (%s); tried again "
                              "at the next start", decision.file, error)
                    outcomes.append("fail")
                    continue
            if decision.marked and decision.action != "fail":
                self.open_recordings.discard(decision.file)
            outcomes.append(outcome)
        return outcomes

    @staticmethod
    def _count(decision: Decision, outcome: str, report: OrphanReport) -> None:
        if outcome == "fail" or decision.action == "fail":
            report.failed += 1
            return
        if decision.cdr is not None:
            report.calls += 1
        report.repaired += decision.repaired
        call = decision.call_id or "-"
        if decision.action == "adopt":
            report.adopted += 1
            assert decision.handle is not None
            log.debug("call %s: recording %s left by a crash adopted (%s s, retention until "
                      "%s%s)", call, decision.file, decision.handle.duration,
                      decision.handle.expires.date(),
                      ", CDR marked crash" if decision.cdr is not None else "")
        elif decision.action == "destroy" and outcome in ("deleted", "missing"):
            if outcome == "deleted":  # "missing": someone else removed it meanwhile
                report.destroyed += 1
                report.destroyed_by_reason[decision.reason] += 1
            log.debug("call %s: recording %s left by a crash destroyed (%s)", call,
                      decision.file, decision.reason)
        elif outcome == "kept":
            report.kept += 1

    # --- inside --------------------------------------------------------------------

    def _submit(self, type: str, data: dict[str, Any],
                handle: RecordingHandle | None = None) -> asyncio.Future[Position]:
        at = self._clock()
        if self._state != "running" or self._writer is None:
            return self._submit_late(type, data, at)
        future = self._writer.submit(type, data, at)
        if handle is not None and self._sweeper is not None:
            self._sweeper.index.add(Due.of(handle))
        return future

    def _submit_late(self, type: str, data: dict[str, Any],
                     at: datetime) -> asyncio.Future[Position]:
        """Before start or after close: still journal it (blocking), never drop it.

        It is published at the next start, like anything past the cursor.
        """
        log.warning("records: %s submitted while the service is %s; writing it to the "
                    "journal synchronously", type, self._state)
        future: asyncio.Future[Position] = asyncio.get_running_loop().create_future()
        future.add_done_callback(mark_retrieved)
        try:
            with Journal(self.journal_dir, rotate_bytes=self.settings.rotate_mb << 20,
                         rotate_daily=self.settings.rotate_daily) as journal:
                future.set_result(journal.append([(type, data)], sync=True, at=at)[0])
        except OSError as error:
            log.critical("records: %s could not be journaled: %s (%s)", type, error, data)
            future.set_exception(JournalError(f"journal write failed: {error}"))
        return future

    def _on_durable(self, durable: Durable) -> None:
        if self._publisher is not None:
            self._publisher.durable(durable)

    async def _journal_deletion(self, type: str, data: dict[str, Any]) -> Position:
        assert self._writer is not None
        return await self._writer.submit(type, data, self._clock())

    async def _sweep_loop(self) -> None:
        """Sweep and prune every ``sweep_interval`` until close.

        The loop ends on ``_stop_sweeping`` as well as on cancellation: the
        Redis client can swallow a cancellation that arrives during a
        command (seen with redis-py 8.1: the command returns normally), and
        the loop would then sleep a whole interval with close() waiting.
        """
        interval = self.settings.sweep_interval
        while not self._stop_sweeping.is_set():
            try:
                assert self._sweeper is not None
                await self._sweeper.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retention sweep failed; trying again in %.0f s", interval)
            try:
                assert self._pruner is not None
                await self._pruner.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                # Nothing is lost by not pruning: the files just stay a while longer.
                log.exception("journal pruning failed; trying again in %.0f s", interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_sweeping.wait(), interval)

    def _open_storage(self) -> None:
        self.recordings_dir.mkdir(parents=True, exist_ok=True)
        self._claim = claim_node(self.storage_dir, self.node)
        # We own the node now and no call of ours has started: every marker
        # there is a dead incarnation's recording, cut short.
        self._left_marked = self.open_recordings.files()
        self._first_marked_start = self.open_recordings.ensure()
        try:
            self._journal = Journal(self.journal_dir,
                                    rotate_bytes=self.settings.rotate_mb << 20,
                                    rotate_daily=self.settings.rotate_daily)
        except BaseException:
            self._release_lock()
            raise

    def _release_lock(self) -> None:
        if self._claim is not None:
            self._claim.release()
            self._claim = None


def _sink(config: Config, min_maxlen: int = DEFAULT_MIN_MAXLEN,
          window: int = DEFAULT_WINDOW) -> RedisSink:
    """The Redis side as configured: stream caps (raised to the safe floor), window TTL."""
    redis = config.redis
    assert redis is not None
    for key, value in (("cdr_stream_maxlen", redis.cdr_stream_maxlen),
                       ("events_stream_maxlen", redis.events_stream_maxlen)):
        if 0 < value < min_maxlen:
            log.warning("records: redis.%s = %d is below %d (twice a publication batch); "
                        "using %d, so that no entry goes before its batch is confirmed",
                        key, value, min_maxlen, min_maxlen)
    return RedisSink(redis.url, redis.prefix,
                     marker_ttl=config.records.marker_ttl_days * 86_400,
                     cdr_maxlen=redis.cdr_stream_maxlen,
                     events_maxlen=redis.events_stream_maxlen, min_maxlen=min_maxlen,
                     window=window)


@dataclass(slots=True)
class SweepOnce:
    """What ``mediacore retention sweep`` did; ``publish_error`` if Redis refused it."""

    report: SweepReport
    publish_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.report.ok and self.publish_error is None


async def sweep_once(config: Config, *, nodes: Sequence[str] | None = None,
                     clock: Callable[[], datetime] = utc_now) -> SweepOnce:
    """One retention sweep outside the server (``mediacore retention sweep``).

    Sweeps the recordings of ``nodes`` (default: the configured
    ``records.node``), one node after the other, each by its own journal
    (deletions are appended to that node's journal) and by the Redis hashes
    naming that node. Safe beside running servers: journal appends are
    ``flock``ed, file deletion tolerates a file the other sweeper already
    took, and Redis drops the second deletion event by its marker. The
    deletions are published here, directly; if Redis is down they wait in
    the node's journal for that node's publisher (at its next start at the
    latest).
    """
    storage = Path(config.storage.dir)
    total = SweepOnce(SweepReport())
    for node in (nodes if nodes is not None else [config.records.node]):
        result = await _sweep_node(config, storage, node, clock)
        total.report.deleted += result.report.deleted
        total.report.failed += result.report.failed
        total.report.skipped += result.report.skipped
        total.report.redis_error = total.report.redis_error or result.report.redis_error
        total.publish_error = total.publish_error or result.publish_error
    return total


def sweep_nodes(config: Config) -> list[str]:
    """Every node with a journal below the storage dir (``retention sweep --all-nodes``)."""
    return [node for node, _ in journal_dirs(Path(config.storage.dir)) if node]


async def _sweep_node(config: Config, storage: Path, node: str,
                      clock: Callable[[], datetime]) -> SweepOnce:
    directory = journal_dir(storage, node)
    # Its own scratch dir: the node's server may be running, and owns retention/.
    scratch = directory / f"retention-sweep-{os.getpid()}-{secrets.token_hex(4)}"
    index = await asyncio.to_thread(RecordingIndex.from_journal, directory, scratch,
                                    now=clock().timestamp(), only_due=True)
    journal: Journal | None = None
    settings = config.records

    async def append(type: str, data: dict[str, Any]) -> Position:
        nonlocal journal
        if journal is None:
            journal = await asyncio.to_thread(
                Journal, directory, rotate_bytes=settings.rotate_mb << 20,
                rotate_daily=settings.rotate_daily)
        opened = journal
        positions = await asyncio.to_thread(opened.append, [(type, data)], sync=True)
        return positions[0]

    sink = _sink(config) if config.redis is not None else None
    try:
        sweeper = Sweeper(storage_dir=storage, node=node, index=index,
                          journal=append, sink=sink, clock=clock)
        result = SweepOnce(await sweeper.sweep())
        if sink is not None and result.report.deleted:
            entries = [Entry("recording-deleted", d.to_fields(), "", Position(0, 0))
                       for d in result.report.deleted]
            try:
                await sink.publish(entries)
            except (RedisError, OSError) as error:
                result.publish_error = f"{type(error).__name__}: {error}"
        elif sink is not None and result.report.redis_error:
            result.publish_error = result.report.redis_error
        return result
    finally:
        if sink is not None:
            with contextlib.suppress(Exception):
                await sink.close()
        if journal is not None:
            journal.close()
        await asyncio.to_thread(index.discard)
