"""The server's metrics as Prometheus families, built at scrape time.

The SIP endpoint, the B2BUA, the RTP engine, the recording pump, the
records service and the voicemail sender each keep plain integer counters
(or expose their state); none of them imports prometheus_client. This
collector reads them when /metrics is scraped and turns them into metric
families, so the per-message and per-packet paths pay nothing for metrics.
The only Prometheus objects updated outside a scrape are the histograms
observed once per call (setup time, jitter) and the event-loop lag probe.

Naming follows the Prometheus conventions: the ``mediacore_`` prefix, base
units in the name (``_seconds``, ``_bytes``), ``_total`` on counters; label
values come from small fixed sets (never a call id or a phone number).
docs/metrics.md lists every metric.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mediacore import __version__
from mediacore.metrics.rtp import DIRECTIONS, JITTER_BUCKETS, RelayTotals

if TYPE_CHECKING:
    from mediacore.calls.b2bua import B2BUA
    from mediacore.calls.recording_pump import RecordingPump
    from mediacore.calls.voicemail import VoicemailSender
    from mediacore.records import RecordsService
    from mediacore.rtp.engine import MediaEngine
    from mediacore.sip.endpoint import SipEndpoint
    from mediacore.sip.transport import SipTransports

#: Call setup, seconds: INVITE received to our 200 (or to the final response).
#: A caller on a target's ring timeout of 20 s or more lands in the top buckets.
SETUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60)
#: Event-loop lag, seconds: how late a timer fires. SIP T1 is 0.5 s.
LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class ServerView(Protocol):
    """What the collector reads: the running server's parts (mediacore.app.Server)."""

    endpoint: SipEndpoint
    transports: SipTransports
    b2bua: B2BUA | None
    engine: MediaEngine
    recording_pump: RecordingPump
    records: RecordsService
    voicemail: VoicemailSender
    recorded_bytes: int


class Metrics:
    """Our own registry: the collector, the process collector and the histograms."""

    def __init__(self) -> None:
        from prometheus_client import ProcessCollector

        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        self.call_setup = Histogram(
            "mediacore_call_setup_seconds",
            "Call setup time: INVITE received to our 200 OK, or to the final response of a "
            "call that was not answered", buckets=SETUP_BUCKETS, registry=self.registry)
        self.loop_lag = Histogram(
            "mediacore_event_loop_lag_seconds",
            "How late the event loop ran a timer (sampled every 0.25 s)",
            buckets=LOOP_LAG_BUCKETS, registry=self.registry)
        self.jitter = Histogram(
            "mediacore_rtp_jitter_seconds",
            "RFC 3550 interarrival jitter of each call's stream at its end, by direction",
            ["direction"], buckets=JITTER_BUCKETS, registry=self.registry)
        self.relay = RelayTotals(self.jitter)

    def collect_server(self, view: ServerView) -> ServerCollector:
        collector = ServerCollector(view, self.relay)
        self.registry.register(collector)
        return collector


class ServerCollector(Collector):
    """Reads the server's counters and state into metric families at each scrape."""

    def __init__(self, view: ServerView, relay: RelayTotals) -> None:
        self.view = view
        self.relay = relay
        # RTP counters of open sessions can step back (RFC 3550 loss shrinks
        # when a late packet arrives): a counter must not, so each is
        # exported as the highest value it has had.
        self._high: dict[tuple[str, str], int] = {}

    def describe(self) -> Iterable[Metric]:
        return []  # collected fresh at every scrape; nothing to check at register

    def collect(self) -> Iterator[Metric]:
        yield _info()
        yield from self._sip()
        yield from self._calls()
        yield from self._rtp()
        yield from self._recordings()
        yield from self._records()
        yield from self._voicemail()

    # --- SIP -----------------------------------------------------------------------

    def _sip(self) -> Iterator[Metric]:
        endpoint = self.view.endpoint
        c = endpoint.counters
        family = CounterMetricFamily("mediacore_sip_requests_received",
                                     "SIP requests received (retransmissions included)",
                                     labels=["method"])
        for method, value in sorted(c.requests_received.items()):
            family.add_metric([method], value)
        yield family
        family = CounterMetricFamily("mediacore_sip_responses_sent",
                                     "SIP responses sent (first transmissions), by the "
                                     "method answered and the status", labels=["method", "status"])
        for (method, status), value in sorted(c.responses_sent.items()):
            family.add_metric([method, str(status)], value)
        yield family
        family = CounterMetricFamily("mediacore_sip_requests_sent",
                                     "SIP requests sent (first transmissions; ACKs included)",
                                     labels=["method"])
        for method, value in sorted(c.requests_sent.items()):
            family.add_metric([method], value)
        yield family
        family = CounterMetricFamily("mediacore_sip_responses_received",
                                     "SIP responses received, by the method of the request "
                                     "and the status", labels=["method", "status"])
        for (method, status), value in sorted(c.responses_received.items()):
            family.add_metric([method, str(status)], value)
        yield family
        yield CounterMetricFamily("mediacore_sip_retransmissions",
                                  "SIP messages re-sent by transaction timers (A, E, G)",
                                  value=c.retransmissions)
        family = CounterMetricFamily("mediacore_sip_transaction_timeouts",
                                     "SIP transactions that timed out, by RFC 3261 timer: B "
                                     "(INVITE unanswered), F (other request unanswered), H "
                                     "(no ACK for an error), L (no ACK for a 200)",
                                     labels=["timer"])
        for timer in ("B", "F", "H", "L"):
            family.add_metric([timer], c.timeouts.get(timer, 0))
        yield family
        yield CounterMetricFamily("mediacore_sip_malformed_messages",
                                  "SIP messages that did not parse or failed their checks",
                                  value=c.malformed)
        family = GaugeMetricFamily("mediacore_sip_transactions",
                                   "SIP transactions alive (including those absorbing "
                                   "retransmissions)", labels=["side"])
        family.add_metric(["server"], len(endpoint.transactions.server))
        family.add_metric(["client"], len(endpoint.transactions.client))
        yield family
        yield from self._refusals()
        yield GaugeMetricFamily("mediacore_draining",
                                "1 while the server drains (SIGTERM): new calls and "
                                "OPTIONS get 503", value=int(endpoint.refuse_new_calls))

    def _refusals(self) -> Iterator[Metric]:
        """Hostile traffic: the untrusted screen's refusals, the TCP limits."""
        from mediacore.sip.screening import ANSWER_OUTCOMES, REFUSAL_REASONS
        from mediacore.sip.transport import (
            CLOSED_IDLE,
            CLOSED_MESSAGE_TIMEOUT,
            REFUSED_GLOBAL,
            REFUSED_PER_SOURCE,
        )

        c = self.view.endpoint.counters
        family = CounterMetricFamily("mediacore_sip_refused_messages",
                                     "SIP messages refused before the parse, by reason: "
                                     "untrusted (a request outside a dialog from outside "
                                     "sip.trusted_sources), unreadable (from such a source, "
                                     "no SIP start line), refusal-ack (the ACK of one of our "
                                     "stateless 403s)", labels=["reason"])
        for reason in REFUSAL_REASONS:
            family.add_metric([reason], c.messages_refused.get(reason, 0))
        yield family
        family = CounterMetricFamily("mediacore_sip_refusal_answers",
                                     "What the refused untrusted requests got: sent (a 403), "
                                     "rate-limited (no 403: over sip.untrusted_answer_rate), "
                                     "not-answered (sip.untrusted = drop)", labels=["outcome"])
        for outcome in ANSWER_OUTCOMES:
            family.add_metric([outcome], c.refusal_answers.get(outcome, 0))
        yield family
        transports = self.view.transports
        lanes = {"priority": 0, "other": 0, "single": 0}
        for listener in (*transports.udp.values(), *transports.udp_other.values()):
            lanes[listener.lane] = lanes.get(listener.lane, 0) + listener.received
        family = CounterMetricFamily("mediacore_sip_udp_datagrams_received",
                                     "UDP datagrams read, by socket: priority (from "
                                     "sip.trusted_sources and the targets' hosts), other "
                                     "(everyone else), single (a listener not steered)",
                                     labels=["socket"])
        for lane, value in lanes.items():
            family.add_metric([lane], value)
        yield family
        yield GaugeMetricFamily("mediacore_sip_tcp_connections",
                                "Inbound SIP TCP connections open", value=transports.inbound)
        yield GaugeMetricFamily("mediacore_sip_tcp_connections_limit",
                                "Inbound SIP TCP connections allowed at once (what the "
                                "open-file limit leaves after the RTP ports, or "
                                "sip.tcp_max_connections)", value=transports.tcp_max_connections)
        t = transports.counters
        family = CounterMetricFamily("mediacore_sip_tcp_connections_refused",
                                     "Inbound TCP connections accepted and closed at once, by "
                                     "the limit they hit: per-source, global",
                                     labels=["reason"])
        for reason in (REFUSED_PER_SOURCE, REFUSED_GLOBAL):
            family.add_metric([reason], t.tcp_refused.get(reason, 0))
        yield family
        family = CounterMetricFamily("mediacore_sip_tcp_connections_closed",
                                     "TCP connections we closed, by deadline: message-timeout "
                                     "(no complete message within sip.tcp_message_timeout of "
                                     "its first byte), idle", labels=["reason"])
        for reason in (CLOSED_MESSAGE_TIMEOUT, CLOSED_IDLE):
            family.add_metric([reason], t.tcp_closed.get(reason, 0))
        yield family

    # --- calls ---------------------------------------------------------------------

    def _calls(self) -> Iterator[Metric]:
        from mediacore.calls.b2bua import DISPOSITIONS
        from mediacore.calls.call import CallState

        b2bua = self.view.b2bua
        states = dict.fromkeys((s.value for s in CallState if s is not CallState.ENDED), 0)
        refused = dict(self.view.endpoint.counters.calls_refused)
        ended: dict[str, int] = dict.fromkeys(DISPOSITIONS, 0)
        started = 0
        if b2bua is not None:
            for call in b2bua.calls.values():
                state = call.state.value
                if state in states:
                    states[state] += 1
            started = b2bua.counters.started
            ended.update(b2bua.counters.ended)
            for reason, value in b2bua.counters.refused.items():
                refused[reason] = refused.get(reason, 0) + value
        family = GaugeMetricFamily("mediacore_calls_active", "Calls in progress, by state",
                                   labels=["state"])
        for state, value in states.items():
            family.add_metric([state], value)
        yield family
        yield CounterMetricFamily("mediacore_calls_started",
                                  "Calls accepted (routed, media allocated)", value=started)
        family = CounterMetricFamily("mediacore_calls_ended",
                                     "Calls ended, by CDR disposition", labels=["disposition"])
        for disposition, value in ended.items():
            family.add_metric([disposition], value)
        yield family
        family = CounterMetricFamily("mediacore_calls_refused",
                                     "New INVITEs refused before a call existed: not-found "
                                     "(404), routing, no-media (503), draining (503), "
                                     "untrusted (403), loop (482)", labels=["reason"])
        for reason in ("not-found", "routing", "no-media", "draining", "untrusted", "loop"):
            family.add_metric([reason], refused.get(reason, 0))
        yield family
        family = CounterMetricFamily("mediacore_calls_foreign_requests",
                                     "Requests for a live call from an address that is "
                                     "neither its peer's nor trusted (403; ACK dropped)",
                                     labels=["method"])
        foreign = b2bua.counters.foreign if b2bua is not None else {}
        for method in ("BYE", "CANCEL", "INVITE", "UPDATE", "INFO", "ACK"):
            family.add_metric([method], foreign.get(method, 0))
        for method, value in sorted(foreign.items()):
            if method not in ("BYE", "CANCEL", "INVITE", "UPDATE", "INFO", "ACK"):
                family.add_metric([method], value)
        yield family

    # --- RTP -----------------------------------------------------------------------

    def _rtp(self) -> Iterator[Metric]:
        engine = self.view.engine
        open_stats = engine.open_stats()
        totals = self.relay.snapshot(open_stats)
        yield GaugeMetricFamily("mediacore_rtp_engine_up",
                                "1 while the media engine's packet thread runs",
                                value=int(engine.running))
        yield GaugeMetricFamily("mediacore_rtp_sessions", "RTP relay sessions open (one per "
                                "call with media)", value=len(open_stats))
        for name, help_text, attribute in (
            ("mediacore_rtp_packets_received", "RTP packets received, by direction", "packets"),
            ("mediacore_rtp_received_bytes", "RTP bytes received (UDP payload), by direction",
             "bytes"),
            ("mediacore_rtp_packets_relayed", "RTP packets relayed to the other leg, by "
             "direction", "forwarded"),
            ("mediacore_rtp_packets_lost", "RTP packets lost before they reached us (RFC 3550: "
             "sequence gaps), by direction", "lost"),
            ("mediacore_rtcp_packets_received", "RTCP packets received, by direction",
             "rtcp_packets"),
            ("mediacore_rtp_dtmf_events", "RFC 4733 DTMF events seen, by direction",
             "dtmf_events"),
            ("mediacore_rtp_relatches", "nat legs whose latch moved after the latched "
             "source's silence (rtp.relatch_after), by direction", "relatches"),
        ):
            family = CounterMetricFamily(name, help_text, labels=["direction"])
            for direction in DIRECTIONS:
                family.add_metric([direction], self._monotonic(
                    name, direction, getattr(totals[direction], attribute)))
            yield family
        family = CounterMetricFamily("mediacore_rtp_packets_dropped",
                                     "Packets not relayed, by direction and reason: "
                                     "no_destination (no address for the other leg yet), "
                                     "send_error, garbage (not RTP/RTCP), strict (from an "
                                     "unexpected source on a strict leg: not the address "
                                     "SDP gave), foreign (from an unexpected source on a nat "
                                     "leg: not the latched one, or not on a signalled host)",
                                     labels=["direction", "reason"])
        for direction in DIRECTIONS:
            t = totals[direction]
            for reason, value in (("no_destination", t.no_destination),
                                  ("send_error", t.send_errors), ("garbage", t.garbage),
                                  ("strict", t.strict_dropped), ("foreign", t.foreign)):
                family.add_metric([direction, reason], self._monotonic(
                    "dropped:" + reason, direction, value))
        yield family
        yield CounterMetricFamily("mediacore_rtp_engine_events_dropped",
                                  "Engine events (DTMF, latches) lost because the loop did "
                                  "not poll in time", value=engine.events_dropped)
        pool = engine.port_pool
        yield GaugeMetricFamily("mediacore_rtp_port_pairs_in_use",
                                "RTP/RTCP port pairs held by calls", value=pool.in_use)
        yield GaugeMetricFamily("mediacore_rtp_port_pairs_free",
                                "RTP/RTCP port pairs that can be handed out now",
                                value=pool.available)
        yield GaugeMetricFamily("mediacore_rtp_port_pairs_capacity",
                                "RTP/RTCP port pairs in rtp.port_range", value=pool.capacity)
        yield GaugeMetricFamily("mediacore_rtp_port_pairs_held_elsewhere",
                                "Port pairs in rtp.port_range another process held when "
                                "tried", value=pool.held_elsewhere)
        yield CounterMetricFamily("mediacore_rtp_port_pairs_reused_early",
                                  "Port pairs handed out less than 30 s after their release "
                                  "(the range is small for the call rate)",
                                  value=pool.reused_early)

    def _monotonic(self, name: str, label: str, value: int) -> int:
        key = (name, label)
        high = self._high.get(key, 0)
        if value > high:
            self._high[key] = high = value
        return high

    # --- recordings ------------------------------------------------------------------

    def _recordings(self) -> Iterator[Metric]:
        totals = self.view.recording_pump.totals()
        yield GaugeMetricFamily("mediacore_recordings_active",
                                "Recordings being written (calls and voicemails)",
                                value=totals.active)
        yield CounterMetricFamily("mediacore_recordings_finished",
                                  "Recordings finished (calls and voicemails)",
                                  value=totals.finished)
        yield CounterMetricFamily("mediacore_recordings_written_bytes",
                                  "Bytes of finished recordings (WAV files as closed)",
                                  value=self.view.recorded_bytes)
        yield CounterMetricFamily("mediacore_recording_packets_late",
                                  "RTP packets that reached the recorder after their place "
                                  "in the file was written (both directions)",
                                  value=totals.late)
        yield CounterMetricFamily("mediacore_recording_packets_discarded",
                                  "RTP packets the recorder could not place (timestamps "
                                  "inconsistent with sequence numbers)", value=totals.discarded)
        yield CounterMetricFamily("mediacore_recording_failures",
                                  "Recordings that failed while being written (disk full, "
                                  "I/O error)", value=totals.failures)

    # --- records ---------------------------------------------------------------------

    def _records(self) -> Iterator[Metric]:
        records = self.view.records
        stats = records.stats()
        lag = records.lag()
        yield CounterMetricFamily("mediacore_journal_records_written",
                                  "Records (CDRs, recording handles) appended to the journal",
                                  value=stats.journaled)
        yield CounterMetricFamily("mediacore_journal_write_errors",
                                  "Journal appends that failed", value=stats.journal_errors)
        yield GaugeMetricFamily("mediacore_journal_unpublished_records",
                                "Records durable in the journal and not yet in Redis",
                                value=lag.pending if lag.enabled else 0)
        yield GaugeMetricFamily("mediacore_journal_oldest_unpublished_age_seconds",
                                "Age of the oldest record not yet in Redis",
                                value=lag.oldest_age if lag.enabled else 0.0)
        yield GaugeMetricFamily("mediacore_redis_up",
                                "1 while the last publication to Redis succeeded (0 also "
                                "when no [redis] is configured)",
                                value=int(lag.enabled and lag.redis_ok))
        yield CounterMetricFamily("mediacore_redis_published_records",
                                  "Records published to Redis (duplicates not counted)",
                                  value=stats.published)
        yield CounterMetricFamily("mediacore_redis_publish_errors",
                                  "Publication attempts to Redis that failed (each is "
                                  "retried with backoff)", value=stats.publish_errors)
        yield CounterMetricFamily("mediacore_redis_reconnects",
                                  "Times publication to Redis succeeded again after failing",
                                  value=stats.redis_reconnects)
        orphans = CounterMetricFamily("mediacore_orphan_recordings",
                                      "Recordings left by a crash and found at start: given "
                                      "a handle (adopted) or removed (destroyed)",
                                      labels=["outcome"])
        orphans.add_metric(["adopted"], stats.orphans_adopted)
        orphans.add_metric(["destroyed"], stats.orphans_destroyed)
        yield orphans
        yield CounterMetricFamily("mediacore_crashed_calls_recorded",
                                  "CDRs made at start for calls a crash cut short "
                                  "(recording_error crash)", value=stats.crashed_calls)

    # --- voicemail -------------------------------------------------------------------

    def _voicemail(self) -> Iterator[Metric]:
        sender = self.view.voicemail
        yield GaugeMetricFamily("mediacore_voicemail_spool_messages",
                                "Voicemails in the spool waiting for the mail server",
                                value=sender.backlog)
        yield CounterMetricFamily("mediacore_voicemail_delivered",
                                  "Voicemails accepted by the mail server",
                                  value=sender.delivered)
        yield CounterMetricFamily("mediacore_voicemail_smtp_failures",
                                  "Voicemail delivery attempts that failed and will be "
                                  "retried", value=sender.failed_attempts)
        yield CounterMetricFamily("mediacore_voicemail_refused",
                                  "Voicemails the mail server refused for good (kept in "
                                  "the spool's failed/)", value=sender.refused)


def _info() -> Metric:
    family = GaugeMetricFamily("mediacore_build_info", "The running mediacore version",
                               labels=["version"])
    family.add_metric([__version__], 1)
    return family
