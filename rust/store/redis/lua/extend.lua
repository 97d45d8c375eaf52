-- extend: push the deadlines of live leases forward (the worker's heartbeat), and collect
-- the cancel requests for their jobs (cancel.lua; they are also announced on the queue's
-- control channel, which makes the worker call this at once).
-- KEYS[1] active zset
-- ARGV[1] lease duration ms   ARGV[2] queue key base   ARGV[3..] lease tokens
-- Returns {tokens reaped (their jobs belong to others now), ids of jobs of the live leases
-- somebody asked to cancel}. A token the worker ended itself meanwhile (its last job
-- acknowledged or handed back while this call was on its way) is neither.
local deadline = now_ms() + tonumber(ARGV[1])
local lost, asked = {}, {}
for i = 3, #ARGV do
  if not rcall('ZSCORE', KEYS[1], ARGV[i]) then
    if rcall('EXISTS', ARGV[2] .. ':reaped:' .. ARGV[i]) == 1 then lost[#lost + 1] = ARGV[i] end
  else
    rcall('ZADD', KEYS[1], 'XX', deadline, ARGV[i])
    for _, id in ipairs(rcall('SMEMBERS', ARGV[2] .. ':cancel:' .. ARGV[i])) do asked[#asked + 1] = id end
  end
end
return {lost, asked}
