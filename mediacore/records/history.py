"""Reading the journal back for people: ``cdr list`` and ``cdr export``.

The journal is the system of record on the node, with or without Redis,
so these read it directly and need no running server. With several nodes
sharing a storage dir (one process per core) each has its own journal
(``journal/<node>/``); these read all of them, merged in journal time
order, or the ones they are given. A CDR that appears
twice in the journal (only possible after a failed fsync was retried, see
writer.py) is listed once: ``call_id`` is unique by contract.

Both cover the journal as kept: files older than ``[records]
journal_keep_days`` are pruned once published (pruning.py), and their CDRs
with them; recording handles still within retention are carried forward
(carried.py), so the export still lists and copies every recording kept.

``cdr export`` is DESIGN.md promise 6: an owner gets all of their history
in standard formats, CSV and JSON, and the WAV files of the recordings we
still keep. Recordings we no longer keep (retention ended, deleted,
voicemail, file gone) are listed with the reason, so the owner can tell
"not kept" from "forgotten".
"""

from __future__ import annotations

import csv
import heapq
import json
import logging
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from mediacore.records.carried import read_handles
from mediacore.records.cdr import CDR_FIELDS, Cdr
from mediacore.records.journal import read_merged
from mediacore.records.recordings import HANDLE_FIELDS, RecordingDeleted, RecordingHandle
from mediacore.records.timefmt import format_utc, to_utc_ms, utc_now

__all__ = [
    "ExportReport",
    "export_owner",
    "iter_cdrs",
    "parse_when",
    "select_cdrs",
    "write_cdrs",
]

log = logging.getLogger("mediacore.records")

EXPORT_FIELDS = (*HANDLE_FIELDS, "file", "note")


def parse_when(text: str) -> datetime:
    """An ISO 8601 date (midnight UTC) or date-time; without a zone it is UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 date or date-time (e.g. 2026-11-23, "
                         "2026-11-23T15:04:11Z or 2026-11-23T16:04:11+01:00)") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return to_utc_ms(value)


def _dirs(journals: Path | Iterable[Path]) -> list[Path]:
    return [journals] if isinstance(journals, Path) else list(journals)


def iter_cdrs(journals: Path | Iterable[Path]) -> Iterator[Cdr]:
    """Every CDR in the journal(s), oldest first (merged by journal time), each ``call_id`` once."""
    seen: set[str] = set()
    for entry in read_merged(_dirs(journals), types=("cdr",)):
        try:
            cdr = Cdr.from_fields(entry.data)
        except (ValueError, TypeError) as error:
            log.warning("journal record at %s is not a valid CDR, skipped: %s",
                        entry.position, error)
            continue
        if cdr.call_id in seen:
            continue
        seen.add(cdr.call_id)
        yield cdr


def select_cdrs(
    cdrs: Iterable[Cdr],
    *,
    number: str | None = None,
    owner: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[Cdr]:
    """Filter by number, owner and call start: ``since`` inclusive, ``until`` exclusive."""
    for cdr in cdrs:
        if number is not None and cdr.number != number:
            continue
        if owner is not None and cdr.owner != owner:
            continue
        if since is not None and cdr.start < since:
            continue
        if until is not None and cdr.start >= until:
            continue
        yield cdr


def write_cdrs(cdrs: Iterable[Cdr], out: TextIO, format: str) -> int:
    """CSV (a header of the contract's field names) or a JSON array; returns the count."""
    count = 0
    if format == "csv":
        writer = csv.DictWriter(out, fieldnames=CDR_FIELDS, lineterminator="\n")
        writer.writeheader()
        for cdr in cdrs:
            writer.writerow(cdr.to_fields())
            count += 1
        return count
    if format != "json":
        raise ValueError(f"unknown format {format!r}")
    out.write("[")
    for cdr in cdrs:
        out.write(",\n" if count else "\n")
        out.write(cdr.to_json())
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


@dataclass(slots=True)
class ExportReport:
    cdrs: int = 0
    recordings: int = 0
    copied: list[str] = field(default_factory=list)
    not_copied: dict[str, str] = field(default_factory=dict)  # id: why


def export_owner(journals: Path | Iterable[Path], owner: str, out: Path,
                 now: datetime | None = None) -> ExportReport:
    """Write ``out/cdrs.{csv,json}``, ``out/recordings.{csv,json}`` and ``out/recordings/*.wav``.

    ``out`` must not exist or be empty: an export mixed with an older one
    would not say what the owner's data is.
    """
    now = now or utc_now()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty directory")
    report = ExportReport()
    directories = _dirs(journals)
    cdrs = list(select_cdrs(iter_cdrs(directories), owner=owner))
    handles: dict[str, RecordingHandle] = {}
    deleted: dict[str, RecordingDeleted] = {}
    # Handles carried out of pruned journal files count too (carried.py): a
    # recording still kept is listed and copied whatever its journal file's age.
    for entry in heapq.merge(*(read_handles(d, ("recording", "voicemail-delivered",
                                                "recording-deleted")) for d in directories),
                             key=lambda entry: entry.at):
        try:
            if entry.type == "recording-deleted":
                gone = RecordingDeleted.from_fields(entry.data)
                deleted.setdefault(gone.id, gone)
            elif entry.data.get("owner") == owner:
                handle = RecordingHandle.from_fields(entry.data)
                handles.setdefault(handle.id, handle)
        except (ValueError, TypeError, KeyError) as error:
            log.warning("journal record at %s is malformed, skipped: %s", entry.position, error)
    (out / "recordings").mkdir(parents=True, exist_ok=True)
    with open(out / "cdrs.csv", "w", newline="") as handle_csv:
        report.cdrs = write_cdrs(cdrs, handle_csv, "csv")
    with open(out / "cdrs.json", "w") as handle_json:
        write_cdrs(cdrs, handle_json, "json")
    rows = []
    for handle in handles.values():
        row: dict[str, str] = {**handle.to_fields(), "file": "", "note": ""}
        row["note"] = _why_not(handle, deleted.get(handle.id), now)
        if not row["note"]:
            target = out / "recordings" / f"{handle.id}.wav"
            try:
                shutil.copyfile(handle.path, target)
            except FileNotFoundError:
                row["note"] = "file not found (already deleted?)"
            except OSError as error:
                row["note"] = f"could not be copied: {error.strerror or error}"
            else:
                row["file"] = f"recordings/{handle.id}.wav"
                report.copied.append(handle.id)
        if row["note"]:
            report.not_copied[handle.id] = row["note"]
        rows.append(row)
    report.recordings = len(rows)
    with open(out / "recordings.csv", "w", newline="") as rec_csv:
        writer = csv.DictWriter(rec_csv, fieldnames=EXPORT_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    with open(out / "recordings.json", "w") as rec_json:
        json.dump(rows, rec_json, indent=1)
        rec_json.write("\n")
    return report


def _why_not(handle: RecordingHandle, deleted: RecordingDeleted | None, now: datetime) -> str:
    if handle.kind == "voicemail":
        return f"voicemail: delivered by e-mail {format_utc(handle.delivered)}, not kept"
    if deleted is not None:
        return f"deleted {format_utc(deleted.at)} ({deleted.reason})"
    if handle.expires <= now:
        return f"retention ended {format_utc(handle.expires)}"
    return ""
