-- Helpers for the offload scripts. Each script is loaded with the paragraphs below that it
-- uses, directly or through another (scripts.load_scripts): one group of definitions per
-- paragraph, separated by blank lines.

-- Times are the server's clock, as float seconds, stored with microsecond precision.
local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function fmt(x)
  return string.format('%.6f', x)
end

-- Per-state count deltas, applied once per call so a batch costs one HINCRBY per state.
local delta = {}
local function move(from, to)
  if from then delta[from] = (delta[from] or 0) - 1 end
  if to then delta[to] = (delta[to] or 0) + 1 end
end
local function flush_counts(counts)
  for state, d in pairs(delta) do
    if d ~= 0 then redis.call('HINCRBY', counts, state, d) end
  end
end

-- Due delayed jobs move into the ready set; bounded so one call never blocks the server long.
local function promote(ready, delayed, jp, now, cap)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, cap)
  if #due == 0 then return 0 end
  for _, id in ipairs(due) do
    local p = redis.call('HGET', jp .. id, 'priority')
    if p then redis.call('ZADD', ready, -tonumber(p), id) end
  end
  redis.call('ZREM', delayed, unpack(due))
  return #due
end

-- One token per change, capped: a waiting worker wakes, the list never grows unbounded (it
-- is trimmed only once it is long, so the usual wake-up is one call).
local function wake(list, n)
  if n <= 0 then return end
  if n > 8 then n = 8 end
  local tokens = {}
  for i = 1, n do tokens[i] = '1' end
  if redis.call('LPUSH', list, unpack(tokens)) > 64 then
    redis.call('LTRIM', list, 0, 63)
  end
end

-- A job's error history (JobRecord.history) with one more entry, a decoded JSON object,
-- the oldest dropped past 10 (records.HISTORY_MAX). Only the error paths call it.
local function add_history(k, entry)
  local raw = redis.call('HGET', k, 'history')
  local past = {}
  if raw then past = cjson.decode(raw) end
  past[#past + 1] = entry
  while #past > 10 do table.remove(past, 1) end
  redis.call('HSET', k, 'history', cjson.encode(past))
end

local FINISHED = {succeeded = true, failed = true, cancelled = true}

-- A job as a fixed-order row (the client decodes by position; see layout.FIELDS). The
-- names are spelled out in the call, not kept in a table, so no table is built per call.
local function row(k)
  return redis.call('HMGET', k, 'id', 'task', 'queue', 'args', 'kwargs', 'state', 'priority',
    'attempt', 'max_attempts', 'run_at', 'enqueued_at', 'timeout', 'started_at', 'finished_at',
    'lease_until', 'worker_id', 'key', 'result', 'error', 'progress', 'meta', 'cancel_requested')
end

-- row, with why a queued job is held back (`waiting`, flow control): for the reads.
local function listed(k)
  return redis.call('HMGET', k, 'id', 'task', 'queue', 'args', 'kwargs', 'state', 'priority',
    'attempt', 'max_attempts', 'run_at', 'enqueued_at', 'timeout', 'started_at', 'finished_at',
    'lease_until', 'worker_id', 'key', 'result', 'error', 'progress', 'meta', 'cancel_requested',
    'waiting')
end

-- Flow control (stores/redis/flow.py). A limited job's hash has `limits`, JSON with ck and
-- cl (concurrency key and limit), rk, rate and burst (rate key, tokens a second, bucket
-- size). A limit's keys sit beside the queue's own, under its hash tag
-- (layout.QueueKeys.limit): built here from the job key prefix, '{...}:job:'.
local function flow_key(jp, kind, key)
  return string.sub(jp, 1, -5) .. kind .. ':' .. key
end

-- A job of a concurrency key stopped running, or left the line: as many of the key's held
-- jobs as it now has free slots go back to the ready set, at their place. Returns how many.
local function release_slots(jp, ready, id, lim)
  if not lim.ck then return 0 end
  local run = flow_key(jp, 'conc_running', lim.ck)
  redis.call('SREM', run, id)
  local free = lim.cl - redis.call('SCARD', run)
  if free <= 0 then return 0 end
  local back = redis.call('ZPOPMIN', flow_key(jp, 'conc_held', lim.ck), free)
  if #back == 0 then return 0 end
  local ids = {}
  for i = 1, #back, 2 do
    redis.call('ZADD', ready, back[i + 1], back[i])
    redis.call('HDEL', jp .. back[i], 'waiting')
    ids[#ids + 1] = back[i]
  end
  redis.call('ZREM', string.sub(jp, 1, -5) .. 'held', unpack(ids))
  return #ids
end
