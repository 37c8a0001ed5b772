"""Making a directory's entries durable: one helper for the journal, the
storage layout and the voicemail spool.

A file's fsync does not make its name survive a power cut: a create, rename,
link or unlink is durable only once the directory holding it is fsynced.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """fsync ``directory`` itself, so the names created or removed in it stay."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
