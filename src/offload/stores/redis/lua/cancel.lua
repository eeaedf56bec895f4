-- KEYS: ready, delayed, done, counts, job, cancelled
-- queued -> cancelled now; running -> cancel requested. Returns the job's fields, or nil.
local ready, delayed, done, counts, k = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id = ARGV[1]
local state = redis.call('HGET', k, 'state')
if not state then return false end
if state == 'queued' then
  local now = now_s()
  redis.call('ZREM', ready, id)
  redis.call('ZREM', delayed, id)
  redis.call('HSET', k, 'state', 'cancelled', 'finished_at', fmt(now))
  redis.call('ZADD', done, now, id)
  redis.call('ZADD', KEYS[6], now, id)
  move('queued', 'cancelled')
  flush_counts(counts)
elseif state == 'running' then
  redis.call('HSET', k, 'cancel_requested', '1')
end
return row(k)
