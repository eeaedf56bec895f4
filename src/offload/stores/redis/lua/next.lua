-- KEYS: ready, delayed
-- ARGV: job key prefix
-- When this queue's earliest queued job is due: a ready job's run_at (already due) or the
-- first delayed one. nil when nothing is queued.
local head = redis.call('ZRANGE', KEYS[1], 0, 0)
if #head > 0 then
  return redis.call('HGET', ARGV[1] .. head[1], 'run_at') or fmt(now_s())
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #first > 0 then return first[2] end
return false
