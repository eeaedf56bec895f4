-- KEYS: ready, delayed
-- ARGV: job key prefix, n
-- For claims over several queues: promote due jobs, then show the first n ready entries
-- (id, score) so the caller can split its limit across queues by priority.
local now = now_s()
promote(KEYS[1], KEYS[2], ARGV[1], now, 1000)
return redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1, 'WITHSCORES')
