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

-- A running job asked to stop: the flag its worker's heartbeat reads, and its id published
-- on the worker's own channel (`channel` .. worker id; stores/redis/cancels.py), so that the
-- worker hears of it now. A channel is no key: this works across a Cluster's slots too.
local function ask_cancel(jp, id, channel)
  redis.call('HSET', jp .. id, 'cancel_requested', '1')
  local worker = redis.call('HGET', jp .. id, 'worker_id')
  if worker then redis.call('PUBLISH', channel .. worker, id) end
end

-- Workflows (stores/redis/steps.py). A step's hash has `wf` (the key of its workflow's hash
-- of steps, id -> job key prefix), `waits` (inputs still to come), `takes`, `inputs` (how
-- many it takes), `feeds` (JSON [[job key prefix, id, slot], ...]: where its result goes),
-- `on_error` (JSON [job key prefix, id] of the workflow's handler) and, as its inputs come
-- in, `in:<slot>` (each one's JSON text, spliced as text: never decoded, so no number loses
-- digits). A waiting step is queued with `waiting` = inputs and sits in its queue's held
-- set (for listing and the queue's backlog), in neither ready nor delayed, so no claim sees
-- it. A step's neighbours may sit in other queues, whose keys the script then touches: one
-- server only (docs/redis.md).
local function splice(args, first)
  if string.match(args, '^%[%s*%]$') then return '[' .. first .. ']' end
  return '[' .. first .. ',' .. string.sub(args, 2)
end
local function step_inputs(k, takes, n, args)
  if (takes ~= 'one' and takes ~= 'all') or not n or n == 0 then return args end
  local names = {}
  for s = 0, n - 1 do names[#names + 1] = 'in:' .. s end
  local got = redis.call('HMGET', k, unpack(names))
  if not got[1] then return args end -- spliced already
  for i = 1, n do if not got[i] then got[i] = 'null' end end
  redis.call('HDEL', k, unpack(names))
  if takes == 'one' then return splice(args, got[1]) end
  return splice(args, '[' .. table.concat(got, ',') .. ']')
end
local function step_release(jp, id, now, first)
  local k = jp .. id
  local cur = redis.call('HMGET', k, 'state', 'waiting', 'takes', 'inputs', 'args', 'run_at',
    'priority')
  if cur[1] ~= 'queued' or cur[2] ~= 'inputs' then return end
  local args = cur[5]
  if first then args = splice(args, first) else args = step_inputs(k, cur[3], tonumber(cur[4]), args) end
  local base = string.sub(jp, 1, -5)
  local due = math.max(tonumber(cur[6]), now)
  redis.call('HSET', k, 'args', args, 'run_at', fmt(due))
  redis.call('HDEL', k, 'waiting')
  redis.call('ZREM', base .. 'held', id)
  if due > now then
    redis.call('ZADD', base .. 'delayed', due, id)
  else
    redis.call('ZADD', base .. 'ready', -tonumber(cur[7]), id)
  end
  wake(base .. 'wake', 1)
end
local function step_fill(jp, id, slot, value, now)
  local k = jp .. id
  local takes = redis.call('HGET', k, 'takes')
  if not takes then return end -- deleted by hand
  if takes ~= 'none' then redis.call('HSET', k, 'in:' .. slot, value) end
  if redis.call('HINCRBY', k, 'waits', -1) == 0 then step_release(jp, id, now) end
end
local function step_error(kind, message)
  return cjson.encode({type = kind, message = message, traceback = cjson.null})
end
-- A queued step (one still waiting only, with `waiting_only`) ends cancelled with `err`
-- (JSON, or false for none), out of every set that held it. Returns whether it did.
local function step_cancel(jp, id, err, now, waiting_only)
  local k = jp .. id
  local cur = redis.call('HMGET', k, 'state', 'waiting', 'limits')
  if cur[1] ~= 'queued' or (waiting_only and cur[2] ~= 'inputs') then return false end
  local base = string.sub(jp, 1, -5)
  redis.call('ZREM', base .. 'ready', id)
  redis.call('ZREM', base .. 'delayed', id)
  redis.call('ZREM', base .. 'held', id)
  redis.call('HSET', k, 'state', 'cancelled', 'finished_at', fmt(now))
  if err then redis.call('HSET', k, 'error', err) else redis.call('HDEL', k, 'error') end
  redis.call('HDEL', k, 'waiting')
  redis.call('ZADD', base .. 'done', now, id)
  redis.call('ZADD', base .. 'cancelled', now, id)
  redis.call('HINCRBY', base .. 'counts', 'queued', -1)
  redis.call('HINCRBY', base .. 'counts', 'cancelled', 1)
  if cur[3] then -- flow control: it leaves the line it waited in (as cancel.lua)
    local lim = cjson.decode(cur[3])
    if lim.ct then redis.call('SREM', flow_key(jp, 'capped', lim.ct), id) end
    if lim.rk then redis.call('ZREM', flow_key(jp, 'rate_waiting', lim.rk), id) end
    if cur[2] == 'concurrency' then
      redis.call('ZREM', flow_key(jp, 'conc_held', lim.ck), id)
    elseif cur[2] ~= 'inputs' then
      wake(base .. 'wake', release_slots(jp, base .. 'ready', id, lim))
    end
  end
  return true
end
-- The waiting steps after a step that failed or was cancelled, and theirs, end cancelled.
local function step_cascade(feeds, err, now)
  local frontier = cjson.decode(feeds)
  while #frontier > 0 do
    local after = {}
    for _, f in ipairs(frontier) do
      if step_cancel(f[1], f[2], err, now, true) then
        local more = redis.call('HGET', f[1] .. f[2], 'feeds')
        if more then
          for _, g in ipairs(cjson.decode(more)) do after[#after + 1] = g end
        end
      end
    end
    frontier = after
  end
end
local function step_cancelled_error(k, id)
  local task = redis.call('HGET', k, 'task') or ''
  return step_error('WorkflowStepCancelled',
    "not run: step '" .. task .. "' (job " .. id .. ') was cancelled')
end
-- A step just ended (succeeded, failed or cancelled): its workflow moves on.
local function step_ended(jp, id, kind, result, now)
  local k = jp .. id
  local s = redis.call('HMGET', k, 'feeds', 'on_error', 'task', 'error')
  if kind == 'succeeded' then
    if s[1] then
      local value = result ~= '' and result or 'null'
      for _, f in ipairs(cjson.decode(s[1])) do step_fill(f[1], f[2], f[3], value, now) end
    elseif s[2] then -- the last step: its handler will not be needed
      local h = cjson.decode(s[2])
      step_cancel(h[1], h[2], false, now, true)
    end
  elseif kind == 'failed' then
    if s[1] then
      local why = ''
      if s[4] then
        local e = cjson.decode(s[4])
        why = ': ' .. tostring(e.type) .. ': ' .. tostring(e.message)
      end
      step_cascade(s[1], step_error('WorkflowStepFailed',
        "not run: step '" .. (s[3] or '') .. "' (job " .. id .. ') failed' .. why), now)
    end
    if s[2] then
      local h = cjson.decode(s[2])
      step_release(h[1], h[2], now, cjson.encode(id))
    end
  elseif s[1] then
    step_cascade(s[1], step_cancelled_error(k, id), now)
  end
end
-- Store.cancel of a step: the workflow's id cancels every step not finished (running ones
-- are asked to stop), another step cancels itself and what comes after it.
local function step_cancel_by_hand(wfkey, jp, id, now, channel)
  local k = jp .. id
  if wfkey == string.sub(jp, 1, -5) .. 'wf:' .. id then
    local err = step_error('WorkflowStepCancelled', 'not run: workflow ' .. id .. ' was cancelled')
    local members = redis.call('HGETALL', wfkey)
    for i = 1, #members, 2 do
      local other, ojp = members[i], members[i + 1]
      local state = redis.call('HGET', ojp .. other, 'state')
      if state == 'running' then
        ask_cancel(ojp, other, channel)
      elseif state == 'queued' then
        step_cancel(ojp, other, other ~= id and err, now, false)
      end
    end
    return
  end
  if step_cancel(jp, id, false, now, false) then
    local feeds = redis.call('HGET', k, 'feeds')
    if feeds then step_cascade(feeds, step_cancelled_error(k, id), now) end
  elseif redis.call('HGET', k, 'state') == 'running' then
    ask_cancel(jp, id, channel)
  end
end
-- Store.retry of a step: every failed or cancelled step of its workflow goes back to
-- queued with a fresh attempt budget, runnable when its inputs are in, waiting if not.
local function step_resume(wfkey, now)
  local members = redis.call('HGETALL', wfkey)
  local nows = fmt(now)
  for i = 1, #members, 2 do
    local id, jp = members[i], members[i + 1]
    local k = jp .. id
    local cur = redis.call('HMGET', k, 'state', 'waits', 'takes', 'inputs', 'args', 'priority',
      'limits')
    local state = cur[1]
    if state == 'failed' or state == 'cancelled' then
      local base = string.sub(jp, 1, -5)
      redis.call('HSET', k, 'state', 'queued', 'attempt', '0', 'run_at', nows,
        'cancel_requested', '0')
      redis.call('HDEL', k, 'finished_at', 'error', 'lease_until')
      redis.call('ZREM', base .. 'done', id)
      redis.call('ZREM', base .. state, id)
      redis.call('HINCRBY', base .. 'counts', state, -1)
      redis.call('HINCRBY', base .. 'counts', 'queued', 1)
      if cur[7] then
        local lim = cjson.decode(cur[7])
        if lim.ct then redis.call('SADD', flow_key(jp, 'capped', lim.ct), id) end
      end
      if tonumber(cur[2] or '0') > 0 then
        redis.call('HSET', k, 'waiting', 'inputs')
        redis.call('ZADD', base .. 'held', -tonumber(cur[6]), id)
      else
        -- Inputs that came in while it was cancelled are spliced now.
        local args = step_inputs(k, cur[3], tonumber(cur[4]), cur[5])
        if args ~= cur[5] then redis.call('HSET', k, 'args', args) end
        redis.call('ZADD', base .. 'ready', -tonumber(cur[6]), id)
        wake(base .. 'wake', 1)
      end
    end
  end
end
