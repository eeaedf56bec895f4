-- KEYS: per queue of the call: ready, delayed, all, counts, wake, held
-- ARGV: n queues, then per queue: job key prefix, queue; then per job 21 fields:
--   queue number (1-based), enqueue.lua's 12, capped task|'' (QueueCaps), then the step's:
--   workflow hash key|'', its last step's job key, waits, takes, inputs, feeds|'',
--   on_error|'' (see prelude.lua)
-- enqueue.lua for a call that holds workflow steps: every job of the call in one script,
-- so a workflow is stored whole or not at all. A workflow whose last step is on record
-- (its idempotency key named it) adds nothing: its positions return that job, or their
-- own when a retried call had stored them. A call spanning queues touches each one's keys
-- (one server only, docs/redis.md). Returns enqueue.lua's reply.
local nq = tonumber(ARGV[1])
local STEP, FIRST = 21, 2 + 2 * nq
local now = now_s()
local nows = fmt(now)
local known = {}
for i = FIRST, #ARGV, STEP do
  local wf = ARGV[i + 14]
  if wf ~= '' and known[wf] == nil then
    known[wf] = redis.call('EXISTS', ARGV[i + 15]) == 1 and ARGV[i + 15]
  end
end
local out = {nows}
local created = {}
for i = FIRST, #ARGV, STEP do
  local q = tonumber(ARGV[i])
  local jp, queue = ARGV[2 * q], ARGV[2 * q + 1]
  local base = (q - 1) * 6
  local id = ARGV[i + 1]
  local k = jp .. id
  local wf = ARGV[i + 14]
  if redis.call('EXISTS', k) == 1 then
    out[#out + 1] = row(k)
  elseif wf ~= '' and known[wf] then
    out[#out + 1] = row(known[wf])
  else
    local run_at = ARGV[i + 7]
    local run_num
    if run_at == '' then
      local delay = tonumber(ARGV[i + 8])
      run_num = now + delay
      run_at = delay == 0 and nows or fmt(run_num)
    else
      run_num = tonumber(run_at)
    end
    local fields = {'id', id, 'task', ARGV[i + 2], 'queue', queue, 'args', ARGV[i + 3],
      'kwargs', ARGV[i + 4], 'state', 'queued', 'priority', ARGV[i + 5], 'attempt', '0',
      'max_attempts', ARGV[i + 6], 'run_at', run_at, 'enqueued_at', nows}
    local function opt(name, value)
      if value ~= '' then
        fields[#fields + 1] = name
        fields[#fields + 1] = value
      end
    end
    opt('timeout', ARGV[i + 9])
    opt('key', ARGV[i + 10])
    opt('meta', ARGV[i + 11])
    opt('limits', ARGV[i + 12])
    local waits = 0
    if wf ~= '' then
      waits = tonumber(ARGV[i + 16])
      opt('wf', wf)
      opt('waits', ARGV[i + 16])
      opt('takes', ARGV[i + 17])
      opt('inputs', ARGV[i + 18])
      opt('feeds', ARGV[i + 19])
      opt('on_error', ARGV[i + 20])
      if waits > 0 then opt('waiting', 'inputs') end
      redis.call('HSET', wf, id, jp)
    end
    redis.call('HSET', k, unpack(fields))
    if waits > 0 then
      redis.call('ZADD', KEYS[base + 6], -tonumber(ARGV[i + 5]), id)
    elseif run_num > now then
      redis.call('ZADD', KEYS[base + 2], run_num, id)
    else
      redis.call('ZADD', KEYS[base + 1], -tonumber(ARGV[i + 5]), id)
    end
    redis.call('ZADD', KEYS[base + 3], 0, id)
    if ARGV[i + 13] ~= '' then redis.call('SADD', flow_key(jp, 'capped', ARGV[i + 13]), id) end
    created[q] = (created[q] or 0) + 1
    out[#out + 1] = run_at
  end
end
for q, n in pairs(created) do
  local base = (q - 1) * 6
  redis.call('HINCRBY', KEYS[base + 4], 'queued', n)
  wake(KEYS[base + 5], n)
end
return out
