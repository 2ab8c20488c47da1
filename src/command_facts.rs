//! What RX needs to know of a server command, from `COMMAND INFO`, learnt once per name.
//!
//! A script's run asks for every command it sends until it first writes (to know when it
//! becomes unkillable), so the common question is answered from a small front of exact
//! spellings, ahead of the map by lowercase name that the server's answers fill.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::ffi::{call_tree, Ctx};
use crate::resp::Tree;

/// One command's flags, as RX uses them.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct CommandFacts {
    /// The server knows the command (COMMAND INFO described it).
    pub known: bool,
    pub write: bool,
    /// Allowed on a stale replica (`stale` in COMMAND INFO's flags).
    pub stale: bool,
    /// A container command (`CLIENT`, `CONFIG`, ...): ACL names `<command>|<subcommand>`.
    pub has_subcommands: bool,
    /// Where its keys are, by COMMAND INFO's first, last and step.
    pub keys: KeyRange,
    /// A command RX treats specially in scripts (by its name).
    pub special: Special,
}

/// Commands whose `redis.call` RX handles beyond passing them on.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub enum Special {
    #[default]
    None,
    /// SELECT: the script's database follows it.
    Select,
    /// SORT and SORT_RO: a constant BY is rewritten (`sort_in_scripts`).
    Sort,
    /// XREAD and XREADGROUP: BLOCK is refused on some servers.
    StreamRead,
}

impl Special {
    fn of(lower: &[u8]) -> Special {
        match lower {
            b"select" => Special::Select,
            b"sort" | b"sort_ro" => Special::Sort,
            b"xread" | b"xreadgroup" => Special::StreamRead,
            _ => Special::None,
        }
    }
}

/// COMMAND INFO's first key, last key and step: argument indexes, the name being 0; a
/// negative last counts from the end (-1: the last argument); first 0 means no keys.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct KeyRange {
    pub first: u16,
    pub last: i16,
    pub step: u16,
}

impl KeyRange {
    /// Whether argument `index` of a command sent with `argc` arguments (name included)
    /// is one of its keys.
    pub fn holds(self, index: usize, argc: usize) -> bool {
        if self.first == 0 || self.step == 0 {
            return false;
        }
        let last = if self.last < 0 {
            argc as i64 + i64::from(self.last)
        } else {
            i64::from(self.last)
        };
        let (index, first) = (index as i64, i64::from(self.first));
        index >= first && index <= last && (index - first) % i64::from(self.step) == 0
    }
}

impl CommandFacts {
    /// A known command RX passes on as it is: the common case, kept on the short path.
    #[inline]
    pub fn ordinary(self) -> bool {
        self.known && self.special == Special::None
    }

    /// Whether argument `index` (the name being 0) of `argc` may be passed as a string
    /// the server only takes a reference to, which the command could keep after it ends:
    /// any argument of a read-only command, a key of a write command. A write command's
    /// other arguments may become stored values, which the server encodes (as an integer,
    /// say) only when it holds the sole reference; those are always passed fresh.
    /// Containers (whose subcommands differ) and unknown commands share nothing.
    #[inline]
    pub fn may_share_argument(self, index: usize, argc: usize) -> bool {
        self.known && !self.has_subcommands && (!self.write || self.keys.holds(index, argc))
    }
}

/// Longest name kept in the front; longer ones go to the map (no server command is near).
const FRONT_NAME: usize = 22;
/// Slots in the front (a power of two): a script uses a handful of distinct commands.
const FRONT_SLOTS: usize = 64;

#[derive(Clone, Copy)]
struct FrontEntry {
    len: u8,
    name: [u8; FRONT_NAME],
    facts: CommandFacts,
}

const EMPTY_ENTRY: FrontEntry = FrontEntry {
    len: 0,
    name: [0; FRONT_NAME],
    facts: CommandFacts {
        known: false,
        write: false,
        stale: false,
        has_subcommands: false,
        keys: KeyRange {
            first: 0,
            last: 0,
            step: 0,
        },
        special: Special::None,
    },
};

/// Every command name asked about, with its facts.
pub struct CommandTable {
    /// Exact spellings, direct-mapped by a hash of the bytes; a miss falls to `by_name`.
    front: [Cell<FrontEntry>; FRONT_SLOTS],
    /// Lowercase name -> facts, from the server.
    by_name: RefCell<rustc_hash::FxHashMap<Vec<u8>, CommandFacts>>,
}

thread_local! {
    static TABLE: Rc<CommandTable> = Rc::new(CommandTable::new());
}

/// The table, for a run to hold (one thread-local access per run, none per command).
pub fn table() -> Rc<CommandTable> {
    TABLE.with(Rc::clone)
}

fn front_slot(name: &[u8]) -> usize {
    // Length, first and last bytes and one from the middle tell typical names apart.
    let (first, last, middle) = (name[0], name[name.len() - 1], name[name.len() / 2]);
    let h = (name.len() as u32)
        .wrapping_mul(31)
        .wrapping_add(u32::from(first) * 7)
        .wrapping_add(u32::from(middle) * 3)
        .wrapping_add(u32::from(last));
    h as usize & (FRONT_SLOTS - 1)
}

impl CommandTable {
    fn new() -> Self {
        CommandTable {
            front: std::array::from_fn(|_| Cell::new(EMPTY_ENTRY)),
            by_name: RefCell::default(),
        }
    }

    /// `name`'s facts, asking the server (`COMMAND INFO`) the first time a name is seen in
    /// any spelling. An unknown name has no facts set.
    pub fn facts(&self, ctx: Ctx, name: &[u8]) -> CommandFacts {
        self.facts_with(name, |lower| ask_server(ctx, lower))
    }

    /// `facts`, with `ask` answering for a lowercase name never seen before.
    fn facts_with(&self, name: &[u8], ask: impl FnOnce(&[u8]) -> CommandFacts) -> CommandFacts {
        if name.is_empty() || name.len() > FRONT_NAME {
            return self.facts_by_name(name, ask);
        }
        let slot = &self.front[front_slot(name)];
        let entry = slot.get();
        if usize::from(entry.len) == name.len() && &entry.name[..name.len()] == name {
            return entry.facts;
        }
        let facts = self.facts_by_name(name, ask);
        let mut fresh = EMPTY_ENTRY;
        fresh.len = name.len() as u8;
        fresh.name[..name.len()].copy_from_slice(name);
        fresh.facts = facts;
        slot.set(fresh);
        facts
    }

    fn facts_by_name(&self, name: &[u8], ask: impl FnOnce(&[u8]) -> CommandFacts) -> CommandFacts {
        let mut buf = [0u8; 64];
        let Some(lower) = buf.get_mut(..name.len()) else {
            return CommandFacts::default(); // no Redis command has such a name
        };
        for (d, s) in lower.iter_mut().zip(name) {
            *d = s.to_ascii_lowercase();
        }
        let lower: &[u8] = lower;
        if let Some(known) = self.by_name.borrow().get(lower).copied() {
            return known;
        }
        let facts = CommandFacts {
            special: Special::of(lower),
            ..ask(lower)
        };
        // Only the server's commands are kept: a script sending made-up names must not
        // grow the map (an unknown name is asked again when it leaves the front).
        if facts.known {
            self.by_name.borrow_mut().insert(lower.to_vec(), facts);
        }
        facts
    }
}

/// COMMAND INFO <name> -> [[name, arity, [flags...], first, last, step, acl categories,
/// tips, key specs, [subcommands...]]]
fn ask_server(ctx: Ctx, lower: &[u8]) -> CommandFacts {
    let has_flag = |info: &[Tree], flag: &[u8]| matches!(info.get(2), Some(Tree::List(flags)) if flags.iter().any(|f| matches!(f, Tree::Str(s) if s == flag)));
    match call_tree(ctx, c"COMMAND", &[b"INFO", lower]) {
        Some(Tree::List(entries)) => match entries.first() {
            Some(Tree::List(info)) => {
                let int = |i: usize| match info.get(i) {
                    Some(Tree::Int(n)) => *n,
                    _ => 0,
                };
                CommandFacts {
                    known: true,
                    write: has_flag(info, b"write"),
                    stale: has_flag(info, b"stale"),
                    has_subcommands: matches!(info.get(9), Some(Tree::List(subs)) if !subs.is_empty()),
                    keys: KeyRange {
                        first: u16::try_from(int(3)).unwrap_or(0),
                        last: i16::try_from(int(4)).unwrap_or(0),
                        step: u16::try_from(int(5)).unwrap_or(0),
                    },
                    special: Special::None,
                }
            }
            _ => CommandFacts::default(),
        },
        _ => CommandFacts::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRITE: CommandFacts = CommandFacts {
        known: true,
        write: true,
        stale: false,
        has_subcommands: false,
        keys: KeyRange {
            first: 1,
            last: 1,
            step: 1,
        },
        special: Special::None,
    };

    const READ: CommandFacts = CommandFacts {
        write: false,
        ..WRITE
    };

    /// A table whose server knows `set` and `hset` (writes), `client` (with subcommands),
    /// `select`, `get` and `cmd<n>` (reads), and counts how often it is asked.
    fn ask<'a>(asked: &'a Cell<u32>) -> impl Fn(&[u8]) -> CommandFacts + 'a {
        move |lower: &[u8]| {
            asked.set(asked.get() + 1);
            assert!(
                !lower.iter().any(u8::is_ascii_uppercase),
                "asked with {lower:?}"
            );
            match lower {
                b"set" | b"hset" => WRITE,
                b"client" => CommandFacts {
                    known: true,
                    has_subcommands: true,
                    ..CommandFacts::default()
                },
                b"get" | b"select" => READ,
                _ if lower.starts_with(b"cmd") => READ,
                _ => CommandFacts::default(),
            }
        }
    }

    #[test]
    fn the_server_is_asked_once_per_name_in_any_spelling() {
        let table = CommandTable::new();
        let asked = Cell::new(0);
        for _ in 0..3 {
            for spelling in [&b"SET"[..], b"set", b"Set", b"sEt"] {
                assert_eq!(table.facts_with(spelling, ask(&asked)), WRITE);
            }
        }
        assert_eq!(asked.get(), 1);
        assert!(table.facts_with(b"CLIENT", ask(&asked)).has_subcommands);
        assert_eq!(table.facts_with(b"get", ask(&asked)), READ);
        assert_eq!(asked.get(), 3);
        // Special commands are told by name, in any spelling.
        let select = table.facts_with(b"SeLeCt", ask(&asked));
        assert_eq!(select.special, Special::Select);
        assert!(!select.ordinary());
        assert!(table.facts_with(b"get", ask(&asked)).ordinary());
    }

    #[test]
    fn names_sharing_a_front_slot_keep_their_own_facts() {
        let table = CommandTable::new();
        let asked = Cell::new(0);
        // Many names, so that several land in each slot and evict one another.
        let names: Vec<Vec<u8>> = (0..500)
            .map(|i| format!("cmd{i}").into_bytes())
            .chain([b"set".to_vec(), b"hset".to_vec(), b"HSET".to_vec()])
            .collect();
        for _ in 0..2 {
            for name in &names {
                let want =
                    if name.eq_ignore_ascii_case(b"set") || name.eq_ignore_ascii_case(b"hset") {
                        WRITE
                    } else {
                        READ
                    };
                assert_eq!(table.facts_with(name, ask(&asked)), want, "{name:?}");
            }
        }
        // Every lowercase name once; evictions from the front fall back to the map.
        assert_eq!(asked.get(), 502);
    }

    #[test]
    fn unknown_names_are_never_kept_beyond_the_front() {
        let table = CommandTable::new();
        let asked = Cell::new(0);
        // A script sending made-up names cannot grow the table.
        for i in 0..1000 {
            let name = format!("nosuch{i}");
            assert!(!table.facts_with(name.as_bytes(), ask(&asked)).known);
        }
        assert_eq!(asked.get(), 1000);
        assert!(table.by_name.borrow().is_empty());
        // Longer than the front: asked each time, still not kept.
        let long = vec![b'x'; FRONT_NAME + 1];
        assert_eq!(
            table.facts_with(&long, ask(&asked)),
            CommandFacts::default()
        );
        assert_eq!(
            table.facts_with(&long, ask(&asked)),
            CommandFacts::default()
        );
        assert_eq!(asked.get(), 1002);
        // Longer than any command: not asked at all.
        assert_eq!(
            table.facts_with(&[b'x'; 65], ask(&asked)),
            CommandFacts::default()
        );
        assert_eq!(asked.get(), 1002);
        assert!(table.by_name.borrow().is_empty());
    }

    fn range(first: u16, last: i16, step: u16) -> KeyRange {
        KeyRange { first, last, step }
    }

    #[test]
    fn key_ranges_name_the_key_arguments() {
        // GET key / HSET key field value ...
        let one = range(1, 1, 1);
        assert!(!one.holds(0, 4));
        assert!(one.holds(1, 4));
        assert!(!one.holds(2, 4));
        assert!(!one.holds(3, 4));
        // MSET k v k v: every other argument to the end.
        let pairs = range(1, -1, 2);
        let keys: Vec<usize> = (0..7).filter(|&i| pairs.holds(i, 7)).collect();
        assert_eq!(keys, [1, 3, 5]);
        // BLMPOP-like "to the second last": DEL a b c has last -1, step 1.
        let all = range(1, -1, 1);
        assert_eq!((0..4).filter(|&i| all.holds(i, 4)).count(), 3);
        let but_last = range(1, -2, 1);
        assert_eq!(
            (0..5).filter(|&i| but_last.holds(i, 5)).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        // No keys (PUBLISH, or a malformed step).
        assert!(!range(0, 0, 0).holds(1, 3));
        assert!(!range(1, 1, 0).holds(1, 3));
        // A last beyond the arguments sent (too few arguments): only indexes up to it.
        assert!(range(1, -1, 1).holds(1, 2));
        assert!(!range(2, -1, 1).holds(1, 1));
    }

    #[test]
    fn only_reads_and_keys_of_writes_are_shared() {
        let read = CommandFacts {
            known: true,
            keys: range(1, 1, 1),
            ..CommandFacts::default()
        };
        // HGET key field: everything.
        assert!((1..3).all(|i| read.may_share_argument(i, 3)));
        // HSET key field value: the key only.
        assert!(WRITE.may_share_argument(1, 4));
        assert!(!WRITE.may_share_argument(2, 4));
        assert!(!WRITE.may_share_argument(3, 4));
        // A write without keys shares nothing.
        let keyless_write = CommandFacts {
            keys: range(0, 0, 0),
            ..WRITE
        };
        assert!(!(1..4).any(|i| keyless_write.may_share_argument(i, 4)));
        // Unknown commands and containers share nothing.
        assert!(!CommandFacts::default().may_share_argument(1, 2));
        let container = CommandFacts {
            has_subcommands: true,
            ..read
        };
        assert!(!container.may_share_argument(1, 3));
        assert!(!container.may_share_argument(2, 3));
    }
}
