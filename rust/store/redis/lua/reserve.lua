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
-- queue settles, and ack.lua wakes the queue then). The same when nothing else is ready and
-- every group with jobs waiting that this reserve looked at is at its limit (`<base>:glimit`):
-- the earliest end of a group's window, or -1 when only concurrency holds them.
-- Groups (common.lua): while the ring `<base>:groups` exists, the jobs are taken in turns
-- from its members, the ungrouped ready lists being one member (serve_groups below).
local base, token = ARGV[1], ARGV[2]
local want = tonumber(ARGV[3])
local now = now_ms()
local recs = {}
-- How many ring members one reserve looks at beyond the jobs it wants: room to pass over
-- groups at their limits.
local GROUP_SCAN = 1000

-- What a group may be leased now under the per-group limits `glim` (math.huge: no limit), and
-- when it may be leased again when that is 0: ms until its rate window ends, or -1 (its
-- concurrency: a settled job frees it).
local function group_allowance(g, glim)
  if g == UNGROUPED then return math.huge, nil end
  local a = math.huge
  if glim.conc then
    a = glim.conc - (tonumber(redis.pcall('HGET', base .. ':gactive', g)) or 0)
    if a <= 0 then return 0, -1 end
  end
  if glim.max then
    local key = base .. ':glimiter:' .. g
    local used = tonumber(redis.pcall('GET', key)) or 0
    if used >= glim.max then
      local ms = rcall('PTTL', key)
      if ms > 0 and ms <= glim.period then return 0, ms end
      -- No ttl, or a window longer than the limit now set: a new window.
      rcall('DEL', key)
      used = 0
    end
    a = math.min(a, glim.max - used)
  end
  return a, nil
end

-- Serves up to `want` jobs from the ring's members in turn: the first members of the ring (up
-- to want + GROUP_SCAN) each get an equal share, a member that has fewer jobs or reaches its
-- limit leaves its rest to the others, in further rounds. Every member that was looked at goes
-- to the tail of the ring (in order), so the next reserve starts with the ones after it; a
-- group whose list is empty leaves the ring, and the ring goes when only the ungrouped member
-- is left. Returns the records per member looked at, the members, and, when a member was passed
-- over at its limit, when to come back (see group_allowance; the earliest window end, else -1).
local function serve_groups(base, want, glim)
  local ring = base .. ':groups'
  local heads = rcall('LRANGE', ring, 0, want + GROUP_SCAN - 1)
  local lists, cap, empty = {}, {}, {}
  local limited = nil
  local active = {}
  for i = 1, #heads do
    lists[i] = {}
    active[i] = i
  end
  local left, last, grouped_taken = want, 0, 0
  while left > 0 and #active > 0 do
    local share = math.max(1, math.floor(left / #active))
    local keep = {}
    for _, i in ipairs(active) do
      if left <= 0 then break end
      local g = heads[i]
      if i > last then last = i end
      if cap[i] == nil then
        local wait
        cap[i], wait = group_allowance(g, glim)
        if wait and (limited == nil or limited < 0 or (wait > 0 and wait < limited)) then limited = wait end
      end
      local take = math.min(share, cap[i], left)
      if take > 0 then
        local got
        if g == UNGROUPED then
          got = pop_ready(base, take)
        else
          got = rcall('LPOP', base .. ':group:' .. g, take) or {}
          grouped_taken = grouped_taken + #got
        end
        local list = lists[i]
        for _, r in ipairs(got) do list[#list + 1] = r end
        cap[i] = cap[i] - #got
        left = left - #got
        if #got < take then
          empty[i] = true
        elseif cap[i] > 0 then
          keep[#keep + 1] = i
        end
      end
    end
    active = keep
  end
  if grouped_taken > 0 then gwaiting_add(base, -grouped_taken) end
  if last > 0 then
    local back = {}
    for i = 1, last do
      local g = heads[i]
      if g ~= UNGROUPED and not empty[i] and #lists[i] > 0 and rcall('EXISTS', base .. ':group:' .. g) == 0 then empty[i] = true end
      if g == UNGROUPED or not empty[i] then back[#back + 1] = g end
    end
    rcall('LTRIM', ring, last, -1)
    if #back > 0 then rcall('RPUSH', ring, unpack(back)) end
    local rest = rcall('LRANGE', ring, 0, 1)
    if #rest == 0 or (#rest == 1 and rest[1] == UNGROUPED) then rcall('DEL', ring, base .. ':gwaiting') end
  end
  return lists, heads, limited
end

-- One call for the controls and the groups: a queue with none of them pays nothing more.
local present = rcall('EXISTS', base .. ':paused', base .. ':limit', base .. ':groups')
local gated = present > 0
local window = nil -- the rate limit's window counter and length, when one applies
local grouped = false -- the ring exists: groups have jobs waiting
if gated and rcall('EXISTS', base .. ':paused') == 0 then
  gated = false
  local l = rcall('HMGET', base .. ':limit', 'max', 'period', 'concurrency')
  -- limit.lua writes fields only, so the hash exists when one of them does.
  grouped = present > ((l[1] or l[2] or l[3]) and 1 or 0)
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
local handed = #recs -- told as active when they were handed over (common.lua hand_over)
-- Groups: the ring's members in turn, up to `want` jobs, with the per-group limits; the
-- records of each member interleaved (one of each in turn) in the lease's order.
local group_of = nil -- record -> its group, for the records served from groups
local glim = nil -- the per-group limits: max jobs per period ms, concurrency (nil: none)
if want > #recs and grouped then
  local l = rcall('HMGET', base .. ':glimit', 'max', 'period', 'concurrency')
  glim = {max = tonumber(l[1]), period = tonumber(l[2]), conc = tonumber(l[3])}
  if not (glim.max and glim.period) then glim.max, glim.period = nil, nil end
  local lists, groups, limited = serve_groups(base, want - #recs, glim)
  group_of = {}
  local live, at = {}, {}
  for i, list in ipairs(lists) do
    if #list > 0 then live[#live + 1] = i; at[i] = 1 end
  end
  while #live > 0 do
    local next_live = {}
    for _, i in ipairs(live) do
      local r = lists[i][at[i]]
      recs[#recs + 1] = r
      if groups[i] ~= UNGROUPED then group_of[r] = groups[i] end
      at[i] = at[i] + 1
      if lists[i][at[i]] then next_live[#next_live + 1] = i end
    end
    live = next_live
  end
  -- Nothing else ready, and the groups that have jobs are at their limits: a limited answer
  -- (the worker waits for the window or a wake-up), not an idle slot.
  if #recs == 0 and limited then
    if ARGV[6] ~= '' then rcall('ZREM', KEYS[6], ARGV[6]) end
    return {limited}
  end
elseif want > #recs then
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
  if popped > 0 and (any_ready(base) or (grouped and rcall('EXISTS', base .. ':groups') == 1)) then wake(KEYS[4]) end
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
if group_of then
  -- Per group: its jobs leased now (released by whatever ends their lease: ack, release,
  -- the reaper), and its rate window's count (opened as the queue's is).
  local per = {}
  for _, r in ipairs(recs) do
    local g = group_of[r]
    if g then per[g] = (per[g] or 0) + 1 end
  end
  local period = glim.period
  for g, n in pairs(per) do
    redis.pcall('HINCRBY', base .. ':gactive', g, n)
    if period then
      local key = base .. ':glimiter:' .. g
      local c = redis.pcall('INCRBY', key, n)
      if c == n then rcall('PEXPIRE', key, period) elseif type(c) ~= 'number' then rcall('SET', key, n, 'PX', period) end
    end
  end
end
if events_on(base) and #recs > handed then
  -- Ids and attempts, not names: one entry per reserve, read per record at a drain's pace.
  -- Attempts only when one is not the first (`a` left out: all 0).
  local ids, att, again = {}, {}, false
  for i = handed + 1, #recs do
    ids[#ids + 1] = lease_id(recs[i])
    local a = record_attempt(recs[i])
    att[#att + 1] = a
    if a > 0 then again = true end
  end
  emit(base, 'active', ids, nil, {'w', ARGV[5], again and 'a' or 'A', again and ('[' .. table.concat(att, ',') .. ']') or ''})
end
-- Pass the wake-up on: another idle worker should take what is left.
if popped >= want and (any_ready(base) or (grouped and rcall('EXISTS', base .. ':groups') == 1)) then wake(KEYS[4]) end
return recs
