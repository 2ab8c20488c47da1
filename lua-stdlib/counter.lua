#!lua name=counter
-- counter: bounded counters and sharded counters.
-- Every key a function touches is passed in KEYS; errors are returned as ERR replies.

local MAX_DIGITS = 15 -- keeps every number exact in a Lua double (< 2^53)

local function err(msg)
  return redis.error_reply('ERR ' .. msg)
end

-- Positive (or, with allow_zero, non-negative) decimal integer without sign or leading zeros.
local function parse_uint(s, allow_zero)
  if type(s) ~= 'string' or #s == 0 or #s > MAX_DIGITS then return nil end
  if s == '0' then
    if allow_zero then return 0 end
    return nil
  end
  if not string.match(s, '^[1-9]%d*$') then return nil end
  return tonumber(s)
end

-- Integer stored at a string key: 0 when missing, nil + error reply when not an integer.
local function read_int(key)
  local t = redis.call('TYPE', key)['ok']
  if t == 'none' then return 0 end
  if t ~= 'string' then return nil, err('key holds the wrong kind of value') end
  local v = redis.call('GET', key)
  if not string.match(v, '^-?%d+$') or #v > MAX_DIGITS + 1 then
    return nil, err('value at key is not an integer')
  end
  local n = tonumber(v)
  if math.abs(n) >= 1e15 then return nil, err('value at key is not an integer') end
  return n
end

local function counter_incr(keys, args)
  if #keys ~= 1 then return err('wrong number of keys') end
  if #args ~= 2 then return err('wrong number of arguments') end
  local incr = parse_uint(args[1], false)
  if not incr then return err('increment must be a positive integer') end
  local max = parse_uint(args[2], true)
  if not max then return err('maximum must be a non-negative integer') end
  local cur, e = read_int(keys[1])
  if not cur then return e end
  if cur + incr > max then return err('counter would exceed its maximum') end
  local value = redis.call('INCRBY', keys[1], incr)
  return {map = {value = value, max = max, remaining = max - value}}
end

local function shard_of(id, n)
  return tonumber(string.sub(redis.sha1hex(id), 1, 8), 16) % n + 1
end

local function counter_sharded_incr(keys, args)
  if #keys < 1 then return err('wrong number of keys') end
  if #args ~= 2 then return err('wrong number of arguments') end
  local id = args[1]
  if #id == 0 then return err('client id must not be empty') end
  local incr = parse_uint(args[2], false)
  if not incr then return err('increment must be a positive integer') end
  local shard = shard_of(id, #keys)
  local cur, e = read_int(keys[shard])
  if not cur then return e end
  if cur + incr >= 1e15 then return err('counter would overflow') end
  local value = redis.call('INCRBY', keys[shard], incr)
  return {map = {shard = shard, value = value, shards = #keys}}
end

local function counter_total(keys, args)
  if #keys < 1 then return err('wrong number of keys') end
  if #args ~= 0 then return err('wrong number of arguments') end
  local total = 0
  local values = {}
  for i = 1, #keys do
    local v, e = read_int(keys[i])
    if not v then return e end
    values[i] = v
    total = total + v
  end
  if math.abs(total) >= 2^53 then return err('total is too large') end
  return {map = {total = total, shards = #keys, values = values}}
end

redis.register_function{
  function_name = 'counter_incr',
  callback = counter_incr,
  description = 'KEYS: counter. ARGV: increment, maximum. Refuses to go past the maximum.',
}
redis.register_function{
  function_name = 'counter_sharded_incr',
  callback = counter_sharded_incr,
  description = 'KEYS: shard keys. ARGV: client id, increment. Increments the shard chosen by sha1(client id).',
}
redis.register_function{
  function_name = 'counter_total',
  callback = counter_total,
  flags = {'no-writes'},
  description = 'KEYS: shard keys. Sum of all shards.',
}
