"""Voicemail delivery against real SMTP servers (aiosmtpd) on 127.0.0.1: no mocks.

Each test starts its own server in-process on a free port, with the
behaviour it needs (STARTTLS or not, a 4xx or 5xx at a chosen step, down at
first), and a VoicemailSender with a short backoff. Waits end as soon as
their condition holds, under a deadline; nothing asserts how long anything
took. Promise 3 of DESIGN.md is what is checked: the owner gets the audio
intact, over TLS when offered, and nothing of it is left here afterwards;
an undelivered voicemail is never lost.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
import uvloop
from aiosmtpd.controller import Controller

from mediacore.calls.voicemail import (
    FAILED_DIRNAME,
    SENDER_LOCK,
    DeliveryReport,
    VoicemailSender,
    compose,
)
from mediacore.config import SmtpConfig
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
DEADLINE = 15.0
AUDIO = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 64 + b".\r\n.\r\n"  # dots too
OWNER_EMAIL = "owner@example.com"


# --- a real SMTP server, with the behaviour a test asks for -------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool


@dataclass
class Handler:
    """aiosmtpd hooks: records what arrives; answers with queued replies first."""

    rcpt_replies: list[str] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    ehlos: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        with self.lock:
            self.ehlos += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        with self.lock:
            if self.rcpt_replies:
                return self.rcpt_replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            if self.data_replies:
                return self.data_replies.pop(0)
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                          envelope.content, session.ssl is not None))
        return "250 2.0.0 Message accepted for delivery"


class Server:
    """An aiosmtpd server on 127.0.0.1, started and stopped by the test."""

    def __init__(self, handler: Handler, port: int | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.port = port or free_port()
        self.tls = tls
        self.controller: Controller | None = None

    def start(self) -> Server:
        self.controller = Controller(self.handler, hostname=HOST, port=self.port,
                                     tls_context=self.tls, require_starttls=False)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Servers a test starts; all stopped when it ends, whatever happened."""
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def serve(servers: list[Server], handler: Handler | None = None, *, port: int | None = None,
          tls: ssl.SSLContext | None = None, start: bool = True) -> Server:
    server = Server(handler or Handler(), port, tls)
    servers.append(server)
    return server.start() if start else server


# --- TLS: a self-signed certificate for 127.0.0.1 ----------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A self-signed certificate for 127.0.0.1 and localhost, made with the openssl CLI.

    The ``cryptography`` package is not a dependency of the project; the
    openssl command is on every machine that has Python's ssl module's
    library (Debian: the ``openssl`` package).
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl command is needed to make a test certificate: "
                    "apt-get install openssl")
    directory = tmp_path_factory.mktemp("tls")
    files = TlsFiles(directory / "cert.pem", directory / "key.pem")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(files.key), "-out", str(files.cert), "-days", "2",
         "-subj", "/CN=mediacore test SMTP", "-addext",
         "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )
    return files


# --- the sender side ---------------------------------------------------------------------


def run(main: Callable[[], Awaitable[None]]) -> None:
    """Run a test's coroutine on uvloop, the loop production runs on."""
    uvloop.run(asyncio.wait_for(main(), DEADLINE * 2))


async def wait_until(predicate: Callable[[], object], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class Setup:
    tmp: Path
    spool: Path
    reports: list[DeliveryReport] = field(default_factory=list)
    count: int = 0

    def sender(self, port: int, starttls: str = "opportunistic", **kwargs: Any) -> VoicemailSender:
        config = SmtpConfig(host=HOST, port=port, starttls=starttls,
                            sender="voicemail@example.net")
        options: dict[str, Any] = {"retry_initial": 0.05, "retry_max": 0.2,
                                   "retry_jitter": 0.0, "timeout": 5.0,
                                   "helo_name": "mediacore.test",
                                   "on_delivered": self.reports.append}
        options.update(kwargs)
        return VoicemailSender(config, self.spool, **options)

    def voicemail(self, caller: str = "+31201234567") -> tuple[EmailMessage, Path]:
        self.count += 1
        wav = self.tmp / "recordings" / f"vm-{self.count}.wav"
        wav.parent.mkdir(exist_ok=True)
        wav.write_bytes(AUDIO)
        message = compose(wav, caller=caller, number="+31900123456", owner="acme",
                          received_at=datetime(2026, 3, 3, 14, 5, 9, tzinfo=UTC),
                          duration=12.5, sender="voicemail@example.net",
                          recipient=OWNER_EMAIL, call_id=f"call-{self.count}")
        return message, wav

    def queued(self) -> list[str]:
        return sorted(p.name for p in self.spool.glob("*")
                      if p.is_file() and p.name != SENDER_LOCK)

    def failed(self) -> list[str]:
        return sorted(p.name for p in (self.spool / FAILED_DIRNAME).glob("*"))

    def recordings(self) -> list[str]:
        return sorted(p.name for p in (self.tmp / "recordings").glob("*"))


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path, tmp_path / "var" / "voicemail-spool")


def attachment_of(content: bytes) -> bytes:
    message = message_from_bytes(content, policy=default_policy)
    assert isinstance(message, EmailMessage)
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "audio/wav"
    payload = attachment.get_content()
    assert isinstance(payload, bytes)
    return payload


# --- the tests ---------------------------------------------------------------------------


def test_delivered_intact_and_nothing_kept(setup: Setup, servers: list[Server]) -> None:
    server = serve(servers)

    async def main() -> None:
        sender = setup.sender(server.port)
        await sender.start()
        message, wav = setup.voicemail()
        report = await sender.submit(message, wav)
        await sender.close()
        assert report is not None
        assert report.recipient == OWNER_EMAIL and report.owner == "acme"
        assert report.number == "+31900123456" and report.call_id == "call-1"
        assert report.message_id == message["Message-ID"]
        assert report.accepted_at.tzinfo is not None
        assert setup.reports == [report]
        [got] = server.handler.received
        assert got.mail_from == "voicemail@example.net" and got.rcpt_tos == [OWNER_EMAIL]
        assert attachment_of(got.content) == AUDIO
        assert report.bytes >= len(got.content) > len(AUDIO)
        assert not got.tls  # the server offered no STARTTLS: opportunistic sends in clear
        # promise 3: not kept
        assert setup.queued() == [] and setup.failed() == [] and setup.recordings() == []

    run(main)


@pytest.mark.parametrize("mode", ["opportunistic", "required"])
def test_starttls_is_used_when_offered(setup: Setup, servers: list[Server],
                                       tls_files: TlsFiles, mode: str) -> None:
    server = serve(servers, tls=tls_files.server_context())

    async def main() -> None:
        sender = setup.sender(server.port, mode, ca_file=tls_files.cert)
        await sender.start()
        report = await sender.submit(*setup.voicemail())
        await sender.close()
        assert report is not None
        [got] = server.handler.received
        assert got.tls
        assert attachment_of(got.content) == AUDIO
        assert setup.queued() == [] and setup.recordings() == []

    run(main)


def test_required_refuses_a_server_without_starttls(setup: Setup, servers: list[Server],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    server = serve(servers)

    async def main() -> None:
        sender = setup.sender(server.port, "required")
        await sender.start()
        assert await sender.submit(*setup.voicemail()) is None
        await wait_until(lambda: sender.pending() and sender.pending()[0].attempts >= 2,
                         "a retry")
        await sender.close()
        [pending] = sender.pending()
        assert pending.owner == "acme"
        assert pending.last_error is not None and "STARTTLS" in pending.last_error

    run(main)
    assert server.handler.received == []
    assert len(setup.queued()) == 2  # the message and its audio wait in the spool
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and "does not offer STARTTLS" in errors[0].getMessage()
    assert "acme" in errors[0].getMessage()


def test_off_never_tries_starttls(setup: Setup, servers: list[Server],
                                  tls_files: TlsFiles) -> None:
    server = serve(servers, tls=tls_files.server_context())

    async def main() -> None:
        sender = setup.sender(server.port, "off")
        await sender.start()
        assert await sender.submit(*setup.voicemail()) is not None
        await sender.close()

    run(main)
    [got] = server.handler.received
    assert not got.tls


def test_a_certificate_that_does_not_verify_is_no_reason_to_send_in_clear(
        setup: Setup, servers: list[Server], tls_files: TlsFiles) -> None:
    server = serve(servers, tls=tls_files.server_context())

    async def main() -> None:
        sender = setup.sender(server.port)  # system CAs: our self-signed cert is unknown
        await sender.start()
        assert await sender.submit(*setup.voicemail()) is None
        await wait_until(lambda: sender.pending() and sender.pending()[0].attempts >= 2,
                         "a retry")
        await sender.close()
        last_error = sender.pending()[0].last_error
        assert last_error is not None and "TLS handshake" in last_error
        assert server.handler.received == []
        # an operator who trusts that relay turns verification off
        relaxed = setup.sender(server.port, tls_verify=False)
        await relaxed.start()
        await wait_until(lambda: setup.reports, "the delivery without verification")
        await relaxed.close()

    run(main)
    [got] = server.handler.received
    assert got.tls
    assert setup.queued() == [] and setup.recordings() == []


def test_a_server_that_is_down_gets_the_messages_once_it_is_up(
        setup: Setup, servers: list[Server]) -> None:
    server = serve(servers, start=False)

    async def main() -> None:
        sender = setup.sender(server.port)
        await sender.start()
        for _ in range(3):
            assert await sender.submit(*setup.voicemail()) is None
        await wait_until(lambda: all(p.attempts >= 2 for p in sender.pending()),
                         "retries against the closed port")
        assert len(setup.queued()) == 6 and setup.recordings() == []
        await asyncio.to_thread(server.start)
        await wait_until(lambda: len(setup.reports) == 3, "three deliveries")
        await sender.close()
        assert sender.pending() == []

    run(main)
    assert len(server.handler.received) == 3
    assert all(attachment_of(r.content) == AUDIO for r in server.handler.received)
    assert len({r.message_id for r in setup.reports}) == 3
    assert sorted(r.call_id for r in setup.reports) == ["call-1", "call-2", "call-3"]
    assert setup.queued() == []


@pytest.mark.parametrize("stage", ["rcpt", "data"])
def test_a_4xx_is_retried(setup: Setup, servers: list[Server], stage: str) -> None:
    handler = Handler()
    replies = handler.rcpt_replies if stage == "rcpt" else handler.data_replies
    replies += ["451 4.3.0 Try again later", "452 4.2.2 Mailbox full"]
    server = serve(servers, handler)

    async def main() -> None:
        sender = setup.sender(server.port)
        await sender.start()
        assert await sender.submit(*setup.voicemail()) is None
        await wait_until(lambda: setup.reports, "the delivery after two 4xx")
        await sender.close()

    run(main)
    [got] = server.handler.received
    assert attachment_of(got.content) == AUDIO
    assert setup.queued() == [] and setup.failed() == []


@pytest.mark.parametrize(("stage", "reply"), [
    ("rcpt", "550 5.1.1 No such user here"),
    ("data", "554 5.6.0 Message refused"),
])
def test_a_5xx_goes_to_failed_for_the_operator(setup: Setup, servers: list[Server],
                                               caplog: pytest.LogCaptureFixture,
                                               stage: str, reply: str) -> None:
    handler = Handler()
    (handler.rcpt_replies if stage == "rcpt" else handler.data_replies).append(reply)
    server = serve(servers, handler)

    async def main() -> None:
        sender = setup.sender(server.port)
        await sender.start()
        message, wav = setup.voicemail(caller="anonymous")
        assert await sender.submit(message, wav) is None
        assert sender.pending() == []  # not retried: a person has to look at it
        await sender.close()

    run(main)
    assert server.handler.received == []
    assert setup.reports == []
    assert setup.queued() == [] and setup.recordings() == []
    failed = setup.failed()
    assert len(failed) == 2 and {Path(f).suffix for f in failed} == {".eml", ".wav"}
    eml = next(setup.spool.joinpath(FAILED_DIRNAME).glob("*.eml"))
    assert attachment_of(eml.read_bytes()) == AUDIO  # nothing lost
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    text = error.getMessage()
    assert "acme" in text and reply.split()[0] in text and FAILED_DIRNAME in text


def test_a_restart_delivers_what_the_last_process_left(setup: Setup,
                                                       servers: list[Server]) -> None:
    server = serve(servers, start=False)

    async def first_process() -> None:
        sender = setup.sender(server.port)
        await sender.start()
        assert await sender.submit(*setup.voicemail()) is None
        assert await sender.submit(*setup.voicemail(caller="anonymous")) is None
        await sender.close()

    run(first_process)
    assert len(setup.queued()) == 4 and setup.recordings() == []
    server.start()

    async def second_process() -> None:
        sender = setup.sender(server.port)
        await sender.start()
        await wait_until(lambda: len(setup.reports) == 2, "the spooled messages")
        await sender.close()

    run(second_process)
    assert len(server.handler.received) == 2  # once each: the first process had stopped
    assert sorted(r.call_id for r in setup.reports) == ["call-1", "call-2"]
    assert setup.queued() == [] and setup.failed() == []
    subjects = sorted(message_from_bytes(r.content, policy=default_policy)["Subject"]
                      for r in server.handler.received)
    assert subjects == ["Voicemail for +31900123456 from +31201234567",
                        "Voicemail for +31900123456 from anonymous"]


def test_an_interrupted_spooling_is_finished_at_start(setup: Setup,
                                                      servers: list[Server]) -> None:
    server = serve(servers)
    message, _ = setup.voicemail()
    setup.spool.mkdir(parents=True)
    # as a crash leaves it after the audio was moved in, before the final rename
    (setup.spool / "20260303T140509-abc.eml.tmp").write_bytes(message.as_bytes())
    (setup.spool / "20260303T140509-abc.wav").write_bytes(AUDIO)

    async def main() -> None:
        sender = setup.sender(server.port)
        await sender.start()
        await wait_until(lambda: setup.reports, "the recovered message")
        await sender.close()

    run(main)
    assert len(server.handler.received) == 1
    assert setup.queued() == []
