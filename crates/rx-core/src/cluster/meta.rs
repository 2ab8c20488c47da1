//! Library versions, digests and tombstones, the ordering rule between two versions of
//! one library, the whole-state digest and the "what must I pull" decision. Pure.
//!
//! Every library name RX has ever seen has an [`Entry`]: the version of its latest change
//! and the SHA-1 digest of its source, or [`TOMBSTONE`] when that change deleted it.
//!
//! **The rule.** Between two entries of one name, the higher `version` wins; at equal
//! versions the lexicographically higher digest wins. A tombstone's digest is all zeros, so
//! at an equal version a live library beats its deletion. Every node applies the same rule
//! to the same pair, so concurrent changes end identical everywhere.

use std::collections::BTreeMap;

use sha1::{Digest as _, Sha1};

pub const DIGEST_LEN: usize = 20;

/// A library source's SHA-1 (or [`TOMBSTONE`]).
pub type Digest = [u8; DIGEST_LEN];

/// The digest of a deleted library.
pub const TOMBSTONE: Digest = [0; DIGEST_LEN];

/// The version of the bundled libraries: every node agrees on them without traffic, and
/// any user action (version 1 or more) beats them.
pub const BUNDLED_VERSION: u64 = 0;

/// The version given to a library read from an RDB written before versions existed
/// (aux encoding 1): as if it had been loaded once.
pub const LEGACY_VERSION: u64 = 1;

/// The highest version there is. A payload or a peer's entry above it is refused, and a
/// library at it can no longer change (its next version would not fit): version arithmetic
/// never wraps, which would make a newer change lose to an older one and bring deleted or
/// replaced code back. Counting up by one per change, no real library gets near it; it
/// also keeps every version a RESP integer.
pub const MAX_VERSION: u64 = i64::MAX as u64;

pub fn digest_of(code: &[u8]) -> Digest {
    Sha1::digest(code).into()
}

pub fn hex(d: &Digest) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry {
    pub version: u64,
    pub digest: Digest,
}

impl Entry {
    pub fn live(version: u64, code: &[u8]) -> Entry {
        Entry {
            version,
            digest: digest_of(code),
        }
    }

    pub fn tombstone(version: u64) -> Entry {
        Entry {
            version,
            digest: TOMBSTONE,
        }
    }

    pub fn is_tombstone(&self) -> bool {
        self.digest == TOMBSTONE
    }

    /// Whether `self` wins over `other` under the rule (strictly newer).
    pub fn beats(&self, other: &Entry) -> bool {
        (self.version, self.digest) > (other.version, other.digest)
    }
}

/// The entries of every library name this node knows, tombstones included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    entries: BTreeMap<String, Entry>,
}

impl Catalog {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    /// The version a local change of `name` takes: one more than any version seen for it,
    /// tombstones included.
    /// `None` once the name reached [`MAX_VERSION`].
    pub fn next_version(&self, name: &str) -> Option<u64> {
        match self.entries.get(name) {
            None => Some(1),
            Some(e) if e.version >= MAX_VERSION => None,
            Some(e) => Some(e.version + 1),
        }
    }

    pub fn set(&mut self, name: &str, entry: Entry) {
        self.entries.insert(name.to_string(), entry);
    }

    /// Whether `candidate` should replace what this node has for `name`.
    pub fn accepts(&self, name: &str, candidate: &Entry) -> bool {
        self.entries.get(name).is_none_or(|e| candidate.beats(e))
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(n, e)| (n.as_str(), e))
    }

    pub fn live_names(&self) -> Vec<String> {
        self.iter()
            .filter(|(_, e)| !e.is_tombstone())
            .map(|(n, _)| n.to_string())
            .collect()
    }

    /// A digest of the whole catalog: SHA-1 over the sorted (name, version, digest). Two
    /// nodes with the same digest hold the same libraries at the same versions.
    pub fn state_digest(&self) -> Digest {
        let mut h = Sha1::new();
        for (name, e) in &self.entries {
            h.update((name.len() as u32).to_le_bytes());
            h.update(name.as_bytes());
            h.update(e.version.to_le_bytes());
            h.update(e.digest);
        }
        h.finalize().into()
    }

    /// Given a peer's manifest, the names for which the peer holds a newer entry: what this
    /// node should pull from it.
    pub fn to_pull<'a>(&self, peer: &'a [(String, Entry)]) -> Vec<&'a (String, Entry)> {
        peer.iter().filter(|(n, e)| self.accepts(n, e)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(b: u8) -> Digest {
        [b; DIGEST_LEN]
    }

    #[test]
    fn higher_version_wins_then_higher_digest() {
        let a = Entry {
            version: 2,
            digest: d(1),
        };
        let b = Entry {
            version: 1,
            digest: d(9),
        };
        assert!(a.beats(&b) && !b.beats(&a));
        let c = Entry {
            version: 2,
            digest: d(2),
        };
        assert!(c.beats(&a) && !a.beats(&c));
        // Nothing beats itself: applying the same entry twice is a no-op.
        assert!(!a.beats(&a));
    }

    #[test]
    fn live_beats_tombstone_at_equal_version_only() {
        let live = Entry::live(3, b"#!lua name=x\n");
        assert!(live.beats(&Entry::tombstone(3)));
        assert!(Entry::tombstone(4).beats(&live));
        assert!(!Entry::tombstone(3).beats(&live));
        assert!(Entry::tombstone(3).is_tombstone() && !live.is_tombstone());
    }

    #[test]
    fn next_version_stops_at_the_ceiling_instead_of_wrapping() {
        let mut c = Catalog::new();
        c.set("a", Entry::live(MAX_VERSION - 1, b"x"));
        assert_eq!(c.next_version("a"), Some(MAX_VERSION));
        c.set("a", Entry::tombstone(MAX_VERSION));
        assert_eq!(c.next_version("a"), None);
        // An RDB written before the ceiling existed may hold more.
        c.set("a", Entry::tombstone(u64::MAX));
        assert_eq!(c.next_version("a"), None);
    }

    #[test]
    fn next_version_counts_tombstones_and_bundled() {
        let mut c = Catalog::new();
        assert_eq!(c.next_version("a"), Some(1));
        c.set("a", Entry::live(BUNDLED_VERSION, b"x"));
        assert_eq!(c.next_version("a"), Some(1));
        c.set("a", Entry::tombstone(5));
        assert_eq!(c.next_version("a"), Some(6));
        assert!(c.live_names().is_empty());
    }

    #[test]
    fn state_digest_depends_on_every_field_not_on_insertion_order() {
        let mut a = Catalog::new();
        a.set("x", Entry::live(1, b"1"));
        a.set("y", Entry::tombstone(2));
        let mut b = Catalog::new();
        b.set("y", Entry::tombstone(2));
        b.set("x", Entry::live(1, b"1"));
        assert_eq!(a.state_digest(), b.state_digest());
        b.set("y", Entry::tombstone(3));
        assert_ne!(a.state_digest(), b.state_digest());
        b.set("y", Entry::tombstone(2));
        b.set("x", Entry::live(1, b"2"));
        assert_ne!(a.state_digest(), b.state_digest());
        // Names are length-prefixed: ("ab","c") and ("a","bc") differ.
        let mut p = Catalog::new();
        p.set("ab", Entry::tombstone(1));
        let mut q = Catalog::new();
        q.set("a", Entry::tombstone(1));
        assert_ne!(p.state_digest(), q.state_digest());
        assert_ne!(Catalog::new().state_digest(), p.state_digest());
    }

    #[test]
    fn to_pull_takes_only_what_the_peer_has_newer() {
        let mut mine = Catalog::new();
        mine.set("same", Entry::live(2, b"s"));
        mine.set("older_here", Entry::live(1, b"o"));
        mine.set("newer_here", Entry::live(5, b"n"));
        mine.set("deleted_there", Entry::live(1, b"d"));
        let peer = vec![
            ("same".to_string(), Entry::live(2, b"s")),
            ("older_here".to_string(), Entry::live(2, b"o2")),
            ("newer_here".to_string(), Entry::live(4, b"n0")),
            ("deleted_there".to_string(), Entry::tombstone(2)),
            ("only_there".to_string(), Entry::live(1, b"t")),
        ];
        let names: Vec<&str> = mine
            .to_pull(&peer)
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(names, ["older_here", "deleted_there", "only_there"]);
    }

    #[test]
    fn concurrent_changes_resolve_the_same_everywhere() {
        // Two nodes load different code at the same version; each applies the other's
        // entry only if it wins: both end with the same one, whatever the arrival order.
        let a = Entry::live(3, b"code A");
        let b = Entry::live(3, b"code B");
        let mut n1 = Catalog::new();
        n1.set("lib", a);
        let mut n2 = Catalog::new();
        n2.set("lib", b);
        if n1.accepts("lib", &b) {
            n1.set("lib", b);
        }
        if n2.accepts("lib", &a) {
            n2.set("lib", a);
        }
        assert_eq!(n1, n2);
        let winner = if a.digest > b.digest { a } else { b };
        assert_eq!(n1.get("lib"), Some(&winner));
    }
}
