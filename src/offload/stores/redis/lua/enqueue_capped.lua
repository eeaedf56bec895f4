-- KEYS: ready, delayed, all, counts, wake, held
-- ARGV: job key prefix, queue, write ('1'; '0' weighs only), then per job 14 fields:
--   enqueue.lua's 12, then max_queued|'' of its task, queue_max|'' of its queue
-- enqueue.lua for a call with backlog limits (QueueCaps, stores/redis/caps.py): the call is
-- weighed and written in one script, so producers of every process see one count and none
-- passes a limit. A job whose id is on record (its idempotency key named it) adds nothing
-- and is not counted. Returns enqueue.lua's reply, or, writing nothing,
-- {'!full', 'task'|'queue', name, limit, queued, adding}. The uncapped path stays in
-- enqueue.lua, whose work this must match job for job.
local ready, delayed, all, counts, wakes, held =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local jp, queue, write = ARGV[1], ARGV[2], ARGV[3] == '1'
local STEP, FIRST = 14, 4

-- Weigh: what the call adds per capped task and to the queue, fresh jobs only.
local fresh, adding, most, tasks = {}, {}, {}, {}
local queue_adding, queue_most = 0, nil
for i = FIRST, #ARGV, STEP do
  local id = ARGV[i]
  if not fresh[id] and redis.call('EXISTS', jp .. id) == 0 then
    fresh[id] = true
    local task, mq, qm = ARGV[i + 1], ARGV[i + 12], ARGV[i + 13]
    if mq ~= '' then
      if not adding[task] then
        adding[task] = 0
        tasks[#tasks + 1] = task
      end
      adding[task] = adding[task] + 1
      most[task] = tonumber(mq)
    end
    if qm ~= '' then
      queue_adding = queue_adding + 1
      queue_most = tonumber(qm)
    end
  end
end
for _, task in ipairs(tasks) do
  local set = flow_key(jp, 'capped', task)
  local queued = redis.call('SCARD', set)
  if queued + adding[task] > most[task] then
    -- Before refusing, a few members are checked against their jobs, so one left behind by
    -- a job hash deleted by hand leaves in time instead of holding a place for ever.
    local gone = {}
    for _, other in ipairs(redis.call('SRANDMEMBER', set, 16)) do
      if redis.call('HGET', jp .. other, 'state') ~= 'queued' then gone[#gone + 1] = other end
    end
    if #gone > 0 then queued = queued - redis.call('SREM', set, unpack(gone)) end
    if queued + adding[task] > most[task] then
      return {'!full', 'task', task, most[task], queued, adding[task]}
    end
  end
end
if queue_most then
  -- Every queued job is in one of these (held: waiting for a concurrency slot).
  local queued = redis.call('ZCARD', ready) + redis.call('ZCARD', delayed) +
    redis.call('ZCARD', held)
  if queued + queue_adding > queue_most then
    return {'!full', 'queue', queue, queue_most, queued, queue_adding}
  end
end
if not write then return {'ok'} end

-- Write: as enqueue.lua does, and each capped job joins its task's set of queued ids.
local now = now_s()
local nows = fmt(now)
local out = {nows}
local created = 0
for i = FIRST, #ARGV, STEP do
  local id = ARGV[i]
  local k = jp .. id
  if redis.call('EXISTS', k) == 1 then
    out[#out + 1] = row(k)
  else
    local run_at = ARGV[i + 6]
    local run_num
    if run_at == '' then
      local delay = tonumber(ARGV[i + 7])
      run_num = now + delay
      run_at = delay == 0 and nows or fmt(run_num)
    else
      run_num = tonumber(run_at)
    end
    local fields = {'id', id, 'task', ARGV[i + 1], 'queue', queue, 'args', ARGV[i + 2],
      'kwargs', ARGV[i + 3], 'state', 'queued', 'priority', ARGV[i + 4], 'attempt', '0',
      'max_attempts', ARGV[i + 5], 'run_at', run_at, 'enqueued_at', nows}
    if ARGV[i + 8] ~= '' then fields[#fields + 1] = 'timeout'; fields[#fields + 1] = ARGV[i + 8] end
    if ARGV[i + 9] ~= '' then fields[#fields + 1] = 'key'; fields[#fields + 1] = ARGV[i + 9] end
    if ARGV[i + 10] ~= '' then fields[#fields + 1] = 'meta'; fields[#fields + 1] = ARGV[i + 10] end
    if ARGV[i + 11] ~= '' then
      fields[#fields + 1] = 'limits'; fields[#fields + 1] = ARGV[i + 11]
    end
    redis.call('HSET', k, unpack(fields))
    if run_num > now then
      redis.call('ZADD', delayed, run_num, id)
    else
      redis.call('ZADD', ready, -tonumber(ARGV[i + 4]), id)
    end
    redis.call('ZADD', all, 0, id)
    if ARGV[i + 12] ~= '' then redis.call('SADD', flow_key(jp, 'capped', ARGV[i + 1]), id) end
    created = created + 1
    out[#out + 1] = run_at
  end
end
if created > 0 then
  redis.call('HINCRBY', counts, 'queued', created)
  wake(wakes, created)
end
return out
