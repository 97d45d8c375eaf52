-- empty: cancel one page of a queue's waiting jobs (ready, then in their groups' lists) and
-- delayed jobs (Queue.empty). The caller calls again until a page comes back short, so Redis
-- is never held for long and jobs dispatched meanwhile are cancelled too (or not, if they land
-- after the last page).
-- KEYS[1] delayed zset   KEYS[2] jobs hash   KEYS[3] errors hash   KEYS[4] waiters hash
-- KEYS[5] stats hash
-- ARGV[1] queue key base   ARGV[2] most jobs   ARGV[3] cancelled marks' ttl seconds
-- ARGV[4] results channel
-- Returns {how many jobs were cancelled, then the records of those that carry options}: the
-- caller tells the chains and flows among them (their failure policy applies). Each is
-- marked cancelled (status, wait_result) as cancel.lua does; elements that are not job
-- records are dropped.
local base, max = ARGV[1], tonumber(ARGV[2])
local waited = rcall('HLEN', KEYS[4]) > 0
local n = 0
local with_options = {}
local told = events_on(base) and {ids = {}, names = {}} or nil -- for the events stream
local function cancel(id, rec)
  local m = sbyte(rec, 8 + (sbyte(rec, 7) or 0)) or 0
  local hi, lo = sbyte(rec, 15 + #id + m, 16 + #id + m)
  if (hi or 0) + (lo or 0) > 0 then with_options[#with_options + 1] = rec end
  mark_cancelled(base, id, not is_generated(id), ARGV[3])
  release_dedup_of(base, rec, id)
  if waited and rcall('HDEL', KEYS[4], id) == 1 then rcall('PUBLISH', ARGV[4], 'x' .. id .. '\n') end
  n = n + 1
  if told then told.ids[n], told.names[n] = id, record_name(rec) end
end
local taken = 0
local function cancel_popped(recs)
  taken = taken + #recs
  for _, rec in ipairs(recs) do
    local id = lease_id(rec)
    if id then
      cancel(id, rec)
      rcall('HDEL', KEYS[3], id)
    end
  end
end
cancel_popped(pop_ready(base, max))
-- Then the groups' lists, in ring order (a group emptied leaves the ring, common.lua).
if taken < max then
  for _, g in ipairs(rcall('LRANGE', base .. ':groups', 0, -1)) do
    if taken >= max then break end
    if g ~= UNGROUPED then
      local key = base .. ':group:' .. g
      local got = rcall('LPOP', key, max - taken) or {}
      if #got > 0 then gwaiting_add(base, -#got) end
      if rcall('EXISTS', key) == 0 then ring_drop(base, g) end
      cancel_popped(got)
    end
  end
end
if n < max then
  local ids = rcall('ZRANGE', KEYS[1], 0, max - n - 1)
  if #ids > 0 then
    local recs = rcall('HMGET', KEYS[2], unpack(ids))
    rcall('ZREM', KEYS[1], unpack(ids))
    rcall('HDEL', KEYS[2], unpack(ids))
    rcall('HDEL', KEYS[3], unpack(ids))
    for i, id in ipairs(ids) do cancel(id, recs[i] or '') end
  end
end
if told then emit(base, 'cancelled', told.ids, told.names) end
if n > 0 then bump(KEYS[5], 'cancelled', n) end
return {n, unpack(with_options)}
