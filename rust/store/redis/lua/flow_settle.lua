-- flow_settle: a child of a flow node finished for good (completed, or failed with its
-- attempts used up). Counted once however often it is reported (a child run again after its
-- worker died reports again); the answer tells the caller what its parent must do, and is
-- the same on every repeat, so the caller's next step can be repeated too.
-- KEYS[1] flow hash (a field settled:<child> marks a child counted)   KEYS[2] the parent's
-- results hash
-- ARGV[1] child node   ARGV[2] parent node   ARGV[3] 'c' completed | 'f' failed
-- ARGV[4] child job id   ARGV[5] JSON to keep for the parent ({"name", "result"|"error"})
-- ARGV[6] policy of the child: fail_parent | ignore | continue_parent
-- Returns {'wait'} | {'release', parent spec} | {'fail', error JSON}.
local parent = ARGV[2]
if rcall('HSETNX', KEYS[1], 'settled:' .. ARGV[1], ARGV[3]) == 1 then
  local failed = ARGV[3] == 'f'
  if failed and ARGV[6] == 'fail_parent' then
    if rcall('HGET', KEYS[1], 'state:' .. parent) ~= 'failed' then
      rcall('HSET', KEYS[1], 'state:' .. parent, 'failed', 'error:' .. parent, ARGV[5])
    end
  else
    if not (failed and ARGV[6] == 'continue_parent') then
      rcall('HSET', KEYS[2], ARGV[4], ARGV[5])
    end
    rcall('HINCRBY', KEYS[1], 'pending:' .. parent, -1)
  end
end
local state = rcall('HGET', KEYS[1], 'state:' .. parent)
if state == 'failed' then
  return {'fail', rcall('HGET', KEYS[1], 'error:' .. parent)}
end
if tonumber(rcall('HGET', KEYS[1], 'pending:' .. parent) or '1') <= 0 then
  if state ~= 'released' then
    -- The child that released it enqueues it before its own acknowledgement: waiting for
    -- that child is how a caller knows the parent's job exists.
    rcall('HSET', KEYS[1], 'state:' .. parent, 'released', 'released_by:' .. parent, ARGV[1])
  end
  return {'release', rcall('HGET', KEYS[1], 'spec:' .. parent)}
end
return {'wait'}
