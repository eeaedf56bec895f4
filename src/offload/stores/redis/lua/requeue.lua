-- KEYS: ready, running, done, counts, wake, failed
-- ARGV: job key prefix, cap, error json when attempts are left, error json when exhausted
-- (both with the placeholder "\u0000W" for the worker id, JSON-escaped here).
-- Requeues (or fails) running jobs whose lease lapsed, the error joining the job's history
-- with the attempt that lost its lease. Returns how many.
local ready, running, done, counts, wakes = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local jp, cap, again, exhausted = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local now = now_s()
local nows = fmt(now)
local expired = redis.call('ZRANGEBYSCORE', running, '-inf', '(' .. nows, 'LIMIT', 0, cap)
local n, requeued = 0, 0
for _, id in ipairs(expired) do
  redis.call('ZREM', running, id)
  local k = jp .. id
  local cur = redis.call('HMGET', k, 'state', 'attempt', 'max_attempts', 'worker_id', 'priority',
    'limits', 'wf')
  if cur[1] == 'running' then
    local who = cjson.encode(cur[4] or '')
    who = string.sub(who, 2, #who - 1)
    local function fill(template)
      local s = string.gsub(template, '\\u0000W', function() return who end)
      return s
    end
    local function lapsed(err)
      local entry = cjson.decode(err)
      entry.attempt = tonumber(cur[2])
      add_history(k, entry)
      return err
    end
    redis.call('HDEL', k, 'lease_until')
    local lim = cur[6] and cjson.decode(cur[6])
    if tonumber(cur[2]) >= tonumber(cur[3]) then
      redis.call('HSET', k, 'state', 'failed', 'finished_at', nows, 'error',
        lapsed(fill(exhausted)))
      redis.call('ZADD', done, now, id)
      redis.call('ZADD', KEYS[6], now, id)
      move('running', 'failed')
      -- Out of attempts: a workflow's step fails what follows it (prelude.lua).
      if cur[7] then step_ended(jp, id, 'failed', '', now) end
    else
      redis.call('HSET', k, 'state', 'queued', 'run_at', nows, 'error', lapsed(fill(again)))
      redis.call('ZADD', ready, -tonumber(cur[5]), id)
      -- Queued again: counted again in its task's backlog (QueueCaps).
      if lim and lim.ct then redis.call('SADD', flow_key(jp, 'capped', lim.ct), id) end
      move('running', 'queued')
      requeued = requeued + 1
    end
    -- A job of a concurrency key gives its slot back (flow control).
    if lim then requeued = requeued + release_slots(jp, ready, id, lim) end
    n = n + 1
  end
end
flush_counts(counts)
wake(wakes, requeued)
return n
