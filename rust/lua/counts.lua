-- counts: how many jobs of a queue are in each state.
-- KEYS[1] wait   KEYS[2] delayed   KEYS[3] active zset   KEYS[4] failed   KEYS[5] stats hash
-- ARGV[1] queue key base
-- Returns {waiting, delayed, active, failed, completed (ever), retried (ever), stalled (ever)}.
local rcall = redis.call
local active = 0
for _, token in ipairs(rcall('ZRANGE', KEYS[3], 0, -1)) do
  active = active + rcall('HLEN', ARGV[1] .. ':lease:' .. token)
end
local s = rcall('HMGET', KEYS[5], 'completed', 'retried', 'stalled')
return {rcall('LLEN', KEYS[1]), rcall('ZCARD', KEYS[2]), active, rcall('ZCARD', KEYS[4]),
  tonumber(s[1] or '0'), tonumber(s[2] or '0'), tonumber(s[3] or '0')}
