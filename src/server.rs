//! The module API, wrapped once: the host that `redis.call` goes through, the reply sink
//! that writes a script's result to the client, logging and server-state queries.
//! Every raw call into Redis lives in this file.

use std::ffi::{c_int, CString};
use std::os::raw::c_char;

use redis_module::raw;

use crate::engine::{CallOptions, Host, LogLevel, Tick};
use crate::reply::{single_line, ReplySink};
use crate::resp::{parse_tree, Tree};
use crate::running::{Running, Stop, UnyieldablePlace};
use std::rc::Rc;
use std::sync::atomic::Ordering;

pub type Ctx = *mut raw::RedisModuleCtx;

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

fn set_errno(v: c_int) {
    // SAFETY: glibc's thread-local errno slot is always valid for the calling thread.
    unsafe { *__errno_location() = v }
}

fn errno() -> c_int {
    // SAFETY: as above.
    unsafe { *__errno_location() }
}

/// Runs a callback Redis made into the module, turning a panic into a log line and
/// `fallback`: a panic must never unwind into Redis (it would abort the server).
pub fn guarded<R>(what: &str, fallback: R, f: impl FnOnce() -> R) -> R {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            log(
                std::ptr::null_mut(),
                LogLevel::Warning,
                format!("RX internal error (panic) in {what}").as_bytes(),
            );
            fallback
        }
    }
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

/// What RX needs to know of a command, from `COMMAND INFO`.
#[derive(Clone, Copy, Default)]
struct CommandFacts {
    write: bool,
    /// Allowed on a stale replica (`stale` in COMMAND INFO's flags).
    stale: bool,
    /// A container command (`CLIENT`, `CONFIG`, ...): ACL names `<command>|<subcommand>`.
    has_subcommands: bool,
}

thread_local! {
    /// Command name (lowercase) -> its facts, from COMMAND INFO.
    static COMMANDS: std::cell::RefCell<rustc_hash::FxHashMap<Vec<u8>, CommandFacts>> =
        std::cell::RefCell::new(rustc_hash::FxHashMap::default());
}

/// `name`'s facts (`COMMAND INFO`'s flags and subcommands), cached per name.
fn command_facts(ctx: Ctx, name: &[u8]) -> CommandFacts {
    let mut buf = [0u8; 64];
    let lower: &[u8] = if name.len() <= buf.len() {
        for (d, s) in buf.iter_mut().zip(name) {
            *d = s.to_ascii_lowercase();
        }
        &buf[..name.len()]
    } else {
        return CommandFacts::default(); // no Redis command has such a name
    };
    if let Some(known) = COMMANDS.with(|w| w.borrow().get(lower).copied()) {
        return known;
    }
    let key = lower.to_vec();
    // COMMAND INFO <name> -> [[name, arity, [flags...], first, last, step, acl categories,
    // tips, key specs, [subcommands...]]]
    let facts = match call_tree(ctx, c"COMMAND", &[b"INFO", &key]) {
        Some(Tree::List(entries)) => match entries.first() {
            Some(Tree::List(info)) => CommandFacts {
                write: matches!(info.get(2), Some(Tree::List(flags)) if flags.contains(&Tree::Str(b"write".to_vec()))),
                stale: matches!(info.get(2), Some(Tree::List(flags)) if flags.contains(&Tree::Str(b"stale".to_vec()))),
                has_subcommands: matches!(info.get(9), Some(Tree::List(subs)) if !subs.is_empty()),
            },
            _ => CommandFacts::default(),
        },
        _ => CommandFacts::default(),
    };
    COMMANDS.with(|w| w.borrow_mut().insert(key, facts));
    facts
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

impl CallReply {
    /// The reply's RESP bytes, valid while the reply lives.
    fn proto(&self) -> &[u8] {
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

/// Redis 7 refuses XREAD/XREADGROUP with BLOCK in scripts, naming the command as the script
/// spelled it (other blocking commands simply do not block), where `RedisModule_Call` would
/// quietly return nil; Redis 8 and Valkey run them without blocking, as `RedisModule_Call`
/// does (see `Dialect::blocking_stream_reads`).
fn blocking_stream_read(name: &[u8], args: &[&[u8]]) -> Option<String> {
    if crate::dialect::current().blocking_stream_reads
        == crate::dialect::BlockingStreamReads::NonBlocking
    {
        return None;
    }
    if !name.eq_ignore_ascii_case(b"xread") && !name.eq_ignore_ascii_case(b"xreadgroup") {
        return None;
    }
    for (i, a) in args.iter().enumerate() {
        if a.eq_ignore_ascii_case(b"streams") {
            return None;
        }
        if a.eq_ignore_ascii_case(b"block") && i + 1 < args.len() {
            return Some(format!(
                "ERR {} command is not allowed with BLOCK option from scripts",
                String::from_utf8_lossy(name)
            ));
        }
    }
    None
}

/// The place a command runs in, from its context flags, when that place forbids yielding
/// to other clients (see `UnyieldablePlace`).
pub fn unyieldable_place(flags: u32) -> Option<UnyieldablePlace> {
    let has = |f: u32| flags & f != 0;
    if has(raw::REDISMODULE_CTX_FLAGS_MULTI) {
        Some(UnyieldablePlace::Transaction)
    } else if has(raw::REDISMODULE_CTX_FLAGS_LUA) {
        Some(UnyieldablePlace::Script)
    } else if has(raw::REDISMODULE_CTX_FLAGS_LOADING | raw::REDISMODULE_CTX_FLAGS_ASYNC_LOADING) {
        Some(UnyieldablePlace::Loading)
    } else if has(raw::REDISMODULE_CTX_FLAGS_REPLICATED) {
        Some(UnyieldablePlace::MasterStream)
    } else {
        None
    }
}

/// `redis.call` from a function, through `RedisModule_Call` in script mode.
pub struct ModuleHost<'a> {
    ctx: Ctx,
    /// The RX.CALL arguments, copied into `running` if the function turns busy.
    command: &'a [&'a [u8]],
    /// `no-writes` function or `RX.CALL_RO`: write commands are refused.
    read_only: bool,
    /// Refuse deny-oom commands over maxmemory (functions without `allow-oom`).
    check_oom: bool,
    /// The caller's database, saved when the script SELECTs another one. Each
    /// `RedisModule_Call` runs in the caller's current database, so a script's SELECT is
    /// applied to the caller for the script's duration and undone on drop, which is what
    /// the script sees in Redis (its own client) and the caller does not see.
    caller_db: std::cell::Cell<Option<c_int>>,
    running: Rc<Running>,
    redis_calls: std::cell::Cell<u64>,
    /// Whether (and why) this run may not yield, worked out when it first turns busy.
    unyieldable: std::cell::Cell<Option<Option<UnyieldablePlace>>>,
    /// The caller has no ACL user to check commands against: another module called RX
    /// through `RedisModule_Call` without a user, with its own unrestricted rights.
    unchecked_caller: std::cell::Cell<bool>,
}

impl Drop for ModuleHost<'_> {
    fn drop(&mut self) {
        if let Some(db) = self.caller_db.get() {
            // SAFETY: the ctx outlives the host, which lives inside the command call.
            unsafe { api!(RedisModule_SelectDb)(self.ctx, db) };
        }
    }
}

/// Arguments passed as buffers; more go as a `v` array.
const MAX_BUFFER_ARGS: usize = 16;

/// `RedisModule_Call` with each argument passed as a buffer (`b`), so Redis builds fresh
/// objects exactly as its own scripting does (a `v` array would be retained, which keeps
/// SET from storing "123" as an integer). Variadic arity is static, hence one arm per count.
macro_rules! call_with_buffers {
    ($ctx:expr, $name:expr, $fmt:expr, $args:expr, [$($i:literal)*]) => {
        api!(RedisModule_Call)($ctx, $name, $fmt $(, $args[$i].as_ptr() as *const c_char, $args[$i].len())*)
    };
}

impl ModuleHost<'_> {
    /// Runs the command; returns the reply (null on refusal), errno, and the argument
    /// strings when the `v` fallback made them.
    fn raw_call(
        &self,
        name: &std::ffi::CStr,
        rest: &[&[u8]],
        options: CallOptions,
        refusals_as_replies: bool,
    ) -> (*mut raw::RedisModuleCallReply, c_int, Option<ArgStrings>) {
        let mut fmt_buf = [0u8; 32];
        if rest.len() > MAX_BUFFER_ARGS {
            let args = ArgStrings::new(self.ctx, rest);
            // SAFETY: the "v" format takes (RedisModuleString **argv, size_t argc); both stay
            // valid for the call, and the name and format are NUL-terminated.
            let reply = unsafe {
                api!(RedisModule_Call)(
                    self.ctx,
                    name.as_ptr(),
                    self.format(options, None, refusals_as_replies, &mut fmt_buf)
                        .as_ptr(),
                    args.items.as_ptr(),
                    args.items.len(),
                )
            };
            return (reply, errno(), Some(args));
        }
        let fmt = self.format(options, Some(rest.len()), refusals_as_replies, &mut fmt_buf);
        let (ctx, n, f) = (self.ctx, name.as_ptr(), fmt.as_ptr());
        // SAFETY: one (pointer, length) pair per `b` in the format, each valid for the call.
        let reply = unsafe {
            match rest.len() {
                0 => call_with_buffers!(ctx, n, f, rest, []),
                1 => call_with_buffers!(ctx, n, f, rest, [0]),
                2 => call_with_buffers!(ctx, n, f, rest, [0 1]),
                3 => call_with_buffers!(ctx, n, f, rest, [0 1 2]),
                4 => call_with_buffers!(ctx, n, f, rest, [0 1 2 3]),
                5 => call_with_buffers!(ctx, n, f, rest, [0 1 2 3 4]),
                6 => call_with_buffers!(ctx, n, f, rest, [0 1 2 3 4 5]),
                7 => call_with_buffers!(ctx, n, f, rest, [0 1 2 3 4 5 6]),
                8 => call_with_buffers!(ctx, n, f, rest, [0 1 2 3 4 5 6 7]),
                9 => call_with_buffers!(ctx, n, f, rest, [0 1 2 3 4 5 6 7 8]),
                10 => call_with_buffers!(ctx, n, f, rest, [0 1 2 3 4 5 6 7 8 9]),
                11 => call_with_buffers!(ctx, n, f, rest, [0 1 2 3 4 5 6 7 8 9 10]),
                12 => call_with_buffers!(ctx, n, f, rest, [0 1 2 3 4 5 6 7 8 9 10 11]),
                13 => call_with_buffers!(ctx, n, f, rest, [0 1 2 3 4 5 6 7 8 9 10 11 12]),
                14 => call_with_buffers!(ctx, n, f, rest, [0 1 2 3 4 5 6 7 8 9 10 11 12 13]),
                15 => call_with_buffers!(ctx, n, f, rest, [0 1 2 3 4 5 6 7 8 9 10 11 12 13 14]),
                _ => call_with_buffers!(ctx, n, f, rest, [0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15]),
            }
        };
        (reply, errno(), None)
    }
}

impl<'a> ModuleHost<'a> {
    pub fn new(
        ctx: Ctx,
        read_only: bool,
        check_oom: bool,
        running: Rc<Running>,
        command: &'a [&'a [u8]],
    ) -> Self {
        ModuleHost {
            ctx,
            command,
            read_only,
            check_oom,
            caller_db: std::cell::Cell::new(None),
            running,
            redis_calls: Default::default(),
            unyieldable: Default::default(),
            unchecked_caller: Default::default(),
        }
    }

    /// Where this run is, if that is a place where it must not yield to other clients.
    fn unyieldable_place(&self) -> Option<UnyieldablePlace> {
        if let Some(known) = self.unyieldable.get() {
            return known;
        }
        let place = unyieldable_place(context_flags(self.ctx));
        self.unyieldable.set(Some(place));
        place
    }

    /// How many commands the script ran through redis.call/pcall.
    pub fn redis_calls(&self) -> u64 {
        self.redis_calls.get()
    }

    /// Notes that the script wrote, which makes it unkillable (as in Redis).
    fn note_write(&self, name: &[u8], proto: &[u8]) {
        // A read-only run cannot write (`W` refuses it), so there is nothing to look up.
        if !self.read_only
            && !self.running.wrote.get()
            && !proto.starts_with(b"-")
            && command_facts(self.ctx, name).write
        {
            self.running.wrote.set(true);
        }
    }

    /// After a successful SELECT inside the script, switch the database it runs in.
    fn follow_select(&self, rest: &[&[u8]], proto: &[u8]) {
        if !proto.starts_with(b"+OK") {
            return;
        }
        let Some(db) = rest
            .first()
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.parse::<c_int>().ok())
        else {
            return;
        };
        // SAFETY: the ctx is live for the command.
        unsafe {
            if self.caller_db.get().is_none() {
                self.caller_db
                    .set(Some(api!(RedisModule_GetSelectedDb)(self.ctx)));
            }
            api!(RedisModule_SelectDb)(self.ctx, db);
        }
    }

    /// The call format, NUL-terminated in `buf`: `n` buffer arguments (or a `v` array when
    /// `None`), then the flags. S: script mode; C: the caller's ACL; !: replicate effects;
    /// W: no writes; M: deny-oom check; 3: RESP3 replies; E: a refusal comes back as an
    /// error reply with the server's text rather than as errno alone.
    fn format<'b>(
        &self,
        options: CallOptions,
        buffers: Option<usize>,
        refusals_as_replies: bool,
        buf: &'b mut [u8; 32],
    ) -> &'b std::ffi::CStr {
        let mut n = 0;
        let mut push = |c: u8| {
            buf[n] = c;
            n += 1;
        };
        match buffers {
            Some(count) => (0..count.min(MAX_BUFFER_ARGS)).for_each(|_| push(b'b')),
            None => push(b'v'),
        }
        push(b'S');
        if !self.unchecked_caller.get() {
            push(b'C');
        }
        if options.replicate {
            push(b'!');
        }
        if self.read_only {
            push(b'W');
        }
        if self.check_oom {
            push(b'M');
        }
        if options.resp3 {
            push(b'3');
        }
        if refusals_as_replies {
            push(b'E');
        }
        push(0);
        // SAFETY: `buf[..n]` holds format letters and exactly one NUL, at its end.
        unsafe { std::ffi::CStr::from_bytes_with_nul_unchecked(&buf[..n]) }
    }

    /// The error Redis's own script engine gives for a refusal `RedisModule_Call` reports
    /// only through errno.
    fn refusal_text(&self, errno: c_int) -> String {
        const EPERM: c_int = 1;
        const ENOENT: c_int = 2;
        const EACCES: c_int = 13;
        const EINVAL: c_int = 22;
        const ENOSPC: c_int = 28;
        const ESPIPE: c_int = 29;
        const EROFS: c_int = 30;
        match errno {
            ENOENT => format!("ERR {}", crate::dialect::current().texts.unknown_command),
            // RX (cluster): RedisModule_Call refuses a key this node does not serve.
            EPERM => "ERR Script attempted to access a non local key in a cluster node".into(),
            EINVAL => format!("ERR {}", crate::dialect::current().texts.wrong_arity),
            ESPIPE => "ERR This Redis command is not allowed from script".into(),
            EACCES => {
                "ERR The user executing the script can't run this command or subcommand".into()
            } // refined by acl_refusal
            ENOSPC if self.read_only => {
                "ERR Write commands are not allowed from read-only scripts.".into()
            }
            ENOSPC => "OOM command not allowed when used memory > 'maxmemory'.".into(),
            EROFS => "READONLY You can't write against a read only replica.".into(),
            other => format!("ERR RX could not run the command (errno {other})"),
        }
    }
}

impl ModuleHost<'_> {
    /// `RedisModule_Call`'s script mode refuses with ESPIPE for several reasons: a command
    /// scripts may not run, or server state that forbids it (a stale replica, too few good
    /// replicas, a disk error, a read-only replica). The refused call is made again asking
    /// for the server's own text, which scripts show as the server's script engine does;
    /// the engine checks staleness before the write gates, `RedisModule_Call` after them.
    fn script_mode_refusal(
        &self,
        name: &std::ffi::CStr,
        rest: &[&[u8]],
        options: CallOptions,
    ) -> String {
        const NOT_FROM_SCRIPTS: &str = "ERR This Redis command is not allowed from script";
        set_errno(0);
        let (reply, _, args) = self.raw_call(name, rest, options, true);
        drop(args);
        if reply.is_null() {
            return NOT_FROM_SCRIPTS.into();
        }
        let reply = CallReply(reply);
        let proto = reply.proto();
        let Some(text) = proto.strip_prefix(b"-") else {
            return NOT_FROM_SCRIPTS.into();
        };
        let text = text.strip_suffix(b"\r\n").unwrap_or(text);
        if text.ends_with(b"is not allowed on script mode") {
            // "ERR command '<name>' is not allowed on script mode"
            return NOT_FROM_SCRIPTS.into();
        }
        let stale = context_flags(self.ctx) & raw::REDISMODULE_CTX_FLAGS_REPLICA_IS_STALE != 0
            && !crate::gates::serve_stale_data(self.ctx);
        if stale && !command_facts(self.ctx, name.to_bytes()).stale {
            return "ERR Can not execute the command on a stale replica".into();
        }
        String::from_utf8_lossy(text).into_owned()
    }
}

impl ModuleHost<'_> {
    /// Whether `key`, in the database the script runs in, holds a set. Opened without
    /// touching its access time; the keyspace hit or miss it counts is one more than the
    /// command alone would count.
    fn holds_a_set(&self, key: &[u8]) -> bool {
        // SAFETY: ctx is live; the key string and the key handle are created and released
        // here, and the handle is only read while open.
        unsafe {
            let name = api!(RedisModule_CreateString)(self.ctx, key.as_ptr().cast(), key.len());
            let handle = api!(RedisModule_OpenKey)(
                self.ctx,
                name,
                (raw::REDISMODULE_READ | raw::REDISMODULE_OPEN_KEY_NOTOUCH) as c_int,
            );
            let is_set = !handle.is_null()
                && api!(RedisModule_KeyType)(handle.cast())
                    == raw::REDISMODULE_KEYTYPE_SET as c_int;
            if !handle.is_null() {
                api!(RedisModule_CloseKey)(handle.cast());
            }
            api!(RedisModule_FreeString)(self.ctx, name);
            is_set
        }
    }
}

/// The user running the current command, freed on drop.
struct CurrentUser {
    user: *mut raw::RedisModuleUser,
    name: Vec<u8>,
}

impl CurrentUser {
    fn of(ctx: Ctx) -> Option<CurrentUser> {
        // SAFETY: the context is live; the name string is copied and freed right after the
        // lookup.
        unsafe {
            let name = api!(RedisModule_GetCurrentUserName)(ctx);
            if name.is_null() {
                return None;
            }
            let mut len = 0usize;
            let p = api!(RedisModule_StringPtrLen)(name, &mut len);
            let bytes = std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec();
            let user = api!(RedisModule_GetModuleUserFromUserName)(name);
            api!(RedisModule_FreeString)(ctx, name);
            (!user.is_null()).then_some(CurrentUser { user, name: bytes })
        }
    }
}

impl Drop for CurrentUser {
    fn drop(&mut self) {
        // SAFETY: obtained from GetModuleUserFromUserName, freed once.
        unsafe { api!(RedisModule_FreeModuleUser)(self.user) };
    }
}

impl ModuleHost<'_> {
    /// `RedisModule_Call` reports every ACL denial as EACCES; Redis's script engine says
    /// whether a key, a channel or the command itself was denied. Work out which.
    fn acl_refusal(&self, name: &[u8], rest: &[&[u8]]) -> String {
        use crate::dialect::AclRefusals;
        let named = crate::dialect::current().acl_refusals == AclRefusals::Named;
        let command = |user: &[u8]| {
            if named {
                // Redis names the command as registered: lowercase, `parent|sub` for a
                // subcommand.
                let mut full = String::from_utf8_lossy(name).to_ascii_lowercase();
                if command_facts(self.ctx, name).has_subcommands {
                    if let Some(sub) = rest.first() {
                        full.push('|');
                        full.push_str(&String::from_utf8_lossy(sub).to_ascii_lowercase());
                    }
                }
                format!(
                    "ERR ACL failure in script: User {} has no permissions to run the '{full}' command",
                    String::from_utf8_lossy(user)
                )
            } else {
                "ERR The user executing the script can't run this command or subcommand".into()
            }
        };
        let key = || -> String {
            if named {
                "ERR ACL failure in script: No permissions to access a key".into()
            } else {
                "ERR The user executing the script can't access at least one of the keys mentioned in the command arguments".into()
            }
        };
        let channel = || -> String {
            if named {
                "ERR ACL failure in script: No permissions to access a channel".into()
            } else {
                "ERR The user executing the script can't publish to the channel mentioned in the command".into()
            }
        };
        let Some(user) = CurrentUser::of(self.ctx) else {
            return command(b"");
        };
        // Which check failed, in Redis's order (the command, then its keys, then the
        // channel): ACL DRYRUN answers it in words; RedisModule_ACLCheckCommandPermissions
        // checks keys too and cannot tell.
        let mut dryrun: Vec<&[u8]> = vec![b"DRYRUN", &user.name, name];
        dryrun.extend_from_slice(rest);
        let verdict = match call_tree(self.ctx, c"ACL", &dryrun) {
            Some(Tree::Str(t)) | Some(Tree::Error(t)) => String::from_utf8_lossy(&t).into_owned(),
            _ => String::new(),
        };
        if verdict.contains("' key") {
            key()
        } else if verdict.contains("' channel") {
            channel()
        } else {
            command(&user.name)
        }
    }
}

impl Host for ModuleHost<'_> {
    fn call(
        &self,
        argv: &[&[u8]],
        options: CallOptions,
        on_reply: &mut dyn FnMut(&[u8]),
    ) -> Result<(), String> {
        let Some((name, rest)) = argv.split_first() else {
            return Err(format!(
                "ERR {}",
                crate::dialect::current().texts.no_arguments
            ));
        };
        self.redis_calls.set(self.redis_calls.get() + 1);
        if name.contains(&0) {
            return Err(self.refusal_text(2));
        }
        if let Some(refusal) = blocking_stream_read(name, rest) {
            return Err(refusal);
        }
        // SORT ... BY <constant> on a set: what the server runs for its own scripts.
        let forced_alpha = crate::sort_in_scripts::forced_alpha_args(name, rest)
            .filter(|args| self.holds_a_set(args[0]));
        let rest: &[&[u8]] = forced_alpha.as_deref().unwrap_or(rest);
        let is_select = name.eq_ignore_ascii_case(b"select");
        let mut name_buf = [0u8; 64];
        let owned_name;
        let name: &std::ffi::CStr = if name.len() < name_buf.len() {
            name_buf[..name.len()].copy_from_slice(name);
            // SAFETY: the name has no NUL (checked above) and is followed by one.
            unsafe { std::ffi::CStr::from_bytes_with_nul_unchecked(&name_buf[..=name.len()]) }
        } else {
            owned_name = c_string(name);
            &owned_name
        };
        // RX cluster: the slot rule for scripts (one thread-local read outside a cluster).
        let bind_slot = crate::cluster::slots::before_call(self.ctx, argv)?;
        set_errno(0);
        let (mut reply, mut err, mut args) = self.raw_call(name, rest, options, false);
        const ENOTSUP: c_int = 95;
        if reply.is_null() && err == ENOTSUP && !self.unchecked_caller.get() {
            // `C` (check the caller's ACL) needs a caller with an ACL user; a module's
            // RedisModule_Call client has none. Run unchecked, as that module itself does.
            self.unchecked_caller.set(true);
            set_errno(0);
            (reply, err, args) = self.raw_call(name, rest, options, false);
        }
        crate::cluster::slots::after_call(bind_slot, !reply.is_null());
        if reply.is_null() {
            const EACCES: c_int = 13;
            const ESPIPE: c_int = 29;
            if err == EACCES {
                return Err(self.acl_refusal(name.to_bytes(), rest));
            }
            if err == ESPIPE {
                return Err(self.script_mode_refusal(name, rest, options));
            }
            return Err(self.refusal_text(err));
        }
        drop(args);
        let reply = CallReply(reply);
        let proto = reply.proto();
        if is_select {
            self.follow_select(rest, proto);
        }
        self.note_write(argv[0], proto);
        on_reply(proto);
        Ok(())
    }

    fn tick(&self) -> Tick {
        let r = &self.running;
        if r.stop.get().is_some() {
            return Tick::Stop;
        }
        let running_for = r.started.elapsed().as_millis();
        let limit = crate::config::TIME_LIMIT_MS.load(Ordering::Relaxed);
        if limit > 0 && running_for >= limit as u128 && !r.wrote.get() {
            log(
                self.ctx,
                LogLevel::Warning,
                format!(
                    "RX: function '{}' stopped after rx.time-limit-ms ({limit} ms)",
                    r.function
                )
                .as_bytes(),
            );
            r.stop.set(Some(Stop::TimeLimit { limit_ms: limit }));
            return Tick::Stop;
        }
        let threshold_ms = crate::gates::busy_threshold_ms();
        if running_for < threshold_ms as u128 {
            return Tick::Continue;
        }
        let place = self.unyieldable_place();
        if !r.busy.replace(true) {
            *r.command.borrow_mut() = self.command.iter().map(|a| a.to_vec()).collect();
            let advice = match place {
                None => format!(
                    "You can try killing the script using the {} command.",
                    r.kill_command()
                ),
                Some(_) if r.wrote.get() => {
                    "It already wrote and runs where Redis cannot serve other clients: nothing can stop it.".to_string()
                }
                Some(_) => "It runs where Redis cannot serve other clients: RX stops it now.".to_string(),
            };
            log(
                self.ctx,
                LogLevel::Warning,
                format!(
                    "Slow script detected: still in execution after {running_for} milliseconds. {advice} Script name is: {}.",
                    r.function
                )
                .as_bytes(),
            );
        }
        if let Some(place) = place {
            // Yielding here would let Redis process another client's command, which it
            // asserts against (inside EXEC or a script) or must not do (loading, the master
            // link). Nobody can send a kill, so a run that has not written is stopped as if
            // killed; one that wrote cannot be, as with RX.KILL.
            if r.wrote.get() {
                return Tick::Continue;
            }
            r.stop.set(Some(Stop::Unyieldable {
                threshold_ms,
                place,
            }));
            return Tick::Stop;
        }
        let busy = c_string(r.busy_message().as_bytes());
        // SAFETY: the ctx is the running command's, in a place where yielding is allowed
        // (checked above); Redis serves other clients (they get -BUSY unless their command
        // is allow-busy, like RX.KILL) and returns here.
        unsafe {
            api!(RedisModule_Yield)(
                self.ctx,
                raw::REDISMODULE_YIELD_FLAG_CLIENTS as c_int,
                busy.as_ptr(),
            )
        };
        if r.stop.get().is_some() {
            return Tick::Stop;
        }
        Tick::Continue
    }

    fn interruption(&self) -> Option<String> {
        self.running.stop_text()
    }

    fn acl_check(&self, argv: &[&[u8]]) -> Result<bool, String> {
        let Some(user) = CurrentUser::of(self.ctx) else {
            return Ok(false);
        };
        let args = ArgStrings::new(self.ctx, argv);
        // SAFETY: the user and the argument strings stay alive for the call.
        unsafe {
            set_errno(0);
            let r = api!(RedisModule_ACLCheckCommandPermissions)(
                user.user,
                args.items.as_ptr() as *mut _,
                args.items.len() as c_int,
            );
            let err = errno();
            if r == raw::REDISMODULE_OK as c_int {
                Ok(true)
            } else if err == 2 {
                Err(format!(
                    "ERR {}",
                    crate::dialect::current().texts.acl_check_cmd_unknown
                ))
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
