"""Publication to Redis, exactly once per record, whatever is replayed.

The journal is replayed after every crash from a cursor that may lag behind
what Redis already has, and a command that timed out may or may not have
run. Exactly-once downstream therefore cannot come from the sender's
bookkeeping; it comes from Redis itself: every publication is a Lua script
that checks a marker key and performs its writes in one atomic step.

* CDR: ``<prefix>:cdr:published:<call_id>`` (value: the stream entry id,
  TTL ``marker_ttl``) is checked; if absent, the CDR is XADDed to
  ``<prefix>:cdr`` and the marker set. XADD runs before SET so that a
  script stopped by an out-of-memory error at its first write leaves
  neither.
* Recording handle: HSET ``<prefix>:recording:<id>`` and ZADD
  ``<prefix>:recordings:expiry``, unless the recording was already deleted
  (``<prefix>:recording-deleted:<id>`` exists), so a replayed handle never
  brings a destroyed recording back.
* Deletion: unless ``<prefix>:recording-deleted:<id>`` exists, XADD
  ``{event: deleted, id, reason, ...}`` to ``<prefix>:recording-events``,
  DEL the hash, ZREM the member and set that marker: one event per id.

Scripts run by EVALSHA, pipelined; on NOSCRIPT (a restarted or flushed
Redis) they are loaded with SCRIPT LOAD and the batch is sent again, which
is safe for the same reason replays are. Redis Cluster is not supported:
the keys of one script would live in different slots.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

from mediacore.records.cdr import Cdr, as_text
from mediacore.records.journal import Entry
from mediacore.records.recordings import RecordingDeleted, RecordingHandle

__all__ = ["DEFAULT_MARKER_TTL", "PUBLISHED_TYPES", "PublishResult", "RedisKeys", "RedisSink"]

log = logging.getLogger("mediacore.records.redis")

DEFAULT_MARKER_TTL = 30 * 86_400
PUBLISHED_TYPES = ("cdr", "recording", "voicemail-delivered", "recording-deleted")


class _Script:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


CDR_SCRIPT = _Script("""
-- KEYS: marker, stream. ARGV: ttl, field, value, ...
local seen = redis.call('GET', KEYS[1])
if seen then return {0, seen} end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
redis.call('SET', KEYS[1], id, 'EX', ARGV[1])
return {1, id}
""")

HANDLE_SCRIPT = _Script("""
-- KEYS: hash, expiry zset, deleted marker. ARGV: id, score, field, value, ...
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local existed = redis.call('EXISTS', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1 + existed
""")

DELETE_SCRIPT = _Script("""
-- KEYS: hash, expiry zset, deleted marker, events stream.
-- ARGV: id, ttl, field, value, ... (the event's fields after event and id)
local seen = redis.call('GET', KEYS[3])
if seen then return {0, seen} end
local eid = redis.call('XADD', KEYS[4], '*', 'event', 'deleted', 'id', ARGV[1],
                       unpack(ARGV, 3))
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], eid, 'EX', ARGV[2])
return {1, eid}
""")

SCRIPTS = (CDR_SCRIPT, HANDLE_SCRIPT, DELETE_SCRIPT)


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Every key name in one place (docs/records.md lists them)."""

    prefix: str = "mediacore"

    @property
    def cdr_stream(self) -> str:
        return f"{self.prefix}:cdr"

    def cdr_marker(self, call_id: str) -> str:
        return f"{self.prefix}:cdr:published:{call_id}"

    def recording(self, id: str) -> str:
        return f"{self.prefix}:recording:{id}"

    @property
    def expiry(self) -> str:
        return f"{self.prefix}:recordings:expiry"

    @property
    def events(self) -> str:
        return f"{self.prefix}:recording-events"

    def deleted_marker(self, id: str) -> str:
        return f"{self.prefix}:recording-deleted:{id}"


@dataclass(slots=True)
class PublishResult:
    """One batch: newly published, already there (a replay), refused as malformed."""

    published: int = 0
    duplicates: int = 0
    rejected: int = 0


class RedisSink:
    """Publishes journal entries; safe to call again with the same entries, always."""

    def __init__(self, url: str, prefix: str = "mediacore", *,
                 marker_ttl: int = DEFAULT_MARKER_TTL,
                 client: aioredis.Redis | None = None) -> None:
        self.keys = RedisKeys(prefix)
        self.marker_ttl = marker_ttl
        self.url = url
        # Our own loop retries with backoff and logs; the client must fail fast.
        self.redis = client or aioredis.Redis.from_url(
            url, socket_connect_timeout=2.0, socket_timeout=5.0,
            retry=Retry(NoBackoff(), 0), client_name="mediacore-records",
        )

    async def publish(self, entries: Sequence[Entry]) -> PublishResult:
        """Publish a batch in one pipeline; raises a RedisError if Redis did not take it all.

        On an error nothing is known about which scripts ran, and nothing
        needs to be: calling again with the same entries is the recovery.
        """
        result = PublishResult()
        calls: list[tuple[_Script, list[str], list[str]]] = []
        for entry in entries:
            try:
                call = self._call(entry)
            except (ValueError, TypeError, KeyError) as error:
                result.rejected += 1
                log.error("journal record at %s (%s) is malformed and not published: %s",
                          entry.position, entry.type, error)
                continue
            if call is not None:
                calls.append(call)
        if not calls:
            return result
        replies = await self._run(calls)
        for reply in replies:
            fresh = int(reply[0]) == 1 if isinstance(reply, list) else int(reply) == 1
            if fresh:
                result.published += 1
            else:
                result.duplicates += 1
        return result

    async def expired(self, now: float, limit: int = 500) -> list[tuple[str, dict[str, str]]]:
        """Recordings whose expiry score has passed, with their hash (``{}`` if it is gone)."""
        members = await self.redis.zrangebyscore(self.keys.expiry, "-inf", now, start=0,
                                                 num=limit)
        if not members:
            return []
        ids = [as_text(m) for m in members]
        async with self.redis.pipeline(transaction=False) as pipe:
            for id in ids:
                pipe.hgetall(self.keys.recording(id))
            hashes = await pipe.execute()
        return [(id, {as_text(k): as_text(v) for k, v in fields.items()})
                for id, fields in zip(ids, hashes, strict=True)]

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def close(self) -> None:
        await self.redis.aclose()

    def _call(self, entry: Entry) -> tuple[_Script, list[str], list[str]] | None:
        keys, ttl = self.keys, str(self.marker_ttl)
        if entry.type == "cdr":
            cdr = Cdr.from_fields(entry.data)
            return (CDR_SCRIPT, [keys.cdr_marker(cdr.call_id), keys.cdr_stream],
                    [ttl, *_flat(cdr.to_fields())])
        if entry.type in ("recording", "voicemail-delivered"):
            handle = RecordingHandle.from_fields(entry.data)
            return (HANDLE_SCRIPT,
                    [keys.recording(handle.id), keys.expiry, keys.deleted_marker(handle.id)],
                    [handle.id, repr(handle.expires_unix), *_flat(handle.to_fields())])
        if entry.type == "recording-deleted":
            deleted = RecordingDeleted.from_fields(entry.data)
            event = deleted.to_fields()
            del event["id"]
            return (DELETE_SCRIPT,
                    [keys.recording(deleted.id), keys.expiry, keys.deleted_marker(deleted.id),
                     keys.events],
                    [deleted.id, ttl, *_flat(event)])
        return None

    async def _run(self, calls: list[tuple[_Script, list[str], list[str]]]) -> list[Any]:
        for attempt in range(2):
            async with self.redis.pipeline(transaction=False) as pipe:
                for script, keys, args in calls:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                replies = await pipe.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in replies):
                for script in SCRIPTS:
                    await self.redis.script_load(script.source)
                continue
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return replies
        raise NoScriptError("scripts vanished again right after SCRIPT LOAD")


def _flat(fields: dict[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]
