//! The deploy plan: what each file means for the server (create, replace, unchanged), and
//! with `--prune`, which deployed libraries no file holds (delete). Pure.

use std::collections::BTreeMap;

use rx_core::cluster::meta::{digest_of, hex};

use crate::json::Json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Replace,
    Unchanged,
    Delete,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Replace => "replace",
            Action::Unchanged => "unchanged",
            Action::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub name: String,
    pub file: String,
    pub action: Action,
    /// The digest the library must still have when the change is applied (`IFDIGEST`):
    /// forty zeros for a library that must not exist yet.
    pub expected_digest: String,
    pub version: u64,
    pub code: Vec<u8>,
}

const ABSENT: &str = "0000000000000000000000000000000000000000";

/// `sources` are (file, code); `deployed` maps each library on the server to its version
/// and digest. Bundled libraries (version 0) are never pruned: every node loads them.
pub fn plan(
    sources: &[(String, Vec<u8>)],
    deployed: &BTreeMap<String, (u64, String)>,
    prune: bool,
) -> Result<Vec<Planned>, String> {
    let mut out: Vec<Planned> = Vec::new();
    for (file, code) in sources {
        let name = rx_core::header::parse_header(code)
            .map_err(|e| format!("{file}: {}", e.message()))?
            .name;
        if let Some(other) = out.iter().find(|p| p.name == name) {
            return Err(format!(
                "{file} and {} both hold library '{name}'",
                other.file
            ));
        }
        let digest = hex(&digest_of(code));
        let (action, expected, version) = match deployed.get(&name) {
            None => (Action::Create, ABSENT.to_string(), 0),
            Some((v, d)) if *d == digest => (Action::Unchanged, d.clone(), *v),
            Some((v, d)) => (Action::Replace, d.clone(), *v),
        };
        out.push(Planned {
            name,
            file: file.clone(),
            action,
            expected_digest: expected,
            version,
            code: code.clone(),
        });
    }
    if prune {
        for (name, (version, digest)) in deployed {
            if *version > 0 && !out.iter().any(|p| p.name == *name) {
                out.push(Planned {
                    name: name.clone(),
                    file: String::new(),
                    action: Action::Delete,
                    expected_digest: digest.clone(),
                    version: *version,
                    code: Vec::new(),
                });
            }
        }
    }
    Ok(out)
}

/// The plan as a table for people.
pub fn table(plan: &[Planned]) -> String {
    let mut s = format!(
        "{:<10} {:<32} {:>8}  {}\n",
        "action", "library", "version", "file"
    );
    for p in plan {
        let version = if p.action == Action::Create {
            "-".to_string()
        } else {
            p.version.to_string()
        };
        s += &format!(
            "{:<10} {:<32} {:>8}  {}\n",
            p.action.name(),
            p.name,
            version,
            p.file
        );
    }
    s
}

pub fn json(p: &Planned) -> Json {
    let mut j = Json::object();
    j.field("library", Json::string(&p.name));
    j.field("action", Json::string(p.action.name()));
    j.field("file", Json::string(&p.file));
    j.field("deployed_version", Json::Number(p.version));
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lib(name: &str, body: &str) -> Vec<u8> {
        format!("#!lua name={name}\n{body}").into_bytes()
    }

    #[test]
    fn each_file_becomes_create_replace_or_unchanged_and_prune_deletes_the_rest() {
        let a = lib("a", "x");
        let b = lib("b", "y");
        let mut deployed = BTreeMap::new();
        deployed.insert("a".to_string(), (3, hex(&digest_of(&a))));
        deployed.insert("b".to_string(), (5, "f".repeat(40)));
        deployed.insert("old".to_string(), (2, "e".repeat(40)));
        deployed.insert("bundled".to_string(), (0, "d".repeat(40)));
        let sources = vec![
            ("a.lua".to_string(), a),
            ("b.lua".to_string(), b),
            ("c.lua".to_string(), lib("c", "z")),
        ];
        let p = plan(&sources, &deployed, false).unwrap();
        let actions: Vec<_> = p.iter().map(|p| (p.name.as_str(), p.action)).collect();
        assert_eq!(
            actions,
            [
                ("a", Action::Unchanged),
                ("b", Action::Replace),
                ("c", Action::Create)
            ]
        );
        assert_eq!(p[1].expected_digest, "f".repeat(40));
        assert_eq!(p[2].expected_digest, ABSENT);
        let pruned = plan(&sources, &deployed, true).unwrap();
        assert_eq!(pruned.len(), 4);
        assert_eq!(
            (pruned[3].name.as_str(), pruned[3].action),
            ("old", Action::Delete)
        );
        assert!(table(&pruned).contains("delete     old"));
    }

    #[test]
    fn two_files_with_one_library_and_bad_headers_are_refused() {
        let sources = vec![
            ("1.lua".to_string(), lib("a", "x")),
            ("2.lua".to_string(), lib("a", "y")),
        ];
        assert!(plan(&sources, &BTreeMap::new(), false)
            .unwrap_err()
            .contains("both hold library 'a'"));
        let bad = vec![("bad.lua".to_string(), b"no header".to_vec())];
        assert!(plan(&bad, &BTreeMap::new(), false)
            .unwrap_err()
            .starts_with("bad.lua: "));
    }
}
