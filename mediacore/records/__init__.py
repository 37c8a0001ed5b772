"""CDRs and recording handles: a local durable journal first, Redis second,
so that Redis being down means delay, never loss. Never imports sip/ or rtp/.

The app needs :class:`RecordsService` and the record types; docs/records.md
describes the journal, the Redis schema and the exactly-once design.
"""

from mediacore.records.cdr import CDR_FIELDS, DISPOSITIONS, HANGUP_BY, Cdr
from mediacore.records.publisher import Lag
from mediacore.records.recordings import (
    RecordingDeleted,
    RecordingHandle,
    WavFacts,
    describe_wav,
    new_recording_id,
)
from mediacore.records.retention import SweepReport
from mediacore.records.service import RecordsError, RecordsService, RecordsStats, sweep_once

__all__ = [
    "CDR_FIELDS",
    "DISPOSITIONS",
    "HANGUP_BY",
    "Cdr",
    "Lag",
    "RecordingDeleted",
    "RecordingHandle",
    "RecordsError",
    "RecordsService",
    "RecordsStats",
    "SweepReport",
    "WavFacts",
    "describe_wav",
    "new_recording_id",
    "sweep_once",
]
