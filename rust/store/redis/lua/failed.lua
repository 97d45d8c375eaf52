-- failed: list, retry or purge jobs that failed for good.
-- KEYS[1] failed zset   KEYS[2] jobs hash   KEYS[3] errors hash   KEYS[4] wake
-- ARGV[1] 'list' | 'retry' | 'purge' | 'retry_id'   ARGV[2] queue key base
-- ARGV[3] max jobs (list), the job id (retry_id)
-- list returns {id, record, error JSON, failed at ms, ...}, oldest first; retry and purge
-- return a count; retry_id 1 if that job was failed and went back, else 0. A retried job starts again with its attempts reset to zero; what is not a
-- job record (failed as undecodable) stays failed: it would only fail again.
local op = ARGV[1]
if op == 'list' then
  local out = {}
  local ids = rcall('ZRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1, 'WITHSCORES')
  for i = 1, #ids, 2 do
    local id = ids[i]
    out[#out + 1] = id
    out[#out + 1] = rcall('HGET', KEYS[2], id) or false
    out[#out + 1] = rcall('HGET', KEYS[3], id) or false
    out[#out + 1] = ids[i + 1]
  end
  return out
end
local ids
if op == 'retry_id' then
  if not rcall('ZSCORE', KEYS[1], ARGV[3]) then return 0 end
  local rec = rcall('HGET', KEYS[2], ARGV[3])
  if not (rec and record_ok(rec)) then return 0 end
  ids, op = {ARGV[3]}, 'retry'
else
  ids = rcall('ZRANGE', KEYS[1], 0, -1)
end
local recs = {}
local done = 0
for _, id in ipairs(ids) do
  local rec = rcall('HGET', KEYS[2], id)
  local keep = op == 'retry' and not (rec and record_ok(rec))
  if not keep then
    if op == 'retry' then
      recs[#recs + 1] = with_attempt(rec, 0, RECORD)
    else
      rcall('DEL', ARGV[2] .. ':id:' .. id)
    end
    rcall('HDEL', KEYS[2], id)
    rcall('HDEL', KEYS[3], id)
    rcall('ZREM', KEYS[1], id)
    done = done + 1
  end
end
if #recs > 0 then
  push_ready(ARGV[2], recs, false)
  emit_records(ARGV[2], 'waiting', recs)
  wake(KEYS[4])
end
return done
