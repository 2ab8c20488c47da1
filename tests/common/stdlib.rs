//! Helpers shared by the tests of the bundled standard library (tests/stdlib_*.rs) and
//! any test that reads map-shaped replies: each library is loaded both natively and into
//! RX on one server, and replies are read as field -> value dictionaries.

use std::collections::BTreeMap;

use super::{Conn, Reply};

/// Loads each `(name, code)` library with `FUNCTION LOAD REPLACE` and `RX.LOAD REPLACE`,
/// asserting both answer with the library's name.
pub fn load_natively_and_into_rx(c: &mut Conn, libraries: &[(&str, &str)]) {
    for (name, code) in libraries {
        for load in [
            &["FUNCTION", "LOAD", "REPLACE"][..],
            &["RX.LOAD", "REPLACE"][..],
        ] {
            let mut argv = load.to_vec();
            argv.push(code);
            assert_eq!(
                c.q(&argv),
                Reply::Bulk(name.as_bytes().to_vec()),
                "{} of {name}",
                load.join(" ")
            );
        }
    }
}

/// `<command> <function> <numkeys> <keys...> <args...>` (FCALL, RX.CALL and their _RO).
pub fn call_function<K: AsRef<str>, A: AsRef<str>>(
    c: &mut Conn,
    command: &str,
    function: &str,
    keys: &[K],
    args: &[A],
) -> Reply {
    let numkeys = keys.len().to_string();
    let mut argv: Vec<&str> = vec![command, function, &numkeys];
    argv.extend(keys.iter().map(|k| k.as_ref()));
    argv.extend(args.iter().map(|a| a.as_ref()));
    c.q(&argv)
}

/// A map reply (RESP3) or a flat field/value array (RESP2) as field -> value; panics on
/// anything else and on a field given twice.
pub fn dict(r: &Reply) -> BTreeMap<String, Reply> {
    let pairs: Vec<(Reply, Reply)> = match r {
        Reply::Map(v) => v.clone(),
        Reply::Array(v) if v.len() % 2 == 0 => {
            v.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect()
        }
        _ => panic!("expected a map reply, got {r:?}"),
    };
    let mut m = BTreeMap::new();
    for (k, v) in pairs {
        let k = k
            .as_str()
            .unwrap_or_else(|| panic!("map key {k:?}"))
            .to_string();
        assert!(m.insert(k.clone(), v).is_none(), "duplicate field {k}");
    }
    m
}

/// The sorted field names of a map reply.
pub fn fields(r: &Reply) -> Vec<String> {
    dict(r).keys().cloned().collect()
}

/// One field of a map reply; panics when it is missing.
pub fn field(r: &Reply, name: &str) -> Reply {
    dict(r)
        .remove(name)
        .unwrap_or_else(|| panic!("no field {name} in {r:?}"))
}

pub fn int_field(r: &Reply, name: &str) -> i64 {
    field(r, name)
        .as_int()
        .unwrap_or_else(|| panic!("field {name} of {r:?} is not an integer"))
}

pub fn text_field(r: &Reply, name: &str) -> String {
    field(r, name)
        .as_str()
        .unwrap_or_else(|| panic!("field {name} of {r:?} is not text"))
        .to_string()
}

/// The sorted library names of a `FUNCTION LIST` or `RX.LIST` reply.
pub fn library_names(list: &Reply) -> Vec<String> {
    let mut names: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("a library list is an array, got {list:?}"))
        .iter()
        .map(|library| text_field(library, "library_name"))
        .collect();
    names.sort();
    names
}

/// The server's clock (`TIME`) in milliseconds.
pub fn server_now_ms(c: &mut Conn) -> i64 {
    let t = c.q(&["TIME"]);
    let part = |i: usize| -> i64 {
        t.as_array().expect("TIME is an array")[i]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("TIME part")
    };
    part(0) * 1000 + part(1) / 1000
}

/// A `FUNCTION LIST` / `RX.LIST` reply reduced to what both have (RX's `version` and
/// `digest` fields dropped), with libraries, functions and flags sorted, so a native and
/// an RX listing compare regardless of order. `None` when it is not a library listing.
pub fn comparable_listing(list: &Reply) -> Option<Reply> {
    let key = |r: &Reply| {
        r.as_bytes()
            .map(|b| b.to_ascii_lowercase())
            .unwrap_or_default()
    };
    let mut libs = Vec::new();
    for lib in list.as_array()? {
        let mut kv: Vec<Reply> = lib
            .as_array()?
            .chunks(2)
            .filter(|p| !matches!(p[0].as_str(), Some("version" | "digest")))
            .flatten()
            .cloned()
            .collect();
        for i in (0..kv.len()).step_by(2) {
            if kv[i].as_str() != Some("functions") {
                continue;
            }
            if let Reply::Array(functions) = &mut kv[i + 1] {
                for f in functions.iter_mut() {
                    if let Reply::Array(fkv) = f {
                        for j in (0..fkv.len()).step_by(2) {
                            if fkv[j].as_str() == Some("flags") {
                                if let Reply::Array(flags) | Reply::Set(flags) = &mut fkv[j + 1] {
                                    flags.sort_by_key(key);
                                }
                            }
                        }
                    }
                }
                functions.sort_by_key(|f| {
                    f.as_array()
                        .map(|a| (key(&a[1]), format!("{a:?}")))
                        .unwrap_or_default()
                });
            }
        }
        libs.push(Reply::Array(kv));
    }
    libs.sort_by_key(|l| format!("{l:?}"));
    Some(Reply::Array(libs))
}
