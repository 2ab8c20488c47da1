-- INFO rx as Prometheus series, through redis_exporter's -script option.
--
--   prometheus-redis-exporter -redis.addr redis://host:6379 -script /path/to/rx_info.lua
--
-- redis_exporter runs this file with the server's own EVAL on every scrape and turns the
-- reply (alternating names and values, all strings, as HGETALL answers) into gauges named
-- redis_script_values, with the name in the `key` label:
--
--   rx_calls, rx_errors, rx_refusals, rx_libraries, rx_functions, rx_scripts,
--   rx_vm_memory_bytes, rx_history_entries, rx_history_code_bytes,
--   rx_aof_rewrite_keeps_libraries
--       the plain fields of INFO rx (totals over every function and cached script);
--   rx_fn:<function>:<field>
--       one per field of a function's line (rx_fn_<function>:calls=...,...);
--   rx_script:<sha1>:<field>
--       one per field of an EVAL script's line (rx_script_<sha1>:calls=...,...).
--
-- <field> is calls, errors, refusals, usec, usec_per_call, max_usec, p50_usec, p99_usec,
-- p999_usec or redis_calls: whatever the line carries (README, "INFO rx"). Function names
-- hold only letters, digits and underscores and a SHA1 only hex digits, so ':' cannot
-- appear in them and splits the key unambiguously (in PromQL, with label_replace).
--
-- The script only reads: it calls INFO and nothing else, so it runs on replicas and over
-- maxmemory. The exporter's user needs the INFO command (ACL category @dangerous) and
-- EVAL. Values are passed on as INFO printed them, never through Lua numbers.

local out = {}

local function add(name, value)
  out[#out + 1] = name
  out[#out + 1] = value
end

local info = redis.call('INFO', 'rx')
for line in string.gmatch(info, '[^\r\n]+') do
  local key, value = string.match(line, '^(rx_[%w_]+):(.*)$')
  if key then
    local kind, name = string.match(key, '^rx_(fn)_(.+)$')
    if not kind then
      kind, name = string.match(key, '^rx_(script)_(.+)$')
    end
    if kind and string.find(value, '=', 1, true) then
      for field, v in string.gmatch(value, '([%w_]+)=([^,]*)') do
        if tonumber(v) then
          add('rx_' .. kind .. ':' .. name .. ':' .. field, v)
        end
      end
    elseif tonumber(value) then
      add(key, value)
    end
  end
end
return out
