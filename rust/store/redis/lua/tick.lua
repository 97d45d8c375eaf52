-- tick: the scheduler's step for one queue: promote delayed jobs that are due, in due order,
-- and reap expired leases. Idempotent, so every worker's scheduler may run it at any time.
-- Jobs of a group are promoted to, and reaped back to the head of, their group's list.
-- KEYS[1] delayed zset   KEYS[2] jobs hash   KEYS[3] active zset   KEYS[4] wake
-- KEYS[5] failed zset   KEYS[6] errors hash   KEYS[7] stats hash   KEYS[8] waiters hash
-- ARGV[1] queue key base   ARGV[2] max jobs promoted / leases reaped per call
-- ARGV[3] results channel
-- Returns {promoted, reaped jobs, next due time µs or -1, next lease deadline ms or -1, now ms, now µs}.
local base = ARGV[1]
local clock = rcall('TIME')
local now_us = clock[1] * 1000000 + clock[2]
local now = math.floor(now_us / 1000)
local limit = tonumber(ARGV[2])

local due = rcall('ZRANGEBYSCORE', KEYS[1], '-inf', now_us / 1000, 'LIMIT', 0, limit)
local recs = {}
for _, id in ipairs(due) do
  local rec = rcall('HGET', KEYS[2], id)
  if rec and record_ok(rec) then
    recs[#recs + 1] = rec
  elseif rec then
    fail_undecodable(base, rec, now)
  end
end
push_ready(base, recs, false)
emit_records(base, 'waiting', recs)
if #due > 0 then
  rcall('ZREM', KEYS[1], unpack(due))
  rcall('HDEL', KEYS[2], unpack(due))
end

-- A lease whose deadline passed belongs to a worker that died or hung. Only a run whose start
-- was recorded counts an attempt: a worker records the start of an orphaned job (one whose
-- earlier worker died) before running it (start.lua), and of nothing else, because writing
-- each start of a drain would cost it a Redis write per job. So every other job of the lease
-- goes back to the head of the queue with its attempts unchanged, as an orphan: its next run
-- goes alone, start recorded. Prefetched jobs that never started lose nothing; a job that
-- kills its worker gets one run that is not counted, then each run counts, and it fails
-- (LeaseExpired) once its attempts are used up: after attempts + 1 runs at most.
local reaped = 0
local freed = 0 -- reaped jobs of groups
local lost = {ids = {}, names = {}, a = {}, x = {}} -- failed for good, for the events stream
local expired = rcall('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, limit)
-- Lease tokens are `<worker>.<n>`: the worker that let one expire is gone, so its idle
-- slots go too, before the reaped jobs are handed to anyone, and its inbox (what it holds
-- is hand-offs under leases of its own, reaped here or later, or a stop marker).
if #expired > 0 then
  local dead = {}
  for _, token in ipairs(expired) do
    local w = string.match(token, '^(.-)%.')
    if w and not dead[w] then
      dead[w] = true
      rcall('DEL', base .. ':inbox:' .. w)
    end
  end
  for _, slot in ipairs(rcall('ZRANGE', base .. ':idle', 0, -1)) do
    if dead[string.match(slot, '^(.-)|') or ''] then rcall('ZREM', base .. ':idle', slot) end
  end
end
for _, token in ipairs(expired) do
  local lease, started = base .. ':lease:' .. token, base .. ':started:' .. token
  local marks = {}
  if rcall('EXISTS', started) == 1 then
    local kv = rcall('HGETALL', started)
    for i = 1, #kv, 2 do marks[kv[i]] = kv[i + 1] end
  end
  local back = {}
  local asked = {}
  for _, id in ipairs(rcall('SMEMBERS', base .. ':cancel:' .. token)) do asked[id] = true end
  for _, r in ipairs(rcall('HVALS', lease)) do
    -- A job of a group leaves its lease whatever comes of it: its group's count goes down.
    local g = record_group(r)
    if g then
      group_done(base, g, 1)
      freed = freed + 1
    end
    if not record_ok(r) then
      fail_undecodable(base, r, now)
    elseif asked[record_id(r)] then
      -- Its cancel was asked for while it ran: it does not run again (cancel.lua).
      cancel_unstarted(base, record_id(r), r)
    else
      local id = record_id(r)
      local attempt, max = record_attempt(r), record_max_attempts(r)
      local since = marks[id]
      if since then attempt = attempt + 1 end
      if since and attempt >= max then
        rcall('HSET', KEYS[2], id, with_attempt(r, attempt, RECORD))
        local worker = string.match(token, '^(.-)%.') or token
        local err = {type = 'LeaseExpired',
          message = 'worker ' .. worker .. ' stopped renewing its lease while it ran this job (it died or hung); ' ..
            'its attempts are used up (' .. attempt .. ' of ' .. max .. ' counted)',
          traceback = '', worker = worker, started_at_ms = tonumber(since)}
        -- The error of an earlier attempt, if one raised (ack.lua keeps it while a job retries).
        local ok, before = pcall(cjson.decode, rcall('HGET', KEYS[6], id) or 'null')
        if ok and type(before) == 'table' then err.previous = before end
        err = cjson.encode(err)
        local k = #lost.ids + 1
        lost.ids[k], lost.names[k], lost.a[k], lost.x[k] = id, record_name(r), attempt - 1, err
        rcall('HSET', KEYS[6], id, err)
        if rcall('HDEL', KEYS[8], id) == 1 then rcall('PUBLISH', ARGV[3], 'f' .. id .. '\n' .. err) end
        rcall('ZADD', KEYS[5], now, id)
        bump(KEYS[7], 'failed', 1)
        -- A deduplication key held until the job settles goes with it (see enqueue.lua).
        release_dedup_of(base, r, id)
      else
        back[#back + 1] = with_attempt(r, attempt, ORPHAN)
      end
      reaped = reaped + 1
    end
  end
  push_ready(base, back, true)
  emit_records(base, 'stalled', back, true)
  rcall('DEL', lease, started, base .. ':cancel:' .. token)
  rcall('ZREM', KEYS[3], token)
  -- Tells ack.lua that a job missing from this lease was taken from it here (its late
  -- acknowledgement is refused as stale), not settled by an earlier send of the same
  -- acknowledgement whose answer was lost. A week: longer than any worker stays frozen.
  rcall('SET', base .. ':reaped:' .. token, '1', 'EX', 604800)
end
emit(base, 'failed', lost.ids, lost.names, {'a', json_list(lost.a), 'x', json_list(lost.x)})
if reaped > 0 then bump(KEYS[7], 'stalled', reaped) end
if #recs > 0 or reaped > 0 or freed > 0 then wake(KEYS[4]) end
local nd = rcall('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
local nl = rcall('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')[2]
-- Due times are ms with a fraction (enqueue.lua): the next one goes out in whole µs.
return {#recs, reaped, nd and math.floor(tonumber(nd) * 1000 + 0.5) or -1, nl and tonumber(nl) or -1, now, now_us}
