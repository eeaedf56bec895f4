-- KEYS: ready, delayed, running, done, counts, wake, failed, cancelled
-- ARGV: job key prefix, then per outcome 7 fields:
--   id, worker id, attempt, kind, result|entry|'', error json|'', delay
-- The fifth field is the result of a success; of a failure or retry with an error, it is the
-- error's history entry as JSON (records.JobError.for_history), so a success's fields stay
-- as few as they were.
-- kind: succeeded, failed, cancelled, retry, requeue or release (see OutcomeKind)
-- Each outcome applies only while the reporter still holds the lease (fencing).
-- A step's end moves its workflow on in the same call (step_ended, prelude.lua).
-- Returns one 1/0 per outcome. Set changes are collected and applied once per call.
local ready, delayed, running, done, counts, wakes =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local jp = ARGV[1]
local now = now_s()
local nows = fmt(now)
local out = {}
local requeued, released = 0, 0
local unleased, finished = {}, {}
-- Failed and cancelled jobs also join their own set, so activity counts each state apart.
local apart = {failed = {}, cancelled = {}}
local apart_keys = {failed = KEYS[7], cancelled = KEYS[8]}
for i = 2, #ARGV, 7 do
  local id, worker, attempt, kind = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local result, err, delay = ARGV[i + 4], ARGV[i + 5], tonumber(ARGV[i + 6])
  local k = jp .. id
  local cur = redis.call('HMGET', k, 'state', 'worker_id', 'attempt', 'priority', 'max_attempts',
    'cancel_requested', 'limits', 'wf', 'error')
  if cur[1] == 'running' and cur[2] == worker and cur[3] == attempt then
    -- A job claimed ahead and never started whose cancellation was asked for ends now.
    if kind == 'release' and cur[6] == '1' then kind = 'cancelled' end
    unleased[#unleased + 1] = id
    -- A job of a concurrency key gives its slot back (flow control).
    local lim = cur[7] and cjson.decode(cur[7])
    if lim then released = released + release_slots(jp, ready, id, lim) end
    if FINISHED[kind] then
      -- The lease stays in the hash (a reader ignores it outside running: layout.record),
      -- and the error of an earlier attempt goes only if there is one: a success costs
      -- this call two commands, the read above and one write.
      if cur[9] and err == '' then redis.call('HDEL', k, 'error') end
      if kind == 'succeeded' then
        if result ~= '' then
          redis.call('HSET', k, 'state', kind, 'finished_at', nows, 'cancel_requested', '0',
            'result', result)
        else
          redis.call('HSET', k, 'state', kind, 'finished_at', nows, 'cancel_requested', '0')
        end
      elseif err ~= '' then
        redis.call('HSET', k, 'state', kind, 'finished_at', nows, 'cancel_requested', '0',
          'error', err)
        if result ~= '' then add_history(k, cjson.decode(result)) end
      else
        redis.call('HSET', k, 'state', kind, 'finished_at', nows, 'cancel_requested', '0')
      end
      finished[#finished + 1] = now
      finished[#finished + 1] = id
      local own = apart[kind]
      if own then
        own[#own + 1] = now
        own[#own + 1] = id
      end
      move('running', kind)
      -- A workflow's step moves its workflow on (prelude.lua); other jobs have no `wf`.
      if cur[8] then step_ended(jp, id, kind, result, now) end
    else
      local run_num = now
      if kind == 'retry' then
        run_num = now + delay
        if err ~= '' then redis.call('HSET', k, 'error', err) else redis.call('HDEL', k, 'error') end
        if result ~= '' then add_history(k, cjson.decode(result)) end
      elseif kind == 'release' then -- never started: undo the claim
        local back = tonumber(attempt) - 1
        redis.call('HSET', k, 'attempt', back)
        if back == 0 then redis.call('HDEL', k, 'started_at', 'worker_id') end
      else -- requeue: a shutdown must not cost the job its last attempt
        local need = tonumber(attempt) + 1
        if tonumber(cur[5]) < need then redis.call('HSET', k, 'max_attempts', need) end
      end
      redis.call('HDEL', k, 'lease_until')
      redis.call('HSET', k, 'state', 'queued', 'run_at', fmt(run_num), 'cancel_requested', '0')
      if run_num > now then
        redis.call('ZADD', delayed, run_num, id)
      else
        redis.call('ZADD', ready, -tonumber(cur[4]), id)
      end
      -- Queued again: counted again in its task's backlog (QueueCaps).
      if lim and lim.ct then redis.call('SADD', flow_key(jp, 'capped', lim.ct), id) end
      move('running', 'queued')
      requeued = requeued + 1
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
-- A batch is at most a few hundred outcomes, far below Lua's limit on unpacked values.
if #unleased > 0 then redis.call('ZREM', running, unpack(unleased)) end
if #finished > 0 then redis.call('ZADD', done, unpack(finished)) end
for state, members in pairs(apart) do
  if #members > 0 then redis.call('ZADD', apart_keys[state], unpack(members)) end
end
flush_counts(counts)
wake(wakes, requeued + released)
return out
