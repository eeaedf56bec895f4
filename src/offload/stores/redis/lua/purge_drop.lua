-- KEYS: done, all, counts, failed, cancelled
-- ARGV: job key prefix, older_than, ids...
-- Deletes the given jobs that are still finished before the cut-off. Returns how many.
local done, all, counts = KEYS[1], KEYS[2], KEYS[3]
local apart = {failed = KEYS[4], cancelled = KEYS[5]}
local jp, cutoff = ARGV[1], tonumber(ARGV[2])
local n = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local k = jp .. id
  local cur = redis.call('HMGET', k, 'state', 'finished_at', 'wf')
  if cur[1] and FINISHED[cur[1]] and cur[2] and tonumber(cur[2]) < cutoff then
    redis.call('DEL', k)
    -- A workflow's step leaves its workflow's hash (gone with its last member).
    if cur[3] then redis.call('HDEL', cur[3], id) end
    redis.call('ZREM', done, id)
    if apart[cur[1]] then redis.call('ZREM', apart[cur[1]], id) end
    redis.call('ZREM', all, id)
    move(cur[1], nil)
    n = n + 1
  elseif not cur[1] then
    redis.call('ZREM', done, id)
    redis.call('ZREM', apart.failed, id)
    redis.call('ZREM', apart.cancelled, id)
    redis.call('ZREM', all, id)
  end
end
flush_counts(counts)
return n
