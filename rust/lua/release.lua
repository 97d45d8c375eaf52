-- release: hand leased jobs that never started back to the head of their queue, in order
-- (graceful shutdown), so another worker takes them at once. The attempt is not counted.
-- KEYS[1] lease hash   KEYS[2] active zset   KEYS[3] wake   KEYS[4] the lease's started hash
-- ARGV[1] queue key base   ARGV[2] lease token   ARGV[3..] ids, in queue order
-- Returns how many jobs went back (a job somebody asked to cancel is cancelled instead).
local recs = {}
for i = 3, #ARGV do
  local rec = rcall('HGET', KEYS[1], ARGV[i])
  if rec then
    rcall('HDEL', KEYS[1], ARGV[i])
    -- Asked to cancel while it waited in the worker's buffer: it never runs (cancel.lua).
    if cancel_was_asked(ARGV[1], ARGV[2], ARGV[i]) then cancel_unstarted(ARGV[1], ARGV[i], rec) else recs[#recs + 1] = rec end
  end
end
push_ready(ARGV[1], recs, true)
if rcall('EXISTS', KEYS[1]) == 0 then
  rcall('ZREM', KEYS[2], ARGV[2])
  rcall('DEL', KEYS[4])
end
if #recs > 0 then wake(KEYS[3]) end
return #recs
