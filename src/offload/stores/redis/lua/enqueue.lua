-- KEYS: ready, delayed, all, counts, wake
-- ARGV: job key prefix, queue, then per job 12 fields:
--   id, task, args, kwargs, priority, max_attempts, run_at|'', delay, timeout|'', key|'', meta|'',
--   limits|'' (flow control's JSON, see prelude.lua)
-- Create-if-absent by id, so a retried call or a second holder of one idempotency key
-- cannot make a second job. Returns {now, r1, r2, ...}: ri is the run_at of a created job,
-- or the existing job's fields.
local ready, delayed, all, counts, wakes = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local jp, queue = ARGV[1], ARGV[2]
local now = now_s()
local nows = fmt(now)
local out = {nows}
local created = 0
for i = 3, #ARGV, 12 do
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
    -- Optional fields join the same HSET: one call per job however many are set.
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
    created = created + 1
    out[#out + 1] = run_at
  end
end
if created > 0 then
  redis.call('HINCRBY', counts, 'queued', created)
  wake(wakes, created)
end
return out
