-- reserve: lease up to N ready jobs to one worker under one token, higher priority first.
-- KEYS[1] wait   KEYS[2] active zset (token -> lease deadline)   KEYS[3] lease hash (id -> record)
-- KEYS[4] wake   KEYS[5] priority levels zset
-- ARGV[1] queue key base   ARGV[2] lease token   ARGV[3] max jobs   ARGV[4] lease duration ms
-- Returns the leased records in queue order, or false when the queue is empty.
local want = tonumber(ARGV[3])
local recs = {}
for _, p in ipairs(rcall('ZREVRANGE', KEYS[5], 0, -1)) do
  local got = rcall('LPOP', ARGV[1] .. ':wait:' .. p, want - #recs)
  if got then
    for _, r in ipairs(got) do recs[#recs + 1] = r end
  end
  if #recs < want then rcall('ZREM', KEYS[5], p) end
  if #recs >= want then break end
end
if #recs < want then
  local got = rcall('LPOP', KEYS[1], want - #recs)
  if got then
    for _, r in ipairs(got) do recs[#recs + 1] = r end
  end
end
if #recs == 0 then return false end
local args = {}
for i, r in ipairs(recs) do
  args[2 * i - 1] = record_id(r)
  args[2 * i] = r
end
rcall('HSET', KEYS[3], unpack(args))
rcall('ZADD', KEYS[2], now_ms() + tonumber(ARGV[4]), ARGV[2])
-- Pass the wake-up on: another idle worker should take what is left.
if #recs == want and ready_count(ARGV[1]) > 0 then wake(KEYS[4]) end
return recs
