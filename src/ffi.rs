//! The module API, wrapped once: the bottom layer every other part of the glue calls
//! down to. Calling a module API function (`api!`), the callback panic barrier, logging,
//! context flags, commands the module runs for itself, and the reply sink that writes to
//! the running command's client. Imports nothing of the glue above it.

use std::ffi::{c_int, CString};
use std::os::raw::c_char;

use redis_module::raw;

use crate::engine::LogLevel;
use crate::reply::{single_line, ReplySink};
use crate::resp::{parse_tree, Tree};

pub type Ctx = *mut raw::RedisModuleCtx;

/// Whether this server runs in cluster mode (set once at module load, read on every run:
/// an atomic load costs less than a thread-local access).
static CLUSTER_MODE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_cluster_mode() {
    CLUSTER_MODE.store(true, std::sync::atomic::Ordering::Relaxed);
}

#[inline]
pub fn cluster_mode() -> bool {
    CLUSTER_MODE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Calls a module API function pointer that Redis filled in at load time.
macro_rules! api {
    ($name:ident) => {
        // SAFETY: reading a function pointer Redis set during RedisModule_Init, before any
        // command can run. A missing one means an older server; the panic becomes an error
        // reply at the command boundary.
        {
            #[allow(unused_unsafe)]
            let f = unsafe { redis_module::raw::$name };
            f.expect(concat!(
                stringify!($name),
                " is not available on this server"
            ))
        }
    };
}
pub(crate) use api;

extern "C" {
    fn __errno_location() -> *mut c_int;
}

pub(crate) fn set_errno(v: c_int) {
    // SAFETY: glibc's thread-local errno slot is always valid for the calling thread.
    unsafe { *__errno_location() = v }
}

pub(crate) fn errno() -> c_int {
    // SAFETY: as above.
    unsafe { *__errno_location() }
}

/// Runs a callback Redis made into the module, turning a panic into a log line and
/// `fallback`: a panic must never unwind into Redis (it would abort the server).
pub fn guarded<R>(what: &str, fallback: R, f: impl FnOnce() -> R) -> R {
    caught(what, f).unwrap_or(fallback)
}

/// Runs `f`; a panic is logged (naming `what`) and becomes `None`.
#[inline]
fn caught<R>(what: &str, f: impl FnOnce() -> R) -> Option<R> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(_) => {
            log_panic(what);
            None
        }
    }
}

#[cold]
#[inline(never)]
fn log_panic(what: &str) {
    log(
        std::ptr::null_mut(),
        LogLevel::Warning,
        format!("RX internal error (panic) in {what}").as_bytes(),
    );
}

#[cold]
#[inline(never)]
fn panic_text(what: &str) -> String {
    format!("ERR RX internal error (panic) in {what}: see the server log")
}

/// `guarded` for work whose errors are texts: a panic becomes
/// `ERR RX internal error (panic) in <what>: see the server log`, made only then (the
/// fallback of `guarded` is built before the work runs, and this runs on every
/// `redis.call`).
pub fn guarded_text<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    caught(what, f).unwrap_or_else(|| Err(panic_text(what)))
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
    (
        format!("{}.{}.{}", (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff),
        v,
    )
}

/// Which server this is (`INFO server`), and how its Lua reads a nested `[[`: a script that
/// fails to compile either way, so nothing enters the script cache; only the error differs.
pub fn detect_server(ctx: Ctx) -> crate::dialect::ServerInfo {
    let info = match call_tree(ctx, c"INFO", &[b"server"]) {
        Some(Tree::Str(text)) => String::from_utf8_lossy(&text).into_owned(),
        _ => return crate::dialect::ServerInfo::debian_redis_7_0(),
    };
    let nesting_refused = match call_tree(ctx, c"EVAL", &[b"return [[ [[ ]] x", b"0"]) {
        Some(Tree::Error(e)) => String::from_utf8_lossy(&e).contains("nesting of [[...]]"),
        _ => false,
    };
    crate::dialect::parse_info(&info, nesting_refused)
}

/// Owns RedisModuleStrings made from byte slices for one call.
pub(crate) struct ArgStrings {
    ctx: Ctx,
    pub(crate) items: Vec<*mut raw::RedisModuleString>,
}

impl ArgStrings {
    pub(crate) fn new(ctx: Ctx, args: &[&[u8]]) -> Self {
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
pub(crate) struct CallReply(pub(crate) *mut raw::RedisModuleCallReply);

impl CallReply {
    /// The reply's RESP bytes, valid while the reply lives.
    pub(crate) fn proto(&self) -> &[u8] {
        let mut len = 0usize;
        // SAFETY: the reply is live while `self` is; the proto buffer belongs to it.
        unsafe {
            let p = api!(RedisModule_CallReplyProto)(self.0, &mut len);
            if p.is_null() {
                &[][..]
            } else {
                std::slice::from_raw_parts(p.cast::<u8>(), len)
            }
        }
    }
}

impl Drop for CallReply {
    fn drop(&mut self) {
        // SAFETY: the reply came from RedisModule_Call and is freed exactly once.
        unsafe { api!(RedisModule_FreeCallReply)(self.0) }
    }
}

/// Runs a command for the module itself (outside any script: no ACL, nothing replicated)
/// and reads its whole reply. `None` if Redis refused to run it.
pub fn call_tree(ctx: Ctx, command: &std::ffi::CStr, args: &[&[u8]]) -> Option<Tree> {
    let strings = ArgStrings::new(ctx, args);
    // SAFETY: the "v" format takes (RedisModuleString **argv, size_t argc), valid for the
    // call; the reply is freed by the guard, and its protocol is read before that.
    unsafe {
        let reply = api!(RedisModule_Call)(
            ctx,
            command.as_ptr(),
            c"v".as_ptr(),
            strings.items.as_ptr(),
            strings.items.len(),
        );
        if reply.is_null() {
            return None;
        }
        parse_tree(CallReply(reply).proto()).ok()
    }
}

/// The command runs because the master sent it or the AOF replays it.
pub fn replayed(ctx: Ctx) -> bool {
    !ctx.is_null()
        && context_flags(ctx)
            & (raw::REDISMODULE_CTX_FLAGS_REPLICATED | raw::REDISMODULE_CTX_FLAGS_LOADING)
            != 0
}

/// `replica-serve-stale-data`; read only on the rare path where a replica is stale.
pub fn serves_stale_data(ctx: Ctx) -> bool {
    config_value(ctx, "replica-serve-stale-data").as_deref() != Some("no")
}

/// A server config's value (`CONFIG GET <name>`).
pub fn config_value(ctx: Ctx, name: &str) -> Option<String> {
    match call_tree(ctx, c"CONFIG", &[b"GET", name.as_bytes()])? {
        Tree::List(items) => match items.get(1) {
            Some(Tree::Str(v)) => Some(String::from_utf8_lossy(v).into_owned()),
            _ => None,
        },
        _ => None,
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
        unsafe {
            api!(RedisModule_ReplyWithStringBuffer)(self.0, s.as_ptr() as *const c_char, s.len())
        };
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
        unsafe {
            api!(RedisModule_ReplyWithBigNumber)(self.0, s.as_ptr() as *const c_char, s.len())
        };
    }
    fn verbatim(&mut self, format: &[u8], s: &[u8]) {
        let f = c_string(format);
        unsafe {
            api!(RedisModule_ReplyWithVerbatimStringType)(
                self.0,
                s.as_ptr() as *const c_char,
                s.len(),
                f.as_ptr(),
            )
        };
    }
}
