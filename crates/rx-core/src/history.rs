//! Library history: the last few versions of every library, newest first, with the code of
//! each, so a deploy can be inspected and rolled back. Also the conditions of a
//! compare-and-swap load (`IFVERSION`/`IFDIGEST`). Pure.
//!
//! An entry is added whenever a library's catalog entry changes on this node: a local
//! load, replace, delete, rollback or restore, or the same change arriving from a master,
//! the AOF or another cluster node (which carries the action and time of the node that
//! made it). Deleted libraries keep their history; `RX.FLUSH` adds a delete entry to each.

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use crate::cluster::meta::{hex, Digest, Entry, DIGEST_LEN, TOMBSTONE};

/// What made a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// A library that did not exist was loaded.
    Load,
    /// A library that existed was loaded again (`REPLACE`, `IFVERSION`, `IFDIGEST`).
    Replace,
    Delete,
    Rollback,
    /// `RX.RESTORE` or `RX.IMPORT`.
    Restore,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Load => "load",
            Action::Replace => "replace",
            Action::Delete => "delete",
            Action::Rollback => "rollback",
            Action::Restore => "restore",
        }
    }

    /// The byte that stands for it in the RDB and on the wire.
    pub fn code(self) -> u8 {
        match self {
            Action::Load => 1,
            Action::Replace => 2,
            Action::Delete => 3,
            Action::Rollback => 4,
            Action::Restore => 5,
        }
    }

    pub fn from_code(code: u8) -> Option<Action> {
        Some(match code {
            1 => Action::Load,
            2 => Action::Replace,
            3 => Action::Delete,
            4 => Action::Rollback,
            5 => Action::Restore,
            _ => return None,
        })
    }
}

/// Who made a change and when: kept with the change wherever it travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub action: Action,
    /// Unix time in milliseconds on the node that made the change.
    pub time_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub version: u64,
    pub digest: Digest,
    pub origin: Origin,
    /// The library's code at this version; empty for a deletion.
    pub code: Rc<[u8]>,
}

impl HistoryEntry {
    pub fn is_deletion(&self) -> bool {
        self.digest == TOMBSTONE
    }
}

/// The default number of entries kept per library (`rx.history-depth`).
pub const DEFAULT_DEPTH: usize = 10;
/// The most `rx.history-depth` may be.
pub const MAX_DEPTH: usize = 1000;

/// Every library's last `depth` entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    depth: usize,
    libraries: BTreeMap<String, VecDeque<HistoryEntry>>,
}

impl History {
    pub fn new(depth: usize) -> History {
        History {
            depth,
            libraries: BTreeMap::new(),
        }
    }

    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Changes how many entries each library keeps, dropping the oldest beyond it (all of
    /// them at 0: history off).
    pub fn set_depth(&mut self, depth: usize) {
        self.depth = depth;
        self.libraries.retain(|_, entries| {
            entries.truncate(depth);
            !entries.is_empty()
        });
    }

    /// Adds the newest entry of `name`. An entry for a version already recorded (the same
    /// change arriving twice) is ignored.
    pub fn record(&mut self, name: &str, entry: Entry, origin: Origin, code: &[u8]) {
        if self.depth == 0 {
            return;
        }
        let entries = self.libraries.entry(name.to_string()).or_default();
        if entries
            .iter()
            .any(|e| e.version == entry.version && e.digest == entry.digest)
        {
            return;
        }
        entries.push_front(HistoryEntry {
            version: entry.version,
            digest: entry.digest,
            origin,
            code: if entry.is_tombstone() {
                Rc::from(&[][..])
            } else {
                Rc::from(code)
            },
        });
        entries.truncate(self.depth);
    }

    /// The entries of `name`, newest first.
    pub fn entries(&self, name: &str) -> impl Iterator<Item = &HistoryEntry> {
        self.libraries.get(name).into_iter().flatten()
    }

    pub fn clear(&mut self) {
        self.libraries.clear();
    }

    /// Replaces the entries of `name` with `entries` (newest first), as a dataset carried
    /// them, keeping at most `depth`.
    pub fn set_entries(&mut self, name: &str, mut entries: Vec<HistoryEntry>) {
        entries.truncate(self.depth);
        if entries.is_empty() {
            self.libraries.remove(name);
        } else {
            self.libraries.insert(name.to_string(), entries.into());
        }
    }

    /// Every library with history, in name order.
    pub fn libraries(&self) -> impl Iterator<Item = (&str, &VecDeque<HistoryEntry>)> {
        self.libraries.iter().map(|(n, e)| (n.as_str(), e))
    }

    /// How many entries there are, and the bytes of code they hold.
    pub fn size(&self) -> (usize, usize) {
        self.libraries
            .values()
            .flatten()
            .fold((0, 0), |(n, b), e| (n + 1, b + e.code.len()))
    }

    /// The code `RX.ROLLBACK` installs: the newest entry older than the current one (the
    /// newest) that holds code, or the entry of version `to`.
    pub fn rollback_target(&self, name: &str, to: Option<u64>) -> Result<&HistoryEntry, String> {
        let entries = self
            .libraries
            .get(name)
            .filter(|e| !e.is_empty())
            .ok_or_else(|| format!("library '{name}' has no history"))?;
        match to {
            Some(v) => {
                let e = entries.iter().find(|e| e.version == v).ok_or_else(|| {
                    format!(
                        "library '{name}' has no version {v} in its history (it keeps versions {})",
                        kept_versions(entries)
                    )
                })?;
                if e.is_deletion() {
                    return Err(format!(
                        "version {v} of library '{name}' is a deletion: there is no code to install"
                    ));
                }
                Ok(e)
            }
            None => entries
                .iter()
                .skip(1)
                .find(|e| !e.is_deletion())
                .ok_or_else(|| {
                    format!("library '{name}' has no earlier version with code to roll back to")
                }),
        }
    }
}

fn kept_versions(entries: &VecDeque<HistoryEntry>) -> String {
    let mut v: Vec<String> = entries.iter().map(|e| e.version.to_string()).collect();
    v.reverse();
    v.join(", ")
}

/// The condition of a compare-and-swap load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadCondition {
    /// The library's current version must be this one (0: never loaded).
    Version(u64),
    /// Its current digest must be this one (all zeros: it does not exist).
    Digest(Digest),
}

impl LoadCondition {
    /// Parses `IFDIGEST`'s argument: 40 hexadecimal digits.
    pub fn digest(text: &[u8]) -> Option<LoadCondition> {
        if text.len() != 2 * DIGEST_LEN {
            return None;
        }
        let mut d = [0u8; DIGEST_LEN];
        for (i, pair) in text.chunks(2).enumerate() {
            let s = std::str::from_utf8(pair).ok()?;
            d[i] = u8::from_str_radix(s, 16).ok()?;
        }
        Some(LoadCondition::Digest(d))
    }

    /// Whether a library whose catalog entry is `current` (None: never seen) meets it. A
    /// deleted library is at its deletion's version with the all-zero digest.
    pub fn holds(&self, current: Option<&Entry>) -> bool {
        let (version, digest) = current.map_or((0, TOMBSTONE), |e| (e.version, e.digest));
        match self {
            LoadCondition::Version(v) => *v == version,
            LoadCondition::Digest(d) => *d == digest,
        }
    }
}

/// The text after `-CONFLICT ` when a condition does not hold.
pub fn conflict_message(name: &str, current: Option<&Entry>) -> String {
    let (version, digest) = current.map_or((0, TOMBSTONE), |e| (e.version, e.digest));
    format!(
        "library '{name}' is at version {version} digest {}",
        hex(&digest)
    )
}

// ---------------------------------------------------------------------------
// The RDB section: every library's entries, in one byte string.
//
// count: u32 | count x (name len: u16, name, n: u16, n x (version: u64, digest: 20 bytes,
// action: u8, time_ms: u64, code len: u32, code)); integers little-endian.

pub fn encode(history: &History) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(history.libraries.len() as u32).to_le_bytes());
    for (name, entries) in &history.libraries {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        for e in entries {
            out.extend_from_slice(&e.version.to_le_bytes());
            out.extend_from_slice(&e.digest);
            out.push(e.origin.action.code());
            out.extend_from_slice(&e.origin.time_ms.to_le_bytes());
            out.extend_from_slice(&(e.code.len() as u32).to_le_bytes());
            out.extend_from_slice(&e.code);
        }
    }
    out
}

/// Every library's entries from [`encode`]'s bytes; an error for anything malformed.
pub fn decode(b: &[u8]) -> Result<Vec<(String, Vec<HistoryEntry>)>, String> {
    let bad = || "malformed library history".to_string();
    let mut pos = 0usize;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let s = b
            .get(pos..pos.checked_add(n).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        pos += n;
        Ok(s)
    };
    let le = |s: &[u8]| s.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64);
    let count = le(take(4)?) as usize;
    let mut out = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let len = le(take(2)?) as usize;
        let name = String::from_utf8(take(len)?.to_vec()).map_err(|_| bad())?;
        let n = le(take(2)?) as usize;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let version = le(take(8)?);
            let digest: Digest = take(DIGEST_LEN)?.try_into().map_err(|_| bad())?;
            let action = Action::from_code(take(1)?[0]).ok_or_else(bad)?;
            let time_ms = le(take(8)?);
            let len = le(take(4)?) as usize;
            let code = Rc::from(take(len)?);
            entries.push(HistoryEntry {
                version,
                digest,
                origin: Origin { action, time_ms },
                code,
            });
        }
        out.push((name, entries));
    }
    if pos != b.len() {
        return Err(bad());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(action: Action) -> Origin {
        Origin {
            action,
            time_ms: 1_700_000_000_000,
        }
    }

    fn live(h: &mut History, v: u64, code: &str, action: Action) {
        h.record(
            "lib",
            Entry::live(v, code.as_bytes()),
            origin(action),
            code.as_bytes(),
        );
    }

    fn versions(h: &History) -> Vec<u64> {
        h.entries("lib").map(|e| e.version).collect()
    }

    #[test]
    fn keeps_the_newest_depth_entries_newest_first() {
        let mut h = History::new(3);
        for v in 1..=5 {
            live(&mut h, v, &format!("code {v}"), Action::Replace);
        }
        assert_eq!(versions(&h), vec![5, 4, 3]);
        assert_eq!(&*h.entries("lib").next().unwrap().code, b"code 5");
        h.set_depth(2);
        assert_eq!(versions(&h), vec![5, 4]);
        h.set_depth(0);
        assert_eq!(versions(&h), Vec::<u64>::new());
        live(&mut h, 6, "x", Action::Replace);
        assert_eq!(h.size(), (0, 0), "depth 0 records nothing");
    }

    #[test]
    fn the_same_change_twice_is_one_entry() {
        let mut h = History::new(10);
        live(&mut h, 1, "a", Action::Load);
        live(&mut h, 1, "a", Action::Load);
        assert_eq!(versions(&h), vec![1]);
    }

    #[test]
    fn deletions_keep_no_code_and_the_history_stays() {
        let mut h = History::new(10);
        live(&mut h, 1, "a", Action::Load);
        h.record(
            "lib",
            Entry::tombstone(2),
            origin(Action::Delete),
            b"ignored",
        );
        let newest = h.entries("lib").next().unwrap();
        assert!(newest.is_deletion());
        assert!(newest.code.is_empty());
        assert_eq!(h.size(), (2, 1));
    }

    #[test]
    fn rollback_goes_to_the_previous_entry_with_code() {
        let mut h = History::new(10);
        assert!(h
            .rollback_target("lib", None)
            .unwrap_err()
            .contains("no history"));
        live(&mut h, 1, "a", Action::Load);
        assert!(h
            .rollback_target("lib", None)
            .unwrap_err()
            .contains("no earlier version"));
        live(&mut h, 2, "b", Action::Replace);
        assert_eq!(&*h.rollback_target("lib", None).unwrap().code, b"a");
        // A deleted library rolls back to what it was before the deletion.
        h.record("lib", Entry::tombstone(3), origin(Action::Delete), b"");
        assert_eq!(&*h.rollback_target("lib", None).unwrap().code, b"b");
        // Loaded again after the deletion: the deletion is skipped.
        live(&mut h, 4, "c", Action::Load);
        assert_eq!(&*h.rollback_target("lib", None).unwrap().code, b"b");
        assert_eq!(&*h.rollback_target("lib", Some(1)).unwrap().code, b"a");
        assert!(h
            .rollback_target("lib", Some(3))
            .unwrap_err()
            .contains("is a deletion"));
        let e = h.rollback_target("lib", Some(9)).unwrap_err();
        assert!(
            e.contains("no version 9") && e.contains("1, 2, 3, 4"),
            "{e}"
        );
    }

    #[test]
    fn conditions() {
        let e = Entry::live(3, b"code");
        assert!(LoadCondition::Version(3).holds(Some(&e)));
        assert!(!LoadCondition::Version(2).holds(Some(&e)));
        assert!(LoadCondition::Version(0).holds(None));
        let digest = LoadCondition::digest(hex(&e.digest).as_bytes()).unwrap();
        assert!(digest.holds(Some(&e)));
        let absent = LoadCondition::digest(&[b'0'; 40]).unwrap();
        assert!(absent.holds(None));
        assert!(absent.holds(Some(&Entry::tombstone(4))));
        assert!(!absent.holds(Some(&e)));
        assert_eq!(LoadCondition::digest(b"abc"), None);
        assert_eq!(LoadCondition::digest(&[b'g'; 40]), None);
        assert_eq!(LoadCondition::digest("é".repeat(20).as_bytes()), None);
        assert_eq!(
            conflict_message("lib", None),
            format!("library 'lib' is at version 0 digest {}", "0".repeat(40))
        );
    }

    #[test]
    fn encoding_round_trips_and_refuses_every_truncation() {
        let mut h = History::new(10);
        live(&mut h, 1, "a", Action::Load);
        live(&mut h, 2, "bb", Action::Rollback);
        h.record("other", Entry::tombstone(7), origin(Action::Delete), b"");
        let bytes = encode(&h);
        let mut back = History::new(10);
        for (name, entries) in decode(&bytes).unwrap() {
            back.set_entries(&name, entries);
        }
        assert_eq!(back, h);
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "truncated to {n}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
        assert_eq!(decode(&encode(&History::new(3))).unwrap(), vec![]);
    }
}
