#!lua name=workflow
-- workflow: a state machine per workflow, with a validated transition table and a
-- bounded history.
--
-- KEYS[1] is the workflow hash (fields id, state, version, transitions, history_limit,
-- created_at, updated_at); KEYS[2] is its history list (newest entry first, at most
-- history_limit entries). Every key is passed in KEYS: give both one hash tag in Redis
-- Cluster. Documentation: lua-stdlib/README.md (section workflow).

-- The default table: created -> running -> completed | failed, running <-> paused, and
-- every state that is not final -> cancelled.
local DEFAULT_TRANSITIONS = '{"created":["running","cancelled"],'
  .. '"running":["paused","completed","failed","cancelled"],'
  .. '"paused":["running","cancelled"],'
  .. '"completed":[],"failed":[],"cancelled":[]}'
local DEFAULT_HISTORY_LIMIT = 100
local MAX_HISTORY_LIMIT = 10000
local DEFAULT_HISTORY_COUNT = 10
local MAX_HISTORY_COUNT = 1000

local function err(msg)
  return redis.error_reply('ERR ' .. msg)
end

local function key_type(key)
  return redis.call('TYPE', key)['ok']
end

-- An integer in [min, max] written in plain decimal, or nil.
local function int_in(s, min, max)
  if type(s) ~= 'string' or #s > 15 or not string.match(s, '^%d+$')
    or (#s > 1 and string.sub(s, 1, 1) == '0') then
    return nil
  end
  local n = tonumber(s)
  if n < min or n > max then
    return nil
  end
  return n
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Decodes and validates a transition table: a non-empty JSON object mapping each state
-- (non-empty string) to an array of non-empty strings. Returns the table or nil.
local function parse_transitions(json)
  local ok, t = pcall(cjson.decode, json)
  if not ok or type(t) ~= 'table' then
    return nil
  end
  local states = 0
  for state, nexts in pairs(t) do
    if type(state) ~= 'string' or state == '' or type(nexts) ~= 'table' then
      return nil
    end
    local count = 0
    for k, v in pairs(nexts) do
      if type(k) ~= 'number' or type(v) ~= 'string' or v == '' then
        return nil
      end
      count = count + 1
    end
    for i = 1, count do
      if nexts[i] == nil then
        return nil
      end
    end
    states = states + 1
  end
  if states == 0 then
    return nil
  end
  return t
end

local function is_known(t, state)
  if t[state] then
    return true
  end
  for _, nexts in pairs(t) do
    for _, s in ipairs(nexts) do
      if s == state then
        return true
      end
    end
  end
  return false
end

local function allowed_from(t, state)
  local out = {}
  for i, s in ipairs(t[state] or {}) do
    out[i] = s
  end
  return out
end

local function check_keys(keys)
  if #keys ~= 2 then
    return err('wrong number of keys')
  end
  local wt = key_type(keys[1])
  if wt ~= 'none' and wt ~= 'hash' then
    return err('workflow key holds the wrong kind of value')
  end
  local ht = key_type(keys[2])
  if ht ~= 'none' and ht ~= 'list' then
    return err('history key holds the wrong kind of value')
  end
  return nil, wt
end

local function workflow_create(keys, args)
  local e, wt = check_keys(keys)
  if e then return e end
  if #args < 2 or #args > 4 then return err('wrong number of arguments') end
  local id, initial = args[1], args[2]
  if id == '' then return err('id must be a non-empty string') end
  if initial == '' then return err('state must be a non-empty string') end
  local json = args[3]
  if json == nil or json == '' then
    json = DEFAULT_TRANSITIONS
  end
  local t = parse_transitions(json)
  if not t then
    return err('transitions must be a JSON object mapping each state to an array of states')
  end
  local limit = DEFAULT_HISTORY_LIMIT
  if args[4] ~= nil and args[4] ~= '' then
    limit = int_in(args[4], 1, MAX_HISTORY_LIMIT)
    if not limit then
      return err('history limit must be an integer between 1 and ' .. MAX_HISTORY_LIMIT)
    end
  end
  if not is_known(t, initial) then return err('unknown state ' .. initial) end
  if wt ~= 'none' then return err('workflow already exists') end

  local now = now_ms()
  redis.call('DEL', keys[2])
  redis.call('HSET', keys[1], 'id', id, 'state', initial, 'version', 0,
    'transitions', json, 'history_limit', limit, 'created_at', now, 'updated_at', now)
  return {map = {id = id, state = initial, version = 0, history_limit = limit,
    allowed = allowed_from(t, initial)}}
end

local function workflow_transition(keys, args)
  local e, wt = check_keys(keys)
  if e then return e end
  if #args < 1 or #args > 2 then return err('wrong number of arguments') end
  local to, expected = args[1], args[2]
  if to == '' then return err('state must be a non-empty string') end
  if expected == '' then return err('expected state must be a non-empty string') end
  if wt == 'none' then return err('workflow not found') end
  local w = redis.call('HMGET', keys[1], 'id', 'state', 'version', 'transitions', 'history_limit')
  local id, from, version, limit = w[1], w[2], tonumber(w[3]), tonumber(w[5])
  local t = w[4] and parse_transitions(w[4])
  if not (id and from and version and limit and t) then
    return err('workflow key holds the wrong kind of value')
  end
  if expected and expected ~= from then
    return err('workflow is in state ' .. from .. ', not ' .. expected)
  end
  local ok = false
  for _, s in ipairs(t[from] or {}) do
    if s == to then
      ok = true
      break
    end
  end
  if not ok then return err('invalid transition from ' .. from .. ' to ' .. to) end

  local now = now_ms()
  version = version + 1
  redis.call('HSET', keys[1], 'state', to, 'version', version, 'updated_at', now)
  local entry = '{"version":' .. version .. ',"from":' .. cjson.encode(from)
    .. ',"to":' .. cjson.encode(to) .. ',"at":' .. now .. '}'
  redis.call('LPUSH', keys[2], entry)
  redis.call('LTRIM', keys[2], 0, limit - 1)
  return {map = {id = id, from = from, state = to, version = version,
    allowed = allowed_from(t, to)}}
end

local function workflow_state(keys, args)
  local e, wt = check_keys(keys)
  if e then return e end
  if #args > 1 then return err('wrong number of arguments') end
  local count = DEFAULT_HISTORY_COUNT
  if args[1] ~= nil then
    count = int_in(args[1], 0, MAX_HISTORY_COUNT)
    if not count then
      return err('history count must be an integer between 0 and ' .. MAX_HISTORY_COUNT)
    end
  end
  if wt == 'none' then return err('workflow not found') end
  local w = redis.call('HMGET', keys[1], 'id', 'state', 'version', 'transitions',
    'history_limit', 'created_at', 'updated_at')
  local t = w[4] and parse_transitions(w[4])
  if not (w[1] and w[2] and tonumber(w[3]) and t and tonumber(w[5])) then
    return err('workflow key holds the wrong kind of value')
  end
  local history = {}
  if count > 0 then
    history = redis.call('LRANGE', keys[2], 0, count - 1)
  end
  return {map = {id = w[1], state = w[2], version = tonumber(w[3]),
    allowed = allowed_from(t, w[2]), history_limit = tonumber(w[5]),
    created_at = tonumber(w[6]), updated_at = tonumber(w[7]), history = history}}
end

redis.register_function{
  function_name = 'workflow_create',
  callback = workflow_create,
  description = 'KEYS: workflow, history. ARGV: id, initial_state, [transitions_json], [history_limit]. Create a workflow',
}
redis.register_function{
  function_name = 'workflow_transition',
  callback = workflow_transition,
  description = 'KEYS: workflow, history. ARGV: to_state, [expected_state]. Move a workflow to another state',
}
redis.register_function{
  function_name = 'workflow_state',
  callback = workflow_state,
  flags = {'no-writes'},
  description = 'KEYS: workflow, history. ARGV: [history_count]. Current state, allowed next states and recent history',
}
