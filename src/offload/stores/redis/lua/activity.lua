-- KEYS: done, failed, cancelled
-- ARGV: from (a score, inclusive), bucket, cap
-- Finished jobs per bucket number (floor(finished_at / bucket)), from `from` on: each
-- bucket that holds any is found by the first finished job at or after the last one's end,
-- then counted with one ZCOUNT per set; succeeded is done less failed and cancelled (both
-- also in done). At most `cap` buckets a call, so that a long range never blocks the server
-- for long. Returns {more, from for the next call, number, succeeded, failed, cancelled, ...}.
local done, failed, cancelled = KEYS[1], KEYS[2], KEYS[3]
local lo, bucket, cap = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {'0', ''}
for _ = 1, cap do
  local first = redis.call('ZRANGEBYSCORE', done, lo, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #first == 0 then return out end
  local score = tonumber(first[2])
  local number = math.floor(score / bucket)
  local hi = (number + 1) * bucket
  -- A score a rounding below a bucket's end may divide into the next bucket: count it there.
  if hi <= score then
    number = number + 1
    hi = (number + 1) * bucket
  end
  local below = '(' .. string.format('%.17g', hi)
  local all = redis.call('ZCOUNT', done, lo, below)
  local f = redis.call('ZCOUNT', failed, lo, below)
  local c = redis.call('ZCOUNT', cancelled, lo, below)
  out[#out + 1] = string.format('%d', number)
  out[#out + 1] = all - f - c
  out[#out + 1] = f
  out[#out + 1] = c
  lo = string.format('%.17g', hi)
end
out[1], out[2] = '1', lo
return out
