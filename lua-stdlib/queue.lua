#!lua name=queue
-- Priority queue with claim / visibility timeout / ack.
-- Every function takes the same four KEYS:
--   KEYS[1] pending   sorted set  member = item, score = priority
--   KEYS[2] inflight  sorted set  member = item, score = visibility deadline (ms)
--   KEYS[3] priority  hash        item -> priority, for items in flight
--   KEYS[4] stats     hash        pushed, popped, claimed, acked, requeued
-- Replies are RESP3 maps (flat arrays in RESP2).
-- Documentation: lua-stdlib/README.md (section queue)

local function err(msg)
  return redis.error_reply('ERR ' .. msg)
end

local function fmt(n)
  return string.format('%.0f', n)
end

local function posint(s)
  if type(s) ~= 'string' or #s > 15 or not string.find(s, '^%d+$') then return nil end
  local n = tonumber(s)
  if n < 1 then return nil end
  return n
end

local function nonneg(s)
  if type(s) ~= 'string' or #s > 15 or not string.find(s, '^%d+$') then return nil end
  return tonumber(s)
end

-- A priority: an integer, optionally negative, |p| < 2^53.
local function priority(s)
  if type(s) ~= 'string' or #s > 16 or not string.find(s, '^%-?%d+$') then return nil end
  local n = tonumber(s)
  if n == nil or n >= 9007199254740992 or n <= -9007199254740992 then return nil end
  return n
end

local function now_ms(args, i)
  if args[i] ~= nil then
    return nonneg(args[i])
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function key_type(key)
  local t = redis.call('TYPE', key)
  return t.ok or t
end

-- Shared validation of the four keys. Returns an error reply or nil.
local function check_keys(keys)
  if #keys ~= 4 then return err('queue needs exactly four keys: pending, inflight, priority, stats') end
  local want = {'zset', 'zset', 'hash', 'hash'}
  local names = {'pending', 'inflight', 'priority', 'stats'}
  for i = 1, 4 do
    for j = 1, i - 1 do
      if keys[i] == keys[j] then return err('queue keys must be distinct') end
    end
    local t = key_type(keys[i])
    if t ~= 'none' and t ~= want[i] then
      return err(names[i] .. ' key holds the wrong type')
    end
  end
  return nil
end

-- Move in-flight items whose deadline is <= now back to pending. Returns the count.
local function requeue_expired(keys, now)
  local expired = redis.call('ZRANGEBYSCORE', keys[2], '-inf', fmt(now))
  for _, item in ipairs(expired) do
    local p = redis.call('HGET', keys[3], item)
    if not p then p = '0' end
    redis.call('ZADD', keys[1], p, item)
    redis.call('HDEL', keys[3], item)
    redis.call('ZREM', keys[2], item)
  end
  if #expired > 0 then
    redis.call('HINCRBY', keys[4], 'requeued', #expired)
  end
  return #expired
end

local function push(keys, args)
  local e = check_keys(keys)
  if e then return e end
  if #args ~= 2 then return err('wrong number of arguments') end
  local item = args[1]
  local p = priority(args[2])
  if p == nil then return err('priority must be an integer') end
  if redis.call('ZSCORE', keys[2], item) then return err('item is in flight') end
  local added = redis.call('ZADD', keys[1], fmt(p), item)
  redis.call('HINCRBY', keys[4], 'pushed', 1)
  return {map = {added = added, length = redis.call('ZCARD', keys[1])}}
end

local function take(keys, args, claim)
  local e = check_keys(keys)
  if e then return e end
  local count, vis, now
  if claim then
    if #args < 2 or #args > 3 then return err('wrong number of arguments') end
    count = posint(args[1])
    if count == nil then return err('count must be a positive integer') end
    vis = posint(args[2])
    if vis == nil then return err('visibility timeout must be a positive integer (ms)') end
    now = now_ms(args, 3)
  else
    if #args < 1 or #args > 2 then return err('wrong number of arguments') end
    count = posint(args[1])
    if count == nil then return err('count must be a positive integer') end
    now = now_ms(args, 2)
  end
  if now == nil then return err('now must be a non-negative integer') end

  local requeued = requeue_expired(keys, now)
  local popped = redis.call('ZPOPMAX', keys[1], count)
  local items, prios = {}, {}
  for i = 1, #popped, 2 do
    items[#items + 1] = popped[i]
    prios[#prios + 1] = tonumber(popped[i + 1])
  end
  local reply = {items = items, requeued = requeued}
  if claim then
    local deadline = now + vis
    for i, item in ipairs(items) do
      redis.call('ZADD', keys[2], fmt(deadline), item)
      redis.call('HSET', keys[3], item, fmt(prios[i]))
    end
    if #items > 0 then redis.call('HINCRBY', keys[4], 'claimed', #items) end
    reply.deadline_ms = deadline
  else
    if #items > 0 then redis.call('HINCRBY', keys[4], 'popped', #items) end
  end
  reply.priorities = prios
  reply.length = redis.call('ZCARD', keys[1])
  return {map = reply}
end

local function pop(keys, args) return take(keys, args, false) end
local function claim(keys, args) return take(keys, args, true) end

local function ack(keys, args)
  local e = check_keys(keys)
  if e then return e end
  if #args < 1 then return err('wrong number of arguments') end
  local acked = 0
  for _, item in ipairs(args) do
    if redis.call('ZREM', keys[2], item) == 1 then
      redis.call('HDEL', keys[3], item)
      acked = acked + 1
    end
  end
  if acked > 0 then redis.call('HINCRBY', keys[4], 'acked', acked) end
  return {map = {acked = acked, missing = #args - acked}}
end

local function stats(keys, args)
  local e = check_keys(keys)
  if e then return e end
  if #args > 1 then return err('wrong number of arguments') end
  local now = now_ms(args, 1)
  if now == nil then return err('now must be a non-negative integer') end
  local s = redis.call('HMGET', keys[4], 'pushed', 'popped', 'claimed', 'acked', 'requeued')
  return {map = {
    length = redis.call('ZCARD', keys[1]),
    in_flight = redis.call('ZCARD', keys[2]),
    expired = redis.call('ZCOUNT', keys[2], '-inf', fmt(now)),
    pushed = tonumber(s[1]) or 0,
    popped = tonumber(s[2]) or 0,
    claimed = tonumber(s[3]) or 0,
    acked = tonumber(s[4]) or 0,
    requeued = tonumber(s[5]) or 0,
  }}
end

redis.register_function{
  function_name = 'queue_push',
  callback = push,
  description = 'push an item with a priority: KEYS pending, inflight, priority, stats; ARGV item, priority',
}
redis.register_function{
  function_name = 'queue_pop',
  callback = pop,
  description = 'pop up to N items, highest priority first: ARGV count [, now_ms]',
}
redis.register_function{
  function_name = 'queue_claim',
  callback = claim,
  description = 'claim up to N items with a visibility timeout: ARGV count, visibility_ms [, now_ms]',
}
redis.register_function{
  function_name = 'queue_ack',
  callback = ack,
  description = 'acknowledge claimed items: ARGV item [item ...]',
}
redis.register_function{
  function_name = 'queue_stats',
  callback = stats,
  flags = {'no-writes'},
  description = 'queue length, in-flight count and totals: ARGV [now_ms]',
}
