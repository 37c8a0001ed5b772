"""The running server: the asyncio edge around the sans-IO planes.

Everything that decides lives in ``sip.endpoint`` and ``calls``; this module
only moves their outputs to sockets, feeds them the loop's clock, keeps one
timer armed for the earliest transaction deadline, and handles signals.
Config errors surface before any socket opens (``load_config`` runs first).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from pathlib import Path

from mediacore import __version__
from mediacore.calls.b2bua import B2BUA
from mediacore.config import Config, ConfigError, example_config_path, load_config
from mediacore.sip.endpoint import Output, SipEndpoint, Transmit
from mediacore.sip.message import ParseError
from mediacore.sip.transport import Peer, SipTransports

log = logging.getLogger("mediacore")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Server:
    """One mediacore process: SIP transports, endpoint, B2BUA, timers."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.endpoint = SipEndpoint(config.sip, user_agent=f"mediacore/{__version__}")
        self.b2bua = B2BUA(config, self.endpoint)
        self.transports = SipTransports(
            self._on_message,
            self._on_stream_error,
            max_message_size=config.sip.limits.max_message_size,
            tcp_idle_timeout=config.sip.tcp_idle_timeout,
        )
        self._timer: asyncio.TimerHandle | None = None
        self._stopping = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    async def start(self) -> None:
        await self.transports.listen(self.config.sip.listen)

    def stop(self) -> None:
        self._stopping.set()

    async def wait_stopped(self) -> None:
        await self._stopping.wait()

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await self.transports.close()

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
            else:
                try:
                    pending += self.b2bua.handle(output, now)
                except Exception:
                    log.exception("call control failed on %s", type(output).__name__)
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self.endpoint.next_deadline()
        if self._timer is not None:
            if deadline is not None and self._timer.when() == deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch(self.endpoint.handle_timer(self._now()))


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)


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


async def _serve(config: Config) -> int:
    tune_garbage_collector()
    server = Server(config)
    try:
        await server.start()
    except OSError as error:
        log.error("cannot listen: %s", error)
        return 1
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, server.stop)
    listening = ", ".join(str(a) for a in config.sip.listen)
    log.info("mediacore %s ready: %s; listening on %s", __version__, config.source, listening)
    await server.wait_stopped()
    log.info("stopping")
    await server.close()
    return 0


def serve(config_path: str | None) -> int:
    """``mediacore serve``: validate the config, then run until SIGTERM/SIGINT."""
    configure_logging()
    try:
        if config_path is None:
            # The bundled example keeps its storage under the working directory.
            config = load_config(example_config_path(), base_dir=Path.cwd())
        else:
            config = load_config(config_path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run(_serve(config))
    return uvloop.run(_serve(config))
