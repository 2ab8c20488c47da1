#!lua name=cache
-- Cache entries with a TTL and dependency edges, invalidated by dependency.
--
-- An entry is a hash (fields: value, ndeps, dep:1 .. dep:N) with a TTL.
-- A dependency is named by its *dependents set*: a set key whose members are the
-- names of the entries that depend on it. Both are always passed in KEYS:
--   cache_set / cache_get / cache_delete: KEYS[1] = entry, KEYS[2..] = dependency sets
--   cache_invalidate: KEYS[1] = dependency set, KEYS[2..] = every member of that set
--   cache_dependents: KEYS[1] = dependency set
-- Replies are RESP3 maps (flat arrays in RESP2).
-- Documentation: lua-stdlib/README.md (section cache)

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

local function key_type(key)
  local t = redis.call('TYPE', key)
  return t.ok or t
end

-- Validates KEYS[1] = entry, KEYS[2..] = dependency sets. Returns an error reply or nil.
local function check_entry_keys(keys)
  if #keys < 1 then return err('the entry key is required') end
  local t = key_type(keys[1])
  if t ~= 'none' and t ~= 'hash' then return err('entry key is not a cache entry') end
  local seen = {}
  seen[keys[1]] = true
  for i = 2, #keys do
    if seen[keys[i]] then return err('dependency keys must be distinct from each other and from the entry') end
    seen[keys[i]] = true
    local dt = key_type(keys[i])
    if dt ~= 'none' and dt ~= 'set' then return err('dependency key is not a set') end
  end
  return nil
end

-- The dependency set keys recorded in an entry (array of names).
local function recorded_deps(entry)
  local n = tonumber(redis.call('HGET', entry, 'ndeps')) or 0
  local deps = {}
  for i = 1, n do
    deps[i] = redis.call('HGET', entry, 'dep:' .. i)
  end
  return deps
end

local function set(keys, args)
  local e = check_entry_keys(keys)
  if e then return e end
  if #args ~= 2 then return err('wrong number of arguments') end
  local value = args[1]
  local ttl = posint(args[2])
  if ttl == nil then return err('ttl must be a positive integer (ms)') end

  local entry = keys[1]
  local replaced = redis.call('EXISTS', entry)
  redis.call('DEL', entry)
  local fields = {'value', value, 'ndeps', fmt(#keys - 1)}
  for i = 2, #keys do
    fields[#fields + 1] = 'dep:' .. (i - 1)
    fields[#fields + 1] = keys[i]
  end
  redis.call('HSET', entry, unpack(fields))
  redis.call('PEXPIRE', entry, fmt(ttl))
  for i = 2, #keys do
    local dep = keys[i]
    local existed = redis.call('EXISTS', dep)
    redis.call('SADD', dep, entry)
    -- A dependency set lives at least as long as its longest-lived dependent
    -- (a set made elsewhere without a TTL keeps having none).
    local pttl = redis.call('PTTL', dep)
    if (existed == 0 and pttl == -1) or (pttl >= 0 and pttl < ttl) then
      redis.call('PEXPIRE', dep, fmt(ttl))
    end
  end
  return {map = {stored = 1, replaced = replaced, dependencies = #keys - 1, ttl_ms = ttl}}
end

local function get(keys, args)
  local e = check_entry_keys(keys)
  if e then return e end
  if #args ~= 0 then return err('wrong number of arguments') end
  local entry = keys[1]
  if redis.call('EXISTS', entry) == 0 then
    return {map = {hit = 0, stale = 0, value = false, ttl_ms = -2}}
  end
  local deps = recorded_deps(entry)
  if #deps ~= #keys - 1 then return err('dependency keys do not match the entry') end
  local given = {}
  for i = 2, #keys do given[keys[i]] = true end
  for _, d in ipairs(deps) do
    if not given[d] then return err('dependency keys do not match the entry') end
  end
  -- Every edge must still be recorded; a lost edge means an invalidation could have
  -- missed this entry, so it is reported stale and its value is not returned.
  local missing = 0
  for i = 2, #keys do
    if redis.call('SISMEMBER', keys[i], entry) == 0 then missing = missing + 1 end
  end
  if missing > 0 then
    return {map = {hit = 0, stale = 1, value = false, ttl_ms = redis.call('PTTL', entry)}}
  end
  return {map = {
    hit = 1,
    stale = 0,
    value = redis.call('HGET', entry, 'value'),
    ttl_ms = redis.call('PTTL', entry),
  }}
end

local function delete(keys, args)
  local e = check_entry_keys(keys)
  if e then return e end
  if #args ~= 0 then return err('wrong number of arguments') end
  local entry = keys[1]
  local removed = 0
  for i = 2, #keys do
    removed = removed + redis.call('SREM', keys[i], entry)
  end
  local deleted = redis.call('DEL', entry)
  return {map = {deleted = deleted, edges_removed = removed}}
end

local function invalidate(keys, args)
  if #keys < 1 then return err('the dependency key is required') end
  if #args ~= 0 then return err('wrong number of arguments') end
  local dep = keys[1]
  local t = key_type(dep)
  if t ~= 'none' and t ~= 'set' then return err('dependency key is not a set') end
  local given = {}
  for i = 2, #keys do given[keys[i]] = true end
  local members = redis.call('SMEMBERS', dep)
  for _, m in ipairs(members) do
    if not given[m] then
      return err('every dependent must be passed in KEYS (read them with cache_dependents)')
    end
  end
  local deleted = 0
  for _, m in ipairs(members) do
    deleted = deleted + redis.call('DEL', m)
  end
  redis.call('DEL', dep)
  return {map = {dependents = #members, deleted = deleted}}
end

local function dependents(keys, args)
  if #keys ~= 1 then return err('exactly one dependency key is required') end
  if #args ~= 0 then return err('wrong number of arguments') end
  local t = key_type(keys[1])
  if t ~= 'none' and t ~= 'set' then return err('dependency key is not a set') end
  local members = redis.call('SMEMBERS', keys[1])
  table.sort(members)
  return {map = {dependents = members, count = #members}}
end

redis.register_function{
  function_name = 'cache_set',
  callback = set,
  description = 'store a value with a TTL: KEYS entry, dep sets...; ARGV value, ttl_ms',
}
redis.register_function{
  function_name = 'cache_get',
  callback = get,
  flags = {'no-writes'},
  description = 'read an entry, checking its dependency edges: KEYS entry, dep sets...',
}
redis.register_function{
  function_name = 'cache_delete',
  callback = delete,
  description = 'delete an entry and its edges: KEYS entry, dep sets...',
}
redis.register_function{
  function_name = 'cache_invalidate',
  callback = invalidate,
  description = 'delete every dependent of a dependency: KEYS dep set, all its members...',
}
redis.register_function{
  function_name = 'cache_dependents',
  callback = dependents,
  flags = {'no-writes'},
  description = 'list the dependents of a dependency: KEYS dep set',
}
