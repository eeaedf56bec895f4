-- KEYS: idempotency key
-- ARGV: the holder it must still name ("queue NUL id")
-- Frees a key only while it still points at the purged job, never at a newer one.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
