//! The messages RX nodes exchange over the cluster bus, their byte layout, and the chunking
//! that carries big ones. Pure: decoding any bytes never panics, it returns an error.
//!
//! **Frames.** Every bus message is one frame (integers little-endian):
//! `"RX"` | wire version: u8 | transfer id: u64 | index: u32 | count: u32 | total length: u32
//! | SHA-1 of the whole message: 20 bytes | data.
//! A message longer than [`CHUNK_DATA`] is cut into `count` frames; the receiver keeps them
//! by (sender, transfer id), in any order, ignores duplicates, and checks the SHA-1 of the
//! reassembled message. Incomplete transfers are dropped after [`TRANSFER_TTL`].
//!
//! **Messages** (one kind byte, then the body):
//! - `STATE` (1): state digest (20) | entry count: u32. Broadcast periodically.
//! - `MANIFEST` (2): count: u32 | count x entry header. Sent to a peer whose state differs.
//! - `PULL` (3): count: u32 | count x (name). Asks a peer for entries.
//! - `ENTRIES` (4): count: u32 | count x (entry header | code length: u32 | code). Carries
//!   changes; a tombstone has no code. Also the body of `RX.APPLY` (see [`encode_entries`]).
//!
//! An entry header is `name length: u16 | name | version: u64 | digest: 20`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sha1::{Digest as _, Sha1};

use super::meta::{Digest, Entry, DIGEST_LEN};
use crate::history::{Action, Origin};

const MAGIC: &[u8; 2] = b"RX";
/// 2: each change carries its origin (action and time, for the library history). Version 1
/// payloads (AOF files written before) are still read.
pub const WIRE_VERSION: u8 = 2;
const FRAME_HEADER: usize = 2 + 1 + 8 + 4 + 4 + 4 + DIGEST_LEN;
/// Data bytes per frame. Redis 7.0's bus has no hard message limit, but every frame is
/// buffered whole on both links; 48 KiB keeps each one small next to the bus's own traffic.
pub const CHUNK_DATA: usize = 48 * 1024;
/// The largest message accepted: bounds what a peer can make this node buffer.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Everything buffered for incomplete transfers, all senders together.
pub const MAX_BUFFERED: usize = 128 * 1024 * 1024;
/// An incomplete transfer older than this is dropped.
pub const TRANSFER_TTL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    Foreign,
    NewerVersion(u8),
    Malformed(&'static str),
    Checksum,
    TooBig,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Foreign => write!(f, "not an RX message"),
            WireError::NewerVersion(v) => write!(f, "wire version {v} is newer than this RX"),
            WireError::Malformed(what) => write!(f, "malformed message ({what})"),
            WireError::Checksum => write!(f, "checksum mismatch"),
            WireError::TooBig => write!(f, "message too big"),
        }
    }
}

/// One library change: the entry, and the source unless it is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub name: String,
    pub entry: Entry,
    pub code: Vec<u8>,
    /// What made the change and when, as the node that made it recorded it; `None` when
    /// it came in a payload older than origins (the history then says what it can).
    pub origin: Option<Origin>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    State { digest: Digest, count: u32 },
    Manifest(Vec<(String, Entry)>),
    Pull(Vec<String>),
    Entries(Vec<Change>),
}

const KIND_STATE: u8 = 1;
const KIND_MANIFEST: u8 = 2;
const KIND_PULL: u8 = 3;
const KIND_ENTRIES: u8 = 4;
/// Entries with their origins (what RX sends since wire version 2).
const KIND_ENTRIES_WITH_ORIGINS: u8 = 5;

// ---------------------------------------------------------------------------
// Encoding

fn put_name(out: &mut Vec<u8>, name: &str) {
    let n = &name.as_bytes()[..name.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(n.len() as u16).to_le_bytes());
    out.extend_from_slice(n);
}

fn put_entry(out: &mut Vec<u8>, name: &str, e: &Entry) {
    put_name(out, name);
    out.extend_from_slice(&e.version.to_le_bytes());
    out.extend_from_slice(&e.digest);
}

pub fn encode_entries_body(out: &mut Vec<u8>, changes: &[Change]) {
    out.extend_from_slice(&(changes.len() as u32).to_le_bytes());
    for c in changes {
        put_entry(out, &c.name, &c.entry);
        out.extend_from_slice(&(c.code.len() as u32).to_le_bytes());
        out.extend_from_slice(&c.code);
        // Action 0: unknown.
        out.push(c.origin.map_or(0, |o| o.action.code()));
        out.extend_from_slice(&c.origin.map_or(0, |o| o.time_ms).to_le_bytes());
    }
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Message::State { digest, count } => {
                out.push(KIND_STATE);
                out.extend_from_slice(digest);
                out.extend_from_slice(&count.to_le_bytes());
            }
            Message::Manifest(entries) => {
                out.push(KIND_MANIFEST);
                out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
                for (n, e) in entries {
                    put_entry(&mut out, n, e);
                }
            }
            Message::Pull(names) => {
                out.push(KIND_PULL);
                out.extend_from_slice(&(names.len() as u32).to_le_bytes());
                for n in names {
                    put_name(&mut out, n);
                }
            }
            Message::Entries(changes) => {
                out.push(KIND_ENTRIES_WITH_ORIGINS);
                encode_entries_body(&mut out, changes);
            }
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<Message, WireError> {
        let mut r = Reader {
            b,
            pos: 0,
            origins: false,
        };
        let msg = match r.u8()? {
            KIND_STATE => Message::State {
                digest: r.digest()?,
                count: r.u32()?,
            },
            KIND_MANIFEST => {
                let n = r.count()?;
                let mut v = Vec::with_capacity(n.min(4096));
                for _ in 0..n {
                    v.push(r.entry()?);
                }
                Message::Manifest(v)
            }
            KIND_PULL => {
                let n = r.count()?;
                let mut v = Vec::with_capacity(n.min(4096));
                for _ in 0..n {
                    v.push(r.name()?);
                }
                Message::Pull(v)
            }
            KIND_ENTRIES => Message::Entries(r.changes()?),
            KIND_ENTRIES_WITH_ORIGINS => {
                r.origins = true;
                Message::Entries(r.changes()?)
            }
            _ => return Err(WireError::Malformed("unknown message kind")),
        };
        if r.pos != b.len() {
            return Err(WireError::Malformed("trailing bytes"));
        }
        Ok(msg)
    }
}

/// The `RX.APPLY` argument: a versioned, checksummed list of changes, as replicated to
/// replicas and written to the AOF. `"RXAPPLY"` | wire version | entries body | SHA-1.
pub fn encode_entries(changes: &[Change]) -> Vec<u8> {
    let mut out = b"RXAPPLY".to_vec();
    out.push(WIRE_VERSION);
    encode_entries_body(&mut out, changes);
    let sum = Sha1::digest(&out);
    out.extend_from_slice(&sum);
    out
}

pub fn decode_entries(b: &[u8]) -> Result<Vec<Change>, WireError> {
    if b.len() < 8 || &b[..7] != b"RXAPPLY" {
        return Err(WireError::Foreign);
    }
    if b[7] > WIRE_VERSION {
        return Err(WireError::NewerVersion(b[7]));
    }
    if b.len() < 8 + DIGEST_LEN {
        return Err(WireError::Malformed("truncated"));
    }
    let (body, sum) = b.split_at(b.len() - DIGEST_LEN);
    if Sha1::digest(body).as_slice() != sum {
        return Err(WireError::Checksum);
    }
    let mut r = Reader {
        b: body,
        pos: 8,
        origins: b[7] >= 2,
    };
    let changes = r.changes()?;
    if r.pos != body.len() {
        return Err(WireError::Malformed("trailing bytes"));
    }
    Ok(changes)
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    /// Whether each change ends with its origin.
    origins: bool,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(WireError::Malformed("length"))?;
        let s = self
            .b
            .get(self.pos..end)
            .ok_or(WireError::Malformed("truncated"))?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    /// An element count, sanity-checked against the bytes left (each element takes at
    /// least two bytes), so garbage cannot make us reserve huge vectors.
    fn count(&mut self) -> Result<usize, WireError> {
        let n = self.u32()? as usize;
        if n > (self.b.len() - self.pos) / 2 {
            return Err(WireError::Malformed("count"));
        }
        Ok(n)
    }
    fn digest(&mut self) -> Result<Digest, WireError> {
        let mut d = [0u8; DIGEST_LEN];
        d.copy_from_slice(self.take(DIGEST_LEN)?);
        Ok(d)
    }
    fn name(&mut self) -> Result<String, WireError> {
        let n = self.u16()? as usize;
        let s = self.take(n)?;
        let name = std::str::from_utf8(s).map_err(|_| WireError::Malformed("name"))?;
        if name.is_empty() {
            return Err(WireError::Malformed("empty name"));
        }
        Ok(name.to_string())
    }
    fn entry(&mut self) -> Result<(String, Entry), WireError> {
        let name = self.name()?;
        let version = self.u64()?;
        if version > super::meta::MAX_VERSION {
            return Err(WireError::Malformed("version out of range"));
        }
        let digest = self.digest()?;
        Ok((name, Entry { version, digest }))
    }
    fn changes(&mut self) -> Result<Vec<Change>, WireError> {
        let n = self.count()?;
        let mut v = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            let (name, entry) = self.entry()?;
            let len = self.u32()? as usize;
            let code = self.take(len)?.to_vec();
            if entry.is_tombstone() != code.is_empty() {
                return Err(WireError::Malformed(
                    "tombstone with code or library without",
                ));
            }
            if !entry.is_tombstone() && super::meta::digest_of(&code) != entry.digest {
                return Err(WireError::Checksum);
            }
            let origin = if self.origins {
                let action = self.u8()?;
                let time_ms = self.u64()?;
                match action {
                    0 => None,
                    a => Some(Origin {
                        action: Action::from_code(a).ok_or(WireError::Malformed("action"))?,
                        time_ms,
                    }),
                }
            } else {
                None
            };
            v.push(Change {
                name,
                entry,
                code,
                origin,
            });
        }
        Ok(v)
    }
}

// ---------------------------------------------------------------------------
// Frames and reassembly

/// Cuts an encoded message into frames of at most `CHUNK_DATA` data bytes.
pub fn frames(transfer: u64, message: &[u8]) -> Vec<Vec<u8>> {
    let sum: Digest = Sha1::digest(message).into();
    let pieces: Vec<&[u8]> = if message.is_empty() {
        vec![&[][..]]
    } else {
        message.chunks(CHUNK_DATA).collect()
    };
    let count = pieces.len() as u32;
    pieces
        .iter()
        .enumerate()
        .map(|(i, data)| {
            let mut f = Vec::with_capacity(FRAME_HEADER + data.len());
            f.extend_from_slice(MAGIC);
            f.push(WIRE_VERSION);
            f.extend_from_slice(&transfer.to_le_bytes());
            f.extend_from_slice(&(i as u32).to_le_bytes());
            f.extend_from_slice(&count.to_le_bytes());
            f.extend_from_slice(&(message.len() as u32).to_le_bytes());
            f.extend_from_slice(&sum);
            f.extend_from_slice(data);
            f
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FrameHeader {
    transfer: u64,
    index: u32,
    count: u32,
    total: u32,
    sum: Digest,
}

fn parse_frame(b: &[u8]) -> Result<(FrameHeader, &[u8]), WireError> {
    if b.len() < 3 || &b[..2] != MAGIC {
        return Err(WireError::Foreign);
    }
    if b[2] > WIRE_VERSION {
        return Err(WireError::NewerVersion(b[2]));
    }
    let mut r = Reader {
        b,
        pos: 3,
        origins: false,
    };
    let h = FrameHeader {
        transfer: r.u64()?,
        index: r.u32()?,
        count: r.u32()?,
        total: r.u32()?,
        sum: r.digest()?,
    };
    let data = &b[r.pos..];
    let total = h.total as usize;
    if total > MAX_MESSAGE {
        return Err(WireError::TooBig);
    }
    let expected_count = total.div_ceil(CHUNK_DATA).max(1);
    if h.count as usize != expected_count || h.index >= h.count {
        return Err(WireError::Malformed("frame count"));
    }
    let expected_len = if (h.index as usize) + 1 < expected_count {
        CHUNK_DATA
    } else {
        total - CHUNK_DATA * (expected_count - 1)
    };
    if data.len() != expected_len {
        return Err(WireError::Malformed("frame length"));
    }
    Ok((h, data))
}

struct Transfer {
    header: FrameHeader,
    pieces: Vec<Option<Vec<u8>>>,
    received: usize,
    bytes: usize,
    started: Instant,
}

/// Reassembles frames into messages, per (sender, transfer id).
#[derive(Default)]
pub struct Reassembler {
    transfers: HashMap<(String, u64), Transfer>,
    buffered: usize,
}

impl Reassembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one frame; returns the whole message once its last frame arrives and the
    /// checksum matches. Duplicate frames are ignored; a frame that contradicts earlier
    /// ones of its transfer drops the transfer.
    pub fn accept(
        &mut self,
        sender: &str,
        frame: &[u8],
        now: Instant,
    ) -> Result<Option<Vec<u8>>, WireError> {
        let (h, data) = parse_frame(frame)?;
        if h.count == 1 {
            return if Sha1::digest(data).as_slice() == h.sum {
                Ok(Some(data.to_vec()))
            } else {
                Err(WireError::Checksum)
            };
        }
        let key = (sender.to_string(), h.transfer);
        if !self.transfers.contains_key(&key) {
            if self.buffered + h.total as usize > MAX_BUFFERED {
                return Err(WireError::TooBig);
            }
            self.buffered += h.total as usize;
            self.transfers.insert(
                key.clone(),
                Transfer {
                    header: FrameHeader {
                        index: 0,
                        ..h.clone()
                    },
                    pieces: vec![None; h.count as usize],
                    received: 0,
                    bytes: h.total as usize,
                    started: now,
                },
            );
        }
        let t = self.transfers.get_mut(&key).expect("inserted above");
        if (t.header.count, t.header.total, t.header.sum) != (h.count, h.total, h.sum) {
            self.drop_transfer(&key);
            return Err(WireError::Malformed("frame disagrees with its transfer"));
        }
        let slot = &mut t.pieces[h.index as usize];
        if slot.is_some() {
            return Ok(None);
        }
        *slot = Some(data.to_vec());
        t.received += 1;
        if t.received < t.pieces.len() {
            return Ok(None);
        }
        let t = self.drop_transfer(&key).expect("present");
        let mut message = Vec::with_capacity(t.bytes);
        for p in t.pieces.into_iter().flatten() {
            message.extend_from_slice(&p);
        }
        if Sha1::digest(&message).as_slice() != t.header.sum {
            return Err(WireError::Checksum);
        }
        Ok(Some(message))
    }

    fn drop_transfer(&mut self, key: &(String, u64)) -> Option<Transfer> {
        let t = self.transfers.remove(key)?;
        self.buffered -= t.bytes;
        Some(t)
    }

    /// Drops transfers older than [`TRANSFER_TTL`]; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let old: Vec<_> = self
            .transfers
            .iter()
            .filter(|(_, t)| now.duration_since(t.started) > TRANSFER_TTL)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &old {
            self.drop_transfer(k);
        }
        old.len()
    }

    pub fn pending(&self) -> usize {
        self.transfers.len()
    }

    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(name: &str, version: u64, code: &[u8]) -> Change {
        Change {
            name: name.into(),
            entry: Entry::live(version, code),
            code: code.to_vec(),
            origin: Some(Origin {
                action: Action::Replace,
                time_ms: 1_700_000_000_123,
            }),
        }
    }

    fn samples() -> Vec<Message> {
        vec![
            Message::State {
                digest: [7; DIGEST_LEN],
                count: 3,
            },
            Message::Manifest(vec![
                ("a".into(), Entry::live(1, b"x")),
                ("b".into(), Entry::tombstone(4)),
            ]),
            Message::Manifest(vec![]),
            Message::Pull(vec!["a".into(), "zz".into()]),
            Message::Entries(vec![
                change("a", 2, b"#!lua name=a\n\x00\xff"),
                Change {
                    name: "b".into(),
                    entry: Entry::tombstone(9),
                    code: vec![],
                    origin: None,
                },
            ]),
        ]
    }

    #[test]
    fn versions_past_the_ceiling_are_refused() {
        let mut high = change("a", super::super::meta::MAX_VERSION, b"x");
        assert_eq!(
            decode_entries(&encode_entries(&[high.clone()])).unwrap(),
            vec![high.clone()]
        );
        high.entry.version += 1;
        assert_eq!(
            decode_entries(&encode_entries(&[high.clone()])),
            Err(WireError::Malformed("version out of range"))
        );
        assert!(
            Message::decode(&Message::Manifest(vec![("a".into(), high.entry)]).encode()).is_err()
        );
    }

    #[test]
    fn messages_round_trip() {
        for m in samples() {
            assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn every_truncation_and_garbage_is_an_error_never_a_panic() {
        for m in samples() {
            let b = m.encode();
            for n in 0..b.len() {
                assert!(Message::decode(&b[..n]).is_err(), "{m:?} cut at {n}");
            }
            let mut longer = b.clone();
            longer.push(0);
            assert!(Message::decode(&longer).is_err());
        }
        // Pseudo-random garbage, and flipped bytes, through every decoder.
        let mut x: u64 = 0x1234_5678;
        for len in 0..400 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = Message::decode(&bytes);
            let _ = decode_entries(&bytes);
            let _ = Reassembler::new().accept("n", &bytes, Instant::now());
        }
        for m in samples() {
            let b = m.encode();
            for i in 0..b.len() {
                let mut q = b.clone();
                q[i] ^= 0xff;
                let _ = Message::decode(&q);
            }
        }
    }

    #[test]
    fn entries_with_a_wrong_digest_or_inconsistent_tombstone_are_refused() {
        let mut bad = change("a", 1, b"code");
        bad.code = b"other".to_vec();
        assert_eq!(
            Message::decode(&Message::Entries(vec![bad]).encode()).unwrap_err(),
            WireError::Checksum
        );
        let odd = Change {
            name: "a".into(),
            entry: Entry::tombstone(1),
            code: b"x".to_vec(),
            origin: None,
        };
        assert!(Message::decode(&Message::Entries(vec![odd]).encode()).is_err());
    }

    /// AOF files written before origins existed hold version 1 payloads: they still load,
    /// with no origin.
    #[test]
    fn version_1_apply_payloads_are_read_without_origins() {
        let mut c = change("a", 3, b"#!lua name=a\n");
        let mut v1 = b"RXAPPLY".to_vec();
        v1.push(1);
        v1.extend_from_slice(&1u32.to_le_bytes());
        put_entry(&mut v1, &c.name, &c.entry);
        v1.extend_from_slice(&(c.code.len() as u32).to_le_bytes());
        v1.extend_from_slice(&c.code);
        let sum = Sha1::digest(&v1);
        v1.extend_from_slice(&sum);
        c.origin = None;
        assert_eq!(decode_entries(&v1).unwrap(), vec![c]);
    }

    #[test]
    fn apply_payload_round_trips_and_refuses_corruption() {
        let changes = vec![change("a", 3, b"#!lua name=a\n"), change("b", 1, b"b")];
        let p = encode_entries(&changes);
        assert_eq!(decode_entries(&p).unwrap(), changes);
        for n in 0..p.len() {
            assert!(decode_entries(&p[..n]).is_err());
        }
        for i in 0..p.len() {
            let mut q = p.clone();
            q[i] ^= 1;
            assert!(decode_entries(&q).is_err(), "flip at {i}");
        }
        assert_eq!(decode_entries(b"RXDUMP\x01\x00"), Err(WireError::Foreign));
    }

    fn big_message() -> Vec<u8> {
        let code: Vec<u8> = (0..(1024 * 1024 + 17)).map(|i| (i % 251) as u8).collect();
        Message::Entries(vec![change("big", 1, &code)]).encode()
    }

    #[test]
    fn a_big_message_is_chunked_and_reassembled_in_any_order() {
        let m = big_message();
        let fs = frames(42, &m);
        assert_eq!(fs.len(), m.len().div_ceil(CHUNK_DATA));
        assert!(fs.iter().all(|f| f.len() <= FRAME_HEADER + CHUNK_DATA));
        let now = Instant::now();
        // Reversed, with every frame but the completing one delivered twice.
        let mut r = Reassembler::new();
        let mut out = None;
        for (i, f) in fs.iter().rev().enumerate() {
            let times = if i + 1 == fs.len() { 1 } else { 2 };
            for _ in 0..times {
                if let Some(done) = r.accept("node-a", f, now).unwrap() {
                    assert!(out.is_none(), "delivered twice");
                    out = Some(done);
                }
            }
        }
        assert_eq!(out.unwrap(), m);
        assert_eq!((r.pending(), r.buffered_bytes()), (0, 0));
        // Duplicates that arrive after completion start a new transfer that never ends;
        // expiry reclaims it.
        r.accept("node-a", &fs[0], now).unwrap();
        assert_eq!(r.pending(), 1);
        assert_eq!(r.expire(now + TRANSFER_TTL + Duration::from_secs(1)), 1);
        assert_eq!((r.pending(), r.buffered_bytes()), (0, 0));
    }

    #[test]
    fn transfers_are_kept_apart_by_sender_and_id() {
        let m = big_message();
        let a = frames(1, &m);
        let b = frames(1, &m);
        let mut r = Reassembler::new();
        let now = Instant::now();
        let mut done = 0;
        for (fa, fb) in a.iter().zip(&b) {
            done += r.accept("A", fa, now).unwrap().is_some() as usize;
            done += r.accept("B", fb, now).unwrap().is_some() as usize;
        }
        assert_eq!(done, 2);
    }

    #[test]
    fn corrupt_truncated_and_inconsistent_frames_are_refused() {
        let m = big_message();
        let fs = frames(7, &m);
        let now = Instant::now();
        // A flipped data byte: every frame accepted, the checksum fails at the end.
        let mut r = Reassembler::new();
        let mut bad = fs.clone();
        let last = bad[1].len() - 1;
        bad[1][last] ^= 1;
        let mut result = Ok(None);
        for f in &bad {
            result = r.accept("A", f, now);
        }
        assert_eq!(result, Err(WireError::Checksum));
        assert_eq!(r.pending(), 0);
        // A truncated frame is refused outright.
        let mut r = Reassembler::new();
        assert!(r.accept("A", &fs[0][..fs[0].len() - 1], now).is_err());
        // A frame whose header disagrees with the transfer drops it.
        let other = frames(7, &big_message()[1..]);
        r.accept("A", &fs[0], now).unwrap();
        assert!(r.accept("A", &other[1], now).is_err());
        assert_eq!(r.pending(), 0);
        // A single-frame message with a wrong checksum.
        let mut single = frames(3, b"\x01hello").remove(0);
        let l = single.len() - 1;
        single[l] ^= 1;
        assert_eq!(r.accept("A", &single, now), Err(WireError::Checksum));
        // Too big and foreign.
        let mut huge = fs[0].clone();
        huge[19..23].copy_from_slice(&((MAX_MESSAGE as u32) + 1).to_le_bytes());
        assert_eq!(r.accept("A", &huge, now), Err(WireError::TooBig));
        assert_eq!(r.accept("A", b"XX\x01", now), Err(WireError::Foreign));
        let mut newer = fs[0].clone();
        newer[2] = WIRE_VERSION + 1;
        assert_eq!(
            r.accept("A", &newer, now),
            Err(WireError::NewerVersion(WIRE_VERSION + 1))
        );
    }

    #[test]
    fn small_messages_take_one_frame() {
        let m = Message::Pull(vec!["x".into()]).encode();
        let fs = frames(9, &m);
        assert_eq!(fs.len(), 1);
        let got = Reassembler::new()
            .accept("A", &fs[0], Instant::now())
            .unwrap()
            .unwrap();
        assert_eq!(Message::decode(&got).unwrap(), Message::decode(&m).unwrap());
    }
}
