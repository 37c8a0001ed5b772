"""Child process for test_wav_crash.py: record until killed.

Writes a stereo 8 kHz WAV in 20 ms packets of a known signal and prints the
header's frame count on stdout each time the writer syncs it, so the parent
knows what the file must hold at the least when it kills this process.

    python wav_writer_child.py PATH [--stop-after FRAMES] [--sync-interval SECONDS]

With --stop-after it stops writing there, prints
``stopped <frames_written> <frames_synced>`` and waits to be killed, so the
parent can also kill at a known point. It never closes the file: the point
is to die with it open.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from mediacore.wav import WavWriter

RATE = 8000
PACKET = 160  # frames: 20 ms
GIVE_UP_AFTER = 60.0  # seconds of wall time, in case the parent is gone


def signal(start: int, frames: int) -> np.ndarray:
    """Frames ``start`` to ``start + frames``: every frame of a minute differs.

    Left counts up through all int16 values; right steps by 7 from an offset,
    so swapped or shifted channels and off-by-one frames all show.
    """
    i = np.arange(start, start + frames, dtype=np.int64)
    left = (i % 65536 - 32768).astype(np.int16)
    right = ((i * 7 + 12345) % 65536 - 32768).astype(np.int16)
    return np.stack([left, right], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--stop-after", type=int, default=0)
    parser.add_argument("--sync-interval", type=float, default=1.0)
    args = parser.parse_args()
    stop_after = args.stop_after
    deadline = time.monotonic() + GIVE_UP_AFTER
    w = WavWriter(args.path, sample_rate=RATE, channels=2, sync_interval=args.sync_interval)
    reported = 0
    while time.monotonic() < deadline:
        if stop_after and w.frames_written >= stop_after:
            print(f"stopped {w.frames_written} {w.frames_synced}", flush=True)
            time.sleep(GIVE_UP_AFTER)
            break
        w.write(signal(w.frames_written, PACKET))
        if w.frames_synced != reported:
            reported = w.frames_synced
            print(reported, flush=True)
        # About 20x real time: the kill lands mid-stream, not after the end.
        time.sleep(0.001)
    sys.exit(1)  # only reached if nobody killed us


if __name__ == "__main__":
    main()
