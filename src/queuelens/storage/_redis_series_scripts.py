"""The Lua that writes job series: append_series and write_series (the fold), and the
helpers other write scripts share. :mod:`queuelens.storage._redis_scripts` registers them.

Why a flush appends and only now and then folds is told in :mod:`queuelens.storage.redis`;
the record format in :mod:`queuelens.storage._redis_log`; the bucket fields in
:mod:`queuelens.storage._redis_keys`.
"""

from __future__ import annotations

from queuelens.model import JobStatus
from queuelens.storage._redis_keys import COUNT_PREFIX

__all__ = ["ADVANCE", "APPEND_SERIES", "HELPERS", "WRITE_SERIES"]

# HMGET/HSET in chunks: Lua's unpack() fails beyond ~8000 values.
# hmget(key, names, first, last) reads the fields names[first..last] (first <= last);
# hset(key, pairs, n) writes the first n entries of pairs (n even).
HELPERS = """
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
ADVANCE = """
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

# the count fields in JobStatus order, as a record lists its counts
_STATUS_FIELDS = (
    "local STATUS_FIELDS = {"
    + ", ".join(f"'{COUNT_PREFIX}{status.value}'" for status in JobStatus)
    + "}\n"
)

# A series' log: records (a minute and its packed aggregate, see _redis_log) appended
# by flushes and not yet folded into the buckets of that minute, hour and day.
#
# append_series. KEYS[1] the series' sequence hash, KEYS[2] its log. ARGV[1] sequence hash
# TTL, ARGV[2] sketch accuracy, ARGV[3] writer id, ARGV[4] sequence, ARGV[5] writer's
# clock, ARGV[6] the log's EXPIREAT (when the newest of its day buckets expires), ARGV[7..]
# records. Appends them: no read, no merge. Returns 0 when the writer's sequence was
# already there (a duplicate), 1 when applied, 2 when applied but the log is past 64 kB
# (the writer then folds it on its next flush).
APPEND_SERIES = (
    ADVANCE
    + """
if not advance(KEYS[1], ARGV[3], ARGV[4], ARGV[5], ARGV[1]) then return 0 end
if #ARGV < 7 then return 1 end  -- nothing counted: only the sequence is recorded
local size, added = 0, 0
for i = 7, #ARGV do
  size = redis.call('APPEND', KEYS[2], ARGV[i])
  added = added + #ARGV[i]
end
if size == added then  -- a new log
  redis.call('EXPIREAT', KEYS[2], ARGV[6])
else  -- an older one keeps the later of the two expiries
  redis.call('EXPIREAT', KEYS[2], ARGV[6], 'GT')
end
if size > 65536 then return 2 end
return 1
"""
)

# write_series: the same, but the log and the new records are folded into the bucket hashes
# and the log deleted. KEYS[1] and KEYS[2] as for append_series, then two per bucket the
# writer declares: its hash, its exceptions hash. ARGV[1..6] as for append_series, ARGV[7]
# n, then n times: width, start, EXPIREAT of a declared bucket, then the records. The
# writer declares the minute, hour and day buckets of the minutes it writes and of the
# minute before (a log usually spans those). Records are folded in write order, so sums
# come out bit for bit as if each had been merged on arrival, up to the first whose buckets
# are not all declared; that one and the rest stay in the log, and the script returns
# {2, minute, ...} so that the writer declares their minutes next time (else 1, or 0 for a
# duplicate). A log holding a record of a format this script cannot read is not folded.
WRITE_SERIES = (
    HELPERS
    + ADVANCE
    + _STATUS_FIELDS
    + """
if not advance(KEYS[1], ARGV[3], ARGV[4], ARGV[5], ARGV[1]) then return 0 end
local INF = math.huge
local spack, sunpack, srep, floor = struct.pack, struct.unpack, string.rep, math.floor
-- A record's fixed part: version, accuracy, minute, a count per status, 18 stat lanes
-- (duration: zero count, sum, min, max; the same for wait, then CPU; memory peak: count,
-- sum, max; the same for memory increase), bins per sketch (duration, wait, CPU),
-- exception types; unpacked into v[1 .. 31], v[32] the position after it.
local FIXED = '<BdI4' .. srep('d', 24) .. 'I4I4I4I4'
local PREFIXES = {'d', 'w', 'u'}
local bin_formats = {}
local function bins_format(n)  -- n int32 indexes, then n double counts
  local f = bin_formats[n]
  if not f then f = '<' .. srep('i4', n) .. srep('d', n); bin_formats[n] = f end
  return f
end
-- The records of ``data`` in order, each {minute, fixed values, exceptions (type, count,
-- last seen, message each), first byte, last byte}; the number of them that can be folded
-- now: those before the first whose minute is not ``foldable`` (later ones wait, so each
-- bucket still takes its records in write order); and the counts and bins of each minute
-- summed over those: minutes[minute] = {counts, groups (field name -> lane -> count),
-- their names}, bin i being lane i - 16k of group k = floor(i / 16). nil when a record has
-- a format this script does not know.
local function parse(data, foldable)
  local records, minutes, folded = {}, {}, nil
  local p, size = 1, #data
  while p <= size do
    local first = p
    local v = {sunpack(FIXED, data, p)}
    if v[1] ~= 1 then return nil end
    p = v[32]
    if not folded and not foldable(v[3]) then folded = #records end
    local raised = {}
    if folded then  -- waits: only its bytes matter
      p = p + 12 * (v[28] + v[29] + v[30])
      for _ = 1, v[31] do p = select(5, sunpack('<Hc0ddI4c0', data, p)) end
    else
      local acc = minutes[v[3]]
      if not acc then
        acc = {{0, 0, 0, 0, 0, 0}, {}, {}, {{}, {}, {}}}; minutes[v[3]] = acc
      end
      local counts, groups, gnames = acc[1], acc[2], acc[3]
      for j = 1, 6 do counts[j] = counts[j] + v[j + 3] end
      for s = 1, 3 do
        local n, by_k = v[s + 27], acc[4][s]
        local b
        if n <= 1000 then  -- unpack() and struct results are limited to ~8000
          b = {sunpack(bins_format(n), data, p)}
        else
          b = {}
          for j = 0, n - 1 do
            b[j + 1], b[n + j + 1] = sunpack('<i4', data, p + 4 * j),
              sunpack('<d', data, p + 4 * n + 8 * j)
          end
        end
        for j = 1, n do  -- bin i is lane i - 16k of group k = floor(i / 16)
          local i = b[j]
          local k = floor(i / 16)
          local group = by_k[k]
          if not group then
            local name = PREFIXES[s] .. ':g' .. k
            group = {}; by_k[k] = group; groups[name] = group; gnames[#gnames + 1] = name
          end
          local lane = i - 16 * k
          group[lane] = (group[lane] or 0) + b[n + j]
        end
        p = p + 12 * n
      end
      for j = 1, v[31] do
        local name, n, seen, message
        name, n, seen, message, p = sunpack('<Hc0ddI4c0', data, p)
        raised[j] = {name, n, seen, message}
      end
    end
    records[#records + 1] = {v[3], v, raised, first, p - 1}
  end
  return records, folded or #records, minutes
end
-- A record's 18 stat lanes are v[10 .. 27]: the 'd' field's four (zero count, sum, min,
-- max of the duration sketch), 'wu' eight (the same for wait, then CPU), 'm' six (count,
-- sum, max of memory peak, then of memory increase). Counts merge by adding in any order
-- (they are exact), minima and maxima in any order, sums in write order, so that they
-- come out bit for bit as if each record had been merged on arrival.
local COUNT_LANES, SUM_LANES, MIN_LANES, MAX_LANES =
  {10, 14, 18, 22, 25}, {11, 15, 19, 23, 26}, {12, 16, 20}, {13, 17, 21, 24, 27}
local STAT_FIELDS = {{'d', 10, 13}, {'wu', 14, 21}, {'m', 22, 27}}
-- What to fold into one bucket: the minutes it takes (their counts and bins summed, the
-- bins grouped 16 to a field: bin i is lane i - 16k of group k = floor(i / 16)), and from
-- its records in write order: the stat lanes merged (each sum lane as the list of its
-- values) and the exceptions merged (the newest message wins; on a tie the later write
-- does, like ExceptionStat.merge).
local function gather(records, folded, minutes, taken)
  local counts, groups, gnames, raised, xnames, only = {0, 0, 0, 0, 0, 0}, {}, {}, {}, {}, nil
  for minute in pairs(taken) do
    only = only == nil and minutes[minute] or false
  end
  if only then  -- one minute: its groups as they are
    counts, groups, gnames = only[1], only[2], only[3]
  else
    for minute in pairs(taken) do
      local acc = minutes[minute]
      for j = 1, 6 do counts[j] = counts[j] + acc[1][j] end
      for _, name in ipairs(acc[3]) do
        local group = groups[name]
        if not group then
          group = {}; groups[name] = group; gnames[#gnames + 1] = name
        end
        for lane, n in pairs(acc[2][name]) do group[lane] = (group[lane] or 0) + n end
      end
    end
  end
  local lanes = {}
  for q = 1, 5 do lanes[COUNT_LANES[q]] = 0; lanes[SUM_LANES[q]] = {} end
  for q = 1, 3 do lanes[MIN_LANES[q]] = INF end
  for q = 1, 5 do lanes[MAX_LANES[q]] = -INF end
  for r = 1, folded do
    local record = records[r]
    if taken[record[1]] then
      local v = record[2]
      for q = 1, 5 do
        local i, j = COUNT_LANES[q], SUM_LANES[q]
        local sums = lanes[j]
        lanes[i] = lanes[i] + v[i]
        sums[#sums + 1] = v[j]
      end
      for q = 1, 3 do
        local i = MIN_LANES[q]
        if v[i] < lanes[i] then lanes[i] = v[i] end
      end
      for q = 1, 5 do
        local i = MAX_LANES[q]
        if v[i] > lanes[i] then lanes[i] = v[i] end
      end
      for _, x in ipairs(record[3]) do
        local name, n, seen, message = unpack(x, 1, 4)
        local mine = raised[name]
        if not mine then
          raised[name] = {n, seen, message}; xnames[#xnames + 1] = name
        else
          mine[1] = mine[1] + n
          if seen >= mine[2] then mine[2], mine[3] = seen, message end
        end
      end
    end
  end
  -- a field is written when some record's blocks hold something (an empty sketch has min
  -- inf, an empty memory stat count 0)
  local held = {lanes[12] ~= INF, lanes[16] ~= INF or lanes[20] ~= INF,
                lanes[22] > 0 or lanes[25] > 0}
  local stats = {}
  for j = 1, 3 do
    if held[j] then stats[#stats + 1] = STAT_FIELDS[j] end
  end
  return {counts, groups, gnames, stats, lanes, raised, xnames}
end
local KINDS = {}  -- lane -> how it merges
for q = 1, 5 do KINDS[COUNT_LANES[q]], KINDS[SUM_LANES[q]] = 'n', 's' end
for q = 1, 3 do KINDS[MIN_LANES[q]] = 'l' end
for q = 1, 5 do KINDS[MAX_LANES[q]] = 'h' end
-- stat field ``stat`` ({name, first lane, last lane}): ``old`` (packed, or nil) merged with
-- the gathered ``lanes``
local function fold_stat(old, stat, lanes)
  local first, last = stat[2], stat[3]
  local fmt = '<' .. srep('d', last - first + 1)
  local acc = old and {sunpack(fmt, old)} or {}
  for i = first, last do
    local kind, x, cur = KINDS[i], lanes[i], acc[i - first + 1]
    if kind == 's' then
      cur = cur or 0
      for j = 1, #x do cur = cur + x[j] end
    elseif kind == 'n' then
      cur = (cur or 0) + x
    elseif kind == 'l' then
      if not cur or x < cur then cur = x end
    elseif not cur or x > cur then
      cur = x
    end
    acc[i - first + 1] = cur
  end
  return spack(fmt, unpack(acc, 1, last - first + 1))
end
-- a bin group: 16 uint32 (64 bytes) or 16 doubles (128). ``lanes`` maps lane -> count to
-- add. It turns to doubles the first time a lane would pass 2**32 - 1, so counts stay
-- exact. A single lane is spliced in without unpacking the rest.
local SMALL, LARGE, ZERO = '<' .. srep('I4', 16), '<' .. srep('d', 16), srep('\\0', 64)
local ssub = string.sub
local function add_group(cur, lanes)
  local large = cur and #cur ~= 64
  local lane, count = next(lanes)
  if not large and next(lanes, lane) == nil then
    cur = cur or ZERO
    local at = 4 * lane
    local v = sunpack('<I4', cur, at + 1) + count
    if v <= 4294967295 then return ssub(cur, 1, at) .. spack('<I4', v) .. ssub(cur, at + 5) end
  end
  local v = {sunpack(large and LARGE or SMALL, cur or ZERO)}
  for lane, count in pairs(lanes) do
    local x = v[lane + 1] + count
    v[lane + 1] = x
    if x > 4294967295 then large = true end
  end
  return spack(large and LARGE or SMALL, unpack(v, 1, 16))
end
-- stat fields: name, first lane in v, lanes, sketch blocks? and whether a record's blocks
-- hold anything (an empty sketch has min inf, an empty memory stat a zero count)
-- Fold a gathered bucket into bucket hash ``key`` and exceptions hash ``xkey``.
local function fold(gathered, key, xkey, expire_at)
  local counts, groups, gnames, stats, lanes, raised, xnames = unpack(gathered, 1, 7)
  local names, counted = {'ra'}, {}
  for j = 1, 6 do
    if counts[j] > 0 then names[#names + 1] = STATUS_FIELDS[j]; counted[#counted + 1] = j end
  end
  local first_group = #names + 1
  for j = 1, #gnames do names[#names + 1] = gnames[j] end
  for j = 1, #stats do names[#names + 1] = stats[j][1] end
  -- 'ra' is read first: when it exists, so does the key and its expiry
  local old = hmget(key, names, 1, #names)
  local out, m = {}, 0
  if not old[1] then out[1], out[2], m = 'ra', ARGV[2], 2 end
  for j = 1, #counted do
    local value, cur = counts[counted[j]], old[j + 1]
    if cur then value = cur + value end
    out[m + 1], out[m + 2], m = names[j + 1], value, m + 2
  end
  for j = 1, #gnames do
    local name = gnames[j]
    out[m + 1], out[m + 2], m = name, add_group(old[first_group + j - 1], groups[name]), m + 2
  end
  local first_stat = first_group + #gnames
  for j = 1, #stats do
    local stat = stats[j]
    out[m + 1], out[m + 2], m = stat[1], fold_stat(old[first_stat + j - 1], stat, lanes), m + 2
  end
  hset(key, out, m)
  if not old[1] then redis.call('EXPIREAT', key, expire_at) end
  if #xnames > 0 then
    local fields = {}
    for j = 1, #xnames do
      fields[2 * j - 1], fields[2 * j] = 'c:' .. xnames[j], 't:' .. xnames[j]
    end
    local stored = hmget(xkey, fields, 1, #fields)
    out, m = {}, 0
    for j = 1, #xnames do
      local x = raised[xnames[j]]
      local count, seen = x[1], x[2]
      local old_count, old_seen = stored[2 * j - 1], stored[2 * j]
      if old_count then count = old_count + count end
      out[m + 1], out[m + 2], m = fields[2 * j - 1], count, m + 2
      if not old_seen or seen >= tonumber(old_seen) then
        out[m + 1], out[m + 2], out[m + 3], out[m + 4] = fields[2 * j], seen,
          'm:' .. xnames[j], x[3]
        m = m + 4
      end
    end
    hset(xkey, out, m)
    redis.call('EXPIREAT', xkey, expire_at)
  end
end
local log, n = KEYS[2], tonumber(ARGV[7])
local declared = {}  -- 'width:start' -> {hash key, exceptions key, EXPIREAT}
for j = 0, n - 1 do
  declared[ARGV[8 + 3 * j] .. ':' .. ARGV[9 + 3 * j]] =
    {KEYS[3 + 2 * j], KEYS[4 + 2 * j], ARGV[10 + 3 * j]}
end
local parts = {redis.call('GET', log) or ''}
for i = 8 + 3 * n, #ARGV do parts[#parts + 1] = ARGV[i] end
local data = table.concat(parts)
local function foldable(minute)  -- its minute, hour and day buckets are all declared
  return declared['60:' .. minute] and declared['3600:' .. floor(minute / 3600) * 3600]
    and declared['86400:' .. floor(minute / 86400) * 86400]
end
local records, folded, minutes = parse(data, foldable)
if not records then  -- a record of a newer format: append, fold nothing
  for i = 2, #parts do redis.call('APPEND', log, parts[i]) end
  if #parts > 1 then redis.call('EXPIREAT', log, ARGV[6], 'GT') end
  return 1
end
-- the buckets to fold into, each with the minutes it takes
local targets, order = {}, {}
for minute in pairs(minutes) do
  for _, bucket in ipairs({'60:' .. minute, '3600:' .. floor(minute / 3600) * 3600,
                           '86400:' .. floor(minute / 86400) * 86400}) do
    local taken = targets[bucket]
    if not taken then taken = {}; targets[bucket] = taken; order[#order + 1] = bucket end
    taken[minute] = true
  end
end
local gathered = {}  -- buckets taking the same minutes (an hour and its day) share one
for _, bucket in ipairs(order) do
  local names = {}
  for minute in pairs(targets[bucket]) do names[#names + 1] = minute end
  table.sort(names)
  local same = table.concat(names, ',')
  if not gathered[same] then
    gathered[same] = gather(records, folded, minutes, targets[bucket])
  end
  local where = declared[bucket]
  fold(gathered[same], where[1], where[2], where[3])
end
if folded == #records then
  redis.call('DEL', log)
  return 1
end
-- the rest goes back, and the writer is asked to declare its minutes next time
local expires = redis.call('EXPIRETIME', log)
redis.call('SET', log, ssub(data, records[folded + 1][4]))
redis.call('EXPIREAT', log, math.max(expires, tonumber(ARGV[6])))
local result, asked = {2}, {}
for r = folded + 1, #records do
  local minute = records[r][1]
  if not asked[minute] then asked[minute] = true; result[#result + 1] = minute end
end
return result
"""
)
