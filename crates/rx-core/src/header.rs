//! The library header (`#!lua name=<lib>`), parsed and validated exactly as Redis 7.0 does.
//! Pure: no mlua, no module API.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryHeader {
    /// The engine as written after `#!` (compared case-insensitively).
    pub engine: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    Missing,
    Invalid,
    NameGivenTwice,
    /// The field as written (any bytes).
    UnknownField(Vec<u8>),
    NameNotGiven,
    BadName,
    /// The engine as written (any bytes).
    UnknownEngine(Vec<u8>),
}

impl HeaderError {
    /// The message after the `ERR ` code, identical to native Redis, byte for byte: a field
    /// or engine is quoted as written.
    pub fn text(&self) -> Vec<u8> {
        match self {
            HeaderError::UnknownField(f) => [&b"Invalid metadata value given: "[..], f].concat(),
            HeaderError::UnknownEngine(e) => [&b"Engine '"[..], e, b"' not found"].concat(),
            HeaderError::Missing => b"Missing library metadata".to_vec(),
            HeaderError::Invalid => b"Invalid library metadata".to_vec(),
            HeaderError::NameGivenTwice => {
                b"Invalid metadata value, name argument was given multiple times".to_vec()
            }
            HeaderError::NameNotGiven => b"Library name was not given".to_vec(),
            HeaderError::BadName => NAME_RULE_MESSAGE.as_bytes().to_vec(),
        }
    }

    /// `text` for a person to read (bytes that are not UTF-8 shown as U+FFFD).
    pub fn message(&self) -> String {
        String::from_utf8_lossy(&self.text()).into_owned()
    }

    /// The error reply: `ERR` and `text`.
    pub fn to_error(&self) -> crate::error::RxError {
        crate::error::RxError::Reply([&b"ERR "[..], &self.text()].concat())
    }
}

/// Redis uses the same text for bad library and bad function names.
pub const NAME_RULE_MESSAGE: &str = "Library names can only contain letters, numbers, or underscores(_) and must be at least one character long";

/// Library and function names: `[A-Za-z0-9_]+`.
pub fn is_valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// Parses the first line of `code`. The engine must be `lua` (any case).
pub fn parse_header(code: &[u8]) -> Result<LibraryHeader, HeaderError> {
    if !code.starts_with(b"#!") {
        return Err(HeaderError::Missing);
    }
    // Redis reads the header as a C string: a NUL before the newline hides the newline.
    let line_end = code
        .iter()
        .position(|&b| b == b'\n' || b == 0)
        .ok_or(HeaderError::Invalid)?;
    if code[line_end] == 0 {
        return Err(HeaderError::Invalid);
    }
    let parts = split_args(&code[..line_end]).ok_or(HeaderError::Invalid)?;
    let (first, rest) = parts.split_first().ok_or(HeaderError::Invalid)?;
    let engine = first[2.min(first.len())..].to_vec();
    let mut name: Option<Vec<u8>> = None;
    for part in rest {
        if part.len() >= 5 && part[..5].eq_ignore_ascii_case(b"name=") {
            let value = &part[5..];
            if name.is_some() {
                return Err(HeaderError::NameGivenTwice);
            }
            name = Some(value.to_vec());
        } else {
            return Err(HeaderError::UnknownField(part.clone()));
        }
    }
    let name = name.ok_or(HeaderError::NameNotGiven)?;
    if !is_valid_name(&name) {
        return Err(HeaderError::BadName);
    }
    if !engine.eq_ignore_ascii_case(b"lua") {
        return Err(HeaderError::UnknownEngine(engine));
    }
    let engine = String::from_utf8_lossy(&engine).into_owned();
    // Valid names are ASCII, so this cannot fail.
    let name = String::from_utf8(name).map_err(|_| HeaderError::BadName)?;
    Ok(LibraryHeader { engine, name })
}

/// C's `isspace` in the "C" locale. Unlike `u8::is_ascii_whitespace` it includes the vertical
/// tab (0x0B).
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// Splits a line into arguments the way Redis's `sdssplitargs` does. Blanks before an argument
/// and after a closing quote are C's `isspace`, but an unquoted argument ends only at a space,
/// tab, CR or LF: a form feed or vertical tab inside one stays part of it (so
/// `name=x\f` is a bad name, not `name=x`). Double quotes allow `\n`-style and `\xHH` escapes,
/// single quotes are literal. `None` for unbalanced quotes or a closing quote not followed by
/// a blank.
pub(crate) fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    split_args_with(line, crate::dialect::current().split_args_drops_byte_ff)
}

/// `split_args`; `drop_ff`: a 0xFF byte read as itself (not written `\xff` in double
/// quotes) is left out, as Valkey 8.1's `sdssplitargs` does (see
/// `Dialect::split_args_drops_byte_ff`).
fn split_args_with(line: &[u8], drop_ff: bool) -> Option<Vec<Vec<u8>>> {
    let keep = |c: u8| !(drop_ff && c == 0xFF);
    let mut out = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && is_c_space(line[i]) {
            i += 1;
        }
        if i >= n {
            return Some(out);
        }
        let mut cur = Vec::new();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            if in_dq {
                if i >= n {
                    return None;
                }
                let c = line[i];
                if c == b'\\'
                    && i + 3 < n
                    && line[i + 1] == b'x'
                    && line[i + 2].is_ascii_hexdigit()
                    && line[i + 3].is_ascii_hexdigit()
                {
                    cur.push(hex_value(line[i + 2]) * 16 + hex_value(line[i + 3]));
                    i += 4;
                    continue;
                }
                if c == b'\\' && i + 1 < n {
                    let escaped = match line[i + 1] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    };
                    if keep(escaped) {
                        cur.push(escaped);
                    }
                    i += 2;
                    continue;
                }
                if c == b'"' {
                    if i + 1 < n && !is_c_space(line[i + 1]) {
                        return None;
                    }
                    i += 1;
                    break;
                }
                if keep(c) {
                    cur.push(c);
                }
                i += 1;
            } else if in_sq {
                if i >= n {
                    return None;
                }
                let c = line[i];
                if c == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    cur.push(b'\'');
                    i += 2;
                    continue;
                }
                if c == b'\'' {
                    if i + 1 < n && !is_c_space(line[i + 1]) {
                        return None;
                    }
                    i += 1;
                    break;
                }
                if keep(c) {
                    cur.push(c);
                }
                i += 1;
            } else {
                if i >= n || matches!(line[i], b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                match line[i] {
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    c if keep(c) => cur.push(c),
                    _ => {}
                }
                i += 1;
            }
        }
        out.push(cur);
    }
}

/// The value of an ASCII hex digit the caller has checked.
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<LibraryHeader, HeaderError> {
        parse_header(s.as_bytes())
    }

    #[test]
    fn accepts_plain_header() {
        let h = parse("#!lua name=mylib\nreturn").unwrap();
        assert_eq!(h.name, "mylib");
        assert_eq!(h.engine, "lua");
    }

    #[test]
    fn engine_is_case_insensitive_and_spaces_are_folded() {
        assert_eq!(parse("#!LUA  name=a \t\r\nx").unwrap().name, "a");
        assert_eq!(parse("#!lua name=\"q\"\nx").unwrap().name, "q");
        assert_eq!(parse("#!Lua NAME=x\n").unwrap().name, "x");
    }

    #[test]
    fn rejects_each_malformation_with_its_own_error() {
        let cases: &[(&str, HeaderError)] = &[
            ("", HeaderError::Missing),
            ("redis.register_function()", HeaderError::Missing),
            ("#!lua name=x", HeaderError::Invalid),
            ("#!lua name=\"x\nq", HeaderError::Invalid),
            ("#!lua name=x name=y\n", HeaderError::NameGivenTwice),
            (
                "#!lua name=x foo=bar\n",
                HeaderError::UnknownField("foo=bar".into()),
            ),
            ("#!lua name=a\0b\nx", HeaderError::Invalid),
            ("#!lua foo\n", HeaderError::UnknownField("foo".into())),
            ("#!lua\n", HeaderError::NameNotGiven),
            ("#!\n", HeaderError::NameNotGiven),
            ("#!lua name=\n", HeaderError::BadName),
            ("#!lua name=a-b\n", HeaderError::BadName),
            ("#!lua name=x=y\n", HeaderError::BadName),
            ("#!js name=a-b\n", HeaderError::BadName),
            ("#!js name=x\n", HeaderError::UnknownEngine("js".into())),
            ("#! name=x\n", HeaderError::UnknownEngine("".into())),
        ];
        for (src, want) in cases {
            assert_eq!(parse(src).unwrap_err(), *want, "header {src:?}");
        }
    }

    #[test]
    fn form_feed_and_vertical_tab_separate_only_where_sdssplitargs_lets_them() {
        // Blanks before an argument are C's isspace, \v included.
        assert_eq!(parse("#!lua \x0bname=vt\n").unwrap().name, "vt");
        assert_eq!(parse("#!lua \x0cname=ff\n").unwrap().name, "ff");
        // An unquoted argument ends only at space, tab, CR or LF.
        assert_eq!(
            parse("#!lua name=ff\x0c\n").unwrap_err(),
            HeaderError::BadName
        );
        assert_eq!(
            parse("#!lua name=vt\x0b\n").unwrap_err(),
            HeaderError::BadName
        );
        assert_eq!(
            parse("#!lua\x0cname=x\n").unwrap_err(),
            HeaderError::NameNotGiven
        );
        // After a closing quote any isspace is a blank.
        assert_eq!(parse("#!lua 'name=q'\x0b\n").unwrap().name, "q");
        assert_eq!(parse("#!lua \"name=q\"\x0c\n").unwrap().name, "q");
    }

    #[test]
    fn valkey_81_drops_byte_ff_read_as_itself() {
        let args = |s: &[u8], drop| split_args_with(s, drop).unwrap();
        assert_eq!(
            args(b"#!lu\xffa name=m7\xff\xff", true),
            vec![b"#!lua".to_vec(), b"name=m7".to_vec()]
        );
        assert_eq!(
            args(b"'a\xffb' \"c\xffd\" \"\\\xff\"", true),
            vec![b"ab".to_vec(), b"cd".to_vec(), b"".to_vec()]
        );
        // Written as an escape it stays.
        assert_eq!(args(b"\"\\xff\"", true), vec![vec![0xFF]]);
        assert_eq!(args(b"a\xffb", false), vec![b"a\xffb".to_vec()]);
    }

    #[test]
    fn hex_escapes_need_two_hex_digits() {
        let args = |s: &str| split_args(s.as_bytes()).unwrap();
        assert_eq!(args("\"\\x41\\x6a\""), vec![b"Aj".to_vec()]);
        // `\x+f` is not a hex escape (a sign is not a digit): `\x` stands for `x`.
        assert_eq!(args("\"\\x+f\""), vec![b"x+f".to_vec()]);
        assert_eq!(args("\"\\x4\""), vec![b"x4".to_vec()]);
    }

    #[test]
    fn messages_match_native_redis() {
        assert_eq!(
            HeaderError::UnknownEngine("js".into()).message(),
            "Engine 'js' not found"
        );
        assert_eq!(
            HeaderError::UnknownField("foo".into()).message(),
            "Invalid metadata value given: foo"
        );
    }

    #[test]
    fn name_rule() {
        assert!(is_valid_name(b"a_Z9"));
        assert!(!is_valid_name(b""));
        assert!(!is_valid_name(b"a.b"));
        assert!(!is_valid_name("é".as_bytes()));
    }
}
