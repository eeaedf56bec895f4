-- KEYS: running
-- ARGV: job key prefix, worker id, ttl, then id, attempt pairs
-- Returns {lost ids, ids whose cancellation was requested}.
local running = KEYS[1]
local jp, worker = ARGV[1], ARGV[2]
local lease_num = now_s() + tonumber(ARGV[3])
local lease = fmt(lease_num)
local lost, cancel = {}, {}
for i = 4, #ARGV, 2 do
  local id, attempt = ARGV[i], ARGV[i + 1]
  local k = jp .. id
  local cur = redis.call('HMGET', k, 'state', 'worker_id', 'attempt', 'cancel_requested')
  if cur[1] == 'running' and cur[2] == worker and cur[3] == attempt then
    redis.call('HSET', k, 'lease_until', lease)
    redis.call('ZADD', running, lease_num, id)
    if cur[4] == '1' then cancel[#cancel + 1] = id end
  else
    lost[#lost + 1] = id
  end
end
return {lost, cancel}
