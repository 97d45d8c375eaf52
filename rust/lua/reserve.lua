-- reserve: lease up to N ready jobs to one worker under one token, higher priority first;
-- with nothing ready, register the worker as idle (a slot in the idle zset, scored by when it
-- was registered) so the next job is handed to it (common.lua wake()).
-- KEYS[1] wait   KEYS[2] active zset (token -> lease deadline)   KEYS[3] lease hash (id -> record)
-- KEYS[4] wake   KEYS[5] priority levels zset   KEYS[6] idle zset (slot -> since)
-- KEYS[7] this worker's inbox
-- ARGV[1] queue key base   ARGV[2] lease token   ARGV[3] max jobs (0: take handed jobs only)
-- ARGV[4] lease duration ms
-- ARGV[5] worker id ('' to never be handed jobs)   ARGV[6] the worker's idle slot or ''
-- Returns the leased records in queue order; with none, 0 when the worker is idle under a new
-- slot (`<worker>|<token>|<lease ms>`), 1 when it keeps its slot, false when it is not idle.
-- A popped element that is not a job record is failed as undecodable (common.lua), not leased.
-- -1 when the queue is paused: nothing is leased, and jobs handed to this worker before the
-- pause go back to the head of the queue (they did not start).
-- {ms} when a limit of the queue (`<base>:limit`, limit.lua) allows nothing now: the rate
-- limit's window ends in `ms`; -1 for the concurrency limit (a slot frees when a job of the
-- queue settles, and ack.lua wakes the queue then).
local base, token = ARGV[1], ARGV[2]
local want = tonumber(ARGV[3])
local now = now_ms()
local recs = {}
-- One call for both controls: a queue with neither pays nothing more.
local gated = rcall('EXISTS', base .. ':paused', base .. ':limit') > 0
local window = nil -- the rate limit's window counter and length, when one applies
if gated and rcall('EXISTS', base .. ':paused') == 0 then
  gated = false
  local l = rcall('HMGET', base .. ':limit', 'max', 'period', 'concurrency')
  local max, period, conc = tonumber(l[1]), tonumber(l[2]), tonumber(l[3])
  if conc then
    local held = 0
    for _, t in ipairs(rcall('ZRANGE', KEYS[2], 0, -1)) do held = held + rcall('HLEN', base .. ':lease:' .. t) end
    want = math.min(want, conc - held)
    if want <= 0 then return {-1} end
  end
  if max and period then
    local key = base .. ':limiter'
    local left = max - (tonumber(rcall('GET', key) or '0') or 0)
    if left <= 0 then
      local ms = rcall('PTTL', key)
      if ms > 0 then return {ms} end
      rcall('DEL', key) -- a counter without a ttl (cannot happen here; never block for good)
      left = max
    end
    want = math.min(want, left)
    window = {key, period}
  end
end
if gated then
  local back = {}
  if rcall('EXISTS', KEYS[7]) == 1 then
    for _, item in ipairs(rcall('LPOP', KEYS[7], 1000) or {}) do
      local rec = take_handed(base, KEYS[2], item)
      if rec then back[#back + 1] = rec end
    end
  end
  push_ready(base, back, true)
  if ARGV[6] ~= '' then rcall('ZREM', KEYS[6], ARGV[6]) end
  return -1
end
-- Jobs handed over while this worker was not blocked on its inbox come first (they were
-- ready first); each moves from its hand-off lease into this one, unless it was reaped.
if rcall('EXISTS', KEYS[7]) == 1 then
  for _, item in ipairs(rcall('LPOP', KEYS[7], 1000) or {}) do
    local rec = take_handed(base, KEYS[2], item)
    if rec then recs[#recs + 1] = rec end
  end
end
if want > #recs then
  for _, r in ipairs(pop_ready(base, want - #recs)) do recs[#recs + 1] = r end
end
local prev = ARGV[6]
if #recs == 0 and want > 0 and ARGV[5] ~= '' then
  -- Idle: keep a recent slot (its place in line), else register a new one under `token`.
  local since = prev ~= '' and rcall('ZSCORE', KEYS[6], prev)
  if since and tonumber(since) > now - IDLE_SLOT_MS / 2 then return 1 end
  if prev ~= '' then rcall('ZREM', KEYS[6], prev) end
  rcall('ZADD', KEYS[6], now, ARGV[5] .. '|' .. token .. '|' .. ARGV[4])
  return 0
end
if prev ~= '' then rcall('ZREM', KEYS[6], prev) end
-- Only job records are leased: anything else popped is failed as undecodable here, so a
-- worker never holds what it cannot settle by id.
local args, leased = {}, 0
for i = 1, #recs do
  local r = recs[i]
  local id = lease_id(r)
  if id then
    leased = leased + 1
    recs[leased] = r -- kept in place, in order
    args[2 * leased - 1] = id
    args[2 * leased] = r
  else
    fail_undecodable(base, r, now)
  end
end
local popped = #recs
for i = popped, leased + 1, -1 do recs[i] = nil end
if leased == 0 then
  if popped > 0 and any_ready(base) then wake(KEYS[4]) end
  return false
end
if rcall('HSET', KEYS[3], unpack(args)) < leased then
  -- Two records with one id (only something other than fastjobs writes those): the lease
  -- keeps the first, the others are failed as undecodable rather than overwritten unseen.
  rcall('DEL', KEYS[3])
  local kept = {}
  for _, r in ipairs(recs) do
    if rcall('HSETNX', KEYS[3], record_id(r), r) == 1 then
      kept[#kept + 1] = r
    else
      fail_undecodable(base, r, now, 'has the id of another job reserved with it: ' .. record_id(r))
    end
  end
  recs = kept
end
rcall('ZADD', KEYS[2], now + tonumber(ARGV[4]), token)
if window and #recs > 0 then
  -- The window opens with its first lease and lasts its period (a fixed window).
  if rcall('INCRBY', window[1], #recs) == #recs then rcall('PEXPIRE', window[1], window[2]) end
end
-- Pass the wake-up on: another idle worker should take what is left.
if popped >= want and any_ready(base) then wake(KEYS[4]) end
return recs
