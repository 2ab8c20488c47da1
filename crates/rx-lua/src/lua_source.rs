//! Lua 5.1 source text, prepared for LuaJIT. Pure.
//!
//! Redis compiles scripts with Lua 5.1; RX compiles them with LuaJIT, whose lexer accepts
//! more: bit operators (`>>`, `&`, `~`), `!=`, `::` labels and the `goto` keyword, `?.`,
//! `??`, `->`, 64-bit and imaginary number suffixes (`1LL`, `1i`), non-ASCII names, and
//! `\x`/`\z`/`\u{}` string escapes, while it refuses escapes Lua 5.1 takes as the plain
//! character (`"\q"` is `"q"` in Lua 5.1). So a script Redis refuses could load in RX, and
//! the same string literal could mean different bytes.
//!
//! [`prepare`] reads the source with Lua 5.1's lexical rules (llex.c) and writes it back so
//! that LuaJIT reads exactly the tokens Lua 5.1 read: string literals re-escaped to the
//! bytes Lua 5.1 gives them, adjacent tokens separated by a space (so `>>` stays two `>`),
//! every line break kept (error lines stay right). A character that no rule of Lua 5.1's
//! grammar takes but LuaJIT's does (`&`, `|`, `!`, `?`, a lone `~`, bytes over 127), or Lua
//! 5.1's own lexical errors (malformed numbers, unfinished strings, ...), end the source with
//! a placeholder: a control byte absent from the source, which LuaJIT's parser refuses
//! wherever it stands. Whatever error LuaJIT then reports is Lua 5.1's: an earlier syntax
//! error comes first, as in Lua 5.1; one at the placeholder is rewritten by
//! [`Prepared::fix_error`] into the message Lua 5.1 gives.

use crate::c_tail_calls;
use crate::kill_checks;

/// The source to give LuaJIT, and how to read its syntax errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub code: Vec<u8>,
    /// `code` with the checks that let a running script be stopped (`kill_checks`): what
    /// runs. `code` itself when that cannot compile (it holds a placeholder); empty when
    /// the source was refused.
    pub checked: Vec<u8>,
    /// `code` with the checks as calls, for a source with no room for the countdown
    /// (`kill_checks::CALL_CHECK`); like `checked` otherwise.
    pub checked_by_calls: Vec<u8>,
    /// The source's blocks balance (`kill_checks::blocks_balance`): `checked` can be
    /// wrapped in a function (`compile_closed`).
    pub closable: bool,
    placeholders: Vec<(u8, Fix)>,
    /// The source needs a placeholder where Lua 5.1 stops with an error, but holds every
    /// placeholder byte already: it is refused with this text instead of compiled.
    pub refusal: Option<Vec<u8>>,
}

/// What a source that holds every placeholder byte gets, where Lua 5.1 reports an error of
/// its own (RX cannot tell which without a placeholder).
pub const NO_PLACEHOLDER_LEFT: &str = "RX cannot read this source as Lua 5.1 does: it holds every control character from \\1 to \\8 and \\14 to \\31, and Lua 5.1 stops with an error in it";

/// What an error at a placeholder byte means in Lua 5.1 terms.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fix {
    /// A token Lua 5.1 reads as a single-character token: errors name it `near '<text>'`.
    Token(Vec<u8>),
    /// A lexical error of Lua 5.1: the whole message, `near` included.
    Message(Vec<u8>),
    /// A NUL byte: token 0 to Lua 5.1, whose errors then say nothing `near` it.
    Unnamed,
}

/// `goto` is an ordinary name in Lua 5.1 but a keyword in LuaJIT: as a name it is written
/// with this byte after it (a name no Lua 5.1 source can contain).
const GOTO_NAME_SUFFIX: u8 = 0x80;

impl Prepared {
    /// Compiles what should run, with `load` (the function, or LuaJIT's message; `None`:
    /// not even that could be had). That is `checked`, after `entry` (see
    /// `kill_checks::ENTRY_CHECK`). When it does not compile, `code` says why, with Lua
    /// 5.1's message, lines and all; if `code` does compile (handed to `discard`), the
    /// source had no room for the countdown and `checked_by_calls` runs. Plain Lua 5.1
    /// cannot read the checks' names, has no JIT, and is interrupted by a hook instead
    /// (see `vm`): it runs `code`.
    pub fn compile_runnable<T>(
        &self,
        entry: &[u8],
        mut load: impl FnMut(&[u8]) -> Result<T, Option<Vec<u8>>>,
        discard: impl FnOnce(T),
    ) -> Result<T, Vec<u8>> {
        let no_memory = || b"not enough memory".to_vec();
        if !cfg!(feature = "luajit") {
            return load(&self.code).map_err(|e| self.fix_error(&e.unwrap_or_else(no_memory)));
        }
        let after_entry = |code: &[u8]| [entry, code].concat();
        let checked_error = match load(&after_entry(&self.checked)) {
            Ok(f) => return Ok(f),
            Err(e) => e,
        };
        match load(&self.code) {
            Err(Some(message)) => Err(self.fix_error(&message)),
            Err(None) => Err(checked_error.unwrap_or_else(no_memory)),
            Ok(plain) => {
                discard(plain);
                load(&after_entry(&self.checked_by_calls)).map_err(|e| e.unwrap_or_else(no_memory))
            }
        }
    }

    /// `compile_runnable` for a chunk RX calls once per run (a script, a library body). When
    /// its blocks balance, what runs is `checked` inside a function: the chunk
    /// `local <n>=64;return function(...) <source with checks> end` is loaded, and `open`
    /// calls it once for the function. The countdown is then an upvalue already closed, which
    /// every closure the source makes takes from its parent for nothing, where the main
    /// chunk's open local costs each closure a walk along the open upvalues (BullMQ's
    /// scripts make dozens of closures per call; making them was 8% of their instructions,
    /// a third of that the walk). The
    /// function reads the source as a main chunk reads it: a block, vararg, on the same
    /// lines; with balanced blocks its `end` can only close the wrapper, so it compiles
    /// exactly when the source does. Anything else takes `compile_runnable`'s way.
    pub fn compile_closed<T>(
        &self,
        mut load: impl FnMut(&[u8]) -> Result<T, Option<Vec<u8>>>,
        open: impl FnOnce(T) -> Result<T, Option<Vec<u8>>>,
        discard: impl FnOnce(T),
    ) -> Result<T, Vec<u8>> {
        let wrappable = cfg!(feature = "luajit") && self.closable;
        let body = self
            .checked
            .strip_prefix(kill_checks::PROLOGUE)
            .filter(|_| wrappable);
        if let Some(body) = body {
            let wrapped = [
                kill_checks::PROLOGUE,
                kill_checks::WRAPPER_OPEN,
                body,
                kill_checks::WRAPPER_CLOSE,
            ]
            .concat();
            match load(&wrapped).map(open) {
                Ok(Ok(f)) => return Ok(f),
                Ok(Err(Some(e))) => return Err(e),
                Ok(Err(None)) => return Err(b"not enough memory".to_vec()),
                Err(_) => {}
            }
        }
        self.compile_runnable(b"", load, discard)
    }

    /// LuaJIT's syntax error for the prepared code, as Lua 5.1 would have reported it for
    /// the original source.
    pub fn fix_error(&self, message: &[u8]) -> Vec<u8> {
        let mut out = message.to_vec();
        for (byte, fix) in &self.placeholders {
            let near = format!("near 'char({byte})'");
            let Some(at) = find(&out, near.as_bytes()) else {
                continue;
            };
            match fix {
                Fix::Token(text) => {
                    let mut fixed = out[..at].to_vec();
                    fixed.extend_from_slice(b"near '");
                    fixed.extend_from_slice(text);
                    fixed.push(b'\'');
                    fixed.extend_from_slice(&out[at + near.len()..]);
                    out = fixed;
                }
                Fix::Unnamed => {
                    let mut fixed = out[..at].to_vec();
                    if fixed.last() == Some(&b' ') {
                        fixed.pop();
                    }
                    fixed.extend_from_slice(&out[at + near.len()..]);
                    out = fixed;
                }
                Fix::Message(text) => {
                    // Keep `<chunk>:<line>: `, replace the message after it.
                    let start = location_end(&out[..at]).unwrap_or(0);
                    let mut fixed = out[..start].to_vec();
                    fixed.extend_from_slice(text);
                    fixed.extend_from_slice(&out[at + near.len()..]);
                    out = fixed;
                }
            }
        }
        restore_goto(&mut out);
        out
    }
}

/// Gives `goto` back its name in a message that quotes the renamed name (`attempt to call
/// global 'goto'`): any error text of prepared code, at compile or run time.
pub fn restore_goto(message: &mut Vec<u8>) {
    let renamed = [b'g', b'o', b't', b'o', GOTO_NAME_SUFFIX];
    while let Some(at) = find(message, &renamed) {
        message.remove(at + 4);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The end of a `<chunk>:<line>: ` prefix in `s`, if it starts with one.
fn location_end(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < s.len() {
        if s[i] == b':' {
            let digits = s[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
            let after = i + 1 + digits;
            if digits > 0 && s.get(after) == Some(&b':') && s.get(after + 1) == Some(&b' ') {
                return Some(after + 2);
            }
        }
        i += 1;
    }
    None
}

/// C's `isspace` in the C locale.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Reads `src` with Lua 5.1's lexical rules and writes the source LuaJIT should compile.
/// `refuse_nested_long_brackets`: see `Dialect::refuse_nested_long_brackets`.
pub fn prepare(src: &[u8], refuse_nested_long_brackets: bool) -> Prepared {
    let free: Vec<u8> = (0x01..=0x08u8)
        .chain(0x0e..=0x1f)
        .filter(|b| !src.contains(b))
        .collect();
    let mut w = Writer {
        src,
        pos: 0,
        out: Vec::with_capacity(src.len() + src.len() / 8 + 16),
        placeholders: Vec::new(),
        free,
        adjacent: false,
        refuse_nested_long_brackets,
        brackets: Vec::new(),
        function_name: None,
        self_parameter: SelfParameter::None,
        tokens: Vec::new(),
    };
    if w.run().is_err() {
        // No placeholder byte left (the source holds every one): compiling it as it is
        // would take LuaJIT's syntax where Lua 5.1 stops.
        return Prepared {
            code: Vec::new(),
            checked: Vec::new(),
            checked_by_calls: Vec::new(),
            closable: false,
            placeholders: Vec::new(),
            refusal: Some(NO_PLACEHOLDER_LEFT.as_bytes().to_vec()),
        };
    }
    // Past a placeholder LuaJIT only reports an error: nothing to keep in its frame, and
    // nothing will run.
    if !w.placeholders.is_empty() {
        return Prepared {
            checked: w.out.clone(),
            checked_by_calls: w.out.clone(),
            closable: false,
            code: w.out,
            placeholders: w.placeholders,
            refusal: None,
        };
    }
    let tokens: Vec<c_tail_calls::Token> = w
        .tokens
        .iter()
        .map(|&(start, end, literal)| c_tail_calls::Token {
            end,
            text: (!literal).then(|| &w.out[start..end]),
        })
        .collect();
    let tail_calls = c_tail_calls::insertions(&tokens);
    let with_checks = |check: &'static [u8], prologue: &[u8]| {
        let mut both = tail_calls.clone();
        both.extend(kill_checks::insertions(&tokens, check));
        // In offset order; at one offset a tail call's `)` or ` (` goes before a check.
        both.sort_by_key(|(at, _)| *at);
        let mut out = Vec::with_capacity(w.out.len() + w.out.len() / 4 + prologue.len());
        out.extend_from_slice(prologue);
        out.extend_from_slice(&c_tail_calls::apply(&w.out, &both));
        out
    };
    let closable = kill_checks::blocks_balance(&tokens);
    let checked = with_checks(kill_checks::CHECK, kill_checks::PROLOGUE);
    let checked_by_calls = with_checks(kill_checks::CALL_CHECK, b"");
    let code = if tail_calls.is_empty() {
        w.out
    } else {
        c_tail_calls::apply(&w.out, &tail_calls)
    };
    Prepared {
        code,
        checked,
        checked_by_calls,
        closable,
        placeholders: w.placeholders,
        refusal: None,
    }
}

/// Out of placeholder bytes.
struct Exhausted;

/// Where a method written as an assignment stands with its `self` parameter.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SelfParameter {
    None,
    /// Write `self` after the next `(`.
    Pending,
    /// `self` written: a comma goes before the next token unless it is `)`.
    Written,
}

struct Writer<'a> {
    src: &'a [u8],
    pos: usize,
    out: Vec<u8>,
    placeholders: Vec<(u8, Fix)>,
    free: Vec<u8>,
    /// No whitespace or comment since the last token: the next one is written after a space.
    adjacent: bool,
    refuse_nested_long_brackets: bool,
    /// The brackets open at this point (`{`, `(`, `[`), for `goto` as a table field.
    brackets: Vec<u8>,
    /// Inside `function <name>`: where the `function` keyword was written, for
    /// `function t.goto()`, which LuaJIT cannot read.
    function_name: Option<(usize, usize)>,
    /// `function t:goto(...)` became `t["goto"] = function(...)`: `self` goes first.
    self_parameter: SelfParameter,
    /// Every token written: where it starts and ends in `out`, and whether it is a literal
    /// (a string or a number), for `c_tail_calls`.
    tokens: Vec<(usize, usize, bool)>,
}

impl Writer<'_> {
    fn cur(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn at(&self, ahead: usize) -> Option<u8> {
        self.src.get(self.pos + ahead).copied()
    }

    /// Copies a line break (`\n`, `\r`, `\n\r` or `\r\n`) as it is.
    fn newline(&mut self) {
        let first = self.src[self.pos];
        self.out.push(first);
        self.pos += 1;
        if let Some(second) = self.cur() {
            if (second == b'\n' || second == b'\r') && second != first {
                self.out.push(second);
                self.pos += 1;
            }
        }
    }

    /// Starts a token: a space first if it touches the previous one.
    fn begin_token(&mut self) {
        if self.adjacent {
            self.out.push(b' ');
        }
        self.adjacent = true;
    }

    /// The text of the last token written (empty for a literal).
    fn last_token(&self) -> &[u8] {
        match self.tokens.last() {
            Some(&(start, end, false)) => &self.out[start..end],
            _ => b"",
        }
    }

    fn token(&mut self, text: &[u8]) {
        if self.self_parameter == SelfParameter::Written {
            self.self_parameter = SelfParameter::None;
            if text != b")" {
                self.push_token(b",");
            }
        }
        self.push_token(text);
        match text {
            b"{" | b"(" | b"[" => self.brackets.push(text[0]),
            b"}" | b")" | b"]" => {
                self.brackets.pop();
            }
            _ => {}
        }
        if text == b"function" {
            let end = self.out.len();
            self.function_name = Some((end - text.len(), end));
        } else if !(text == b"."
            || text == b":"
            || text
                .first()
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_'))
        {
            self.function_name = None;
        }
        if text == b"(" && self.self_parameter == SelfParameter::Pending {
            self.push_token(b"self");
            self.self_parameter = SelfParameter::Written;
        }
    }

    fn push_token(&mut self, text: &[u8]) {
        self.begin_token();
        let start = self.out.len();
        self.out.extend_from_slice(text);
        let literal = text.first().is_some_and(|c| {
            c.is_ascii_digit() || (*c == b'.' && text.len() > 1 && text != b".." && text != b"...")
        });
        self.tokens.push((start, self.out.len(), literal));
    }

    /// Ends the source with a placeholder LuaJIT will stop at. Lua 5.1 stops there too (or
    /// earlier, at a syntax error LuaJIT finds the same way): at a lexical error, or at a
    /// single-character token no rule of its grammar takes, so nothing after it matters.
    fn placeholder(&mut self, fix: Fix) -> Result<(), Exhausted> {
        let byte = self.free.pop().ok_or(Exhausted)?;
        self.begin_token();
        self.out.push(byte);
        self.placeholders.push((byte, fix));
        self.pos = self.src.len();
        Ok(())
    }

    /// A Lua 5.1 lexical error here.
    fn lexical_error(&mut self, msg: &str, near: &[u8]) -> Result<(), Exhausted> {
        let mut text = msg.as_bytes().to_vec();
        text.extend_from_slice(b" near '");
        // Lua 5.1 prints its token buffer as a C string.
        let end = near.iter().position(|&b| b == 0).unwrap_or(near.len());
        text.extend_from_slice(&near[..end]);
        text.push(b'\'');
        self.placeholder(Fix::Message(text))
    }

    fn run(&mut self) -> Result<(), Exhausted> {
        while let Some(c) = self.cur() {
            match c {
                b'\n' | b'\r' => {
                    self.newline();
                    self.adjacent = false;
                }
                b'-' if self.at(1) == Some(b'-') => self.comment()?,
                b'[' => self.bracket()?,
                b'=' | b'<' | b'>' | b'~' => {
                    self.pos += 1;
                    if self.cur() == Some(b'=') {
                        self.pos += 1;
                        self.token(&[c, b'=']);
                    } else if c == b'~' {
                        self.placeholder(Fix::Token(b"~".to_vec()))?;
                    } else {
                        self.token(&[c]);
                    }
                }
                b'"' | b'\'' => self.string(c)?,
                b'.' => {
                    if check_next(self.at(1), b".") {
                        if check_next(self.at(2), b".") {
                            self.pos += 3;
                            self.token(b"...");
                        } else {
                            self.pos += 2;
                            self.token(b"..");
                        }
                    } else if self.at(1).is_some_and(|d| d.is_ascii_digit()) {
                        self.number()?;
                    } else {
                        self.pos += 1;
                        self.token(b".");
                    }
                }
                _ if is_space(c) => {
                    self.out.push(c);
                    self.pos += 1;
                    self.adjacent = false;
                }
                _ if c.is_ascii_digit() => self.number()?,
                _ if c.is_ascii_alphabetic() || c == b'_' => self.name(),
                // Single-character tokens of Lua 5.1 that LuaJIT gives a meaning of its own.
                b'&' | b'|' | b'!' | b'?' | 0x80..=0xff => {
                    self.pos += 1;
                    self.placeholder(Fix::Token(vec![c]))?;
                }
                // Token 0 to Lua 5.1, which its errors name with no `near` at all.
                0 => {
                    self.pos += 1;
                    self.placeholder(Fix::Unnamed)?;
                }
                _ => {
                    self.pos += 1;
                    self.token(&[c]);
                }
            }
        }
        Ok(())
    }

    /// `goto`, a name to Lua 5.1 and a keyword to LuaJIT, written so that LuaJIT reads what
    /// Lua 5.1 reads: a field or method name becomes the string key it stands for, any other
    /// use a name LuaJIT takes (`goto` and a byte no Lua 5.1 name has; error texts give it
    /// back its name: `restore_goto`).
    fn goto_name(&mut self) {
        let after = self.last_token().to_vec();
        if after == b"." || after == b":" {
            let method = after == b":";
            // The separator is blanked, not cut: a comment or a line break may follow it.
            if let Some((sep_start, sep_end, _)) = self.tokens.pop() {
                for b in &mut self.out[sep_start..sep_end] {
                    *b = b' ';
                }
            }
            if let Some((keyword_start, keyword_end)) = self.function_name.take() {
                // `function t.goto(...)` is `t["goto"] = function(...)`, and `function
                // t:goto(...)` the same with `self` first; the keyword's place is blanked,
                // so every line and offset stays where it was.
                for b in &mut self.out[keyword_start..keyword_end] {
                    *b = b' ';
                }
                self.tokens.retain(|&(start, _, _)| start != keyword_start);
                self.adjacent = false;
                self.literal(b"[\"goto\"]");
                self.token(b"=");
                self.token(b"function");
                self.function_name = None;
                if method {
                    self.self_parameter = SelfParameter::Pending;
                }
                return;
            }
            if !method {
                // `t.goto` is `t["goto"]`: same key, and no keyword for LuaJIT.
                self.adjacent = false;
                self.literal(b"[\"goto\"]");
                return;
            }
            // `t:goto(...)`: LuaJIT has no way to write it; the renamed name stands (see
            // the README's known differences).
            self.token(b":");
        } else if self.brackets.last() == Some(&b'{')
            && matches!(&after[..], b"{" | b"," | b";")
            && self.next_is_single_equals()
        {
            // `{goto = 1}` is `{["goto"] = 1}`.
            self.literal(b"[\"goto\"]");
            return;
        }
        self.token(b"goto");
        self.out.push(GOTO_NAME_SUFFIX);
    }

    /// A literal token (a string, or an index standing for one).
    fn literal(&mut self, text: &[u8]) {
        self.begin_token();
        let start = self.out.len();
        self.out.extend_from_slice(text);
        self.tokens.push((start, self.out.len(), true));
    }

    /// Whether the next token in the source is `=` (not `==`), past blanks, line breaks and
    /// comments (`{goto --[[c]] = 1}` is a field too).
    fn next_is_single_equals(&self) -> bool {
        let src = self.src;
        let mut i = self.pos;
        loop {
            while src.get(i).is_some_and(|&c| is_space(c)) {
                i += 1;
            }
            if !src[i.min(src.len())..].starts_with(b"--") {
                return src.get(i) == Some(&b'=') && src.get(i + 1) != Some(&b'=');
            }
            i += 2;
            // A long comment: `[`, `=`*level, `[`, up to `]`, `=`*level, `]`.
            if src.get(i) == Some(&b'[') {
                let mut j = i + 1;
                while src.get(j) == Some(&b'=') {
                    j += 1;
                }
                if src.get(j) == Some(&b'[') {
                    let close = [&b"]"[..], &vec![b'='; j - i - 1], b"]"].concat();
                    match find(&src[j + 1..], &close) {
                        Some(at) => {
                            i = j + 1 + at + close.len();
                            continue;
                        }
                        None => return false,
                    }
                }
            }
            while src.get(i).is_some_and(|&c| c != b'\n' && c != b'\r') {
                i += 1;
            }
        }
    }

    fn name(&mut self) {
        let start = self.pos;
        while self
            .cur()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            self.pos += 1;
        }
        let name = &self.src[start..self.pos];
        if name == b"goto" {
            self.goto_name();
            return;
        }
        // Every other keyword is the same in both.
        let src = self.src;
        self.token(&src[start..self.pos]);
    }

    /// A numeral, read as Lua 5.1's `read_numeral` does and checked as `luaO_str2d` does.
    fn number(&mut self) -> Result<(), Exhausted> {
        let start = self.pos;
        while self.cur().is_some_and(|c| c.is_ascii_digit() || c == b'.') {
            self.pos += 1;
        }
        if check_next(self.cur(), b"Ee") {
            self.pos += 1;
            if check_next(self.cur(), b"+-") {
                self.pos += 1;
            }
        }
        while self
            .cur()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            self.pos += 1;
        }
        // Lua 5.1 converts (and quotes) its buffer as a C string: up to a NUL.
        let read = &self.src[start..self.pos];
        let text = read[..read.iter().position(|&b| b == 0).unwrap_or(read.len())].to_vec();
        match lua51_number(&text) {
            Some(value) if is_hex(&text) => {
                // LuaJIT reads hex numerals with rules of its own: write the value instead.
                self.token(&numeral(value));
                Ok(())
            }
            Some(_) => {
                self.token(&text);
                Ok(())
            }
            None => self.lexical_error("malformed number", &text),
        }
    }

    /// `--` comments, short or long, copied as they are.
    fn comment(&mut self) -> Result<(), Exhausted> {
        let start = self.pos;
        self.pos += 2;
        if self.cur() == Some(b'[') {
            let (level, after) = self.separator();
            if let Some(level) = level {
                let opened = self.out.len();
                self.out.extend_from_slice(&self.src[start..after]);
                self.pos = after;
                return self.long_bracket(level, true, opened);
            }
        }
        while self.cur().is_some_and(|c| c != b'\n' && c != b'\r') {
            self.pos += 1;
        }
        self.out.extend_from_slice(&self.src[start..self.pos]);
        self.adjacent = false;
        Ok(())
    }

    /// At a `[`: `Some(level)` when `[`, `=`*level, `[` follows, with the position after it;
    /// else `None` and the position after the `[` and `=`s (Lua 5.1's `skip_sep`).
    fn separator(&self) -> (Option<usize>, usize) {
        let mut i = self.pos + 1;
        while self.src.get(i) == Some(&b'=') {
            i += 1;
        }
        if self.src.get(i) == Some(&b'[') {
            (Some(i - self.pos - 1), i + 1)
        } else {
            (None, i)
        }
    }

    fn bracket(&mut self) -> Result<(), Exhausted> {
        match self.separator() {
            (Some(level), after) => {
                self.begin_token();
                let opened = self.out.len();
                self.out.extend_from_slice(&self.src[self.pos..after]);
                self.pos = after;
                self.long_bracket(level, false, opened)?;
                self.tokens.push((opened, self.out.len(), true));
                self.adjacent = true;
                Ok(())
            }
            (None, after) if after == self.pos + 1 => {
                self.pos += 1;
                self.token(b"[");
                Ok(())
            }
            (None, after) => {
                let near = self.src[self.pos..after].to_vec();
                self.lexical_error("invalid long string delimiter", &near)
            }
        }
    }

    /// The rest of a long string or comment of `level`, copied as it is, with Lua 5.1's
    /// refusal of a nested `[[` in a level-0 one. `opened` is where its opening bracket was
    /// written: on an error the opening is taken back (a placeholder inside it would be
    /// text to LuaJIT) and only its line breaks stay, so the error is on Lua 5.1's line.
    fn long_bracket(
        &mut self,
        level: usize,
        comment: bool,
        opened: usize,
    ) -> Result<(), Exhausted> {
        let start = self.pos;
        let fail = |w: &mut Self, msg: &str, near: &[u8]| {
            // As many line breaks as Lua 5.1 counted (`\r\n` and `\n\r` are one, a lone
            // `\r` or `\n` one each), written as `\n`: kept as they were, a `\r` and a
            // `\n` from different lines would become one.
            let text: Vec<u8> = w.out[opened..]
                .iter()
                .chain(&w.src[start..w.pos])
                .copied()
                .collect();
            let mut lines = Vec::new();
            let mut i = 0;
            while i < text.len() {
                let c = text[i];
                if c == b'\n' || c == b'\r' {
                    lines.push(b'\n');
                    if matches!(text.get(i + 1), Some(&n) if (n == b'\n' || n == b'\r') && n != c) {
                        i += 1;
                    }
                }
                i += 1;
            }
            w.out.truncate(opened);
            w.out.extend_from_slice(&lines);
            w.adjacent = false;
            w.lexical_error(msg, near)
        };
        loop {
            match self.cur() {
                None => {
                    let msg = if comment {
                        "unfinished long comment"
                    } else {
                        "unfinished long string"
                    };
                    return fail(self, msg, b"<eof>");
                }
                Some(b'[') => {
                    if let (Some(0), _) = self.separator() {
                        if level == 0 && self.refuse_nested_long_brackets {
                            return fail(self, "nesting of [[...]] is deprecated", b"[");
                        }
                    }
                    self.pos += 1;
                }
                Some(b']') => {
                    let mut i = self.pos + 1;
                    while self.src.get(i) == Some(&b'=') {
                        i += 1;
                    }
                    if self.src.get(i) == Some(&b']') && i - self.pos - 1 == level {
                        self.pos = i + 1;
                        self.out.extend_from_slice(&self.src[start..self.pos]);
                        return Ok(());
                    }
                    self.pos += 1;
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// A quoted string, decoded with Lua 5.1's escapes and written back with escapes
    /// LuaJIT reads as the same bytes; its line breaks (`\` before a newline) are kept.
    fn string(&mut self, quote: u8) -> Result<(), Exhausted> {
        // What Lua 5.1 has saved so far (for error messages): the quote, then the bytes.
        let mut saved = vec![quote];
        let mut lines = Vec::new();
        self.pos += 1;
        loop {
            match self.cur() {
                None => return self.string_error("unfinished string", b"<eof>", &lines),
                Some(b'\n') | Some(b'\r') => {
                    return self.string_error("unfinished string", &saved.clone(), &lines)
                }
                Some(c) if c == quote => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.cur() {
                        None => {}
                        Some(b'\n') | Some(b'\r') => {
                            let first = self.src[self.pos];
                            let mut brk = vec![first];
                            self.pos += 1;
                            if let Some(second) = self.cur() {
                                if (second == b'\n' || second == b'\r') && second != first {
                                    brk.push(second);
                                    self.pos += 1;
                                }
                            }
                            lines.push((saved.len() - 1, brk));
                            saved.push(b'\n');
                        }
                        Some(d) if d.is_ascii_digit() => {
                            let mut value: u32 = 0;
                            let mut digits = 0;
                            while digits < 3 && self.cur().is_some_and(|d| d.is_ascii_digit()) {
                                value = value * 10 + u32::from(self.src[self.pos] - b'0');
                                self.pos += 1;
                                digits += 1;
                            }
                            if value > 255 {
                                return self.string_error(
                                    "escape sequence too large",
                                    &saved.clone(),
                                    &lines,
                                );
                            }
                            saved.push(value as u8);
                        }
                        Some(e) => {
                            self.pos += 1;
                            saved.push(match e {
                                b'a' => 0x07,
                                b'b' => 0x08,
                                b'f' => 0x0c,
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'v' => 0x0b,
                                other => other,
                            });
                        }
                    }
                }
                Some(c) => {
                    saved.push(c);
                    self.pos += 1;
                }
            }
        }
        self.begin_token();
        let start = self.out.len();
        self.write_string(quote, &saved[1..], &lines);
        self.tokens.push((start, self.out.len(), true));
        Ok(())
    }

    /// Writes `bytes` as a LuaJIT literal in the original quotes (LuaJIT's errors quote a
    /// string token with them, as Lua 5.1's do); `lines` are the byte offsets where the
    /// original had a `\`-escaped line break, written the same way.
    fn write_string(&mut self, quote: u8, bytes: &[u8], lines: &[(usize, Vec<u8>)]) {
        self.out.push(quote);
        let mut next_line = lines.iter().peekable();
        for (i, &b) in bytes.iter().enumerate() {
            if let Some((at, brk)) = next_line.peek() {
                if *at == i {
                    self.out.push(b'\\');
                    self.out.extend_from_slice(brk);
                    next_line.next();
                    continue;
                }
            }
            match b {
                b'\\' => self.out.extend_from_slice(b"\\\\"),
                _ if b == quote => {
                    self.out.push(b'\\');
                    self.out.push(b);
                }
                0x20..=0x7e => self.out.push(b),
                _ => {
                    // Three digits, so a digit after it cannot extend the escape.
                    self.out.extend_from_slice(format!("\\{b:03}").as_bytes());
                }
            }
        }
        self.out.push(quote);
    }

    /// A lexical error inside a string: the line breaks read so far are kept, so LuaJIT
    /// reports the line Lua 5.1 reports.
    fn string_error(
        &mut self,
        msg: &str,
        near: &[u8],
        lines: &[(usize, Vec<u8>)],
    ) -> Result<(), Exhausted> {
        for (_, brk) in lines {
            self.out.extend_from_slice(brk);
        }
        self.adjacent = false;
        self.lexical_error(msg, near)
    }
}

/// Lua 5.1's `check_next`: whether the next character is in `set`, by `strchr`, which also
/// finds the string's terminating NUL: a NUL byte matches every set (so `10\0` reads as
/// the numeral `10`, and `.\0` as `..`).
fn check_next(c: Option<u8>, set: &[u8]) -> bool {
    c.is_some_and(|c| c == 0 || set.contains(&c))
}

fn is_hex(text: &[u8]) -> bool {
    text.len() > 1 && text[0] == b'0' && (text[1] | 0x20) == b'x'
}

/// The value Lua 5.1 (`luaO_str2d`: glibc's `strtod`, then `strtoul` base 16 for a hex
/// integer) gives a numeral token, or `None` for a malformed one. Tokens start with a digit
/// or a `.` and hold only digits, letters, `_`, `.` and an exponent sign.
pub fn lua51_number(text: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(text).ok()?;
    if is_hex(text) {
        return hex_number(&s[2..]);
    }
    // strtod reads the longest decimal prefix; the whole token must be it (trailing
    // spaces aside, which a token cannot hold).
    let valid = {
        let b = s.as_bytes();
        let mut i = 0;
        let mut digits = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
            digits += 1;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
                digits += 1;
            }
        }
        if digits > 0 && i < b.len() && (b[i] | 0x20) == b'e' {
            let mut j = i + 1;
            if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
                j += 1;
            }
            if j < b.len() && b[j].is_ascii_digit() {
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
                i = j;
            }
        }
        digits > 0 && i == b.len()
    };
    if !valid {
        return None;
    }
    s.parse::<f64>().ok()
}

/// A hex numeral after its `0x`: glibc's `strtod` reads hex floats (`1.8p3`); what it
/// cannot read whole, `strtoul` may (Lua 5.1's fallback when strtod stops at the `x`, which
/// it never does here) — so the token is valid exactly when it is a whole hex float with at
/// least one digit, rounded once as strtod rounds it.
fn hex_number(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let mantissa_end = b.iter().position(|c| (c | 0x20) == b'p').unwrap_or(b.len());
    if !b[..mantissa_end].iter().any(u8::is_ascii_hexdigit) {
        return None;
    }
    let (value, end) = rx_core::strtod::hex_float(b, 0);
    (end == b.len()).then_some(value)
}

/// A numeral LuaJIT reads as exactly `value`.
fn numeral(value: f64) -> Vec<u8> {
    if value.is_infinite() {
        b"1e999".to_vec()
    } else {
        // Shortest text that reads back as the same double.
        format!("{value:?}").into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(src: &str) -> String {
        String::from_utf8_lossy(&prepare(src.as_bytes(), true).code).into_owned()
    }

    /// The error LuaJIT would give at the placeholder, as `fix_error` rewrites it.
    fn fixed(src: &str, luajit_error_at_placeholder: &str) -> String {
        let p = prepare(src.as_bytes(), true);
        let (byte, _) = p.placeholders.first().expect("a placeholder");
        let msg = luajit_error_at_placeholder.replace('P', &format!("'char({byte})'"));
        String::from_utf8_lossy(&p.fix_error(msg.as_bytes())).into_owned()
    }

    #[test]
    fn plain_code_keeps_its_tokens_and_lines() {
        assert_eq!(
            code("local a = 1\nreturn a + 2"),
            "local a = 1\nreturn a + 2"
        );
        assert_eq!(code("return a..b"), "return a .. b");
        assert_eq!(
            code("f(...)\r\n--x\nreturn t[1]"),
            "f ( ... )\r\n--x\nreturn t [ 1 ]"
        );
        assert_eq!(code("--[==[ a\n]] ]==]x"), "--[==[ a\n]] ]==]x");
        assert_eq!(code("return [[\na]]..'b'"), "return [[\na]] .. 'b'");
    }

    #[test]
    fn luajit_only_operators_are_split_or_refused() {
        assert_eq!(code("return 12 >> 2"), "return 12 > > 2");
        assert_eq!(code("return 1 << 2"), "return 1 < < 2");
        assert_eq!(code("::x::"), ": : x : :");
        assert_eq!(code("a->b"), "a - > b");
        assert_eq!(
            fixed("return 6 & 3", "user_script:1: '<eof>' expected near P"),
            "user_script:1: '<eof>' expected near '&'"
        );
        assert_eq!(
            fixed(
                "if a != 3 then end",
                "user_script:1: 'then' expected near P"
            ),
            "user_script:1: 'then' expected near '!'"
        );
        assert_eq!(
            fixed("return ~a", "user_script:1: unexpected symbol near P"),
            "user_script:1: unexpected symbol near '~'"
        );
        assert_eq!(code("return a ~= b"), "return a ~= b");
        assert_eq!(
            prepare("local \u{e9} = 1".as_bytes(), true)
                .placeholders
                .len(),
            1
        );
        // Nothing after such a character is read: no rule of Lua 5.1's grammar takes it.
        assert_eq!(code("return 1 & 2 & 3"), "return 1 \u{1f}");
    }

    #[test]
    fn numbers_follow_lua51() {
        assert_eq!(lua51_number(b"1"), Some(1.0));
        assert_eq!(lua51_number(b"1.5e3"), Some(1500.0));
        assert_eq!(lua51_number(b".5"), Some(0.5));
        assert_eq!(lua51_number(b"5."), Some(5.0));
        assert_eq!(lua51_number(b"0x10"), Some(16.0));
        assert_eq!(lua51_number(b"0x1p4"), Some(16.0));
        assert_eq!(lua51_number(b"0xA.8p1"), Some(21.0));
        assert_eq!(lua51_number(b"1e400"), Some(f64::INFINITY));
        for bad in [
            "1LL", "1ULL", "1i", "1.5_3", "1..2", "1e", "0x", "0x1P", "3a", "1e+",
        ] {
            assert_eq!(lua51_number(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(code("return 0x1p4, 0x10, 1e3"), "return 16.0 , 16.0 , 1e3");
        assert_eq!(
            fixed(
                "local x = 1LL + y",
                "user_script:1: unexpected symbol near P"
            ),
            "user_script:1: malformed number near '1LL'"
        );
        // Nothing after a lexical error is read.
        assert!(!code("x = 1LL y = 2").contains('y'));
    }

    #[test]
    fn strings_mean_what_lua51_makes_of_them() {
        assert_eq!(code(r#"return 'a\q'"#), r#"return 'aq'"#);
        assert_eq!(code(r#"return "\x41\z""#), r#"return "x41z""#);
        assert_eq!(code(r#"return '\65\066\0677\1'"#), r#"return 'ABC7\001'"#);
        assert_eq!(code("return 'a\\\nb'"), "return 'a\\\nb'");
        assert_eq!(code(r#"return '"\\'"#), r#"return '"\\'"#);
        assert_eq!(code(r#"return "'\"""#), r#"return "'\"""#);
        assert_eq!(code("return '\u{e9}'"), r#"return '\195\169'"#);
        assert_eq!(
            fixed("return 'ab\n'", "user_script:1: unexpected symbol near P"),
            "user_script:1: unfinished string near ''ab'"
        );
        assert_eq!(
            fixed(r#"x = "\300""#, "user_script:1: unexpected symbol near P"),
            "user_script:1: escape sequence too large near '\"'"
        );
        assert_eq!(
            fixed("x = 'a", "user_script:1: unexpected symbol near P"),
            "user_script:1: unfinished string near '<eof>'"
        );
    }

    #[test]
    fn long_brackets_follow_lua51() {
        assert_eq!(
            fixed(
                "x = [[ a [[ b ]]",
                "user_script:1: unexpected symbol near P"
            ),
            "user_script:1: nesting of [[...]] is deprecated near '['"
        );
        // The opened string is taken back; its line breaks stay.
        assert_eq!(code("x = [[\n a [[ b ]]"), "x = \n\u{1f}");
        assert_eq!(code("x = [=[ a [[ b ]=]"), "x = [=[ a [[ b ]=]");
        // The Lua of Debian's packages does not refuse it.
        assert!(prepare(b"x = [[ a [[ b ]]", false).placeholders.is_empty());
        assert_eq!(
            fixed("x = [==", "user_script:1: unexpected symbol near P"),
            "user_script:1: invalid long string delimiter near '[=='"
        );
        assert_eq!(
            fixed("--[[ x", "user_script:1: unexpected symbol near P"),
            "user_script:1: unfinished long comment near '<eof>'"
        );
    }

    #[test]
    fn nul_bytes_follow_lua51() {
        // A NUL after a numeral's digits is taken as its exponent mark (strchr finds it).
        assert_eq!(code("return {10\0 , 3}"), "return { 10 , 3 }");
        assert_eq!(code("return 10\0\0 + 1"), "return 10 + 1");
        assert_eq!(code("return a .\0 b"), "return a .. b");
        assert_eq!(
            fixed("return 1 +\0 2", "user_script:1: unexpected symbol near P"),
            "user_script:1: unexpected symbol"
        );
        assert_eq!(code("return 'a\0b'"), r"return 'a\000b'");
    }

    #[test]
    fn goto_is_a_name() {
        let p = prepare(b"local goto = 1 t.goto = goto return t.goto", true);
        assert_eq!(
            String::from_utf8_lossy(&p.code),
            "local goto\u{fffd} = 1 t  [\"goto\"] = goto\u{fffd} return t  [\"goto\"]"
        );
        // A field in a table constructor, a function defined as a field or a method.
        assert_eq!(
            code("local t = {goto = 5, x = {goto=1}; goto == 1} return t.goto"),
            "local t = { [\"goto\"] = 5 , x = { [\"goto\"] = 1 } ; goto\u{fffd} == 1 } return t  [\"goto\"]"
        );
        assert_eq!(
            code("function t.goto(a) end function t.x:goto(...) end function t:goto() end"),
            "         t  [\"goto\"] = function ( a ) end          t . x  [\"goto\"] = function ( self , ... ) end          t  [\"goto\"] = function ( self ) end"
        );
        // A comment between a field named `goto` and its `=`.
        assert_eq!(
            code("t = {goto --[[c]] = 1, x = {goto -- c\n= 2}, y = {goto --[==[a]]b]==] == 3}}"),
            "t = { [\"goto\"] --[[c]] = 1 , x = { [\"goto\"] -- c\n= 2 } , y = { goto\u{fffd} --[==[a]]b]==] == 3 } }"
        );
        // A dot in a comment before `goto` is not the field's dot.
        assert_eq!(
            code("return t. --a.b\ngoto"),
            "return t   --a.b\n[\"goto\"]"
        );
        let msg = b"user_script:1: attempt to call global 'goto\x80'";
        assert_eq!(
            p.fix_error(msg),
            b"user_script:1: attempt to call global 'goto'".to_vec()
        );
    }

    #[test]
    fn an_earlier_syntax_error_is_left_alone() {
        let p = prepare(b"x = = 1\ny = 1LL", true);
        let msg = b"user_script:1: unexpected symbol near '='";
        assert_eq!(p.fix_error(msg), msg.to_vec());
    }
    extern "C" {
        fn strtod(s: *const std::ffi::c_char, end: *mut *mut std::ffi::c_char) -> f64;
    }

    fn glibc(hex: &str) -> f64 {
        let c = std::ffi::CString::new(format!("0x{hex}")).unwrap();
        // SAFETY: a NUL-terminated string; the end pointer may be null.
        unsafe { strtod(c.as_ptr(), std::ptr::null_mut()) }
    }

    #[test]
    fn hex_numerals_round_once_as_strtod() {
        let mut cases: Vec<String> = [
            "200000000000018",
            "20000000000001800",
            "1fffffffffffff",
            "3fffffffffffff",
            "ffffffffffffffffff",
            "1.8p3",
            "1p-1074",
            "1p-1075",
            "1.8p-1075",
            "1p1023",
            "1.fffffffffffffp1023",
            "1.fffffffffffff8p1023",
            "0.0000000000000000001",
            "123456789abcdef123456789",
            "8000000000000008000001",
            "1p-1080",
            "3p-1076",
            "ff.ffp-1070",
            "0",
            "0.0p5",
            "10",
            "abc.def",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Many more, from a fixed generator: digits around the 53-bit edge and exponents.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let digits = 1 + (x % 30) as usize;
            let mut h = String::new();
            let mut y = x;
            for k in 0..digits {
                if k == 1 && y.is_multiple_of(5) {
                    h.push('.');
                }
                h.push(char::from_digit((y % 16) as u32, 16).unwrap());
                y = y.rotate_right(4) ^ (k as u64);
            }
            if x.is_multiple_of(3) {
                h.push_str(&format!("p{}", (x >> 20) as i64 % 2200 - 1100));
            }
            cases.push(h);
        }
        for h in cases {
            let ours = hex_number(&h).unwrap();
            let theirs = glibc(&h);
            assert_eq!(
                ours.to_bits(),
                theirs.to_bits(),
                "0x{h}: {ours:e} vs {theirs:e}"
            );
        }
    }
}
