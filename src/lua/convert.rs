//! A script's return value to a client reply, with Redis's Lua-to-RESP rules:
//! strings are bulk strings, numbers truncate to integers, `true` is 1 (or a RESP3 boolean
//! after `redis.setresp(3)`), `false` and nil are null, and tables are checked for `err`,
//! `ok`, `double`, `big_number`, `verbatim_string`, `map` and `set` before being read as
//! an array that stops at the first nil.

use mlua::{Table, Value};

use crate::reply::ReplySink;

/// C's `(long long)` cast of a double as x86-64 performs it: out-of-range and NaN values
/// become `i64::MIN`.
pub fn truncate_number(n: f64) -> i64 {
    if n.is_nan() || n >= 9.223_372_036_854_775_807e18 || n < -9.223_372_036_854_775_808e18 {
        i64::MIN
    } else {
        n as i64
    }
}

/// Writes `value` to `sink`. `script_resp3` is whether the script called `redis.setresp(3)`.
pub fn lua_to_reply(value: &Value, sink: &mut dyn ReplySink, script_resp3: bool) {
    match value {
        Value::String(s) => sink.bulk(&s.as_bytes()),
        Value::Boolean(b) => {
            if script_resp3 {
                sink.boolean(*b)
            } else if *b {
                sink.integer(1)
            } else {
                sink.null()
            }
        }
        Value::Integer(i) => sink.integer(*i),
        Value::Number(n) => sink.integer(truncate_number(*n)),
        Value::Table(t) => table_to_reply(t, sink, script_resp3),
        _ => sink.null(),
    }
}

fn string_field(t: &Table, key: &str) -> Option<mlua::LuaString> {
    match t.raw_get::<Value>(key) {
        Ok(Value::String(s)) => Some(s),
        _ => None,
    }
}

fn table_to_reply(t: &Table, sink: &mut dyn ReplySink, script_resp3: bool) {
    if let Some(err) = string_field(t, "err") {
        return sink.error(&err.as_bytes());
    }
    if let Some(ok) = string_field(t, "ok") {
        return sink.simple(&ok.as_bytes());
    }
    match t.raw_get::<Value>("double") {
        Ok(Value::Number(n)) => return sink.double(n),
        Ok(Value::Integer(i)) => return sink.double(i as f64),
        _ => {}
    }
    if let Some(big) = string_field(t, "big_number") {
        let clean = crate::reply::single_line(&big.as_bytes());
        return sink.big_number(&clean);
    }
    if let Ok(Value::Table(v)) = t.raw_get::<Value>("verbatim_string") {
        if let (Some(format), Some(s)) = (string_field(&v, "format"), string_field(&v, "string")) {
            return sink.verbatim(&format.as_bytes(), &s.as_bytes());
        }
    }
    if let Ok(Value::Table(m)) = t.raw_get::<Value>("map") {
        let pairs: Vec<(Value, Value)> = m.pairs::<Value, Value>().filter_map(Result::ok).collect();
        sink.map(pairs.len());
        for (k, v) in &pairs {
            lua_to_reply(k, sink, script_resp3);
            lua_to_reply(v, sink, script_resp3);
        }
        return;
    }
    if let Ok(Value::Table(s)) = t.raw_get::<Value>("set") {
        let members: Vec<Value> = s.pairs::<Value, Value>().filter_map(|kv| kv.ok().map(|(k, _)| k)).collect();
        sink.set(members.len());
        for m in &members {
            lua_to_reply(m, sink, script_resp3);
        }
        return;
    }
    let mut items = Vec::new();
    for i in 1.. {
        match t.raw_get::<Value>(i) {
            Ok(Value::Nil) | Err(_) => break,
            Ok(v) => items.push(v),
        }
    }
    sink.array(items.len());
    for v in &items {
        lua_to_reply(v, sink, script_resp3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::RespWriter;
    use mlua::Lua;

    fn reply_bytes(src: &str, resp: u8, script_resp3: bool) -> Vec<u8> {
        let lua = Lua::new();
        let v: Value = lua.load(src).eval().unwrap();
        let mut w = RespWriter::new(resp);
        lua_to_reply(&v, &mut w, script_resp3);
        w.out
    }

    fn reply(src: &str, resp: u8, script_resp3: bool) -> String {
        String::from_utf8(reply_bytes(src, resp, script_resp3)).unwrap()
    }

    #[test]
    fn scalars() {
        assert_eq!(reply("return 'hi'", 2, false), "$2\r\nhi\r\n");
        assert_eq!(reply("return 1.9", 2, false), ":1\r\n");
        assert_eq!(reply("return -1.9", 2, false), ":-1\r\n");
        assert_eq!(reply("return 0/0", 2, false), ":-9223372036854775808\r\n");
        assert_eq!(reply("return true", 3, false), ":1\r\n");
        assert_eq!(reply("return false", 3, false), "_\r\n");
        assert_eq!(reply("return false", 2, true), ":0\r\n");
        assert_eq!(reply("return true", 3, true), "#t\r\n");
        assert_eq!(reply("return nil", 2, false), "$-1\r\n");
    }

    #[test]
    fn arrays_stop_at_first_nil() {
        assert_eq!(reply("return {1, 2, nil, 3}", 2, false), "*2\r\n:1\r\n:2\r\n");
        assert_eq!(reply("return {a = 1}", 2, false), "*0\r\n");
        assert_eq!(reply("return {1, {2, 'x'}}", 2, false), "*2\r\n:1\r\n*2\r\n:2\r\n$1\r\nx\r\n");
    }

    #[test]
    fn special_tables() {
        assert_eq!(reply("return {err = 'E bad'}", 2, false), "-E bad\r\n");
        assert_eq!(reply("return {ok = 'FINE'}", 2, false), "+FINE\r\n");
        assert_eq!(reply("return {err = 1, ok = 'x'}", 2, false), "+x\r\n");
        assert_eq!(reply("return {double = 1.5}", 3, false), ",1.5\r\n");
        assert_eq!(reply("return {double = 1.5}", 2, false), "$3\r\n1.5\r\n");
        assert_eq!(reply("return {big_number = '123'}", 3, false), "(123\r\n");
        assert_eq!(reply("return {map = {a = 1}}", 3, false), "%1\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(reply("return {map = {a = 1}}", 2, false), "*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(reply("return {set = {x = true}}", 3, false), "~1\r\n$1\r\nx\r\n");
        assert_eq!(
            reply("return {verbatim_string = {format = 'txt', string = 'hi'}}", 3, false),
            "=6\r\ntxt:hi\r\n"
        );
        assert_eq!(reply("return {1, {err = 'x'}}", 2, false), "*2\r\n:1\r\n-x\r\n");
    }

    #[test]
    fn binary_strings_round_trip() {
        assert_eq!(reply_bytes("return '\\0\\255\\r\\n'", 2, false), b"$4\r\n\0\xff\r\n\r\n");
    }
}
