-- KEYS: ready, delayed, running, counts
-- ARGV: job key prefix, limit, worker id, ttl
-- Promotes due delayed jobs, then takes up to `limit` ready jobs (priority desc, then id:
-- ids are time-ordered, so FIFO) and leases them. Returns {now, job fields, ...}.
-- A job with limits (its `limits` field) is weighed first (admit): one a limit holds back
-- stays queued, with no attempt used, and the claim goes on for the places it left. One of
-- a task with a backlog limit (`ct` in its limits) leaves its task's set of queued ids.
local ready, delayed, running, counts = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local jp, limit, worker, ttl = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local now = now_s()
promote(ready, delayed, jp, now, 1000)
local out = {fmt(now)}
if limit <= 0 then return out end
local lease_num = now + ttl
local lease, nows = fmt(lease_num), fmt(now)
local n = 0
local leased = {}
-- What this call learnt of the limits it met (jobs running per concurrency key, buckets
-- per rate key); made at the first limited job, so unlimited claims never build it.
local seen

-- Whether a limited job may start now; if not, it is put where it waits: a job held for a
-- slot in its key's held set (scored as in ready, so it comes back at its place), one with
-- no token in the delayed set at the time its token will be there. A job held for a token
-- takes it as it is held (the bucket goes below zero by one), and starts without being
-- weighed again when claimed then or a little later (`waiting` is still `rate_limit`; how
-- late: keeps_token in stores/_common.py, whose rule this repeats): so
-- no token is lost to the gaps between claims, and the jobs behind a bucket are each held
-- once rather than weighed again at every claim.
local function admit(id, k, lim, score, waiting, due)
  local ck, rk = lim.ck, lim.rk
  if ck then
    if seen.running[ck] == nil then
      local run = flow_key(jp, 'conc_running', ck)
      local count = redis.call('SCARD', run)
      if count >= lim.cl then
        -- Full: checked against the jobs themselves, so that a slot no script gave back
        -- (a job requeued by a process of an older offload, a job hash deleted by hand)
        -- comes back here rather than never.
        for _, other in ipairs(redis.call('SMEMBERS', run)) do
          if redis.call('HGET', jp .. other, 'state') ~= 'running' then
            redis.call('SREM', run, other)
            count = count - 1
          end
        end
      end
      seen.running[ck] = count
    end
    if seen.running[ck] >= lim.cl then
      redis.call('ZADD', flow_key(jp, 'conc_held', ck), score, id)
      redis.call('ZADD', string.sub(jp, 1, -5) .. 'held', score, id)
      redis.call('HSET', k, 'waiting', 'concurrency')
      if rk then redis.call('ZREM', flow_key(jp, 'rate_waiting', rk), id) end
      return false
    end
  end
  if rk and not (waiting == 'rate_limit' and now - due <= math.max(0.5 / lim.rate, 0.01)) then
    local b = seen.buckets[rk]
    if b == nil then
      local saved = redis.call('HMGET', flow_key(jp, 'bucket', rk), 'tokens', 'at')
      local tokens, at = lim.burst, now
      if saved[1] then tokens, at = tonumber(saved[1]), tonumber(saved[2]) end
      b = {tokens = math.min(lim.burst, tokens + (now - at) * lim.rate)}
      seen.buckets[rk] = b
    end
    local tokens = b.tokens
    b.tokens = tokens - 1
    if tokens < 1 then
      local due = now + (1 - tokens) / lim.rate
      redis.call('HSET', k, 'waiting', 'rate_limit', 'run_at', fmt(due))
      redis.call('ZADD', delayed, due, id)
      redis.call('ZADD', flow_key(jp, 'rate_waiting', rk), due, id)
      return false
    end
  end
  if rk then redis.call('ZREM', flow_key(jp, 'rate_waiting', rk), id) end
  if ck then
    seen.running[ck] = seen.running[ck] + 1
    redis.call('SADD', flow_key(jp, 'conc_running', ck), id)
  end
  redis.call('HDEL', k, 'waiting')
  return true
end

local want, put_back = limit, 0
while true do
  local popped = redis.call('ZPOPMIN', ready, want)
  local held = 0
  for i = 1, #popped, 2 do
    local id = popped[i]
    local k = jp .. id
    -- The job's row (prelude's row() order) and its limits in one read; the row is
    -- returned as the claim leaves it, so no second read: two commands a job.
    local cur = redis.call('HMGET', k, 'id', 'task', 'queue', 'args', 'kwargs', 'state',
      'priority', 'attempt', 'max_attempts', 'run_at', 'enqueued_at', 'timeout', 'started_at',
      'finished_at', 'lease_until', 'worker_id', 'key', 'result', 'error', 'progress', 'meta',
      'cancel_requested', 'limits', 'waiting')
    if cur[6] == 'queued' then
      local go, lim = true, nil
      if cur[23] then
        lim = cjson.decode(cur[23])
        if lim.ck or lim.rk then
          seen = seen or {running = {}, buckets = {}}
          go = admit(id, k, lim, popped[i + 1], cur[24], tonumber(cur[10]))
        end
      end
      if go then
        local attempt = tostring(tonumber(cur[8]) + 1)
        redis.call('HSET', k, 'state', 'running', 'attempt', attempt,
          'lease_until', lease, 'worker_id', worker, 'started_at', nows, 'cancel_requested', '0')
        -- A job of a task with a backlog limit leaves its task's queued ids (QueueCaps).
        if lim and lim.ct then redis.call('SREM', flow_key(jp, 'capped', lim.ct), id) end
        cur[24], cur[23] = nil, nil
        cur[6], cur[8], cur[13], cur[15], cur[16], cur[22] =
          'running', attempt, nows, lease, worker, '0'
        out[#out + 1] = cur
        n = n + 1
        leased[#leased + 1] = lease_num
        leased[#leased + 1] = id
      else
        held = held + 1
      end
    end
  end
  -- Bounded like promote, so a long line of held jobs never blocks the server for long:
  -- the next claim goes on from there.
  put_back = put_back + held
  if held == 0 or #popped < 2 * want or n >= limit or put_back >= 1000 then break end
  want = limit - n
end
if seen then
  for rk, b in pairs(seen.buckets) do
    redis.call('HSET', flow_key(jp, 'bucket', rk), 'tokens', fmt(b.tokens), 'at', nows)
  end
end
if n > 0 then
  -- One ZADD for the whole batch (a batch is at most a few hundred jobs, far below Lua's
  -- limit on unpacked values).
  redis.call('ZADD', running, unpack(leased))
  redis.call('HINCRBY', counts, 'queued', -n)
  redis.call('HINCRBY', counts, 'running', n)
end
return out
