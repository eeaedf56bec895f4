-- KEYS: ready, delayed, done, counts, job, cancelled, wake
-- ARGV: id, the prefix of the workers' cancel channels
-- queued -> cancelled now; running -> cancel requested, and told to its worker; a
-- workflow's step as step_cancel_by_hand says. Returns the job's fields, or nil.
local ready, delayed, done, counts, k = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, channel = ARGV[1], ARGV[2]
local cur = redis.call('HMGET', k, 'state', 'limits', 'waiting', 'wf')
local state = cur[1]
if not state then return false end
if cur[4] then -- a workflow's step (prelude.lua)
  step_cancel_by_hand(cur[4], string.sub(k, 1, #k - #id), id, now_s(), channel)
  return row(k)
end
if state == 'queued' then
  local now = now_s()
  redis.call('ZREM', ready, id)
  redis.call('ZREM', delayed, id)
  redis.call('HSET', k, 'state', 'cancelled', 'finished_at', fmt(now))
  redis.call('ZADD', done, now, id)
  redis.call('ZADD', KEYS[6], now, id)
  move('queued', 'cancelled')
  flush_counts(counts)
  if cur[2] then -- flow control: it leaves the line it waited in
    local jp = string.sub(k, 1, #k - #id)
    local lim = cjson.decode(cur[2])
    redis.call('HDEL', k, 'waiting')
    -- No longer queued: out of its task's backlog (QueueCaps).
    if lim.ct then redis.call('SREM', flow_key(jp, 'capped', lim.ct), id) end
    if lim.rk then redis.call('ZREM', flow_key(jp, 'rate_waiting', lim.rk), id) end
    if cur[3] == 'concurrency' then
      redis.call('ZREM', flow_key(jp, 'conc_held', lim.ck), id)
      redis.call('ZREM', string.sub(jp, 1, -5) .. 'held', id)
    else
      -- It may have been let out for a slot that now goes to the next one held.
      wake(KEYS[7], release_slots(jp, ready, id, lim))
    end
  end
elseif state == 'running' then
  ask_cancel(string.sub(k, 1, #k - #id), id, channel)
end
return row(k)
