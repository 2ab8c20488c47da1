//! The bundled standard library (`lua-stdlib/*.lua`), embedded at build time.
//!
//! The libraries chosen with the `stdlib` module argument (all by default) are loaded when
//! the module loads, and again after every dataset load (startup, DEBUG RELOAD, a replica's
//! full sync), for any that the dataset did not carry. They are ordinary libraries: they
//! can be listed, called, replaced, deleted and flushed, and they persist like any other.
//! RX never overwrites a library that already exists under a bundled name, so a user's own
//! `lock` library, or a deliberately replaced bundled one, stays as it is.

use crate::engine::LogLevel;
use crate::ffi::{log, Ctx};
use crate::libraries::{bundled_version, load_library, record_exact};
use crate::state;

/// Name and source of every bundled library.
pub const BUNDLED: &[(&str, &str)] = &[
    ("cache", include_str!("../lua-stdlib/cache.lua")),
    ("cart", include_str!("../lua-stdlib/cart.lua")),
    ("counter", include_str!("../lua-stdlib/counter.lua")),
    ("ecommerce", include_str!("../lua-stdlib/ecommerce.lua")),
    ("lock", include_str!("../lua-stdlib/lock.lua")),
    ("queue", include_str!("../lua-stdlib/queue.lua")),
    ("ratelimit", include_str!("../lua-stdlib/ratelimit.lua")),
    ("session", include_str!("../lua-stdlib/session.lua")),
    ("workflow", include_str!("../lua-stdlib/workflow.lua")),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    Only(Vec<String>),
}

impl Selection {
    /// `all`, `none`, or a comma-separated list of bundled library names.
    pub fn parse(arg: &[u8]) -> Result<Selection, String> {
        let text = String::from_utf8_lossy(arg).to_ascii_lowercase();
        match text.as_str() {
            "all" => Ok(Selection::All),
            "none" => Ok(Selection::Only(Vec::new())),
            list => {
                let names: Vec<String> = list
                    .split(',')
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty())
                    .collect();
                for n in &names {
                    if !BUNDLED.iter().any(|(b, _)| b == n) {
                        let known: Vec<&str> = BUNDLED.iter().map(|(b, _)| *b).collect();
                        return Err(format!(
                            "unknown stdlib library '{n}' (bundled: {})",
                            known.join(", ")
                        ));
                    }
                }
                Ok(Selection::Only(names))
            }
        }
    }

    fn includes(&self, name: &str) -> bool {
        match self {
            Selection::All => true,
            Selection::Only(names) => names.iter().any(|n| n == name),
        }
    }
}

thread_local! {
    static SELECTION: std::cell::RefCell<Selection> = const { std::cell::RefCell::new(Selection::All) };
}

pub fn set_selection(selection: Selection) {
    SELECTION.with(|s| *s.borrow_mut() = selection);
}

/// Loads every selected bundled library that is not there yet.
pub fn load_missing(ctx: Ctx) {
    let selection = SELECTION.with(|s| s.borrow().clone());
    for (name, code) in BUNDLED {
        if !selection.includes(name) || state::with(|s| s.registry.borrow().library(name).is_some())
        {
            continue;
        }
        let Some(version) = bundled_version(name) else {
            continue;
        };
        match load_library(ctx, code.as_bytes(), false, "RX.LOAD") {
            Ok(loaded) => record_exact(
                &loaded,
                crate::cluster::meta::Entry::live(version, code.as_bytes()),
            ),
            Err(e) => log(
                ctx,
                LogLevel::Warning,
                format!("RX: bundled library '{name}' was not loaded: {e}").as_bytes(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_library_has_a_matching_header() {
        for (name, code) in BUNDLED {
            let h = crate::header::parse_header(code.as_bytes())
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(&h.name, name);
        }
    }

    #[test]
    fn selection_parsing() {
        assert_eq!(Selection::parse(b"ALL").unwrap(), Selection::All);
        assert_eq!(Selection::parse(b"none").unwrap(), Selection::Only(vec![]));
        assert!(Selection::parse(b"nope")
            .unwrap_err()
            .contains("unknown stdlib library 'nope'"));
        if let Some((first, _)) = BUNDLED.first() {
            assert_eq!(
                Selection::parse(first.as_bytes()).unwrap(),
                Selection::Only(vec![first.to_string()])
            );
        }
    }
}
