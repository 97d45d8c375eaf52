-- counts: how many jobs of a queue are in each state.
-- KEYS[1] delayed zset   KEYS[2] active zset   KEYS[3] failed zset   KEYS[4] stats hash
-- ARGV[1] queue key base
-- Returns {waiting (ready jobs, and jobs waiting in their groups' lists), delayed, active,
-- failed, completed (ever), retried (ever), stalled (ever), paused (1 or 0), cancelled (ever)}.
local active = 0
for _, token in ipairs(rcall('ZRANGE', KEYS[2], 0, -1)) do
  active = active + rcall('HLEN', ARGV[1] .. ':lease:' .. token)
end
local s = rcall('HMGET', KEYS[4], 'completed', 'retried', 'stalled', 'cancelled')
return {ready_count(ARGV[1]) + grouped_count(ARGV[1]), rcall('ZCARD', KEYS[1]), active, rcall('ZCARD', KEYS[3]),
  tonumber(s[1] or '0') or 0, tonumber(s[2] or '0') or 0, tonumber(s[3] or '0') or 0,
  rcall('EXISTS', ARGV[1] .. ':paused'), tonumber(s[4] or '0') or 0}
