"""An in-memory stand-in for the media plane, for sans-IO call-logic tests.

It only remembers what the call asked of it; the real RTP engine, prompts
and recorder are tested with real sockets in tests/integration/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mediacore.calls.media import RecordingResult, Side
from mediacore.records.open_recordings import RecordingStarted


@dataclass
class FakeMedia:
    address: str = "127.0.0.1"
    remotes: dict[Side, tuple[str, int]] = field(default_factory=dict)
    codecs: dict[Side, str] = field(default_factory=dict)
    played: list[str] = field(default_factory=list)
    recording: Path | None = None
    started: RecordingStarted | None = None
    closed: bool = False

    def port(self, side: Side) -> int:
        return 20000 if side is Side.CALLER else 20002

    def set_remote(self, side: Side, host: str, port: int, rtcp_port: int | None) -> None:
        self.remotes[side] = (host, port)

    def set_codec(self, side: Side, payload_type: int, encoding: str,
                  telephone_event: int | None) -> None:
        self.codecs[side] = encoding

    def play(self, prompt: str) -> None:
        self.played.append(prompt)

    def stop_playing(self) -> None:
        pass

    def start_recording(self, path: Path, *, channels: int,
                        started: RecordingStarted | None = None) -> None:
        self.recording = path
        self.started = started

    def stop_recording(self) -> RecordingResult | None:
        if self.recording is None:
            return None
        return RecordingResult(self.recording, 1.0, 44, "0" * 64, 8000, 2)

    def close(self) -> None:
        self.closed = True
