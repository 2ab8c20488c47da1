#!lua name=ecommerce
-- ecommerce: purchases that never oversell, cancellation that restores stock exactly
-- once, and per-product statistics. Every key a function touches is passed in KEYS.
-- Amounts (price, total, revenue) are integers in the currency's minor unit (cents).

local MAX_DIGITS = 15 -- keeps every number exact in a Lua double (< 2^53)
local MAX_SAFE = 9007199254740991

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

local function is_int_text(v)
  return type(v) == 'string' and #v <= MAX_DIGITS + 1 and string.match(v, '^-?%d+$') ~= nil
end

local function key_type(key)
  return redis.call('TYPE', key)['ok']
end

-- Integer at a string key: `missing` when absent; nil + error reply when unusable.
local function read_int(key, missing)
  local t = key_type(key)
  if t == 'none' then return missing end
  if t ~= 'string' then return nil, err('key holds the wrong kind of value') end
  local v = redis.call('GET', key)
  if not is_int_text(v) then return nil, err('value at key is not an integer') end
  return tonumber(v)
end

-- Checks a key is absent or of type `want`.
local function check_type(key, want)
  local t = key_type(key)
  if t ~= 'none' and t ~= want then return err('key holds the wrong kind of value') end
  return nil
end

-- Integer hash fields: missing fields are 0.
local function read_hash_ints(key, fields)
  local out = {}
  local vals = redis.call('HMGET', key, unpack(fields))
  for i, f in ipairs(fields) do
    local v = vals[i]
    if not v then
      out[f] = 0
    elseif not is_int_text(v) then
      return nil, err('value at key is not an integer')
    else
      out[f] = tonumber(v)
    end
  end
  return out
end

-- An order is stored in the orders hash as fields "<order id>:<name>", one per attribute,
-- so records stay binary-safe and readable with HGETALL/HMGET.
local ORDER_FIELDS = {'status', 'user', 'product', 'quantity', 'price', 'total', 'created_ms',
  'cancelled_ms', 'stock_key', 'sold_key', 'stats_key'}

local function write_order(orders_key, id, o)
  local argv = {}
  for _, f in ipairs(ORDER_FIELDS) do
    argv[#argv + 1] = id .. ':' .. f
    local v = o[f]
    if type(v) == 'number' then v = string.format('%d', v) end
    argv[#argv + 1] = v
  end
  redis.call('HSET', orders_key, unpack(argv))
end

local function read_order(orders_key, id)
  local names = {}
  for i, f in ipairs(ORDER_FIELDS) do names[i] = id .. ':' .. f end
  local vals = redis.call('HMGET', orders_key, unpack(names))
  if not vals[1] then return nil end
  local o = {}
  for i, f in ipairs(ORDER_FIELDS) do
    if not vals[i] then return nil, err('order record is corrupt') end
    o[f] = vals[i]
  end
  for _, f in ipairs({'quantity', 'price', 'total', 'created_ms', 'cancelled_ms'}) do
    if not is_int_text(o[f]) then return nil, err('order record is corrupt') end
    o[f] = tonumber(o[f])
  end
  return o
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- KEYS: stock, sold, order-id counter, orders hash, user order history list, product stats hash
-- ARGV: user, product, quantity, price
local function ecommerce_purchase(keys, args)
  if #keys ~= 6 then return err('wrong number of keys') end
  if #args ~= 4 then return err('wrong number of arguments') end
  local stock_key, sold_key, seq_key, orders_key, history_key, stats_key =
    keys[1], keys[2], keys[3], keys[4], keys[5], keys[6]
  local user, product = args[1], args[2]
  if #user == 0 then return err('user must not be empty') end
  if #product == 0 then return err('product must not be empty') end
  local quantity = parse_uint(args[3], false)
  if not quantity then return err('quantity must be a positive integer') end
  local price = parse_uint(args[4], true)
  if not price then return err('price must be a non-negative integer') end
  local total = quantity * price
  if total > MAX_SAFE then return err('total is too large') end

  local stock, e = read_int(stock_key, nil)
  if e then return e end
  if stock == nil then return err('product not found') end
  local sold
  sold, e = read_int(sold_key, 0)
  if e then return e end
  local seq
  seq, e = read_int(seq_key, 0)
  if e then return e end
  e = check_type(orders_key, 'hash') or check_type(history_key, 'list')
    or check_type(stats_key, 'hash')
  if e then return e end
  local stats
  stats, e = read_hash_ints(stats_key, {'orders', 'cancelled', 'revenue'})
  if e then return e end
  if stock < quantity then return err('insufficient stock') end
  if stats.revenue + total > MAX_SAFE then return err('total is too large') end
  local order_id = seq + 1
  if redis.call('HEXISTS', orders_key, order_id .. ':status') == 1 then
    return err('order id already exists')
  end

  -- All checks passed: write.
  local remaining = redis.call('DECRBY', stock_key, quantity)
  local sold_now = redis.call('INCRBY', sold_key, quantity)
  redis.call('INCR', seq_key)
  write_order(orders_key, tostring(order_id), {
    status = 'placed', user = user, product = product,
    quantity = quantity, price = price, total = total, created_ms = now_ms(),
    cancelled_ms = 0, stock_key = stock_key, sold_key = sold_key, stats_key = stats_key,
  })
  redis.call('RPUSH', history_key, tostring(order_id))
  redis.call('HINCRBY', stats_key, 'orders', 1)
  redis.call('HINCRBY', stats_key, 'revenue', total)
  return {map = {
    order_id = order_id, user = user, product = product, quantity = quantity,
    price = price, total = total, stock = remaining, sold = sold_now,
  }}
end

-- KEYS: stock, sold, orders hash, product stats hash
-- ARGV: order id
local function ecommerce_cancel(keys, args)
  if #keys ~= 4 then return err('wrong number of keys') end
  if #args ~= 1 then return err('wrong number of arguments') end
  local stock_key, sold_key, orders_key, stats_key = keys[1], keys[2], keys[3], keys[4]
  local order_id = parse_uint(args[1], false)
  if not order_id then return err('order id must be a positive integer') end
  local e = check_type(orders_key, 'hash')
  if e then return e end
  local o
  o, e = read_order(orders_key, args[1])
  if e then return e end
  if not o then return err('order not found') end
  if o.stock_key ~= stock_key or o.sold_key ~= sold_key or o.stats_key ~= stats_key then
    return err('keys do not match the order')
  end
  if o.status == 'cancelled' then return err('order already cancelled') end
  -- Validate every key the writes below touch (values are read only to check them).
  local _
  _, e = read_int(stock_key, 0)
  if e then return e end
  _, e = read_int(sold_key, 0)
  if e then return e end
  e = check_type(stats_key, 'hash')
  if e then return e end
  _, e = read_hash_ints(stats_key, {'orders', 'cancelled', 'revenue'})
  if e then return e end

  local restored = redis.call('INCRBY', stock_key, o.quantity)
  local sold_now = redis.call('DECRBY', sold_key, o.quantity)
  redis.call('HSET', orders_key, args[1] .. ':status', 'cancelled',
    args[1] .. ':cancelled_ms', string.format('%d', now_ms()))
  redis.call('HINCRBY', stats_key, 'orders', -1)
  redis.call('HINCRBY', stats_key, 'cancelled', 1)
  redis.call('HINCRBY', stats_key, 'revenue', -o.total)
  return {map = {
    order_id = order_id, status = 'cancelled', product = o.product, user = o.user,
    quantity = o.quantity, refund = o.total, stock = restored, sold = sold_now,
  }}
end

-- KEYS: stock, sold, product stats hash
local function ecommerce_product_stats(keys, args)
  if #keys ~= 3 then return err('wrong number of keys') end
  if #args ~= 0 then return err('wrong number of arguments') end
  local stock, e = read_int(keys[1], nil)
  if e then return e end
  if stock == nil then return err('product not found') end
  local sold
  sold, e = read_int(keys[2], 0)
  if e then return e end
  e = check_type(keys[3], 'hash')
  if e then return e end
  local stats
  stats, e = read_hash_ints(keys[3], {'orders', 'cancelled', 'revenue'})
  if e then return e end
  return {map = {
    stock = stock, sold = sold, orders = stats.orders, cancelled = stats.cancelled,
    revenue = stats.revenue,
  }}
end

redis.register_function{
  function_name = 'ecommerce_purchase',
  callback = ecommerce_purchase,
  description = 'KEYS: stock, sold, order-id counter, orders hash, user history, product stats. '
    .. 'ARGV: user, product, quantity, price.',
}
redis.register_function{
  function_name = 'ecommerce_cancel',
  callback = ecommerce_cancel,
  description = 'KEYS: stock, sold, orders hash, product stats. ARGV: order id.',
}
redis.register_function{
  function_name = 'ecommerce_product_stats',
  callback = ecommerce_product_stats,
  flags = {'no-writes'},
  description = 'KEYS: stock, sold, product stats. Stock, sold, orders, cancelled, revenue.',
}
