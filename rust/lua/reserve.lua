-- reserve: lease up to N ready jobs to one worker under one token.
-- KEYS[1] wait   KEYS[2] active zset (token -> lease deadline)   KEYS[3] lease hash (id -> record)
-- KEYS[4] wake
-- ARGV[1] lease token   ARGV[2] max jobs   ARGV[3] lease duration ms
-- Returns the leased records in queue order, or false when the queue is empty.
local rcall = redis.call
local recs = rcall('LPOP', KEYS[1], tonumber(ARGV[2]))
if not recs then return false end
local args = {}
for i, r in ipairs(recs) do
  -- record layout: version, attempt (2), max attempts (2), id length (1), id
  local n = string.byte(r, 6)
  args[2 * i - 1] = string.sub(r, 7, 6 + n)
  args[2 * i] = r
end
rcall('HSET', KEYS[3], unpack(args))
local t = rcall('TIME')
rcall('ZADD', KEYS[2], t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[3]), ARGV[1])
-- Pass the wake-up on: another idle worker should take what is left.
if rcall('LLEN', KEYS[1]) > 0 then
  rcall('LPUSH', KEYS[4], '1')
  rcall('LTRIM', KEYS[4], 0, 0)
end
return recs
