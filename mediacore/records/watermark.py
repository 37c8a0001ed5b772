"""A journal's identity, so that Redis's publication watermark can trust journal positions.

The publisher's watermark in Redis (redis_sink.py) says "every record of
this journal up to position ``seq:offset`` is in": a replay of anything at
or before it is dropped, from any cursor, for ever. That is only right for
*the same* journal: a node whose journal dir was wiped, or restored from a
backup older than what Redis has, writes new records at positions the
watermark already covers, and those must not be taken for replays.

So each node's journal has a random identity, ``journal/<node>/journal-id``,
written once (crash-safely: temporary file, fsync, rename, fsync of the
directory) and named in the watermark. A new journal has a new identity
and a watermark of its own. :func:`renew_identity` gives the journal a new
one when it is found to be *behind* its watermark (restored or cut): its
records are then published again, and the dedupe window in Redis drops
those it still knows.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from pathlib import Path

from mediacore.fsync import fsync_dir

__all__ = ["IDENTITY", "load_identity", "renew_identity"]

log = logging.getLogger("mediacore.records")

IDENTITY = "journal-id"
_VALID = re.compile(r"^[0-9a-f]{32}$")


def load_identity(directory: Path) -> str:
    """The journal's identity; made now if it has none (a new journal, or one from before 1.3)."""
    path = Path(directory) / IDENTITY
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return renew_identity(directory, why="")
    except (OSError, UnicodeDecodeError) as error:
        return renew_identity(directory, why=f"{IDENTITY} is unreadable ({error})")
    if not _VALID.match(text):
        return renew_identity(directory, why=f"{IDENTITY} holds {text[:40]!r}, not an id")
    return text


def renew_identity(directory: Path, *, why: str) -> str:
    """Give the journal a new identity, atomically; ``why`` (if any) is logged at WARNING."""
    directory = Path(directory)
    identity = secrets.token_hex(16)
    tmp = directory / (IDENTITY + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, (identity + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / IDENTITY)
    fsync_dir(directory)
    if why:
        log.warning("records: %s; the journal in %s gets a new identity (%s): Redis takes "
                    "its records as new, and drops those its dedupe window still knows",
                    why, directory, identity)
    return identity
