-- KEYS: ready, delayed, running, counts
-- ARGV: job key prefix, limit, worker id, ttl
-- Promotes due delayed jobs, then takes up to `limit` ready jobs (priority desc, then id:
-- ids are time-ordered, so FIFO) and leases them. Returns {now, job fields, ...}.
local ready, delayed, running, counts = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local jp, limit, worker, ttl = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local now = now_s()
promote(ready, delayed, jp, now, 1000)
local out = {fmt(now)}
if limit <= 0 then return out end
local popped = redis.call('ZPOPMIN', ready, limit)
local lease_num = now + ttl
local lease, nows = fmt(lease_num), fmt(now)
local n = 0
local leased = {}
for i = 1, #popped, 2 do
  local id = popped[i]
  local k = jp .. id
  local cur = redis.call('HMGET', k, 'state', 'attempt')
  if cur[1] == 'queued' then
    redis.call('HSET', k, 'state', 'running', 'attempt', tonumber(cur[2]) + 1,
      'lease_until', lease, 'worker_id', worker, 'started_at', nows, 'cancel_requested', '0')
    out[#out + 1] = row(k)
    n = n + 1
    leased[#leased + 1] = lease_num
    leased[#leased + 1] = id
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
