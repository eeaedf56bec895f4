-- KEYS: ready, done, counts, wake, job, failed, cancelled
-- failed|cancelled -> queued with a fresh attempt budget. Returns the job's fields, the
-- current state (a string) when the transition is not allowed, or nil when missing.
local ready, done, counts, wakes, k = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id = ARGV[1]
local cur = redis.call('HMGET', k, 'state', 'priority', 'limits', 'wf')
local state = cur[1]
if not state then return false end
if state ~= 'failed' and state ~= 'cancelled' then return state end
if cur[4] then -- a workflow's step resumes the whole workflow (prelude.lua)
  step_resume(cur[4], now_s())
  return row(k)
end
redis.call('HSET', k, 'state', 'queued', 'attempt', '0', 'run_at', fmt(now_s()),
  'cancel_requested', '0')
redis.call('HDEL', k, 'finished_at', 'error', 'lease_until')
redis.call('ZREM', done, id)
if state == 'failed' then redis.call('ZREM', KEYS[6], id) else redis.call('ZREM', KEYS[7], id) end
redis.call('ZADD', ready, -tonumber(cur[2]), id)
-- Queued again: counted again in its task's backlog (QueueCaps).
if cur[3] then
  local lim = cjson.decode(cur[3])
  if lim.ct then redis.call('SADD', flow_key(string.sub(k, 1, #k - #id), 'capped', lim.ct), id) end
end
move(state, 'queued')
flush_counts(counts)
wake(wakes, 1)
return row(k)
