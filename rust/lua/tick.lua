-- tick: the scheduler's step for one queue: promote delayed jobs that are due, in due order,
-- and reap expired leases. Idempotent, so every worker's scheduler may run it at any time.
-- KEYS[1] delayed zset   KEYS[2] jobs hash   KEYS[3] wait   KEYS[4] active zset   KEYS[5] wake
-- KEYS[6] failed zset   KEYS[7] errors hash   KEYS[8] stats hash
-- ARGV[1] queue key base ("fj:{q}")   ARGV[2] max jobs promoted / leases reaped per call
-- Returns {promoted, reaped jobs, next due time or -1, next lease deadline or -1, now}.
local rcall = redis.call
local t = rcall('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local limit = tonumber(ARGV[2])

local promoted = 0
local due = rcall('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(due) do
  local rec = rcall('HGET', KEYS[2], id)
  if rec then
    rcall('RPUSH', KEYS[3], rec)
    rcall('HDEL', KEYS[2], id)
    promoted = promoted + 1
  end
end
if #due > 0 then rcall('ZREM', KEYS[1], unpack(due)) end

-- A lease whose deadline passed belongs to a worker that died or hung: its jobs go back to
-- the head of the queue with the attempt counted, or fail once their attempts are used up.
local reaped = 0
local expired = rcall('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, limit)
for _, token in ipairs(expired) do
  local lease = ARGV[1] .. ':lease:' .. token
  local recs = rcall('HVALS', lease)
  for i = #recs, 1, -1 do
    local r = recs[i]
    local attempt = string.byte(r, 2) * 256 + string.byte(r, 3) + 1
    local max = string.byte(r, 4) * 256 + string.byte(r, 5)
    r = string.sub(r, 1, 1) .. string.char(math.floor(attempt / 256) % 256, attempt % 256) .. string.sub(r, 4)
    if attempt >= max then
      local id = string.sub(r, 7, 6 + string.byte(r, 6))
      rcall('HSET', KEYS[2], id, r)
      rcall('HSET', KEYS[7], id, cjson.encode({type = 'LeaseExpired',
        message = 'the worker running this job stopped renewing its lease (it died or hung); attempts used up',
        traceback = '', attempts = attempt}))
      rcall('ZADD', KEYS[6], now, id)
      rcall('HINCRBY', KEYS[8], 'failed', 1)
    else
      rcall('LPUSH', KEYS[3], r)
    end
    reaped = reaped + 1
  end
  rcall('DEL', lease)
  rcall('ZREM', KEYS[4], token)
end
if reaped > 0 then rcall('HINCRBY', KEYS[8], 'stalled', reaped) end
if promoted > 0 or reaped > 0 then
  rcall('LPUSH', KEYS[5], '1')
  rcall('LTRIM', KEYS[5], 0, 0)
end
local nd = rcall('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
local nl = rcall('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')[2]
return {promoted, reaped, nd and tonumber(nd) or -1, nl and tonumber(nl) or -1, now}
