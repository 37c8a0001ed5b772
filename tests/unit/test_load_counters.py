"""The load harness reads the server's DEBUG media lines: producer and reader agree."""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks.load.common import media_totals
from benchmarks.load.concurrent_calls import relay_loss
from mediacore.calls.engine_media import media_summary
from mediacore.rtp.stats import SessionStats, StreamStats


def stream(packets: int, expected: int, lost: int, forwarded: int) -> StreamStats:
    zero = {f.name: 0 for f in dataclasses.fields(StreamStats)}
    first, last = (0, 20_000_000 * (packets - 1)) if packets else (None, None)
    return StreamStats(**{**zero, "packets": packets, "expected": expected, "lost": lost,
                          "forwarded": forwarded, "jitter_ms": 0.5, "clock_rate": 8000,
                          "ssrc": 1, "first_arrival_ns": first, "last_arrival_ns": last})


def line(call_id: str, stats: SessionStats) -> str:
    return f"2026-12-03 07:00:00,000 DEBUG mediacore.calls: call {call_id}: media " \
           f"{media_summary(stats)}"


def test_the_relay_counters_of_the_calls_asked_for_are_summed() -> None:
    log = "\n".join([
        line("c1", SessionStats(stream(1000, 1000, 0, 1000), stream(990, 1000, 10, 990),
                                2000, 0)),
        line("c2", SessionStats(stream(500, 500, 0, 498), stream(500, 500, 0, 500), 1000, 2)),
        line("warmup", SessionStats(stream(9, 99, 90, 9), stream(9, 99, 90, 9), 0, 0)),
        "2026-12-03 07:00:00,000 DEBUG mediacore.calls: call c1: recording records=2000 "
        "audio=2000 shifts=1",
    ])
    totals = media_totals(log, {"c1", "c2"})
    assert totals["calls"] == 2
    assert totals["caller.packets"] == 1500 and totals["target.lost"] == 10
    assert totals["recorder.shifts"] == 1
    loss = relay_loss(totals)
    # 2 arrived from the caller and were not forwarded; 10 from the target never came.
    assert loss["caller_loss"] == pytest.approx(2 / 1500)
    assert loss["target_loss"] == pytest.approx(10 / 1500)
    assert loss["recording_dropped"] == 2
    assert loss["recorder"] == {"records": 2000, "audio": 2000, "shifts": 1}
    assert loss["caller_jitter_ms_mean"] == pytest.approx(0.5)
    assert loss["caller_jitter_ms_max"] == pytest.approx(0.5)


def test_a_call_that_sent_nothing_has_no_loss_figure() -> None:
    totals = media_totals(line("c1", SessionStats(stream(0, 0, 0, 0), stream(0, 0, 0, 0),
                                                  0, 0)))
    assert relay_loss(totals)["caller_loss"] is None
