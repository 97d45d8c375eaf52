-- sched_remove: delete schedules (the named ones, or every one). Jobs already enqueued by
-- their past ticks stay.
-- KEYS[1] next-run zset
-- ARGV[1] definition key base (<prefix>:{schedules}:def:)   ARGV[2..] keys (none: every schedule)
-- Returns how many schedules were removed.
local keys = {}
if #ARGV > 1 then
  for i = 2, #ARGV do keys[#keys + 1] = ARGV[i] end
else
  keys = rcall('ZRANGE', KEYS[1], 0, -1)
end
local removed = 0
for _, key in ipairs(keys) do
  removed = removed + rcall('ZREM', KEYS[1], key)
  rcall('DEL', ARGV[1] .. key)
end
return removed
