//! The script host: what `redis.call` and friends do in a running function or script,
//! through `RedisModule_Call` in script mode (`rx_core::engine::Host`). The run context
//! (`run.rs`) builds one per run and hands it what the run is allowed: its limits and, on a
//! cluster node, the slot rule; the host reaches nothing above the module API wrapper.

use std::ffi::c_int;
use std::mem::MaybeUninit;
use std::rc::Rc;

use redis_module::raw;

use crate::arg_cache::{ArgCache, ArgLease, MAX_SHARED_LEN};
use crate::command_facts::{CommandFacts, CommandTable, Special};
use crate::engine::{CallOptions, Host, LogLevel, Tick};
use crate::ffi::{
    api, c_string, call_tree, context_flags, errno, guarded, guarded_text, log, set_errno,
    ArgStrings, CallReply, Ctx,
};
use crate::resp::Tree;
use crate::running::{Running, Stop, UnyieldablePlace};

/// Redis 7 refuses XREAD/XREADGROUP with BLOCK in scripts, naming the command as the script
/// spelled it (other blocking commands simply do not block), where `RedisModule_Call` would
/// quietly return nil; Redis 8 and Valkey run them without blocking, as `RedisModule_Call`
/// does (see `Dialect::blocking_stream_reads`). `name` is XREAD or XREADGROUP in any
/// spelling (`Special::StreamRead`).
fn blocking_stream_read(name: &[u8], args: &[&[u8]]) -> Option<String> {
    if crate::dialect::current().blocking_stream_reads
        == crate::dialect::BlockingStreamReads::NonBlocking
    {
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

/// What a run may do before RX stops it or lets other clients in, read when it starts.
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    /// `rx.time-limit-ms` (0: none): a run that has not written is stopped past it.
    pub time_limit_ms: i64,
    /// The server's `busy-reply-threshold`: past it the run turns busy.
    pub busy_threshold_ms: u64,
}

/// A rule every command of a run is checked against before it runs (on a cluster node,
/// the slot rule: `cluster::slots`). `before_call` refuses with an error text, or gives a
/// token that `after_call` gets back with whether the server ran the command.
pub trait CallRule {
    fn before_call(&self, ctx: Ctx, argv: &[&[u8]]) -> Result<Option<u16>, String>;
    fn after_call(&self, token: Option<u16>, ran: bool);
    /// `rx.fcall`'s keys count as keys of the run: they must share the run's slot (and bind
    /// it if it is not bound yet).
    fn bind_keys(&self, ctx: Ctx, keys: &[&[u8]]) -> Result<(), String>;
}

/// How deep `rx.fcall` may nest: a function calling a function calling ... (recursion
/// included), at most this many calls deep.
pub const MAX_FCALL_DEPTH: u32 = 32;

/// Runs a function for `rx.fcall`: provided by `run`, which knows the registry and the
/// engine. It looks the function up, makes a direct call's checks against this run, runs
/// it on `host` and returns its reply as RESP bytes (RESP3 when `resp3`).
pub trait NestedFunctions {
    fn run(
        &self,
        host: &ModuleHost<'_>,
        name: &[u8],
        keys: &[&[u8]],
        args: &[&[u8]],
        resp3: bool,
    ) -> Result<Vec<u8>, String>;
}

/// `redis.call` from a function, through `RedisModule_Call` in script mode.
pub struct ModuleHost<'a> {
    ctx: Ctx,
    limits: RunLimits,
    /// The slot rule on a cluster node; `None` elsewhere.
    rule: Option<&'a dyn CallRule>,
    /// Runs the functions `rx.fcall` names; `None` where it is not available.
    nested: Option<&'a dyn NestedFunctions>,
    /// How many `rx.fcall`s are running, one inside the other.
    fcall_depth: std::cell::Cell<u32>,
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
    /// What each command is (write or not, ...), shared by every run.
    commands: Rc<CommandTable>,
    /// Server strings for repeated arguments, shared by every run.
    args: Rc<ArgCache>,
}

impl Drop for ModuleHost<'_> {
    fn drop(&mut self) {
        if let Some(db) = self.caller_db.get() {
            // SAFETY: the ctx outlives the host, which lives inside the command call.
            unsafe { api!(RedisModule_SelectDb)(self.ctx, db) };
        }
    }
}

/// A command name up to this long (NUL included) is made a C string on the stack.
const NAME_BUFFER: usize = 64;

#[cold]
fn no_arguments() -> String {
    format!("ERR {}", crate::dialect::current().texts.no_arguments)
}

/// Arguments passed one by one (`s` or `b`); more go as a `v` array.
const MAX_BUFFER_ARGS: usize = 16;

/// The variadic values for `MAX_BUFFER_ARGS` arguments: two for a `b` (pointer, length),
/// one for an `s` (a string).
const CALL_VALUES: usize = 2 * MAX_BUFFER_ARGS;

/// The variadic values of one `RedisModule_Call`: the first `used` are written.
struct CallValues {
    values: [MaybeUninit<usize>; CALL_VALUES],
    used: usize,
}

/// The values a call of up to eight passes are zeros until written (`call_module`).
const SHORT_CALL_VALUES: usize = 8;

impl CallValues {
    fn new() -> Self {
        let mut values = [MaybeUninit::uninit(); CALL_VALUES];
        for v in &mut values[..SHORT_CALL_VALUES] {
            v.write(0);
        }
        CallValues { values, used: 0 }
    }

    fn push(&mut self, value: usize) {
        self.values[self.used].write(value);
        self.used += 1;
    }
}

/// Writes each argument's format letter (`s` or `b`) into `letters` and its variadic
/// values into `values`. Not inlined: its caller knows there are at most 16 arguments, and
/// would unroll the loop sixteen times into code every call has to fetch.
#[inline(never)]
fn gather_arguments(
    lease: &ArgLease<'_>,
    facts: CommandFacts,
    rest: &[&[u8]],
    letters: &mut [u8; 32],
    values: &mut CallValues,
) {
    let argc = rest.len() + 1;
    for (i, arg) in rest.iter().enumerate() {
        if arg.len() <= MAX_SHARED_LEN && facts.may_share_argument(i + 1, argc) {
            letters[i] = b's';
            values.push(lease.string(arg) as usize);
        } else {
            letters[i] = b'b';
            values.push(arg.as_ptr() as usize);
            values.push(arg.len());
        }
    }
}

/// `RedisModule_Call` with `values` as its variadic arguments, followed by zeros nobody
/// reads. Calls of three sizes: a command of a few arguments runs the short one, and the
/// 32-value call stays out of the code every call fetches.
///
/// # Safety
/// `fmt` must name exactly the values written, `s` (a live string) or `b` (pointer and
/// length, valid for the call), and `name` and `fmt` must be NUL-terminated. All values are
/// passed as `usize`: a pointer and a `size_t` are variadic values of the same width and
/// class on the ABIs Redis runs on (System V x86-64, AArch64: general registers, then
/// 8-byte stack slots), so each reads back as what it was.
unsafe fn call_module(
    ctx: Ctx,
    name: &std::ffi::CStr,
    fmt: &std::ffi::CStr,
    values: &mut CallValues,
) -> *mut raw::RedisModuleCallReply {
    let (name, fmt) = (name.as_ptr(), fmt.as_ptr());
    if values.used > SHORT_CALL_VALUES {
        return call_module_long(ctx, name, fmt, values);
    }
    // SAFETY: the first SHORT_CALL_VALUES are written (zeros, or by `push`).
    let v = |i: usize| values.values[i].assume_init();
    let call = api!(RedisModule_Call);
    if values.used <= 4 {
        call(ctx, name, fmt, v(0), v(1), v(2), v(3))
    } else {
        call(
            ctx,
            name,
            fmt,
            v(0),
            v(1),
            v(2),
            v(3),
            v(4),
            v(5),
            v(6),
            v(7),
        )
    }
}

/// `call_module` for more than eight values: all 32 passed, zeros after the last.
#[cold]
#[inline(never)]
unsafe fn call_module_long(
    ctx: Ctx,
    name: *const std::ffi::c_char,
    fmt: *const std::ffi::c_char,
    values: &mut CallValues,
) -> *mut raw::RedisModuleCallReply {
    for unread in &mut values.values[values.used..] {
        unread.write(0);
    }
    // SAFETY: every value is written now.
    let v = |i: usize| values.values[i].assume_init();
    api!(RedisModule_Call)(
        ctx,
        name,
        fmt,
        v(0),
        v(1),
        v(2),
        v(3),
        v(4),
        v(5),
        v(6),
        v(7),
        v(8),
        v(9),
        v(10),
        v(11),
        v(12),
        v(13),
        v(14),
        v(15),
        v(16),
        v(17),
        v(18),
        v(19),
        v(20),
        v(21),
        v(22),
        v(23),
        v(24),
        v(25),
        v(26),
        v(27),
        v(28),
        v(29),
        v(30),
        v(31),
    )
}

impl ModuleHost<'_> {
    /// Runs the command; returns the reply (null on refusal), errno, and the argument
    /// strings when the `v` fallback made them. Arguments the command may share
    /// (`CommandFacts::may_share_argument`) go as the cache's strings (`s`); the others as
    /// buffers (`b`), from which Redis builds fresh objects exactly as its own scripting
    /// does (a retained string would keep SET from storing "123" as an integer).
    #[inline(always)]
    fn raw_call(
        &self,
        name: &std::ffi::CStr,
        facts: CommandFacts,
        rest: &[&[u8]],
        options: CallOptions,
        refusals_as_replies: bool,
    ) -> (*mut raw::RedisModuleCallReply, c_int, Option<ArgStrings>) {
        if rest.len() > MAX_BUFFER_ARGS {
            return self.call_with_array(name, rest, options, refusals_as_replies);
        }
        let mut fmt_buf = [0u8; 32];
        let lease = self.args.lease();
        let mut values = CallValues::new();
        gather_arguments(&lease, facts, rest, &mut fmt_buf, &mut values);
        let fmt = self.format(options, rest.len(), refusals_as_replies, &mut fmt_buf);
        // SAFETY: the format names each value once, `s` (a string the lease keeps alive
        // through the call) or `b` (pointer and length, valid for the call).
        let reply = unsafe { call_module(self.ctx, name, fmt, &mut values) };
        let err = if reply.is_null() { errno() } else { 0 };
        drop(lease);
        (reply, err, None)
    }

    /// `raw_call` for more than `MAX_BUFFER_ARGS` arguments: all of them as fresh strings
    /// in a `v` array.
    #[cold]
    #[inline(never)]
    fn call_with_array(
        &self,
        name: &std::ffi::CStr,
        rest: &[&[u8]],
        options: CallOptions,
        refusals_as_replies: bool,
    ) -> (*mut raw::RedisModuleCallReply, c_int, Option<ArgStrings>) {
        let mut fmt_buf = [0u8; 32];
        let args = ArgStrings::new(self.ctx, rest);
        fmt_buf[0] = b'v';
        // SAFETY: the "v" format takes (RedisModuleString **argv, size_t argc); both stay
        // valid for the call, and the name and format are NUL-terminated.
        let reply = unsafe {
            api!(RedisModule_Call)(
                self.ctx,
                name.as_ptr(),
                self.format(options, 1, refusals_as_replies, &mut fmt_buf)
                    .as_ptr(),
                args.items.as_ptr(),
                args.items.len(),
            )
        };
        (reply, errno(), Some(args))
    }
}

impl<'a> ModuleHost<'a> {
    pub fn new(
        ctx: Ctx,
        read_only: bool,
        check_oom: bool,
        running: Rc<Running>,
        command: &'a [&'a [u8]],
        limits: RunLimits,
        rule: Option<&'a dyn CallRule>,
    ) -> Self {
        ModuleHost {
            ctx,
            limits,
            rule,
            nested: None,
            fcall_depth: Default::default(),
            command,
            read_only,
            check_oom,
            caller_db: std::cell::Cell::new(None),
            running,
            redis_calls: Default::default(),
            unyieldable: Default::default(),
            unchecked_caller: Default::default(),
            commands: crate::command_facts::table(),
            args: crate::arg_cache::cache(),
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

    /// Lets the run's scripts call functions with `rx.fcall`.
    pub fn with_nested(mut self, nested: &'a dyn NestedFunctions) -> Self {
        self.nested = Some(nested);
        self
    }

    pub fn ctx(&self) -> Ctx {
        self.ctx
    }

    /// Write commands are refused in this run (a `no-writes` function, or a `_RO` command).
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// `rx.fcall`'s keys: checked against the run's slot, as a command's keys are.
    pub fn bind_keys(&self, keys: &[&[u8]]) -> Result<(), String> {
        match self.rule {
            Some(rule) => rule.bind_keys(self.ctx, keys),
            None => Ok(()),
        }
    }

    /// How many commands the script ran through redis.call/pcall.
    pub fn redis_calls(&self) -> u64 {
        self.redis_calls.get()
    }

    /// Notes that the script wrote, which makes it unkillable (as in Redis).
    fn note_write(&self, facts: CommandFacts, proto: &[u8]) {
        // A read-only run cannot write (`W` refuses it).
        if facts.write && !self.read_only && !self.running.wrote.get() && !proto.starts_with(b"-") {
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

    /// The call format, NUL-terminated in `buf`, whose first `letters` bytes already name
    /// the arguments: then the flags. S: script mode; C: the caller's ACL; !: replicate
    /// effects; W: no writes; M: deny-oom check; 3: RESP3 replies; E: a refusal comes back
    /// as an error reply with the server's text rather than as errno alone.
    fn format<'b>(
        &self,
        options: CallOptions,
        letters: usize,
        refusals_as_replies: bool,
        buf: &'b mut [u8; 32],
    ) -> &'b std::ffi::CStr {
        let mut n = letters;
        let mut push = |c: u8| {
            buf[n] = c;
            n += 1;
        };
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
        // SAFETY: `buf[..n]` holds format letters (none of them NUL) and one NUL, at its end.
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
    /// for the server's own text, which scripts show as the server's script engine does.
    /// The engine checks staleness and the ACL before the write gates, `RedisModule_Call`
    /// after them; both gates at once (too few replicas and a disk error) still give
    /// `RedisModule_Call`'s first (NOREPLICAS) where the engine gives MISCONF.
    fn script_mode_refusal(
        &self,
        name: &std::ffi::CStr,
        facts: CommandFacts,
        rest: &[&[u8]],
        options: CallOptions,
    ) -> String {
        const NOT_FROM_SCRIPTS: &str = "ERR This Redis command is not allowed from script";
        set_errno(0);
        let (reply, _, args) = self.raw_call(name, facts, rest, options, true);
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
        // The script engine's order from here: a stale replica, the ACL, a read-only
        // replica, then the write gates (RedisModule_Call's own text for those).
        let flags = context_flags(self.ctx);
        let stale = flags & raw::REDISMODULE_CTX_FLAGS_REPLICA_IS_STALE != 0
            && !crate::ffi::serves_stale_data(self.ctx);
        if stale && !facts.stale {
            return "ERR Can not execute the command on a stale replica".into();
        }
        if !self.unchecked_caller.get() {
            let mut argv = Vec::with_capacity(rest.len() + 1);
            argv.push(name.to_bytes());
            argv.extend_from_slice(rest);
            if self.check_acl(&argv) == Ok(false) {
                return self.acl_refusal(name.to_bytes(), rest);
            }
        }
        let read_only_replica =
            raw::REDISMODULE_CTX_FLAGS_SLAVE | raw::REDISMODULE_CTX_FLAGS_READONLY;
        if facts.write
            && flags & read_only_replica == read_only_replica
            && !crate::ffi::replayed(self.ctx)
        {
            return "READONLY You can't write against a read only replica.".into();
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
                if self.commands.facts(self.ctx, name).has_subcommands {
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

/// A command name whose `redis.call` panics on purpose: set from the environment
/// (`RX_TEST_PANIC_COMMAND`) when first asked, for the test that shows a panic under a Lua
/// C function becomes an error reply. Unset, it costs one load and comparison per call.
static TEST_PANIC_COMMAND: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();

fn test_panic_command() -> Option<&'static [u8]> {
    TEST_PANIC_COMMAND
        .get_or_init(|| std::env::var_os("RX_TEST_PANIC_COMMAND").map(|v| v.into_encoded_bytes()))
        .as_deref()
}

// Every Host method runs under Lua (a C function of rx-lua called it): a panic must end in
// `guarded` here and become an error, never unwind into LuaJIT (which would abort the
// server). Lua values are pushed outside (`on_reply`): a Lua error cannot cross a Rust
// catch either.
impl Host for ModuleHost<'_> {
    fn call(
        &self,
        argv: &[&[u8]],
        options: CallOptions,
        on_reply: &mut dyn FnMut(&[u8]),
    ) -> Result<(), String> {
        // A panic becomes an error text the script sees: the run goes on (or fails) like
        // after any other error, and the server lives.
        let reply = guarded_text("redis.call", || self.run_command(argv, options))?;
        on_reply(reply.proto());
        Ok(())
    }

    fn fcall(
        &self,
        name: &[u8],
        keys: &[&[u8]],
        args: &[&[u8]],
        options: CallOptions,
        on_reply: &mut dyn FnMut(&[u8]),
    ) -> Result<(), String> {
        let reply = guarded_text("rx.fcall", || {
            let Some(nested) = self.nested else {
                return Err("ERR rx.fcall is not available here".into());
            };
            let depth = self.fcall_depth.get();
            if depth >= MAX_FCALL_DEPTH {
                return Err(format!(
                    "ERR rx.fcall: calls nested more than {MAX_FCALL_DEPTH} deep"
                ));
            }
            self.fcall_depth.set(depth + 1);
            let reply = nested.run(self, name, keys, args, options.resp3);
            self.fcall_depth.set(depth);
            reply
        })?;
        on_reply(&reply);
        Ok(())
    }

    fn tick(&self) -> Tick {
        guarded("the script hook", Tick::Stop, || self.tick_now())
    }

    fn interruption(&self) -> Option<String> {
        guarded("the script hook", None, || self.running.stop_text())
    }

    fn acl_check(&self, argv: &[&[u8]]) -> Result<bool, String> {
        guarded_text("redis.acl_check_cmd", || self.check_acl(argv))
    }

    fn log(&self, level: LogLevel, msg: &[u8]) {
        guarded("redis.log", (), || log(self.ctx, level, msg))
    }
}

impl ModuleHost<'_> {
    /// Runs one command of the script; the reply, or the refusal's text. A known command
    /// that RX passes on as it is takes the short path. Everything else (SELECT, SORT, XREAD,
    /// unknown or odd names, refusals) goes out of line, so that the code every call runs
    /// stays small: a loop of calls otherwise evicts itself from the instruction cache.
    fn run_command(&self, argv: &[&[u8]], options: CallOptions) -> Result<CallReply, String> {
        let Some((name, rest)) = argv.split_first() else {
            return Err(no_arguments());
        };
        self.redis_calls.set(self.redis_calls.get() + 1);
        let facts = self.commands.facts(self.ctx, name);
        if !(facts.ordinary()
            && name.len() < NAME_BUFFER
            && !name.contains(&0)
            && test_panic_command().is_none())
        {
            return self.run_unusual(facts, argv, options);
        }
        let mut name_buf = [0u8; NAME_BUFFER];
        name_buf[..name.len()].copy_from_slice(name);
        // SAFETY: the name has no NUL (checked above) and is followed by one.
        let name =
            unsafe { std::ffi::CStr::from_bytes_with_nul_unchecked(&name_buf[..=name.len()]) };
        self.send(name, facts, argv, rest, options)
    }

    /// `run_command` for the commands off its short path.
    #[cold]
    #[inline(never)]
    fn run_unusual(
        &self,
        facts: CommandFacts,
        argv: &[&[u8]],
        options: CallOptions,
    ) -> Result<CallReply, String> {
        let (name, rest) = (argv[0], &argv[1..]);
        if test_panic_command().is_some_and(|c| name.eq_ignore_ascii_case(c)) {
            panic!("RX test: a forced panic in redis.call (RX_TEST_PANIC_COMMAND)");
        }
        if name.contains(&0) {
            return Err(self.refusal_text(2));
        }
        if facts.special == Special::StreamRead {
            if let Some(refusal) = blocking_stream_read(name, rest) {
                return Err(refusal);
            }
        }
        // SORT ... BY <constant> on a set: what the server runs for its own scripts.
        let forced_alpha = match facts.special {
            Special::Sort => {
                crate::sort_in_scripts::forced_alpha_args(name, rest, crate::ffi::cluster_mode())
                    .filter(|args| self.holds_a_set(args[0]))
            }
            _ => None,
        };
        let rest: &[&[u8]] = forced_alpha.as_deref().unwrap_or(rest);
        let reply = self.send(&c_string(name), facts, argv, rest, options)?;
        if facts.special == Special::Select {
            self.follow_select(rest, reply.proto());
        }
        Ok(reply)
    }

    /// Sends `name` with `rest` (the arguments as sent, or as rewritten) under the slot
    /// rule (which sees `argv` as the script sent it); notes a write. Inlined into each
    /// caller: the hot one then runs one function's code, not three.
    #[inline(always)]
    fn send(
        &self,
        name: &std::ffi::CStr,
        facts: CommandFacts,
        argv: &[&[u8]],
        rest: &[&[u8]],
        options: CallOptions,
    ) -> Result<CallReply, String> {
        // RX cluster: the slot rule for scripts (nothing outside a cluster).
        let token = match self.rule {
            Some(rule) => rule.before_call(self.ctx, argv)?,
            None => None,
        };
        set_errno(0);
        let (reply, err, args) = self.raw_call(name, facts, rest, options, false);
        drop(args);
        let reply = if reply.is_null() {
            self.retry_or_refuse(err, name, facts, rest, options)
        } else {
            Ok(reply)
        };
        let result = reply.map(|reply| {
            let reply = CallReply(reply);
            self.note_write(facts, reply.proto());
            reply
        });
        if let Some(rule) = self.rule {
            rule.after_call(token, result.is_ok());
        }
        result
    }

    /// After `RedisModule_Call` refused (errno `err`): the reply of the one retry an
    /// unchecked caller gets, or the refusal's text. `C` (check the caller's ACL) needs a
    /// caller with an ACL user, and a module's `RedisModule_Call` client has none: such a
    /// run goes on unchecked from then on, as that module itself does.
    #[cold]
    #[inline(never)]
    fn retry_or_refuse(
        &self,
        err: c_int,
        name: &std::ffi::CStr,
        facts: CommandFacts,
        rest: &[&[u8]],
        options: CallOptions,
    ) -> Result<*mut raw::RedisModuleCallReply, String> {
        const ENOTSUP: c_int = 95;
        let (mut reply, mut err) = (std::ptr::null_mut(), err);
        if err == ENOTSUP && !self.unchecked_caller.get() {
            self.unchecked_caller.set(true);
            set_errno(0);
            let args;
            (reply, err, args) = self.raw_call(name, facts, rest, options, false);
            drop(args);
        }
        if reply.is_null() {
            return Err(self.refused(err, name, facts, rest, options));
        }
        Ok(reply)
    }

    /// The text of a refusal `RedisModule_Call` reported through errno.
    #[cold]
    #[inline(never)]
    fn refused(
        &self,
        err: c_int,
        name: &std::ffi::CStr,
        facts: CommandFacts,
        rest: &[&[u8]],
        options: CallOptions,
    ) -> String {
        const EACCES: c_int = 13;
        const ESPIPE: c_int = 29;
        match err {
            EACCES => self.acl_refusal(name.to_bytes(), rest),
            ESPIPE => self.script_mode_refusal(name, facts, rest, options),
            _ => self.refusal_text(err),
        }
    }

    fn tick_now(&self) -> Tick {
        let r = &self.running;
        if r.stop.get().is_some() {
            return Tick::Stop;
        }
        let running_for = r.started.elapsed().as_millis();
        let limit = self.limits.time_limit_ms;
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
        let threshold_ms = self.limits.busy_threshold_ms;
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

    fn check_acl(&self, argv: &[&[u8]]) -> Result<bool, String> {
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
}
