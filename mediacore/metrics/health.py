"""Liveness and readiness, as a load balancer or a supervisor asks for them.

``/healthz`` is answered by the event loop itself: that it answers at all
says the process and its loop are alive (a loop stuck in a long call does
not answer, and the checker's timeout catches it). It is 200 whatever else
is wrong, and says whether the media engine's packet thread runs, for the
operator reading it.

``/readyz`` says whether new calls should be sent here: 200 when SIP is
listening, the journal directory is writable and we are not draining;
otherwise 503 with the reasons, one per line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from mediacore.calls.b2bua import B2BUA
    from mediacore.records import RecordsService
    from mediacore.rtp.engine import MediaEngine
    from mediacore.sip.endpoint import SipEndpoint
    from mediacore.sip.transport import SipTransports


class HealthView(Protocol):
    endpoint: SipEndpoint
    b2bua: B2BUA | None
    engine: MediaEngine
    records: RecordsService
    transports: SipTransports


def liveness(view: HealthView) -> str:
    """The body of a /healthz answer (always 200)."""
    engine = "running" if view.engine.running else "NOT running"
    return f"ok\nmedia engine thread: {engine}\n"


def readiness_problems(view: HealthView) -> list[str]:
    """Why new calls should not come here now; empty when ready."""
    problems: list[str] = []
    if view.endpoint.refuse_new_calls:
        problems.append("draining: new calls are refused")
    if view.b2bua is None:
        problems.append("starting: SIP is not listening yet")
    elif not (view.transports.bound("udp") or view.transports.bound("tcp")):
        problems.append("SIP is not listening")
    records = view.records
    if not records.journal_writable:
        # The records service's own view: a failed write waiting for its
        # retry, a full or read-only filesystem (new INVITEs get 503 then).
        problems.append(f"journal unwritable ({records.journal_problem})")
    else:
        journal = journal_problem(records.journal_dir)
        if journal is not None:
            problems.append(journal)
    if not view.engine.running:
        problems.append("the media engine thread is not running")
    return problems


def journal_problem(directory: Path) -> str | None:
    """Why the journal cannot take records now, or None: the directory must
    exist and be writable by us, and its filesystem must have room."""
    try:
        if not os.access(directory, os.W_OK | os.X_OK):
            return f"journal {directory} is not writable"
        if os.statvfs(directory).f_bavail == 0:
            return f"journal {directory}: no space left on its filesystem"
    except OSError as error:
        return f"journal {directory}: {error.strerror or error}"
    return None
