//! Checks written into the source so that a running script can be stopped with the JIT
//! compiler on. Pure.
//!
//! LuaJIT never calls an instruction hook inside compiled code, so `while true do end`
//! would run for good once compiled. Code inside the loop does run, though: every loop body
//! (after `do` and `repeat`) and every function body (after its parameter list) starts
//! with a countdown,
//!
//! ```lua
//! <n>=<n>-1 if <n><0 then <n>=<tick>()end
//! ```
//!
//! where `<n>` is a local the chunk declares first and `<tick>` a global only RX's
//! environments answer (`rx_lua::api::rx_tick`): it asks the host whether the script may go
//! on (kill, time limit, BUSY, load timeout), raises the interruption if not, and returns
//! the next budget. Every unbounded run of Lua code goes through a loop or a call, so it
//! meets a check; the common path is three instructions LuaJIT compiles into the trace,
//! and the rare one leaves the trace for the interpreter.
//!
//! Both names hold a byte over 127, which no Lua 5.1 name can (`lua_source` refuses such
//! bytes outside strings), so a script can neither read nor change the countdown, nor
//! shadow the tick. Nothing adds a line: error lines stay those of the source.
//!
//! A chunk whose main function already has Lua's 200 local variables, or a function its 60
//! upvalues, has no room for the countdown: it gets [`CALL_CHECK`] instead, a call to a C
//! function that counts on its own side (`rx_lua::api::rx_count`). That costs a call per
//! check and keeps such code out of the compiler, but it runs, as it does natively.
//!
//! Every check ends with `;`, so the source around it reads exactly as before: a `;`
//! the source puts where Lua 5.1 allows none stays an error.

use crate::c_tail_calls::Token;

/// The countdown's name: one byte no Lua 5.1 name contains.
pub const COUNTDOWN: &[u8] = b"\x81";
/// The tick function's global name (see `rx_lua::api::rx_tick`).
pub const TICK: &[u8] = b"\x82";

/// The counting function's global name, for [`CALL_CHECK`].
pub const COUNT: &[u8] = b"\x83";

/// The chunk's first words: the countdown, with a small first budget (the tick sets the
/// next ones from how fast the checks come).
pub const PROLOGUE: &[u8] = b"local \x81=64;";

/// One check, written after `do`, `repeat` and a function's parameter list.
pub const CHECK: &[u8] = b" \x81=\x81-1 if \x81<0 then \x81=\x82()end; ";

/// What follows [`PROLOGUE`] in a chunk RX calls once per run (a script, a library body)
/// whose blocks balance: the source becomes the body of the function the chunk returns
/// (see `lua_source::Prepared::compile_closed`), closed by [`WRAPPER_CLOSE`].
pub const WRAPPER_OPEN: &[u8] = b"return function(...)";

/// What closes [`WRAPPER_OPEN`]'s function: on a line of its own, after anything the
/// source's last line holds (a comment, say).
pub const WRAPPER_CLOSE: &[u8] = b"\nend";

/// The check for code with no room for the countdown (no prologue then).
pub const CALL_CHECK: &[u8] = b" \x83(); ";

/// What a chunk made by `loadstring` or `load` starts with, before the rest. Such a chunk
/// is a function the script holds and may call again and again (a chunk handed itself can
/// tail-call itself for ever), yet it has no parameter list to put a check after: its
/// entry counts, as [`CALL_CHECK`] does. The chunks RX itself runs (a script, a library
/// body) are called by RX once per run and need none.
pub const ENTRY_CHECK: &[u8] = b"\x83();";

/// Where to write `check` (output offsets, increasing).
pub fn insertions(tokens: &[Token], check: &'static [u8]) -> Vec<(usize, &'static [u8])> {
    let mut out = Vec::new();
    let mut in_function_header = false;
    let mut in_parameters = false;
    for t in tokens {
        match t.text {
            Some(b"do") | Some(b"repeat") => out.push((t.end, check)),
            Some(b"function") => {
                in_function_header = true;
                in_parameters = false;
            }
            // `function [name] (` opens the parameter list, which holds no parentheses.
            Some(b"(") if in_function_header && !in_parameters => in_parameters = true,
            Some(b")") if in_parameters => {
                out.push((t.end, check));
                in_function_header = false;
                in_parameters = false;
            }
            _ => {}
        }
    }
    out
}

/// Whether the chunk's blocks balance: no `end` or `until` closes a block the chunk did not
/// open, and every block it opens is closed. Keywords are the only tokens that open or
/// close blocks (`while` and `for` through their `do`), and none hides in a string.
pub fn blocks_balance(tokens: &[Token]) -> bool {
    let mut depth: u64 = 0;
    for t in tokens {
        match t.text {
            Some(b"function" | b"do" | b"if" | b"repeat") => depth += 1,
            Some(b"end" | b"until") => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            _ => {}
        }
    }
    depth == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The source with the checks written in (`#` for a check).
    fn checked(src: &str) -> String {
        let tokens = crate::c_tail_calls::test_tokens(src);
        let mut out = String::new();
        let mut from = 0;
        for (at, _) in insertions(&tokens, CHECK) {
            out.push_str(&src[from..at]);
            out.push('#');
            from = at;
        }
        out.push_str(&src[from..]);
        out
    }

    #[test]
    fn every_loop_body_starts_with_a_check() {
        assert_eq!(checked("while true do end"), "while true do# end");
        assert_eq!(checked("repeat x = 1 until x"), "repeat# x = 1 until x");
        assert_eq!(
            checked("for i = 1, 10 do f(i) end"),
            "for i = 1, 10 do# f(i) end"
        );
        assert_eq!(
            checked("for k, v in pairs(t) do end"),
            "for k, v in pairs(t) do# end"
        );
        // A plain block gets one too: harmless, and `do` is always a block's start.
        assert_eq!(checked("do local x = 1 end"), "do# local x = 1 end");
    }

    #[test]
    fn every_function_body_starts_with_a_check() {
        assert_eq!(
            checked("function f(a, b) return a end"),
            "function f(a, b)# return a end"
        );
        assert_eq!(
            checked("local function f() return f() end"),
            "local function f()# return f() end"
        );
        assert_eq!(
            checked("function a.b:c(...) end"),
            "function a.b:c(...)# end"
        );
        assert_eq!(checked("x = function(x) end"), "x = function(x)# end");
        // Calls and parentheses outside a header are left alone.
        assert_eq!(
            checked("f(g(1), (2)) t[(3)] = 4"),
            "f(g(1), (2)) t[(3)] = 4"
        );
        assert_eq!(
            checked("pcall(function() while x do end end)"),
            "pcall(function()# while x do# end end)"
        );
    }

    #[test]
    fn blocks_balance_only_when_every_block_closes_once() {
        // Through the real reader, which knows comments and long strings.
        let balanced = |src: &str| crate::lua_source::prepare(src.as_bytes(), false).closable;
        assert!(balanced("return 1"));
        assert!(balanced(""));
        assert!(balanced(
            "local function f(a) if a then return 1 elseif b then return 2 else return 3 end end \
             while x do repeat y() until z end for i = 1, 2 do end do end"
        ));
        assert!(balanced("local s = 'end end' -- end\nreturn [[end]]"));
        // An `end` that would close the function RX wraps the chunk in: never wrapped.
        assert!(!balanced("return 1 end, function() x()"));
        assert!(!balanced("x() end"));
        assert!(!balanced("repeat until x until y"));
        // A block left open.
        assert!(!balanced("if x then y()"));
        assert!(!balanced("function f()"));
    }

    #[test]
    fn every_check_is_one_statement_ended_by_a_semicolon() {
        // Nothing of the source can continue it (`-1`, `(f)()`), and a `;` the source puts
        // first in a block stays the error it is in Lua 5.1 (`;;`).
        for check in [PROLOGUE, CHECK, CALL_CHECK] {
            assert!(check.trim_ascii_end().ends_with(b";"), "{check:?}");
            assert!(!check.contains(&b'\n'), "{check:?}");
        }
    }
}
