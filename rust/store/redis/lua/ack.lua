-- ack: settle finished jobs of one lease: completed, retried or failed for good.
-- KEYS[1] lease hash   KEYS[2] active zset   KEYS[3] stats hash   KEYS[4] waiters hash
-- KEYS[5] wait   KEYS[6] delayed zset   KEYS[7] jobs hash   KEYS[8] failed zset
-- KEYS[9] errors hash   KEYS[10] wake   KEYS[11] the lease's started hash (start.lua)
-- ARGV[1] queue key base   ARGV[2] lease token   ARGV[3] result ttl ms
-- ARGV[4] done-bitmap ttl seconds   ARGV[5] results channel   ARGV[6] scheduler channel
-- ARGV[7] n: plain completions (generated id, None result, no dedup key), then their n ids,
--   then r: runs of their sequence numbers, then r triples (producer, first seq, count)
-- then per other job, 5 values: kind, id, a, b, c
--   'c' / 'C' completed (generated / caller-chosen id): a = result JSON ('' for None),
--     b = '1' when an earlier attempt failed (its kept error goes), c = the deduplication key
--     the job holds until it settles, released now ('' for none)
--   'r' retry: a = delay ms from now (0: at once), b = the record with its attempt counted,
--     c = the attempt's error JSON (kept while the job waits to run again: status, and the
--     reaper's LeaseExpired, show it)
--   'f' failed for good: a = error JSON, b = the record with its attempt counted, c = the
--     deduplication key to release, as for 'c'
--   'x' / 'X' cancelled (generated / caller-chosen id): its handler gave up after a cancel
--     request (cancel.lua); b = '1' when an earlier attempt failed (a deduplication key is
--     read from the record and released)
-- A job of a group has its group after the kind's letter (`c<group>`, `r<group>`, ...): its
-- group's count of leased jobs goes down (common.lua group_done), a retry goes back to its
-- group's list; an entry without it is sent byte for byte as before.
-- A job no longer in the lease (the lease expired and was reaped: a stale token) is refused
-- and left alone. The engine settles a job once, but sends an acknowledgement again when the
-- answer to the first send was lost (the connection broke, Redis restarted): then the jobs are
-- missing because that first send settled them, and they are counted as what they were, with
-- nothing done twice. tick.lua marks the tokens it reaps (`…:reaped:<token>`) to tell the two.
-- Plain completions are the hot path: no per-job Lua, one HDEL, and their completion bits set
-- 64 at a time. Returns {completed, retried, failed, refused, cancelled}.
local base = ARGV[1]
local now = now_ms()
local waited = rcall('HLEN', KEYS[4]) > 0
local refused, completed, retried, failed, cancelled = 0, 0, 0, 0, 0
local pushed = false
local earliest = nil
-- Jobs settled by an earlier send of this acknowledgement: reported, not counted again.
local again = {c = 0, r = 0, f = 0, x = 0}
local reaped = nil
local function was_reaped()
  if reaped == nil then reaped = rcall('EXISTS', base .. ':reaped:' .. ARGV[2]) == 1 end
  return reaped
end

-- Publishes the outcome if somebody registered to wait for it.
local function notify(id, kind, data)
  if waited and rcall('HDEL', KEYS[4], id) == 1 then
    rcall('PUBLISH', ARGV[5], kind .. id .. '\n' .. data)
    return true
  end
  return false
end

-- Plain completions. A lease is reaped whole and the engine settles a job once, so when the
-- lease exists every one of them is in it; the HDEL count confirms it.
local n_plain = tonumber(ARGV[7])
local p = 8 + n_plain
local n_runs = tonumber(ARGV[p])
local runs_at = p + 1
local general_at = runs_at + 3 * n_runs
-- The events stream (common.lua emit), while it is on: per kind, the ids, names and more.
local told = events_on(base) and {} or nil
local function tell(kind, id, rec, field, value, attempt)
  local t = told[kind]
  if not t then t = {ids = {}, names = {}, x = {}, d = {}, a = {}}; told[kind] = t end
  local k = #t.ids + 1
  t.ids[k], t.names[k] = id, rec and record_name(rec) or ''
  if field then t[field][k] = value end
  if attempt then t.a[k] = attempt end
end
if n_plain > 0 then
  local deleted = 0
  if rcall('EXISTS', KEYS[1]) == 1 then
    for s = 8, 7 + n_plain, 1000 do
      deleted = deleted + rcall('HDEL', KEYS[1], unpack(ARGV, s, math.min(s + 999, 7 + n_plain)))
    end
  end
  local missing = n_plain - deleted
  completed = completed + deleted
  if missing > 0 and not was_reaped() then
    again.c = again.c + missing
  else
    refused = refused + missing
  end
  if deleted > 0 and told then
    -- All of them (a lease is whole or reaped whole): told as their runs of ids, as the
    -- engine sent them, with nothing per job (no names: their records are not read).
    local runs = {}
    for r = runs_at, general_at - 1, 3 do
      runs[#runs + 1] = '["' .. ARGV[r] .. '",' .. ARGV[r + 1] .. ',' .. ARGV[r + 2] .. ',null]'
    end
    rcall('XADD', base .. ':events', 'MAXLEN', '~', events_on(base), '*', 'e', 'completed', 'r', '[' .. table.concat(runs, ',') .. ']')
  end
  if deleted > 0 then
    for r = runs_at, general_at - 1, 3 do
      local key = base .. ':done:' .. ARGV[r]
      local first = tonumber(ARGV[r + 1])
      local last = first + tonumber(ARGV[r + 2]) - 1
      local args = {}
      local seq = first
      while seq <= last do
        if seq % 64 == 0 and seq + 63 <= last then
          args[#args + 1] = 'SET'; args[#args + 1] = 'i64'; args[#args + 1] = seq; args[#args + 1] = -1
          seq = seq + 64
        else
          args[#args + 1] = 'SET'; args[#args + 1] = 'u1'; args[#args + 1] = seq; args[#args + 1] = 1
          seq = seq + 1
        end
      end
      for s = 1, #args, 4000 do rcall('BITFIELD', key, unpack(args, s, math.min(s + 3999, #args))) end
      rcall('EXPIRE', key, ARGV[4])
    end
    if waited then
      for i = 8, 7 + n_plain do
        if notify(ARGV[i], 'c', 'null') then rcall('SET', base .. ':result:' .. ARGV[i], 'null', 'PX', ARGV[3]) end
      end
    end
  end
end

-- The other jobs: which are still in the lease, in one call; then remove those in one call.
local ids = {}
for i = general_at, #ARGV, 5 do ids[#ids + 1] = ARGV[i + 1] end
local present = {}
for s = 1, #ids, 1000 do
  local got = rcall('HMGET', KEYS[1], unpack(ids, s, math.min(s + 999, #ids)))
  for k = 1, #got do present[s + k - 1] = got[k] end
end
local live = {}
for k = 1, #ids do if present[k] then live[#live + 1] = ids[k] end end
for s = 1, #live, 1000 do rcall('HDEL', KEYS[1], unpack(live, s, math.min(s + 999, #live))) end

local bits = {}  -- completion bitmap key -> BITFIELD arguments
local k = 0
local freed = 0 -- jobs of groups that left the lease
for i = general_at, #ARGV, 5 do
  k = k + 1
  local kind, id, a, b = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local group = nil
  if #kind > 1 then
    group = ssub(kind, 2)
    kind = ssub(kind, 1, 1)
  end
  if present[k] and (group or kind == 'x' or kind == 'X') then
    -- A cancelled job's group is read from its record (one never handed to a handler has
    -- none passed); a job that ended without running has a record too.
    group = group or record_group(present[k])
    if group then
      group_done(base, group, 1)
      freed = freed + 1
    end
  end
  if not present[k] then
    if was_reaped() then
      refused = refused + 1
    elseif kind == 'c' or kind == 'C' then
      again.c = again.c + 1
    elseif kind == 'X' then
      again.x = again.x + 1
    else
      again[kind] = again[kind] + 1
    end
  else
    if kind == 'c' or kind == 'C' then
      if b == '1' then rcall('HDEL', KEYS[9], id) end
      completed = completed + 1
      if kind == 'c' then
        -- generated id <producer:10>-<seq>: one bit marks it completed
        local key = base .. ':done:' .. ssub(id, 1, 10)
        local args = bits[key]
        if not args then args = {}; bits[key] = args end
        args[#args + 1] = 'SET'
        args[#args + 1] = 'u1'
        args[#args + 1] = ssub(id, 12)
        args[#args + 1] = 1
      else
        -- Keeps the dedup mark's ttl; one that expired meanwhile comes back with the marks' ttl
        -- (never without one).
        local mark = base .. ':id:' .. id
        if not rcall('SET', mark, 'c', 'XX', 'KEEPTTL') then rcall('SET', mark, 'c', 'EX', ARGV[4]) end
      end
      if ARGV[i + 4] ~= '' then release_dedup(base, ARGV[i + 4], id) end
      -- A None result is stored only when somebody waits for it.
      local result = a
      if notify(id, 'c', a == '' and 'null' or a) and result == '' then result = 'null' end
      if result ~= '' then rcall('SET', base .. ':result:' .. id, result, 'PX', ARGV[3]) end
      if told then tell('completed', id, present[k], 'x', a) end
    elseif kind == 'r' then
      retried = retried + 1
      if told then
        tell('retrying', id, b, 'x', ARGV[i + 4], record_attempt(b) - 1)
        told.retrying.d[#told.retrying.ids] = a
      end
      if ARGV[i + 4] ~= '' then rcall('HSET', KEYS[9], id, ARGV[i + 4]) end
      local due = now + tonumber(a)
      if due > now then
        rcall('ZADD', KEYS[6], due, id)
        rcall('HSET', KEYS[7], id, b)
        if earliest == nil or due < earliest then earliest = due end
      elseif group or record_group(b) then
        push_group(base, group or record_group(b), {b}, false)
        pushed = true
      else
        rcall('RPUSH', ready_key(base, b), b)
        pushed = true
      end
    elseif kind == 'x' or kind == 'X' then
      cancelled = cancelled + 1
      if b == '1' then rcall('HDEL', KEYS[9], id) end
      mark_cancelled(base, id, kind == 'X', ARGV[4])
      -- The key comes from the record: a job cancelled before it started has none passed.
      release_dedup_of(base, present[k], id)
      rcall('SREM', base .. ':cancel:' .. ARGV[2], id)
      notify(id, 'x', '')
      if told then tell('cancelled', id, present[k]) end
    else
      failed = failed + 1
      if ARGV[i + 4] ~= '' then release_dedup(base, ARGV[i + 4], id) end
      rcall('HSET', KEYS[7], id, b)
      rcall('HSET', KEYS[9], id, a)
      rcall('ZADD', KEYS[8], now, id)
      notify(id, 'f', a)
      if told then tell('failed', id, b, 'x', a, record_attempt(b) - 1) end
    end
  end
end
for key, args in pairs(bits) do
  for s = 1, #args, 4000 do rcall('BITFIELD', key, unpack(args, s, math.min(s + 3999, #args))) end
  rcall('EXPIRE', key, ARGV[4])
end
if rcall('EXISTS', KEYS[1]) == 0 then
  rcall('ZREM', KEYS[2], ARGV[2])
  rcall('DEL', KEYS[11])
end
if told then
  for _, kind in ipairs({'completed', 'retrying', 'failed', 'cancelled'}) do
    local t = told[kind]
    if t then
      local more = {}
      if #t.a > 0 then more[#more + 1] = 'a'; more[#more + 1] = json_list(t.a) end
      if #t.d > 0 then more[#more + 1] = 'd'; more[#more + 1] = json_list(t.d) end
      -- Completions: the results of those that returned one (the plain ones have none).
      if next(t.x) then
        local x = {}
        for k = 1, #t.ids do x[k] = t.x[k] or '' end
        more[#more + 1] = 'x'; more[#more + 1] = json_list(x)
      end
      emit(base, kind, t.ids, t.names, more)
    end
  end
end
if completed > 0 then bump(KEYS[3], 'completed', completed) end
if retried > 0 then bump(KEYS[3], 'retried', retried) end
if failed > 0 then bump(KEYS[3], 'failed', failed) end
if cancelled > 0 then bump(KEYS[3], 'cancelled', cancelled) end
-- Under a concurrency limit (limit.lua) a settled job frees a slot: wake a worker for it.
-- So does a settled job of a group under per-group limits (`<base>:glimit`).
if pushed or (completed + retried + failed + cancelled > 0 and rcall('EXISTS', base .. ':limit') == 1)
  or (freed > 0 and rcall('EXISTS', base .. ':glimit') == 1) then
  wake(KEYS[10])
end
if earliest ~= nil then rcall('PUBLISH', ARGV[6], tostring(earliest)) end
return {completed + again.c, retried + again.r, failed + again.f, refused, cancelled + again.x}
