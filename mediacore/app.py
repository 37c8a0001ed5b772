"""The running server: the asyncio edge around the sans-IO planes.

Everything that decides lives in ``sip.endpoint`` and ``calls``; this module
only moves their outputs to sockets, feeds them the loop's clock, keeps one
timer armed for the earliest transaction deadline, and handles signals.
Config errors surface before any socket opens (``load_config`` runs first).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import logging
import signal
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from mediacore import __version__, checks, logs
from mediacore.calls.b2bua import B2BUA
from mediacore.calls.call import Call, CallState, LocalContact
from mediacore.calls.engine_media import EngineMedia
from mediacore.calls.latching import LegLatching, call_leg_latching
from mediacore.calls.media import Side
from mediacore.calls.recording_pump import RecordingPump
from mediacore.calls.voicemail import SpoolInUse, VoicemailSender, compose, spool_dir_for
from mediacore.config import Config, ConfigError, example_config_path, load_config
from mediacore.diskspace import FreeSpace
from mediacore.host_checks import open_file_limit, raise_open_file_limit, tcp_connection_budget
from mediacore.metrics.service import MetricsService
from mediacore.netinfo import host_broadcasts
from mediacore.records import RecordingHandle, RecordsError, RecordsService, WavFacts
from mediacore.rtp.engine import DtmfEvent, Leg, MediaEngine, MediaEvent
from mediacore.rtp.player import PromptLibrary
from mediacore.rtp.ports import PortPool
from mediacore.sdnotify import Notifier
from mediacore.sip.endpoint import Output, SipEndpoint, Transmit
from mediacore.sip.message import ParseError
from mediacore.sip.steering import priority_sources
from mediacore.sip.transport import TCP, UDP, Peer, SipTransports

log = logging.getLogger("mediacore")


class Server:
    """One mediacore process: SIP transports, endpoint, B2BUA, media engine, timers."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._loop = asyncio.get_running_loop()
        self.endpoint = SipEndpoint(config.sip)
        self.transports = SipTransports(
            self._on_message,
            self._on_stream_error,
            max_message_size=config.sip.limits.max_message_size,
            tcp_idle_timeout=config.sip.tcp_idle_timeout,
            tcp_message_timeout=config.sip.tcp_message_timeout,
            tcp_connections_per_source=config.sip.tcp_connections_per_source,
            # Idle TCP peers must never take the descriptors of a call's RTP.
            tcp_max_connections=tcp_connection_budget(config, open_file_limit()),
            # Carriers' and targets' datagrams get a receive queue of their own.
            priority=priority_sources(config) if config.sip.priority_socket else None,
        )
        self.engine = MediaEngine(config.rtp.address, PortPool(config.rtp.port_range))
        # Recordings stop while less than reserve_mb is free, so that the
        # journal keeps room for the CDRs of the calls that go on unrecorded.
        self.recording_pump = RecordingPump(self.engine, free_space=FreeSpace(
            config.storage.dir / "recordings", int(config.storage.reserve_mb * 2**20)))
        self.prompts = PromptLibrary(config.storage.announcements)
        self.records = RecordsService(config)
        self.records.on_journal_state = self._journal_state
        self.voicemail = VoicemailSender(config.smtp,
                                         spool_dir_for(config.storage.dir, config.records.node),
                                         on_delivered=self.records.record_voicemail_delivery)
        self.b2bua: B2BUA | None = None
        #: Bytes of the recordings finished so far (mediacore_recordings_written_bytes_total).
        self.recorded_bytes = 0
        # [metrics]: the listener opens in start(); the engine hands it every
        # session's last counters, the B2BUA every call's setup time.
        self.metrics = MetricsService(config.metrics, self) if config.metrics else None
        if self.metrics is not None:
            self.engine.on_session_closed = self.metrics.relay.session_closed
        self._call_of_session: dict[int, str] = {}
        # uvloop's call_at returns a plain Handle (no .when()) for a moment
        # already past, so the deadline the timer is armed for is kept here.
        self._timer: asyncio.Handle | None = None
        self._timer_at: float | None = None
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._deliveries: set[asyncio.Task[object]] = set()
        # Loop time to wall time, fixed at start: CDR times follow the
        # monotonic clock, so a clock step mid-call cannot bend a duration.
        self._wall_offset = time.time() - self._loop.time()
        # systemd's Type=notify (a no-op elsewhere): ready, watchdog, reload, stop.
        self.notifier = Notifier.from_environment()

    async def start(self) -> None:
        # Records and the voicemail spool first: a node another process runs
        # on this storage dir must stop us before the SIP socket opens.
        await self.records.start()
        await self.voicemail.start()
        if self.metrics is not None:
            await self.metrics.start()  # a clash names metrics.listen, before SIP opens
        await self.transports.listen(self.config.sip.listen)
        if self.transports.tcp_servers:
            log.info("tcp: at most %d inbound connections, %d per source address (open-file "
                     "limit %s)", self.transports.tcp_max_connections,
                     self.transports.tcp_connections_per_source,
                     open_file_limit() or "unlimited")
        # What a crash left in recordings/ is adopted or destroyed in the
        # background (records/orphans.py): readiness does not wait for it; the
        # markers it works from were taken in records.start(), before SIP opened.
        self.records.start_recovery()
        self.b2bua = B2BUA(
            self.config,
            self.endpoint,
            media_factory=self._media_for,
            local=self._local_contact(),
            recordings_dir=self.config.storage.dir / "recordings",
            on_call_ended=self._call_ended,
            wall_clock=lambda now: datetime.fromtimestamp(now + self._wall_offset, UTC),
            node=self.config.records.node,
            on_setup=self.metrics.observe_setup if self.metrics is not None else None,
            broadcasts=host_broadcasts(),
        )
        self.engine.start(self._loop, self._on_media_events)
        self.recording_pump.start(self._loop)
        self._tasks.append(self._loop.create_task(self._watch_inactivity()))

    def _local_contact(self) -> LocalContact:
        udp = self.transports.bound(UDP)
        bound = udp[0] if udp else self.transports.bound(TCP)[0]
        return LocalContact(self.config.sip.advertised_address, bound.port, bound.transport)

    def _media_for(self, call_id: str) -> EngineMedia:
        media = EngineMedia(call_id, self.engine, self.prompts, self._prompt_done,
                            self.recording_pump, open_recordings=self.records.open_recordings,
                            latching=functools.partial(self._latching_for, call_id))
        self._call_of_session[media.session.id] = call_id
        return media

    def _latching_for(self, call_id: str, side: Side) -> LegLatching:
        """A leg's latching policy, read when the call sets the leg's SDP address
        (the call exists by then; its number and SIP peers decide)."""
        call = self.b2bua.calls.get(call_id) if self.b2bua is not None else None
        return call_leg_latching(self.config.rtp, call, side)

    def _prompt_done(self, call_id: str) -> None:
        assert self.b2bua is not None
        self._dispatch(self.b2bua.announcement_finished(call_id, self._now()))

    def _on_media_events(self, events: list[MediaEvent]) -> None:
        assert self.b2bua is not None
        for event in events:
            if isinstance(event, DtmfEvent) and event.leg is Leg.A and event.digit:
                call_id = self._call_of_session.get(event.session.id)
                if call_id is not None:
                    self._dispatch(self.b2bua.dtmf(call_id, event.digit, self._now()))

    def _journal_state(self, writable: bool, problem: str) -> None:
        """No new calls while their CDRs would have nowhere to go (503, Retry-After)."""
        if writable:
            self.endpoint.unavailable = ""
            log.info("journal writable again: taking new calls")
        else:
            self.endpoint.unavailable = f"journal unwritable ({problem})"
            log.error("journal unwritable (%s): refusing new calls with 503 until it is "
                      "writable again; %d records held in memory", problem,
                      self.records.journal_held)

    def _call_ended(self, call: Call) -> None:
        if isinstance(call.media, EngineMedia):
            self._call_of_session.pop(call.media.session.id, None)
        cdr = call.cdr()
        self.records.record_cdr(cdr)  # journal first, then Redis; never lost
        fields = cdr.to_fields()
        # INFO says how the call ended, never who called: the CDR itself (with
        # the caller's number when shown) belongs to the journal and Redis,
        # and is logged whole at DEBUG only, where a withheld caller is
        # already "anonymous" in it (docs/contracts.md, "Logs").
        log.info("call %s: ended %s (%s), %s s billable, hung up by %s%s", call.id,
                 fields["disposition"], fields["sip_status"] or "-", fields["duration"],
                 fields["hangup_by"] or "-",
                 f", recording {fields['recording']}" if fields["recording"] else "")
        if log.isEnabledFor(logging.DEBUG):
            log.debug("call %s: CDR %s", call.id, json.dumps(fields))
        recording = call.recording
        if recording is not None:
            self.recorded_bytes += recording.bytes
        if recording is not None and call.voicemail is None:
            self.records.record_recording(RecordingHandle.create(
                id=call.recording_id, call_id=call.id, number=call.number.number,
                owner=call.number.owner, path=recording.path, created=cdr.end,
                retention_days=call.number.retention_days, node=cdr.node,
                facts=WavFacts(format="wav", sample_rate=recording.sample_rate,
                               channels=recording.channels,
                               duration=Decimal(f"{recording.duration:.3f}"),
                               bytes=recording.bytes, sha256=recording.sha256)))
        voicemail = call.voicemail
        if voicemail is not None and call.number.voicemail_email:
            message = compose(
                voicemail.path, caller=call.caller.record_value or "unknown",
                number=call.number.number, owner=call.number.owner, received_at=cdr.start,
                duration=voicemail.duration, sender=self.config.smtp.sender,
                recipient=call.number.voicemail_email, call_id=call.id)
            task = self._loop.create_task(self.voicemail.submit(message, voicemail.path))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)
            # Spooled (or not: then a restart destroys what is left, as voicemail
            # is not kept): the recording's marker has done its job either way.
            name = voicemail.path.name
            task.add_done_callback(lambda _: self.records.open_recordings.discard(name))

    async def _watch_inactivity(self) -> None:
        timeout = self.config.rtp.inactivity_timeout
        while True:
            await asyncio.sleep(1.0)
            assert self.b2bua is not None
            for call in list(self.b2bua.calls.values()):
                media = call.media
                if (call.state in (CallState.BRIDGED, CallState.ANSWERING)
                        and isinstance(media, EngineMedia) and media.idle_seconds() > timeout):
                    self._dispatch(self.b2bua.media_inactive(call.id, self._now()))

    def stop(self) -> None:
        self._stopping.set()

    async def wait_stopped(self) -> None:
        await self._stopping.wait()

    async def drain(self, timeout: float) -> None:
        """Refuse new calls (503), let calls in progress end for ``timeout`` s, then end them."""
        assert self.b2bua is not None
        self.endpoint.refuse_new_calls = True
        deadline = self._loop.time() + timeout
        if self.b2bua.calls:
            log.info("draining: %d calls in progress, up to %.0fs", len(self.b2bua.calls),
                     timeout)
        while self.b2bua.calls and self._loop.time() < deadline:
            await asyncio.sleep(0.1)
        if self.b2bua.calls:
            log.info("drain timeout: ending %d calls", len(self.b2bua.calls))
            self._dispatch(self.b2bua.hang_up_all(self._now(), "server shutting down"))
            # Give the BYEs their first transmissions and a chance of a 200.
            await asyncio.sleep(0.5)

    def reload(self, path: str | None) -> None:
        """SIGHUP: a new number plan for new calls; a bad file changes nothing.

        systemd hears RELOADING=1 first and READY=1 once the outcome is in
        force, whichever it is (the old plan still serves after a refusal).
        """
        self.notifier.reloading()
        try:
            self._reload(path)
        finally:
            numbers = len(self.b2bua.plan) if self.b2bua is not None else 0
            self.notifier.ready(f"serving {numbers} numbers")

    def _reload(self, path: str | None) -> None:
        if path is None:
            log.info("reload: no config file to reload (running on the bundled example)")
            return
        try:
            config = load_config(path)
        except ConfigError as error:
            log.error("reload refused, keeping the running config:\n%s", error)
            return
        found = checks.problems(config)
        if found:
            log.error("reload refused, keeping the running config:\n%s",
                      "\n".join(f"{path}: {problem}" for problem in found))
            return
        assert self.b2bua is not None
        try:
            self.b2bua.reload(config)
        except ValueError as error:
            log.error("reload refused, keeping the running config: %s", error)
            return
        # New targets get the priority socket; [sip] itself is read at start only.
        self.transports.set_priority(priority_sources(replace(config, sip=self.config.sip)))
        if config.sip.listen != self.config.sip.listen or config.rtp != self.config.rtp:
            log.warning("reload: listen addresses and [rtp] take effect only on restart")
        log.info("reloaded %s: %d numbers", path, len(config.numbers))

    async def close(self) -> None:
        if self._deliveries:
            # Let voicemails that just ended reach the spool (then the mail
            # server, or the next start); never cancel one half-spooled.
            await asyncio.wait(self._deliveries, timeout=30)
        await self.voicemail.close()
        for task in self._tasks:
            task.cancel()
        if self._timer is not None:
            self._timer.cancel()
        await self.transports.close()
        self.endpoint.flush_refusals(self._now())  # the last minute's refused traffic
        if self.metrics is not None:
            await self.metrics.close()
        self.recording_pump.close()
        self.engine.close()
        await self.records.close()

    # --- the edge ------------------------------------------------------------------

    def _now(self) -> float:
        return self._loop.time()

    def _on_message(self, data: bytes, peer: Peer) -> None:
        self._dispatch(self.endpoint.receive(data, peer, self._now()))

    def _on_stream_error(self, error: ParseError, data: bytes, peer: Peer) -> None:
        self._dispatch(self.endpoint.refuse_stream(data, error, peer))

    def _dispatch(self, outputs: list[Output]) -> None:
        now = self._now()
        pending = list(outputs)
        for output in pending:  # the TU's outputs are appended and handled in turn
            if isinstance(output, Transmit):
                self.transports.send(output.data, output.peer)
            elif self.b2bua is not None:
                try:
                    pending += self.b2bua.handle(output, now)
                except Exception:
                    log.exception("call control failed on %s", type(output).__name__)
        self._arm_timer()

    def _arm_timer(self) -> None:
        candidates = [self.endpoint.next_deadline()]
        if self.b2bua is not None:
            candidates.append(self.b2bua.next_deadline())
        deadline = min((d for d in candidates if d is not None), default=None)
        if self._timer is not None:
            if deadline is not None and self._timer_at == deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline

    def _on_timer(self) -> None:
        self._timer = None
        now = self._now()
        outputs = self.endpoint.handle_timer(now)
        if self.b2bua is not None:
            outputs += self.b2bua.handle_timer(now)
        self._dispatch(outputs)


def tune_garbage_collector() -> None:
    """Fewer, cheaper cyclic collections for a server that holds many live objects.

    Every SIP message allocates dozens of small objects and completed
    transactions live on for Timer J/K (32 s over UDP), so at a few thousand
    messages a second the default thresholds run full collections over
    hundreds of thousands of live objects again and again: measured, half
    the CPU per OPTIONS went to the collector (benchmarks/RESULTS.md). What
    exists at start-up (modules, config) is frozen out of collection, and
    generation 0 collects every 50,000 allocations instead of 700.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def _serve(config: Config, config_path: str | None) -> int:
    tune_garbage_collector()
    server = Server(config)
    try:
        await server.start()
    except (OSError, RecordsError, SpoolInUse) as error:
        log.error("cannot start: %s", error)
        server.notifier.status(f"cannot start: {error}")
        await server.close()
        server.notifier.close()
        return 1
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, server.stop)
    loop.add_signal_handler(signal.SIGHUP, server.reload, config_path)
    listening = ", ".join(str(a) for a in config.sip.listen)
    log.info("mediacore %s ready: %s; listening on %s", __version__, config.source, listening)
    server.notifier.ready(f"listening on {listening}")
    server.notifier.start_watchdog(loop)  # pings only while this loop runs
    await server.wait_stopped()
    log.info("stopping: no new calls")
    server.notifier.stopping("draining: no new calls")
    await server.drain(config.sip.drain_timeout)
    await server.close()
    server.notifier.close()
    log.info("stopped")
    return 0


def serve(config_path: str | None, log_level: str | None = None) -> int:
    """``mediacore serve``: validate the config, then run until SIGTERM/SIGINT.

    ``log_level`` (``--log-level``) overrides ``[log] level``; config errors go
    to stderr as plain lines whatever ``[log] format`` says, since the config
    that would say it is the one that failed.
    """
    try:
        if config_path is None:
            # The bundled example keeps its storage under the working directory.
            config = load_config(example_config_path(), base_dir=Path.cwd())
        else:
            config = load_config(config_path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    # Up to LimitNOFILE's hard limit, before the check that the port range fits it.
    raise_open_file_limit()
    found = checks.problems(config)
    if found:
        for problem in found:
            print(f"{config.source}: {problem}", file=sys.stderr)
        return 1
    logs.configure(getattr(logging, (log_level or config.log.level).upper()), config.log.format)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run(_serve(config, config_path))
    return uvloop.run(_serve(config, config_path))
