-- release: hand leased jobs that never started back to the head of their queue, in order
-- (graceful shutdown), so another worker takes them at once. The attempt is not counted. A
-- job of a group goes back to the head of its group's list.
-- KEYS[1] lease hash   KEYS[2] active zset   KEYS[3] wake   KEYS[4] the lease's started hash
-- ARGV[1] queue key base   ARGV[2] lease token   ARGV[3..] ids, in queue order
-- Returns how many jobs went back (a job somebody asked to cancel is cancelled instead).
local recs = {}
local freed = 0
for i = 3, #ARGV do
  local rec = rcall('HGET', KEYS[1], ARGV[i])
  if rec then
    rcall('HDEL', KEYS[1], ARGV[i])
    -- A job of a group leaves its lease: its group's count goes down (it goes back to its
    -- group's list, push_ready).
    local g = record_group(rec)
    if g then
      group_done(ARGV[1], g, 1)
      freed = freed + 1
    end
    -- Asked to cancel while it waited in the worker's buffer: it never runs (cancel.lua).
    if cancel_was_asked(ARGV[1], ARGV[2], ARGV[i]) then cancel_unstarted(ARGV[1], ARGV[i], rec) else recs[#recs + 1] = rec end
  end
end
push_ready(ARGV[1], recs, true)
emit_records(ARGV[1], 'waiting', recs)
if rcall('EXISTS', KEYS[1]) == 0 then
  rcall('ZREM', KEYS[2], ARGV[2])
  rcall('DEL', KEYS[4])
end
if #recs > 0 or (freed > 0 and rcall('EXISTS', ARGV[1] .. ':glimit') == 1) then wake(KEYS[3]) end
return #recs
