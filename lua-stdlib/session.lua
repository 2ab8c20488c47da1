#!lua name=session
-- session: per-user sessions with sliding expiry.
--
-- Cluster-safe design: all sessions of one user live in ONE hash (the user's session
-- key), so every function touches only keys passed in KEYS and destroying all of a
-- user's sessions is a single key. Fields of the session key:
--   user         the user the key belongs to
--   d:<id>       the session's data (opaque string)
--   e:<id>       absolute expiry, unix time in milliseconds
--   t:<id>       the session's TTL in seconds (each session_get slides e:<id>)
-- Expired sessions are removed by the next call that touches the key, and the key itself
-- expires (PEXPIREAT) with its last live session.
-- Session ids are sha1hex("<n>:<user>") where n is INCR of a counter key that is never
-- deleted (KEYS[1] of session_create), so ids are deterministic and never reused.
-- Give the counter key and the session key one hash tag in Redis Cluster (for example
-- {user:42}:session-seq and {user:42}:sessions). Documentation: lua-stdlib/README.md (section session).

local MAX_TTL = 315360000 -- ten years, in seconds

local function err(msg)
  return redis.error_reply('ERR ' .. msg)
end

local function key_type(key)
  return redis.call('TYPE', key)['ok']
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function check_session_key(key)
  local t = key_type(key)
  if t ~= 'none' and (t ~= 'hash' or redis.call('HEXISTS', key, 'user') == 0) then
    return err('session key holds the wrong kind of value')
  end
  return nil
end

local function check_id(id)
  if id == '' then
    return err('session id must be a non-empty string')
  end
  return nil
end

-- Removes expired sessions, then sets the key to expire with its last live session
-- (or deletes it when none is left). Returns the number of live sessions.
local function settle(key, now)
  local flat = redis.call('HGETALL', key)
  local live, max_exp, dead = 0, 0, {}
  for i = 1, #flat, 2 do
    local f = flat[i]
    if string.sub(f, 1, 2) == 'e:' then
      local exp = tonumber(flat[i + 1]) or 0
      if exp <= now then
        dead[#dead + 1] = string.sub(f, 3)
      else
        live = live + 1
        if exp > max_exp then
          max_exp = exp
        end
      end
    end
  end
  for _, id in ipairs(dead) do
    redis.call('HDEL', key, 'd:' .. id, 'e:' .. id, 't:' .. id)
  end
  if live == 0 then
    redis.call('DEL', key)
  else
    redis.call('PEXPIREAT', key, max_exp)
  end
  return live
end

local function session_create(keys, args)
  if #keys ~= 2 then return err('wrong number of keys') end
  if #args < 2 or #args > 3 then return err('wrong number of arguments') end
  local counter, key = keys[1], keys[2]
  local user, data = args[1], args[3] or ''
  if user == '' then return err('user must be a non-empty string') end
  local ttl_s = args[2]
  local ttl = nil
  if #ttl_s <= 10 and string.match(ttl_s, '^[1-9]%d*$') then
    ttl = tonumber(ttl_s)
    if ttl > MAX_TTL then ttl = nil end
  end
  if not ttl then return err('ttl must be an integer between 1 and ' .. MAX_TTL .. ' (seconds)') end
  local ct = key_type(counter)
  if ct ~= 'none' then
    local v = (ct == 'string') and redis.call('GET', counter) or nil
    if not v or #v > 15 or not string.match(v, '^%d+$') then
      return err('counter key holds the wrong kind of value')
    end
  end
  local e = check_session_key(key)
  if e then return e end
  local owner = redis.call('HGET', key, 'user')
  if owner and owner ~= user then return err('session key belongs to another user') end

  local n = redis.call('INCR', counter)
  local id = redis.sha1hex(n .. ':' .. user)
  local now = now_ms()
  local expires_at = now + ttl * 1000
  redis.call('HSET', key, 'user', user, 'd:' .. id, data, 'e:' .. id, expires_at, 't:' .. id, ttl)
  local live = settle(key, now)
  return {map = {id = id, user = user, ttl = ttl, expires_at = expires_at, sessions = live}}
end

local function session_get(keys, args)
  if #keys ~= 1 then return err('wrong number of keys') end
  if #args ~= 1 then return err('wrong number of arguments') end
  local key, id = keys[1], args[1]
  local e = check_id(id) or check_session_key(key)
  if e then return e end

  local now = now_ms()
  local s = redis.call('HMGET', key, 'user', 'd:' .. id, 'e:' .. id, 't:' .. id)
  local exp, ttl = tonumber(s[3]), tonumber(s[4])
  if not (s[1] and s[2] and exp and ttl) or exp <= now then
    if key_type(key) ~= 'none' then
      settle(key, now)
    end
    return {map = {found = 0, id = id}}
  end
  local expires_at = now + ttl * 1000
  redis.call('HSET', key, 'e:' .. id, expires_at)
  settle(key, now)
  return {map = {found = 1, id = id, user = s[1], data = s[2], ttl = ttl, expires_at = expires_at}}
end

local function session_destroy(keys, args)
  if #keys ~= 1 then return err('wrong number of keys') end
  if #args ~= 1 then return err('wrong number of arguments') end
  local key, id = keys[1], args[1]
  local e = check_id(id) or check_session_key(key)
  if e then return e end
  if key_type(key) == 'none' then
    return {map = {destroyed = 0, id = id, sessions = 0}}
  end

  local now = now_ms()
  local exp = tonumber(redis.call('HGET', key, 'e:' .. id))
  local destroyed = 0
  if exp then
    redis.call('HDEL', key, 'd:' .. id, 'e:' .. id, 't:' .. id)
    if exp > now then
      destroyed = 1
    end
  end
  local live = settle(key, now)
  return {map = {destroyed = destroyed, id = id, sessions = live}}
end

local function session_destroy_all(keys, args)
  if #keys ~= 1 then return err('wrong number of keys') end
  if #args ~= 0 then return err('wrong number of arguments') end
  local key = keys[1]
  local e = check_session_key(key)
  if e then return e end

  local now = now_ms()
  local flat = redis.call('HGETALL', key)
  local live = 0
  for i = 1, #flat, 2 do
    if string.sub(flat[i], 1, 2) == 'e:' and (tonumber(flat[i + 1]) or 0) > now then
      live = live + 1
    end
  end
  redis.call('DEL', key)
  return {map = {destroyed = live}}
end

redis.register_function{
  function_name = 'session_create',
  callback = session_create,
  description = 'KEYS: id counter, user session key. ARGV: user, ttl_seconds, [data]. Create a session; returns id, user, ttl, expires_at, sessions',
}
redis.register_function{
  function_name = 'session_get',
  callback = session_get,
  description = 'KEYS: user session key. ARGV: id. Read a session and slide its expiry; returns found, id, user, data, ttl, expires_at',
}
redis.register_function{
  function_name = 'session_destroy',
  callback = session_destroy,
  description = 'KEYS: user session key. ARGV: id. Destroy one session; returns destroyed, id, sessions',
}
redis.register_function{
  function_name = 'session_destroy_all',
  callback = session_destroy_all,
  description = 'KEYS: user session key. Destroy every session of the user; returns destroyed',
}
