-- extend: push the deadlines of live leases forward (the worker's heartbeat).
-- KEYS[1] active zset
-- ARGV[1] lease duration ms   ARGV[2..] lease tokens
-- Returns the tokens that are no longer leased (reaped: their jobs belong to others now).
local rcall = redis.call
local t = rcall('TIME')
local deadline = t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[1])
local lost = {}
for i = 2, #ARGV do
  if rcall('ZADD', KEYS[1], 'XX', 'CH', deadline, ARGV[i]) == 0 and not rcall('ZSCORE', KEYS[1], ARGV[i]) then
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
