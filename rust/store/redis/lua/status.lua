-- status: where one job is now, and what it left behind.
-- KEYS[1] jobs hash   KEYS[2] delayed zset   KEYS[3] failed zset   KEYS[4] active zset
-- KEYS[5] errors hash   KEYS[6] waiters hash (written only with ARGV[4] = '1')
-- ARGV[1] queue key base   ARGV[2] job id   ARGV[3] '1' if the id was chosen by the caller
-- ARGV[4] '1' to register one waiter for the result when the job has not finished yet
-- ARGV[5] '1' to add the job's last progress (`…:progress:<id>`, feedback.lua) and its
--   callback's record (`…:callback:<id>`, written by the worker that posted it)
-- Returns {state, record or false, result/error JSON or false} and, with ARGV[5], the
-- progress JSON or false and the callback record's fields and values (an empty list for none); state is one of waiting, delayed, active, completed, failed,
-- cancelled, unknown.
local base, id = ARGV[1], ARGV[2]

local function answer(state, rec, data)
  if ARGV[4] == '1' and state ~= 'completed' and state ~= 'failed' and state ~= 'cancelled' and state ~= 'unknown' then
    rcall('HINCRBY', KEYS[6], id, 1)
  end
  if ARGV[5] == '1' then
    return {state, rec or false, data or false, rcall('GET', base .. ':progress:' .. id) or false,
            rcall('HGETALL', base .. ':callback:' .. id)}
  end
  return {state, rec or false, data or false}
end

local rec = rcall('HGET', KEYS[1], id)
if rec then
  if rcall('ZSCORE', KEYS[3], id) then return answer('failed', rec, rcall('HGET', KEYS[5], id)) end
  -- A job waiting to run again keeps the error of its last attempt (ack.lua).
  if rcall('ZSCORE', KEYS[2], id) then return answer('delayed', rec, rcall('HGET', KEYS[5], id)) end
end
for _, token in ipairs(rcall('ZRANGE', KEYS[4], 0, -1)) do
  local r = rcall('HGET', base .. ':lease:' .. token, id)
  if r then return answer('active', r) end
end
local result = rcall('GET', base .. ':result:' .. id)
if ARGV[3] == '1' then
  local mark = rcall('GET', base .. ':id:' .. id)
  if mark == 'c' then return answer('completed', nil, result or 'null') end
  if mark == 'x' then return answer('cancelled') end
  if mark then return answer('waiting') end
  return answer('unknown')
end
-- generated id <producer:10>-<seq>
local producer, seq = string.sub(id, 1, 10), tonumber(string.sub(id, 12))
if rcall('GETBIT', base .. ':done:' .. producer, seq) == 1 then
  return answer('completed', nil, result or 'null')
end
if rcall('GETBIT', base .. ':cancelled:' .. producer, seq) == 1 then return answer('cancelled') end
local hwm = tonumber(rcall('GET', base .. ':hwm:' .. producer) or '-1') or -1
if seq <= hwm then return answer('waiting') end
return answer('unknown')
