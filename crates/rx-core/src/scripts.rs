//! EVAL scripts: the shebang (`#!lua flags=...`) and the script cache. Pure.
//!
//! Scripts that arrived through `RX.EVAL` are evicted least-recently-used past a limit;
//! scripts loaded with `RX.SCRIPT LOAD` are never evicted.

use rustc_hash::FxHashMap as HashMap;
use std::rc::Rc;

use crate::flags::FunctionFlags;
use crate::header::split_args;

/// A script's flags: `None` for a script without a shebang, which runs in Redis's
/// compatibility mode (no checks before it starts; each command is checked as it runs).
pub type ScriptFlags = Option<FunctionFlags>;

/// Parses the shebang of an EVAL script, as the server does. The error is the message after
/// the `ERR ` code, bytes as written quoted as they are. `engine_by_name`: Valkey's rules
/// (`Dialect::engine_by_name`): the engine is named case-insensitively and checked after
/// the flags.
pub fn parse_shebang(body: &[u8], engine_by_name: bool) -> Result<ScriptFlags, Vec<u8>> {
    if !body.starts_with(b"#!") {
        return Ok(None);
    }
    // The shebang line must end with a newline.
    let end = body
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(b"Invalid script shebang".to_vec())?;
    let invalid = if engine_by_name {
        "Invalid engine in script shebang"
    } else {
        "Invalid script shebang"
    };
    let parts = split_args(&body[..end])
        .filter(|p| !p.is_empty())
        .ok_or(invalid.as_bytes().to_vec())?;
    if !engine_by_name && parts[0] != b"#!lua" {
        return Err([&b"Unexpected engine in script shebang: "[..], &parts[0]].concat());
    }
    let mut flags = FunctionFlags::empty();
    for part in &parts[1..] {
        match part.strip_prefix(b"flags=") {
            // Redis splits an empty list into no flags at all.
            Some(b"") => {}
            Some(list) => {
                for name in list.split(|&b| b == b',') {
                    let flag = FunctionFlags::from_name(name).ok_or_else(|| {
                        [&b"Unexpected flag in script shebang: "[..], name].concat()
                    })?;
                    flags.insert(flag);
                }
            }
            None => return Err([&b"Unknown lua shebang option: "[..], part].concat()),
        }
    }
    let engine = &parts[0][2..];
    if engine_by_name && !engine.eq_ignore_ascii_case(b"lua") {
        return Err([&b"Could not find scripting engine '"[..], engine, b"'"].concat());
    }
    Ok(Some(flags))
}

pub struct Script<F> {
    pub sha: String,
    pub flags: ScriptFlags,
    pub callable: F,
    pub stats: crate::stats::StatsCell,
}

struct Entry<F> {
    script: Rc<Script<F>>,
    /// Loaded with SCRIPT LOAD: never evicted.
    pinned: bool,
    last_used: u64,
}

pub struct ScriptCache<F> {
    entries: HashMap<String, Entry<F>>,
    clock: u64,
}

impl<F> Default for ScriptCache<F> {
    fn default() -> Self {
        ScriptCache {
            entries: HashMap::default(),
            clock: 0,
        }
    }
}

/// Longer names cannot be a cached script's SHA1 (40 characters).
const KEY_MAX: usize = 64;

/// `sha` lowercased into `buf`, without allocating (EVALSHA looks up on every call).
fn folded_key<'b>(sha: &[u8], buf: &'b mut [u8; KEY_MAX]) -> Option<&'b str> {
    let key = buf.get_mut(..sha.len())?;
    for (d, s) in key.iter_mut().zip(sha) {
        *d = s.to_ascii_lowercase();
    }
    std::str::from_utf8(key).ok()
}

impl<F> ScriptCache<F> {
    /// The script with this SHA1 (any case), marked as just used.
    pub fn get(&mut self, sha: &[u8]) -> Option<Rc<Script<F>>> {
        self.clock += 1;
        let clock = self.clock;
        let mut buf = [0u8; KEY_MAX];
        let e = self.entries.get_mut(folded_key(sha, &mut buf)?)?;
        e.last_used = clock;
        Some(Rc::clone(&e.script))
    }

    /// Marks a cached script as loaded with SCRIPT LOAD: never evicted from now on.
    pub fn pin(&mut self, sha: &[u8]) {
        let mut buf = [0u8; KEY_MAX];
        if let Some(e) = folded_key(sha, &mut buf).and_then(|k| self.entries.get_mut(k)) {
            e.pinned = true;
        }
    }

    pub fn contains(&self, sha: &[u8]) -> bool {
        let mut buf = [0u8; KEY_MAX];
        folded_key(sha, &mut buf).is_some_and(|k| self.entries.contains_key(k))
    }

    /// Adds a script (or pins an existing one), then evicts the least recently used
    /// unpinned scripts beyond `limit`.
    pub fn insert(&mut self, script: Script<F>, pinned: bool, limit: usize) -> Rc<Script<F>> {
        self.clock += 1;
        let clock = self.clock;
        let sha = script.sha.clone();
        let e = self.entries.entry(sha.clone()).or_insert_with(|| Entry {
            script: Rc::new(script),
            pinned,
            last_used: clock,
        });
        e.pinned |= pinned;
        e.last_used = clock;
        let added = Rc::clone(&e.script);
        self.evict(limit, &sha);
        added
    }

    fn evict(&mut self, limit: usize, keep: &str) {
        let mut unpinned: Vec<(u64, String)> = self
            .entries
            .iter()
            .filter(|(k, e)| !e.pinned && k.as_str() != keep)
            .map(|(k, e)| (e.last_used, k.clone()))
            .collect();
        let unpinned_total =
            unpinned.len() + usize::from(self.entries.get(keep).is_some_and(|e| !e.pinned));
        if unpinned_total <= limit {
            return;
        }
        unpinned.sort();
        for (_, k) in unpinned.into_iter().take(unpinned_total - limit) {
            self.entries.remove(&k);
        }
    }

    pub fn flush(&mut self) {
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn scripts(&self) -> impl Iterator<Item = &Rc<Script<F>>> {
        self.entries.values().map(|e| &e.script)
    }
}

/// The SHA1 of `data` in lowercase hex: a script's name in the cache, and `redis.sha1hex`.
pub fn sha1_hex(data: &[u8]) -> String {
    let digest = <sha1::Sha1 as sha1::Digest>::digest(data);
    let mut s = String::with_capacity(40);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_shebang_redis(body: &[u8]) -> Result<ScriptFlags, String> {
        parse_shebang(body, false).map_err(|e| String::from_utf8(e).expect("UTF-8 in tests"))
    }

    #[test]
    fn valkey_finds_the_engine_by_name_after_the_flags() {
        assert!(parse_shebang(b"#!LUA\nreturn 1", true).unwrap().is_some());
        assert_eq!(
            parse_shebang(b"#!python\nreturn 1", true).unwrap_err(),
            b"Could not find scripting engine 'python'"
        );
        assert_eq!(
            parse_shebang(b"#!\nreturn 1", true).unwrap_err(),
            b"Could not find scripting engine ''"
        );
        assert_eq!(
            parse_shebang(b"#!js flags=nope\n", true).unwrap_err(),
            b"Unexpected flag in script shebang: nope"
        );
    }

    fn script(sha: &str) -> Script<u32> {
        Script {
            sha: sha.into(),
            flags: None,
            callable: 0,
            stats: Default::default(),
        }
    }

    #[test]
    fn shebangs_parse_like_redis() {
        assert_eq!(parse_shebang_redis(b"return 1").unwrap(), None);
        assert_eq!(
            parse_shebang_redis(b"#!lua\nreturn 1").unwrap(),
            Some(FunctionFlags::empty())
        );
        let f = parse_shebang_redis(b"#!lua flags=no-writes,allow-oom\nreturn 1")
            .unwrap()
            .unwrap();
        assert!(f.contains(FunctionFlags::NO_WRITES) && f.contains(FunctionFlags::ALLOW_OOM));
        assert_eq!(
            parse_shebang_redis(b"#!lua flags=\nx").unwrap(),
            Some(FunctionFlags::empty())
        );
        assert_eq!(
            parse_shebang_redis(b"#!js\n").unwrap_err(),
            "Unexpected engine in script shebang: #!js"
        );
        assert_eq!(
            parse_shebang_redis(b"#!lua flags=bad\n").unwrap_err(),
            "Unexpected flag in script shebang: bad"
        );
        assert_eq!(
            parse_shebang_redis(b"#!lua foo=bar\n").unwrap_err(),
            "Unknown lua shebang option: foo=bar"
        );
        assert_eq!(
            parse_shebang_redis(b"#!LUA\n").unwrap_err(),
            "Unexpected engine in script shebang: #!LUA"
        );
        assert_eq!(
            parse_shebang_redis(b"#!lua").unwrap_err(),
            "Invalid script shebang"
        );
    }

    #[test]
    fn a_pinned_eval_script_is_never_evicted() {
        let mut c = ScriptCache::default();
        c.insert(script("a"), false, 1);
        c.pin(b"A");
        c.insert(script("b"), false, 1);
        c.insert(script("c"), false, 1);
        assert!(c.contains(b"a") && c.contains(b"c") && !c.contains(b"b"));
        c.pin(b"missing"); // nothing to pin: no effect
        assert!(!c.contains(b"missing"));
    }

    #[test]
    fn eval_scripts_are_evicted_lru_loaded_ones_never() {
        let mut c = ScriptCache::default();
        c.insert(script("pinned"), true, 2);
        c.insert(script("a"), false, 2);
        c.insert(script("b"), false, 2);
        c.get(b"a"); // b is now the least recently used
        c.insert(script("c"), false, 2);
        assert!(c.contains(b"pinned") && c.contains(b"a") && c.contains(b"c") && !c.contains(b"b"));
        // A limit of zero keeps only the script just added and the pinned ones.
        c.insert(script("d"), false, 0);
        assert!(c.contains(b"pinned") && c.contains(b"d") && !c.contains(b"a"));
        // Loading an evictable script pins it.
        c.insert(script("d"), true, 0);
        c.insert(script("e"), false, 0);
        assert!(c.contains(b"d") && c.contains(b"e"));
        assert!(c.get(b"PINNED").is_some());
        c.flush();
        assert!(c.is_empty());
    }
}
