-- leave: a stopping worker ends its idle slot in one queue, puts the jobs handed to it but
-- not taken back at the head of the queue (in order, attempt not counted), and leaves its
-- own stop marker (an empty token) on its inbox to end its blocked pop.
-- KEYS[1] idle zset   KEYS[2] this worker's inbox   KEYS[3] active zset   KEYS[4] wake
-- ARGV[1] queue key base   ARGV[2] the worker's idle slot or ''
-- Returns how many jobs went back.
local base = ARGV[1]
if ARGV[2] ~= '' then rcall('ZREM', KEYS[1], ARGV[2]) end
local back = {}
for _, item in ipairs(rcall('LRANGE', KEYS[2], 0, -1)) do
  local rec = take_handed(base, KEYS[3], item)
  if rec then back[#back + 1] = rec end
end
rcall('DEL', KEYS[2])
push_ready(base, back, true)
emit_records(base, 'waiting', back)
if #back > 0 then wake(KEYS[4]) end
rcall('RPUSH', KEYS[2], string.char(0))
rcall('PEXPIRE', KEYS[2], 60000)
return #back
