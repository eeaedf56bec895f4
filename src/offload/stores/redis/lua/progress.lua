-- KEYS: job
-- ARGV: worker id, attempt, progress json
local cur = redis.call('HMGET', KEYS[1], 'state', 'worker_id', 'attempt')
if cur[1] == 'running' and cur[2] == ARGV[1] and cur[3] == ARGV[2] then
  redis.call('HSET', KEYS[1], 'progress', ARGV[3])
  return 1
end
return 0
