//! The module API, wrapped once: the host that `redis.call` goes through, the reply sink
//! that writes a script's result to the client, logging and server-state queries.
//! Every raw call into Redis lives in this file.

use std::ffi::{c_int, CString};
use std::os::raw::c_char;

use redis_module::raw;

use crate::engine::{Host, LogLevel};
use crate::reply::{single_line, ReplySink};

pub type Ctx = *mut raw::RedisModuleCtx;

/// Calls a module API function pointer that Redis filled in at load time.
macro_rules! api {
    ($name:ident) => {
        // The pointers are set by RedisModule_Init before any command can run; a missing one
        // means a server older than the module supports, which `init` refuses.
        unsafe { raw::$name.expect(concat!(stringify!($name), " is not available on this server")) }
    };
}
pub(crate) use api;

extern "C" {
    fn __errno_location() -> *mut c_int;
}

fn set_errno(v: c_int) {
    // SAFETY: glibc's thread-local errno slot is always valid for the calling thread.
    unsafe { *__errno_location() = v }
}

fn errno() -> c_int {
    // SAFETY: as above.
    unsafe { *__errno_location() }
}

/// A NUL-terminated copy of `s`, cut at its first NUL (C APIs would stop there anyway).
pub fn c_string(s: &[u8]) -> CString {
    let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
    CString::new(&s[..end]).unwrap_or_default()
}

pub fn context_flags(ctx: Ctx) -> u32 {
    // SAFETY: ctx is the live context of the running command.
    unsafe { api!(RedisModule_GetContextFlags)(ctx) as u32 }
}

pub fn log(ctx: Ctx, level: LogLevel, msg: &[u8]) {
    let level = match level {
        LogLevel::Debug => c"debug",
        LogLevel::Verbose => c"verbose",
        LogLevel::Notice => c"notice",
        LogLevel::Warning => c"warning",
    };
    let msg = c_string(msg);
    // SAFETY: all strings are NUL-terminated; a null ctx is allowed by RedisModule_Log.
    unsafe { api!(RedisModule_Log)(ctx, level.as_ptr(), c"%s".as_ptr(), msg.as_ptr()) }
}

/// The server's version as `redis.REDIS_VERSION` shows it, and as a number.
pub fn server_version() -> (String, u32) {
    // SAFETY: a plain getter without arguments.
    let v = unsafe { raw::RedisModule_GetServerVersion.map(|f| f()).unwrap_or(0) } as u32;
    (format!("{}.{}.{}", (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff), v)
}

/// Owns RedisModuleStrings made from byte slices for one call.
struct ArgStrings {
    ctx: Ctx,
    items: Vec<*mut raw::RedisModuleString>,
}

impl ArgStrings {
    fn new(ctx: Ctx, args: &[&[u8]]) -> Self {
        let items = args
            .iter()
            // SAFETY: ctx is live; the bytes are copied by Redis.
            .map(|a| unsafe { api!(RedisModule_CreateString)(ctx, a.as_ptr().cast(), a.len()) })
            .collect();
        ArgStrings { ctx, items }
    }
}

impl Drop for ArgStrings {
    fn drop(&mut self) {
        for s in &self.items {
            // SAFETY: each string was created by this struct with the same ctx.
            unsafe { api!(RedisModule_FreeString)(self.ctx, *s) }
        }
    }
}

/// Frees a call reply when dropped, even if Lua unwinds past it.
struct CallReply(*mut raw::RedisModuleCallReply);

impl Drop for CallReply {
    fn drop(&mut self) {
        // SAFETY: the reply came from RedisModule_Call and is freed exactly once.
        unsafe { api!(RedisModule_FreeCallReply)(self.0) }
    }
}

/// `redis.call` from a function, through `RedisModule_Call` in script mode.
pub struct ModuleHost {
    pub ctx: Ctx,
    /// `no-writes` function or `RX.CALL_RO`: write commands are refused.
    pub read_only: bool,
    /// Refuse deny-oom commands over maxmemory (functions without `allow-oom`).
    pub check_oom: bool,
}

impl ModuleHost {
    fn format(&self, resp3: bool) -> &'static std::ffi::CStr {
        // v: argv array; S: script mode; C: the caller's ACL; !: replicate effects;
        // W: no writes; M: deny-oom check; 3: RESP3 replies.
        match (self.read_only, self.check_oom, resp3) {
            (true, true, false) => c"vSC!WM",
            (true, true, true) => c"vSC!WM3",
            (true, false, false) => c"vSC!W",
            (true, false, true) => c"vSC!W3",
            (false, true, false) => c"vSC!M",
            (false, true, true) => c"vSC!M3",
            (false, false, false) => c"vSC!",
            (false, false, true) => c"vSC!3",
        }
    }

    /// The error Redis's own script engine gives for a refusal `RedisModule_Call` reports
    /// only through errno.
    fn refusal_text(&self, errno: c_int) -> String {
        const ENOENT: c_int = 2;
        const EACCES: c_int = 13;
        const EINVAL: c_int = 22;
        const ENOSPC: c_int = 28;
        const ESPIPE: c_int = 29;
        const EROFS: c_int = 30;
        match errno {
            ENOENT => "ERR Unknown Redis command called from script".into(),
            EINVAL => "ERR Wrong number of args calling Redis command from script".into(),
            ESPIPE => "ERR This Redis command is not allowed from script".into(),
            EACCES => "ERR The user executing the script can't run this command or subcommand".into(),
            ENOSPC if self.read_only => "ERR Write commands are not allowed from read-only scripts.".into(),
            ENOSPC => "OOM command not allowed when used memory > 'maxmemory'.".into(),
            EROFS => "READONLY You can't write against a read only replica.".into(),
            other => format!("ERR RX could not run the command (errno {other})"),
        }
    }
}

impl Host for ModuleHost {
    fn call(&self, argv: &[&[u8]], resp3: bool, on_reply: &mut dyn FnMut(&[u8])) -> Result<(), String> {
        let Some((name, rest)) = argv.split_first() else {
            return Err("ERR Please specify at least one argument for this redis lib call".into());
        };
        if name.contains(&0) {
            return Err(self.refusal_text(2));
        }
        let name = c_string(name);
        let args = ArgStrings::new(self.ctx, rest);
        set_errno(0);
        // SAFETY: the "v" format takes (RedisModuleString **argv, size_t argc); both stay
        // valid for the call, and the name and format are NUL-terminated.
        let reply = unsafe {
            api!(RedisModule_Call)(
                self.ctx,
                name.as_ptr(),
                self.format(resp3).as_ptr(),
                args.items.as_ptr(),
                args.items.len(),
            )
        };
        let err = errno();
        drop(args);
        if reply.is_null() {
            return Err(self.refusal_text(err));
        }
        let reply = CallReply(reply);
        let mut len = 0usize;
        // SAFETY: the reply is live until `reply` drops; the proto buffer belongs to it.
        let proto = unsafe {
            let p = api!(RedisModule_CallReplyProto)(reply.0, &mut len);
            if p.is_null() { &[][..] } else { std::slice::from_raw_parts(p.cast::<u8>(), len) }
        };
        on_reply(proto);
        Ok(())
    }

    fn acl_check(&self, argv: &[&[u8]]) -> Result<bool, String> {
        // SAFETY: the context is live; every object made here is freed before returning.
        unsafe {
            let user_name = api!(RedisModule_GetCurrentUserName)(self.ctx);
            if user_name.is_null() {
                return Ok(true);
            }
            let user = api!(RedisModule_GetModuleUserFromUserName)(user_name);
            api!(RedisModule_FreeString)(self.ctx, user_name);
            if user.is_null() {
                return Ok(false);
            }
            let args = ArgStrings::new(self.ctx, argv);
            set_errno(0);
            let r = api!(RedisModule_ACLCheckCommandPermissions)(user, args.items.as_ptr() as *mut _, args.items.len() as c_int);
            let err = errno();
            api!(RedisModule_FreeModuleUser)(user);
            if r == raw::REDISMODULE_OK as c_int {
                Ok(true)
            } else if err == 2 {
                Err("ERR Invalid command passed to redis.acl_check_cmd()".into())
            } else {
                Ok(false)
            }
        }
    }

    fn log(&self, level: LogLevel, msg: &[u8]) {
        log(self.ctx, level, msg)
    }
}

/// Writes replies to the client of the running command.
pub struct ModuleReply(pub Ctx);

impl ReplySink for ModuleReply {
    fn simple(&mut self, s: &[u8]) {
        let s = c_string(&single_line(s));
        // SAFETY (all methods): the ctx is the live context of the running command, and
        // every pointer/length pair is valid for the duration of the call.
        unsafe { api!(RedisModule_ReplyWithSimpleString)(self.0, s.as_ptr()) };
    }
    fn error(&mut self, s: &[u8]) {
        let s = c_string(&single_line(s));
        unsafe { api!(RedisModule_ReplyWithError)(self.0, s.as_ptr()) };
    }
    fn integer(&mut self, v: i64) {
        unsafe { api!(RedisModule_ReplyWithLongLong)(self.0, v) };
    }
    fn bulk(&mut self, s: &[u8]) {
        unsafe { api!(RedisModule_ReplyWithStringBuffer)(self.0, s.as_ptr() as *const c_char, s.len()) };
    }
    fn null(&mut self) {
        unsafe { api!(RedisModule_ReplyWithNull)(self.0) };
    }
    fn array(&mut self, len: usize) {
        unsafe { api!(RedisModule_ReplyWithArray)(self.0, len as _) };
    }
    fn map(&mut self, len: usize) {
        unsafe { api!(RedisModule_ReplyWithMap)(self.0, len as _) };
    }
    fn set(&mut self, len: usize) {
        unsafe { api!(RedisModule_ReplyWithSet)(self.0, len as _) };
    }
    fn double(&mut self, v: f64) {
        unsafe { api!(RedisModule_ReplyWithDouble)(self.0, v) };
    }
    fn boolean(&mut self, v: bool) {
        unsafe { api!(RedisModule_ReplyWithBool)(self.0, v as c_int) };
    }
    fn big_number(&mut self, s: &[u8]) {
        unsafe { api!(RedisModule_ReplyWithBigNumber)(self.0, s.as_ptr() as *const c_char, s.len()) };
    }
    fn verbatim(&mut self, format: &[u8], s: &[u8]) {
        let f = c_string(format);
        unsafe { api!(RedisModule_ReplyWithVerbatimStringType)(self.0, s.as_ptr() as *const c_char, s.len(), f.as_ptr()) };
    }
}
