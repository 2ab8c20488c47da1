#!lua name=lock
-- lock: a reentrant distributed lock with fencing tokens.
--
-- A lock is a hash (KEYS[1]) with the fields owner, holds and fence, and a TTL in
-- milliseconds. Fencing tokens come from a counter (KEYS[2] of lock_acquire) that only
-- ever grows, so a token handed out later is always larger. Every key is passed in
-- KEYS: give the lock key and the fence key one hash tag in Redis Cluster.
-- Documentation: lua-stdlib/README.md (section lock).

local MAX_TTL_MS = 31536000000 -- one year

local function err(msg)
  return redis.error_reply('ERR ' .. msg)
end

local function key_type(key)
  return redis.call('TYPE', key)['ok']
end

-- A positive integer no larger than max, or nil.
local function pos_int(s, max)
  if type(s) ~= 'string' or #s > 15 or not string.match(s, '^[1-9]%d*$') then
    return nil
  end
  local n = tonumber(s)
  if n > max then
    return nil
  end
  return n
end

local function check_lock_key(key)
  local t = key_type(key)
  if t ~= 'none' and (t ~= 'hash' or redis.call('HEXISTS', key, 'owner') == 0) then
    return err('lock key holds the wrong kind of value')
  end
  return nil
end

local function check_owner(owner)
  if type(owner) ~= 'string' or owner == '' then
    return err('owner must be a non-empty string')
  end
  return nil
end

local TTL_ERROR = 'ttl must be an integer between 1 and ' .. MAX_TTL_MS .. ' (milliseconds)'

local function lock_acquire(keys, args)
  if #keys ~= 2 then return err('wrong number of keys') end
  if #args ~= 2 then return err('wrong number of arguments') end
  local lock, fence_key = keys[1], keys[2]
  local owner = args[1]
  local e = check_owner(owner)
  if e then return e end
  local ttl = pos_int(args[2], MAX_TTL_MS)
  if not ttl then return err(TTL_ERROR) end
  e = check_lock_key(lock)
  if e then return e end
  local ft = key_type(fence_key)
  if ft ~= 'none' then
    local v = (ft == 'string') and redis.call('GET', fence_key) or nil
    if not v or not string.match(v, '^%d+$') or #v > 15 then
      return err('fence key holds the wrong kind of value')
    end
  end

  local current = redis.call('HMGET', lock, 'owner', 'holds', 'fence')
  if current[1] and current[1] ~= owner then
    return {map = {acquired = 0, ttl = redis.call('PTTL', lock)}}
  end
  if current[1] == owner then
    local holds = redis.call('HINCRBY', lock, 'holds', 1)
    redis.call('PEXPIRE', lock, ttl)
    return {map = {acquired = 1, fence = tonumber(current[3]), holds = holds, ttl = ttl}}
  end
  local fence = redis.call('INCR', fence_key)
  redis.call('HSET', lock, 'owner', owner, 'holds', 1, 'fence', fence)
  redis.call('PEXPIRE', lock, ttl)
  return {map = {acquired = 1, fence = fence, holds = 1, ttl = ttl}}
end

-- Validates keys and owner; returns (error) or (nil, holds, fence) for the owner.
local function owned(keys, args, nargs)
  if #keys ~= 1 then return err('wrong number of keys') end
  if #args ~= nargs then return err('wrong number of arguments') end
  local e = check_owner(args[1])
  if e then return e end
  e = check_lock_key(keys[1])
  if e then return e end
  return nil
end

local function held_by(lock, owner)
  local current = redis.call('HMGET', lock, 'owner', 'holds', 'fence')
  if not current[1] then return err('lock is not held') end
  if current[1] ~= owner then return err('lock is held by another owner') end
  return nil, tonumber(current[2]), tonumber(current[3])
end

local function lock_release(keys, args)
  local e = owned(keys, args, 1)
  if e then return e end
  local lock = keys[1]
  local e2, holds, fence = held_by(lock, args[1])
  if e2 then return e2 end
  if holds <= 1 then
    redis.call('DEL', lock)
    return {map = {released = 1, holds = 0, fence = fence}}
  end
  holds = redis.call('HINCRBY', lock, 'holds', -1)
  return {map = {released = 0, holds = holds, fence = fence}}
end

local function lock_extend(keys, args)
  local e = owned(keys, args, 2)
  if e then return e end
  local ttl = pos_int(args[2], MAX_TTL_MS)
  if not ttl then return err(TTL_ERROR) end
  local lock = keys[1]
  local e2, holds, fence = held_by(lock, args[1])
  if e2 then return e2 end
  redis.call('PEXPIRE', lock, ttl)
  return {map = {extended = 1, holds = holds, fence = fence, ttl = ttl}}
end

redis.register_function{
  function_name = 'lock_acquire',
  callback = lock_acquire,
  description = 'KEYS: lock, fence counter. ARGV: owner, ttl_ms. Acquire (or re-enter) a lock; returns acquired, fence, holds, ttl',
}
redis.register_function{
  function_name = 'lock_release',
  callback = lock_release,
  description = 'KEYS: lock. ARGV: owner. Release one hold of a lock; returns released, holds, fence',
}
redis.register_function{
  function_name = 'lock_extend',
  callback = lock_extend,
  description = 'KEYS: lock. ARGV: owner, ttl_ms. Reset the TTL of a held lock; returns extended, holds, fence, ttl',
}
