//! cjson against native Redis 7.0.15's replies, and its limits.

use super::decode::fast_integer;
use super::*;
use rx_core::strtod::strtod;

/// Helpers shared by every case: `show(...)` renders values canonically
/// (numbers with %.17g, strings with non-printable bytes as \xx, tables
/// with sorted keys, cjson.null as `null`).
const PRELUDE: &str = r#"local function esc(s) return (s:gsub('[^%w%p ]', function(c) return string.format('\\%02x', c:byte()) end)) end local function one(v) local t = type(v) if t == 'string' then return '"'..esc(v)..'"' elseif t == 'number' then if v ~= v then return 'nan' end return string.format('%.17g', v) elseif t == 'table' then local ks = {} for k, x in pairs(v) do ks[#ks+1] = '['..one(k)..']='..one(x) end table.sort(ks) return '{'..table.concat(ks, ',')..'}' elseif t == 'userdata' then if cjson and v == cjson.null then return 'null' end return 'userdata' else return tostring(v) end end local function show(...) local n = select('#', ...) local o = {} for i = 1, n do o[i] = one((select(i, ...))) end return table.concat(o, ' | ') end local function hex(s) return (s:gsub('.', function(c) return string.format('%02x', c:byte()) end)) end"#;

/// (script body, expected reply). Every expectation was produced by native
/// Redis 7.0.15 with `redis-cli EVAL "<PRELUDE> <script body>" 0`
/// on a freshly started server (cases that change configuration ran alone).
const CASES: &[(&str, &str)] = &[
    (
        r#"return show(cjson._NAME, cjson._VERSION, cjson.null, type(cjson.null), cjson.null == nil)"#,
        r#""cjson" | "2.1.0" | null | "userdata" | false"#,
    ),
    (r#"return show(cjson.encode({1,2,'x'}))"#, r#""[1,2,"x"]""#),
    (r#"return show(cjson.encode({}))"#, r#""{}""#),
    (r#"return show(cjson.encode({a=1}))"#, r#""{"a":1}""#),
    (
        r#"return show(cjson.encode({a={b={c={}}}}))"#,
        r#""{"a":{"b":{"c":{}}}}""#,
    ),
    (
        r#"return show(cjson.encode({1.5, 0.1, 1/3, 1e100, -0.0, 123456789012345678, 2^53, 1e-5, 0.0001, 1e15, 1e16, -1.5e-7, 5e-324, 1.7976931348623157e308}))"#,
        r#""[1.5,0.1,0.33333333333333,1e+100,-0,1.2345678901235e+17,9.007199254741e+15,1e-05,0.0001,1e+15,1e+16,-1.5e-07,4.9406564584125e-324,1.7976931348623e+308]""#,
    ),
    (
        r#"return show(cjson.encode(100), cjson.encode(-7), cjson.encode(12345678901234), cjson.encode(123456789012345))"#,
        r#""100" | "-7" | "12345678901234" | "1.2345678901234e+14""#,
    ),
    (
        r#"return show(cjson.encode('a/b"c\\d\1\31\127\128\255'))"#,
        r#"""a\/b\"c\\d\u0001\u001f\u007f\80\ff"""#,
    ),
    (
        r#"return show(cjson.encode('\0\8\9\10\11\12\13\14 ~'))"#,
        r#"""\u0000\b\t\n\u000b\f\r\u000e ~"""#,
    ),
    (
        r#"return show(cjson.encode({[1]=1,[3]=3}))"#,
        r#""[1,null,3]""#,
    ),
    (
        r#"return show(cjson.encode({[1]=1,[4]=4}))"#,
        r#""[1,null,null,4]""#,
    ),
    (
        r#"return show(pcall(cjson.encode, {[1]=1,[11]=4}))"#,
        r#"false | "Cannot serialise table: excessively sparse array""#,
    ),
    (
        r#"return show(pcall(function() local r = cjson.encode({[1]=1,[11]=4}) return r end))"#,
        r#"false | "user_script:1: Cannot serialise table: excessively sparse array""#,
    ),
    (
        r#"return show(pcall(cjson.encode, {[2]=1,[3]=3,[20]=1}))"#,
        r#"false | "Cannot serialise table: excessively sparse array""#,
    ),
    (r#"return show(cjson.encode({[1.5]=1}))"#, r#""{"1.5":1}""#),
    (r#"return show(cjson.encode({[0]=1}))"#, r#""{"0":1}""#),
    (r#"return show(cjson.encode({[-1]=1}))"#, r#""{"-1":1}""#),
    (
        r#"return show(cjson.encode({[1e10]=1}))"#,
        r#""{"10000000000":1}""#,
    ),
    (
        r#"return show(cjson.encode({[2^31]=1}))"#,
        r#""{"2147483648":1}""#,
    ),
    (
        r#"return show(pcall(cjson.encode, {[2^31-1]=1}))"#,
        r#"false | "Cannot serialise table: excessively sparse array""#,
    ),
    (
        r#"return show(pcall(cjson.encode, math.huge))"#,
        r#"false | "Cannot serialise number: must not be NaN or Inf""#,
    ),
    (
        r#"return show(pcall(cjson.encode, -math.huge))"#,
        r#"false | "Cannot serialise number: must not be NaN or Inf""#,
    ),
    (
        r#"return show(pcall(cjson.encode, 0/0))"#,
        r#"false | "Cannot serialise number: must not be NaN or Inf""#,
    ),
    (
        r#"return show(pcall(cjson.encode, {[true]=1}))"#,
        r#"false | "Cannot serialise boolean: table key must be a number or string""#,
    ),
    (
        r#"return show(pcall(cjson.encode, {[{}]=1}))"#,
        r#"false | "Cannot serialise table: table key must be a number or string""#,
    ),
    (
        r#"return show(cjson.encode(cjson.null), cjson.encode(nil), cjson.encode(true), cjson.encode(false))"#,
        r#""null" | "null" | "true" | "false""#,
    ),
    (
        r#"return show(pcall(cjson.encode, coroutine.create(function() end)))"#,
        r#"false | "Cannot serialise thread: type not supported""#,
    ),
    (
        r#"return show(pcall(cjson.encode, {f=function() end}))"#,
        r#"false | "Cannot serialise function: type not supported""#,
    ),
    (
        r#"return show(pcall(cjson.encode, {1, 2, {function() end}}))"#,
        r#"false | "Cannot serialise function: type not supported""#,
    ),
    (
        r#"return show(pcall(cjson.encode))"#,
        r#"false | "bad argument #1 to '?' (expected 1 argument)""#,
    ),
    (
        r#"return show(pcall(cjson.encode, 1, 2))"#,
        r#"false | "bad argument #1 to '?' (expected 1 argument)""#,
    ),
    (
        r#"return show(pcall(function() local r = cjson.encode(1, 2) return r end))"#,
        r#"false | "user_script:1: bad argument #1 to 'encode' (expected 1 argument)""#,
    ),
    (
        r#"return show(pcall(function() local r = cjson:encode() return r end))"#,
        r#"false | "user_script:1: Cannot serialise function: type not supported""#,
    ),
    (
        r#"return show(cjson.encode({['a/b']=1}))"#,
        r#""{"a\/b":1}""#,
    ),
    (r#"return show(cjson.encode({[0.1]=1}))"#, r#""{"0.1":1}""#),
    (
        r#"return show(cjson.encode({1,2,nil,4}))"#,
        r#""[1,2,null,4]""#,
    ),
    (
        r#"return show(cjson.encode({1,2,[3]=nil,x=nil}))"#,
        r#""[1,2]""#,
    ),
    (
        r#"return show(cjson.encode({[1]=1,[2]=2,[3]=3,[4]=4,[5]=5,[6]=6,[7]=7,[8]=8,[9]=9,[10]=10,[12]=12}))"#,
        r#""[1,2,3,4,5,6,7,8,9,10,null,12]""#,
    ),
    (
        r#"return show(cjson.encode({[10]=1}))"#,
        r#""[null,null,null,null,null,null,null,null,null,1]""#,
    ),
    (
        r#"return show(pcall(cjson.encode, {[11]=1}))"#,
        r#"false | "Cannot serialise table: excessively sparse array""#,
    ),
    (
        r#"return show(pcall(cjson.encode, {[6]=1,[12]=1,[13]=1}))"#,
        r#"false | "Cannot serialise table: excessively sparse array""#,
    ),
    (
        r#"return show(cjson.encode(setmetatable({}, {__index=function() return 1 end})))"#,
        r#""{}""#,
    ),
    (
        r#"return show(cjson.encode(setmetatable({1,2}, {__len=function() return 5 end})))"#,
        r#""[1,2]""#,
    ),
    (
        r#"return show(cjson.encode({{}, {{}}, {a={}}}))"#,
        r#""[{},[{}],{"a":{}}]""#,
    ),
    (
        r#"return show(cjson.encode({'\226\130\172', '\240\159\152\128'}))"#,
        r#""["\e2\82\ac","\f0\9f\98\80"]""#,
    ),
    (
        r#"return show(cjson.encode({[1]='a', x=1}):len())"#,
        r#"15"#,
    ),
    (
        r#"local t = {} t[1] = t return show(pcall(cjson.encode, t))"#,
        r#"false | "Cannot serialise, excessive nesting (1001)""#,
    ),
    (
        r#"local t = {} t.a = t return show(pcall(cjson.encode, t))"#,
        r#"false | "Cannot serialise, excessive nesting (1001)""#,
    ),
    (
        r#"local t = {} local c = t for i = 1, 999 do c[1] = {} c = c[1] end return show(#cjson.encode(t))"#,
        r#"2000"#,
    ),
    (
        r#"local t = {} local c = t for i = 1, 1000 do c[1] = {} c = c[1] end return show(pcall(cjson.encode, t))"#,
        r#"false | "Cannot serialise, excessive nesting (1001)""#,
    ),
    (
        r#"local t = {} local c = t for i = 1, 999 do c.k = {} c = c.k end return show(#cjson.encode(t))"#,
        r#"5996"#,
    ),
    (
        r#"local t = {} for i = 1, 20000 do t[i] = i end return show(#cjson.encode(t))"#,
        r#"108895"#,
    ),
    (
        r#"local t = {} for i = 1, 20000 do t['k'..i] = i end return show(#cjson.encode(t))"#,
        r#"277789"#,
    ),
    (
        r#"cjson.encode_max_depth(2) return show(cjson.encode({{1}}))"#,
        r#""[[1]]""#,
    ),
    (
        r#"cjson.encode_max_depth(2) return show(pcall(cjson.encode, {{{1}}}))"#,
        r#"false | "Cannot serialise, excessive nesting (3)""#,
    ),
    (
        r#"cjson.encode_max_depth(2) return show(pcall(cjson.encode, {{},{a={}}}))"#,
        r#"false | "Cannot serialise, excessive nesting (3)""#,
    ),
    (
        r#"cjson.encode_max_depth(100000) local t={} t[1]=t return show(pcall(cjson.encode, t))"#,
        r#"false | "Cannot serialise, excessive nesting (7998)""#,
    ),
    (
        r#"cjson.encode_max_depth(100000) local t={} t.a=t return show(pcall(cjson.encode, t))"#,
        r#"false | "Cannot serialise, excessive nesting (4000)""#,
    ),
    (
        r#"cjson.encode_max_depth(100000) local t={} local u={} t.a=u u[1]=t return show(pcall(cjson.encode, t))"#,
        r#"false | "Cannot serialise, excessive nesting (5332)""#,
    ),
    (
        r#"cjson.encode_number_precision(3) return show(cjson.encode({1/3, 12345, 0.0001234, 1e-5}))"#,
        r#""[0.333,1.23e+04,0.000123,1e-05]""#,
    ),
    (
        r#"cjson.encode_number_precision(1) return show(cjson.encode({1/3, 12345, 0.5, 5e-5, 9.5, 0.95, 150}))"#,
        r#""[0.3,1e+04,0.5,5e-05,1e+01,0.9,2e+02]""#,
    ),
    (
        r#"cjson.encode_number_precision(14) return show(cjson.encode({0.1+0.2, 100, 1e21}))"#,
        r#""[0.3,100,1e+21]""#,
    ),
    (
        r#"cjson.encode_invalid_numbers(true) return show(cjson.encode({1/0,-1/0,0/0,-(0/0)}))"#,
        r#""[inf,-inf,nan,nan]""#,
    ),
    (
        r#"cjson.encode_invalid_numbers('null') return show(cjson.encode({1/0,-1/0,0/0}))"#,
        r#""[null,null,null]""#,
    ),
    (
        r#"cjson.encode_invalid_numbers(true) return show(cjson.encode({[1/0]=1}))"#,
        r#""{"inf":1}""#,
    ),
    (
        r#"cjson.encode_invalid_numbers('null') return show(cjson.encode({[1/0]=1}))"#,
        r#""{"null":1}""#,
    ),
    (
        r#"cjson.encode_invalid_numbers(false) return show(pcall(cjson.encode, {[-1/0]=1}))"#,
        r#"false | "Cannot serialise number: must not be NaN or Inf""#,
    ),
    (
        r#"cjson.encode_sparse_array(true) return show(cjson.encode({[20]=2}), cjson.encode({[1]=1,[2]=2}))"#,
        r#""{"20":2}" | "[1,2]""#,
    ),
    (
        r#"cjson.encode_sparse_array(false, 0) return show(cjson.encode({[1]=1,[20]=2}))"#,
        r#""[1,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,2]""#,
    ),
    (
        r#"cjson.encode_sparse_array(false, 1, 0) return show(pcall(cjson.encode, {[1]=1,[3]=2}))"#,
        r#"false | "Cannot serialise table: excessively sparse array""#,
    ),
    (
        r#"cjson.encode_sparse_array(false, 2, 0) return show(cjson.encode({[1]=1,[3]=2}))"#,
        r#""[1,null,2]""#,
    ),
    (
        r#"cjson.encode_sparse_array(true, 2, 0) return show(cjson.encode({[1]=1,[4]=2}))"#,
        r#""[1,null,null,2]""#,
    ),
    (
        r#"return show(cjson.encode_max_depth(), cjson.decode_max_depth(), cjson.encode_number_precision(), cjson.encode_keep_buffer(), cjson.encode_invalid_numbers(), cjson.decode_invalid_numbers(), cjson.encode_sparse_array())"#,
        r#"1000 | 1000 | 14 | true | false | true | false | 2 | 10"#,
    ),
    (
        r#"return show(cjson.encode_max_depth(2), cjson.encode_max_depth())"#,
        r#"2 | 2"#,
    ),
    (
        r#"return show(pcall(cjson.encode_max_depth, 0))"#,
        r#"false | "bad argument #1 to '?' (expected integer between 1 and 2147483647)""#,
    ),
    (
        r#"return show(pcall(function() local r = cjson.encode_max_depth(0) return r end))"#,
        r#"false | "user_script:1: bad argument #1 to 'encode_max_depth' (expected integer between 1 and 2147483647)""#,
    ),
    (
        r#"return show(pcall(function() local r = cjson.encode_max_depth('x') return r end))"#,
        r#"false | "user_script:1: bad argument #1 to 'encode_max_depth' (number expected, got string)""#,
    ),
    (
        r#"return show(pcall(function() local r = cjson.encode_max_depth(1, 2) return r end))"#,
        r#"false | "user_script:1: bad argument #2 to 'encode_max_depth' (found too many arguments)""#,
    ),
    (
        r#"return show(cjson.encode_max_depth(2.7), cjson.encode_max_depth('3'), cjson.encode_max_depth(nil))"#,
        r#"2 | 3 | 3"#,
    ),
    (r#"return show(cjson.encode_max_depth(2^32 + 5))"#, r#"5"#),
    (
        r#"return show(pcall(cjson.encode_max_depth, 2^31))"#,
        r#"false | "bad argument #1 to '?' (expected integer between 1 and 2147483647)""#,
    ),
    (
        r#"return show(pcall(cjson.decode_max_depth, -1))"#,
        r#"false | "bad argument #1 to '?' (expected integer between 1 and 2147483647)""#,
    ),
    (
        r#"return show(pcall(function() local r = cjson.encode_number_precision(15) return r end))"#,
        r#"false | "user_script:1: bad argument #1 to 'encode_number_precision' (expected integer between 1 and 14)""#,
    ),
    (
        r#"return show(pcall(cjson.encode_number_precision, 0))"#,
        r#"false | "bad argument #1 to '?' (expected integer between 1 and 14)""#,
    ),
    (
        r#"return show(cjson.encode_number_precision(5), cjson.encode(1/3))"#,
        r#"5 | "0.33333""#,
    ),
    (
        r#"return show(cjson.encode_keep_buffer(false), cjson.encode_keep_buffer('on'), cjson.encode_keep_buffer('off'), cjson.encode_keep_buffer())"#,
        r#"false | true | false | false"#,
    ),
    (
        r#"return show(pcall(function() local r = cjson.encode_keep_buffer('x') return r end))"#,
        r#"false | "user_script:1: bad argument #1 to 'encode_keep_buffer' (invalid option 'x')""#,
    ),
    (
        r#"return show(pcall(function() local r = cjson.encode_keep_buffer(1) return r end))"#,
        r#"false | "user_script:1: bad argument #1 to 'encode_keep_buffer' (invalid option '1')""#,
    ),
    (
        r#"return show(pcall(function() local r = cjson.encode_keep_buffer({}) return r end))"#,
        r#"false | "user_script:1: bad argument #1 to 'encode_keep_buffer' (string expected, got table)""#,
    ),
    (
        r#"return show(cjson.encode_keep_buffer('on\0junk'))"#,
        r#"true"#,
    ),
    (
        r#"return show(cjson.encode_invalid_numbers('null'), cjson.encode_invalid_numbers('on'), cjson.encode_invalid_numbers(true), cjson.encode_invalid_numbers('off'), cjson.encode_invalid_numbers(false))"#,
        r#""null" | true | true | false | false"#,
    ),
    (
        r#"return show(pcall(function() local r = cjson.encode_invalid_numbers('x') return r end))"#,
        r#"false | "user_script:1: bad argument #1 to 'encode_invalid_numbers' (invalid option 'x')""#,
    ),
    (
        r#"return show(cjson.decode_invalid_numbers(false), cjson.decode_invalid_numbers('on'))"#,
        r#"false | true"#,
    ),
    (
        r#"return show(cjson.encode_sparse_array(true), cjson.encode_sparse_array(nil, 3, 5), cjson.encode_sparse_array())"#,
        r#"true | true | true | 3 | 5"#,
    ),
    (
        r#"return show(pcall(function() local r = cjson.encode_sparse_array(1) return r end))"#,
        r#"false | "user_script:1: bad argument #1 to 'encode_sparse_array' (invalid option '1')""#,
    ),
    (
        r#"return show(pcall(function() local r = cjson.encode_sparse_array(nil, -1) return r end))"#,
        r#"false | "user_script:1: bad argument #1 to 'encode_sparse_array' (expected integer between 0 and 2147483647)""#,
    ),
    (
        r#"return show(pcall(function() local r = cjson.encode_sparse_array(nil, 'x') return r end))"#,
        r#"false | "user_script:1: bad argument #2 to 'encode_sparse_array' (number expected, got string)""#,
    ),
    (
        r#"return show(pcall(function() local r = cjson.encode_sparse_array(nil, nil, nil, nil) return r end))"#,
        r#"false | "user_script:1: bad argument #4 to 'encode_sparse_array' (found too many arguments)""#,
    ),
    (
        r#"return show(pcall(function() local r = cjson.encode_sparse_array(true, 5, -1) return r end), cjson.encode_sparse_array())"#,
        r#"false | true | 5 | 10"#,
    ),
    (
        r#"local c = cjson.new() c.encode_max_depth(2) return show(cjson.encode_max_depth(), c.encode_max_depth(), c._NAME, c._VERSION, c.null, c.new ~= nil, c == cjson, c.encode({1}))"#,
        r#"1000 | 2 | "cjson" | "2.1.0" | null | true | false | "[1]""#,
    ),
    (
        r#"return show(pcall(cjson.decode, 'x'))"#,
        r#"false | "Expected value but found invalid token at character 1""#,
    ),
    (
        r#"return show(pcall(function() local r = cjson.decode('x') return r end))"#,
        r#"false | "user_script:1: Expected value but found invalid token at character 1""#,
    ),
    (
        r#"return show(pcall(cjson.decode, ''))"#,
        r#"false | "Expected value but found T_END at character 1""#,
    ),
    (
        r#"return show(pcall(cjson.decode, ' '))"#,
        r#"false | "Expected value but found T_END at character 2""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '[1,2'))"#,
        r#"false | "Expected comma or array end but found T_END at character 5""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '[1,2,]'))"#,
        r#"false | "Expected value but found T_ARR_END at character 6""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '{"a":1,}'))"#,
        r#"false | "Expected object key string but found T_OBJ_END at character 8""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '{"a" 1}'))"#,
        r#"false | "Expected colon but found T_NUMBER at character 6""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '{1:2}'))"#,
        r#"false | "Expected object key string but found T_NUMBER at character 2""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '{"a":1 "b":2}'))"#,
        r#"false | "Expected comma or object end but found T_STRING at character 8""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '[1 2]'))"#,
        r#"false | "Expected comma or array end but found T_NUMBER at character 4""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '"abc'))"#,
        r#"false | "Expected value but found unexpected end of string at character 5""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '"a\\qb"'))"#,
        r#"false | "Expected value but found invalid escape code at character 3""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '"\\u12"'))"#,
        r#"false | "Expected value but found invalid unicode escape code at character 2""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '"\\u12G4"'))"#,
        r#"false | "Expected value but found invalid unicode escape code at character 2""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '"\\ud800"'))"#,
        r#"false | "Expected value but found invalid unicode escape code at character 2""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '"\\udc00\\ud800"'))"#,
        r#"false | "Expected value but found invalid unicode escape code at character 2""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '"\\ud800\\u0041"'))"#,
        r#"false | "Expected value but found invalid unicode escape code at character 2""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '"\\ud800x"'))"#,
        r#"false | "Expected value but found invalid unicode escape code at character 2""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '"ab\\'))"#,
        r#"false | "Expected value but found invalid escape code at character 4""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '[1] x'))"#,
        r#"false | "Expected the end but found invalid token at character 5""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '[1]\0garbage'))"#,
        r#"true | {[1]=1}"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '\0['))"#,
        r#"false | "JSON parser does not support UTF-16 or UTF-32""#,
    ),
    (
        r#"return show(pcall(cjson.decode, 'a\0'))"#,
        r#"false | "JSON parser does not support UTF-16 or UTF-32""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '"a\0b"'))"#,
        r#"false | "Expected value but found unexpected end of string at character 3""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '1\0'))"#,
        r#"false | "JSON parser does not support UTF-16 or UTF-32""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '\0'))"#,
        r#"false | "Expected value but found T_END at character 1""#,
    ),
    (
        r#"return show(pcall(cjson.decode, 'nul'))"#,
        r#"false | "Expected value but found invalid token at character 1""#,
    ),
    (
        r#"return show(pcall(cjson.decode, 'tru'))"#,
        r#"false | "Expected value but found invalid token at character 1""#,
    ),
    (
        r#"return show(pcall(cjson.decode, 'fals'))"#,
        r#"false | "Expected value but found invalid token at character 1""#,
    ),
    (
        r#"return show(pcall(cjson.decode, 'true'), pcall(cjson.decode, 'false'), pcall(cjson.decode, 'null'))"#,
        r#"true | true | true | null"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '-'))"#,
        r#"false | "Expected value but found invalid number at character 1""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '- 1'))"#,
        r#"false | "Expected value but found invalid number at character 1""#,
    ),
    (r#"return show(pcall(cjson.decode, '+1'))"#, r#"true | 1"#),
    (
        r#"return show(pcall(cjson.decode, '+'))"#,
        r#"false | "Expected value but found invalid number at character 1""#,
    ),
    (r#"return show(pcall(cjson.decode, '01'))"#, r#"true | 1"#),
    (
        r#"return show(pcall(cjson.decode, '-01.5'))"#,
        r#"true | -1.5"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '0x10'))"#,
        r#"true | 16"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '-0x1p4'))"#,
        r#"true | -16"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '0x1.8'))"#,
        r#"true | 1.5"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '0x'))"#,
        r#"false | "Expected the end but found invalid token at character 2""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '0xg'))"#,
        r#"false | "Expected the end but found invalid token at character 2""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '0x.8p1'))"#,
        r#"true | 1"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '0x1P-1074'))"#,
        r#"true | 4.9406564584124654e-324"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '0x1.fffffffffffff8p1023'))"#,
        r#"true | inf"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '0x123456789abcdef123p0'))"#,
        r#"true | 3.3581272767073033e+20"#,
    ),
    (
        r#"return show(pcall(cjson.decode, 'inf'))"#,
        r#"true | inf"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '-Infinity'))"#,
        r#"true | -inf"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '[INF, -inFinity, infinit]'))"#,
        r#"false | "Expected comma or array end but found invalid token at character 21""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '[infinit]'))"#,
        r#"false | "Expected comma or array end but found invalid token at character 5""#,
    ),
    (
        r#"return show(pcall(cjson.decode, 'nan'))"#,
        r#"true | nan"#,
    ),
    (
        r#"return show(pcall(cjson.decode, 'NaN'))"#,
        r#"true | nan"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '[nan(123), -nan]'))"#,
        r#"true | {[1]=nan,[2]=nan}"#,
    ),
    (
        r#"return show(pcall(cjson.decode, 'nan(12'))"#,
        r#"false | "Expected the end but found invalid token at character 4""#,
    ),
    (
        r#"return show(pcall(cjson.decode, 'N'))"#,
        r#"false | "Expected value but found invalid token at character 1""#,
    ),
    (
        r#"return show(pcall(cjson.decode, 'NULL'))"#,
        r#"false | "Expected value but found invalid token at character 1""#,
    ),
    (
        r#"return show(pcall(cjson.decode, 'i'))"#,
        r#"false | "Expected value but found invalid token at character 1""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '1e400'))"#,
        r#"true | inf"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '-1e400'))"#,
        r#"true | -inf"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '1e-400'))"#,
        r#"true | 0"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '.5'))"#,
        r#"false | "Expected value but found invalid token at character 1""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '-.5'))"#,
        r#"true | -0.5"#,
    ),
    (r#"return show(pcall(cjson.decode, '1.'))"#, r#"true | 1"#),
    (
        r#"return show(pcall(cjson.decode, '1.e2'))"#,
        r#"true | 100"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '1e'))"#,
        r#"false | "Expected the end but found invalid token at character 2""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '1e+'))"#,
        r#"false | "Expected the end but found invalid token at character 2""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '1E+2'))"#,
        r#"true | 100"#,
    ),
    (r#"return show(pcall(cjson.decode, '-0'))"#, r#"true | -0"#),
    (
        r#"return show(pcall(cjson.decode, '[0.1, 1e-7, 123456789012345678901234567890, 1.7976931348623157e308, 2.2250738585072014e-308, 4.9e-324, 2.4e-324]'))"#,
        r#"true | {[1]=0.10000000000000001,[2]=9.9999999999999995e-08,[3]=1.2345678901234568e+29,[4]=1.7976931348623157e+308,[5]=2.2250738585072014e-308,[6]=4.9406564584124654e-324,[7]=0}"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '9007199254740993'))"#,
        r#"true | 9007199254740992"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '0.30000000000000001665'))"#,
        r#"true | 0.29999999999999999"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '1' .. string.rep('0', 400)))"#,
        r#"true | inf"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '0.' .. string.rep('0', 400) .. '1e400'))"#,
        r#"true | 0.10000000000000001"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '1e99999999999999999999'))"#,
        r#"true | inf"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '1e-99999999999999999999'))"#,
        r#"true | 0"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '{"a":1,"a":2}'))"#,
        r#"true | {["a"]=2}"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '[[[[1]]]]'))"#,
        r#"true | {[1]={[1]={[1]={[1]=1}}}}"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '{"k":null, "l":[null, null]}'))"#,
        r#"true | {["k"]=null,["l"]={[1]=null,[2]=null}}"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '"\\t\\/\\b\\f\\n\\r\\"\\\\\\u00e9\\u20AC\\ud83d\\ude00\\u0041"'))"#,
        r#"true | "\09/\08\0c\0a\0d"\\c3\a9\e2\82\ac\f0\9f\98\80A""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '"\\u0000x"'))"#,
        r#"true | "\00x""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '[1,"\1"]'))"#,
        r#"true | {[1]=1,[2]="\01"}"#,
    ),
    (r#"return show(pcall(cjson.decode, 123))"#, r#"true | 123"#),
    (
        r#"return show(pcall(cjson.decode, 12.5))"#,
        r#"true | 12.5"#,
    ),
    (
        r#"return show(pcall(cjson.decode, -1e100))"#,
        r#"true | -1e+100"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '  [ 1 , 2 ] \r\n\t'))"#,
        r#"true | {[1]=1,[2]=2}"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '\v1'))"#,
        r#"false | "Expected value but found invalid token at character 1""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '"\255\254\128"'))"#,
        r#"true | "\ff\fe\80""#,
    ),
    (
        r#"return show(pcall(cjson.decode, 'true false'))"#,
        r#"false | "Expected the end but found T_BOOLEAN at character 6""#,
    ),
    (
        r#"return show(pcall(cjson.decode, 'truex'))"#,
        r#"false | "Expected the end but found invalid token at character 5""#,
    ),
    (
        r#"return show(pcall(cjson.decode, 'nullx'))"#,
        r#"false | "Expected the end but found invalid token at character 5""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '[]'), pcall(cjson.decode, '{}'))"#,
        r#"true | true | {}"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '\1'))"#,
        r#"false | "Expected value but found invalid token at character 1""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '[1,,2]'))"#,
        r#"false | "Expected value but found T_COMMA at character 4""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '{,}'))"#,
        r#"false | "Expected object key string but found T_COMMA at character 2""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '{"a"}'))"#,
        r#"false | "Expected colon but found T_OBJ_END at character 5""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '{"a":}'))"#,
        r#"false | "Expected value but found T_OBJ_END at character 6""#,
    ),
    (
        r#"return show(pcall(cjson.decode, ']'))"#,
        r#"false | "Expected value but found T_ARR_END at character 1""#,
    ),
    (
        r#"return show(pcall(cjson.decode, ':'))"#,
        r#"false | "Expected value but found T_COLON at character 1""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '{"a":1}}'))"#,
        r#"false | "Expected the end but found T_OBJ_END at character 8""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '{"a":[1,{"b":2}]}'))"#,
        r#"true | {["a"]={[1]=1,[2]={["b"]=2}}}"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '{"1":1, "2":2}'))"#,
        r#"true | {["1"]=1,["2"]=2}"#,
    ),
    (
        r#"return show(pcall(cjson.decode, '[1,null,3]'))"#,
        r#"true | {[1]=1,[2]=null,[3]=3}"#,
    ),
    (
        r#"return show(pcall(cjson.decode))"#,
        r#"false | "bad argument #1 to '?' (expected 1 argument)""#,
    ),
    (
        r#"return show(pcall(cjson.decode, nil))"#,
        r#"false | "bad argument #1 to '?' (string expected, got nil)""#,
    ),
    (
        r#"return show(pcall(cjson.decode, {}))"#,
        r#"false | "bad argument #1 to '?' (string expected, got table)""#,
    ),
    (
        r#"return show(pcall(cjson.decode, '1', 2))"#,
        r#"false | "bad argument #1 to '?' (expected 1 argument)""#,
    ),
    (
        r#"return show(pcall(function() local r = cjson.decode(nil) return r end))"#,
        r#"false | "user_script:1: bad argument #1 to 'decode' (string expected, got nil)""#,
    ),
    (
        r#"return show(pcall(function() local r = cjson:decode('1') return r end))"#,
        r#"false | "user_script:1: calling 'decode' on bad self (expected 1 argument)""#,
    ),
    (
        r#"return show(pcall(cjson.decode, string.rep('[', 1000) .. string.rep(']', 1000)) and 'ok')"#,
        r#""ok""#,
    ),
    (
        r#"return show(pcall(cjson.decode, string.rep('[', 1001)))"#,
        r#"false | "Found too many nested data structures (1001) at character 1001""#,
    ),
    (
        r#"return show(pcall(cjson.decode, string.rep('{"a":', 1001)))"#,
        r#"false | "Found too many nested data structures (1001) at character 5001""#,
    ),
    (
        r#"cjson.decode_max_depth(2) return show(pcall(cjson.decode, '[[1]]'))"#,
        r#"true | {[1]={[1]=1}}"#,
    ),
    (
        r#"cjson.decode_max_depth(2) return show(pcall(cjson.decode, '[[[1]]]'))"#,
        r#"false | "Found too many nested data structures (3) at character 3""#,
    ),
    (
        r#"cjson.decode_max_depth(2) return show(pcall(cjson.decode, ' { "a" : [ {} ] }'))"#,
        r#"false | "Found too many nested data structures (3) at character 12""#,
    ),
    (
        r#"cjson.decode_max_depth(100000) return show(pcall(cjson.decode, string.rep('[', 10000)))"#,
        r#"false | "Found too many nested data structures (7999) at character 7999""#,
    ),
    (
        r#"cjson.decode_max_depth(100000) return show(pcall(cjson.decode, string.rep('{"a":', 10000)))"#,
        r#"false | "Found too many nested data structures (4000) at character 19996""#,
    ),
    (
        r#"cjson.decode_max_depth(100000) return show(pcall(cjson.decode, string.rep('[{"a":', 10000)))"#,
        r#"false | "Found too many nested data structures (5333) at character 15997""#,
    ),
    (
        r#"cjson.decode_max_depth(100000) local s = cjson.decode(string.rep('[', 7998) .. string.rep(']', 7998)) local n = 0 while s[1] do s = s[1] n = n + 1 end return show(n)"#,
        r#"7997"#,
    ),
    (
        r#"cjson.decode_invalid_numbers(false) return show(pcall(cjson.decode, '+1'))"#,
        r#"false | "Expected value but found invalid token at character 1""#,
    ),
    (
        r#"cjson.decode_invalid_numbers(false) return show(pcall(cjson.decode, '01'))"#,
        r#"false | "Expected value but found invalid number at character 1""#,
    ),
    (
        r#"cjson.decode_invalid_numbers(false) return show(pcall(cjson.decode, '[0x10]'))"#,
        r#"false | "Expected value but found invalid number at character 2""#,
    ),
    (
        r#"cjson.decode_invalid_numbers(false) return show(pcall(cjson.decode, '-inf'))"#,
        r#"false | "Expected value but found invalid number at character 1""#,
    ),
    (
        r#"cjson.decode_invalid_numbers(false) return show(pcall(cjson.decode, 'inf'))"#,
        r#"false | "Expected value but found invalid token at character 1""#,
    ),
    (
        r#"cjson.decode_invalid_numbers(false) return show(pcall(cjson.decode, '[NaN]'))"#,
        r#"false | "Expected value but found invalid token at character 2""#,
    ),
    (
        r#"cjson.decode_invalid_numbers(false) return show(pcall(cjson.decode, '[1.5, -0, 0, 1e5]'))"#,
        r#"true | {[1]=1.5,[2]=-0,[3]=0,[4]=100000}"#,
    ),
    (
        r#"cjson.decode_invalid_numbers(false) return show(pcall(cjson.decode, '-.5'))"#,
        r#"true | -0.5"#,
    ),
    (
        r#"local t = cjson.decode('[1,2,3]') return show(#t, t[1] + t[2])"#,
        r#"3 | 3"#,
    ),
    (
        r#"local v = cjson.decode('{"a":[1,2,{"b":null}]}') return show(cjson.encode(v.a))"#,
        r#""[1,2,{"b":null}]""#,
    ),
    (
        r#"local s = string.rep('x', 100000) return show(#cjson.encode(s), cjson.decode(cjson.encode(s)) == s)"#,
        r#"100002 | true"#,
    ),
    (
        r#"local t = {} for i = 1, 300 do t[i] = {i, tostring(i), {k = i}} end local d = cjson.decode(cjson.encode(t)) return show(#d, d[300][3].k, d[7][2])"#,
        r#"300 | 300 | "7""#,
    ),
];

#[test]
fn matches_native_redis() {
    crate::codec_glue::testing::assert_cases("cjson", open, PRELUDE, CASES);
}

fn with_lib() -> Lua {
    crate::codec_glue::testing::with_lib("cjson", open)
}

/// Errors reach `pcall` as plain strings, as luaL_error's do (native:
/// `EVAL "local ok, e = pcall(cjson.decode, '{') return type(e)" 0` -> "string").
#[test]
fn errors_are_plain_strings() {
    let lua = with_lib();
    let r: String = lua
        .load(
            "local _, a = pcall(cjson.decode, '{') local _, b = pcall(cjson.encode) \
             local _, c = pcall(cjson.encode, print) return type(a)..type(b)..type(c)",
        )
        .eval()
        .unwrap();
    assert_eq!(r, "stringstringstring");
}

/// Nesting is walked without recursion, so the deepest structures native
/// Redis accepts work on a small thread stack. Native (fresh server):
/// `EVAL "cjson.decode_max_depth(100000) cjson.encode_max_depth(100000)
///  local s = string.rep('[', 7997) .. string.rep(']', 7997) local e =
///  cjson.encode(cjson.decode(s)) local t = {} local c = t for i = 1, 3998
///  do c.k = {} c = c.k end return {#e, e:sub(7994, 8000), #cjson.encode(t)}" 0`
/// -> 15994, "[[[{}]]", 23990.
#[test]
fn deep_nesting_on_small_stack() {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let lua = with_lib();
            let r: String = lua
                .load(
                    "cjson.decode_max_depth(100000) cjson.encode_max_depth(100000) \
                     local s = string.rep('[', 7997) .. string.rep(']', 7997) \
                     local e = cjson.encode(cjson.decode(s)) local t = {} local c = t \
                     for i = 1, 3998 do c.k = {} c = c.k end \
                     return #e .. ' ' .. e:sub(7994, 8000) .. ' ' .. #cjson.encode(t)",
                )
                .eval()
                .unwrap();
            assert_eq!(r, "15994 [[[{}]] 23990");
        })
        .unwrap()
        .join()
        .unwrap();
}

/// Big documents do not exhaust mlua's reference slots.
#[test]
fn large_documents_roundtrip() {
    let lua = with_lib();
    lua.load(
        "local t = {} for i = 1, 100000 do t['k' .. i] = {i, 'v' .. i, {x = i}} end \
         local d = cjson.decode(cjson.encode(t)) \
         for i = 1, 100000 do local v = d['k' .. i] \
           assert(v[1] == i and v[2] == 'v' .. i and v[3].x == i) end \
         for i = 1, 20000 do assert(not pcall(cjson.decode, '[[[{\"a\":')) end",
    )
    .exec()
    .unwrap();
}

/// The integer shortcut of the number reader agrees with `strtod`.
#[test]
fn integer_parse_matches_strtod() {
    let cases = [
        "0",
        "-0",
        "7",
        "-7",
        "00012",
        "-00",
        "123456789012345",
        "-123456789012345",
        "1234567890123456",
        "99999999999999999999",
        "1.5",
        "1e5",
        "1E5",
        "0x10",
        "0X1p4",
        "12,",
        "12]",
        "12 ",
        "-",
        "-x",
        "5.",
        "9007199254740993",
    ];
    for c in cases {
        let data = c.as_bytes();
        if let Some(fast) = fast_integer(data, 0) {
            let slow = strtod(data, 0).expect("strtod reads it");
            assert_eq!(fast.1, slow.1, "end of {c}");
            assert_eq!(fast.0.to_bits(), slow.0.to_bits(), "value of {c}");
        }
    }
    assert!(fast_integer(b"1.5", 0).is_none());
    assert!(fast_integer(b"0x10", 0).is_none());
    assert!(fast_integer(b"1234567890123456", 0).is_none());
    assert_eq!(
        fast_integer(b"-0", 0).map(|v| v.0.to_bits()),
        Some((-0.0f64).to_bits())
    );
}

/// Errors raised deep in a structure (the stack full of tables) and the
/// stack-limit errors, identical to the previous implementation's.
#[test]
fn deep_errors() {
    let lua = with_lib();
    let r: String = lua
        .load(
            "cjson.decode_max_depth(100000) cjson.encode_max_depth(100000) \
             local t = {} local cur = t for i = 1, 7990 do cur[1] = {} cur = cur[1] end cur[1] = print \
             local m = {} cur = m for i = 1, 3000 do cur[1] = {k = {}} cur = cur[1].k end cur.y = {[true] = 1} \
             local r = {} \
             r[#r+1] = select(2, pcall(cjson.encode, t)) \
             r[#r+1] = select(2, pcall(cjson.encode, m)) \
             r[#r+1] = select(2, pcall(cjson.decode, string.rep('[', 7990) .. 'x')) \
             r[#r+1] = select(2, pcall(cjson.decode, string.rep('[{\"a\":', 2660) .. '1,}')) \
             r[#r+1] = select(2, pcall(cjson.decode, string.rep('[', 7999) .. string.rep(']', 7999))) \
             return table.concat(r, '|')",
        )
        .eval()
        .unwrap();
    assert_eq!(
        r,
        "Cannot serialise function: type not supported|\
         Cannot serialise, excessive nesting (5333)|\
         Expected value but found invalid token at character 7991|\
         Expected object key string but found T_OBJ_END at character 15963|\
         Found too many nested data structures (7999) at character 7999"
    );
}

/// Instances made by `cjson.new` keep their own configuration and state,
/// and are collected (their `__gc` frees the buffers).
#[test]
fn instances_are_independent_and_collected() {
    let lua = with_lib();
    let r: String = lua
        .load(
            "local a = cjson.new() a.encode_number_precision(3) a.encode_keep_buffer(false) \
             local x = a.encode({1/3, 12345}) .. cjson.encode({1/3, 12345}) \
             for i = 1, 2000 do local c = cjson.new() c.encode({i, 'v'}) c.decode('[1]') end \
             collectgarbage() collectgarbage() \
             return x .. a.encode(1/3)",
        )
        .eval()
        .unwrap();
    assert_eq!(r, "[0.333,1.23e+04][0.33333333333333,12345]0.333");
}
