-- KEYS: the schedule's hash
-- ARGV: the new fired_until (seconds, as the client formatted it)
-- Moves fired_until forward only: a lagging scheduler never sets it back.
local current = redis.call('HGET', KEYS[1], 'fired_until')
if not current or tonumber(current) < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'fired_until', ARGV[1])
end
return 0
