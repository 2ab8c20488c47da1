#!lua name=cart
-- cart: shopping carts kept in one hash per cart (field = product, value = quantity),
-- bounded by available stock, expiring after a TTL refreshed on every add.
-- Every key a function touches is passed in KEYS. Prices are integers in minor units.

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

local function check_type(key, want)
  local t = key_type(key)
  if t ~= 'none' and t ~= want then return err('key holds the wrong kind of value') end
  return nil
end

-- Cart contents as a sorted list of {product, quantity}; nil + error reply when corrupt.
local function read_cart(cart_key)
  local e = check_type(cart_key, 'hash')
  if e then return nil, e end
  local flat = redis.call('HGETALL', cart_key)
  local items = {}
  for i = 1, #flat, 2 do
    if not is_int_text(flat[i + 1]) then return nil, err('value at key is not an integer') end
    items[#items + 1] = {flat[i], tonumber(flat[i + 1])}
  end
  table.sort(items, function(a, b) return a[1] < b[1] end)
  return items
end

-- KEYS: cart hash, stock key of the product. ARGV: product, quantity, ttl seconds.
local function cart_add(keys, args)
  if #keys ~= 2 then return err('wrong number of keys') end
  if #args ~= 3 then return err('wrong number of arguments') end
  local cart_key, stock_key = keys[1], keys[2]
  local product = args[1]
  if #product == 0 then return err('product must not be empty') end
  local quantity = parse_uint(args[2], false)
  if not quantity then return err('quantity must be a positive integer') end
  local ttl = parse_uint(args[3], false)
  if not ttl then return err('ttl must be a positive integer') end
  local e = check_type(cart_key, 'hash')
  if e then return e end
  local st = key_type(stock_key)
  if st == 'none' then return err('product not found') end
  if st ~= 'string' then return err('key holds the wrong kind of value') end
  local stock = redis.call('GET', stock_key)
  if not is_int_text(stock) then return err('value at key is not an integer') end
  stock = tonumber(stock)
  local have = redis.call('HGET', cart_key, product)
  if have and not is_int_text(have) then return err('value at key is not an integer') end
  have = tonumber(have or '0')
  if have + quantity > stock then return err('insufficient stock') end

  local now = redis.call('HINCRBY', cart_key, product, quantity)
  redis.call('EXPIRE', cart_key, ttl)
  return {map = {
    product = product, quantity = now, items = redis.call('HLEN', cart_key), ttl = ttl,
  }}
end

-- KEYS: cart hash. ARGV: product [, quantity]. Without quantity the whole line goes.
local function cart_remove(keys, args)
  if #keys ~= 1 then return err('wrong number of keys') end
  if #args ~= 1 and #args ~= 2 then return err('wrong number of arguments') end
  local cart_key, product = keys[1], args[1]
  if #product == 0 then return err('product must not be empty') end
  local quantity
  if #args == 2 then
    quantity = parse_uint(args[2], false)
    if not quantity then return err('quantity must be a positive integer') end
  end
  local e = check_type(cart_key, 'hash')
  if e then return e end
  local have = redis.call('HGET', cart_key, product)
  if not have then return err('product not in cart') end
  if not is_int_text(have) then return err('value at key is not an integer') end
  have = tonumber(have)
  if quantity == nil then quantity = have end
  if quantity > have then return err('quantity exceeds the quantity in the cart') end

  local left = have - quantity
  if left == 0 then
    redis.call('HDEL', cart_key, product)
  else
    redis.call('HINCRBY', cart_key, product, -quantity)
  end
  return {map = {
    product = product, removed = quantity, quantity = left,
    items = redis.call('HLEN', cart_key),
  }}
end

-- KEYS: cart hash, price hash (field = product, value = unit price).
local function cart_get(keys, args)
  if #keys ~= 2 then return err('wrong number of keys') end
  if #args ~= 0 then return err('wrong number of arguments') end
  local cart_key, price_key = keys[1], keys[2]
  local items, e = read_cart(cart_key)
  if e then return e end
  e = check_type(price_key, 'hash')
  if e then return e end
  local out, total, count = {}, 0, 0
  for i, it in ipairs(items) do
    local price = redis.call('HGET', price_key, it[1])
    if not price then return err('no price for a product in the cart') end
    price = parse_uint(price, true)
    if not price then return err('price is not a non-negative integer') end
    local subtotal = price * it[2]
    total = total + subtotal
    count = count + it[2]
    if total > MAX_SAFE then return err('total is too large') end
    out[i] = {map = {product = it[1], quantity = it[2], price = price, subtotal = subtotal}}
  end
  return {map = {
    items = out, lines = #items, quantity = count, total = total,
    ttl = redis.call('TTL', cart_key),
  }}
end

-- KEYS: cart hash.
local function cart_clear(keys, args)
  if #keys ~= 1 then return err('wrong number of keys') end
  if #args ~= 0 then return err('wrong number of arguments') end
  local items, e = read_cart(keys[1])
  if e then return e end
  local count = 0
  for _, it in ipairs(items) do count = count + it[2] end
  redis.call('DEL', keys[1])
  return {map = {lines = #items, quantity = count}}
end

redis.register_function{
  function_name = 'cart_add',
  callback = cart_add,
  description = 'KEYS: cart, product stock. ARGV: product, quantity, ttl seconds.',
}
redis.register_function{
  function_name = 'cart_remove',
  callback = cart_remove,
  description = 'KEYS: cart. ARGV: product [, quantity]. Removes a quantity or the whole line.',
}
redis.register_function{
  function_name = 'cart_get',
  callback = cart_get,
  flags = {'no-writes'},
  description = 'KEYS: cart, price hash. Items with prices, subtotals and the total.',
}
redis.register_function{
  function_name = 'cart_clear',
  callback = cart_clear,
  description = 'KEYS: cart. Empties the cart.',
}
