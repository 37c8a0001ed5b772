"""What a call needs from the media plane, as a protocol the call logic codes against.

The call logic (``calls/call.py``) is sans-IO: it decides, and these calls
are its only way to act on media. They are cheap, synchronous commands
(configure a relay session, start a prompt, start or stop recording); what
takes time (playing a prompt) finishes later as an event fed back to the
call. ``calls/engine_media.py`` implements this on the real RTP engine; the
unit tests of the call logic use a small in-memory stand-in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Protocol

from mediacore.records.open_recordings import RecordingStarted


class Side(IntEnum):
    """The caller's leg (A, inbound) and the target's leg (B, outbound)."""

    CALLER = 0
    CALLEE = 1


@dataclass(frozen=True, slots=True)
class RecordingResult:
    """What a finished recording left on disk, for its handle and the CDR."""

    path: Path
    duration: float
    bytes: int
    sha256: str
    sample_rate: int
    channels: int
    #: Empty, or why the recording stopped before the call ended (``disk-full``,
    #: ``io-error``...; mediacore.diskspace): the file holds what came before.
    error: str = ""


@dataclass(frozen=True, slots=True)
class RecordingFailed:
    """A recording that left nothing on disk (it could not start, or no audio
    reached the file); ``error`` says why, for the CDR's ``recording_error``."""

    error: str


class CallMedia(Protocol):
    """One call's media: two anchored legs on our address."""

    @property
    def address(self) -> str:
        """Our media address, for c= lines."""
        ...

    def port(self, side: Side) -> int:
        """Our RTP port on ``side``, for m= lines."""
        ...

    def set_remote(self, side: Side, host: str, port: int, rtcp_port: int | None) -> None:
        """Where ``side``'s peer said (in SDP) it receives; latching may refine it."""
        ...

    def set_codec(self, side: Side, payload_type: int, encoding: str,
                  telephone_event: int | None) -> None:
        """The negotiated audio codec of ``side`` (for prompts and recording)."""
        ...

    def play(self, prompt: str) -> None:
        """Start playing ``prompt`` to the caller; the call is told when it ends."""
        ...

    def stop_playing(self) -> None:
        ...

    def start_recording(self, path: Path, *, channels: int,
                        started: RecordingStarted | None = None) -> None:
        """Record (stereo: caller, callee; mono: the caller only) into ``path``.

        ``started`` is the recording's marker (records/open_recordings.py),
        written before the file so that a restart after a crash knows whose
        the file is; it stays until the handle is journaled.

        Never raises for the disk: a recording that cannot start or fails
        later leaves the call going on unrecorded, and :meth:`stop_recording`
        says why.
        """
        ...

    def stop_recording(self) -> RecordingResult | RecordingFailed | None:
        """Finish the recording: what is on disk, why there is nothing, or None
        when none was started."""
        ...

    def close(self) -> None:
        """Release ports and sockets; the call is over."""
        ...
