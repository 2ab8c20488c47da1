-- Builds the sandbox every RX function runs in. Runs once per VM, with the full standard
-- library still reachable; everything it keeps private stays in this chunk's upvalues.
-- Arguments: the redis API table (filled by Rust), the codec libraries, and what differs
-- between servers (`dialect`: see src/dialect.rs).
local redis_api, cjson, cmsgpack, struct, interrupted, load51, dialect, rx_api, fcall_errors, tick, count = ...
-- The global names under which the kill checks written into every chunk find `tick` and
-- `count` (kill_checks.rs): no Lua 5.1 name can spell them, and no table lists them.
local TICK, COUNT = '\130', '\131'
-- The API table's name in error texts: `redis`, or `server` on Valkey.
local API = dialect.api

local debug_getinfo, setfenv, getmetatable, setmetatable = debug.getinfo, setfenv, getmetatable, setmetatable
local type, tostring, error, rawequal = type, tostring, error, rawequal
local INTERNAL = '=rx'

local G = {}            -- the real globals scripts see, reached through read-only proxies
local real_of = setmetatable({}, { __mode = 'k' })  -- proxy -> the table it guards

local function readonly_error()
  error('Attempt to modify a readonly table', 2)
end

local function readonly(t)
  local proxy = setmetatable({}, { __index = t, __newindex = readonly_error, __metatable = false })
  real_of[proxy] = t
  return proxy
end

-- What getmetatable answers for protected tables (Redis's globals have a metatable, its
-- libraries none).
local visible_meta = setmetatable({}, { __mode = 'k' })

local function unwrap(t)
  return real_of[t] or t
end

-- Base functions Redis 7.0 offers, unchanged.
for _, name in ipairs({ 'assert', 'collectgarbage', 'error', 'getmetatable', 'pcall', 'rawequal',
                        'select', 'setmetatable', 'tonumber', 'tostring', 'type', 'unpack', 'xpcall' }) do
  G[name] = _G[name]
end
G._VERSION = _VERSION
do
  local getmetatable, setmetatable = getmetatable, setmetatable
  G.getmetatable = function(t)
    if real_of[t] then return visible_meta[t] end
    local m = getmetatable(t)
    return m
  end
  G.setmetatable = function(t, m)
    if real_of[t] then error('Attempt to modify a readonly table', 0) end
    local r = setmetatable(t, m)
    return r
  end
end
G.gcinfo = function() return math.floor(collectgarbage('count')) end

-- Iteration and raw access see through the proxies, and cannot write to protected tables.
do
  local pairs, ipairs, next, rawget, rawset = pairs, ipairs, next, rawget, rawset
  -- The table behind a proxy never reaches a script (with it, `rawset` would write into
  -- the globals or a library that every script shares): a proxy is iterated by functions
  -- of this chunk, with the proxy itself as their state.
  local ipairs_step = ipairs({})
  local function proxy_next(proxy, k) local a, b = next(real_of[proxy], k) return a, b end
  local function proxy_ipairs_step(proxy, i) local a, b = ipairs_step(real_of[proxy], i) return a, b end
  G.pairs = function(t)
    if real_of[t] then return proxy_next, t, nil end
    local f, s, k = pairs(t)
    return f, s, k
  end
  G.ipairs = function(t)
    if real_of[t] then return proxy_ipairs_step, t, 0 end
    local f, s, k = ipairs(t)
    return f, s, k
  end
  G.next = function(t, k) local a, b = next(unwrap(t), k) return a, b end
  G.rawget = function(t, k) local v = rawget(unwrap(t), k) return v end
  G.rawset = function(t, k, v)
    if real_of[t] then error('Attempt to modify a readonly table', 0) end
    local r = rawset(t, k, v)
    return r
  end
end

-- Redis 7.0's pcall hands back the `err` string of an error table, not the table.
do
  local pcall = pcall
  local function finish(ok, ...)
    if ok then return true, ... end
    local e = ...
    if type(e) == 'table' then
      local msg = e.err
      if type(msg) == 'string' or type(msg) == 'number' then e = msg end
    end
    return false, e
  end
  G.pcall = function(...)
    if select('#', ...) == 0 then return false, 'attempt to call a boolean value' end
    return finish(pcall(...))
  end
end

-- A killed or timed-out script must not catch its own end: the protected-call forms
-- re-raise once the host has interrupted the script.
do
  local xpcall, resume, error = xpcall, coroutine.resume, error
  local user_pcall = G.pcall
  local function check(ok, ...)
    if not ok and interrupted() then error((...), 0) end
    return ok, ...
  end
  G.pcall = function(...) return check(user_pcall(...)) end
  G.xpcall = function(f, handler, ...) return check(xpcall(f, handler, ...)) end
  -- (coroutine.wrap re-raises errors by itself.)
  coroutine.resume = function(co, ...) return check(resume(co, ...)) end
end

-- Align LuaJIT's libraries with Redis's Lua 5.1 (compat functions in, extensions out).
do
  -- Lua 5.1 writes numbers with C's "%.14g": a NaN with its sign bit set (0/0 on x86) is
  -- "-nan", where LuaJIT always writes "nan". (Concatenation with `..` still writes LuaJIT's
  -- "nan": the VM does it, no library function; see README.)
  local raw_tostring, number_text = tostring, dialect.number_text
  -- A null pointer (cjson.null is one) is "userdata: (nil)" in Lua 5.1, which writes it
  -- with glibc's %p; LuaJIT writes "NULL". No other userdata can be at address 0.
  -- LuaJIT names its built-in functions (`function: builtin#3` for `type`); Lua 5.1
  -- writes every function's address.
  local raw_format, byte = string.format, string.byte
  G.tostring = function(...)
    local v = ...
    if v ~= v and type(v) == 'number' then return number_text(v) end
    local text = raw_tostring(...)
    local first = byte(text, 1)
    if first == 117 and text == 'userdata: NULL' and type(v) == 'userdata' then
      return 'userdata: (nil)'
    elseif first == 102 and type(v) == 'function' and text:find('^function: builtin#') then
      return 'function: ' .. raw_format('%p', v)
    end
    return text
  end
  -- string.format checks its arguments as Lua 5.1's does (lstrlib.c: %s and %q take strings
  -- and numbers only, numeric conversions numbers, the same format errors), and %q quotes
  -- as Lua 5.1 does (escaping only `"`, `\`, newline, CR and NUL); LuaJIT writes anything
  -- through tostring and escapes control characters its own way.
  local raw_format, find, sub, byte, select, type, tonumber, concat, gsub =
    string.format, string.find, string.sub, string.byte, select, type, tonumber, table.concat, string.gsub
  local NUMERIC = { c = true, d = true, i = true, o = true, u = true, x = true, X = true,
                    e = true, E = true, f = true, g = true, G = true }
  local QUOTED = { ['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\\n', ['\r'] = '\\r', ['\0'] = '\\000' }
  local function quote51(v)
    if type(v) == 'number' then v = number_text(v) end
    return '"' .. gsub(v, '[%z"\\\n\r]', QUOTED) .. '"'
  end
  -- luaL_argerror: names the function as its caller called it (level 2: `format` itself).
  local function argerror(narg, msg)
    local ar = debug_getinfo(2, 'n')
    local name = ar and ar.name or '?'
    if ar and ar.namewhat == 'method' then
      narg = narg - 1
      if narg == 0 then error("calling '" .. name .. "' on bad self (" .. msg .. ")", 3) end
    end
    error("bad argument #" .. narg .. " to '" .. name .. "' (" .. msg .. ")", 3)
  end
  local function is_digit(c) return c and c >= 48 and c <= 57 end

  -- %q, %c, a NaN for %s, a long string or one with a NUL: built piece by piece.
  local function format_slowly(fmt, ...)
    local out, arg, i = {}, 0, 1
    while true do
      local at = find(fmt, '%', i, true)
      if not at then out[#out + 1] = sub(fmt, i) break end
      out[#out + 1] = sub(fmt, i, at - 1)
      if byte(fmt, at + 1) == 37 then
        out[#out + 1] = '%'
        i = at + 2
      else
        arg = arg + 1
        local _, stop = find(fmt, '^[-+ #0]*%d?%d?%.?%d?%d?.', at + 1)
        local spec, v = sub(fmt, at, stop), select(arg, ...)
        local conversion = sub(spec, -1)
        if conversion == 'q' then
          out[#out + 1] = quote51(v)
        elseif conversion == 's' and v ~= v then
          out[#out + 1] = raw_format(spec, number_text(v))
        elseif conversion == 's' and type(v) == 'string' then
          -- lstrlib.c formats short strings (and any with a precision) with sprintf, which
          -- stops at a NUL; longer ones are copied whole, width and all ignored.
          if #v < 100 or find(spec, '.', 1, true) then
            out[#out + 1] = raw_format(spec, (gsub(v, '%z.*', '')))
          else
            out[#out + 1] = v
          end
        else
          -- Every other piece is added with strlen: it ends at its first NUL (`%c` of 0).
          local piece = raw_format(spec, v)
          local nul = find(piece, '\0', 1, true)
          out[#out + 1] = nul and sub(piece, 1, nul - 1) or piece
        end
        i = stop + 1
      end
    end
    return concat(out)
  end

  string.format = function(...)
    local fmt = ...
    local tf = type(fmt)
    if tf ~= 'string' then
      if tf ~= 'number' then
        argerror(1, 'string expected, got ' .. (select('#', ...) == 0 and 'no value' or tf))
      end
      return raw_format(...)
    end
    if not find(fmt, '%', 1, true) then return raw_format(...) end
    local argc, arg, i, len, slow = select('#', ...) - 1, 1, 1, #fmt, false
    while true do
      local at = find(fmt, '%', i, true)
      if not at then break end
      if byte(fmt, at + 1) == 37 then
        i = at + 2
      else
        arg = arg + 1
        if arg - 1 > argc then argerror(arg, 'no value') end
        local p = at + 1
        while p <= len and find('-+ #0', sub(fmt, p, p), 1, true) do p = p + 1 end
        if p - at - 1 >= 6 then error('invalid format (repeated flags)', 2) end
        if is_digit(byte(fmt, p)) then p = p + 1 end
        if is_digit(byte(fmt, p)) then p = p + 1 end
        if byte(fmt, p) == 46 then
          p = p + 1
          if is_digit(byte(fmt, p)) then p = p + 1 end
          if is_digit(byte(fmt, p)) then p = p + 1 end
        end
        if is_digit(byte(fmt, p)) then error('invalid format (width or precision too long)', 2) end
        local conversion = sub(fmt, p, p)
        local v = select(arg, ...)
        local t = type(v)
        if NUMERIC[conversion] then
          if t ~= 'number' and not (t == 'string' and tonumber(v)) then
            argerror(arg, 'number expected, got ' .. t)
          end
          if conversion == 'c' then slow = true end
        elseif conversion == 's' or conversion == 'q' then
          if t ~= 'string' and t ~= 'number' then argerror(arg, 'string expected, got ' .. t) end
          if conversion == 'q' or v ~= v or (t == 'string' and (#v >= 100 or find(v, '\0', 1, true))) then
            slow = true
          end
        else
          error("invalid option '%" .. conversion:match('^[^%z]*') .. "' to 'format'", 2)
        end
        i = p + 1
      end
    end
    if slow then return format_slowly(...) end
    return raw_format(...)
  end
end
string.gfind = string.gmatch
table.setn = function() error("'setn' is obsolete", 2) end
table.move = nil
math.mod = math.fmod
-- The servers' generator (src/lua/lrand48.rs), not LuaJIT's.
math.random = dialect.math_random
math.randomseed = dialect.math_randomseed
coroutine.isyieldable = nil

-- Libraries, each behind a read-only proxy.
G.string = readonly(string)
G.table = readonly(table)
G.math = readonly(math)
local original_tohex = bit and bit.tohex
if bit then
  -- Lua BitOp, as Redis bundles it, writes at most 8 digits: bit.tohex(x, n) clamps n to
  -- [-8, 8] (and n = -2^31, which once asked for 2^31 digits, to -8: CVE-2024-31449).
  -- LuaJIT writes as many as asked.
  local tobit = bit.tobit
  bit.tohex = function(x, ...)
    if select('#', ...) == 0 then return original_tohex(x) end
    local n = ...
    local v = type(n) == 'number' and n or tonumber(n)
    if v then
      v = tobit(v)
      if v > 8 then n = 8 elseif v < -8 then n = -8 end
    end
    return original_tohex(x, n)
  end
  G.bit = readonly(bit)
end -- LuaJIT's; a plain Lua 5.1 build has none
G.coroutine = readonly(coroutine)
G.cjson = readonly(cjson)
G.cmsgpack = readonly(cmsgpack)
G.struct = readonly(struct)
G.redis = readonly(redis_api)
-- RX's own API: `rx.fcall`/`rx.pfcall` call another library's function in the same run.
G.rx = readonly(rx_api)
-- Valkey: `server` is the same table as `redis`.
if dialect.valkey then G.server = G.redis end
-- Redis 7.4+ and Valkey 8: an `os` table holding only `clock`.
if dialect.os_clock then G.os = readonly({ clock = dialect.os_clock }) end

-- The environment every library and function runs in. Its __index is switched to the
-- load-time API while a library body runs, then back to G.
local env_mt = { __index = G, __newindex = readonly_error, __metatable = false }
local env = setmetatable({}, env_mt)
real_of[env] = G
visible_meta[env] = readonly({})
G._G = env


-- Chunk ids in messages: Lua 5.1 writes `[string "first line..."]` with other length
-- rules than LuaJIT. Scripts see Redis's.
local function lua51_chunk_id(source)
  local first = source:match('^[^%z\r\n]*')
  local truncated = first:len() > 43
  if truncated then first = first:sub(1, 43) end
  local next_char = source:sub(first:len() + 1, first:len() + 1)
  if next_char ~= '' and next_char ~= '\0' then first = first .. '...' end
  return '[string "' .. first .. '"]'
end

local function luajit_chunk_id(source)
  local n = 0
  while n < 48 and n < source:len() and source:byte(n + 1) >= 32 do n = n + 1 end
  if n < source:len() then
    if n > 45 then n = 45 end
    return '[string "' .. source:sub(1, n) .. '..."]'
  end
  return '[string "' .. source .. '"]'
end

local function redis_chunk_ids(msg, source)
  if type(msg) ~= 'string' or type(source) ~= 'string' then return msg end
  local c = source:sub(1, 1)
  if c == '@' or c == '=' then return msg end
  local from, to = luajit_chunk_id(source), lua51_chunk_id(source)
  if from ~= to and msg:sub(1, from:len()) == from then
    return to .. msg:sub(from:len() + 1)
  end
  return msg
end

-- Text chunks only (bytecode is a known attack path), and always in the sandbox.
do
  local loadstring, load, string_byte = loadstring, load, string.byte
  G.loadstring = function(s, name)
    if type(s) == 'string' and string_byte(s, 1) == 27 then
      local src = name or s
      local id
      if type(src) == 'string' and (src:sub(1, 1) == '=' or src:sub(1, 1) == '@') then id = src:sub(2) else id = lua51_chunk_id(tostring(src)) end
      return nil, id .. ":1: unexpected symbol near 'char(27)'"
    end
    -- Read as Lua 5.1 reads it (LuaJIT's own syntax is refused, escapes mean the same).
    local f, e
    if type(s) == 'string' then f, e = load51(s, name) else f, e = loadstring(s, name) end
    if f then setfenv(f, env) end
    return f, redis_chunk_ids(e, name or s)
  end
  G.load = function(chunk, name)
    if type(chunk) == 'string' then return G.loadstring(chunk, name) end
    -- The pieces, gathered and read as one text (as Lua 5.1 would read them).
    local pieces = {}
    -- Lua 5.1's reader rules: nil or an empty piece ends the text, a number is read as
    -- its text, anything else is an error that names the line calling load.
    local caller = debug_getinfo(2, 'Sl')
    local where = (caller and caller.currentline > 0) and (caller.short_src .. ':' .. caller.currentline .. ': ') or ''
    local f, e = load(function()
      local piece = chunk()
      if piece == nil then return nil end
      if type(piece) == 'number' then piece = tostring(piece) end
      if type(piece) ~= 'string' then error(where .. 'reader function must return a string', 0) end
      if piece == '' then return nil end
      if string_byte(piece, 1) == 27 then
        error("unexpected symbol near 'char(27)'")
      end
      pieces[#pieces + 1] = piece
      return ' '
    end, name)
    if not f then
      -- load catches what the reader raised, a kill or a time limit included: that must
      -- not become a return value the script can carry on from.
      if interrupted() then error(e, 0) end
      return f, e
    end
    f, e = load51(table.concat(pieces), name or '=(load)')
    if f then setfenv(f, env) end
    return f, e
  end
end

-- getmetatable('') must not hand out the real string metatable.
do
  local string_mt = getmetatable('')
  string_mt.__metatable = readonly({ __index = G.string })
end

-- At load time a library sees only `redis` with register_function, log and the constants;
-- anything else is a nonexistent global, as in Redis.
local function strict(t)
  return setmetatable({}, {
    __index = function(_, k)
      if k == TICK then return tick elseif k == COUNT then return count end
      local v = t[k]
      if v == nil then
        error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
      end
      return v
    end,
    __newindex = readonly_error,
    __metatable = false,
  })
end

local FLAGS = { ['no-writes'] = true, ['allow-oom'] = true, ['allow-stale'] = true,
                ['no-cluster'] = true, ['allow-cross-slot-keys'] = true }
local NAME_RULE = 'Library names can only contain letters, numbers, or underscores(_) and must be at least one character long'
local pending, pending_names = {}, {}

local function fail(msg)
  error({ err = 'ERR ' .. msg })
end

-- Like Lua's lua_isstring: numbers count as strings.
local function stringish(v)
  local t = type(v)
  return t == 'string' or t == 'number'
end

local string_lower = string.lower
local function read_flags(list)
  local flags, i = {}, 1
  while true do
    local f = list[i]
    if f == nil then break end
    -- Redis compares flag names as C strings: up to a NUL byte.
    local name = stringish(f) and string_lower(tostring(f)):match('^[^%z]*')
    if not name or not FLAGS[name] then fail('unknown flag given') end
    flags[#flags + 1] = name
    i = i + 1
  end
  return flags
end

local string_find, select, next = string.find, select, next

-- LuaJIT's reflection (`jit.util`), for the parameter analysis in param_use.rs; nil with
-- plain Lua 5.1, where nothing is recycled.
local debug_getlocal = debug.getlocal
local jit_util = (debug.getregistry()._PRELOAD or {})['jit.util']
jit_util = jit_util and jit_util()

-- Appends fn's instructions to `code` (word, operand modes, word, ...) and returns the
-- prototypes of the closures it can create. `each(ins)` sees every instruction word.
local function read_code(fn, code, each)
  local info, funcbc, funck = jit_util.funcinfo(fn), jit_util.funcbc, jit_util.funck
  for pc = 1, info.bytecodes - 1 do
    local ins, modes = funcbc(fn, pc)
    code[#code + 1] = ins
    code[#code + 1] = modes
    if each then each(ins) end
  end
  local children = {}
  for k = 1, info.gcconsts do
    local child = funck(fn, -k)
    if type(child) == 'proto' then children[#children + 1] = child end
  end
  return children
end

-- What the engine needs to know of a callback before its first call: how many of its two
-- arguments (keys, args) it can ever see (what it declares, or both for `...`); and, with
-- jit.util, its code, the upvalue names of every closure it can create, its parameter
-- count and the names of its first two parameters.
local function shape_of(f)
  local info = debug_getinfo(f, 'u')
  local n = info.nparams
  if type(n) ~= 'number' then return 2 end
  local reach = info.isvararg and 2 or (n < 2 and n or 2)
  if reach == 0 or not jit_util then return reach end
  local code, captured = {}, {}
  for _, child in ipairs(read_code(f, code)) do
    local uv = 0
    while true do
      local name = jit_util.funcuvname(child, uv)
      if not name then break end
      captured[name] = true
      uv = uv + 1
    end
  end
  return reach, code, captured, n, debug_getlocal(f, 1), debug_getlocal(f, 2)
end

-- An EVAL script's code, all its functions, for scripts_index_only in param_use.rs, and
-- per instruction the string constant its D operand would name (false for none; only
-- GGET/GSET are looked at). Nil without jit.util.
local function script_code_of(f)
  if not jit_util then return nil end
  local code, strings, pending = {}, {}, { f }
  while #pending > 0 do
    local fn = pending[#pending]
    pending[#pending] = nil
    local children = read_code(fn, code, function(ins)
      local k = jit_util.funck(fn, -(bit.rshift(ins, 16) + 1))
      strings[#strings + 1] = type(k) == 'string' and k or false
    end)
    for _, child in ipairs(children) do pending[#pending + 1] = child end
  end
  return code, strings
end

local loading = false

local function register_function(...)
  if not loading then fail(API .. '.register_function can only be called on RX.LOAD command') end
  local argc = select('#', ...)
  if argc < 1 or argc > 2 then fail('wrong number of arguments to ' .. API .. '.register_function') end
  local name, callback, flags, description
  if argc == 1 then
    local named = ...
    if type(named) ~= 'table' then
      fail('calling ' .. API .. '.register_function with a single argument is only applicable to Lua table (representing named arguments).')
    end
    for k, v in next, named do
      if not stringish(k) then fail('named argument key given to ' .. API .. '.register_function is not a string') end
      local key = string_lower(tostring(k))
      if key == 'function_name' then
        if not stringish(v) then fail('function_name argument given to ' .. API .. '.register_function must be a string') end
        name = tostring(v)
      elseif key == 'description' then
        if not stringish(v) then fail('description argument given to ' .. API .. '.register_function must be a string') end
        description = tostring(v)
      elseif key == 'callback' then
        if type(v) ~= 'function' then fail('callback argument given to ' .. API .. '.register_function must be a function') end
        callback = v
      elseif key == 'flags' then
        if type(v) ~= 'table' then fail('flags argument to ' .. API .. '.register_function must be a table representing function flags') end
        flags = read_flags(v)
      else
        fail('unknown argument given to ' .. API .. '.register_function')
      end
    end
    if not name then fail(API .. '.register_function must get a function name argument') end
    if not callback then fail(API .. '.register_function must get a callback argument') end
  else
    local n, f = ...
    if not stringish(n) then fail('first argument to ' .. API .. '.register_function must be a string') end
    if type(f) ~= 'function' then fail('second argument to ' .. API .. '.register_function must be a function') end
    name, callback = tostring(n), f
  end
  -- Valkey checks names after the body ran (src/dialect.rs, late_function_name_checks).
  if not dialect.late_names then
    if not string_find(name, '^[%w_]+$') then fail(NAME_RULE) end
    if pending_names[name] then fail('Function already exists in the library') end
  end
  pending_names[name] = true
  pending[#pending + 1] = { name = name, callback = callback, flags = flags or {}, description = description }
end

local load_redis = { register_function = register_function, log = redis_api.log }
for _, k in ipairs({ 'LOG_DEBUG', 'LOG_VERBOSE', 'LOG_NOTICE', 'LOG_WARNING', 'REDIS_VERSION', 'REDIS_VERSION_NUM',
                     'VALKEY_VERSION', 'VALKEY_VERSION_NUM', 'SERVER_NAME' }) do
  load_redis[k] = redis_api[k]
end
local load_redis_proxy = strict(load_redis)
local load_api = strict({ redis = load_redis_proxy, server = dialect.valkey and load_redis_proxy or nil })

local function begin_load()
  pending, pending_names = {}, {}
  loading = true
  env_mt.__index = load_api
end

-- Always called after a library body ran (or failed); hands back what it registered.
local function finish_load()
  env_mt.__index = G
  loading = false
  local registered = pending
  pending, pending_names = {}, {}
  return registered
end

-- Error handler: errors become `{err=...}` tables that carry where they were raised, the
-- way Redis reports them ("... script: f, on @user_function:2.").
-- running[1]: the function being invoked, for errors with no Lua frame left. Set by
-- `run_library_body` and by the engine, which calls functions directly from C on the hot path.
local running = {}

-- Names of the C functions scripts can call, to repair messages LuaJIT could not name.
local c_names = {}
for _, lib in ipairs({ string, table, math, coroutine, cjson, cmsgpack, struct, bit }) do
  for name, f in pairs(lib) do c_names[f] = name end
end
if original_tohex then c_names[original_tohex] = 'tohex' end
c_names[G.tostring] = 'tostring'
for _, name in ipairs({ 'assert', 'collectgarbage', 'getmetatable', 'pcall', 'rawequal', 'select',
                        'setmetatable', 'tonumber', 'tostring', 'type', 'unpack', 'xpcall' }) do
  c_names[_G[name]] = name
end
local raw_error = error

local function on_error(err)
  -- An error reply `rx.fcall` raised already says where the callee failed.
  if fcall_errors[err] then return err end
  local raising -- the innermost named library function on the way up, if any
  local level = 2
  local info = debug_getinfo(level, 'Slf')
  while info and (info.what == 'C' or info.source == INTERNAL) do
    -- A library function written here in Lua (string.format, tostring) raises through
    -- `error`: it, not `error`, is the one to name.
    if c_names[info.func] and (not raising or raising.func == raw_error) then
      raising = info
    elseif not raising and info.what == 'C' and info.func == raw_error then
      raising = info
    end
    level = level + 1
    info = debug_getinfo(level, 'Slf')
  end
  if not info and running[1] then
    -- LuaJIT replaces the caller's frame on a tail call such as `return redis.call(...)`,
    -- so the line is gone. Report the running function: its line for a one-line
    -- function, else the line before its `end`, where such a return usually stands.
    local f = debug_getinfo(running[1], 'S')
    local line = f.linedefined
    if f.what == 'main' then
      line = f.lastlinedefined -- an EVAL script's closing return is its last line
    elseif f.lastlinedefined > f.linedefined then
      line = f.lastlinedefined - 1
    end
    info = { source = f.source, currentline = line }
    -- The C function's own message lost its position and name the same way; Lua 5.1
    -- would have written `user_function:<line>: bad argument #1 to 'rep' (...)`.
    if type(err) == 'string' and raising and raising.func ~= raw_error then
      local name = c_names[raising.func]
      if name then err = err:gsub("to '%?'", "to '" .. name .. "'", 1) end
      if f.source:sub(1, 1) == '@' and not err:find('^[^%s]+:%d+: ') then
        err = f.source:sub(2) .. ':' .. line .. ': ' .. err
      end
    end
  end
  if type(err) == 'string' and info and info.currentline and info.currentline > 0
      and (err == 'stack overflow' or err:find('^[^%s]*:%d+: stack overflow$')) then
    -- Lua 5.1 names the line of the call that overflowed. LuaJIT's interpreter raises it
    -- as the callee starts, before the callee has a frame (the first Lua frame is the
    -- caller); its compiled code raises it at the callee's first line (then the caller is
    -- the next frame).
    local line = info.currentline
    if line == info.linedefined then
      local caller = debug_getinfo(level + 1, 'Sl')
      if caller and caller.currentline > 0 and caller.source == info.source then line = caller.currentline end
    end
    info.currentline = line
    if info.source:sub(1, 1) == '@' then err = info.source:sub(2) .. ':' .. line .. ': stack overflow' end
  end
  if info then err = redis_chunk_ids(err, info.source) end
  if type(err) ~= 'table' then
    err = { err = 'ERR ' .. tostring(err) }
  end
  if info then
    err.source = info.source
    err.line = info.currentline
  end
  return err
end

local xpcall = xpcall
-- Runs a library's body: a chunk called with no arguments, so its `...` is empty (a
-- top-level `redis.log(redis.LOG_NOTICE, ...)` gets one argument, as natively).
local function run_library_body(fn)
  local outer = running[1]
  running[1] = fn
  local ok, result = xpcall(fn, on_error)
  running[1] = outer
  return ok, result
end

-- Reading a missing global is an error, as in Redis; G is complete from here on.
local strict_globals_mt = {
  __index = function(_, k)
    if k == TICK then return tick elseif k == COUNT then return count end
    error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
  end,
  __newindex = readonly_error,
  __metatable = false,
}
setmetatable(G, strict_globals_mt)

-- EVAL scripts see everything functions see, plus the KEYS and ARGV globals of the
-- running call and the EVAL-only parts of `redis` (as in Redis). Functions never see them.
local eval_redis = {
  breakpoint = function() return false end, -- no debugger is ever attached
  debug = function() end,
  replicate_commands = function() return true end, -- effects are always replicated
}
-- A full copy, so iterating `redis` lists every field, as in Redis.
for k, v in next, redis_api do eval_redis[k] = v end
-- A full copy of G (which never changes after start-up), so that `_G` in a script is one
-- table holding every global, as in Redis.
local eval_globals = {}
for k, v in next, G do eval_globals[k] = v end
eval_globals.redis = readonly(eval_redis)
setmetatable(eval_globals, strict_globals_mt)
local eval_env = setmetatable({}, { __index = eval_globals, __newindex = readonly_error, __metatable = false })
real_of[eval_env] = eval_globals
visible_meta[eval_env] = readonly({})
rawset(eval_globals, '_G', eval_env)

return {
  env = env,
  eval_env = eval_env,
  begin_load = begin_load,
  finish_load = finish_load,
  on_error = on_error,
  run_library_body = run_library_body,
  shape_of = shape_of,
  script_code_of = script_code_of,
  running = running,
  eval_globals = eval_globals,
}
