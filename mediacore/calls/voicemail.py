"""Voicemail by e-mail: compose the message, spool it durably, deliver it, forget it.

The promise (DESIGN.md, promise 3) is that a voicemail is sent to the
number's owner by e-mail, over TLS where the mail server offers it, and then
not kept by us. Two failures must both be impossible: a voicemail lost
before the owner's mail server accepted it, and a voicemail kept after it
did. So every message goes through a spool on disk, and leaves it only by
being accepted (250 after DATA: deleted) or refused for good (5xx: moved to
``failed/`` for the operator, with an error in the log naming the owner).

The spool (``<storage>/voicemail-spool/<node>/``)
-------------------------------------------------
One spool per ``[records] node``: processes that share a storage dir (one
per core) each deliver their own voicemails and never see another's, so no
message is sent twice by two processes, and no process's start-up recovery
touches a message another is still spooling. A sender holds ``sender.lock``
(an ``flock``) in its spool for as long as it runs; a second sender on the
same spool is refused. A flat spool from before per-node spools (messages
directly in ``voicemail-spool/``) is taken over at start by the first node
that gets its lock: each message's ``.eml`` is moved into the node's spool,
then its ``.wav`` (a crash between leaves a queued ``.eml``, which carries
the audio, and a ``.wav`` that the next recovery knows is a leftover).
``failed/`` of the flat spool is left where it is, for the operator.

Each voicemail is two files with one id: ``<id>.eml``, the whole message
(the audio attached, so it can be delivered on its own), and ``<id>.wav``,
the recording moved in from wherever it was made, so that it never lingers
outside the spool. They are written so that a crash at any point leaves a
state :meth:`VoicemailSender.start` can finish:

1. the message is written to ``<id>.eml.tmp`` and fsynced;
2. the WAV is moved to ``<id>.wav`` (a rename; across filesystems a copy
   to ``<id>.wav.tmp``, fsync, rename, then the original is unlinked);
3. ``<id>.eml.tmp`` is renamed to ``<id>.eml``: from now on it is queued.

On restart an ``.eml.tmp`` whose ``.wav`` is there is finished (step 2 was
done, so step 1 was complete); one without is deleted (the WAV was never
moved: the process that recorded it did not get its submit() back). After a
delivery the ``.eml`` is deleted first and the ``.wav`` second, so a ``.wav``
alone in the spool is a delivered message's leftover and is deleted too.
Files are created 0600 and the directories 0700: they hold personal data.
Delivery is at least once: a crash between the server's 250 and the delete
sends the message again on restart, which beats losing it.

Retries
-------
A connection that fails, a 4xx, a TLS handshake that fails, or a server
without STARTTLS when ``starttls = "required"``: the message stays queued
and is tried again after an exponential backoff with jitter (10 s doubling
to 1 h by default), for as long as it takes. A restart picks the queue up.

TLS
---
``starttls = "opportunistic"``: STARTTLS whenever the server offers it, and
a handshake that fails (a certificate that does not verify) is a failed
attempt, never a reason to send in the clear: "offered" must not become
"downgraded" by whoever can break the handshake. ``"required"``: no
STARTTLS offered, no sending (the message waits and an error is logged).
``"off"``: never, for a relay on the same host. Certificates are verified
against the system's CAs, or only against ``ca_file`` when given, and
``tls_verify=False`` turns verification off for an internal relay with a
self-signed certificate. ``smtp.host`` is the name (or IP address) checked
against the certificate.

Why smtplib in a worker thread
------------------------------
The standard library's SMTP client is complete and long-tested (EHLO with
HELO fallback, STARTTLS with the second EHLO, dot-stuffing, line endings,
every reply code surfaced as an exception with the code), and voicemail is
a few messages an hour: a thread per delivery costs nothing next to the
media path, and keeps the event loop free while a slow server thinks. An
asyncio client over ``loop.start_tls`` would be a second SMTP
implementation to get right for no gain, and aiosmtplib a dependency for
the same result.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import inspect
import logging
import os
import random
import re
import secrets
import shutil
import smtplib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import SMTP as SMTP_POLICY
from email.policy import default as default_policy
from email.utils import format_datetime, getaddresses, make_msgid
from pathlib import Path

from mediacore.config import SmtpConfig
from mediacore.fsync import fsync_dir

__all__ = [
    "FAILED_DIRNAME",
    "SENDER_LOCK",
    "SPOOL_DIRNAME",
    "DeliveryReport",
    "PendingVoicemail",
    "SpoolInUse",
    "VoicemailSender",
    "adopt_flat_spool",
    "attachment_name",
    "backoff_delay",
    "compose",
    "recover_spool",
    "spool_dir_for",
    "spool_message",
]

log = logging.getLogger("mediacore.calls.voicemail")

SPOOL_DIRNAME = "voicemail-spool"
FAILED_DIRNAME = "failed"
#: Headers that let the spool name the owner and number in logs and reports
#: after a restart, without any other state.
OWNER_HEADER = "X-Mediacore-Owner"
NUMBER_HEADER = "X-Mediacore-Number"
CALL_ID_HEADER = "X-Mediacore-Call-ID"

ANONYMOUS = "anonymous"


SENDER_LOCK = "sender.lock"


def spool_dir_for(storage_dir: Path, node: str | None = None) -> Path:
    """Where ``node``'s spool lives below ``[storage] dir`` (the ``[records] node``).

    Without a node: the flat spool from before per-node spools, which only
    one process on the storage dir can use (its sender's lock refuses a
    second one).
    """
    if node is None:
        return Path(storage_dir) / SPOOL_DIRNAME
    if not node or "/" in node or node.startswith(".") or node == SENDER_LOCK:
        raise ValueError(f"{node!r} cannot name a voicemail spool")
    return Path(storage_dir) / SPOOL_DIRNAME / node


class SpoolInUse(RuntimeError):
    """Another process delivers from this spool."""


def _lock_spool(spool_dir: Path) -> int | None:
    """An ``flock`` on the spool's ``sender.lock`` (its fd), or None if another process has it."""
    fd = os.open(spool_dir / SENDER_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def adopt_flat_spool(spool_dir: Path) -> list[str]:
    """Move the messages of a flat spool (the parent of a per-node ``spool_dir``) into it.

    Only when no other process holds the flat spool's lock; returns the ids moved.
    """
    spool_dir = Path(spool_dir)
    flat = spool_dir.parent
    if flat.name != SPOOL_DIRNAME or (not any(flat.glob("*.eml*")) and not any(
            flat.glob("*.wav*"))):
        return []
    fd = _lock_spool(flat)
    if fd is None:
        log.warning("voicemail: the flat spool %s is in use by another process; its "
                    "messages stay there", flat)
        return []
    try:
        ids = recover_spool(flat)
        _ensure_dirs(spool_dir)
        for job_id in ids:
            os.replace(flat / f"{job_id}.eml", spool_dir / f"{job_id}.eml")
            fsync_dir(spool_dir)
            with contextlib.suppress(FileNotFoundError):
                os.replace(flat / f"{job_id}.wav", spool_dir / f"{job_id}.wav")
        fsync_dir(spool_dir)
        fsync_dir(flat)
    finally:
        os.close(fd)
    if ids:
        log.warning("voicemail: moved %d queued message(s) from the flat spool %s into %s",
                    len(ids), flat, spool_dir)
    return ids


# --- composing -------------------------------------------------------------------------


def _one_line(text: str, what: str) -> str:
    """``text`` with control characters refused: these go into mail headers."""
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError(f"{what} has control characters: {text[:40]!r}")
    return text


def _duration_text(seconds: float) -> str:
    whole = max(0, round(seconds))
    minutes, secs = divmod(whole, 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _human_time(moment: datetime) -> str:
    # Written out by hand: strftime's %A/%B follow the process locale.
    days = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
    months = ("January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December")
    return (f"{days[moment.weekday()]} {moment.day} {months[moment.month - 1]} "
            f"{moment.year}, {moment:%H:%M:%S} UTC")


def _domain(address: str) -> str:
    return address.rpartition("@")[2] or "localhost"


def attachment_name(number: str, received_at: datetime) -> str:
    """``voicemail-31900123456-20260303T140509Z.wav``: the service number and time.

    Never the caller: their number must not reach a file name when withheld,
    and a name built without it cannot leak it.
    """
    digits = "".join(c for c in number if c.isascii() and c.isdigit()) or "unknown"
    return f"voicemail-{digits}-{received_at.astimezone(UTC):%Y%m%dT%H%M%SZ}.wav"


def compose(
    wav_path: Path,
    *,
    caller: str,
    number: str,
    owner: str,
    received_at: datetime,
    duration: float,
    sender: str,
    recipient: str,
    call_id: str = "",
) -> EmailMessage:
    """The e-mail that carries one voicemail to the number's owner.

    ``caller`` is what the owner may see: the caller's number, or
    ``"anonymous"`` when it was withheld (the CDR's ``caller`` field;
    :attr:`mediacore.calls.privacy.CallerIdentity.record_value`), or empty
    when there was none. It appears in the subject and body only; the
    attachment's name is built from the service ``number`` and the time.
    ``received_at`` must be timezone-aware: a voicemail's time must not
    depend on the server's zone. ``call_id`` (ours, the CDR's) travels in
    a header so the delivery report can name the call even after a restart.
    """
    if received_at.tzinfo is None or received_at.utcoffset() is None:
        raise ValueError("received_at must be timezone-aware")
    at = received_at.astimezone(UTC)
    caller = _one_line(caller.strip(), "caller")
    number = _one_line(number, "number")
    owner = _one_line(owner, "owner")
    withheld = caller.lower() == ANONYMOUS
    shown = ("anonymous (number withheld)" if withheld
             else caller or "unknown (no number)")
    audio = Path(wav_path).read_bytes()

    message = EmailMessage(policy=default_policy)
    message["From"] = sender
    message["To"] = recipient
    who = ANONYMOUS if withheld else caller or "unknown"
    message["Subject"] = f"Voicemail for {number} from {who}"
    message["Date"] = format_datetime(at)
    message["Message-ID"] = make_msgid("voicemail", domain=_domain(sender))
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
    message[OWNER_HEADER] = owner
    message[NUMBER_HEADER] = number
    if call_id:
        message[CALL_ID_HEADER] = _one_line(call_id, "call_id")
    message.set_content(
        f"You have a new voicemail message for {number}.\n"
        "\n"
        f"Caller:    {shown}\n"
        f"Number:    {number} ({owner})\n"
        f"Received:  {_human_time(at)}\n"
        f"           {at.isoformat(timespec='seconds').replace('+00:00', 'Z')}\n"
        f"Duration:  {_duration_text(duration)} ({duration:.1f} seconds)\n"
        "\n"
        "The recording is attached as a WAV file. This e-mail is its only copy:\n"
        "ours is deleted as soon as your mail server has accepted this message.\n"
    )
    message.add_attachment(audio, maintype="audio", subtype="wav",
                           filename=attachment_name(number, at))
    return message


# --- the spool -------------------------------------------------------------------------



def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_dirs(spool_dir: Path) -> None:
    for path in (spool_dir, spool_dir / FAILED_DIRNAME):
        path.mkdir(mode=0o700, parents=True, exist_ok=True)


def _move_audio(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``; across filesystems copy, fsync, rename, unlink."""
    try:
        os.replace(source, target)
        os.chmod(target, 0o600)  # a rename keeps the recorder's mode
        return
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
    partial = target.with_name(target.name + ".tmp")
    with source.open("rb") as reader:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as writer:
            shutil.copyfileobj(reader, writer)
            writer.flush()
            os.fsync(writer.fileno())
    os.replace(partial, target)
    source.unlink()


def spool_message(spool_dir: Path, message: EmailMessage, wav_path: Path) -> str:
    """Put ``message`` and its WAV in the spool, crash-safely; returns the spool id.

    The WAV is moved, not copied: after this returns the spool holds the
    only copy. ``message`` gets a Message-ID if it has none.
    """
    spool_dir = Path(spool_dir)
    _ensure_dirs(spool_dir)
    if message["Message-ID"] is None:
        message["Message-ID"] = make_msgid("voicemail", domain=_domain(message["From"] or ""))
    data = message.as_bytes(policy=SMTP_POLICY)
    job_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(6)}"
    eml, tmp, wav = (spool_dir / f"{job_id}.eml", spool_dir / f"{job_id}.eml.tmp",
                     spool_dir / f"{job_id}.wav")
    _write_new(tmp, data)
    try:
        _move_audio(Path(wav_path), wav)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, eml)
    fsync_dir(spool_dir)
    return job_id


def recover_spool(spool_dir: Path) -> list[str]:
    """Finish or undo what a crash interrupted; return the queued ids, oldest first.

    See the module docstring for what each leftover means.
    """
    spool_dir = Path(spool_dir)
    _ensure_dirs(spool_dir)
    for partial in spool_dir.glob("*.wav.tmp"):
        log.warning("voicemail spool: removing an interrupted audio copy %s", partial.name)
        partial.unlink(missing_ok=True)
    for tmp in spool_dir.glob("*.eml.tmp"):
        job_id = tmp.name.removesuffix(".eml.tmp")
        if (spool_dir / f"{job_id}.wav").exists():
            os.replace(tmp, spool_dir / f"{job_id}.eml")
            log.info("voicemail spool: completed interrupted spooling of %s", job_id)
        else:
            tmp.unlink(missing_ok=True)
            log.warning("voicemail spool: removed incompletely spooled message %s", job_id)
    for wav in spool_dir.glob("*.wav"):
        job_id = wav.name.removesuffix(".wav")
        if not (spool_dir / f"{job_id}.eml").exists():
            wav.unlink(missing_ok=True)
            log.info("voicemail spool: removed audio of already delivered %s", job_id)
    fsync_dir(spool_dir)
    return sorted(path.name.removesuffix(".eml") for path in spool_dir.glob("*.eml"))


def backoff_delay(attempt: int, initial: float, maximum: float, jitter: float,
                  rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the ``attempt``-th failure (1-based).

    ``initial`` doubling per attempt, up to ``maximum``, then spread by
    ``±jitter`` (a fraction) so that messages queued together while the
    server was down do not all come back at the same moment.
    """
    base = min(maximum, initial * 2 ** min(attempt - 1, 60))
    return max(0.0, base * (1 + jitter * (2 * rand() - 1)))


# --- delivering ------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryReport:
    """That a voicemail was accepted by the owner's mail server, for the records layer.

    No path and no caller: by now nothing of the voicemail is left here.
    """

    message_id: str
    recipient: str
    accepted_at: datetime
    bytes: int
    owner: str
    number: str
    call_id: str = ""


@dataclass(frozen=True)
class PendingVoicemail:
    """A queued voicemail, for operators and tests: what has happened to it so far."""

    id: str
    owner: str
    attempts: int
    last_error: str | None


@dataclass
class _Job:
    id: str
    owner: str
    attempts: int = 0
    due: float = 0.0
    busy: bool = False
    last_error: str | None = None


@dataclass(frozen=True)
class _Delivered:
    report: DeliveryReport


@dataclass(frozen=True)
class _Retry:
    reason: str
    loud: bool = False  # an operator must look (TLS refused or broken), not just a busy server


@dataclass(frozen=True)
class _Refused:
    reason: str


@dataclass(frozen=True)
class _Vanished:
    pass


_Outcome = _Delivered | _Retry | _Refused | _Vanished


class _TlsProblem(Exception):
    """STARTTLS was needed and not possible; delivery waits."""


def _tls_context(verify: bool, ca_file: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


_LINE_END = re.compile(rb"\r\n|\r|\n")


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return f"{code} {' '.join(text.split())}"[:300]


class VoicemailSender:
    """Delivers spooled voicemails to their owners; see the module docstring.

    ``await start()`` first (it recovers and queues what a previous process
    left), ``await submit(message, wav_path)`` per voicemail, ``await
    close()`` at shutdown. ``on_delivered`` is called (and awaited, if it
    returns an awaitable) with the :class:`DeliveryReport` of every
    delivery, including retries in the background and messages from a
    previous run: that is where the records layer journals them.

    ``retry_initial``, ``retry_max`` and ``retry_jitter`` shape the backoff;
    ``timeout`` bounds every network operation of one attempt; ``helo_name``
    is what we say in EHLO (the host's FQDN if None).
    """

    def __init__(
        self,
        smtp: SmtpConfig,
        spool_dir: Path,
        *,
        tls_verify: bool = True,
        ca_file: Path | None = None,
        retry_initial: float = 10.0,
        retry_max: float = 3600.0,
        retry_jitter: float = 0.2,
        timeout: float = 60.0,
        helo_name: str | None = None,
        on_delivered: Callable[[DeliveryReport], Awaitable[None] | None] | None = None,
    ) -> None:
        if smtp.starttls not in ("opportunistic", "required", "off"):
            raise ValueError(f"starttls must be opportunistic, required or off, "
                             f"not {smtp.starttls!r}")
        if not (0 < retry_initial <= retry_max) or not 0 <= retry_jitter < 1:
            raise ValueError("need 0 < retry_initial <= retry_max and 0 <= retry_jitter < 1")
        self.smtp = smtp
        self.spool_dir = Path(spool_dir)
        self._tls = None if smtp.starttls == "off" else _tls_context(tls_verify, ca_file)
        self._retry = (retry_initial, retry_max, retry_jitter)
        self._timeout = timeout
        self._helo_name = helo_name
        self._on_delivered = on_delivered
        self._jobs: dict[str, _Job] = {}
        self._inflight: set[asyncio.Task[DeliveryReport | None]] = set()
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self._lock_fd = -1
        #: Delivery attempts since start, for metrics: accepted by the mail
        #: server, failed (retried later), refused for good (kept in failed/).
        self.delivered = 0
        self.failed_attempts = 0
        self.refused = 0

    # lifecycle

    async def start(self) -> None:
        """Recover the spool and start delivering what is queued in it."""
        if self._worker is not None:
            raise RuntimeError("already started")
        await asyncio.to_thread(self._claim_spool)
        ids = await asyncio.to_thread(recover_spool, self.spool_dir)
        for job_id in ids:
            owner = await asyncio.to_thread(self._read_owner, job_id)
            self._jobs[job_id] = _Job(job_id, owner)
        if ids:
            log.info("voicemail: %d message(s) queued from the spool", len(ids))
        self._worker = asyncio.get_running_loop().create_task(self._run(),
                                                              name="voicemail-sender")

    async def close(self) -> None:
        """Stop retrying; wait for attempts under way (bounded by ``timeout``).

        Queued messages stay in the spool for the next start().
        """
        self._closing = True
        self._wakeup.set()
        if self._worker is not None:
            await self._worker
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _claim_spool(self) -> None:
        _ensure_dirs(self.spool_dir)
        fd = _lock_spool(self.spool_dir)
        if fd is None:
            holder = (self.spool_dir / SENDER_LOCK).read_text().strip() or "?"
            raise SpoolInUse(
                f"voicemail spool {self.spool_dir} is in use by another process (pid "
                f"{holder}); processes that share a storage dir must each have their own "
                f"records.node, and their own spool below it")
        self._lock_fd = fd
        adopt_flat_spool(self.spool_dir)

    @property
    def backlog(self) -> int:
        """Messages in the spool waiting for delivery (or being delivered)."""
        return len(self._jobs)

    def pending(self) -> list[PendingVoicemail]:
        """The queued voicemails, oldest first."""
        return [PendingVoicemail(j.id, j.owner, j.attempts, j.last_error)
                for j in sorted(self._jobs.values(), key=lambda j: j.id)]

    # submitting

    async def submit(self, message: EmailMessage, wav_path: Path) -> DeliveryReport | None:
        """Spool ``message`` (and move ``wav_path`` in), then try to deliver it once.

        Returns the report when the server accepted it now; None when it is
        queued for a retry, or refused for good (then it is in ``failed/``).
        Either way it is safe on disk before this tries the network, and an
        attempt under way finishes even if the caller is cancelled.
        """
        if self._worker is None:
            raise RuntimeError("start() the VoicemailSender before submitting")
        job_id = await asyncio.to_thread(spool_message, self.spool_dir, message,
                                         Path(wav_path))
        job = _Job(job_id, str(message[OWNER_HEADER] or ""), busy=True)
        self._jobs[job_id] = job
        if self._closing:
            job.busy = False
            return None
        task = asyncio.get_running_loop().create_task(self._attempt(job))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return await asyncio.shield(task)

    # the retry loop

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            self._wakeup.clear()
            now = loop.time()
            ready = sorted((j for j in self._jobs.values() if not j.busy and j.due <= now),
                           key=lambda j: (j.due, j.id))
            for job in ready:
                if self._closing:
                    break
                if job.busy or self._jobs.get(job.id) is not job:
                    continue
                job.busy = True
                try:
                    await self._attempt(job)
                except Exception:
                    # The files are where they were; the next start() sees them.
                    log.exception("voicemail %s: attempt failed unexpectedly", job.id)
            waits = [j.due for j in self._jobs.values() if not j.busy]
            timeout = max(0.0, min(waits) - loop.time()) if waits else None
            if self._closing:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def _attempt(self, job: _Job) -> DeliveryReport | None:
        """One delivery attempt of a job the caller marked busy."""
        try:
            outcome = await asyncio.to_thread(self._deliver, job.id)
        finally:
            job.busy = False
        if isinstance(outcome, _Delivered):
            self.delivered += 1
            self._jobs.pop(job.id, None)
            await asyncio.to_thread(self._remove, job.id)
            report = outcome.report
            log.info("voicemail %s for %s (owner %s) delivered to %s: %d bytes",
                     job.id, report.number, report.owner, report.recipient, report.bytes)
            await self._report(report)
            return report
        if isinstance(outcome, _Refused):
            self.refused += 1
            self._jobs.pop(job.id, None)
            await asyncio.to_thread(self._move_to_failed, job.id)
            log.error("voicemail %s for owner %s was refused by the mail server and is kept "
                      "in %s for an operator to act on: %s", job.id, job.owner or "?",
                      self.spool_dir / FAILED_DIRNAME, outcome.reason)
            return None
        if isinstance(outcome, _Vanished):
            self._jobs.pop(job.id, None)
            log.warning("voicemail %s disappeared from the spool; forgetting it", job.id)
            return None
        job.attempts += 1
        self.failed_attempts += 1
        job.last_error = outcome.reason
        initial, maximum, jitter = self._retry
        delay = backoff_delay(job.attempts, initial, maximum, jitter)
        job.due = asyncio.get_running_loop().time() + delay
        # A busy server is a warning; one that has kept us at the longest
        # backoff, or a TLS problem, needs a person.
        capped = initial * 2 ** min(job.attempts - 1, 60) >= maximum
        level = logging.ERROR if outcome.loud or capped else logging.WARNING
        log.log(level, "voicemail %s for owner %s not delivered (attempt %d): %s; "
                "retrying in %.0f s", job.id, job.owner or "?", job.attempts,
                outcome.reason, delay)
        self._wakeup.set()
        return None

    async def _report(self, report: DeliveryReport) -> None:
        if self._on_delivered is None:
            return
        try:
            result = self._on_delivered(report)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("voicemail: the delivery report handler failed")

    # blocking work, in a worker thread

    def _read_owner(self, job_id: str) -> str:
        try:
            with (self.spool_dir / f"{job_id}.eml").open("rb") as handle:
                headers = BytesHeaderParser(policy=default_policy).parse(handle)
        except OSError:
            return ""
        return str(headers[OWNER_HEADER] or "")

    def _remove(self, job_id: str) -> None:
        # The .eml first: once it is gone nothing sends this message again.
        (self.spool_dir / f"{job_id}.eml").unlink(missing_ok=True)
        (self.spool_dir / f"{job_id}.wav").unlink(missing_ok=True)
        fsync_dir(self.spool_dir)

    def _move_to_failed(self, job_id: str) -> None:
        failed = self.spool_dir / FAILED_DIRNAME
        failed.mkdir(mode=0o700, exist_ok=True)
        # The .wav first: an .eml still in the spool is retried, never lost.
        for suffix in (".wav", ".eml"):
            source = self.spool_dir / f"{job_id}{suffix}"
            if source.exists():
                os.replace(source, failed / source.name)
        fsync_dir(failed)
        fsync_dir(self.spool_dir)

    def _deliver(self, job_id: str) -> _Outcome:
        try:
            data = (self.spool_dir / f"{job_id}.eml").read_bytes()
        except FileNotFoundError:
            return _Vanished()
        # smtplib sends bytes as they are: make every line end in CRLF, also
        # for a message that did not come from spool_message (an operator's).
        data = _LINE_END.sub(b"\r\n", data)
        headers = BytesHeaderParser(policy=default_policy).parsebytes(data)
        recipients = [address for _, address in getaddresses(
            [str(value) for value in headers.get_all("To", [])]) if address]
        if not recipients:
            return _Refused("the message has no recipient")
        try:
            return self._send(data, headers, recipients)
        except smtplib.SMTPRecipientsRefused as error:
            codes = [code for code, _ in error.recipients.values()]
            reason = "; ".join(f"{rcpt}: {_reply(code, text)}"
                               for rcpt, (code, text) in error.recipients.items())
            if codes and all(500 <= code < 600 for code in codes):
                return _Refused(reason)
            return _Retry(reason)
        except smtplib.SMTPResponseException as error:
            reason = _reply(error.smtp_code, error.smtp_error)
            if 500 <= error.smtp_code < 600:
                return _Refused(reason)
            return _Retry(reason)
        except _TlsProblem as error:
            return _Retry(str(error), loud=True)
        except (smtplib.SMTPException, OSError) as error:
            return _Retry(f"{type(error).__name__}: {error}"[:300])
        except Exception as error:  # a bug must not lose the voicemail either
            log.exception("voicemail %s: unexpected error while sending", job_id)
            return _Retry(f"{type(error).__name__}: {error}"[:300], loud=True)

    def _send(self, data: bytes, headers: EmailMessage, recipients: list[str]) -> _Outcome:
        smtp = smtplib.SMTP(self.smtp.host, self.smtp.port, local_hostname=self._helo_name,
                            timeout=self._timeout)
        try:
            smtp.ehlo_or_helo_if_needed()
            if self._tls is not None and smtp.has_extn("starttls"):
                try:
                    smtp.starttls(context=self._tls)
                except smtplib.SMTPResponseException as error:
                    raise _TlsProblem(f"STARTTLS refused: "
                                      f"{_reply(error.smtp_code, error.smtp_error)}") from None
                except (ssl.SSLError, ssl.CertificateError) as error:
                    raise _TlsProblem(f"TLS handshake with {self.smtp.host} failed: "
                                      f"{error}") from None
                smtp.ehlo()
            elif self.smtp.starttls == "required":
                raise _TlsProblem(f"{self.smtp.host}:{self.smtp.port} does not offer STARTTLS "
                                  "and smtp.starttls is 'required': not sending")
            smtp.sendmail(self.smtp.sender, recipients, data)
            # 250 after DATA: from here on it is delivered, whatever QUIT does.
            accepted_at = datetime.now(UTC)
        except BaseException:
            smtp.close()
            raise
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()
        return _Delivered(DeliveryReport(
            message_id=str(headers["Message-ID"] or ""),
            recipient=", ".join(recipients),
            accepted_at=accepted_at,
            bytes=len(data),
            owner=str(headers[OWNER_HEADER] or ""),
            number=str(headers[NUMBER_HEADER] or ""),
            call_id=str(headers[CALL_ID_HEADER] or ""),
        ))
