//! Error texts: the reply for a failed call (Redis's "<err> script: <name>, on
//! <source>:<line>.") and Lua's own messages without mlua's decorations.

use super::*;

/// The error reply for a failed call, from the handler's `{err=, source=, line=}` at
/// `idx`: Redis's "<err> script: <function>, on <source>:<line>.". A kill or a time
/// limit replaces the error text but keeps the location.
pub(crate) unsafe fn raw_error_text(
    l: *mut ffi::lua_State,
    idx: c_int,
    function_name: &str,
    interruption: Option<String>,
) -> Vec<u8> {
    let field = |name: &std::ffi::CStr| -> (c_int, Vec<u8>, f64) {
        ffi::lua_pushstring(l, name.as_ptr());
        let t = ffi::lua_rawget(l, idx);
        let mut len = 0usize;
        let bytes = if t == ffi::LUA_TSTRING {
            let p = ffi::lua_tolstring(l, -1, &mut len);
            std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec()
        } else {
            Vec::new()
        };
        let n = if t == ffi::LUA_TNUMBER {
            ffi::lua_tonumber(l, -1)
        } else {
            0.0
        };
        ffi::lua_pop(l, 1);
        (t, bytes, n)
    };
    let (mut msg, located) = match ffi::lua_type(l, idx) {
        ffi::LUA_TTABLE => {
            let (t, err, _) = field(c"err");
            let msg = if t == ffi::LUA_TSTRING {
                err
            } else {
                b"ERR unknown error".to_vec()
            };
            let (ts, source, _) = field(c"source");
            let (tl, _, line) = field(c"line");
            let located =
                (ts == ffi::LUA_TSTRING && tl == ffi::LUA_TNUMBER).then_some((source, line as i64));
            (msg, located)
        }
        ffi::LUA_TSTRING => {
            let mut len = 0usize;
            let p = ffi::lua_tolstring(l, idx, &mut len);
            (
                [
                    &b"ERR "[..],
                    std::slice::from_raw_parts(p.cast::<u8>(), len),
                ]
                .concat(),
                None,
            )
        }
        _ => (b"ERR unknown error".to_vec(), None),
    };
    if let Some(text) = interruption {
        msg = text.into_bytes();
    }
    crate::lua_source::restore_goto(&mut msg);
    if let Some((source, line)) = located {
        msg.extend_from_slice(format!(" script: {function_name}, on ").as_bytes());
        msg.extend_from_slice(&source);
        msg.extend_from_slice(format!(":{line}.").as_bytes());
    }
    msg
}

/// The `err` text of an error value the handler produced (or Lua's own message).
pub(crate) fn error_table_message(v: &Value) -> Vec<u8> {
    match v {
        Value::Table(t) => match t.raw_get::<Value>("err") {
            Ok(Value::String(s)) => s.as_bytes().to_vec(),
            _ => b"ERR unknown error".to_vec(),
        },
        Value::String(s) => [&b"ERR "[..], &s.as_bytes()].concat(),
        _ => b"ERR unknown error".to_vec(),
    }
}

/// Lua's own message, without mlua's decorations.
pub(crate) fn lua_error_message(e: &mlua::Error) -> String {
    match e {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::RuntimeError(m) => m.clone(),
        mlua::Error::MemoryError(_) => "not enough memory".into(),
        mlua::Error::CallbackError { cause, .. } => lua_error_message(cause),
        other => other.to_string(),
    }
}
