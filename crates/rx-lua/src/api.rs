//! The `redis.*` functions scripts call at run time, written against the Lua C API.
//!
//! `redis.call` is the hot path of every function, so it reads its arguments straight off
//! the Lua stack and turns the reply's protocol straight into Lua values, with no owned
//! intermediate values. Errors are raised as `{err=...}` tables, like Redis does, so the
//! error handler can report where they happened.
//!
//! Every function here is called by Lua on the main thread while `ActiveCall::enter` holds
//! the host for the running script.

use std::cell::Cell;
use std::ffi::c_int;
use std::mem::MaybeUninit;
use std::ptr;
use std::time::Instant;

use mlua::ffi;

use crate::dialect::NumberArguments;
use crate::engine::{CallOptions, Host, LogLevel, Tick};
use crate::numfmt;
use crate::resp::{self, RespVisitor};
use rx_core::scripts::sha1_hex;

/// The state of the script that is running right now.
pub struct ActiveCall<'h> {
    host: &'h dyn Host,
    /// Set by `redis.setresp`; every call starts at RESP2, as in Redis.
    resp3: Cell<bool>,
    /// Cleared by `redis.set_repl(redis.REPL_NONE)`.
    replicate: Cell<bool>,
    /// Set for a library body: past it, the load fails with a timeout.
    load_deadline: Option<Instant>,
    /// A library body runs: the host is not asked to serve other clients.
    loading: bool,
    timed_out: Cell<bool>,
}

thread_local! {
    static ACTIVE: Cell<*const ActiveCall<'static>> = const { Cell::new(ptr::null()) };
}

/// Makes `call` the running script's state until the guard drops.
pub struct ActiveGuard {
    previous: *const ActiveCall<'static>,
}

impl<'h> ActiveCall<'h> {
    pub fn new(host: &'h dyn Host) -> Self {
        ActiveCall {
            host,
            resp3: Cell::new(false),
            replicate: Cell::new(true),
            load_deadline: None,
            loading: false,
            timed_out: Cell::new(false),
        }
    }

    pub fn loading(host: &'h dyn Host, deadline: Option<Instant>) -> Self {
        ActiveCall {
            load_deadline: deadline,
            loading: true,
            ..ActiveCall::new(host)
        }
    }

    pub fn timed_out(&self) -> bool {
        self.timed_out.get()
    }

    pub fn host(&self) -> &dyn Host {
        self.host
    }

    pub fn resp3(&self) -> bool {
        self.resp3.get()
    }

    /// # Safety
    /// `self` must outlive the guard; the guard restores the previous state when dropped.
    pub unsafe fn enter(&self) -> ActiveGuard {
        // SAFETY: the lifetime is erased only for the guard's duration, and the guard is
        // dropped before `self` (the caller's contract), so no dangling pointer survives.
        let erased = (self as *const ActiveCall<'h>).cast::<ActiveCall<'static>>();
        let previous = ACTIVE.with(|a| a.replace(erased));
        // A run's pacing starts afresh; a call nested in it (`rx.fcall`) keeps the run's,
        // or a loop around nested calls could reset the count before it ever ran out.
        if previous.is_null() {
            reset_pace(Instant::now());
        }
        ActiveGuard { previous }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        ACTIVE.with(|a| a.set(self.previous));
    }
}

fn with_active<R>(f: impl FnOnce(&ActiveCall<'_>) -> R) -> Option<R> {
    let p = ACTIVE.with(|a| a.get());
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null only while an ActiveGuard lives, which keeps the pointee alive.
    Some(f(unsafe { &*p }))
}

/// The instruction hook's question: may the running script go on?
pub fn tick() -> Tick {
    with_active(|a| match a.load_deadline {
        Some(deadline) if Instant::now() >= deadline => {
            a.timed_out.set(true);
            Tick::Stop
        }
        _ if a.loading => Tick::Continue,
        _ => a.host.tick(),
    })
    .unwrap_or(Tick::Continue)
}

/// How often a script's kill checks should reach `rx_tick`: often enough that a kill, a
/// time limit or BUSY is noticed within a fraction of a millisecond, rarely enough that
/// the tick costs nothing measurable.
const TICK_INTERVAL: std::time::Duration = std::time::Duration::from_micros(250);
/// Bounds of a budget: checks between two ticks. The upper one bounds how long a run can
/// go between ticks when its checks turn slow after a fast stretch (16,384 checks of a
/// loop around a 20 µs C call: 0.3 s); the budget shrinks fast after such a tick.
const MIN_BUDGET: f64 = 16.0;
const MAX_BUDGET: f64 = (1 << 14) as f64;
/// The first budget of a run: most scripts make fewer checks than this and never tick;
/// a first stretch of slow ones (1,024 turns around a 20 µs C call) still ticks within
/// 20 ms.
const FIRST_BUDGET: f64 = 1024.0;

thread_local! {
    /// The last budget `rx_tick` gave, and when.
    static PACE: Cell<(f64, Option<Instant>)> = const { Cell::new((FIRST_BUDGET, None)) };
}

/// Starts a run's pacing afresh: what an earlier run (or a script calling the tick itself)
/// taught the budget does not carry over.
fn reset_pace(now: Instant) {
    PACE.with(|p| p.set((FIRST_BUDGET, Some(now))));
    CALL_BUDGET.with(|b| b.set(FIRST_BUDGET));
}

/// The next budget: the last one scaled so that the next tick comes about
/// `TICK_INTERVAL` after this one, at most four times larger or smaller per step.
fn next_budget(now: Instant) -> f64 {
    PACE.with(|p| {
        let (budget, last) = p.get();
        let next = match last {
            Some(last) => {
                let took = now.saturating_duration_since(last).as_secs_f64().max(1e-9);
                let scale = (TICK_INTERVAL.as_secs_f64() / took).clamp(1.0 / 64.0, 4.0);
                (budget * scale).clamp(MIN_BUDGET, MAX_BUDGET).floor()
            }
            None => budget,
        };
        p.set((next, Some(now)));
        next
    })
}

/// The kill checks' tick (`kill_checks`): a script's countdown ran out. Raises the
/// interruption if the script must stop (a kill, a time limit, the load timeout, a place
/// it cannot yield in); otherwise returns the next countdown.
/// # Safety
/// Called by Lua, on the main thread, with a valid state.
pub unsafe extern "C-unwind" fn rx_tick(l: *mut ffi::lua_State) -> c_int {
    ffi::lua_pushnumber(l, tick_or_raise(l));
    1
}

/// What a countdown's end does, for `rx_tick` and `rx_count`: raises the interruption if
/// the script must stop, else gives the next budget.
/// # Safety
/// Called from a Lua C function, with nothing to drop on the Rust side (it may not return).
unsafe fn tick_or_raise(l: *mut ffi::lua_State) -> f64 {
    if tick() == Tick::Stop {
        ffi::lua_settop(l, 0);
        ffi::lua_pushstring(l, c"script interrupted".as_ptr());
        ffi::lua_error(l);
    }
    next_budget(Instant::now())
}

thread_local! {
    /// `rx_count`'s countdown.
    static CALL_BUDGET: Cell<f64> = const { Cell::new(FIRST_BUDGET) };
}

/// The kill checks as calls (`kill_checks::CALL_CHECK`), for code with no room for the
/// countdown: counts here, and ticks as `rx_tick` does when the count runs out.
/// # Safety
/// Called by Lua, on the main thread, with a valid state.
pub unsafe extern "C-unwind" fn rx_count(l: *mut ffi::lua_State) -> c_int {
    let left = CALL_BUDGET.with(|b| {
        let left = b.get() - 1.0;
        b.set(left);
        left
    });
    if left >= 0.0 {
        return 0;
    }
    let next = tick_or_raise(l);
    CALL_BUDGET.with(|b| b.set(next));
    0
}

/// `interrupted()` for the prelude's pcall/xpcall/coroutine wrappers: a killed script must
/// not be able to swallow its own kill.
/// # Safety
/// Called by Lua, on the main thread, with a valid state.
pub unsafe extern "C-unwind" fn rx_interrupted(l: *mut ffi::lua_State) -> c_int {
    let stopped =
        with_active(|a| a.timed_out.get() || a.host.interruption().is_some()).unwrap_or(false);
    ffi::lua_pushboolean(l, stopped as c_int);
    1
}

/// `load51(s, chunkname)` for the prelude's `loadstring`: compiles `s` read as Lua 5.1
/// reads it (see `lua_source`), returning the function, or nil and Lua 5.1's error.
/// # Safety
/// Called by Lua, on the main thread, with a valid state.
pub unsafe extern "C-unwind" fn rx_load51(l: *mut ffi::lua_State) -> c_int {
    let mut len = 0usize;
    let p = ffi::luaL_checklstring(l, 1, &mut len);
    let source = std::slice::from_raw_parts(p.cast::<u8>(), len);
    let name = ffi::luaL_optlstring(l, 2, p, std::ptr::null_mut());
    let Ok(prepared) = crate::barrier::shield(|| {
        crate::lua_source::prepare(
            source,
            crate::dialect::current().refuse_nested_long_brackets,
        )
    }) else {
        return crate::barrier::raise_panicked(l, c"loadstring");
    };
    if let Some(refusal) = &prepared.refusal {
        ffi::lua_pushnil(l);
        ffi::lua_pushlstring(l, refusal.as_ptr().cast(), refusal.len());
        return 2;
    }
    // The chunk is a value the script can call again: its entry counts too.
    let loaded = prepared.compile_runnable(
        crate::kill_checks::ENTRY_CHECK,
        |code| {
            if load_text(l, code, name) {
                return Ok(());
            }
            let message = lua_bytes(l, -1).to_vec();
            ffi::lua_pop(l, 1);
            Err(Some(message))
        },
        // A function compiled only to learn that it compiles: off the stack.
        |()| ffi::lua_pop(l, 1),
    );
    drop(prepared);
    match loaded {
        Ok(()) => 1,
        Err(message) => {
            ffi::lua_pushnil(l);
            ffi::lua_pushlstring(l, message.as_ptr().cast(), message.len());
            2
        }
    }
}

/// Compiles `code` (text only) as `loadstring` does: true with the function pushed, false
/// with LuaJIT's message pushed.
unsafe fn load_text(l: *mut ffi::lua_State, code: &[u8], name: *const std::ffi::c_char) -> bool {
    // LuaJIT skips a first line that starts with `#`, Lua 5.1's loadstring does not: a space
    // in front keeps it a `#` token. Text only: no bytecode, whatever the source holds.
    let code: std::borrow::Cow<[u8]> = if code.first() == Some(&b'#') {
        let mut spaced = Vec::with_capacity(code.len() + 1);
        spaced.push(b' ');
        spaced.extend_from_slice(code);
        spaced.into()
    } else {
        code.into()
    };
    ffi::luaL_loadbufferx(l, code.as_ptr().cast(), code.len(), name, c"t".as_ptr()) == 0
}

/// `number_text(x)`: a number as Lua 5.1 writes it (C's `%.14g`: `-nan` for a NaN with its
/// sign bit set, where LuaJIT writes `nan`).
/// # Safety
/// Called by Lua, on the main thread, with a valid state.
pub unsafe extern "C-unwind" fn number_text(l: *mut ffi::lua_State) -> c_int {
    let n = ffi::luaL_checknumber(l, 1);
    let Ok(text) = crate::barrier::shield(|| numfmt::format_g_buf(n, 14)) else {
        return crate::barrier::raise_panicked(l, c"tostring");
    };
    ffi::lua_pushlstring(l, text.as_bytes().as_ptr().cast(), text.as_bytes().len());
    1
}

extern "C" {
    /// C's processor time, as Lua's `os.clock` reads it.
    fn clock() -> std::ffi::c_long;
}

/// `os.clock()`: the processor time the server used, in seconds.
/// # Safety
/// Called by Lua, on the main thread, with a valid state.
pub unsafe extern "C-unwind" fn os_clock(l: *mut ffi::lua_State) -> c_int {
    // glibc's CLOCKS_PER_SEC (fixed by POSIX XSI).
    const CLOCKS_PER_SEC: f64 = 1_000_000.0;
    ffi::lua_pushnumber(l, clock() as f64 / CLOCKS_PER_SEC);
    1
}

// ---- small Lua helpers ------------------------------------------------------------------

/// Pushes `{err = msg}`.
unsafe fn push_error_table(l: *mut ffi::lua_State, msg: &[u8]) {
    ffi::lua_createtable(l, 0, 1);
    ffi::lua_pushlstring(l, msg.as_ptr().cast(), msg.len());
    ffi::lua_setfield(l, -2, c"err".as_ptr());
}

/// Builds the `{err=...}` text Redis builds for an error string: a leading `-` is dropped
/// and the first word kept as the code, otherwise the code is `ERR`; trailing CR/LF go.
pub fn error_table_text(raw: &[u8]) -> Vec<u8> {
    let (code, msg): (&[u8], &[u8]) = match raw.strip_prefix(b"-") {
        Some(rest) => match rest.iter().position(|&b| b == b' ') {
            Some(sp) => (&rest[..sp], &rest[sp + 1..]),
            None => (b"ERR", rest),
        },
        None => (b"ERR", raw),
    };
    let mut end = msg.len();
    while end > 0 && (msg[end - 1] == b'\r' || msg[end - 1] == b'\n') {
        end -= 1;
    }
    let mut start = 0;
    while start < end && (msg[start] == b'\r' || msg[start] == b'\n') {
        start += 1;
    }
    let mut out = Vec::with_capacity(code.len() + 1 + end - start);
    out.extend_from_slice(code);
    out.push(b' ');
    out.extend_from_slice(&msg[start..end]);
    out
}

/// Raises `{err = msg}`; `msg` is dropped before Lua unwinds.
unsafe fn raise(l: *mut ffi::lua_State, msg: Vec<u8>) -> ! {
    push_error_table(l, &msg);
    drop(msg);
    ffi::lua_error(l)
}

fn raise_text(s: &str) -> Vec<u8> {
    error_table_text(s.as_bytes())
}

/// Commands with up to this many arguments are read off the stack without allocating.
const INLINE_ARGS: usize = 16;

/// Runs `f` with all arguments as byte strings, Redis's rules for `redis.call` arguments
/// (strings as they are, numbers as the server writes them: `Dialect::number_arguments`).
/// `Err` is the error text for a bad argument.
///
/// Nothing is raised in here: the caller raises once every Rust value is gone. `f` is
/// called through a reference so that its body is not copied into both paths here.
#[inline]
unsafe fn with_command_args<R>(
    l: *mut ffi::lua_State,
    mut f: impl FnMut(&[&[u8]]) -> R,
) -> Result<R, Vec<u8>> {
    let argc = ffi::lua_gettop(l).max(0) as usize;
    if argc == 0 || argc > INLINE_ARGS {
        return with_many_args(l, argc, &mut f);
    }
    // Most commands are short and mostly strings: nothing on the heap, and number slots
    // left unwritten unless an argument is a number.
    let mut numbers = [const { MaybeUninit::<numfmt::NumBuf>::uninit() }; INLINE_ARGS];
    let mut argv = [MaybeUninit::<&[u8]>::uninit(); INLINE_ARGS];
    let argv = read_args(l, &mut numbers[..argc], &mut argv[..argc])?;
    Ok(call_with_args(&mut f, argv))
}

/// Reads arguments `1..=argv.len()` into `argv`, and returns them: strings where Lua holds
/// them, numbers as text written into `numbers` (as many slots). Not inlined, so that the
/// loop is not unrolled sixteen times into code every `redis.call` fetches.
#[inline(never)]
unsafe fn read_args<'a, 'v>(
    l: *mut ffi::lua_State,
    numbers: &'a mut [MaybeUninit<numfmt::NumBuf>],
    argv: &'v mut [MaybeUninit<&'a [u8]>],
) -> Result<&'v [&'a [u8]], Vec<u8>> {
    let mut written = 0;
    for (i, (slot, a)) in numbers.iter_mut().zip(argv.iter_mut()).enumerate() {
        a.write(match argument_number_text(l, i)? {
            Some(text) => slot.write(text).as_bytes(),
            None => string_at(l, i),
        });
        written = i + 1;
    }
    // SAFETY: the loop wrote the first `written` elements.
    Ok(std::slice::from_raw_parts(
        argv.as_ptr().cast::<&[u8]>(),
        written,
    ))
}

/// `f(argv)`, kept out of line so that `with_command_args` and `with_many_args` share it.
#[inline(never)]
fn call_with_args<R>(f: &mut dyn FnMut(&[&[u8]]) -> R, argv: &[&[u8]]) -> R {
    f(argv)
}

/// `with_command_args` for no arguments or more than `INLINE_ARGS` of them.
#[cold]
#[inline(never)]
unsafe fn with_many_args<R>(
    l: *mut ffi::lua_State,
    argc: usize,
    f: &mut dyn FnMut(&[&[u8]]) -> R,
) -> Result<R, Vec<u8>> {
    if argc == 0 {
        return Err(raise_text(crate::dialect::current().texts.no_arguments));
    }
    let numbers = (0..argc)
        .map(|i| argument_number_text(l, i))
        .collect::<Result<Vec<_>, _>>()?;
    let argv: Vec<&[u8]> = numbers
        .iter()
        .enumerate()
        .map(|(i, n)| match n {
            Some(text) => text.as_bytes(),
            None => string_at(l, i),
        })
        .collect();
    Ok(call_with_args(f, &argv))
}

/// Argument `i`'s text when it is a number (made once); `None` for a string, read where
/// Lua holds it; `Err` for any other type.
#[inline]
unsafe fn argument_number_text(
    l: *mut ffi::lua_State,
    i: usize,
) -> Result<Option<numfmt::NumBuf>, Vec<u8>> {
    match ffi::lua_type(l, (i + 1) as c_int) {
        ffi::LUA_TSTRING => Ok(None),
        ffi::LUA_TNUMBER => {
            let v = ffi::lua_tonumber(l, (i + 1) as c_int);
            Ok(Some(match crate::dialect::current().number_arguments {
                NumberArguments::Precise => numfmt::format_g_buf(v, 17),
                NumberArguments::IntegerOrShortest => numfmt::format_shortest_buf(v),
            }))
        }
        _ => Err(bad_argument_type()),
    }
}

#[cold]
#[inline(never)]
fn bad_argument_type() -> Vec<u8> {
    raise_text(crate::dialect::current().texts.bad_argument_type)
}

/// Argument `i`, a string: its bytes, valid while it is on the stack (for the call).
#[inline]
unsafe fn string_at<'a>(l: *mut ffi::lua_State, i: usize) -> &'a [u8] {
    let mut len = 0usize;
    let p = ffi::lua_tolstring(l, (i + 1) as c_int, &mut len);
    // SAFETY: Lua keeps the string alive while it is on the stack, for this call.
    std::slice::from_raw_parts(p.cast::<u8>(), len)
}

// ---- redis.call / redis.pcall -----------------------------------------------------------

/// What a `redis.call` left for `call_common` to do once its Rust values are gone.
enum CallOutcome {
    /// The reply is on the stack.
    Replied,
    /// The command failed: its `{err=...}` table is on the stack.
    ErrorReplied,
    /// Refused before running (or a bad argument): the error text.
    Refused(Vec<u8>),
}

/// `redis.call` and `redis.pcall`. A command of 1 to 16 arguments while a script runs (every
/// call, in practice) takes one straight path: arguments read off the stack, the host
/// called, the reply pushed; the rest goes out of line (`call_common_slow`). A loop of
/// `redis.call`s runs this, the server's command path and the command itself over and
/// over: the less code there is, the less of it the instruction cache has to fetch anew.
unsafe fn call_common(l: *mut ffi::lua_State, raise_errors: bool) -> c_int {
    let argc = ffi::lua_gettop(l).max(0) as usize;
    let active = ACTIVE.with(|a| a.get());
    if argc == 0 || argc > INLINE_ARGS || active.is_null() {
        return call_common_slow(l, raise_errors);
    }
    // Most commands are short and mostly strings: nothing on the heap, and number slots
    // left unwritten unless an argument is a number.
    let mut numbers = [const { MaybeUninit::<numfmt::NumBuf>::uninit() }; INLINE_ARGS];
    let mut argv = [MaybeUninit::<&[u8]>::uninit(); INLINE_ARGS];
    let outcome = match read_args(l, &mut numbers[..argc], &mut argv[..argc]) {
        // SAFETY: non-null only while an ActiveGuard lives, which keeps the pointee alive.
        Ok(argv) => with_host(l, &*active, |host, options, on_reply| {
            host.call(argv, options, on_reply)
        }),
        Err(e) => CallOutcome::Refused(e),
    };
    match outcome {
        CallOutcome::Replied => 1,
        other => finish(l, other, raise_errors, false),
    }
}

#[cold]
#[inline(never)]
fn refusal_outcome(refusal: &str) -> CallOutcome {
    CallOutcome::Refused(error_table_text(format!("-{refusal}").as_bytes()))
}

/// `call_common` with no arguments, more than `INLINE_ARGS`, or no script running.
#[cold]
#[inline(never)]
unsafe fn call_common_slow(l: *mut ffi::lua_State, raise_errors: bool) -> c_int {
    // No stack check here: the arguments may fill the stack to its limit (`unpack` of 7,999
    // values). Lua leaves a C function LUA_MINSTACK free slots, enough for a refusal's
    // error table, and the arguments are popped before a reply is pushed.
    let outcome = with_command_args(l, |argv| {
        through_host(l, |host, options, on_reply| {
            host.call(argv, options, on_reply)
        })
        .unwrap_or_else(|| CallOutcome::Refused(raise_text("redis.call is not allowed here")))
    })
    .unwrap_or_else(CallOutcome::Refused);
    finish(l, outcome, raise_errors, false)
}

/// Makes a request of the host with the running script's options (`redis.setresp`,
/// `redis.set_repl`) and pushes the reply it gets, by Redis's reply-to-Lua rules. `None`
/// when no script is running.
unsafe fn through_host(
    l: *mut ffi::lua_State,
    request: impl FnOnce(&dyn Host, CallOptions, &mut dyn FnMut(&[u8])) -> Result<(), String>,
) -> Option<CallOutcome> {
    with_active(|active| with_host(l, active, request))
}

/// `through_host` for the script `active`.
#[inline]
fn with_host(
    l: *mut ffi::lua_State,
    active: &ActiveCall<'_>,
    request: impl FnOnce(&dyn Host, CallOptions, &mut dyn FnMut(&[u8])) -> Result<(), String>,
) -> CallOutcome {
    let options = CallOptions {
        resp3: active.resp3(),
        replicate: active.replicate.get(),
    };
    let mut pusher = LuaPusher {
        l,
        error_on_top: false,
        depth_ok: true,
    };
    let r = request(active.host, options, &mut |proto: &[u8]| {
        pusher.push_reply(proto)
    });
    match r {
        Ok(()) if pusher.error_on_top => CallOutcome::ErrorReplied,
        Ok(()) => CallOutcome::Replied,
        Err(refusal) => refusal_outcome(&refusal),
    }
}

/// Leaves the reply (or the error table) as the one result, raising errors when asked to.
/// `passed_on`: an error reply raised is marked as `rx.fcall`'s (see `mark_fcall_error`).
unsafe fn finish(
    l: *mut ffi::lua_State,
    outcome: CallOutcome,
    raise_errors: bool,
    passed_on: bool,
) -> c_int {
    match outcome {
        CallOutcome::Replied => {}
        // The command ran and failed: raise the `{err=...}` table already on the stack.
        CallOutcome::ErrorReplied if raise_errors => {
            if passed_on {
                mark_fcall_error(l);
            }
            ffi::lua_error(l)
        }
        CallOutcome::ErrorReplied => {}
        CallOutcome::Refused(e) if raise_errors => raise(l, e),
        CallOutcome::Refused(e) => push_error_table(l, &e),
    }
    1
}

/// `rx.fcall(name, keys, args)` and `rx.pfcall`: the function's reply, converted by
/// `redis.call`'s rules; an error reply is raised by `rx.fcall` and returned as an error
/// table by `rx.pfcall`, as `redis.call` and `redis.pcall` do.
unsafe fn fcall_common(l: *mut ffi::lua_State, raise_errors: bool, api: &str) -> c_int {
    let outcome = match fcall_arguments(l, api) {
        Err(e) => CallOutcome::Refused(e),
        Ok((name, keys, args)) => {
            let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            through_host(l, |host, options, on_reply| {
                host.fcall(&name, &keys, &args, options, on_reply)
            })
            .unwrap_or_else(|| {
                CallOutcome::Refused(raise_text(&format!("{api} is not allowed here")))
            })
        }
    };
    finish(l, outcome, raise_errors, true)
}

/// The registry field holding the set of error tables raised by `rx.fcall`.
pub const FCALL_ERRORS: &str = "rx.fcall_errors";

/// Adds the error table on top of the stack to that set (see `vm.rs`), when there is room.
unsafe fn mark_fcall_error(l: *mut ffi::lua_State) {
    if ffi::lua_checkstack(l, 3) == 0 {
        return;
    }
    ffi::lua_getfield(l, ffi::LUA_REGISTRYINDEX, c"rx.fcall_errors".as_ptr());
    if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
        ffi::lua_pushvalue(l, -2);
        ffi::lua_pushboolean(l, 1);
        ffi::lua_rawset(l, -3);
    }
    ffi::lua_pop(l, 1);
}

type FcallArguments = (Vec<u8>, Vec<Vec<u8>>, Vec<Vec<u8>>);

/// `rx.fcall`'s arguments, copied out of Lua: the name (a string), then keys and args
/// (arrays of strings or numbers, numbers written as `redis.call` writes them; nil or
/// absent for none). `Err` is the error text for a bad argument, naming `api`.
unsafe fn fcall_arguments(l: *mut ffi::lua_State, api: &str) -> Result<FcallArguments, Vec<u8>> {
    if ffi::lua_type(l, 1) != ffi::LUA_TSTRING {
        return Err(raise_text(&format!(
            "{api} needs a function name (a string) as its first argument"
        )));
    }
    let name = lua_bytes(l, 1).to_vec();
    let mut lists = [Vec::new(), Vec::new()];
    for (i, (what, list)) in ["keys", "args"].iter().zip(lists.iter_mut()).enumerate() {
        let idx = (i + 2) as c_int;
        match ffi::lua_type(l, idx) {
            ffi::LUA_TNIL | ffi::LUA_TNONE => continue,
            ffi::LUA_TTABLE => {}
            _ => {
                return Err(raise_text(&format!(
                    "{api}: {what} must be a table (an array of strings)"
                )))
            }
        }
        let n = ffi::lua_objlen(l, idx);
        if ffi::lua_checkstack(l, 1) == 0 {
            return Err(raise_text(&format!("{api}: no room on the Lua stack")));
        }
        for j in 1..=n {
            ffi::lua_rawgeti(l, idx, j as ffi::lua_Integer);
            let item = match ffi::lua_type(l, -1) {
                ffi::LUA_TSTRING => Some(lua_bytes(l, -1).to_vec()),
                ffi::LUA_TNUMBER => {
                    let v = ffi::lua_tonumber(l, -1);
                    let text = match crate::dialect::current().number_arguments {
                        NumberArguments::Precise => numfmt::format_g_buf(v, 17),
                        NumberArguments::IntegerOrShortest => numfmt::format_shortest_buf(v),
                    };
                    Some(text.as_bytes().to_vec())
                }
                _ => None,
            };
            ffi::lua_pop(l, 1);
            match item {
                Some(b) => list.push(b),
                None => {
                    return Err(raise_text(&format!(
                        "{api}: {what}[{j}] must be a string or a number"
                    )))
                }
            }
        }
    }
    let [keys, args] = lists;
    Ok((name, keys, args))
}

unsafe fn lua_bytes<'a>(l: *mut ffi::lua_State, idx: c_int) -> &'a [u8] {
    let mut len = 0usize;
    let p = ffi::lua_tolstring(l, idx, &mut len);
    // SAFETY: the value is a string on the stack; callers copy it before popping it.
    std::slice::from_raw_parts(p.cast::<u8>(), len)
}

/// # Safety
/// Called by Lua, on the main thread, with a valid state.
pub unsafe extern "C-unwind" fn rx_fcall(l: *mut ffi::lua_State) -> c_int {
    fcall_common(l, true, "rx.fcall")
}

/// # Safety
/// Called by Lua, on the main thread, with a valid state.
pub unsafe extern "C-unwind" fn rx_pfcall(l: *mut ffi::lua_State) -> c_int {
    fcall_common(l, false, "rx.pfcall")
}

/// # Safety
/// Called by Lua, on the main thread, with a valid state.
pub unsafe extern "C-unwind" fn redis_call(l: *mut ffi::lua_State) -> c_int {
    call_common(l, true)
}

/// # Safety
/// Called by Lua, on the main thread, with a valid state.
pub unsafe extern "C-unwind" fn redis_pcall(l: *mut ffi::lua_State) -> c_int {
    call_common(l, false)
}

/// Pushes a reply's values onto the Lua stack, with Redis's reply-to-Lua rules.
struct LuaPusher {
    l: *mut ffi::lua_State,
    /// The top-level reply was an error (its `{err=}` table is on the stack).
    error_on_top: bool,
    depth_ok: bool,
}

impl LuaPusher {
    /// Replaces the stack's contents with the reply `proto`. The request ran: its arguments
    /// (which may point into the stack) are no longer read, so they make room for the
    /// reply, as in Redis.
    fn push_reply(&mut self, proto: &[u8]) {
        // SAFETY: called inside a host call made by `call_common`, on the same state.
        unsafe { ffi::lua_settop(self.l, 0) };
        match resp::scalar(proto) {
            Some(resp::Scalar::Integer(n)) => return self.integer(n),
            Some(resp::Scalar::Bulk(s)) => return self.bulk(s),
            None => {}
        }
        if resp::visit(proto, self).is_err() {
            self.reset_to_error(b"ERR RX could not read the reply");
        }
    }

    unsafe fn pushstr(&self, s: &[u8]) {
        ffi::lua_pushlstring(self.l, s.as_ptr().cast(), s.len());
    }

    /// Wraps the value on top of the stack as `t[field] = value` in a new table.
    unsafe fn wrap_top(&self, field: &std::ffi::CStr) {
        ffi::lua_createtable(self.l, 0, 1);
        ffi::lua_insert(self.l, -2);
        ffi::lua_setfield(self.l, -2, field.as_ptr());
    }

    unsafe fn room(&mut self) {
        if ffi::lua_checkstack(self.l, 4) == 0 {
            self.depth_ok = false;
        }
    }

    fn reset_to_error(&mut self, msg: &[u8]) {
        // A malformed reply cannot come from Redis; if it ever does, report it as an error.
        // SAFETY: called inside a host call made by `call_common`, on the same state.
        unsafe { push_error_table(self.l, msg) };
        self.error_on_top = true;
    }
}

impl RespVisitor for LuaPusher {
    fn status(&mut self, s: &[u8]) {
        unsafe {
            self.pushstr(s);
            self.wrap_top(c"ok");
        }
    }
    fn error(&mut self, s: &[u8]) {
        let t = error_table_text(&[b"-", s].concat());
        unsafe { push_error_table(self.l, &t) };
        self.error_on_top = true;
    }
    fn integer(&mut self, v: i64) {
        unsafe { ffi::lua_pushnumber(self.l, v as f64) }
    }
    fn bulk(&mut self, s: &[u8]) {
        unsafe { self.pushstr(s) }
    }
    fn null_resp2(&mut self) {
        unsafe { ffi::lua_pushboolean(self.l, 0) }
    }
    fn null(&mut self) {
        unsafe { ffi::lua_pushnil(self.l) }
    }
    fn double(&mut self, v: f64) {
        unsafe {
            ffi::lua_pushnumber(self.l, v);
            self.wrap_top(c"double");
        }
    }
    fn boolean(&mut self, v: bool) {
        unsafe { ffi::lua_pushboolean(self.l, v as c_int) }
    }
    fn big_number(&mut self, s: &[u8]) {
        unsafe {
            self.pushstr(s);
            self.wrap_top(c"big_number");
        }
    }
    fn verbatim(&mut self, format: &[u8], s: &[u8]) {
        unsafe {
            ffi::lua_createtable(self.l, 0, 2);
            self.pushstr(s);
            ffi::lua_setfield(self.l, -2, c"string".as_ptr());
            self.pushstr(format);
            ffi::lua_setfield(self.l, -2, c"format".as_ptr());
            self.wrap_top(c"verbatim_string");
        }
    }
    fn begin_array(&mut self, len: usize) {
        unsafe {
            self.room();
            ffi::lua_createtable(self.l, len.min(1 << 20) as c_int, 0);
        }
        self.error_on_top = false;
    }
    fn array_element(&mut self, index: usize) {
        // Nested errors stay as `{err=}` values inside the array.
        self.error_on_top = false;
        unsafe { ffi::lua_rawseti(self.l, -2, index as ffi::lua_Integer) }
    }
    fn begin_map(&mut self, len: usize) {
        unsafe {
            self.room();
            ffi::lua_createtable(self.l, 0, len.min(1 << 20) as c_int);
        }
    }
    fn map_entry(&mut self) {
        self.error_on_top = false;
        unsafe { ffi::lua_settable(self.l, -3) }
    }
    fn end_map(&mut self) {
        unsafe { self.wrap_top(c"map") }
    }
    fn begin_set(&mut self, len: usize) {
        unsafe {
            self.room();
            ffi::lua_createtable(self.l, 0, len.min(1 << 20) as c_int);
        }
    }
    fn set_member(&mut self) {
        self.error_on_top = false;
        unsafe {
            ffi::lua_pushboolean(self.l, 1);
            ffi::lua_settable(self.l, -3);
        }
    }
    fn end_set(&mut self) {
        unsafe { self.wrap_top(c"set") }
    }
}

// ---- the rest of the redis table ---------------------------------------------------------

/// # Safety
/// Called by Lua, on the main thread, with a valid state.
pub unsafe extern "C-unwind" fn redis_sha1hex(l: *mut ffi::lua_State) -> c_int {
    if ffi::lua_gettop(l) != 1 {
        raise(l, raise_text("wrong number of arguments"));
    }
    let mut len = 0usize;
    let p = ffi::lua_tolstring(l, 1, &mut len);
    let text: &[u8] = if p.is_null() {
        b""
    } else {
        std::slice::from_raw_parts(p.cast::<u8>(), len)
    };
    let Ok(hex) = crate::barrier::shield(|| sha1_hex(text)) else {
        return crate::barrier::raise_panicked(l, c"redis.sha1hex");
    };
    ffi::lua_pushlstring(l, hex.as_ptr().cast(), hex.len());
    1
}

unsafe fn reply_helper(l: *mut ffi::lua_State, field: &std::ffi::CStr, add_dash: bool) -> c_int {
    if ffi::lua_gettop(l) != 1 || ffi::lua_type(l, -1) != ffi::LUA_TSTRING {
        push_error_table(l, &raise_text("wrong number or type of arguments"));
        return 1;
    }
    let mut len = 0usize;
    let p = ffi::lua_tolstring(l, 1, &mut len);
    let s = std::slice::from_raw_parts(p.cast::<u8>(), len);
    if add_dash {
        let text = if s.starts_with(b"-") {
            error_table_text(s)
        } else {
            error_table_text(&[b"-", s].concat())
        };
        push_error_table(l, &text);
    } else {
        ffi::lua_createtable(l, 0, 1);
        ffi::lua_pushvalue(l, 1);
        ffi::lua_setfield(l, -2, field.as_ptr());
    }
    1
}

/// # Safety
/// Called by Lua, on the main thread, with a valid state.
pub unsafe extern "C-unwind" fn redis_error_reply(l: *mut ffi::lua_State) -> c_int {
    reply_helper(l, c"err", true)
}

/// # Safety
/// Called by Lua, on the main thread, with a valid state.
pub unsafe extern "C-unwind" fn redis_status_reply(l: *mut ffi::lua_State) -> c_int {
    reply_helper(l, c"ok", false)
}

/// # Safety
/// Called by Lua, on the main thread, with a valid state.
pub unsafe extern "C-unwind" fn redis_log(l: *mut ffi::lua_State) -> c_int {
    let argc = ffi::lua_gettop(l);
    if argc < 2 {
        raise(l, raise_text(crate::dialect::current().texts.log_arity));
    }
    if ffi::lua_isnumber(l, 1) == 0 {
        raise(
            l,
            raise_text("First argument must be a number (log level)."),
        );
    }
    let Some(level) = LogLevel::from_number(ffi::lua_tonumber(l, 1)) else {
        raise(
            l,
            raise_text(crate::dialect::current().texts.invalid_log_level),
        );
    };
    let mut msg = Vec::new();
    for i in 2..=argc {
        let piece = match ffi::lua_type(l, i) {
            ffi::LUA_TNUMBER | ffi::LUA_TSTRING => {
                let mut len = 0usize;
                let p = ffi::lua_tolstring(l, i, &mut len);
                Some(std::slice::from_raw_parts(p.cast::<u8>(), len))
            }
            // Redis skips what is neither (tables, booleans, nil).
            _ => None,
        };
        if let Some(s) = piece {
            if i != 2 {
                msg.push(b' ');
            }
            msg.extend_from_slice(s);
        }
    }
    with_active(|a| a.host.log(level, &msg));
    0
}

/// # Safety
/// Called by Lua, on the main thread, with a valid state.
pub unsafe extern "C-unwind" fn redis_setresp(l: *mut ffi::lua_State) -> c_int {
    if ffi::lua_gettop(l) != 1 {
        raise(l, raise_text(crate::dialect::current().texts.setresp_arity));
    }
    // Redis converts to a C int, so 2.5 means 2 and "3" means 3.
    let v = ffi::lua_tonumber(l, -1) as i64;
    if v != 2 && v != 3 {
        raise(l, raise_text("RESP version must be 2 or 3."));
    }
    with_active(|a| a.resp3.set(v == 3));
    0
}

/// # Safety
/// Called by Lua, on the main thread, with a valid state.
pub unsafe extern "C-unwind" fn redis_acl_check_cmd(l: *mut ffi::lua_State) -> c_int {
    let checked = with_command_args(l, |argv| with_active(|a| a.host.acl_check(argv)));
    match checked {
        Err(e) => raise(l, e),
        Ok(Some(Ok(allowed))) => {
            ffi::lua_pushboolean(l, allowed as c_int);
            1
        }
        Ok(Some(Err(e))) => raise(l, error_table_text(format!("-{e}").as_bytes())),
        Ok(None) => raise(l, raise_text("redis.acl_check_cmd is not allowed here")),
    }
}

/// `redis.set_repl`: `REPL_NONE` stops propagating the commands that follow; any other
/// value propagates them to both the AOF and replicas (the module API cannot target just
/// one of them; see README).
/// # Safety
/// Called by Lua, on the main thread, with a valid state.
pub unsafe extern "C-unwind" fn redis_set_repl(l: *mut ffi::lua_State) -> c_int {
    if ffi::lua_gettop(l) != 1 {
        raise(
            l,
            raise_text(crate::dialect::current().texts.set_repl_arity),
        );
    }
    let v = ffi::lua_tonumber(l, -1) as i64;
    if v & !3 != 0 {
        raise(
            l,
            raise_text(
                "Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE.",
            ),
        );
    }
    with_active(|a| a.replicate.set(v != 0));
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_follows_redis_rules() {
        assert_eq!(
            error_table_text(b"-WRONGTYPE Operation against"),
            b"WRONGTYPE Operation against"
        );
        assert_eq!(error_table_text(b"-thing"), b"ERR thing");
        assert_eq!(error_table_text(b"thing here"), b"ERR thing here");
        assert_eq!(error_table_text(b"-MY thing\r\n"), b"MY thing");
    }

    #[test]
    fn sha1() {
        assert_eq!(sha1_hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    }
}
