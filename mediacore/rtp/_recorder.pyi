"""Compiled recorder core: ``mediacore.rtp.recorder.ReferenceAligner`` in Cython.

Same constructor, methods and results as the reference, record for record;
see ``mediacore/rtp/recorder.py`` for the algorithm and why it is built so.
"""

from collections.abc import Mapping

from typing_extensions import Buffer

from mediacore.rtp.recorder import Sink

class Aligner:
    """Aligns both legs' tap records into frames and hands them to ``sink``."""

    def __init__(
        self,
        sink: Sink,
        *,
        started_ns: int,
        codec_by_pt: Mapping[int, str],
        channels: int = 2,
    ) -> None: ...
    @property
    def cursor(self) -> int:
        """Frames written to the sink so far."""

    def set_codecs(self, codec_by_pt: Mapping[int, str]) -> None:
        """Replace the payload-type map (after a re-INVITE negotiated new ones)."""

    def stats(self) -> tuple[int, ...]:
        """Counters in the field order of ``recorder.RecorderStats``."""

    def feed(self, blob: Buffer, now_ns: int | None = None) -> None:
        """Take a blob of tap records, then write out what is older than DELAY."""

    def finish(self, end_frame: int) -> int:
        """Write everything up to ``end_frame`` (audio after it is dropped); return frames."""
