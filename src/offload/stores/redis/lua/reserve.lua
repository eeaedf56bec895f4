-- KEYS: idempotency key
-- ARGV: this job as its holder ("queue NUL id")
-- Takes the key if it is free; returns the current holder when it is not (nil when taken).
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'GET')
