-- KEYS: done
-- ARGV: job key prefix, older_than, cap
-- Finished jobs past the cut-off, as flat {id, task, key|''}, so that their idempotency keys
-- can be released before the jobs go.
local jp = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2], 'LIMIT', 0,
  tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local cur = redis.call('HMGET', jp .. id, 'task', 'key')
  out[#out + 1] = id
  out[#out + 1] = cur[1] or ''
  out[#out + 1] = cur[2] or ''
end
return out
