"""CallMedia on the real media plane: the RTP engine, prompts and the recorder.

The call logic stays sans-IO; what takes time here runs on the event loop:
a prompt is paced at 20 ms per packet by a task, and the server's
:class:`~mediacore.calls.recording_pump.RecordingPump` drains every recorded
call's tap into its recorder on one timer. When a prompt ends, the
``on_prompt_done`` callback tells the server, which feeds the event back to
the B2BUA (``announcement_finished``).

A recording never ends a call: one that cannot be opened (a full disk, a
read-only or unwritable dir, below the free-space reserve) or that fails
later leaves the call going on unrecorded; what reached the file stays a
valid WAV with its handle, and :meth:`EngineMedia.stop_recording` says why,
for the CDR's ``recording_error``. The pump counts and logs each failure once.

Each time the call says where a leg receives (:meth:`EngineMedia.set_remote`,
from an INVITE's, answer's, re-INVITE's or UPDATE's SDP) the leg's latching
policy is set first (calls/latching.py: strict, or nat with the leg's SIP
peer), so a new target or a new SDP address starts from a fresh latch,
while the same SDP again (a session refresh) keeps the one it has. Packets
the engine dropped for their source are reported once, when the call's
media closes (a warning: someone sent media into the call).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path

from mediacore.calls.call import CallError
from mediacore.calls.latching import LegLatching
from mediacore.calls.media import RecordingFailed, RecordingResult, Side
from mediacore.calls.recording_pump import RecordingPump
from mediacore.randomness import random_bits
from mediacore.records.open_recordings import OpenRecordings, RecordingStarted
from mediacore.rtp.engine import Latching, Leg, MediaEngine, Session
from mediacore.rtp.player import Codec, PromptLibrary, PromptPlayer, play
from mediacore.rtp.ports import PortsExhausted
from mediacore.rtp.recorder import CallRecorder, RecordingError
from mediacore.rtp.stats import SessionStats

log = logging.getLogger("mediacore.calls")

#: Gives a leg's latching policy when the call sets its remote (the default: strict).
LatchingFor = Callable[[Side], LegLatching]

CODECS: dict[str, Codec] = {"PCMU": "ulaw", "PCMA": "alaw"}


class EngineMedia:
    """One call's media on a shared :class:`MediaEngine`."""

    def __init__(
        self,
        call_id: str,
        engine: MediaEngine,
        prompts: PromptLibrary,
        on_prompt_done: Callable[[str], None],
        pump: RecordingPump,
        latching: LatchingFor | None = None,
        open_recordings: OpenRecordings | None = None,
    ) -> None:
        try:
            self.session: Session = engine.open_session()
        except PortsExhausted as error:
            # The operator reads the range and counts in the log; the caller
            # (possibly a scanner) learns only that we are busy.
            log.warning("call %s: %s", call_id, error)
            raise CallError(503, "Service Unavailable") from None
        self.call_id = call_id
        self.engine = engine
        self.prompts = prompts
        self.on_prompt_done = on_prompt_done
        self.pump = pump
        self._latching: LatchingFor = latching or (lambda side: LegLatching())
        #: Where each recording's marker goes before its file (a crash's trace).
        self.open_recordings = open_recordings
        self._marked = ""  # the file whose marker we wrote
        self._codecs: dict[Side, tuple[int, str, int | None]] = {}
        self._player: asyncio.Task[None] | None = None
        self._recorder: CallRecorder | None = None
        self._recording_error = ""  # a recording that never started: why
        self._closed = False

    @property
    def address(self) -> str:
        return self.engine.address

    def port(self, side: Side) -> int:
        return self.session.ports(Leg(int(side))).rtp

    def set_remote(self, side: Side, host: str, port: int, rtcp_port: int | None) -> None:
        leg = Leg(int(side))
        policy = self._latching(side)
        try:
            self.session.set_latching(leg, policy.mode, hosts=policy.hosts,
                                      relatch_after=policy.relatch_after)
        except ValueError as error:  # cannot happen with a validated config: stay safe
            log.warning("call %s: latching %s on the %s's leg not usable (%s): strict",
                        self.call_id, policy.mode, _who(side), error)
            self.session.set_latching(leg, Latching.STRICT)
        try:
            self.session.set_remote(leg, host, port, rtcp_port)
        except ValueError as error:
            # An SDP address we cannot send to (another family, a name): a
            # strict leg then takes nothing, a nat leg still latches onto
            # its SIP peer's host.
            log.warning("call %s: remote %s:%s not usable: %s", self.call_id, host, port, error)

    def set_codec(self, side: Side, payload_type: int, encoding: str,
                  telephone_event: int | None) -> None:
        self._codecs[side] = (payload_type, encoding.upper(), telephone_event)
        self.session.set_telephone_event(Leg(int(side)), telephone_event)
        if self._recorder is not None:  # a codec change after a re-INVITE
            self._recorder.set_codecs(self._codec_by_pt())

    def _codec_by_pt(self) -> dict[int, str]:
        return {pt: CODECS.get(enc, "alaw") for pt, enc, _ in self._codecs.values()}

    # --- prompts ------------------------------------------------------------------

    def play(self, prompt: str) -> None:
        self.stop_playing()
        payload_type, encoding, _ = self._codecs.get(Side.CALLER, (8, "PCMA", None))
        try:
            player = PromptPlayer(self.prompts.get(prompt), CODECS.get(encoding, "alaw"),
                                  payload_type, ssrc=random_bits(32), start_seq=random_bits(16),
                                  start_ts=random_bits(32))
        except (OSError, ValueError) as error:
            # A missing prompt must not stop the call: it goes on unannounced,
            # and the operator learns why from this line.
            log.error("call %s: prompt %r cannot be played: %s", self.call_id, prompt, error)
            asyncio.get_running_loop().call_soon(self.on_prompt_done, self.call_id)
            return
        session = self.session

        async def run() -> None:
            try:
                await play(player, lambda packet: session.send(Leg.A, packet))
            finally:
                if not self._closed:
                    self.on_prompt_done(self.call_id)

        self._player = asyncio.get_running_loop().create_task(run())

    def stop_playing(self) -> None:
        if self._player is not None and not self._player.done():
            self._player.cancel()
        self._player = None

    # --- recording ------------------------------------------------------------------

    def start_recording(self, path: Path, *, channels: int,
                        started: RecordingStarted | None = None) -> None:
        self._recording_error = ""
        no_room = self.pump.room()
        try:
            if no_room is not None:
                raise no_room
            path.parent.mkdir(parents=True, exist_ok=True)
            if started is not None and self.open_recordings is not None:
                # The marker first: a file that exists always says whose it is.
                self.open_recordings.add(started)
                self._marked = started.file
            recorder = CallRecorder(path, codec_by_pt=self._codec_by_pt(),
                                    started_ns=time.monotonic_ns(), channels=channels)
        except RecordingError as error:
            self._recording_error = self.pump.report_failure(self.call_id, error.cause)
            self._unmark()
            return
        except OSError as error:
            self._recording_error = self.pump.report_failure(self.call_id, error)
            self._unmark()
            return
        self._recorder = recorder
        self.session.set_recording(True)
        self.pump.add(self.session.id, recorder, self.call_id, on_failed=self._recording_failed)

    def _recording_failed(self, error: BaseException) -> None:
        """The pump gave up on our recorder: the engine need not tap the call any more."""
        if self._recorder is not None and not self._closed:
            self.session.set_recording(False)

    def stop_recording(self) -> RecordingResult | RecordingFailed | None:
        recorder = self._recorder
        if recorder is None:
            return RecordingFailed(self._recording_error) if self._recording_error else None
        self._recorder = None
        self.pump.remove(self.session.id)
        self.session.set_recording(False)
        failed_before = recorder.error
        if not failed_before:
            try:
                recorder.feed(self.session.drain_recording(), time.monotonic_ns())
            except Exception as error:
                recorder.fail(error)  # the recorder did already for the disk's errors
        try:
            info = recorder.close(time.monotonic_ns())
        except RecordingError as error:
            if not failed_before:
                self.pump.report_failure(self.call_id, error.cause)
            self._unmark()  # the file is gone: nothing for a restart to find
            return RecordingFailed(error.reason)
        if info.error and not failed_before:
            self.pump.report_failure(self.call_id, recorder.failure or OSError(info.error))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("call %s: recording %s", self.call_id, " ".join(
                f"{key}={value}" for key, value in dataclasses.asdict(info.stats).items()))
        return RecordingResult(Path(info.path), info.duration, info.bytes, info.sha256,
                               info.sample_rate, info.channels, error=info.error)

    def _unmark(self) -> None:
        """No file is left: its marker goes (otherwise the handle's journaling removes it)."""
        if self._marked and self.open_recordings is not None:
            self.open_recordings.discard(self._marked)
        self._marked = ""

    # --- the end ---------------------------------------------------------------------

    def idle_seconds(self) -> float:
        return self.session.idle_seconds()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stop_playing()
        stats = self.session.stats()  # one copy per call, for the checks below
        self._report_foreign(stats)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("call %s: media %s", self.call_id, media_summary(stats))
        self.session.close()

    def _report_foreign(self, stats: SessionStats) -> None:
        """One warning per call that had packets from unexpected sources dropped.

        The source named is an address that sent into the call unasked (an
        RTP scanner, a hijack attempt, or a NATed peer whose number needs
        ``media_latching = "nat"``); no caller number is in the line.
        """
        parts = []
        for side, stream in ((Side.CALLER, stats.a_to_b), (Side.CALLEE, stats.b_to_a)):
            dropped = stream.strict_dropped + stream.foreign
            if dropped:
                source = self.session.foreign_source(Leg(int(side)))
                where = f" (the last from {source[0]}:{source[1]})" if source else ""
                parts.append(f"{dropped} on the {_who(side)}'s leg{where}")
        if parts:
            log.warning("call %s: media: dropped packets from unexpected sources: %s",
                        self.call_id, ", ".join(parts))


def media_summary(stats: SessionStats) -> str:
    """One call's relay counters as ``key=value`` words, for people and for scripts.

    ``caller``: what arrived from the caller (leg A) and went on to the
    target; ``target`` the other way. ``lost`` is RFC 3550's (expected from
    the sequence numbers minus received), so it tells packets the network
    lost on the way to us from packets a sender never sent; ``span_ms``, first
    to last arrival, against the packets' duration tells a sender's clock rate;
    ``foreign``, RTP and RTCP dropped for their source (rtp/engine.py's rule).
    """
    words = []
    for name, stream in (("caller", stats.a_to_b), ("target", stats.b_to_a)):
        first, last = stream.first_arrival_ns, stream.last_arrival_ns
        span_ms = (last - first) / 1e6 if first is not None and last is not None else 0.0
        words += [f"{name}.packets={stream.packets}", f"{name}.expected={stream.expected}",
                  f"{name}.lost={stream.lost}", f"{name}.forwarded={stream.forwarded}",
                  f"{name}.jitter_ms={stream.jitter_ms:.2f}", f"{name}.span_ms={span_ms:.1f}",
                  f"{name}.foreign={stream.strict_dropped + stream.foreign}"]
    words += [f"recorded={stats.recorded_packets}",
              f"recording_dropped={stats.recording_dropped}"]
    return " ".join(words)


def _who(side: Side) -> str:
    return "caller" if side is Side.CALLER else "target"
