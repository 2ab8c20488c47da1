#!lua name=bench
-- The same library is loaded natively (FUNCTION LOAD) and into RX; every case below is
-- called through FCALL and RX.CALL with identical arguments.
redis.register_function('const', function() return 1 end)
redis.register_function{function_name = 'get', callback = function(keys) return redis.call('GET', keys[1]) end, flags = {'no-writes'}}
redis.register_function('write5', function(keys)
  redis.call('GET', keys[1])
  redis.call('DECRBY', keys[2], 1)
  redis.call('INCRBY', keys[3], 2)
  redis.call('INCR', keys[4])
  return redis.call('HSET', keys[1] .. ':h', 'f', 'v')
end)
redis.register_function('loop', function()
  local x = 0
  for i = 1, 1000 do x = x + i * 2 - 1 end
  return x
end)
redis.register_function('concat_table', function()
  local parts = {}
  for i = 1, 1000 do parts[i] = 'x' end
  return #table.concat(parts)
end)
redis.register_function('concat_dots', function()
  local s = ''
  for i = 1, 1000 do s = s .. 'x' end
  return #s
end)
redis.register_function('cjson', function()
  local t = {}
  for i = 1, 50 do t['field' .. i] = i end
  local back = cjson.decode(cjson.encode(t))
  return back.field50
end)
