"""The ``[metrics]`` listener: routes, the collector, the event-loop lag probe.

:class:`MetricsService` is created by the server when ``[metrics] listen``
is set. :meth:`MetricsService.start` opens the socket (before the SIP
socket, so a port clash stops start-up with an error naming
``metrics.listen``) and starts the loop-lag probe; everything runs on the
server's own event loop, which is the point of /healthz.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mediacore.metrics.collector import Metrics
from mediacore.metrics.health import liveness, readiness_problems
from mediacore.metrics.http import HttpListener, Request, Response, text
from mediacore.metrics.rtp import RelayTotals

if TYPE_CHECKING:
    from mediacore.config import MetricsConfig
    from mediacore.metrics.collector import ServerView
    from mediacore.metrics.health import HealthView

    class View(ServerView, HealthView):  # what the server offers both
        pass

#: Seconds between loop-lag samples: cheap (one timer handle), fine enough.
LAG_INTERVAL = 0.25


class MetricsService:
    def __init__(self, config: MetricsConfig, view: View) -> None:
        self.config = config
        self.view = view
        self.metrics = Metrics()
        self.metrics.collect_server(view)
        self.listener = HttpListener(self.handle)
        self._lag_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def relay(self) -> RelayTotals:
        """Where the engine's ``on_session_closed`` hook adds each session's counters."""
        return self.metrics.relay

    def observe_setup(self, seconds: float) -> None:
        self.metrics.call_setup.observe(seconds)

    async def start(self) -> None:
        listen = self.config.listen
        try:
            await self.listener.start(listen.host, listen.port)
        except OSError as error:
            raise OSError(error.errno, f"metrics.listen {listen}: cannot listen: "
                                       f"{error.strerror or error}") from None
        self._loop = asyncio.get_running_loop()
        self._arm_lag_probe()

    async def close(self) -> None:
        if self._lag_timer is not None:
            self._lag_timer.cancel()
            self._lag_timer = None
        await self.listener.close()

    # --- routes --------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        path = request.path
        if path == "/metrics":
            return Response(200, generate_latest(self.metrics.registry),
                            content_type=CONTENT_TYPE_LATEST)
        if path == "/healthz":
            return text(200, liveness(self.view))
        if path == "/readyz":
            problems = readiness_problems(self.view)
            if problems:
                return text(503, "".join(f"{p}\n" for p in problems))
            return text(200, "ready\n")
        return text(404, "not found: /metrics, /healthz and /readyz are served here\n")

    # --- loop lag ------------------------------------------------------------------

    def _arm_lag_probe(self) -> None:
        assert self._loop is not None
        due = self._loop.time() + LAG_INTERVAL
        self._lag_timer = self._loop.call_at(due, self._lag_sample, due)

    def _lag_sample(self, due: float) -> None:
        assert self._loop is not None
        self.metrics.loop_lag.observe(max(0.0, self._loop.time() - due))
        self._arm_lag_probe()
