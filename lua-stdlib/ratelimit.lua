#!lua name=ratelimit
-- Rate limiters: token bucket and sliding window (sorted-set log).
-- Every key is passed in KEYS; replies are RESP3 maps (flat arrays in RESP2).
-- Documentation: lua-stdlib/README.md (section ratelimit)

local function err(msg)
  return redis.error_reply('ERR ' .. msg)
end

-- A positive integer (decimal digits only, at most 15 of them), or nil.
local function posint(s)
  if type(s) ~= 'string' or #s > 15 or not string.find(s, '^%d+$') then return nil end
  local n = tonumber(s)
  if n < 1 then return nil end
  return n
end

-- A non-negative integer, or nil.
local function nonneg(s)
  if type(s) ~= 'string' or #s > 15 or not string.find(s, '^%d+$') then return nil end
  return tonumber(s)
end

-- A positive decimal number (e.g. "10", "0.5", ".25"), at most 1e9, or nil.
local function posnum(s)
  if type(s) ~= 'string' or #s > 32 then return nil end
  if not (string.find(s, '^%d+%.?%d*$') or string.find(s, '^%.%d+$')) then return nil end
  local n = tonumber(s)
  if n == nil or n <= 0 or n > 1e9 then return nil end
  return n
end

local function fmt(n)
  return string.format('%.0f', n)
end

-- Current time in ms: the documented test override ARGV[i], else the server clock.
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

-- Token bucket state at time `now` (refilled, not stored).
local function bucket_state(key, capacity, rate, now)
  local h = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens, ts = tonumber(h[1]), tonumber(h[2])
  if tokens == nil or ts == nil then
    return capacity, now
  end
  -- A clock that goes back refills nothing, and the stored time never goes back
  -- (otherwise the same interval would be refilled twice).
  if now <= ts then
    if tokens > capacity then tokens = capacity end
    return tokens, ts
  end
  tokens = tokens + (now - ts) * rate / 1000
  if tokens > capacity then tokens = capacity end
  return tokens, now
end

local function check_bucket_args(keys, args)
  if #keys ~= 1 then return nil, err('ratelimit needs exactly one key') end
  local capacity = posint(args[1])
  if capacity == nil then return nil, err('capacity must be a positive integer') end
  local rate = posnum(args[2])
  if rate == nil then return nil, err('refill rate must be a positive number') end
  return {capacity = capacity, rate = rate}
end

local function token_bucket(keys, args)
  if #args < 3 or #args > 4 then return err('wrong number of arguments') end
  local p, e = check_bucket_args(keys, args)
  if p == nil then return e end
  local cost = posint(args[3])
  if cost == nil then return err('cost must be a positive integer') end
  if cost > p.capacity then return err('cost exceeds capacity') end
  local now = now_ms(args, 4)
  if now == nil then return err('now must be a non-negative integer') end
  local t = key_type(keys[1])
  if t ~= 'none' and t ~= 'hash' then return err('key is not a token bucket') end

  local tokens, ts = bucket_state(keys[1], p.capacity, p.rate, now)
  local allowed, retry = 0, 0
  if tokens >= cost then
    allowed = 1
    tokens = tokens - cost
  else
    retry = math.ceil((cost - tokens) * 1000 / p.rate)
  end
  local full_after = math.ceil((p.capacity - tokens) * 1000 / p.rate)
  redis.call('HSET', keys[1], 'tokens', string.format('%.17g', tokens), 'ts', fmt(ts))
  redis.call('PEXPIRE', keys[1], fmt(math.max(full_after, 1)))
  return {map = {
    allowed = allowed,
    remaining = math.floor(tokens),
    retry_after_ms = retry,
    reset_after_ms = full_after,
    limit = p.capacity,
  }}
end

-- Sliding window: entries scored by time; an entry counts while score > now - window.
local function window_used(key, window, now)
  -- Read-only view: count entries still inside the window.
  return redis.call('ZCOUNT', key, '(' .. fmt(now - window), '+inf')
end

local function window_retry(key, window, now, need)
  -- `need` entries must leave the window; the need-th oldest inside it decides.
  local r = redis.call('ZRANGEBYSCORE', key, '(' .. fmt(now - window), '+inf',
    'WITHSCORES', 'LIMIT', need - 1, 1)
  if r[2] == nil then return 0 end
  local wait = tonumber(r[2]) + window - now
  if wait < 0 then wait = 0 end
  return wait
end

local function window_reset(key, window, now)
  -- The newest entry decides when the window is empty again.
  local last = redis.call('ZREVRANGEBYSCORE', key, '+inf', '(' .. fmt(now - window),
    'WITHSCORES', 'LIMIT', 0, 1)
  if last[2] == nil then return 0 end
  local wait = tonumber(last[2]) + window - now
  if wait < 0 then wait = 0 end
  return wait
end

local function check_window_args(keys, args)
  if #keys ~= 1 then return nil, err('ratelimit needs exactly one key') end
  local limit = posint(args[1])
  if limit == nil then return nil, err('limit must be a positive integer') end
  local window = posint(args[2])
  if window == nil then return nil, err('window must be a positive integer (ms)') end
  return {limit = limit, window = window}
end

local function sliding_window(keys, args)
  if #args < 3 or #args > 4 then return err('wrong number of arguments') end
  local p, e = check_window_args(keys, args)
  if p == nil then return e end
  local cost = posint(args[3])
  if cost == nil then return err('cost must be a positive integer') end
  if cost > p.limit then return err('cost exceeds limit') end
  local now = now_ms(args, 4)
  if now == nil then return err('now must be a non-negative integer') end
  local key = keys[1]
  local t = key_type(key)
  if t ~= 'none' and t ~= 'zset' then return err('key is not a sliding window') end

  -- Entries at or before now - window have left the window.
  redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now - p.window))
  local used = redis.call('ZCARD', key)
  local allowed, retry = 0, 0
  if used + cost <= p.limit then
    allowed = 1
    -- Members are unique per ms: "<now>:<n>", n counting entries already at this ms.
    local n = redis.call('ZCOUNT', key, fmt(now), fmt(now))
    for i = 0, cost - 1 do
      redis.call('ZADD', key, fmt(now), fmt(now) .. ':' .. fmt(n + i))
    end
    used = used + cost
  else
    retry = window_retry(key, p.window, now, used + cost - p.limit)
  end
  local reset = window_reset(key, p.window, now)
  if used > 0 then
    redis.call('PEXPIRE', key, fmt(math.max(reset, 1)))
  end
  return {map = {
    allowed = allowed,
    remaining = p.limit - used,
    retry_after_ms = retry,
    reset_after_ms = reset,
    limit = p.limit,
  }}
end

local function status(keys, args)
  if #args < 3 or #args > 4 then return err('wrong number of arguments') end
  local kind = args[1]
  local rest = {args[2], args[3]}
  if kind == 'token_bucket' then
    local p, e = check_bucket_args(keys, rest)
    if p == nil then return e end
    local now = now_ms(args, 4)
    if now == nil then return err('now must be a non-negative integer') end
    local t = key_type(keys[1])
    if t ~= 'none' and t ~= 'hash' then return err('key is not a token bucket') end
    local tokens = bucket_state(keys[1], p.capacity, p.rate, now)
    return {map = {
      type = 'token_bucket',
      remaining = math.floor(tokens),
      used = p.capacity - math.floor(tokens),
      retry_after_ms = tokens >= 1 and 0 or math.ceil((1 - tokens) * 1000 / p.rate),
      reset_after_ms = math.ceil((p.capacity - tokens) * 1000 / p.rate),
      limit = p.capacity,
    }}
  elseif kind == 'sliding_window' then
    local p, e = check_window_args(keys, rest)
    if p == nil then return e end
    local now = now_ms(args, 4)
    if now == nil then return err('now must be a non-negative integer') end
    local t = key_type(keys[1])
    if t ~= 'none' and t ~= 'zset' then return err('key is not a sliding window') end
    local used = window_used(keys[1], p.window, now)
    local remaining = p.limit - used
    if remaining < 0 then remaining = 0 end
    local retry = 0
    if remaining == 0 then retry = window_retry(keys[1], p.window, now, used + 1 - p.limit) end
    return {map = {
      type = 'sliding_window',
      remaining = remaining,
      used = used,
      retry_after_ms = retry,
      reset_after_ms = window_reset(keys[1], p.window, now),
      limit = p.limit,
    }}
  else
    return err('type must be token_bucket or sliding_window')
  end
end

redis.register_function{
  function_name = 'ratelimit_token_bucket',
  callback = token_bucket,
  description = 'token bucket: KEYS[1]=bucket; ARGV capacity, refill_per_sec, cost [, now_ms]',
}
redis.register_function{
  function_name = 'ratelimit_sliding_window',
  callback = sliding_window,
  description = 'sliding window log: KEYS[1]=zset; ARGV limit, window_ms, cost [, now_ms]',
}
redis.register_function{
  function_name = 'ratelimit_status',
  callback = status,
  flags = {'no-writes'},
  description = 'limiter state without consuming: KEYS[1]; ARGV type, limit, rate|window_ms [, now_ms]',
}
