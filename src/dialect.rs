//! Which server RX runs in, and everything that differs because of it: error texts, the
//! Lua environment, conversion rules. Chosen once when the module loads (from the server's
//! name, version and build), and read from one place, so that no other code checks
//! versions. Pure: the module glue detects the server, this file decides.
//!
//! Each server's native `FUNCTION`/`FCALL`/`EVAL` is the reference: every rule here was
//! measured against it (the differential corpora run on each server of the matrix).

use std::sync::OnceLock;

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
}

/// The rules RX follows on one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialect {
    pub server: ServerInfo,
    /// See `ServerInfo::lua_refuses_nested_long_brackets`.
    pub refuse_nested_long_brackets: bool,
}

impl Dialect {
    pub fn for_server(server: ServerInfo) -> Dialect {
        Dialect {
            refuse_nested_long_brackets: server.lua_refuses_nested_long_brackets,
            server,
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

    #[test]
    fn the_server_is_read_from_info() {
        let redis = "# Server\r\nredis_version:8.0.2\r\nredis_git_sha1:0\r\n";
        assert_eq!(
            parse_info(redis, true),
            ServerInfo {
                family: Family::Redis,
                version: (8, 0, 2),
                lua_refuses_nested_long_brackets: true
            }
        );
        let valkey =
            "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.1.1\r\n";
        assert_eq!(
            parse_info(valkey, true),
            ServerInfo {
                family: Family::Valkey,
                version: (8, 1, 1),
                lua_refuses_nested_long_brackets: true
            }
        );
    }

    #[test]
    fn the_measured_lua_rule_is_followed() {
        assert!(!Dialect::for_server(ServerInfo::debian_redis_7_0()).refuse_nested_long_brackets);
        let bundled = ServerInfo {
            lua_refuses_nested_long_brackets: true,
            ..ServerInfo::debian_redis_7_0()
        };
        assert!(Dialect::for_server(bundled).refuse_nested_long_brackets);
    }
}
