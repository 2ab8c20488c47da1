//! The library registry: libraries, the function index across them, and atomic
//! load/replace/delete/flush. Pure: generic over the engine's callable handle `F`,
//! so it knows nothing of mlua or the module API.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;
use std::rc::Rc;

use crate::flags::FunctionFlags;
use crate::glob::glob_match;

#[derive(Debug)]
pub struct FunctionInfo<F> {
    // Boxed strings: a registry may hold tens of thousands of these.
    pub name: Box<str>,
    /// Boxed twice: one pointer here instead of two, as most functions have none.
    pub description: Option<Box<Box<[u8]>>>,
    pub flags: FunctionFlags,
    pub callable: F,
    /// Kept with the function: replacing or deleting its library starts them afresh.
    pub stats: crate::stats::StatsCell,
}

#[derive(Debug)]
pub struct Library<F> {
    // Boxed rather than growable: a registry may hold tens of thousands of these.
    pub name: Box<str>,
    /// The full source, header included, exactly as loaded.
    pub code: Box<[u8]>,
    pub functions: Box<[Rc<FunctionInfo<F>>]>,
    /// Set for a library that a dataset (an RDB, the AOF, the master's stream) carried but
    /// that could not be built on this server: why. Such a library has no functions and is
    /// neither listed nor dumped, but it keeps its name and is saved again with every RDB,
    /// so nothing is lost; `RX.LOAD REPLACE` or `RX.DELETE` ends it.
    pub set_aside: Option<Box<String>>,
}

/// How `install_all` treats libraries that already exist (Redis's RESTORE policies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestorePolicy {
    /// A library that already exists aborts the whole batch.
    Append,
    /// Same-named libraries are replaced; the others stay.
    Replace,
    /// Everything is deleted first.
    Flush,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryError {
    LibraryExists(String),
    NoFunctions,
    FunctionExists(String),
    LibraryNotFound,
}

impl RegistryError {
    /// The message after the `ERR ` code, identical to native Redis.
    pub fn message(&self) -> String {
        match self {
            RegistryError::LibraryExists(n) => format!("Library '{n}' already exists"),
            RegistryError::NoFunctions => "No functions registered".into(),
            RegistryError::FunctionExists(n) => format!("Function {n} already exists"),
            RegistryError::LibraryNotFound => "Library not found".into(),
        }
    }
}

pub struct Registry<F> {
    /// Boxed: B-tree nodes hold eleven entries whether full or not, so small entries keep
    /// a large registry small.
    libraries: BTreeMap<Box<str>, Box<Library<F>>>,
    /// Keyed by the lowercased name: Redis looks functions up case-insensitively.
    functions: HashMap<Box<[u8]>, Rc<FunctionInfo<F>>>,
}

/// The index key of a function name.
fn fold(name: &[u8]) -> Box<[u8]> {
    name.to_ascii_lowercase().into_boxed_slice()
}

impl<F> Clone for Library<F> {
    fn clone(&self) -> Self {
        Library {
            name: self.name.clone(),
            code: self.code.clone(),
            functions: self.functions.clone(),
            set_aside: self.set_aside.clone(),
        }
    }
}

/// A shallow copy: the functions themselves are shared.
impl<F> Clone for Registry<F> {
    fn clone(&self) -> Self {
        Registry {
            libraries: self.libraries.clone(),
            functions: self.functions.clone(),
        }
    }
}

impl<F> Default for Registry<F> {
    fn default() -> Self {
        Registry {
            libraries: BTreeMap::new(),
            functions: HashMap::default(),
        }
    }
}

impl<F> Registry<F> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The check Redis makes before running a library's code at all.
    pub fn check_loadable(&self, name: &str, replace: bool) -> Result<(), RegistryError> {
        if !replace && self.libraries.contains_key(name) {
            return Err(RegistryError::LibraryExists(name.to_string()));
        }
        Ok(())
    }

    /// Every check `install` makes, without installing (`RX.LOAD ... DRYRUN`).
    pub fn check_install(&self, lib: &Library<F>, replace: bool) -> Result<(), RegistryError> {
        self.check_loadable(&lib.name, replace)?;
        if lib.functions.is_empty() {
            return Err(RegistryError::NoFunctions);
        }
        for f in &lib.functions {
            if let Some(owner) = self.functions.get(&fold(f.name.as_bytes())) {
                // Only the library being replaced may already own the name.
                let replaced_owns_it = self
                    .libraries
                    .get(&*lib.name)
                    .is_some_and(|old| old.functions.iter().any(|g| Rc::ptr_eq(g, owner)));
                if !replaced_owns_it {
                    return Err(RegistryError::FunctionExists(f.name.to_string()));
                }
            }
        }
        Ok(())
    }

    /// Installs a compiled library. Every check happens before anything changes, so a
    /// failure leaves the registry (and any library being replaced) exactly as it was.
    /// Returns the replaced library, if any.
    pub fn install(
        &mut self,
        lib: Library<F>,
        replace: bool,
    ) -> Result<Option<Library<F>>, RegistryError> {
        self.check_install(&lib, replace)?;
        let old = self.remove(&lib.name);
        for f in &lib.functions {
            // Names differing only in case may coexist in one library, as in Redis, where
            // which one answers depends on dict order; here the last registered does.
            self.functions.insert(fold(f.name.as_bytes()), Rc::clone(f));
        }
        self.libraries.insert(lib.name.clone(), Box::new(lib));
        Ok(old)
    }

    /// Installs a batch of libraries, all or nothing: on any error the registry is exactly
    /// as before. Returns the libraries that were replaced or flushed.
    pub fn install_all(
        &mut self,
        libs: Vec<Library<F>>,
        policy: RestorePolicy,
    ) -> Result<Vec<Library<F>>, RegistryError> {
        let mut next = self.clone();
        let mut removed = Vec::new();
        if policy == RestorePolicy::Flush {
            removed.extend(next.flush());
        }
        for lib in libs {
            removed.extend(next.install(lib, policy == RestorePolicy::Replace)?);
        }
        *self = next;
        Ok(removed)
    }

    /// Keeps the source of a library that could not be built (see `Library::set_aside`),
    /// in place of any library of that name.
    pub fn set_aside(&mut self, name: &str, code: &[u8], error: &str) -> Option<Library<F>> {
        let old = self.remove(name);
        self.libraries.insert(
            name.into(),
            Box::new(Library {
                name: name.into(),
                code: code.into(),
                functions: Box::new([]),
                set_aside: Some(Box::new(error.to_string())),
            }),
        );
        old
    }

    /// Every library's name, set-aside ones included, in name order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.libraries.keys().map(|n| &**n)
    }

    /// The libraries that were set aside, in name order.
    pub fn set_aside_libraries(&self) -> impl Iterator<Item = &Library<F>> {
        self.libraries
            .values()
            .map(|l| &**l)
            .filter(|l| l.set_aside.is_some())
    }

    pub fn delete(&mut self, name: &str) -> Result<Library<F>, RegistryError> {
        self.remove(name).ok_or(RegistryError::LibraryNotFound)
    }

    fn remove(&mut self, name: &str) -> Option<Library<F>> {
        let lib = *self.libraries.remove(name)?;
        for f in &lib.functions {
            self.functions.remove(&fold(f.name.as_bytes()));
        }
        Some(lib)
    }

    /// Removes everything, handing the libraries back so the caller decides when to drop them.
    pub fn flush(&mut self) -> Vec<Library<F>> {
        self.functions.clear();
        std::mem::take(&mut self.libraries)
            .into_values()
            .map(|lib| *lib)
            .collect()
    }

    pub fn function(&self, name: &[u8]) -> Option<Rc<FunctionInfo<F>>> {
        if name.iter().any(u8::is_ascii_uppercase) {
            self.functions.get(&fold(name)).cloned()
        } else {
            self.functions.get(name).cloned()
        }
    }

    /// The library of that name, set aside or not.
    pub fn library(&self, name: &str) -> Option<&Library<F>> {
        self.libraries.get(name).map(|lib| &**lib)
    }

    /// Built libraries in name order, optionally filtered by a Redis glob pattern (which,
    /// as in Redis, ignores case).
    pub fn list<'a>(
        &'a self,
        pattern: Option<&'a [u8]>,
    ) -> impl Iterator<Item = &'a Library<F>> + 'a {
        self.libraries
            .values()
            .map(|l| &**l)
            .filter(|l| l.set_aside.is_none())
            .filter(move |l| pattern.is_none_or(|p| glob_match(p, l.name.as_bytes(), true)))
    }

    /// Every function with its library's name, by library then registration order.
    pub fn functions(&self) -> impl Iterator<Item = (&str, &Rc<FunctionInfo<F>>)> {
        self.libraries
            .values()
            .flat_map(|l| l.functions.iter().map(move |f| (&*l.name, f)))
    }

    /// Built libraries (not those set aside).
    pub fn library_count(&self) -> usize {
        self.libraries
            .values()
            .filter(|l| l.set_aside.is_none())
            .count()
    }

    pub fn function_count(&self) -> usize {
        self.functions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake compiled function: the registry must work with any engine's handle.
    type Fake = u32;

    /// The library that owns the function the index answers for `name`.
    fn owner<'a>(r: &'a Registry<Fake>, name: &[u8]) -> Option<&'a str> {
        let f = r.function(name)?;
        r.functions()
            .find(|(_, g)| Rc::ptr_eq(g, &f))
            .map(|(lib, _)| lib)
    }

    fn lib(name: &str, fns: &[&str]) -> Library<Fake> {
        Library {
            name: name.into(),
            code: format!("#!lua name={name}\n").into_bytes().into(),
            functions: fns
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    Rc::new(FunctionInfo {
                        name: (*f).into(),
                        description: None,
                        flags: FunctionFlags::empty(),
                        callable: i as u32,
                        stats: Default::default(),
                    })
                })
                .collect(),
            set_aside: None,
        }
    }

    #[test]
    fn a_set_aside_library_keeps_its_name_and_code_until_replaced_or_deleted() {
        let mut r = Registry::new();
        r.install(lib("a", &["f"]), false).unwrap();
        assert!(r
            .set_aside("b", b"#!lua name=b\nboom", "ERR boom")
            .is_none());
        // Not listed, counted or callable, but it exists: a plain load must not take it.
        assert_eq!(r.list(None).map(|l| &*l.name).collect::<Vec<_>>(), ["a"]);
        assert_eq!((r.library_count(), r.function_count()), (1, 1));
        let kept: Vec<_> = r.set_aside_libraries().collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(&*kept[0].code, b"#!lua name=b\nboom");
        assert_eq!(
            kept[0].set_aside.as_deref().map(String::as_str),
            Some("ERR boom")
        );
        assert_eq!(
            r.install(lib("b", &["g"]), false).unwrap_err(),
            RegistryError::LibraryExists("b".into())
        );
        // It survives a failed replace (here a function name clash) untouched...
        assert!(r.install(lib("b", &["f"]), true).is_err());
        assert!(r.library("b").unwrap().set_aside.is_some());
        // ...and a successful one ends it.
        let old = r.install(lib("b", &["g"]), true).unwrap().unwrap();
        assert!(old.set_aside.is_some());
        assert_eq!(r.set_aside_libraries().count(), 0);
        assert_eq!(owner(&r, b"g"), Some("b"));
        // Deleting and flushing remove set-aside libraries too.
        r.set_aside("c", b"x", "e");
        assert!(r.delete("c").unwrap().set_aside.is_some());
        r.set_aside("c", b"x", "e");
        let flushed: Vec<_> = r.flush().into_iter().map(|l| l.name).collect();
        assert_eq!(flushed.len(), 3);
        assert_eq!(r.set_aside_libraries().count(), 0);
    }

    #[test]
    fn load_and_lookup() {
        let mut r = Registry::new();
        r.install(lib("a", &["f", "g"]), false).unwrap();
        assert_eq!(owner(&r, b"g"), Some("a"));
        assert!(r.function(b"h").is_none());
        assert_eq!((r.library_count(), r.function_count()), (1, 2));
    }

    #[test]
    fn existing_library_needs_replace() {
        let mut r = Registry::new();
        r.install(lib("a", &["f"]), false).unwrap();
        assert_eq!(
            r.install(lib("a", &["g"]), false).unwrap_err(),
            RegistryError::LibraryExists("a".into())
        );
        assert!(r.function(b"f").is_some());
        let old = r.install(lib("a", &["g"]), true).unwrap().unwrap();
        assert_eq!(&*old.functions[0].name, "f");
        assert!(r.function(b"f").is_none());
        assert!(r.function(b"g").is_some());
    }

    #[test]
    fn failed_replace_leaves_old_library_intact() {
        let mut r = Registry::new();
        r.install(lib("a", &["f"]), false).unwrap();
        r.install(lib("b", &["g"]), false).unwrap();
        // Replacing `a` with a library that steals `g` from `b` must change nothing.
        let err = r.install(lib("a", &["f2", "g"]), true).unwrap_err();
        assert_eq!(err, RegistryError::FunctionExists("g".into()));
        assert_eq!(owner(&r, b"f"), Some("a"));
        assert_eq!(owner(&r, b"g"), Some("b"));
        assert!(r.function(b"f2").is_none());
        // An empty replacement is refused the same way.
        assert_eq!(
            r.install(lib("a", &[]), true).unwrap_err(),
            RegistryError::NoFunctions
        );
        assert_eq!(r.library("a").unwrap().functions.len(), 1);
    }

    #[test]
    fn replace_may_keep_its_own_function_names() {
        let mut r = Registry::new();
        r.install(lib("a", &["f"]), false).unwrap();
        r.install(lib("a", &["f", "h"]), true).unwrap();
        assert_eq!(r.function_count(), 2);
    }

    #[test]
    fn function_names_are_case_insensitive_last_wins() {
        let mut r = Registry::new();
        r.install(lib("a", &["Hello", "hello"]), false).unwrap();
        assert_eq!(&*r.function(b"HELLO").unwrap().name, "hello");
        assert_eq!(&*r.function(b"Hello").unwrap().name, "hello");
        assert_eq!(
            r.install(lib("b", &["HeLLo"]), false).unwrap_err(),
            RegistryError::FunctionExists("HeLLo".into())
        );
        r.delete("a").unwrap();
        assert!(r.function(b"hello").is_none());
    }

    #[test]
    fn install_all_is_all_or_nothing() {
        let mut r = Registry::new();
        r.install(lib("a", &["f"]), false).unwrap();
        r.install(lib("b", &["g"]), false).unwrap();
        // APPEND: an existing library aborts everything, including the new ones before it.
        let err = r
            .install_all(
                vec![lib("c", &["h"]), lib("a", &["f2"])],
                RestorePolicy::Append,
            )
            .unwrap_err();
        assert_eq!(err, RegistryError::LibraryExists("a".into()));
        assert!(r.library("c").is_none());
        // A function owned by another library aborts too.
        let err = r
            .install_all(
                vec![lib("c", &["h"]), lib("d", &["g"])],
                RestorePolicy::Replace,
            )
            .unwrap_err();
        assert_eq!(err, RegistryError::FunctionExists("g".into()));
        assert!(r.library("c").is_none() && r.function(b"h").is_none());
        // REPLACE keeps others; FLUSH drops them.
        r.install_all(
            vec![lib("a", &["f3"]), lib("c", &["h"])],
            RestorePolicy::Replace,
        )
        .unwrap();
        assert_eq!(
            r.list(None).map(|l| &*l.name).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert!(r.function(b"f").is_none() && r.function(b"f3").is_some());
        let removed = r
            .install_all(vec![lib("z", &["zz"])], RestorePolicy::Flush)
            .unwrap();
        assert_eq!(removed.len(), 3);
        assert_eq!(r.list(None).map(|l| &*l.name).collect::<Vec<_>>(), ["z"]);
        assert!(r.function(b"g").is_none());
    }

    #[test]
    fn delete_and_flush() {
        let mut r = Registry::new();
        r.install(lib("a", &["f"]), false).unwrap();
        r.install(lib("b", &["g"]), false).unwrap();
        assert_eq!(r.delete("zz").unwrap_err(), RegistryError::LibraryNotFound);
        r.delete("a").unwrap();
        assert!(r.function(b"f").is_none());
        assert_eq!(r.flush().len(), 1);
        assert_eq!((r.library_count(), r.function_count()), (0, 0));
    }

    #[test]
    fn list_is_sorted_and_filtered() {
        let mut r = Registry::new();
        for n in ["zeta", "alpha", "alps"] {
            r.install(lib(n, &[&format!("{n}_f")]), false).unwrap();
        }
        let all: Vec<_> = r.list(None).map(|l| &*l.name).collect();
        assert_eq!(all, ["alpha", "alps", "zeta"]);
        let some: Vec<_> = r.list(Some(b"AL*")).map(|l| &*l.name).collect();
        assert_eq!(some, ["alpha", "alps"]);
    }
}
