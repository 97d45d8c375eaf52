-- tick: the scheduler's step for one queue: promote delayed jobs that are due, in due order,
-- and reap expired leases. Idempotent, so every worker's scheduler may run it at any time.
-- KEYS[1] delayed zset   KEYS[2] jobs hash   KEYS[3] active zset   KEYS[4] wake
-- KEYS[5] failed zset   KEYS[6] errors hash   KEYS[7] stats hash   KEYS[8] waiters hash
-- ARGV[1] queue key base   ARGV[2] max jobs promoted / leases reaped per call
-- ARGV[3] results channel
-- Returns {promoted, reaped jobs, next due time or -1, next lease deadline or -1, now ms, now µs}.
local base = ARGV[1]
local clock = rcall('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
local limit = tonumber(ARGV[2])

local due = rcall('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
local recs = {}
for _, id in ipairs(due) do
  local rec = rcall('HGET', KEYS[2], id)
  if rec then recs[#recs + 1] = rec end
end
push_ready(base, recs, false)
if #due > 0 then
  rcall('ZREM', KEYS[1], unpack(due))
  rcall('HDEL', KEYS[2], unpack(due))
end

-- A lease whose deadline passed belongs to a worker that died or hung: its jobs go back to
-- the head of the queue with the attempt counted. A job fails (LeaseExpired) only when the
-- count goes past its attempts: every job runs again after its worker's death at least once
-- (at-least-once delivery even with attempts = 1), and a job that kills every worker that
-- runs it stops after attempts + 1 runs.
local reaped = 0
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
    if dead[string.match(slot, '^(.-)|')] then rcall('ZREM', base .. ':idle', slot) end
  end
end
for _, token in ipairs(expired) do
  local lease = base .. ':lease:' .. token
  local back = {}
  for _, r in ipairs(rcall('HVALS', lease)) do
    local attempt = record_attempt(r) + 1
    r = with_attempt(r, attempt)
    if attempt > record_max_attempts(r) then
      local id = record_id(r)
      rcall('HSET', KEYS[2], id, r)
      local err = cjson.encode({type = 'LeaseExpired',
        message = 'the worker running this job stopped renewing its lease (it died or hung) and its attempts are used up',
        traceback = ''})
      rcall('HSET', KEYS[6], id, err)
      if rcall('HDEL', KEYS[8], id) == 1 then rcall('PUBLISH', ARGV[3], 'f' .. id .. '\n' .. err) end
      rcall('ZADD', KEYS[5], now, id)
      rcall('HINCRBY', KEYS[7], 'failed', 1)
    else
      back[#back + 1] = r
    end
    reaped = reaped + 1
  end
  push_ready(base, back, true)
  rcall('DEL', lease)
  rcall('ZREM', KEYS[3], token)
end
if reaped > 0 then rcall('HINCRBY', KEYS[7], 'stalled', reaped) end
if #recs > 0 or reaped > 0 then wake(KEYS[4]) end
local nd = rcall('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
local nl = rcall('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')[2]
return {#recs, reaped, nd and tonumber(nd) or -1, nl and tonumber(nl) or -1, now, clock[1] * 1000000 + clock[2]}
