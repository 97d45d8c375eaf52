-- sched_read: schedules with their next run, in next-run order (all of them, or the named ones).
-- KEYS[1] next-run zset
-- ARGV[1] definition key base (<prefix>:{schedules}:def:)   ARGV[2..] keys (none: every schedule)
-- The definition hashes share KEYS[1]'s hash tag, so they sit in its slot.
-- Returns {key, next run ms, {field, value, ...}, ...}.
local out = {}
local function add(key, score)
  local def = rcall('HGETALL', ARGV[1] .. key)
  if #def > 0 then
    out[#out + 1] = key
    out[#out + 1] = tonumber(score)
    out[#out + 1] = def
  end
end
if #ARGV > 1 then
  for i = 2, #ARGV do
    local score = rcall('ZSCORE', KEYS[1], ARGV[i])
    if score then add(ARGV[i], score) end
  end
else
  local all = rcall('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #all, 2 do add(all[i], all[i + 1]) end
end
return out
