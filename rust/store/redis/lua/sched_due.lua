-- sched_due: the schedules whose next run is due, for a driver to fire.
-- KEYS[1] next-run zset
-- ARGV[1] max schedules returned
-- Returns {now ms, next run ms of the earliest schedule or -1, key, tick ms, key, tick ms, ...}.
local now = now_ms()
local out = {now, -1}
local head = rcall('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
if head then out[2] = tonumber(head) end
local due = rcall('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))
for i = 1, #due, 2 do
  out[#out + 1] = due[i]
  out[#out + 1] = tonumber(due[i + 1])
end
return out
