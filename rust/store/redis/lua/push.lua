-- push: append ready records to a queue: a few jobs, or records with priorities (the bulk
-- path for records all of priority 0 is a raw RPUSH plus mark.lua in one MULTI/EXEC: see
-- store/redis/mod.rs); one job meeting an idle worker is handed to it directly.
-- KEYS[1] wait list   KEYS[2] wake list   KEYS[3] producer high-water-mark string
-- KEYS[4] the producer's sent-chunks bitmap (a placeholder key when there is no guard)
-- ARGV[1] queue key base ("fj:{q}")
-- ARGV[2] highest sequence number among the records (the producer's high-water mark)
-- ARGV[3] ttl of the high-water mark, seconds
-- ARGV[4] a bulk chunk's first sequence number (its guard, common.lua chunk_sent), or -1
-- ARGV[5..] packed job records (see record.rs), already carrying their ids
-- Returns the number of records pushed, or -1 when the guarded chunk was written already.
local base = ARGV[1]
if chunk_sent(KEYS[4], ARGV[4], ARGV[3]) then return -1 end
if events_on(base) then
  local recs = {}
  for i = 5, #ARGV do recs[#recs + 1] = ARGV[i] end
  emit_records(base, 'waiting', recs)
end
local slots = idle_slots(base)
-- One job of priority 0, a worker idle and nothing else ready: the job goes to that worker
-- at once, not through the ready list and back (three calls fewer, and a dispatch to an idle
-- worker waits for exactly this script).
local handed = false
if #ARGV == 5 and #slots > 0 and sbyte(ARGV[5], 6) == 0 and not any_ready(base) then
  local now = now_ms()
  if slot_live(slots[2], now) then handed = hand_over(base, slots[1], ARGV[5], now) end
end
if not handed then
  for i = 5, #ARGV do rcall('RPUSH', ready_key(base, ARGV[i]), ARGV[i]) end
end
raise_mark(KEYS[3], ARGV[2], ARGV[3])
if not handed then wake(KEYS[2], slots) end
return #ARGV - 4
