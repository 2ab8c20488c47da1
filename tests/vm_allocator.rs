//! Where the Lua VM's memory lives. On a server that exports jemalloc (Redis and Valkey
//! built from source), RX gives the VM an arena of its own, as the server's own Lua has:
//! never arena 0, the keyspace's, where VM blocks would keep slabs the active
//! defragmenter empties alive. Elsewhere (Debian's shared jemalloc) it keeps `malloc`.

mod common;

use common::Server;

/// Each arena's `total:` allocated bytes in `MEMORY MALLOC-STATS` text.
fn arena_totals(stats: &str) -> Vec<(usize, u64)> {
    let mut out = Vec::new();
    let mut arena = None;
    for line in stats.lines() {
        if let Some(rest) = line.strip_prefix("arenas[") {
            arena = rest.split(']').next().and_then(|n| n.parse::<usize>().ok());
        } else if let (Some(a), Some(rest)) = (arena, line.strip_prefix("total:")) {
            if let Some(bytes) = rest.split_whitespace().next().and_then(|b| b.parse().ok()) {
                out.push((a, bytes));
            }
            arena = None;
        }
    }
    out
}

/// Whether the server binary the tests run exports jemalloc's `je_` functions (their names
/// are in its dynamic symbol table).
fn server_exports_jemalloc() -> bool {
    let bin = common::redis_server_bin();
    let path = if bin.contains('/') {
        std::path::PathBuf::from(&bin)
    } else {
        std::env::var_os("PATH")
            .and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(&bin))
                    .find(|f| f.is_file())
            })
            .expect("the server binary on PATH")
    };
    let bytes = std::fs::read(&path).expect("the server binary");
    bytes
        .windows(b"je_mallctl\0".len())
        .any(|w| w == b"je_mallctl\0")
}

#[test]
fn the_vms_memory_is_in_an_arena_of_its_own() {
    if !server_exports_jemalloc() {
        // Debian's build: the C library's malloc, which its shared jemalloc serves.
        eprintln!("skipped: this server exports no je_ functions");
        return;
    }
    let s = Server::start();
    let mut c = s.conn();

    // 200,000 strings held while the script reads the allocator's statistics: several
    // megabytes, which must all be outside arena 0.
    let script = "local t = {} for i = 1, 200000 do t[i] = tostring(i) .. 'abcdefgh' end \
                  return {#t, redis.call('MEMORY', 'MALLOC-STATS')}";
    let reply = c.q(&["RX.EVAL", script, "0"]);
    let parts = reply.as_array().expect("an array");
    assert_eq!(parts[0].as_int(), Some(200_000));
    let stats = String::from_utf8_lossy(parts[1].as_bytes().expect("the statistics")).into_owned();
    let totals = arena_totals(&stats);
    let (biggest, bytes) = totals
        .iter()
        .copied()
        .max_by_key(|&(_, b)| b)
        .expect("arenas");
    assert!(
        bytes > 4_000_000,
        "the VM's blocks are in no arena: {totals:?}"
    );
    assert_ne!(
        biggest, 0,
        "the VM's blocks are in the keyspace's arena: {totals:?}"
    );
    let arena0 = totals.iter().find(|(a, _)| *a == 0).map_or(0, |&(_, b)| b);
    assert!(
        arena0 < 4_000_000,
        "arena 0 holds {arena0} bytes: {totals:?}"
    );
    assert!(
        s.log()
            .contains("RX: the Lua VM allocates from an arena of the server's jemalloc"),
        "{}",
        s.log()
    );
    assert_eq!(c.q(&["PING"]).as_str(), Some("PONG"));
}
