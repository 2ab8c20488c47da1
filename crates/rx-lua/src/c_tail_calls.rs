//! `return f(...)` where `f` is a C function, kept in its caller's frame. Pure.
//!
//! Lua 5.1 runs a tail call to a C function inside the caller's frame, so an error the C
//! function raises (`redis.call`'s above all) is reported at the `return` line, and names
//! the function as called. LuaJIT drops the caller's frame first, so the line is lost. For
//! the library functions known to return exactly one value, `return f(...)` and
//! `return (f(...))` give the same result; the second is not a tail call in either Lua. So
//! the source is given to LuaJIT with those parentheses added.
//!
//! Only plain calls of such a function by its library path (`redis.call`, `tonumber`, ...)
//! whose root name the source never declares (as a local, a parameter or a loop variable)
//! are rewritten: anything else may be a Lua function, or return several values.

/// One token of the prepared source: where it is in the output, and whether it is a name,
/// keyword or punctuation (`text`) or a literal (`None`: a string or a number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token<'a> {
    pub end: usize,
    pub text: Option<&'a [u8]>,
}

/// Library functions that always return exactly one value (their Lua 5.1 and the
/// servers' versions), by the path scripts call them with.
const ONE_VALUE: &[&[u8]] = &[
    b"redis.call",
    b"redis.pcall",
    b"redis.sha1hex",
    b"redis.error_reply",
    b"redis.status_reply",
    b"redis.acl_check_cmd",
    b"server.call",
    b"server.pcall",
    b"server.sha1hex",
    b"server.error_reply",
    b"server.status_reply",
    b"server.acl_check_cmd",
    b"cjson.encode",
    b"cjson.decode",
    b"cmsgpack.pack",
    b"tonumber",
    b"tostring",
    b"type",
    b"string.format",
    b"string.rep",
    b"string.sub",
    b"string.upper",
    b"string.lower",
    b"string.len",
    b"string.reverse",
    b"string.char",
    b"table.concat",
    b"math.floor",
    b"math.ceil",
    b"math.abs",
    b"math.max",
    b"math.min",
    b"math.sqrt",
    b"math.fmod",
    b"math.pow",
    b"math.exp",
    b"math.log",
    b"math.log10",
    b"bit.tohex",
    b"bit.tobit",
    b"bit.band",
    b"bit.bor",
    b"bit.bxor",
    b"bit.bnot",
    b"bit.lshift",
    b"bit.rshift",
    b"bit.arshift",
];

/// Tokens that end a block: what may follow a `return` statement.
const BLOCK_ENDS: &[&[u8]] = &[b"end", b"else", b"elseif", b"until", b";"];

const KEYWORDS: &[&[u8]] = &[
    b"and",
    b"break",
    b"do",
    b"else",
    b"elseif",
    b"end",
    b"false",
    b"for",
    b"function",
    b"if",
    b"in",
    b"local",
    b"nil",
    b"not",
    b"or",
    b"repeat",
    b"return",
    b"then",
    b"true",
    b"until",
    b"while",
];

fn is_name(t: &Token) -> bool {
    t.text.is_some_and(|s| {
        s.first()
            .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
            && !KEYWORDS.contains(&s)
    })
}

fn is(t: Option<&Token>, word: &[u8]) -> bool {
    t.is_some_and(|t| t.text == Some(word))
}

/// Every name the source declares: locals, parameters, loop variables.
fn declared<'a>(tokens: &[Token<'a>]) -> Vec<&'a [u8]> {
    let mut names = Vec::new();
    let take_list = |from: usize, names: &mut Vec<&'a [u8]>| {
        let mut j = from;
        while let Some(t) = tokens.get(j) {
            if is_name(t) {
                names.push(t.text.unwrap_or_default());
            } else if !is(Some(t), b",") && !is(Some(t), b"...") {
                break;
            }
            j += 1;
        }
    };
    for (i, t) in tokens.iter().enumerate() {
        match t.text {
            Some(b"local") => take_list(
                if is(tokens.get(i + 1), b"function") {
                    i + 2
                } else {
                    i + 1
                },
                &mut names,
            ),
            Some(b"for") => take_list(i + 1, &mut names),
            Some(b"function") => {
                // function [a.b:c] ( params )
                let mut j = i + 1;
                while tokens
                    .get(j)
                    .is_some_and(|t| is_name(t) || is(Some(t), b".") || is(Some(t), b":"))
                {
                    j += 1;
                }
                if is(tokens.get(j), b"(") {
                    take_list(j + 1, &mut names);
                }
            }
            _ => {}
        }
    }
    names
}

/// Where to insert `(` and `)` in the output (offsets, in increasing order) so that every
/// `return <one-value library function>(...)` ending its block is not a tail call.
pub fn insertions(tokens: &[Token]) -> Vec<(usize, &'static [u8])> {
    let mut out = Vec::new();
    let mut declared_names: Option<Vec<&[u8]>> = None;
    for (i, t) in tokens.iter().enumerate() {
        if t.text != Some(b"return") {
            continue;
        }
        // return NAME (. NAME)* ( ... ) <block end>
        let mut j = i + 1;
        let Some(root) = tokens.get(j).filter(|t| is_name(t)) else {
            continue;
        };
        let mut path = root.text.unwrap_or_default().to_vec();
        while is(tokens.get(j + 1), b".") && tokens.get(j + 2).is_some_and(is_name) {
            path.push(b'.');
            path.extend_from_slice(tokens[j + 2].text.unwrap_or_default());
            j += 2;
        }
        if !is(tokens.get(j + 1), b"(") || !ONE_VALUE.contains(&path.as_slice()) {
            continue;
        }
        let mut depth = 0usize;
        let mut close = None;
        for (k, t) in tokens.iter().enumerate().skip(j + 1) {
            match t.text {
                Some(b"(") => depth += 1,
                Some(b")") => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(k);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(close) = close else { continue };
        let ends_block = match tokens.get(close + 1) {
            None => true,
            Some(next) => BLOCK_ENDS.iter().any(|w| next.text == Some(w)),
        };
        if !ends_block {
            continue;
        }
        let names = declared_names.get_or_insert_with(|| declared(tokens));
        if names.contains(&root.text.unwrap_or_default()) {
            continue;
        }
        out.push((t.end, &b" ("[..]));
        out.push((tokens[close].end, &b")"[..]));
    }
    // A call can hold a function with a return of its own: in offset order (stable).
    out.sort_by_key(|(at, _)| *at);
    out
}

/// `code` with the insertions made.
pub fn apply(code: &[u8], insertions: &[(usize, &[u8])]) -> Vec<u8> {
    let extra: usize = insertions.iter().map(|(_, s)| s.len()).sum();
    let mut out = Vec::with_capacity(code.len() + extra);
    let mut from = 0;
    for (at, text) in insertions {
        out.extend_from_slice(&code[from..*at]);
        out.extend_from_slice(text);
        from = *at;
    }
    out.extend_from_slice(&code[from..]);
    out
}

/// A crude tokenizer for tests (here and in `kill_checks`): words and single punctuation,
/// `...`, and `'...'` and numbers as literals.
#[cfg(test)]
pub(crate) fn test_tokens(src: &str) -> Vec<Token<'_>> {
    let bytes = src.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == b'_' {
            let s = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let literal = c.is_ascii_digit();
            tokens.push(Token {
                end: i,
                text: (!literal).then_some(&bytes[s..i]),
            });
        } else if c == b'\'' {
            i += 1;
            while bytes[i] != b'\'' {
                i += 1;
            }
            i += 1;
            tokens.push(Token { end: i, text: None });
        } else if src[i..].starts_with("...") {
            i += 3;
            tokens.push(Token {
                end: i,
                text: Some(b"..."),
            });
        } else {
            i += 1;
            tokens.push(Token {
                end: i,
                text: Some(&bytes[i - 1..i]),
            });
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(src: &str) -> String {
        String::from_utf8(apply(src.as_bytes(), &insertions(&test_tokens(src)))).unwrap()
    }

    #[test]
    fn one_value_library_calls_lose_their_tail_call() {
        assert_eq!(
            rewrite("return redis.call('INCRBY', KEYS[1], ARGV[1])"),
            "return ( redis.call('INCRBY', KEYS[1], ARGV[1]))"
        );
        assert_eq!(
            rewrite("if x then return tonumber(a) else return cjson.encode({a = f(1)}) end"),
            "if x then return ( tonumber(a)) else return ( cjson.encode({a = f(1)})) end"
        );
        assert_eq!(
            rewrite("repeat return string.format('%d', (1)) until true"),
            "repeat return ( string.format('%d', (1))) until true"
        );
        assert_eq!(
            rewrite("return redis.pcall('GET', 'k');"),
            "return ( redis.pcall('GET', 'k'));"
        );
        // Nested: a function literal inside the call returns one of its own.
        assert_eq!(
            rewrite("return tostring(function() return tonumber(x) end)"),
            "return ( tostring(function() return ( tonumber(x)) end))"
        );
    }

    #[test]
    fn anything_that_may_differ_is_left_alone() {
        for src in [
            // Several values, or unknown functions.
            "return unpack(t)",
            "return string.gsub(s, 'a', 'b')",
            "return f(1)",
            "return redis.call",
            // More than one expression, or more after the call.
            "return redis.call('GET', 'a'), 1",
            "return redis.call('GET', 'a') .. 'x'",
            "return redis.call('GET', 'a').x",
            "return tostring(a)(b)",
            "return t.redis.call('GET', 'a')",
            // A method call, or a call without parentheses.
            "return redis:call('GET')",
            "return tostring'x'",
            // Unbalanced (a syntax error LuaJIT reports as it is).
            "return tonumber(a",
        ] {
            assert_eq!(rewrite(src), src, "{src}");
        }
    }

    #[test]
    fn a_declared_root_name_is_never_trusted() {
        for src in [
            "local redis = x return redis.call('GET')",
            "local a, cjson = 1, 2 return cjson.encode(a)",
            "local function tonumber(x) return x end return tonumber(1)",
            "function f(a, string) return string.format('x') end",
            "for _, math in ipairs(t) do return math.floor(1) end",
            "local f = function(...) end local t, type = 1 return type(t)",
        ] {
            assert_eq!(rewrite(src), src, "{src}");
        }
        // Other names declared do not matter.
        assert_eq!(
            rewrite("local x = 1 return tostring(x)"),
            "local x = 1 return ( tostring(x))"
        );
    }
}
