-- cancel: cancel or remove one job by id, wherever it is.
-- KEYS[1] jobs hash   KEYS[2] delayed zset   KEYS[3] failed zset   KEYS[4] active zset
-- KEYS[5] errors hash   KEYS[6] waiters hash   KEYS[7] stats hash
-- ARGV[1] queue key base   ARGV[2] job id   ARGV[3] '1' if the id was chosen by the caller
-- ARGV[4] 'cancel' or 'remove'   ARGV[5] tombstone ttl seconds (the completion marks' ttl)
-- ARGV[6] results channel   ARGV[7] control channel
-- Returns {state the job was in, record or false, done}: done is 1 when the job was cancelled
-- or removed, 0 when it was not (then state says why: a finished job cannot be cancelled, a
-- running one cannot be removed). A running job is not stopped here: cancel asks its worker
-- (cancel_ask), and the worker settles it as cancelled if the handler gives up.
-- Cost: a waiting job is found by scanning its queue's ready lists from the head (LRANGE in
-- pages, runs parsed), then its groups' lists (common.lua remove_ready): O(position in the
-- queue, grouped jobs after the ready ones); any other state is O(1) or O(leases).
local base, id, custom, op = ARGV[1], ARGV[2], ARGV[3] == '1', ARGV[4]

-- A job that will not run any more: waiters hear it, and a cancelled one stays `cancelled`
-- (a caller-chosen id keeps its mark, as `x`, so it is not taken again; `remove` frees it).
-- `remove` deletes its progress and log lines (feedback.lua) and its callback's record too; a
-- cancelled job keeps them until their ttl.
local function gone(state, rec)
  release_dedup_of(base, rec, id)
  emit(base, op == 'cancel' and 'cancelled' or 'removed', {id}, rec and record_name(rec) or nil)
  if op == 'cancel' then
    mark_cancelled(base, id, custom, ARGV[5])
    bump(KEYS[7], 'cancelled', 1)
    if rcall('HDEL', KEYS[6], id) == 1 then rcall('PUBLISH', ARGV[6], 'x' .. id .. '\n') end
  else
    if custom then rcall('DEL', base .. ':id:' .. id) else mark_cancelled(base, id, false, ARGV[5]) end
    rcall('DEL', base .. ':result:' .. id, base .. ':progress:' .. id, base .. ':logs:' .. id, base .. ':callback:' .. id)
    if rcall('HDEL', KEYS[6], id) == 1 then rcall('PUBLISH', ARGV[6], 'u' .. id .. '\n') end
  end
  return {state, rec or false, 1}
end

if rcall('ZSCORE', KEYS[2], id) then
  local rec = rcall('HGET', KEYS[1], id)
  rcall('ZREM', KEYS[2], id)
  rcall('HDEL', KEYS[1], id)
  rcall('HDEL', KEYS[5], id)
  return gone('delayed', rec)
end
if rcall('ZSCORE', KEYS[3], id) then
  local rec = rcall('HGET', KEYS[1], id)
  if op == 'cancel' then return {'failed', rec or false, 0} end
  rcall('ZREM', KEYS[3], id)
  rcall('HDEL', KEYS[1], id)
  release_dedup_of(base, rec, id)
  rcall('HDEL', KEYS[5], id)
  rcall('DEL', base .. ':progress:' .. id, base .. ':logs:' .. id, base .. ':callback:' .. id)
  if custom then rcall('DEL', base .. ':id:' .. id) else mark_cancelled(base, id, false, ARGV[5]) end
  emit(base, 'removed', {id}, rec and record_name(rec) or nil)
  return {'failed', rec or false, 1}
end
for _, token in ipairs(rcall('ZRANGE', KEYS[4], 0, -1)) do
  local rec = rcall('HGET', base .. ':lease:' .. token, id)
  if rec then
    if op == 'cancel' then cancel_ask(base, token, id, ARGV[7]) end
    return {'active', rec, op == 'cancel' and 1 or 0}
  end
end
local rec = remove_ready(base, id)
if rec then return gone('waiting', rec) end
-- Finished, or never known.
local state = 'unknown'
if custom then
  local mark = rcall('GET', base .. ':id:' .. id)
  if mark == 'c' then state = 'completed' elseif mark == 'x' then state = 'cancelled' end
else
  local producer, seq = ssub(id, 1, 10), tonumber(ssub(id, 12))
  if rcall('GETBIT', base .. ':done:' .. producer, seq) == 1 then
    state = 'completed'
  elseif rcall('GETBIT', base .. ':cancelled:' .. producer, seq) == 1 then
    state = 'cancelled'
  end
end
if op == 'remove' and state ~= 'unknown' then
  rcall('DEL', base .. ':result:' .. id, base .. ':progress:' .. id, base .. ':logs:' .. id, base .. ':callback:' .. id)
  if custom then rcall('DEL', base .. ':id:' .. id) end
  emit(base, 'removed', {id})
  return {state, false, 1}
end
return {state, false, 0}
