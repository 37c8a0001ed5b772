"""The metrics collector's output and the HTTP listener's parser, sans sockets.

The collector is fed the real sans-IO parts (endpoint, B2BUA, pump, records
service and voicemail sender, not started) after a call flow with a fake
clock; its output is parsed back with prometheus_client's own parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mediacore.calls.b2bua import B2BUA
from mediacore.calls.recording_pump import RecordingPump
from mediacore.calls.voicemail import VoicemailSender
from mediacore.metrics.collector import Metrics
from mediacore.metrics.http import MAX_HEAD, Request, Response, head_end, parse_head
from mediacore.metrics.rtp import RelayTotals
from mediacore.records import RecordsService
from mediacore.rtp.engine import MediaEngine
from mediacore.rtp.ports import PortPool
from mediacore.sip.endpoint import SipEndpoint
from mediacore.sip.transport import SipTransports
from tests.unit.test_call_flows import CARRIER, Harness, in_dialog, ring_and_answer


@dataclass
class View:
    endpoint: SipEndpoint
    b2bua: B2BUA | None
    engine: MediaEngine
    recording_pump: RecordingPump
    records: RecordsService
    voicemail: VoicemailSender
    recorded_bytes: int = 0
    transports: SipTransports = field(
        default_factory=lambda: SipTransports(lambda data, peer: None))


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


@pytest.fixture
def view(harness: Harness, tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = MediaEngine("127.0.0.1", PortPool((40000, 40099)))
    yield View(harness.endpoint, harness.b2bua, engine, RecordingPump(engine),
               RecordsService(harness.config), VoicemailSender(harness.config.smtp,
                                                               tmp_path / "spool"))
    engine.close()


def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels): value}, read back by the real parser."""
    text = generate_latest(metrics.registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_a_call_shows_in_the_scrape(harness: Harness, view: View) -> None:
    metrics = Metrics()
    metrics.collect_server(view)
    harness.b2bua.on_setup = metrics.call_setup.observe
    before = scrape(metrics)
    assert before[("mediacore_calls_ended_total", (("disposition", "answered"),))] == 0
    assert before[("mediacore_calls_active", (("state", "bridged"),))] == 0

    _, ok = ring_and_answer(harness)
    during = scrape(metrics)
    assert during[("mediacore_calls_active", (("state", "bridged"),))] == 1
    assert during[("mediacore_calls_started_total", ())] == 1
    assert during[("mediacore_call_setup_seconds_count", ())] == 1
    assert during[("mediacore_call_setup_seconds_bucket", (("le", "3.0"),))] == 1
    assert during[("mediacore_call_setup_seconds_bucket", (("le", "2.0"),))] == 0

    harness.receive(in_dialog("BYE", ok, 2, "z9hG4bKbye1"), CARRIER, at=63.1)
    after = scrape(metrics)
    assert after[("mediacore_calls_active", (("state", "bridged"),))] == 0
    assert after[("mediacore_calls_ended_total", (("disposition", "answered"),))] == 1
    assert after[("mediacore_sip_requests_received_total", (("method", "INVITE"),))] == 1
    assert after[("mediacore_sip_responses_sent_total",
                  (("method", "INVITE"), ("status", "200")))] == 1
    assert after[("mediacore_sip_responses_received_total",
                  (("method", "INVITE"), ("status", "180")))] == 1
    assert after[("mediacore_sip_transaction_timeouts_total", (("timer", "B"),))] == 0
    assert after[("mediacore_rtp_port_pairs_capacity", ())] == 50
    assert after[("mediacore_rtp_port_pairs_free", ())] == 50
    assert after[("mediacore_rtp_port_pairs_held_elsewhere", ())] == 0
    assert after[("mediacore_rtp_port_pairs_reused_early_total", ())] == 0
    assert after[("mediacore_rtp_engine_up", ())] == 0  # never started here
    assert after[("mediacore_journal_unpublished_records", ())] == 0
    assert after[("mediacore_redis_up", ())] == 0  # no [redis]
    assert after[("mediacore_voicemail_spool_messages", ())] == 0
    assert after[("mediacore_build_info", (("version", __import__("mediacore").__version__),))] == 1


def test_no_label_value_is_a_call_id_or_a_number(harness: Harness, view: View) -> None:
    metrics = Metrics()
    metrics.collect_server(view)
    ring_and_answer(harness)
    text = generate_latest(metrics.registry).decode()
    call_id = next(iter(harness.b2bua.calls))
    for secret in (call_id, "+31612345678", "+31900123456", "call-1"):
        assert secret not in text


def test_every_mediacore_metric_follows_the_naming_conventions(view: View) -> None:
    metrics = Metrics()
    metrics.collect_server(view)
    text = generate_latest(metrics.registry).decode()
    families = [f for f in text_string_to_metric_families(text)
                if f.name.startswith("mediacore_")]
    assert len(families) > 40
    for family in families:
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        if "bytes" in family.name:
            assert family.name.endswith("_bytes"), family.name
        assert "_ms" not in family.name and "milli" not in family.name


def stream(**counts: int) -> dict[str, int | None]:
    """One direction's counters as the engine copies them out (_engine.pyx _stream_dict)."""
    fields: dict[str, int | None] = dict(
        packets=0, bytes=0, payload_bytes=0, expected=0, received=0, jitter_q4=0,
        clock_rate=8000, ssrc=None, first_arrival_ns=None, last_arrival_ns=None,
        rtcp_packets=0, rtcp_bytes=0, forwarded=0, no_destination=0, send_errors=0,
        garbage=0, strict_dropped=0, foreign=0, relatches=0, dtmf_events=0, injected=0)
    fields.update(counts)
    return fields


def test_closed_sessions_keep_counting_and_negative_loss_is_floored() -> None:
    metrics = Metrics()
    totals: RelayTotals = metrics.relay
    totals.session_closed((
        stream(packets=500, bytes=86_000, forwarded=499, expected=503, received=500,
               jitter_q4=1280),
        stream(packets=498, bytes=85_656, forwarded=498, expected=496, received=498,
               garbage=1), 0, 0))
    totals.session_closed((stream(packets=10, forwarded=10), stream(), 0, 0))
    open_session = (stream(packets=5, expected=7, received=5), stream(), 0, 0)
    snapshot = totals.snapshot([open_session])
    assert snapshot["from_caller"].packets == 515
    assert snapshot["from_caller"].forwarded == 509
    assert snapshot["from_caller"].lost == 5
    assert snapshot["from_target"].lost == 0  # duplicates do not make loss negative
    assert snapshot["from_target"].garbage == 1
    assert totals.snapshot([])["from_caller"].packets == 510  # open ones are not kept
    # Jitter observed once per direction with packets: 1280/16/8000 s = 10 ms.
    assert metrics.jitter.labels(direction="from_caller")._sum.get() == pytest.approx(0.01)
    assert metrics.jitter.labels(direction="from_target")._sum.get() == pytest.approx(0.0)


def test_packets_from_unexpected_sources_and_relatches_are_exported(view: View) -> None:
    """A scanner's packets, dropped by a closed call's legs, stay in the totals."""
    metrics = Metrics()
    metrics.collect_server(view)
    metrics.relay.session_closed((stream(strict_dropped=3, packets=10), stream(foreign=5,
                                                                               relatches=2),
                                  0, 0))
    samples = scrape(metrics)
    dropped = "mediacore_rtp_packets_dropped_total"
    assert samples[(dropped, (("direction", "from_caller"), ("reason", "strict")))] == 3
    assert samples[(dropped, (("direction", "from_caller"), ("reason", "foreign")))] == 0
    assert samples[(dropped, (("direction", "from_target"), ("reason", "foreign")))] == 5
    assert samples[("mediacore_rtp_relatches_total", (("direction", "from_target"),))] == 2
    assert samples[("mediacore_rtp_relatches_total", (("direction", "from_caller"),))] == 0


# --- the HTTP head parser ------------------------------------------------------------


def test_a_scrape_request_parses() -> None:
    head = (b"GET /metrics?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9091\r\n"
            b"User-Agent: Prometheus/2.53\r\nAccept: text/plain\r\n\r\n")
    assert head_end(head) == len(head)
    assert parse_head(head) == Request("GET", "/metrics")
    assert parse_head(b"HEAD /healthz HTTP/1.0\n\n") == Request("HEAD", "/healthz")


@pytest.mark.parametrize("head, status", [
    (b"POST /metrics HTTP/1.1\r\n\r\n", 405),
    (b"DELETE / HTTP/1.1\r\n\r\n", 405),
    (b"GET /metrics HTTP/2.0\r\n\r\n", 505),
    (b"GET /metrics\r\n\r\n", 400),                      # HTTP/0.9
    (b"GET  /metrics HTTP/1.1\r\n\r\n", 400),            # two spaces
    (b"G\x00T /metrics HTTP/1.1\r\n\r\n", 400),
    (b"GET metrics HTTP/1.1\r\n\r\n", 400),              # not a path
    (b"GET http://x/metrics HTTP/1.1\r\n\r\n", 400),
    (b"GET /m\xffetrics HTTP/1.1\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\n folded: header\r\n\r\n", 400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # a TLS hello
    (b"\r\n\r\n", 400),
])
def test_hostile_heads_get_a_clear_status(head: bytes, status: int) -> None:
    parsed = parse_head(head)
    assert isinstance(parsed, Response) and parsed.status == status
    if status == 405:
        assert ("Allow", "GET, HEAD") in parsed.headers


def test_a_head_is_not_complete_without_its_blank_line() -> None:
    assert head_end(b"GET /metrics HTTP/1.1\r\nHost: x\r\n") == -1
    assert head_end(b"A" * (MAX_HEAD * 2)) == -1


def test_head_requests_get_headers_only() -> None:
    response = Response(200, b"hello")
    assert response.serialize(head_only=True).endswith(b"Connection: close\r\n\r\n")
    assert b"Content-Length: 5" in response.serialize(head_only=True)
    assert response.serialize().endswith(b"\r\n\r\nhello")


def test_the_grafana_dashboard_queries_only_metrics_we_export(view: View) -> None:
    import json
    import re

    from tests.unit.test_sip_endpoint import request

    view.endpoint.receive(request("OPTIONS"), CARRIER, 0.0)  # label sets appear with use
    metrics = Metrics()
    metrics.collect_server(view)
    exported = {s.name for f in text_string_to_metric_families(
        generate_latest(metrics.registry).decode()) for s in f.samples}
    dashboard = json.loads((Path(__file__).parents[2] / "deploy/grafana/mediacore.json")
                           .read_text())
    assert any(v["type"] == "datasource" for v in dashboard["templating"]["list"])
    used = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            used |= set(re.findall(r"mediacore_[a-z_]+", target["expr"]))
    assert len(used) > 25
    assert used <= exported, used - exported
