//! What this node knows of its peers (last state digest heard, when), and the throttles
//! that keep anti-entropy from repeating work while a transfer is in flight. Pure: time is
//! passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::meta::{Digest, Entry};

/// How long a pull (or a manifest sent to one peer) is not repeated.
pub const RETRY_AFTER: Duration = Duration::from_millis(1500);
/// A peer not heard from for this long counts as out of sync.
pub const SILENT_AFTER: Duration = Duration::from_millis(3000);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerState {
    pub digest: Digest,
    pub count: u32,
    pub heard: Instant,
}

#[derive(Default)]
pub struct Peers {
    peers: HashMap<String, PeerState>,
    /// (name, entry) pulled recently, and when.
    pulls: HashMap<(String, Entry), Instant>,
    /// Peer -> when our manifest was last sent to it.
    manifests: HashMap<String, Instant>,
    /// Entries that failed to apply here: never pulled again.
    failed: HashMap<(String, Entry), String>,
}

impl Peers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn heard(&mut self, node: &str, digest: Digest, count: u32, now: Instant) {
        self.peers.insert(
            node.to_string(),
            PeerState {
                digest,
                count,
                heard: now,
            },
        );
    }

    pub fn get(&self, node: &str) -> Option<&PeerState> {
        self.peers.get(node)
    }

    /// Whether a peer is known to hold `mine` and was heard from recently.
    pub fn in_sync(&self, node: &str, mine: &Digest, now: Instant) -> bool {
        self.peers
            .get(node)
            .is_some_and(|p| &p.digest == mine && now.duration_since(p.heard) <= SILENT_AFTER)
    }

    /// Whether to send our manifest to `node` now (at most once per [`RETRY_AFTER`]).
    pub fn should_send_manifest(&mut self, node: &str, now: Instant) -> bool {
        match self.manifests.get(node) {
            Some(t) if now.duration_since(*t) < RETRY_AFTER => false,
            _ => {
                self.manifests.insert(node.to_string(), now);
                true
            }
        }
    }

    /// Filters a wanted list down to what is not already being pulled nor known to fail,
    /// and marks those as being pulled.
    pub fn start_pulls(&mut self, wanted: Vec<(String, Entry)>, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        for key in wanted {
            if self.failed.contains_key(&key) {
                continue;
            }
            match self.pulls.get(&key) {
                Some(t) if now.duration_since(*t) < RETRY_AFTER => {}
                _ => {
                    out.push(key.0.clone());
                    self.pulls.insert(key, now);
                }
            }
        }
        out
    }

    /// Records that an entry cannot be applied here; returns true the first time (log it).
    pub fn failed(&mut self, name: &str, entry: Entry, why: &str) -> bool {
        self.failed
            .insert((name.to_string(), entry), why.to_string())
            .is_none()
    }

    /// Forgets every failure: the libraries changed here, so what failed may fit now.
    pub fn forget_failures(&mut self) {
        self.failed.clear();
    }

    pub fn has_failed(&self, name: &str, entry: &Entry) -> bool {
        self.failed.contains_key(&(name.to_string(), *entry))
    }

    /// Forgets throttles that ran out, and peers that left the cluster.
    pub fn tidy(&mut self, now: Instant, members: &[String]) {
        self.pulls
            .retain(|_, t| now.duration_since(*t) < RETRY_AFTER * 4);
        self.manifests
            .retain(|_, t| now.duration_since(*t) < RETRY_AFTER * 4);
        if !members.is_empty() {
            self.peers.retain(|n, _| members.contains(n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulls_are_not_repeated_while_in_flight() {
        let mut p = Peers::new();
        let t0 = Instant::now();
        let want = vec![("a".to_string(), Entry::live(2, b"x"))];
        assert_eq!(p.start_pulls(want.clone(), t0), ["a"]);
        assert!(p.start_pulls(want.clone(), t0 + RETRY_AFTER / 2).is_empty());
        assert_eq!(p.start_pulls(want.clone(), t0 + RETRY_AFTER), ["a"]);
        // A newer entry of the same name is a new pull.
        let newer = vec![("a".to_string(), Entry::live(3, b"y"))];
        assert_eq!(p.start_pulls(newer, t0), ["a"]);
    }

    #[test]
    fn failed_entries_are_never_pulled_again_and_logged_once() {
        let mut p = Peers::new();
        let e = Entry::live(2, b"x");
        assert!(p.failed("a", e, "boom"));
        assert!(!p.failed("a", e, "boom"));
        assert!(p.has_failed("a", &e));
        let t = Instant::now() + RETRY_AFTER * 10;
        assert!(p.start_pulls(vec![("a".into(), e)], t).is_empty());
        p.forget_failures();
        assert!(!p.has_failed("a", &e));
        assert_eq!(p.start_pulls(vec![("a".into(), e)], t), ["a"]);
    }

    #[test]
    fn sync_needs_the_same_digest_heard_recently() {
        let mut p = Peers::new();
        let t0 = Instant::now();
        p.heard("n1", [1; 20], 1, t0);
        assert!(p.in_sync("n1", &[1; 20], t0));
        assert!(!p.in_sync("n1", &[2; 20], t0));
        assert!(!p.in_sync("n1", &[1; 20], t0 + SILENT_AFTER * 2));
        assert!(!p.in_sync("n2", &[1; 20], t0));
        p.tidy(t0, &["n2".to_string()]);
        assert!(p.get("n1").is_none());
    }

    #[test]
    fn manifests_are_throttled_per_peer() {
        let mut p = Peers::new();
        let t0 = Instant::now();
        assert!(p.should_send_manifest("a", t0));
        assert!(!p.should_send_manifest("a", t0));
        assert!(p.should_send_manifest("b", t0));
        assert!(p.should_send_manifest("a", t0 + RETRY_AFTER));
    }
}
