//! Which server RX runs in, and everything that differs because of it: error texts, the
//! Lua environment, conversion rules. Chosen once when the module loads (from the server's
//! name and version, plus one measured Lua rule), and read from one place, so that no other
//! code checks versions. Pure: the module glue detects the server, this file decides.
//!
//! Each server's native `FUNCTION`/`FCALL`/`EVAL` is the reference: every rule here was
//! measured against it (the differential corpora run on each server of `make test-matrix`:
//! Redis 7.0.15, Redis 8.0.2, Valkey 8.1.1). Versions between those follow the release
//! notes' boundaries, noted per rule.

use std::sync::OnceLock;

/// The Redis version Valkey claims (`redis.REDIS_VERSION` and `REDIS_VERSION_NUM` there).
pub const VALKEY_CLAIMED_REDIS_VERSION: (&str, u32) = ("7.2.4", 0x0007_0204);

/// Which server family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Redis,
    Valkey,
}

/// What the module glue learns about the server at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub family: Family,
    /// The server's own version (for Valkey, Valkey's, not the Redis version it claims).
    pub version: (u32, u32, u32),
    /// The server's Lua refuses `[[` inside a `[[...]]` string or comment ("nesting of
    /// [[...]] is deprecated"). Lua 5.1 as Redis bundles it does; the Lua that Debian's
    /// package links does not. Measured at load with a native EVAL that fails to compile
    /// either way (so nothing enters the script cache).
    pub lua_refuses_nested_long_brackets: bool,
}

impl ServerInfo {
    /// Redis 7.0.15 as Debian 12 ships it: the default when nothing else is known.
    pub fn debian_redis_7_0() -> ServerInfo {
        ServerInfo {
            family: Family::Redis,
            version: (7, 0, 15),
            lua_refuses_nested_long_brackets: false,
        }
    }

    fn redis_at_least(&self, version: (u32, u32, u32)) -> bool {
        self.family == Family::Redis && self.version >= version
    }

    fn valkey_at_least(&self, version: (u32, u32, u32)) -> bool {
        self.family == Family::Valkey && self.version >= version
    }
}

/// How a Lua number passed to `redis.call` becomes an argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberArguments {
    /// `%.17g` (Redis 7.0 and 7.2 before 7.2.5).
    Precise,
    /// An integer when the value is one within ±2^62, else the shortest text that reads
    /// back the same, with fpconv's layout (Redis 7.2.5+, 8.x, Valkey 8).
    IntegerOrShortest,
}

/// What `XREAD`/`XREADGROUP ... BLOCK` do inside a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockingStreamReads {
    /// Refused: `<command as typed> command is not allowed with BLOCK option from scripts`.
    Refused,
    /// Run without blocking (nil on no data), as Redis 8 and Valkey 8 do.
    NonBlocking,
}

/// How a script's ACL refusal reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclRefusals {
    /// `The user executing the script can't run this command or subcommand` (and the key and
    /// channel variants): Redis 7.0.
    Legacy,
    /// `ACL failure in script: User <name> has no permissions to run the '<command>'
    /// command` / `... No permissions to access a key` / `... a channel`: Redis 7.2+, Valkey.
    Named,
}

/// The rules RX follows on one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialect {
    pub server: ServerInfo,
    /// See `ServerInfo::lua_refuses_nested_long_brackets`.
    pub refuse_nested_long_brackets: bool,
    /// The name the API table is known by in error texts: `redis`, or `server` on Valkey
    /// (`server.log() requires ...`, `... to server.register_function`).
    pub api_name: &'static str,
    /// Valkey: a `server` global that is the same table as `redis`, with `SERVER_NAME`,
    /// `VALKEY_VERSION` and `VALKEY_VERSION_NUM`; `REDIS_VERSION` is the Redis version
    /// Valkey claims (7.2.4).
    pub valkey_api: bool,
    /// A global `os` table holding only `os.clock` (Redis 7.4+, Valkey 8).
    pub os_clock: bool,
    pub number_arguments: NumberArguments,
    pub blocking_stream_reads: BlockingStreamReads,
    pub acl_refusals: AclRefusals,
    /// Valkey checks function names (and duplicates) after the library body ran, and
    /// reports them without the `Error registering functions:` prefix.
    pub late_function_name_checks: bool,
    /// Valkey finds a shebang's engine by name, case-insensitively, and names an unknown one
    /// (`Could not find scripting engine '<name>'`).
    pub engine_by_name: bool,
    /// Valkey 8.1's function engine handles two strings as C strings, so each ends at its
    /// first NUL byte: a library's code when it is compiled (`luaL_loadbuffer(...,
    /// strlen(code), ...)` in `src/lua/function_lua.c`: a NUL inside a comment or a string
    /// cuts the library short), and a function's description in `FUNCTION LIST`
    /// (`addReplyBulkCString`). The code kept and shown `WITHCODE` is whole; EVAL scripts
    /// are not cut.
    pub function_engine_c_strings: bool,
    /// Valkey 8.1's `sdssplitargs` (`sdsparsearg`) stores each byte in an `int` through a
    /// signed `char` and takes -1 for "no byte": a 0xFF byte read as itself vanishes from
    /// a library header or EVAL shebang (`#!lu\xffa name=m\xff` is engine `lua`, library
    /// `m`). Written `\xff` inside double quotes it stays.
    pub split_args_drops_byte_ff: bool,
    pub texts: Texts,
}

/// Texts that differ between servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Texts {
    pub unknown_command: &'static str,
    pub wrong_arity: &'static str,
    pub no_arguments: &'static str,
    pub bad_argument_type: &'static str,
    pub log_arity: &'static str,
    pub invalid_log_level: &'static str,
    pub setresp_arity: &'static str,
    pub set_repl_arity: &'static str,
    pub acl_check_cmd_unknown: &'static str,
    pub noscript: &'static str,
}

impl Dialect {
    pub fn for_server(server: ServerInfo) -> Dialect {
        let valkey = server.family == Family::Valkey;
        let modern = server.redis_at_least((7, 2, 0)) || valkey;
        let texts = Texts {
            unknown_command: if valkey {
                "Unknown command called from script"
            } else {
                "Unknown Redis command called from script"
            },
            wrong_arity: if valkey {
                "Wrong number of args calling command from script"
            } else {
                "Wrong number of args calling Redis command from script"
            },
            no_arguments: if valkey {
                "Please specify at least one argument for this call"
            } else {
                "Please specify at least one argument for this redis lib call"
            },
            bad_argument_type: if valkey {
                "Command arguments must be strings or integers"
            } else {
                "Lua redis lib command arguments must be strings or integers"
            },
            log_arity: if valkey {
                "server.log() requires two arguments or more."
            } else {
                "redis.log() requires two arguments or more."
            },
            invalid_log_level: if server.redis_at_least((7, 4, 0)) || valkey {
                "Invalid log level."
            } else {
                "Invalid debug level."
            },
            setresp_arity: if valkey {
                "server.setresp() requires one argument."
            } else {
                "redis.setresp() requires one argument."
            },
            set_repl_arity: match (valkey, modern) {
                (true, _) => "server.set_repl() requires one argument.",
                (false, true) => "redis.set_repl() requires one argument.",
                // Redis 7.0's own (inaccurate) wording.
                (false, false) => "redis.set_repl() requires two arguments.",
            },
            acl_check_cmd_unknown: if valkey {
                "Invalid command passed to server.acl_check_cmd()"
            } else {
                "Invalid command passed to redis.acl_check_cmd()"
            },
            noscript: if valkey {
                "NOSCRIPT No matching script."
            } else {
                "NOSCRIPT No matching script. Please use EVAL."
            },
        };
        Dialect {
            refuse_nested_long_brackets: server.lua_refuses_nested_long_brackets,
            api_name: if valkey { "server" } else { "redis" },
            valkey_api: valkey,
            os_clock: server.redis_at_least((7, 4, 0)) || server.valkey_at_least((8, 0, 0)),
            number_arguments: if server.redis_at_least((7, 2, 5))
                || server.valkey_at_least((8, 0, 0))
            {
                NumberArguments::IntegerOrShortest
            } else {
                NumberArguments::Precise
            },
            blocking_stream_reads: if server.redis_at_least((8, 0, 0))
                || server.valkey_at_least((8, 0, 0))
            {
                BlockingStreamReads::NonBlocking
            } else {
                BlockingStreamReads::Refused
            },
            acl_refusals: if modern {
                AclRefusals::Named
            } else {
                AclRefusals::Legacy
            },
            late_function_name_checks: valkey,
            engine_by_name: valkey,
            function_engine_c_strings: server.valkey_at_least((8, 1, 0)),
            split_args_drops_byte_ff: server.valkey_at_least((8, 1, 0)),
            texts,
            server,
        }
    }

    /// The server's name in its own messages (`MISCONF <name> is configured ...`): Valkey
    /// says `Valkey` unless `extended-redis-compatibility` is on.
    pub fn server_name(&self, extended_redis_compatibility: bool) -> &'static str {
        if self.server.family == Family::Valkey && !extended_redis_compatibility {
            "Valkey"
        } else {
            "Redis"
        }
    }
}

static CURRENT: OnceLock<Dialect> = OnceLock::new();

/// Fixes the dialect for the module's life (the first call wins).
pub fn install(dialect: Dialect) {
    let _ = CURRENT.set(dialect);
}

/// The dialect in force: the one installed at load, or Debian's Redis 7.0 before that (and
/// in unit tests).
#[inline]
pub fn current() -> &'static Dialect {
    CURRENT.get_or_init(|| Dialect::for_server(ServerInfo::debian_redis_7_0()))
}

/// Reads `redis_version` and `valkey_version` from `INFO server` text; the Lua rule comes
/// from its own probe.
pub fn parse_info(info: &str, lua_refuses_nested_long_brackets: bool) -> ServerInfo {
    let field = |name: &str| {
        info.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|r| r.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        })
    };
    let parse_version = |v: &str| {
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        (
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
        )
    };
    match field("valkey_version") {
        Some(v) => ServerInfo {
            family: Family::Valkey,
            version: parse_version(&v),
            lua_refuses_nested_long_brackets,
        },
        None => ServerInfo {
            family: Family::Redis,
            version: parse_version(&field("redis_version").unwrap_or_default()),
            lua_refuses_nested_long_brackets,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis(v: (u32, u32, u32)) -> Dialect {
        Dialect::for_server(ServerInfo {
            family: Family::Redis,
            version: v,
            lua_refuses_nested_long_brackets: true,
        })
    }

    fn valkey(v: (u32, u32, u32)) -> Dialect {
        Dialect::for_server(ServerInfo {
            family: Family::Valkey,
            version: v,
            lua_refuses_nested_long_brackets: true,
        })
    }

    #[test]
    fn the_server_is_read_from_info() {
        let info = "# Server\r\nredis_version:8.0.2\r\nredis_git_sha1:0\r\n";
        assert_eq!(
            parse_info(info, true),
            ServerInfo {
                family: Family::Redis,
                version: (8, 0, 2),
                lua_refuses_nested_long_brackets: true
            }
        );
        let info =
            "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.1.1\r\n";
        assert_eq!(parse_info(info, true).family, Family::Valkey);
        assert_eq!(parse_info(info, true).version, (8, 1, 1));
    }

    #[test]
    fn the_measured_lua_rule_is_followed() {
        assert!(!Dialect::for_server(ServerInfo::debian_redis_7_0()).refuse_nested_long_brackets);
        assert!(redis((8, 0, 2)).refuse_nested_long_brackets);
    }

    #[test]
    fn rules_follow_versions() {
        let (r70, r72, r725, r74, r80, v81) = (
            redis((7, 0, 15)),
            redis((7, 2, 0)),
            redis((7, 2, 5)),
            redis((7, 4, 0)),
            redis((8, 0, 2)),
            valkey((8, 1, 1)),
        );
        assert_eq!(
            r70.texts.set_repl_arity,
            "redis.set_repl() requires two arguments."
        );
        assert_eq!(
            r72.texts.set_repl_arity,
            "redis.set_repl() requires one argument."
        );
        assert_eq!(
            v81.texts.set_repl_arity,
            "server.set_repl() requires one argument."
        );
        assert_eq!(r72.acl_refusals, AclRefusals::Named);
        assert_eq!(r70.acl_refusals, AclRefusals::Legacy);
        assert_eq!(r72.number_arguments, NumberArguments::Precise);
        assert_eq!(r725.number_arguments, NumberArguments::IntegerOrShortest);
        assert!(!r72.os_clock && r74.os_clock && v81.os_clock);
        assert_eq!(r72.texts.invalid_log_level, "Invalid debug level.");
        assert_eq!(r74.texts.invalid_log_level, "Invalid log level.");
        assert_eq!(r74.blocking_stream_reads, BlockingStreamReads::Refused);
        assert_eq!(r80.blocking_stream_reads, BlockingStreamReads::NonBlocking);
        assert_eq!(v81.blocking_stream_reads, BlockingStreamReads::NonBlocking);
        assert_eq!(
            r80.texts.unknown_command,
            "Unknown Redis command called from script"
        );
        assert_eq!(
            v81.texts.unknown_command,
            "Unknown command called from script"
        );
        assert_eq!(v81.texts.noscript, "NOSCRIPT No matching script.");
        assert!(v81.valkey_api && v81.late_function_name_checks && !r80.valkey_api);
        assert!(v81.function_engine_c_strings && !r80.function_engine_c_strings);
        assert!(v81.split_args_drops_byte_ff && !r80.split_args_drops_byte_ff);
        assert_eq!(v81.server_name(false), "Valkey");
        assert_eq!(v81.server_name(true), "Redis");
        assert_eq!(r80.server_name(false), "Redis");
    }
}
