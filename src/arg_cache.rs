//! Server strings for the short arguments scripts send again and again: key names, field
//! names, options. Passed to `RedisModule_Call` with `s`, the server takes a reference to
//! one of these instead of allocating, copying and freeing a new object for every argument
//! of every command (what `b` costs): on 20 `HGET`s, about 300 of the 820 instructions a
//! `redis.call` cost over the server's own scripting. The command's name cannot be shared:
//! `RedisModule_Call` takes it as a C string.
//!
//! A string shared this way may outlive the command (the server may keep a reference, to
//! propagate the command, say); that is safe because neither RX nor the server changes a
//! string it does not hold alone. Which arguments may be shared is the command's business
//! (`CommandFacts::may_share_argument`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use redis_module::raw;

use crate::ffi::api;

/// Longest argument kept (longer ones are rare in the commands scripts repeat).
pub const MAX_SHARED_LEN: usize = 64;
/// Slots (a power of two), direct-mapped: a hot script uses a few dozen distinct strings.
const SLOTS: usize = 256;

/// A slot is chosen by where the bytes asked for live (a Lua string's interned text, the
/// same for the same string while the script holds it); a hit is decided by comparing the
/// bytes themselves.
#[derive(Clone, Copy)]
struct Entry {
    string: *mut raw::RedisModuleString,
    /// The server string's bytes, read once: the server never changes a string RX holds a
    /// reference to.
    text: *const u8,
    len: usize,
}

const EMPTY: Entry = Entry {
    string: std::ptr::null_mut(),
    text: std::ptr::null(),
    len: 0,
};

/// The strings, one per slot. Never freed: they live as long as the module, on the main
/// thread (the only one that runs scripts).
pub struct ArgCache {
    slots: [Cell<Entry>; SLOTS],
    /// Strings replaced while a command's arguments were being gathered: one of them may
    /// be an earlier argument of the same command, so they are let go only after the call.
    replaced: RefCell<Vec<*mut raw::RedisModuleString>>,
}

thread_local! {
    static CACHE: Rc<ArgCache> = Rc::new(ArgCache {
        slots: [const { Cell::new(EMPTY) }; SLOTS],
        replaced: RefCell::new(Vec::new()),
    });
}

/// The cache, for a run to hold (one thread-local access per run, none per command).
pub fn cache() -> Rc<ArgCache> {
    CACHE.with(Rc::clone)
}

fn slot_of(at: usize, len: usize) -> usize {
    ((at >> 3) ^ (at >> 11) ^ len) & (SLOTS - 1)
}

impl ArgCache {
    /// Strings for one command's arguments, valid until the lease ends.
    pub fn lease(&self) -> ArgLease<'_> {
        ArgLease { cache: self }
    }
}

/// Hands out the cache's strings for one command. A string replaced meanwhile (two
/// arguments of the command wanting the same slot) is freed when the lease ends, after
/// `RedisModule_Call` has taken its own references.
pub struct ArgLease<'a> {
    cache: &'a ArgCache,
}

impl ArgLease<'_> {
    /// A server string holding `bytes` (at most `MAX_SHARED_LEN` of them), valid while
    /// the lease lives.
    pub fn string(&self, bytes: &[u8]) -> *mut raw::RedisModuleString {
        debug_assert!(bytes.len() <= MAX_SHARED_LEN);
        let slot = &self.cache.slots[slot_of(bytes.as_ptr() as usize, bytes.len())];
        let entry = slot.get();
        // SAFETY: `text` points into `string`, which this slot holds a reference to.
        if entry.len == bytes.len()
            && !entry.string.is_null()
            && unsafe { std::slice::from_raw_parts(entry.text, entry.len) } == bytes
        {
            return entry.string;
        }
        self.replace(slot, bytes)
    }

    #[cold]
    #[inline(never)]
    fn replace(&self, slot: &Cell<Entry>, bytes: &[u8]) -> *mut raw::RedisModuleString {
        let old = slot.get();
        if !old.string.is_null() {
            self.cache.replaced.borrow_mut().push(old.string);
        }
        // SAFETY: a null context makes a string no context owns; the bytes are copied.
        unsafe {
            let string = api!(RedisModule_CreateString)(
                std::ptr::null_mut(),
                bytes.as_ptr().cast(),
                bytes.len(),
            );
            let mut len = 0usize;
            let text = api!(RedisModule_StringPtrLen)(string, &mut len).cast::<u8>();
            slot.set(Entry { string, text, len });
            string
        }
    }
}

impl Drop for ArgLease<'_> {
    fn drop(&mut self) {
        if !self.cache.replaced.borrow().is_empty() {
            self.free_replaced();
        }
    }
}

impl ArgLease<'_> {
    #[cold]
    #[inline(never)]
    fn free_replaced(&self) {
        for string in self.cache.replaced.borrow_mut().drain(..) {
            // SAFETY: the slot's reference, given up once; the server may hold others.
            unsafe { api!(RedisModule_FreeString)(std::ptr::null_mut(), string) };
        }
    }
}
