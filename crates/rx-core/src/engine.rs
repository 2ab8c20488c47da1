//! The boundary between RX's management layer and a script engine.
//!
//! The engine compiles library code into registrations and runs a registered callable; it
//! reaches Redis only through `Host`, which the module glue implements with
//! `RedisModule_Call`. Neither side sees the other's types.

use crate::flags::FunctionFlags;

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
