-- KEYS: done, failed, cancelled
-- ARGV: job key prefix, ids...
-- Layout 2's step (migrate.py): files each given job of done that is failed or cancelled
-- into that state's set, with its score in done, as the scripts that finish jobs now do.
local done, failed, cancelled = KEYS[1], KEYS[2], KEYS[3]
local apart = {failed = failed, cancelled = cancelled}
local jp = ARGV[1]
for i = 2, #ARGV do
  local id = ARGV[i]
  local own = apart[redis.call('HGET', jp .. id, 'state') or '']
  local score = redis.call('ZSCORE', done, id)
  if own and score then redis.call('ZADD', own, score, id) end
end
return 0
