-- extend: push the deadlines of live leases forward (the worker's heartbeat).
-- KEYS[1] active zset
-- ARGV[1] lease duration ms   ARGV[2..] lease tokens
-- Returns the tokens that are no longer leased (reaped: their jobs belong to others now).
local deadline = now_ms() + tonumber(ARGV[1])
local lost = {}
for i = 2, #ARGV do
  if not rcall('ZSCORE', KEYS[1], ARGV[i]) then
    lost[#lost + 1] = ARGV[i]
  else
    rcall('ZADD', KEYS[1], 'XX', deadline, ARGV[i])
  end
end
return lost
