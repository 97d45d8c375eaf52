-- ack: settle finished jobs of one lease: completed, retried or failed for good.
-- KEYS[1] lease hash   KEYS[2] active zset   KEYS[3] stats hash   KEYS[4] waiters hash
-- KEYS[5] wait   KEYS[6] delayed zset   KEYS[7] jobs hash   KEYS[8] failed zset
-- KEYS[9] errors hash   KEYS[10] wake
-- ARGV[1] queue key base   ARGV[2] lease token   ARGV[3] result ttl ms
-- ARGV[4] done-bitmap ttl seconds   ARGV[5] results channel   ARGV[6] scheduler channel
-- then per job, 4 values: kind, id, a, b
--   'c' / 'C' completed (generated / caller-chosen id): a = result JSON ('' for None)
--   'r' retry: a = delay ms from now (0: at once), b = the record with its attempt counted
--   'f' failed for good: a = error JSON, b = the record with its attempt counted
-- A job whose id is no longer in the lease (the lease expired and was reaped: a stale token)
-- is refused and left alone. Returns {settled, refused}.
local base = ARGV[1]
local now = now_ms()
local waited = rcall('HLEN', KEYS[4]) > 0
local settled, refused, completed, retried, failed = 0, 0, 0, 0, 0
local bitmaps = {}
local pushed = false
local earliest = nil

-- Publishes the outcome if somebody registered to wait for it.
local function notify(id, kind, data)
  if waited and rcall('HDEL', KEYS[4], id) == 1 then
    rcall('PUBLISH', ARGV[5], kind .. id .. '\n' .. data)
    return true
  end
  return false
end

for i = 7, #ARGV, 4 do
  local kind, id, a, b = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if rcall('HDEL', KEYS[1], id) == 0 then
    refused = refused + 1
  else
    settled = settled + 1
    if kind == 'c' or kind == 'C' then
      completed = completed + 1
      if kind == 'c' then
        -- generated id <producer:10>-<seq>: one bit marks it completed
        local key = base .. ':done:' .. string.sub(id, 1, 10)
        rcall('SETBIT', key, tonumber(string.sub(id, 12)), 1)
        bitmaps[key] = true
      else
        rcall('SET', base .. ':id:' .. id, 'c', 'KEEPTTL')
      end
      -- A None result is stored only when somebody waits for it.
      local result = a
      if notify(id, 'c', a == '' and 'null' or a) and result == '' then result = 'null' end
      if result ~= '' then rcall('SET', base .. ':result:' .. id, result, 'PX', ARGV[3]) end
    elseif kind == 'r' then
      retried = retried + 1
      local due = now + tonumber(a)
      if due > now then
        rcall('ZADD', KEYS[6], due, id)
        rcall('HSET', KEYS[7], id, b)
        if earliest == nil or due < earliest then earliest = due end
      else
        rcall('RPUSH', ready_key(base, b), b)
        pushed = true
      end
    else
      failed = failed + 1
      rcall('HSET', KEYS[7], id, b)
      rcall('HSET', KEYS[9], id, a)
      rcall('ZADD', KEYS[8], now, id)
      notify(id, 'f', a)
    end
  end
end
for key in pairs(bitmaps) do rcall('EXPIRE', key, ARGV[4]) end
if rcall('EXISTS', KEYS[1]) == 0 then rcall('ZREM', KEYS[2], ARGV[2]) end
if completed > 0 then rcall('HINCRBY', KEYS[3], 'completed', completed) end
if retried > 0 then rcall('HINCRBY', KEYS[3], 'retried', retried) end
if failed > 0 then rcall('HINCRBY', KEYS[3], 'failed', failed) end
if pushed then wake(KEYS[10]) end
if earliest ~= nil then rcall('PUBLISH', ARGV[6], tostring(earliest)) end
return {settled, refused}
