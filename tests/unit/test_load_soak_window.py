"""The soak's steady window: after the warm-up, until the last call starts."""

from __future__ import annotations

from benchmarks.load.soak import steady_figures


def sample(t: float, rss_kib: int, fds: int) -> dict:
    return {"t": t, "procs": {"server": {"rss_kib": rss_kib, "fds": fds, "threads": 8}}}


def test_the_ramp_down_after_the_last_call_started_is_not_counted() -> None:
    # 0-60 s warm-up (RSS filling), 60-600 s steady, then the last calls end.
    series = [sample(t, 50_000 + 100 * t if t < 60 else 56_000, 5 if t < 0 else 977)
              for t in range(-10, 601, 10)]
    series += [sample(610, 56_000, 21), sample(620, 56_000, 21)]
    figures = steady_figures(series, load_start=0.0, load_seconds=600, warmup=60, rate=20)
    assert figures["fds_slope_per_min"] == 0
    assert figures["rss_slope_kib_per_min"] == 0
    assert figures["steady_first"]["fds"] == figures["steady_last"]["fds"] == 977
    assert figures["rss_kib_per_1000_calls"] == 0
