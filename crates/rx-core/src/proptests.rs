//! Property tests (proptest) for the pure parsers and rules: the library header, the
//! `RX.DUMP` payload, the cluster wire format and its frames, the RESP reader, `%g`
//! number formatting, glob matching and the version ordering rule.
//!
//! Each property runs [`CASES`] cases, so `cargo test --release --lib` stays fast;
//! `PROPTEST_CASES=<n>` runs more.

use proptest::prelude::*;

use crate::cluster::meta::{Catalog, Entry, DIGEST_LEN, TOMBSTONE};
use crate::cluster::wire::{self, Change, Message, Reassembler, CHUNK_DATA};
use crate::glob::glob_match;
use crate::header::{is_valid_name, parse_header};
use crate::numfmt::format_g;
use crate::payload;
use crate::resp::{parse_tree, Tree};

const CASES: u32 = 256;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CASES);
    ProptestConfig {
        cases,
        // Failures are reported with their minimal input; nothing is written to disk.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

/// Bytes biased towards the characters a header parser cares about.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    let interesting = prop::sample::select(vec![
        b'#', b'!', b'l', b'u', b'a', b'L', b'U', b'A', b' ', b'\t', b'\r', b'\n', b'\0', b'"',
        b'\'', b'\\', b'x', b'n', b'a', b'm', b'e', b'N', b'=', b'_', b'0', b'9', b'z', 0xc3, 0xa9,
        0xff,
    ]);
    let body = prop::collection::vec(prop_oneof![3 => interesting, 1 => any::<u8>()], 0..48);
    (any::<bool>(), body).prop_map(|(prefixed, body)| {
        if prefixed {
            let mut v = b"#!".to_vec();
            v.extend(body);
            v
        } else {
            body
        }
    })
}

fn valid_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_]{1,24}"
}

fn digest() -> impl Strategy<Value = [u8; DIGEST_LEN]> {
    prop::array::uniform20(any::<u8>())
}

fn entry() -> impl Strategy<Value = Entry> {
    // Small versions and digests drawn from few values, so ties are common.
    (
        0u64..4,
        prop_oneof![
            Just(TOMBSTONE),
            Just([1; DIGEST_LEN]),
            Just([0xff; DIGEST_LEN]),
            digest()
        ],
    )
        .prop_map(|(version, digest)| Entry { version, digest })
}

fn change() -> impl Strategy<Value = Change> {
    (
        "[a-zA-Z0-9_é]{1,16}",
        0u64..=crate::cluster::meta::MAX_VERSION,
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 1..64),
    )
        .prop_map(|(name, version, tombstone, code)| {
            if tombstone {
                Change {
                    name,
                    entry: Entry::tombstone(version),
                    code: Vec::new(),
                    origin: None,
                }
            } else {
                Change {
                    name,
                    entry: Entry::live(version, &code),
                    code,
                    origin: Some(crate::history::Origin {
                        action: crate::history::Action::Load,
                        time_ms: version,
                    }),
                }
            }
        })
}

fn message() -> impl Strategy<Value = Message> {
    let name = "[a-zA-Z0-9_é]{1,16}";
    prop_oneof![
        (digest(), any::<u32>()).prop_map(|(digest, count)| Message::State { digest, count }),
        prop::collection::vec((name, entry()), 0..6).prop_map(Message::Manifest),
        prop::collection::vec(name, 0..6).prop_map(Message::Pull),
        prop::collection::vec(change(), 0..6).prop_map(Message::Entries),
    ]
}

/// A RESP2 reply tree (the shapes `parse_tree` keeps) and its encoding.
fn resp_tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        bytes(12).prop_map(Tree::Str),
        "[a-zA-Z ]{0,10}".prop_map(|s| Tree::Error(s.into_bytes())),
        any::<i64>().prop_map(Tree::Int),
        Just(Tree::Null),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop::collection::vec(inner, 0..6).prop_map(Tree::List)
    })
}

fn encode_tree(t: &Tree, out: &mut Vec<u8>) {
    match t {
        Tree::Str(s) => {
            out.extend_from_slice(format!("${}\r\n", s.len()).as_bytes());
            out.extend_from_slice(s);
            out.extend_from_slice(b"\r\n");
        }
        Tree::Error(s) => {
            out.push(b'-');
            out.extend_from_slice(s);
            out.extend_from_slice(b"\r\n");
        }
        Tree::Int(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
        Tree::Null => out.extend_from_slice(b"$-1\r\n"),
        Tree::List(items) => {
            out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
            for i in items {
                encode_tree(i, out);
            }
        }
    }
}

/// Any finite double, with extra weight on integers, tiny and huge magnitudes.
fn finite_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |v| v.is_finite()),
        any::<i64>().prop_map(|i| i as f64),
        (-1_000_000i64..1_000_000).prop_map(|i| i as f64 / 1000.0),
        prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL,
    ]
}

fn is_glob_special(c: u8) -> bool {
    matches!(c, b'*' | b'?' | b'[' | b'\\')
}

proptest! {
    #![proptest_config(config())]

    // ---------------------------------------------------------------- header

    #[test]
    fn header_never_panics_and_accepts_only_valid_names(code in header_bytes()) {
        if let Ok(h) = parse_header(&code) {
            prop_assert!(is_valid_name(h.name.as_bytes()), "accepted name {:?}", h.name);
            prop_assert!(h.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
            prop_assert!(!h.name.is_empty());
            prop_assert!(h.engine.eq_ignore_ascii_case("lua"));
        }
    }

    #[test]
    fn header_never_panics_on_arbitrary_bytes(code in bytes(64)) {
        let _ = parse_header(&code);
    }

    #[test]
    fn header_reads_back_any_valid_name(
        name in valid_name(),
        engine in prop::sample::select(vec!["lua", "LUA", "Lua"]),
        key in prop::sample::select(vec!["name", "NAME", "Name"]),
        sep in "[ \t]{1,3}",
        trail in "[ \t\r]{0,3}",
        body in bytes(32),
    ) {
        let mut code = format!("#!{engine}{sep}{key}={name}{trail}\n").into_bytes();
        code.extend(body);
        let h = parse_header(&code).expect("a well-formed header parses");
        prop_assert_eq!(h.name, name);
    }

    // ---------------------------------------------------------------- payload

    #[test]
    fn payload_decode_never_panics(b in bytes(96)) {
        let _ = payload::decode(&b);
        let mut p = b"RXDUMP".to_vec();
        p.extend_from_slice(&b);
        let _ = payload::decode(&p);
    }

    #[test]
    fn payload_round_trips(codes in prop::collection::vec(bytes(64), 0..6)) {
        let p = payload::encode(codes.iter().map(|c| c.as_slice()));
        let back = payload::decode(&p).expect("an encoded payload decodes");
        prop_assert_eq!(back, codes.iter().map(|c| c.as_slice()).collect::<Vec<_>>());
    }

    #[test]
    fn payload_any_single_edit_is_refused(
        codes in prop::collection::vec(bytes(32), 0..4),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        cut in any::<prop::sample::Index>(),
    ) {
        let p = payload::encode(codes.iter().map(|c| c.as_slice()));
        let mut q = p.clone();
        q[at.index(p.len())] ^= flip;
        prop_assert!(payload::decode(&q).is_err());
        prop_assert!(payload::decode(&p[..cut.index(p.len())]).is_err());
    }

    // ---------------------------------------------------------------- cluster::wire

    #[test]
    fn wire_decode_never_panics(b in bytes(128), kind in 0u8..6) {
        let _ = Message::decode(&b);
        let mut m = vec![kind];
        m.extend_from_slice(&b);
        let _ = Message::decode(&m);
        let _ = wire::decode_entries(&b);
        let mut a = b"RXAPPLY\x01".to_vec();
        a.extend_from_slice(&b);
        let _ = wire::decode_entries(&a);
        let mut r = Reassembler::new();
        let _ = r.accept("n", &b, std::time::Instant::now());
    }

    #[test]
    fn wire_messages_round_trip(m in message()) {
        prop_assert_eq!(Message::decode(&m.encode()).expect("decodes"), m);
    }

    #[test]
    fn wire_apply_payload_round_trips(changes in prop::collection::vec(change(), 0..6)) {
        let p = wire::encode_entries(&changes);
        prop_assert_eq!(wire::decode_entries(&p).expect("decodes"), changes);
    }

    #[test]
    fn wire_versions_past_the_ceiling_are_refused(mut changes in prop::collection::vec(change(), 1..4), excess in 1u64..=u64::MAX - crate::cluster::meta::MAX_VERSION, which in 0usize..4) {
        let which = which % changes.len();
        changes[which].entry.version = crate::cluster::meta::MAX_VERSION + excess;
        prop_assert!(wire::decode_entries(&wire::encode_entries(&changes)).is_err());
    }

    #[test]
    fn wire_edited_frames_and_messages_never_panic(
        m in message(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let b = m.encode();
        let mut q = b.clone();
        let i = at.index(q.len());
        q[i] ^= flip;
        let _ = Message::decode(&q);
        for f in wire::frames(7, &b) {
            let mut g = f.clone();
            let j = at.index(g.len());
            g[j] ^= flip;
            let mut r = Reassembler::new();
            let _ = r.accept("n", &g, std::time::Instant::now());
        }
    }

    #[test]
    fn wire_frames_reassemble_in_any_order(
        len in prop_oneof![0usize..64, (CHUNK_DATA - 2)..(CHUNK_DATA + 2), 0usize..(3 * CHUNK_DATA + 100)],
        fill in any::<u8>(),
        transfer in any::<u64>(),
        order in any::<u64>(),
        dups in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let message: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ fill).collect();
        let frames = wire::frames(transfer, &message);
        prop_assert_eq!(frames.len(), len.div_ceil(CHUNK_DATA).max(1));
        // A permutation from the seed, then duplicates of random frames.
        let mut seq: Vec<usize> = (0..frames.len()).collect();
        let mut s = order;
        for i in (1..seq.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seq.swap(i, (s >> 33) as usize % (i + 1));
        }
        for d in &dups {
            let at = d.index(seq.len() + 1);
            let which = d.index(frames.len());
            seq.insert(at, which);
        }
        let now = std::time::Instant::now();
        let mut r = Reassembler::new();
        let mut seen = std::collections::HashSet::new();
        let mut got = Vec::new();
        let arrivals = seq.len();
        for i in seq {
            seen.insert(i);
            let out = r.accept("node", &frames[i], now).expect("valid frames are accepted");
            if let Some(m) = out {
                prop_assert_eq!(seen.len(), frames.len(), "complete only after every frame");
                got.push(m);
            }
        }
        // A one-frame message keeps no state: each copy that arrives is delivered (applying
        // changes is idempotent). A transfer of several frames comes out once, unless copies
        // of all its frames arrive again after it completed (they make a new transfer).
        if frames.len() == 1 {
            prop_assert_eq!(got.len(), arrivals, "one-frame messages delivered");
        } else if dups.is_empty() {
            prop_assert_eq!(got.len(), 1, "messages delivered");
        } else {
            prop_assert!(!got.is_empty() && got.len() <= 1 + dups.len() / frames.len());
        }
        prop_assert!(got.iter().all(|m| *m == message));
        // A copy that arrives after its transfer completed opens a new one, which expires.
        prop_assert!(r.pending() <= 1);
        r.expire(now + wire::TRANSFER_TTL + std::time::Duration::from_secs(1));
        prop_assert_eq!(r.pending(), 0);
        prop_assert_eq!(r.buffered_bytes(), 0);
    }

    #[test]
    fn wire_interleaved_transfers_from_two_senders(
        a in prop::collection::vec(any::<u8>(), CHUNK_DATA..(2 * CHUNK_DATA + 10)),
        b in prop::collection::vec(any::<u8>(), CHUNK_DATA..(2 * CHUNK_DATA + 10)),
        reverse in any::<bool>(),
    ) {
        let fa = wire::frames(1, &a);
        let fb = wire::frames(1, &b);
        let mut r = Reassembler::new();
        let now = std::time::Instant::now();
        let mut out = Vec::new();
        let n = fa.len().max(fb.len());
        for k in 0..n {
            let i = if reverse { n - 1 - k } else { k };
            if let Some(f) = fa.get(i) {
                if let Some(m) = r.accept("a", f, now).expect("accepted") {
                    out.push(("a", m));
                }
            }
            if let Some(f) = fb.get(i) {
                if let Some(m) = r.accept("b", f, now).expect("accepted") {
                    out.push(("b", m));
                }
            }
        }
        out.sort();
        prop_assert_eq!(out, vec![("a", a), ("b", b)]);
    }

    // ---------------------------------------------------------------- resp

    #[test]
    fn resp_parse_tree_never_panics(b in bytes(96)) {
        let _ = parse_tree(&b);
    }

    #[test]
    fn resp_parse_tree_never_panics_on_resp_like_bytes(
        parts in prop::collection::vec(prop_oneof![
            prop::sample::select(vec![
                "*", "$", "+", "-", ":", "_", ",", "#", "(", "=", "%", "~", "|", ">", "\r\n",
                "-1", "0", "1", "2", "3", "9223372036854775807", "-9223372036854775808",
                "99999999999999999999", "inf", "nan", "t", "f", "txt:", "abc",
            ]).prop_map(|s| s.as_bytes().to_vec()),
            bytes(4),
        ], 0..24),
    ) {
        let b: Vec<u8> = parts.concat();
        let _ = parse_tree(&b);
    }

    #[test]
    fn resp_scalar_agrees_with_the_general_reader(
        parts in prop::collection::vec(prop_oneof![
            prop::sample::select(vec![
                "$", ":", "+", "*", "\r\n", "\r", "\n", "-", "-1", "0", "1", "2", "3", "10",
                "9223372036854775807", "-9223372036854775808", "9223372036854775808", "abc",
            ]).prop_map(|s| s.as_bytes().to_vec()),
            bytes(3),
        ], 0..8),
    ) {
        let b: Vec<u8> = parts.concat();
        if let Some(s) = crate::resp::scalar(&b) {
            let want = match s {
                crate::resp::Scalar::Integer(n) => Tree::Int(n),
                crate::resp::Scalar::Bulk(t) => Tree::Str(t.to_vec()),
            };
            prop_assert_eq!(parse_tree(&b).expect("what scalar reads, the reader reads"), want);
        }
    }

    #[test]
    fn resp_parse_tree_round_trips(t in resp_tree(), trailing in bytes(8)) {
        let mut b = Vec::new();
        encode_tree(&t, &mut b);
        b.extend_from_slice(&trailing);
        prop_assert_eq!(parse_tree(&b).expect("a well-formed reply parses"), t);
    }

    #[test]
    fn resp_nesting_is_parsed_or_refused(depth in 0usize..2000) {
        let mut b = b"*1\r\n".repeat(depth);
        b.extend_from_slice(b":1\r\n");
        let _ = parse_tree(&b);
        b.truncate(b.len() - 4);
        prop_assert!(parse_tree(&b).is_err() || depth == 0);
    }

    // ---------------------------------------------------------------- numfmt

    #[test]
    fn format_g_17_round_trips(v in finite_f64()) {
        let s = format_g(v, 17);
        let back: f64 = s.parse().unwrap_or_else(|_| panic!("{s:?} does not parse"));
        prop_assert_eq!(back.to_bits(), v.to_bits(), "{} printed as {}", v, s);
    }

    #[test]
    fn format_g_rounds_to_precision(v in finite_f64(), p in 1usize..=17) {
        let s = format_g(v, p);
        let back: f64 = s.parse().unwrap_or_else(|_| panic!("{s:?} does not parse"));
        // The value printed is `v` rounded to `p` significant digits.
        let want: f64 = format!("{:.*e}", p - 1, v).parse().unwrap();
        prop_assert_eq!(back, want, "{} at %.{}g printed as {}", v, p, s);
        // `%g` never prints more than `p` significant digits, nor a trailing zero fraction.
        let digits = s
            .trim_start_matches('-')
            .split(['e', 'E'])
            .next()
            .unwrap()
            .chars()
            .filter(|c| c.is_ascii_digit())
            .collect::<String>();
        prop_assert!(digits.trim_start_matches('0').trim_end_matches('0').len() <= p, "{}", s);
        if s.contains('.') && !s.contains('e') {
            prop_assert!(!s.ends_with('0') && !s.ends_with('.'), "{}", s);
        }
    }

    #[test]
    fn format_g_prints_small_integers_as_digits(i in -99_999_999_999_999i64..99_999_999_999_999) {
        prop_assert_eq!(format_g(i as f64, 17), i.to_string());
        prop_assert_eq!(format_g(i as f64, 14), i.to_string());
    }

    #[test]
    fn format_g_special_values(p in 1usize..=17) {
        prop_assert_eq!(format_g(f64::INFINITY, p), "inf");
        prop_assert_eq!(format_g(f64::NEG_INFINITY, p), "-inf");
        prop_assert_eq!(format_g(f64::NAN, p), "nan");
        prop_assert_eq!(format_g(-f64::NAN, p), "-nan");
        prop_assert_eq!(format_g(-0.0, p), "-0");
    }

    // ---------------------------------------------------------------- glob

    #[test]
    fn glob_never_panics(pattern in bytes(24), text in bytes(24), nocase in any::<bool>()) {
        let _ = glob_match(&pattern, &text, nocase);
    }

    #[test]
    fn glob_never_panics_on_pattern_like_bytes(
        pattern in prop::collection::vec(prop::sample::select(b"*?[]^-\\ab".to_vec()), 0..16),
        text in prop::collection::vec(prop::sample::select(b"ab-]\\[".to_vec()), 0..16),
    ) {
        let _ = glob_match(&pattern, &text, false);
        let _ = glob_match(&pattern, &text, true);
    }

    #[test]
    fn glob_star_matches_everything(text in bytes(32), stars in 1usize..4, nocase in any::<bool>()) {
        prop_assert!(glob_match(&b"*".repeat(stars), &text, nocase));
    }

    #[test]
    fn glob_literals_escapes_and_question_marks(text in bytes(24)) {
        let escaped: Vec<u8> = text.iter().flat_map(|&c| [b'\\', c]).collect();
        prop_assert!(glob_match(&escaped, &text, false));
        prop_assert!(glob_match(&b"?".repeat(text.len()), &text, false));
        if text.iter().all(|&c| !is_glob_special(c)) {
            prop_assert!(glob_match(&text, &text, false));
            prop_assert!(glob_match(&text.to_ascii_uppercase(), &text, true));
            let mut star_around = b"*".to_vec();
            star_around.extend_from_slice(&text);
            star_around.push(b'*');
            prop_assert!(glob_match(&star_around, &text, false));
        }
        if !text.is_empty() {
            prop_assert!(!glob_match(&b"?".repeat(text.len() + 1), &text, false));
        }
    }

    #[test]
    fn glob_prefix_star(text in bytes(24), cut in any::<prop::sample::Index>()) {
        let prefix = &text[..cut.index(text.len() + 1)];
        if prefix.iter().all(|&c| !is_glob_special(c)) {
            let mut p = prefix.to_vec();
            p.push(b'*');
            prop_assert!(glob_match(&p, &text, false));
        }
    }

    // ---------------------------------------------------------------- cluster::meta

    #[test]
    fn meta_rule_is_a_strict_total_order(a in entry(), b in entry(), c in entry()) {
        prop_assert!(!a.beats(&a));
        if a != b {
            prop_assert!(a.beats(&b) ^ b.beats(&a), "exactly one of {:?} / {:?} wins", a, b);
        } else {
            prop_assert!(!a.beats(&b) && !b.beats(&a));
        }
        if a.beats(&b) && b.beats(&c) {
            prop_assert!(a.beats(&c));
        }
        if a.version != b.version {
            prop_assert_eq!(a.beats(&b), a.version > b.version);
        }
        // At one version a live library beats its deletion.
        let tomb = Entry::tombstone(a.version);
        if !a.is_tombstone() {
            prop_assert!(a.beats(&tomb));
        }
    }

    #[test]
    fn meta_accepts_is_consistent_with_the_rule(held in prop::option::of(entry()), cand in entry()) {
        let mut cat = Catalog::new();
        if let Some(h) = held {
            cat.set("lib", h);
        }
        let accepted = cat.accepts("lib", &cand);
        prop_assert_eq!(accepted, held.is_none_or(|h| cand.beats(&h)));
        prop_assert!(cat.accepts("other", &cand), "an unknown name accepts anything");
        prop_assert!(cat.next_version("lib").is_some_and(|v| v > held.map_or(0, |h| h.version)));
        if accepted {
            cat.set("lib", cand);
            prop_assert!(!cat.accepts("lib", &cand), "the same entry twice is a no-op");
        }
    }

    #[test]
    fn meta_applying_in_any_order_converges(
        entries in prop::collection::vec(("[ab]", entry()), 1..10),
        seed in any::<u64>(),
    ) {
        let apply = |order: &[usize]| {
            let mut cat = Catalog::new();
            for &i in order {
                let (n, e) = &entries[i];
                if cat.accepts(n, e) {
                    cat.set(n, *e);
                }
            }
            cat
        };
        let forward: Vec<usize> = (0..entries.len()).collect();
        let mut shuffled = forward.clone();
        let mut s = seed;
        for i in (1..shuffled.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (s >> 33) as usize % (i + 1));
        }
        let a = apply(&forward);
        let b = apply(&shuffled);
        prop_assert_eq!(a.state_digest(), b.state_digest());
        prop_assert_eq!(&a, &b);
        // The winner for each name is the maximum under the rule.
        for (name, e) in a.iter() {
            for (n, other) in &entries {
                if n == name {
                    prop_assert!(!other.beats(e));
                }
            }
        }
        // And the "what must I pull" answer from a peer's manifest is what wins.
        let manifest: Vec<(String, Entry)> = b.iter().map(|(n, e)| (n.to_string(), *e)).collect();
        prop_assert!(a.to_pull(&manifest).is_empty());
        prop_assert_eq!(Catalog::new().to_pull(&manifest).len(), manifest.len());
    }
}
