"""Where each node's single-owner state lives below a storage dir shared by several processes.

Several mediacore processes on one host (one per core) share one ``[storage]
dir`` and one Redis; each has its own ``[records] node``. What has exactly
one owner lives below that node's name, what is shared does not::

    <storage>/
      recordings/                  shared: files are named by call id (random, 64 bits)
      journal/
        service.lock               legacy guard: LOCK_SH by every running node,
                                   LOCK_EX while a flat journal is being moved
        migrating.json             only while a flat journal is being moved
        <node>/                    one node's journal: single writer, single publisher
          service.lock             the node's owner (LOCK_EX for the server's life; its pid)
          append.lock, cursor.json, journal-<seq>-<yyyymmdd>.jsonl
          retention/due-<yyyymmddThhmmss>Z.jsonl
                                   recordings expiring in that hour, not yet in
                                   RAM (retention.py; rebuilt from the journal
                                   at every start)
      voicemail-spool/<node>/      one node's voicemail queue (calls/voicemail.py)

:func:`claim_node` is what a server does at start, before any socket opens:
it takes the node's lock (a second process with the same node is refused,
naming the storage dir), holds the legacy guard shared (a mediacore from
before per-node journals, which takes ``journal/service.lock`` exclusively,
cannot start beside us and write a flat journal), and moves a flat journal
(``journal/journal-*.jsonl`` and ``cursor.json`` directly in ``journal/``,
from before this layout) into ``journal/<node>/`` once.

The move never loses or duplicates a record, and a crash halfway is
finished by the next start (of any node): ``migrating.json`` is written
first and names the target and a seq offset; each file is hard-linked to
its new name (never overwriting one) and then unlinked from the old one; the
cursor goes last; the marker is removed at the end. If the target already
has a journal (a flat one was written later, by an older version run after
the upgrade), the moved files are renumbered after the target's last file
and the flat cursor is dropped: the publisher replays them, and Redis drops
what it already has (redis_sink.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from mediacore.config import node_problem
from mediacore.fsync import fsync_dir

__all__ = [
    "JOURNAL_DIRNAME",
    "LayoutError",
    "NodeClaim",
    "claim_node",
    "flat_journal_present",
    "journal_dirs",
    "journal_root",
    "migrate_flat_journal",
    "node_journal_dir",
    "node_problem",
    "retention_dir",
]

log = logging.getLogger("mediacore.records")

JOURNAL_DIRNAME = "journal"
SERVICE_LOCK = "service.lock"
MARKER = "migrating.json"
CURSOR = "cursor.json"
RETENTION_DIRNAME = "retention"
FILE_RE = re.compile(r"^journal-(\d{6,})-(\d{8})\.jsonl$")
LEGACY_WAIT = 10.0


class LayoutError(Exception):
    """The storage dir cannot be used by this node (in use, or in a state to fix by hand)."""


def journal_root(storage_dir: Path) -> Path:
    return Path(storage_dir) / JOURNAL_DIRNAME


def node_journal_dir(storage_dir: Path, node: str) -> Path:
    problem = node_problem(node)
    if problem:
        raise ValueError(f"records.node {node!r} {problem}")
    return journal_root(storage_dir) / node


def retention_dir(storage_dir: Path, node: str) -> Path:
    """``journal/<node>/retention/``: the node's retention buckets (derived, rebuilt at start)."""
    return node_journal_dir(storage_dir, node) / RETENTION_DIRNAME


def _journal_files(directory: Path) -> list[tuple[int, str]]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = [(int(m.group(1)), name) for name in names if (m := FILE_RE.match(name))]
    found.sort()
    return found


def flat_journal_present(storage_dir: Path) -> bool:
    """A journal from before per-node journals (or a move not finished) is in ``journal/``."""
    root = journal_root(storage_dir)
    return bool(_journal_files(root)) or (root / CURSOR).exists() or (root / MARKER).exists()


def journal_dirs(storage_dir: Path, node: str | None = None) -> list[tuple[str, Path]]:
    """The journals below the storage dir, as ``(node, dir)``, by node name.

    Every ``journal/<node>/`` holding journal files, and ``journal/`` itself
    (node ``""``) while it holds a flat journal not moved yet (no server has
    started since the upgrade, or a move was interrupted: its files are in
    exactly one of the two places, so reading both loses and repeats
    nothing). ``node`` narrows it to that node's dir.
    """
    root = journal_root(storage_dir)
    if node is not None:
        directory = node_journal_dir(storage_dir, node)
        return [(node, directory)] if _journal_files(directory) else []
    found: list[tuple[str, Path]] = []
    if _journal_files(root):
        found.append(("", root))
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return found
    for name in names:
        directory = root / name
        if node_problem(name) is None and directory.is_dir() and _journal_files(directory):
            found.append((name, directory))
    return found



def _holder(fd: int) -> str:
    return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"


@dataclass(slots=True)
class NodeClaim:
    """The locks a running node holds; :meth:`release` at shutdown."""

    node: str
    directory: Path
    node_fd: int
    legacy_fd: int
    migrated: int = 0

    def release(self) -> None:
        for fd in (self.node_fd, self.legacy_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.node_fd = self.legacy_fd = -1


def _lock_node(storage_dir: Path, node: str, directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / SERVICE_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise LayoutError(
            f"storage dir {storage_dir} is already used by a mediacore process with "
            f"records.node {node!r} (pid {holder}, lock {directory / SERVICE_LOCK}); "
            f"processes that share a storage dir must each have their own records.node"
        ) from None
    return fd


def claim_node(storage_dir: Path, node: str, *, wait: float = LEGACY_WAIT) -> NodeClaim:
    """Take ``node``'s journal dir for this process; move a flat journal into it first.

    Raises :class:`LayoutError` when another process has the same node, or an
    older mediacore holds the storage dir, or a flat journal cannot be moved.
    """
    storage_dir = Path(storage_dir)
    root = journal_root(storage_dir)
    directory = node_journal_dir(storage_dir, node)
    root.mkdir(parents=True, exist_ok=True)
    node_fd = _lock_node(storage_dir, node, directory)
    claim = NodeClaim(node, directory, node_fd, -1)
    try:
        claim.legacy_fd = os.open(root / SERVICE_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                                  0o644)
        deadline = time.monotonic() + wait
        while True:
            legacy = flat_journal_present(storage_dir)
            try:
                fcntl.flock(claim.legacy_fd,
                            (fcntl.LOCK_EX if legacy else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LayoutError(_legacy_busy(storage_dir, legacy,
                                                   _holder(claim.legacy_fd))) from None
                time.sleep(0.05)
                continue
            if legacy == flat_journal_present(storage_dir):
                break
            fcntl.flock(claim.legacy_fd, fcntl.LOCK_UN)  # changed meanwhile: look again
        if legacy:
            claim.migrated = migrate_flat_journal(storage_dir, node)
            try:
                fcntl.flock(claim.legacy_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LayoutError(_legacy_busy(storage_dir, False,
                                               _holder(claim.legacy_fd))) from None
        os.ftruncate(node_fd, 0)
        os.pwrite(node_fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        claim.release()
        raise
    return claim


def _legacy_busy(storage_dir: Path, legacy: bool, holder: str) -> str:
    root = journal_root(storage_dir)
    if legacy:
        return (f"storage dir {storage_dir} has a journal from before per-node journals in "
                f"{root}, and it cannot be moved while other mediacore processes use the "
                f"storage dir (lock {root / SERVICE_LOCK}, pid {holder}): stop them, then "
                f"start one process to move it")
    return (f"storage dir {storage_dir} is in use by a mediacore from before per-node "
            f"journals (pid {holder}, lock {root / SERVICE_LOCK}); stop it first")


def _read_marker(root: Path) -> tuple[str, int] | None:
    try:
        data = json.loads((root / MARKER).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise LayoutError(f"{root / MARKER} is unreadable ({error}): a move of the flat "
                          f"journal into a node dir was interrupted; finish it by hand "
                          f"(move the journal-*.jsonl files left in {root}) and delete "
                          f"the marker") from error
    try:
        node, offset = str(data["node"]), int(data["seq_offset"])
    except (KeyError, TypeError, ValueError) as error:
        raise LayoutError(f"{root / MARKER} is not a migration marker: {data!r}") from error
    if node_problem(node):
        raise LayoutError(f"{root / MARKER} names an impossible node {node!r}")
    return node, offset


def _write_marker(root: Path, node: str, offset: int) -> None:
    tmp = root / (MARKER + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, (json.dumps({"node": node, "seq_offset": offset,
                                  "pid": os.getpid()}) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, root / MARKER)
    fsync_dir(root)


def _move(source: Path, target: Path) -> None:
    """Link then unlink: never overwrites, and a crash between leaves one inode, two names."""
    try:
        os.link(source, target)
    except FileExistsError:
        if not os.path.samefile(source, target):
            raise LayoutError(f"cannot move {source} to {target}: a different file has "
                              f"that name; move the flat journal by hand") from None
    os.unlink(source)


def migrate_flat_journal(storage_dir: Path, node: str) -> int:
    """Move a flat ``journal/`` into ``journal/<node>/`` (or finish an interrupted move).

    The caller holds ``journal/service.lock`` exclusively. An interrupted
    move is finished into the node its marker names, whichever node starts
    first. Returns how many journal files were moved.
    """
    root = journal_root(storage_dir)
    marker = _read_marker(root)
    lock_fd = -1
    if marker is None:
        target, files = node, _journal_files(root / node)
        offset = files[-1][0] if files else 0
        if offset:
            log.warning("records: %s has a flat journal and %s has one too (an older "
                        "mediacore ran after the upgrade?): appending the flat files to %s "
                        "after seq %d; its records are published again and Redis drops "
                        "those it has", root, root / node, root / node, offset)
        _write_marker(root, target, offset)
    else:
        target, offset = marker
        log.warning("records: finishing an interrupted move of the flat journal %s into %s",
                    root, root / target)
        if target != node:
            lock_fd = _lock_node(storage_dir, target, root / target)
    try:
        destination = root / target
        destination.mkdir(parents=True, exist_ok=True)
        moved = 0
        for seq, name in _journal_files(root):
            date = FILE_RE.match(name).group(2)  # type: ignore[union-attr]
            _move(root / name, destination / f"journal-{seq + offset:06d}-{date}.jsonl")
            moved += 1
        fsync_dir(destination)
        cursor = root / CURSOR
        if cursor.exists():
            if offset == 0 and not (destination / CURSOR).exists():
                _move(cursor, destination / CURSOR)
                fsync_dir(destination)
            else:
                cursor.unlink()
        for leftover in (CURSOR + ".tmp", "append.lock"):
            with contextlib.suppress(FileNotFoundError):
                (root / leftover).unlink()
        fsync_dir(root)
        (root / MARKER).unlink()
        fsync_dir(root)
    finally:
        if lock_fd >= 0:
            os.close(lock_fd)
    log.warning("records: moved the journal from before per-node journals (%d files) from "
                "%s into %s, once", moved, root, destination)
    return moved
