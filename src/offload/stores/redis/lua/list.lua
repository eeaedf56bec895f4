-- KEYS: all
-- ARGV: job key prefix, upper bound ('+' or '(' .. id), scan cap, wanted, n states,
--   states..., n tasks, tasks...
-- Walks ids newest first from the bound, keeping those that match the filter, until
-- `wanted` matched or `cap` ids were examined. Returns {exhausted, frontier, job, ...}:
-- every id of this queue at or above `frontier` was examined.
local jp, bound, cap, wanted = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local states, tasks = {}, {}
local ns = tonumber(ARGV[5])
local any_state = ns == 0
for i = 1, ns do states[ARGV[5 + i]] = true end
local nt = tonumber(ARGV[6 + ns])
local any_task = nt == 0
for i = 1, nt do tasks[ARGV[6 + ns + i]] = true end
local ids = redis.call('ZREVRANGEBYLEX', KEYS[1], bound, '-', 'LIMIT', 0, cap)
local out = {'1', ''}
local found = 0
for _, id in ipairs(ids) do
  out[2] = id
  local k = jp .. id
  local cur = redis.call('HMGET', k, 'state', 'task')
  if cur[1] and (any_state or states[cur[1]]) and (any_task or tasks[cur[2]]) then
    out[#out + 1] = row(k)
    found = found + 1
    if found >= wanted then
      out[1] = '0'
      return out
    end
  end
end
if #ids >= cap then out[1] = '0' end
return out
