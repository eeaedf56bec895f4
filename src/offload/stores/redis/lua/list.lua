-- KEYS: all
-- ARGV: job key prefix, upper bound ('+' or '(' .. id), lower bound ('-' or '[' .. id),
--   scan cap, wanted, n states, states..., n tasks, tasks...
-- Walks ids newest first from the upper bound down to the lower one, keeping those that
-- match the filter, until `wanted` matched or `cap` ids were examined. Returns
-- {exhausted, frontier, job, ...}: every id of this queue at or above `frontier` was
-- examined; exhausted once the walk reached the lower bound, so a time bound closes the
-- queue's scan there instead of at the bottom of the set.
local jp, upper, lower = ARGV[1], ARGV[2], ARGV[3]
local cap, wanted = tonumber(ARGV[4]), tonumber(ARGV[5])
local states, tasks = {}, {}
local ns = tonumber(ARGV[6])
local any_state = ns == 0
for i = 1, ns do states[ARGV[6 + i]] = true end
local nt = tonumber(ARGV[7 + ns])
local any_task = nt == 0
for i = 1, nt do tasks[ARGV[7 + ns + i]] = true end
local ids = redis.call('ZREVRANGEBYLEX', KEYS[1], upper, lower, 'LIMIT', 0, cap)
local out = {'1', ''}
local found = 0
for _, id in ipairs(ids) do
  out[2] = id
  local k = jp .. id
  local cur = redis.call('HMGET', k, 'state', 'task')
  if cur[1] and (any_state or states[cur[1]]) and (any_task or tasks[cur[2]]) then
    out[#out + 1] = listed(k)
    found = found + 1
    if found >= wanted then
      out[1] = '0'
      return out
    end
  end
end
if #ids >= cap then out[1] = '0' end
return out
