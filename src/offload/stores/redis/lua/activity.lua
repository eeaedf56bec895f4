-- KEYS: done
-- ARGV: job key prefix, since, bucket, scan cap, score to resume at|'', ids to skip there
-- Finished jobs from `since` on (by finished_at, the score of `done`), counted per bucket
-- number (floor(finished_at / bucket)) and state. The done set holds every finished state
-- together, so each job's state is read from its hash; at most `cap` jobs a call, so that a
-- busy hour never blocks the server for long. Jobs of equal score come in member order, so
-- a call resumes at its predecessor's last score, skipping those of that score it counted.
-- Returns {more, last score, skip, number, state, count, ...}.
local jp, bucket, cap = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local from, skip = ARGV[2], 0
if ARGV[5] ~= '' then
  from, skip = ARGV[5], tonumber(ARGV[6])
end
local flat = redis.call('ZRANGEBYSCORE', KEYS[1], from, '+inf', 'WITHSCORES', 'LIMIT', skip, cap)
local tally, order = {}, {}
local last, same = nil, skip
for i = 1, #flat, 2 do
  local score = flat[i + 1]
  local state = redis.call('HGET', jp .. flat[i], 'state')
  if state and FINISHED[state] then
    local slot = string.format('%d', math.floor(tonumber(score) / bucket)) .. ' ' .. state
    if not tally[slot] then
      tally[slot] = 0
      order[#order + 1] = slot
    end
    tally[slot] = tally[slot] + 1
  end
  if score == last or (last == nil and score == from) then
    same = same + 1
  else
    same = 1
  end
  last = score
end
local out = {#flat / 2 >= cap and '1' or '0', last or '', tostring(same)}
for _, slot in ipairs(order) do
  out[#out + 1] = slot
  out[#out + 1] = tally[slot]
end
return out
