"""The Lua scripts of the Redis driver, one per atomic step, with their SHA1 digests.

    script = SCRIPTS["write_series"]
    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)

Every script touches the keys of one hash tag only (it is always given them all in KEYS),
so each runs on one Redis Cluster node and is atomic there. Numbers travel as decimal text
or, for log records, packed bucket stats and bin groups, as little-endian doubles, int32
and uint32 (``struct``); Redis writes Lua numbers back with ``%.17g``, which reads back as
the same double. No script decodes JSON. The scripts use ``EXPIREAT ... GT`` and
``EXPIRETIME``, so they need Redis 7.0 or later.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from queuelens.storage._redis_series_scripts import (
    ADVANCE,
    APPEND_SERIES,
    HELPERS,
    WRITE_SERIES,
)

__all__ = ["SCRIPTS", "Script"]

# KEYS[1] the meta sequence hash, KEYS[2] dropped zset. ARGV[1] sequence hash TTL,
# ARGV[2] writer id, ARGV[3] sequence, ARGV[4] writer's clock, ARGV[5] created_at,
# ARGV[6] zset TTL, ARGV[7..] members (JSON [batch id, app, count]).
_WRITE_DROPPED = (
    ADVANCE
    + """
if not advance(KEYS[1], ARGV[2], ARGV[3], ARGV[4], ARGV[1]) then return 0 end
for i = 7, #ARGV do redis.call('ZADD', KEYS[2], ARGV[5], ARGV[i]) end
if #ARGV >= 7 then redis.call('EXPIRE', KEYS[2], ARGV[6]) end
return 1
"""
)

# KEYS: the minute, hour and day bucket of one gauge. ARGV[1] sample time, then one
# EXPIREAT per key, then field/value pairs.
_WRITE_GAUGE = (
    HELPERS
    + """
local at = tonumber(ARGV[1])
local first = #KEYS + 2
local names = {}
for i = first, #ARGV, 2 do
  local f = ARGV[i]
  names[#names + 1] = 't:' .. f
  names[#names + 1] = 'n:' .. f
  names[#names + 1] = 'x:' .. f
  names[#names + 1] = 's:' .. f
  names[#names + 1] = 'c:' .. f
end
for k = 1, #KEYS do
  local old = hmget(KEYS[k], names, 1, #names)
  local out = {}
  local j = 0
  for i = first, #ARGV, 2 do
    local f, raw = ARGV[i], ARGV[i + 1]
    local v = tonumber(raw)
    local last_at, low, high, total, count = old[j + 1], old[j + 2], old[j + 3], old[j + 4],
      old[j + 5]
    j = j + 5
    if not last_at or at >= tonumber(last_at) then
      out[#out + 1] = 'l:' .. f
      out[#out + 1] = raw
      out[#out + 1] = 't:' .. f
      out[#out + 1] = ARGV[1]
    end
    if not low or v < tonumber(low) then
      out[#out + 1] = 'n:' .. f
      out[#out + 1] = raw
    end
    if not high or v > tonumber(high) then
      out[#out + 1] = 'x:' .. f
      out[#out + 1] = raw
    end
    out[#out + 1] = 's:' .. f
    out[#out + 1] = total and tonumber(total) + v or raw
    out[#out + 1] = 'c:' .. f
    out[#out + 1] = count and tonumber(count) + 1 or 1
  end
  hset(KEYS[k], out, #out)
  redis.call('EXPIREAT', KEYS[k], ARGV[k + 1])
end
return 1
"""
)

# KEYS[1] latest hash of a kind, KEYS[2] its index zset, KEYS[3] the kinds zset.
# ARGV[1] member JSON [app, key], ARGV[2] sample time, ARGV[3] payload, ARGV[4] TTL,
# ARGV[5] kind. An older sample than the stored one is ignored.
_WRITE_LATEST_GAUGE = """
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if score and tonumber(score) > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], 'GT', ARGV[2], ARGV[5])
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
return 1
"""

# KEYS[1] worker hash, KEYS[2] all workers, KEYS[3] workers of its app, KEYS[4] apps with
# workers. ARGV[1] sent_at, ARGV[2] processed, ARGV[3] failed, ARGV[4] TTL, ARGV[5] worker
# id, ARGV[6] app, ARGV[7..] field/value pairs. A beat older than the stored one is ignored;
# processed and failed never go backwards; first_seen_at is set once.
_HEARTBEAT = """
local old = redis.call('HMGET', KEYS[1], 'last_heartbeat_at', 'processed', 'failed')
if old[1] and tonumber(old[1]) > tonumber(ARGV[1]) then return 0 end
local processed, failed = ARGV[2], ARGV[3]
if old[2] and tonumber(old[2]) > tonumber(processed) then processed = old[2] end
if old[3] and tonumber(old[3]) > tonumber(failed) then failed = old[3] end
redis.call('HSETNX', KEYS[1], 'first_seen_at', ARGV[1])
local out = {'last_heartbeat_at', ARGV[1], 'processed', processed, 'failed', failed}
for i = 7, #ARGV do out[#out + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(out))
redis.call('ZADD', KEYS[2], 'GT', ARGV[1], ARGV[5])
redis.call('ZADD', KEYS[3], 'GT', ARGV[1], ARGV[5])
redis.call('ZADD', KEYS[4], 'GT', ARGV[1], ARGV[6])
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
return 1
"""

# KEYS[1] an index zset, KEYS[2] (optional) a hash keyed by the same members.
# ARGV[1] cutoff: members scored below it are removed from both. Returns how many.
_TRIM_INDEX = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
for i = 1, #gone, 1000 do
  local last = math.min(i + 999, #gone)
  redis.call('ZREM', KEYS[1], unpack(gone, i, last))
  if KEYS[2] then redis.call('HDEL', KEYS[2], unpack(gone, i, last)) end
end
return #gone
"""

# KEYS[1] worker hash; ARGV[1] cutoff. Deletes the hash unless a heartbeat at or after the
# cutoff arrived meanwhile.
_DELETE_WORKER = """
local last = redis.call('HGET', KEYS[1], 'last_heartbeat_at')
if last and tonumber(last) >= tonumber(ARGV[1]) then return 0 end
return redis.call('DEL', KEYS[1])
"""


# KEYS[1] a lease; ARGV[1] owner, ARGV[2] lease time in ms. Taken (or renewed) unless
# someone else holds it; returns 1 when ARGV[1] holds it now.
_ACQUIRE_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS[1] a lease; ARGV[1] owner. Deleted only if ARGV[1] holds it.
_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script and the SHA1 that EVALSHA knows it by."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


SCRIPTS: dict[str, Script] = {
    script.name: script
    for script in (
        Script("write_series", WRITE_SERIES),
        Script("append_series", APPEND_SERIES),
        Script("write_dropped", _WRITE_DROPPED),
        Script("write_gauge", _WRITE_GAUGE),
        Script("write_latest_gauge", _WRITE_LATEST_GAUGE),
        Script("heartbeat", _HEARTBEAT),
        Script("trim_index", _TRIM_INDEX),
        Script("delete_worker", _DELETE_WORKER),
        Script("acquire_lease", _ACQUIRE_LEASE),
        Script("release_lease", _RELEASE_LEASE),
    )
}
