-- KEYS: the per-state index sets of one queue that hold the states asked (ready, delayed,
--   held, running, done, failed, cancelled: any of them, members are job ids)
-- ARGV: job key prefix, upper bound ('+' or '(' .. id), lower bound ('-' or '[' .. id),
--   wanted, n states, states..., n tasks, tasks...
-- list.lua's walk over the members of the given indexes instead of over every id: none of
-- them is ordered by id, so the members between the bounds are sorted here, newest first,
-- and the walk keeps those whose state and task match until `wanted` matched. Returns
-- list.lua's reply, {exhausted, frontier, job, ...}. The caller only passes indexes small
-- enough to read whole in one call.
local jp, upper, lower = ARGV[1], ARGV[2], ARGV[3]
local wanted = tonumber(ARGV[4])
local below = upper ~= '+' and string.sub(upper, 2) or nil
local from = lower ~= '-' and string.sub(lower, 2) or nil
local states, tasks = {}, {}
local ns = tonumber(ARGV[5])
for i = 1, ns do states[ARGV[5 + i]] = true end
local nt = tonumber(ARGV[6 + ns])
local any_task = nt == 0
for i = 1, nt do tasks[ARGV[6 + ns + i]] = true end
-- A job is in one index at a time, save that done also holds the failed and cancelled.
local seen, ids = {}, {}
for _, key in ipairs(KEYS) do
  for _, id in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    if not seen[id] and (not below or id < below) and (not from or id >= from) then
      seen[id] = true
      ids[#ids + 1] = id
    end
  end
end
-- Sorted ascending and walked from the top: the default order needs no Lua call per
-- comparison, which halves the time of the sort (10 ms for 25,000 ids).
table.sort(ids)
local out = {'1', ''}
local found = 0
for i = #ids, 1, -1 do
  local id = ids[i]
  local k = jp .. id
  local cur = redis.call('HMGET', k, 'state', 'task')
  if cur[1] and states[cur[1]] and (any_task or tasks[cur[2]]) then
    out[#out + 1] = listed(k)
    found = found + 1
    if found >= wanted then
      out[1], out[2] = '0', id
      return out
    end
  end
end
return out
