-- expire: ends now the leases of a worker known to be dead (a pool's supervisor saw its
-- process exit), instead of when they time out: their deadlines become 0, so the next tick
-- reaps them like any expired lease (tick.lua: orphans back at the head of their queues, the
-- dead worker's idle slots and inbox gone). Idle slots go here too, so that nothing more is
-- handed to it meanwhile.
-- KEYS[1] active zset   KEYS[2] idle zset
-- ARGV[1] queue key base   ARGV[2] the worker id   ARGV[3] at most this many ids returned
-- Returns {leases ended, jobs they hold, {ids held, at most ARGV[3]}, {ids whose run had started}}:
-- the started ones are orphans that ran alone (start.lua), so one of them killed the worker.
local base, prefix, most = ARGV[1], ARGV[2] .. '.', tonumber(ARGV[3])
local leases, held, ids, started = 0, 0, {}, {}
for _, token in ipairs(rcall('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(token, 1, #prefix) == prefix then
    leases = leases + 1
    rcall('ZADD', KEYS[1], 0, token)
    local lease = base .. ':lease:' .. token
    held = held + rcall('HLEN', lease)
    if #ids < most then
      for _, id in ipairs(rcall('HKEYS', lease)) do
        if #ids >= most then break end
        ids[#ids + 1] = id
      end
    end
    for _, id in ipairs(rcall('HKEYS', base .. ':started:' .. token)) do started[#started + 1] = id end
  end
end
local mine = ARGV[2] .. '|'
for _, slot in ipairs(rcall('ZRANGE', KEYS[2], 0, -1)) do
  if string.sub(slot, 1, #mine) == mine then rcall('ZREM', KEYS[2], slot) end
end
return {leases, held, ids, started}
