"""Recorder cost per packet: the compiled aligner against the Python/numpy reference.

One round records one minute of a two-way call (20 ms PCMU, 3,000 packets
each way, 0-5 ms of jitter) from prebuilt tap blobs, as the engine hands
them over: one blob per 20 ms (2 packets) or per 100 ms (10 packets). The
clock starts after the recorder is created and stops after the last blob is
fed, so the figure is what the media path pays per packet: parse, align,
decode, and the WAV writer's share (``sink=file``), or without the writer
(``sink=null``). ``extra_info["us_per_packet"]`` is the headline; at 1,000
recorded calls a core handles 100,000 packets/s, so 1 µs per packet is 10%
of a core.

    .venv/bin/pytest benchmarks/bench_recorder.py --benchmark-only
    .venv/bin/python benchmarks/bench_recorder.py --profile   # where the reference spends

Results: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import cProfile
import pstats
import random
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mediacore.rtp.recorder import CallRecorder, ReferenceAligner, pack_tap

MS = 1_000_000
T0 = 10**12
SECONDS = 60
PACKETS = 2 * SECONDS * 50  # both directions


def make_blobs(batch_ms: int, seconds: int = SECONDS) -> list[tuple[bytes, int]]:
    """(blob, now_ns) pairs for a clean two-way call with a little jitter."""
    rng = random.Random(1)
    payloads = [bytes(rng.getrandbits(8) for _ in range(160)) for _ in range(64)]
    records = []
    for d in (0, 1):
        ssrc, seq, ts = rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(32)
        for i in range(seconds * 50):
            arrival = T0 + i * 20 * MS + rng.randrange(0, 5 * MS)
            records.append(
                (
                    arrival,
                    ssrc,
                    (ts + 160 * i) & 0xFFFFFFFF,
                    (seq + i) & 0xFFFF,
                    0,
                    int(i == 0),
                    d,
                    payloads[i % 64],
                )
            )
    records.sort(key=lambda r: r[0])
    out, batch, edge = [], [], T0 + batch_ms * MS
    for r in records:
        while r[0] >= edge:
            out.append((pack_tap(batch), edge))
            batch, edge = [], edge + batch_ms * MS
        batch.append(r)
    out.append((pack_tap(batch), edge))
    return out


class NullSink:
    def write(self, frames: bytes) -> None:
        pass

    def write_silence(self, n_frames: int) -> None:
        pass


def feeder(blobs: list[tuple[bytes, int]]) -> Callable[[object], None]:
    def run(target: object) -> None:
        feed = target.feed  # type: ignore[attr-defined]
        for blob, now in blobs:
            feed(blob, now)

    return run


def aligner_factory(impl: str, sink: str, tmp: Path) -> Callable[[], object]:
    codecs = {0: "ulaw", 8: "alaw"}
    if sink == "file":
        return lambda: CallRecorder(
            tmp / "bench.wav", codec_by_pt=codecs, started_ns=T0, implementation=impl
        )  # type: ignore[arg-type]
    if impl == "compiled":
        from mediacore.rtp._recorder import Aligner

        return lambda: Aligner(NullSink(), started_ns=T0, codec_by_pt=codecs)
    return lambda: ReferenceAligner(NullSink(), started_ns=T0, codec_by_pt=codecs)


@pytest.mark.parametrize("batch_ms", [20, 100])
@pytest.mark.parametrize("sink", ["file", "null"])
@pytest.mark.parametrize("impl", ["compiled", "reference"])
def test_recorder_per_packet(
    benchmark: pytest.FixtureRequest, tmp_path: Path, impl: str, sink: str, batch_ms: int
) -> None:
    blobs = make_blobs(batch_ms)
    make = aligner_factory(impl, sink, tmp_path)
    run = feeder(blobs)
    benchmark.group = f"record 2x20 ms PCMU, blob every {batch_ms} ms, sink={sink}"
    benchmark.pedantic(
        run,
        setup=lambda: ((make(),), {}),
        rounds=7 if impl == "compiled" else 3,
        iterations=1,
        warmup_rounds=1,
    )  # type: ignore[attr-defined]
    if benchmark.stats is None:  # type: ignore[attr-defined]
        return  # --benchmark-disable: run once as a test, nothing measured
    median = benchmark.stats.stats.median  # type: ignore[attr-defined]
    benchmark.extra_info["us_per_packet"] = round(median / PACKETS * 1e6, 3)
    benchmark.extra_info["packets"] = PACKETS


CALLS = 1000
CALL_SECONDS = 2


@pytest.mark.parametrize("impl", ["compiled", "reference"])
def test_thousand_concurrent_calls(
    benchmark: pytest.FixtureRequest, tmp_path: Path, impl: str
) -> None:
    """1,000 recorders, each fed its 20 ms blob in turn: the target load, cache effects and all.

    Each round is 2 s of audio for 1,000 two-way calls (200,000 packets), in
    time order across calls as the engine delivers them, into 1,000 open
    WAV files. Creating and closing the files is outside the clock.
    """
    blobs = make_blobs(20, CALL_SECONDS)
    codecs = {0: "ulaw"}
    open_now: list[CallRecorder] = []

    def setup() -> tuple[tuple[list[CallRecorder]], dict[str, object]]:
        for r in open_now:
            r.close(T0 + CALL_SECONDS * 10**9)
        open_now[:] = [
            CallRecorder(
                tmp_path / f"c{i}.wav", codec_by_pt=codecs, started_ns=T0, implementation=impl
            )  # type: ignore[arg-type]
            for i in range(CALLS)
        ]
        return (open_now,), {}

    def run(recorders: list[CallRecorder]) -> None:
        feeds = [r.feed for r in recorders]
        for blob, now in blobs:
            for feed in feeds:
                feed(blob, now)

    benchmark.group = "1,000 calls x 2 s, 2x20 ms PCMU, blob every 20 ms, sink=file"
    benchmark.pedantic(run, setup=setup, rounds=5 if impl == "compiled" else 2, iterations=1)  # type: ignore[attr-defined]
    for r in open_now:
        r.close(T0 + CALL_SECONDS * 10**9)
    if benchmark.stats is None:  # type: ignore[attr-defined]
        return
    packets = CALLS * 2 * CALL_SECONDS * 50
    median = benchmark.stats.stats.median  # type: ignore[attr-defined]
    benchmark.extra_info["us_per_packet"] = round(median / packets * 1e6, 3)
    benchmark.extra_info["core_share_at_1000_calls"] = round(median / CALL_SECONDS, 3)


def profile_reference() -> None:
    """Print where the reference spends its time (what the compiled version removes)."""
    blobs = make_blobs(20)
    al = ReferenceAligner(NullSink(), started_ns=T0, codec_by_pt={0: "ulaw"})
    prof = cProfile.Profile()
    prof.enable()
    feeder(blobs)(al)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    if sys.argv[1:] != ["--profile"]:
        sys.exit("usage: bench_recorder.py --profile   (the benchmarks run under pytest)")
    profile_reference()
