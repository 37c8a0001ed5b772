"""A short, deterministic run of the RTP/RTCP fuzz campaign (tests/fuzz/rtp_fuzz.py).

Real UDP on loopback into a live engine, a real recorder writing a WAV; the
long campaign and its results are documented in that module and in
benchmarks/RESULTS.md. This keeps every kind of case exercised on every run.
"""

from __future__ import annotations

import pytest

from tests.fuzz.rtp_fuzz import run

pytestmark = pytest.mark.integration

KINDS = {"audio", "valid", "version", "csrc-count", "extension", "padding", "tiny", "rtcp",
         "mux-ambiguous", "dtmf", "flip", "cut", "random", "edge", "huge"}


@pytest.mark.parametrize("seed", [1, 2])
def test_malformed_rtp_and_rtcp_never_hurt_the_engine_or_the_recording(seed: int) -> None:
    stats = run(cases=15000, seed=seed)
    assert stats.failures == [], "\n".join(stats.failures[:5])
    assert set(stats.kinds) == KINDS
    # Every outcome happened: relayed RTP and RTCP, garbage, and both kinds of
    # foreign drops (the strict session's and the nat session's).
    assert all(stats.outcomes[k] > 100 for k in
               ("packets", "rtcp_packets", "garbage", "strict_dropped", "foreign"))
    assert stats.dtmf_events > 0 and stats.recorded == stats.outcomes["packets"]
    assert stats.wav_seconds > 0
