-- release: hand leased jobs that never started back to the head of their queue, in order
-- (graceful shutdown), so another worker takes them at once.
-- KEYS[1] lease hash   KEYS[2] active zset   KEYS[3] wait   KEYS[4] wake
-- ARGV[1] lease token   ARGV[2..] ids, in queue order
-- Returns how many jobs went back.
local rcall = redis.call
local n = 0
for i = #ARGV, 2, -1 do
  local rec = rcall('HGET', KEYS[1], ARGV[i])
  if rec then
    rcall('LPUSH', KEYS[3], rec)
    rcall('HDEL', KEYS[1], ARGV[i])
    n = n + 1
  end
end
if rcall('EXISTS', KEYS[1]) == 0 then rcall('ZREM', KEYS[2], ARGV[1]) end
if n > 0 then
  rcall('LPUSH', KEYS[4], '1')
  rcall('LTRIM', KEYS[4], 0, 0)
end
return n
