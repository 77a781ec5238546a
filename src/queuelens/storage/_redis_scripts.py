"""The Lua scripts of the Redis driver, one per atomic step, with their SHA1 digests.

    script = SCRIPTS["write_series"]
    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)

Every script touches the keys of one hash tag only (it is always given them all in KEYS),
so each runs on one Redis Cluster node and is atomic there. Numbers travel as decimal text
or, for the packed bucket stats and bin groups, as little-endian doubles and uint32
(``struct``); Redis writes Lua
numbers back with ``%.17g``, which reads back as the same double. No script decodes JSON:
write_series reads flat ARGV, so a flush costs no ``cjson`` work on the server.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

__all__ = ["SCRIPTS", "Script"]

# HMGET/HSET in chunks: Lua's unpack() fails beyond ~8000 values.
# hmget(key, names, first, last) reads the fields names[first..last] (first <= last);
# hset(key, pairs, n) writes the first n entries of pairs (n even).
_HELPERS = """
local function hmget(key, names, first, last)
  local out = redis.call('HMGET', key, unpack(names, first, math.min(first + 999, last)))
  for i = first + 1000, last, 1000 do
    local part = redis.call('HMGET', key, unpack(names, i, math.min(i + 999, last)))
    for j = 1, #part do out[#out + 1] = part[j] end
  end
  return out
end
local function hset(key, pairs, n)
  for i = 1, n, 1000 do
    redis.call('HSET', key, unpack(pairs, i, math.min(i + 999, n)))
  end
end
"""

# advance(key, writer, seq, now, ttl): the idempotency check. ``key`` is a hash of writer id
# -> '<last sequence applied>:<writer's clock then>'. Returns false (changing nothing) when
# ``seq`` is not past the writer's last sequence; else records it, refreshes the hash's TTL
# and returns true. One field per writer, whatever the number of flushes; when a new writer
# joins a hash of 64 or more, writers silent for ``ttl`` are forgotten first, so the hash
# holds about the writers of the last ``ttl`` (a new writer is rare: one per process).
_ADVANCE = """
local function advance(key, writer, seq, now, ttl)
  local last = redis.call('HGET', key, writer)
  if last then
    if tonumber(string.match(last, '^[^:]*')) >= tonumber(seq) then return false end
  elseif redis.call('HLEN', key) >= 64 then
    local all, cutoff, gone = redis.call('HGETALL', key), tonumber(now) - tonumber(ttl), {}
    for i = 1, #all, 2 do
      local at = tonumber(string.match(all[i + 1], ':(.*)$'))
      if not at or at < cutoff then gone[#gone + 1] = all[i] end
    end
    for i = 1, #gone, 1000 do
      redis.call('HDEL', key, unpack(gone, i, math.min(i + 999, #gone)))
    end
  end
  redis.call('HSET', key, writer, seq .. ':' .. now)
  redis.call('EXPIRE', key, ttl)
  return true
end
"""

# KEYS[1] the series' sequence hash, then per bucket its hash and, if its update has
# exceptions, its exceptions hash. ARGV[1] sequence hash TTL, ARGV[2] sketch accuracy,
# ARGV[3] writer id, ARGV[4] sequence, ARGV[5] writer's clock, ARGV[6] u, then u updates,
# then one EXPIREAT time per bucket. With u = 1 every bucket gets the one update (a batch
# holding one minute of the series feeds its minute, hour and day buckets); else bucket i
# gets update i. An update:
#   a, g, s, e     how many counters, bin groups, stats and exceptions
#   'ra', then the a + g + s field names (counters, groups, stats), then their a + g + s
#   values, then e times: exception type, count, last seen, last message
# A counter (decimal text) is added: Lua adds decimal text as doubles and Redis writes the
# sum back with %.17g, so integers stay exact. A bin group field holds the counts of 16
# histogram bins: 16 little-endian uint32 (64 bytes) or, once a count passes 2**32 - 1, 16
# doubles (128 bytes); its update is the touched lanes only, 9 bytes each ('<Bd': lane,
# count), added in place, so counts stay exact (below 2**53). A stat is little-endian
# doubles in blocks merged lane by lane; a field holds one kind of block, so its length
# tells them apart:
#   32 or 64 bytes: 1 or 2 sketch blocks (zero count +, sum +, min, max)
#   24 or 48 bytes: 1 or 2 memory blocks (count +, sum +, max)
# Returns 1 when applied, 0 when the writer's sequence was already there (a duplicate).
_WRITE_SERIES = (
    _HELPERS
    + _ADVANCE
    + """
if not advance(KEYS[1], ARGV[3], ARGV[4], ARGV[5], ARGV[1]) then return 0 end
local spack, sunpack = struct.pack, struct.unpack
-- merged lane by lane, written out per field length: a loop over a table costs twice as much
local function merge(old, new)
  local size = #new
  if size == 32 then  -- one sketch block
    local z1, s1, lo1, hi1 = sunpack('<dddd', old)
    local z2, s2, lo2, hi2 = sunpack('<dddd', new)
    if lo1 < lo2 then lo2 = lo1 end
    if hi1 > hi2 then hi2 = hi1 end
    return spack('<dddd', z1 + z2, s1 + s2, lo2, hi2)
  elseif size == 64 then  -- two sketch blocks
    local z1, s1, lo1, hi1, y1, t1, low1, high1 = sunpack('<dddddddd', old)
    local z2, s2, lo2, hi2, y2, t2, low2, high2 = sunpack('<dddddddd', new)
    if lo1 < lo2 then lo2 = lo1 end
    if hi1 > hi2 then hi2 = hi1 end
    if low1 < low2 then low2 = low1 end
    if high1 > high2 then high2 = high1 end
    return spack('<dddddddd', z1 + z2, s1 + s2, lo2, hi2, y1 + y2, t1 + t2, low2, high2)
  elseif size == 48 then  -- two memory blocks
    local c1, s1, x1, d1, t1, y1 = sunpack('<dddddd', old)
    local c2, s2, x2, d2, t2, y2 = sunpack('<dddddd', new)
    if x1 > x2 then x2 = x1 end
    if y1 > y2 then y2 = y1 end
    return spack('<dddddd', c1 + c2, s1 + s2, x2, d1 + d2, t1 + t2, y2)
  end
  local c1, s1, x1 = sunpack('<ddd', old)  -- one memory block
  local c2, s2, x2 = sunpack('<ddd', new)
  if x1 > x2 then x2 = x1 end
  return spack('<ddd', c1 + c2, s1 + s2, x2)
end
-- a bin group: 16 uint32 (64 bytes) or 16 doubles (128); an update lists its touched
-- lanes, 9 bytes each (lane byte, count double). Only those lanes are rewritten; the group
-- turns to doubles the first time a lane would pass 2**32 - 1, so counts stay exact.
local GROUP_ZERO, GROUP_LARGE = string.rep('\0', 64), '<' .. string.rep('d', 16)
local ssub = string.sub
local function add_group(cur, new)
  local size, fmt = 4, '<I4'
  if not cur then cur = GROUP_ZERO elseif #cur ~= 64 then size, fmt = 8, '<d' end
  for p = 1, #new, 9 do
    local lane, n = sunpack('<Bd', new, p)
    local at = size * lane
    local v = sunpack(fmt, cur, at + 1) + n
    if size == 4 and v > 4294967295 then
      cur = spack(GROUP_LARGE, sunpack('<' .. string.rep('I4', 16), cur))
      size, fmt, at = 8, '<d', 8 * lane
    end
    cur = ssub(cur, 1, at) .. spack(fmt, v) .. ssub(cur, at + size + 1)
  end
  return cur
end
local updates, o = {}, 7
for i = 1, tonumber(ARGV[6]) do
  local a, g, s, e = tonumber(ARGV[o]), tonumber(ARGV[o + 1]), tonumber(ARGV[o + 2]),
    tonumber(ARGV[o + 3])
  updates[i] = {o, a, g, s, e}
  o = o + 5 + 2 * (a + g + s) + 4 * e
end
local k = 2  -- the next key
for i = 1, #ARGV - o + 1 do
  local update = updates[i] or updates[1]
  local at, a, g, s, e = update[1], update[2], update[3], update[4], update[5]
  local key, xkey, expire_at, n = KEYS[k], KEYS[k + 1], ARGV[o + i - 1], a + g + s
  k = e > 0 and k + 2 or k + 1
  local names, values = at + 5, at + 5 + n
  if n > 0 then
    -- 'ra' is read first: when it exists, so does the key and its expiry
    local old = hmget(key, ARGV, at + 4, at + 4 + n)
    local out, m = {}, 0
    if not old[1] then out[1], out[2], m = 'ra', ARGV[2], 2 end
    for j = 0, a - 1 do
      local value, cur = ARGV[values + j], old[j + 2]
      if cur then value = cur + value end
      out[m + 1], out[m + 2], m = ARGV[names + j], value, m + 2
    end
    for j = a, a + g - 1 do
      out[m + 1], out[m + 2], m = ARGV[names + j], add_group(old[j + 2], ARGV[values + j]),
        m + 2
    end
    for j = a + g, n - 1 do
      local value, cur = ARGV[values + j], old[j + 2]
      if cur then value = merge(cur, value) end
      out[m + 1], out[m + 2], m = ARGV[names + j], value, m + 2
    end
    hset(key, out, m)
    if not old[1] then redis.call('EXPIREAT', key, expire_at) end
  end
  if e > 0 then
    local first, xnames = values + n, {}
    for j = 0, e - 1 do
      local name = ARGV[first + 4 * j]
      xnames[2 * j + 1], xnames[2 * j + 2] = 'c:' .. name, 't:' .. name
    end
    local old = hmget(xkey, xnames, 1, 2 * e)
    local out, m = {}, 0
    for j = 0, e - 1 do
      local x = first + 4 * j
      local count, seen, old_count, old_seen = ARGV[x + 1], ARGV[x + 2], old[2 * j + 1],
        old[2 * j + 2]
      if old_count then count = old_count + count end
      out[m + 1], out[m + 2], m = xnames[2 * j + 1], count, m + 2
      -- the newest message wins; on a tie the later write does, like ExceptionStat.merge
      if not old_seen or tonumber(seen) >= tonumber(old_seen) then
        out[m + 1], out[m + 2], out[m + 3], out[m + 4] = xnames[2 * j + 2], seen,
          'm:' .. ARGV[x], ARGV[x + 3]
        m = m + 4
      end
    end
    hset(xkey, out, m)
    redis.call('EXPIREAT', xkey, expire_at)
  end
end
return 1
"""
)

# KEYS[1] the meta sequence hash, KEYS[2] dropped zset. ARGV[1] sequence hash TTL,
# ARGV[2] writer id, ARGV[3] sequence, ARGV[4] writer's clock, ARGV[5] created_at,
# ARGV[6] zset TTL, ARGV[7..] members (JSON [batch id, app, count]).
_WRITE_DROPPED = (
    _ADVANCE
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
    _HELPERS
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
        Script("write_series", _WRITE_SERIES),
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
