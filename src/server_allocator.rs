//! Gives the Lua VM an arena of the server's own jemalloc when the server exports it.
//!
//! Redis and Valkey built from source link jemalloc in with its functions named `je_*`,
//! and export them. The VM's many small blocks are then served by jemalloc through a
//! thread cache of their own, whose code the server keeps hot, instead of glibc's
//! allocator: on the BullMQ replay (Redis 8.0.2) glibc's functions cost the VM about 10M
//! more instructions per round than the server's own Lua spends on allocation, with their
//! own instruction-cache misses.
//!
//! The blocks go to an arena created for them (`arenas.create`), as the server's own Lua
//! does, never to the arena of the keyspace: the active defragmenter moves only the
//! server's objects, and VM blocks among them would keep the slabs it empties alive. A
//! server linked against a shared jemalloc (Debian's) has no `je_` names: there the C
//! library's `malloc` already is jemalloc, and the VM keeps it. Either way the blocks stay
//! outside `zmalloc`'s accounting (see `rx_lua`'s `vm_memory`); jemalloc's own totals
//! (`INFO memory`'s `allocator_*`) include the arena, as they include glibc's heap nowhere.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

/// `dlsym`'s "search the global scope" handle on Linux (glibc and musl).
const RTLD_DEFAULT: *mut c_void = std::ptr::null_mut();

type Mallctl = unsafe extern "C" fn(
    name: *const c_char,
    old: *mut c_void,
    old_len: *mut usize,
    new: *mut c_void,
    new_len: usize,
) -> c_int;

/// jemalloc's `MALLOCX_ARENA(a) | MALLOCX_TCACHE(tc)` (jemalloc_macros.h, stable since 4.0).
fn arena_and_cache_flags(arena: c_uint, tcache: c_uint) -> c_int {
    (((arena as c_int) + 1) << 20) | (((tcache as c_int) + 2) << 8)
}

/// Looks for the server's jemalloc and, when it is there, makes VMs made from now on use
/// an arena and thread cache of their own in it; `true` if it did. Called once at load,
/// before the first VM is made.
pub fn install() -> bool {
    let find = |name: &CStr| {
        // SAFETY: dlsym with the global handle and a NUL-terminated name only looks up.
        unsafe { dlsym(RTLD_DEFAULT, name.as_ptr()) }
    };
    let symbols = [
        find(c"je_mallctl"),
        find(c"je_mallocx"),
        find(c"je_rallocx"),
        find(c"je_dallocx"),
    ];
    if symbols.iter().any(|s| s.is_null()) {
        return false;
    }
    // SAFETY: these are jemalloc's documented functions (`mallctl`, `mallocx`, `rallocx`,
    // `dallocx`), prefixed `je_` at its build, with exactly these C signatures.
    let (mallctl, allocate, resize, release) = unsafe {
        (
            std::mem::transmute::<*mut c_void, Mallctl>(symbols[0]),
            std::mem::transmute::<*mut c_void, unsafe extern "C" fn(usize, c_int) -> *mut c_void>(
                symbols[1],
            ),
            std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*mut c_void, usize, c_int) -> *mut c_void,
            >(symbols[2]),
            std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void, c_int)>(
                symbols[3],
            ),
        )
    };
    let create = |what: &CStr| -> Option<c_uint> {
        let mut id: c_uint = 0;
        let mut len = std::mem::size_of::<c_uint>();
        // SAFETY: "arenas.create" and "tcache.create" write one unsigned into `id`, whose
        // size `len` gives; nothing is written to the server's settings.
        let err = unsafe {
            mallctl(
                what.as_ptr(),
                (&mut id as *mut c_uint).cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        (err == 0).then_some(id)
    };
    let (Some(arena), Some(tcache)) = (create(c"arenas.create"), create(c"tcache.create")) else {
        return false;
    };
    rx_lua::use_block_allocator(rx_lua::BlockAllocator {
        allocate,
        resize,
        release,
        flags: arena_and_cache_flags(arena, tcache),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_jemallocs_arena_and_cache_macros() {
        // MALLOCX_ARENA(0) = 1 << 20, MALLOCX_TCACHE(0) = 2 << 8.
        assert_eq!(arena_and_cache_flags(0, 0), (1 << 20) | (2 << 8));
        assert_eq!(arena_and_cache_flags(5, 3), (6 << 20) | (5 << 8));
    }
}
