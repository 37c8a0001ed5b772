"""Why storage failed, in a few stable words, and the room recordings leave the journal.

A recording or a journal write that fails carries an ``OSError`` with an
errno; what downstream systems and operators need is a short reason that
does not change with the kernel's wording: the CDR's ``recording_error``
field (docs/contracts.md) and the journal's state on ``/readyz`` use
:func:`reason_of`.

Recordings and the journal share the storage dir. If recordings ran the
disk full, the CDRs of the very calls that go on unrecorded would have no
room either, and the server would have to refuse calls. So recordings stop
while :class:`FreeSpace` still sees ``reserve`` bytes free, and the journal
(a few hundred bytes per call) keeps that room for itself.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from typing import Final

__all__ = [
    "DISK_FULL",
    "INTERNAL_ERROR",
    "IO_ERROR",
    "NO_PERMISSION",
    "READ_ONLY",
    "REASONS",
    "SIZE_LIMIT",
    "FreeSpace",
    "reason_of",
]

DISK_FULL: Final = "disk-full"
"""ENOSPC or EDQUOT, or less free space than the reserve."""
READ_ONLY: Final = "read-only"
"""EROFS: the filesystem was remounted read-only (often after I/O errors)."""
NO_PERMISSION: Final = "no-permission"
"""EACCES or EPERM: the storage dir's owner or mode changed under us."""
IO_ERROR: Final = "io-error"
"""EIO and any other OSError: the device failed."""
SIZE_LIMIT: Final = "size-limit"
"""The file reached a format's limit (a WAV's 4 GiB)."""
INTERNAL_ERROR: Final = "internal-error"
"""Anything else: a bug, logged with its traceback."""
REASONS: Final = (DISK_FULL, READ_ONLY, NO_PERMISSION, IO_ERROR, SIZE_LIMIT, INTERNAL_ERROR)

_BY_ERRNO: Final = {
    errno.ENOSPC: DISK_FULL,
    errno.EDQUOT: DISK_FULL,
    errno.EROFS: READ_ONLY,
    errno.EACCES: NO_PERMISSION,
    errno.EPERM: NO_PERMISSION,
}


def reason_of(error: BaseException) -> str:
    """The stable reason for ``error``: one of :data:`REASONS`."""
    if isinstance(error, OverflowError):
        return SIZE_LIMIT
    if isinstance(error, OSError):
        return _BY_ERRNO.get(error.errno or 0, IO_ERROR)
    return INTERNAL_ERROR


class FreeSpace:
    """Whether the filesystem of ``path`` has more than ``reserve`` bytes free.

    :meth:`check` answers ``""`` (room) or a reason (:data:`DISK_FULL`,
    :data:`READ_ONLY`, or what ``statvfs`` itself failed with); the answer is
    kept for ``every`` seconds, so asking per call costs one ``statvfs`` a
    second at most. ``reserve=0`` always answers room (recordings then run
    until the disk says ENOSPC).
    """

    def __init__(self, path: str | os.PathLike[str], reserve: int, *, every: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 statvfs: Callable[[str], os.statvfs_result] = os.statvfs) -> None:
        if reserve < 0:
            raise ValueError(f"reserve must be >= 0 bytes, not {reserve!r}")
        self.path = os.fspath(path)
        self.reserve = reserve
        self.every = every
        self._clock = clock
        self._statvfs = statvfs
        self._checked_at: float | None = None
        self._answer = ""
        self.free: int | None = None  # bytes free to us at the last check
        #: Why there is no room, as the OSError a write would have raised; None: room.
        self.error: OSError | None = None

    def check(self) -> str:
        if self.reserve == 0:
            return ""
        now = self._clock()
        if self._checked_at is not None and now - self._checked_at < self.every:
            return self._answer
        self._checked_at = now
        try:
            stat = self._statvfs(self.path)
        except OSError as error:
            self.free, self.error = None, error
        else:
            self.free = stat.f_bavail * stat.f_frsize
            if stat.f_flag & os.ST_RDONLY:
                self.error = OSError(errno.EROFS, "read-only filesystem", self.path)
            elif self.free < self.reserve:
                self.error = OSError(
                    errno.ENOSPC, f"{self.free} bytes free, less than the {self.reserve} "
                    "kept for the journal", self.path)
            else:
                self.error = None
        self._answer = "" if self.error is None else reason_of(self.error)
        return self._answer
