"""Publication to Redis, exactly once per record, whatever is replayed, in bounded memory.

The journal is replayed after every crash from a cursor that may lag behind
what Redis already has, and a command that timed out may or may not have
run. Exactly-once downstream therefore cannot come from the sender's
bookkeeping; it comes from Redis itself: every publication is a Lua script
that checks and performs its writes in one atomic step. Two checks, each
with state that does not grow with the number of calls:

* **The watermark** ``<prefix>:watermark:<node>`` = ``"<journal id> <seq>
  <offset>"``: the journal position of the last record this node's
  publisher got into Redis. The publisher sends in journal order, so a
  record at or before the watermark of the same journal (watermark.py
  names journals) is a replay and is dropped, however old: this is what
  makes any replay, from any cursor (or none), exactly once.
* **The window** ``<prefix>:seen:<node>`` (+ ``:old``): a hash of the ids
  published recently, ``cdr:<call_id>`` and ``del:<recording id>``, that
  catches the same record at a *different* position (the writer's retry
  after a failed write puts a record in the journal twice; ``retention
  sweep`` publishes its deletions directly, then the node's publisher
  again from the journal). When the hash reaches half of ``window``
  entries it is renamed to ``:old`` (dropping the previous ``:old``), so
  at least the last ``window / 2`` ids per node are always known and at
  most ``window`` are kept. Both keys expire ``marker_ttl`` after the
  node's last publication, so a node gone for good leaves nothing.

Keys from before 1.3 (``<prefix>:cdr:published:<call_id>``,
``<prefix>:recording-deleted:<id>``) are still honoured while they live
(their TTL ends them), so an upgrade replays nothing twice.

* CDR: XADD to ``<prefix>:cdr`` unless behind the watermark or seen.
  XADD runs before any other write so that a script stopped by an
  out-of-memory error at its first write leaves nothing.
* Recording handle: HSET ``<prefix>:recording:<id>`` and ZADD
  ``<prefix>:recordings:expiry``, unless behind the watermark or the
  recording's deletion is known, so a replayed handle never brings a
  destroyed recording back.
* Deletion: unless behind the watermark or seen, XADD ``{event: deleted,
  id, reason, ...}`` to ``<prefix>:recording-events``, DEL the hash, ZREM
  the member: one event per id.

Both streams are written with ``XADD ... MAXLEN ~ N`` when a cap is set:
Redis then drops whole nodes of the *oldest* entries only while at least
``N`` remain. ``N`` is raised to at least ``min_maxlen`` (twice the
publisher's batch), so an entry is trimmed only once more than a batch of
newer ones exist: everything this node's publisher has not seen confirmed
is in its one batch in flight, the newest of its entries (docs/records.md,
"Stream caps"). Exactly-once does not depend on the stream: a replay of a
trimmed entry is dropped by the watermark or the window, not by looking
for the entry.

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
from mediacore.records.journal import Entry, Position
from mediacore.records.recordings import RecordingDeleted, RecordingHandle

__all__ = [
    "DEFAULT_MARKER_TTL",
    "DEFAULT_MIN_MAXLEN",
    "DEFAULT_WINDOW",
    "PUBLISHED_TYPES",
    "Origin",
    "PublishResult",
    "RedisKeys",
    "RedisSink",
]

log = logging.getLogger("mediacore.records.redis")

DEFAULT_MARKER_TTL = 30 * 86_400
DEFAULT_WINDOW = 100_000  # ids remembered per node: at least half of them, at most all
DEFAULT_MIN_MAXLEN = 1000  # twice the publisher's default batch: see the module doc
PUBLISHED_TYPES = ("cdr", "recording", "voicemail-delivered", "recording-deleted")


class _Script:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


# Shared by the three scripts. KEYS[1..4]: watermark, window, old window, legacy
# marker. ARGV[1..5]: journal id ('' when the record has no journal position,
# e.g. `retention sweep` publishing its deletions), seq, offset, window field,
# window half-size. ARGV[6]: window TTL (s).
PRELUDE = """
local function behind()
  if ARGV[1] == '' then return false end
  local wm = redis.call('GET', KEYS[1])
  if not wm then return false end
  local j, s, o = string.match(wm, '^(%S+) (%d+) (%d+)$')
  if j ~= ARGV[1] then return false end
  local seq, off = tonumber(ARGV[2]), tonumber(ARGV[3])
  s, o = tonumber(s), tonumber(o)
  return seq < s or (seq == s and off <= o)
end
local function advance()
  if ARGV[1] ~= '' then
    redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
  end
end
local function seen()
  return redis.call('HGET', KEYS[2], ARGV[4]) or redis.call('HGET', KEYS[3], ARGV[4])
    or redis.call('GET', KEYS[4])
end
local function remember(value)
  redis.call('HSET', KEYS[2], ARGV[4], value)
  redis.call('EXPIRE', KEYS[2], ARGV[6])
  if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[5]) then
    redis.call('RENAME', KEYS[2], KEYS[3])
  end
end
local function xadd(stream, maxlen, ...)
  if maxlen == '0' then return redis.call('XADD', stream, '*', ...) end
  return redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', ...)
end
"""

CDR_SCRIPT = _Script(PRELUDE + """
-- KEYS[5]: stream. ARGV[7]: maxlen; ARGV[8..]: field, value, ...
if behind() then return {0, 'watermark'} end
local done = seen()
if done then advance() return {0, done} end
local id = xadd(KEYS[5], ARGV[7], unpack(ARGV, 8))
remember(id)
advance()
return {1, id}
""")

HANDLE_SCRIPT = _Script(PRELUDE + """
-- KEYS[5]: hash, KEYS[6]: expiry zset. ARGV[7]: id, ARGV[8]: score, ARGV[9..]: fields.
-- The window field is the recording's deletion ('del:<id>'): a deleted one stays deleted.
if behind() then return 0 end
if seen() then advance() return 0 end
local existed = redis.call('EXISTS', KEYS[5])
redis.call('HSET', KEYS[5], unpack(ARGV, 9))
redis.call('ZADD', KEYS[6], ARGV[8], ARGV[7])
advance()
return 1 + existed
""")

DELETE_SCRIPT = _Script(PRELUDE + """
-- KEYS[5]: hash, KEYS[6]: expiry zset, KEYS[7]: events stream.
-- ARGV[7]: maxlen, ARGV[8]: id, ARGV[9..]: the event's fields after event and id.
if behind() then return {0, 'watermark'} end
local done = seen()
if done then advance() return {0, done} end
local eid = xadd(KEYS[7], ARGV[7], 'event', 'deleted', 'id', ARGV[8], unpack(ARGV, 9))
redis.call('DEL', KEYS[5])
redis.call('ZREM', KEYS[6], ARGV[8])
remember(eid)
advance()
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
        """Before 1.3: one key per CDR (still honoured while its TTL lasts)."""
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
        """Before 1.3: one key per deleted recording (still honoured while its TTL lasts)."""
        return f"{self.prefix}:recording-deleted:{id}"

    def watermark(self, node: str) -> str:
        return f"{self.prefix}:watermark:{node}"

    def window(self, node: str) -> str:
        return f"{self.prefix}:seen:{node}"

    def old_window(self, node: str) -> str:
        return f"{self.prefix}:seen:{node}:old"


@dataclass(frozen=True, slots=True)
class Origin:
    """Whose journal a batch comes from: the node and its journal's identity (watermark.py).

    ``journal_id`` empty: the records have no trustworthy position (``retention
    sweep`` publishing its own deletions), so only the window deduplicates them.
    """

    node: str
    journal_id: str = ""


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
                 cdr_maxlen: int = 0,
                 events_maxlen: int = 0,
                 min_maxlen: int = DEFAULT_MIN_MAXLEN,
                 window: int = DEFAULT_WINDOW,
                 client: aioredis.Redis | None = None) -> None:
        self.keys = RedisKeys(prefix)
        self.marker_ttl = marker_ttl
        if window < 2:
            raise ValueError("the dedupe window must hold at least 2 ids")
        self.window = window
        self.cdr_maxlen = _floor(cdr_maxlen, min_maxlen)
        self.events_maxlen = _floor(events_maxlen, min_maxlen)
        self.url = url
        # Our own loop retries with backoff and logs; the client must fail fast.
        self.redis = client or aioredis.Redis.from_url(
            url, socket_connect_timeout=2.0, socket_timeout=5.0,
            retry=Retry(NoBackoff(), 0), client_name="mediacore-records",
        )

    async def publish(self, entries: Sequence[Entry],
                      origin: Origin | None = None) -> PublishResult:
        """Publish a batch in one pipeline; raises a RedisError if Redis did not take it all.

        ``origin`` is the journal the entries were read from, in order (the
        publisher's); without it each entry's ``node`` field picks the window
        and no watermark is used. On an error nothing is known about which
        scripts ran, and nothing needs to be: calling again with the same
        entries is the recovery.
        """
        result = PublishResult()
        calls: list[tuple[_Script, list[str], list[str]]] = []
        for entry in entries:
            try:
                call = self._call(entry, origin)
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

    async def watermark(self, node: str) -> tuple[str, Position] | None:
        """The journal id and position of the last record ``node``'s publisher got in."""
        value = await self.redis.get(self.keys.watermark(node))
        if value is None:
            return None
        parts = as_text(value).split(" ")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            return None
        return parts[0], Position(int(parts[1]), int(parts[2]))

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

    def _head(self, entry: Entry, origin: Origin | None, field: str,
              legacy: str) -> tuple[list[str], list[str]]:
        """The keys and arguments the prelude reads (see PRELUDE)."""
        node = origin.node if origin is not None else str(entry.data.get("node", ""))
        keys = self.keys
        journal_id = origin.journal_id if origin is not None else ""
        seq, offset = ((str(entry.position.seq), str(entry.position.offset)) if journal_id
                       else ("0", "0"))
        return ([keys.watermark(node), keys.window(node), keys.old_window(node), legacy],
                [journal_id, seq, offset, field, str(max(1, self.window // 2)),
                 str(self.marker_ttl)])

    def _call(self, entry: Entry,
              origin: Origin | None) -> tuple[_Script, list[str], list[str]] | None:
        keys = self.keys
        if entry.type == "cdr":
            cdr = Cdr.from_fields(entry.data)
            head_keys, head_args = self._head(entry, origin, f"cdr:{cdr.call_id}",
                                              keys.cdr_marker(cdr.call_id))
            return (CDR_SCRIPT, [*head_keys, keys.cdr_stream],
                    [*head_args, str(self.cdr_maxlen), *_flat(cdr.to_fields())])
        if entry.type in ("recording", "voicemail-delivered"):
            handle = RecordingHandle.from_fields(entry.data)
            head_keys, head_args = self._head(entry, origin, f"del:{handle.id}",
                                              keys.deleted_marker(handle.id))
            return (HANDLE_SCRIPT, [*head_keys, keys.recording(handle.id), keys.expiry],
                    [*head_args, handle.id, repr(handle.expires_unix),
                     *_flat(handle.to_fields())])
        if entry.type == "recording-deleted":
            deleted = RecordingDeleted.from_fields(entry.data)
            event = deleted.to_fields()
            del event["id"]
            head_keys, head_args = self._head(entry, origin, f"del:{deleted.id}",
                                              keys.deleted_marker(deleted.id))
            return (DELETE_SCRIPT,
                    [*head_keys, keys.recording(deleted.id), keys.expiry, keys.events],
                    [*head_args, str(self.events_maxlen), deleted.id, *_flat(event)])
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


def _floor(maxlen: int, minimum: int) -> int:
    """A stream cap, raised to ``minimum`` (0 stays 0: uncapped)."""
    return 0 if maxlen <= 0 else max(maxlen, minimum)


def _flat(fields: dict[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]
