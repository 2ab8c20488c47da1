//! The boundary between RX's management layer and a script engine.
//!
//! The engine compiles library code into registrations and runs a registered callable; it
//! reaches Redis only through `Host`, which the module glue implements with
//! `RedisModule_Call`. Neither side sees the other's types.

use std::time::Duration;

use crate::flags::FunctionFlags;
use crate::reply::ReplySink;

/// One `redis.register_function` made by a library body.
#[derive(Debug)]
pub struct Registration<C> {
    pub name: String,
    pub description: Option<Vec<u8>>,
    pub flags: FunctionFlags,
    pub callable: C,
}

/// Redis's log levels, as `redis.LOG_*` numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug = 0,
    Verbose = 1,
    Notice = 2,
    Warning = 3,
}

impl LogLevel {
    pub fn from_number(n: f64) -> Option<LogLevel> {
        match n as i64 {
            _ if n.fract() != 0.0 && !(0.0..=3.0).contains(&n) => None,
            0 => Some(LogLevel::Debug),
            1 => Some(LogLevel::Verbose),
            2 => Some(LogLevel::Notice),
            3 => Some(LogLevel::Warning),
            _ => None,
        }
    }
}

/// How the running script wants one command run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOptions {
    /// `redis.setresp(3)` was called: replies come back in RESP3.
    pub resp3: bool,
    /// Propagate the command's effects (`redis.set_repl` can turn this off).
    pub replicate: bool,
}

/// What a running script may ask of Redis.
///
/// Implementations must not panic: the engine calls them from Lua C functions, where an
/// unwinding panic would abort the process, and it cannot catch one around `call`, whose
/// `on_reply` pushes Lua values that may raise. The module's host runs its own work under
/// a panic barrier and turns a panic into an `Err`.
pub trait Host {
    /// Runs one command. On success `on_reply` receives the whole reply as RESP bytes,
    /// which may be an error reply. `Err` carries a refusal made before the command ran
    /// (unknown command, arity, ACL, OOM, write in a read-only script...), as a full error
    /// text with its code.
    fn call(
        &self,
        argv: &[&[u8]],
        options: CallOptions,
        on_reply: &mut dyn FnMut(&[u8]),
    ) -> Result<(), String>;
    /// `rx.fcall`: runs function `name` with `keys` and `args` inside the running script, as
    /// if a client had sent `RX.CALL name ...`; `on_reply` receives its whole reply as RESP
    /// bytes (RESP3 when `options.resp3`), which may be an error reply. `Err` carries a
    /// refusal made before the function ran (not found, flags, slots, depth).
    fn fcall(
        &self,
        name: &[u8],
        keys: &[&[u8]],
        args: &[&[u8]],
        options: CallOptions,
        on_reply: &mut dyn FnMut(&[u8]),
    ) -> Result<(), String> {
        let _ = (name, keys, args, options, on_reply);
        Err("ERR rx.fcall is not available here".into())
    }
    /// `redis.acl_check_cmd`: `Err` for an unknown command.
    fn acl_check(&self, argv: &[&[u8]]) -> Result<bool, String>;
    fn log(&self, level: LogLevel, msg: &[u8]);
    /// Called every few thousand VM instructions while a script runs. The host may serve
    /// other clients (busy scripts), and answers whether the script must stop.
    fn tick(&self) -> Tick {
        Tick::Continue
    }
    /// Why the script was stopped (a kill, a time limit), if it was: the error text that
    /// replaces whatever error the script saw.
    fn interruption(&self) -> Option<String> {
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    Continue,
    Stop,
}

/// A host for contexts where scripts cannot call Redis (a library body at load time).
pub struct LogOnlyHost<'a>(pub &'a dyn Fn(LogLevel, &[u8]));

impl Host for LogOnlyHost<'_> {
    fn call(&self, _: &[&[u8]], _: CallOptions, _: &mut dyn FnMut(&[u8])) -> Result<(), String> {
        Err("ERR redis.call is not available here".into())
    }
    fn acl_check(&self, _: &[&[u8]]) -> Result<bool, String> {
        Err("ERR redis.acl_check_cmd is not available here".into())
    }
    fn log(&self, level: LogLevel, msg: &[u8]) {
        (self.0)(level, msg)
    }
}

/// A script engine as the module drives it: it compiles library code into registrations
/// and EVAL bodies into callables, runs them against a `Host`, writing the reply to a
/// `ReplySink`, and manages its memory. The module names its engine in one place
/// (`state.rs`) and uses it only through this trait.
pub trait Engine {
    /// A compiled function or script, kept by the registry and the script cache.
    type Callable;

    /// Runs a library's code in the load-time sandbox and returns what it registered.
    /// `command` names the loading command in the timeout error; no `timeout` means the
    /// body may run as long as it takes. Errors are full error replies, code included.
    fn load(
        &self,
        code: &[u8],
        host: &dyn Host,
        timeout: Option<Duration>,
        command: &str,
    ) -> Result<Vec<Registration<Self::Callable>>, Vec<u8>>;

    /// Compiles an EVAL script body; errors are full error replies.
    fn compile_script(&self, body: &[u8]) -> Result<Self::Callable, Vec<u8>>;

    /// Runs a function and writes its reply (or its error) to `sink`.
    fn call(
        &self,
        callable: &Self::Callable,
        function_name: &str,
        keys: &[&[u8]],
        args: &[&[u8]],
        host: &dyn Host,
        sink: &mut dyn ReplySink,
    );

    /// Runs an EVAL script, with KEYS and ARGV for the run.
    fn call_script(
        &self,
        callable: &Self::Callable,
        sha: &str,
        keys: &[&[u8]],
        args: &[&[u8]],
        host: &dyn Host,
        sink: &mut dyn ReplySink,
    );

    /// Bytes the engine holds.
    fn used_memory(&self) -> usize;

    /// A full collection: frees every unreachable object now.
    fn collect_garbage(&self);

    /// Caps the engine's memory; allocations past it fail with "not enough memory".
    fn set_memory_limit(&self, bytes: usize) -> Result<(), String>;

    /// Turns the engine's compiler to machine code (a JIT) on or off. Off drops what it
    /// compiled. Runs between calls, never during one.
    fn set_compiler(&self, _on: bool) -> Result<(), String> {
        Err("this engine has no compiler".into())
    }

    /// What the compiler holds, when the engine has one.
    fn compiler_usage(&self) -> Option<CompilerUsage> {
        None
    }
}

/// A JIT compiler's state, for INFO.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompilerUsage {
    pub on: bool,
    /// Compiled pieces of code (LuaJIT's traces) held now.
    pub traces: u64,
    /// Their machine code, in bytes.
    pub machine_code_bytes: u64,
    /// The most machine code the compiler may hold, in bytes.
    pub machine_code_limit: u64,
}
