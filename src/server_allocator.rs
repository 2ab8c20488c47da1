//! Gives the Lua VM the server's own jemalloc when the server exports it.
//!
//! Redis and Valkey built from source link jemalloc in with its functions named `je_malloc`,
//! `je_realloc` and `je_free`, and export them. The VM's many small blocks are then served
//! by jemalloc's per-thread cache, whose code the server keeps hot, instead of glibc's
//! allocator: on the BullMQ replay (Redis 8.0.2) glibc's functions cost the VM about 10M
//! more instructions per round than the server's own Lua spends on allocation, with its
//! own instruction-cache misses. A server linked against a shared jemalloc (Debian's) has
//! no `je_` names: there the C library's `malloc` already is jemalloc, and the VM keeps it.
//! Either way the blocks stay outside `zmalloc`'s accounting (see `rx_lua`'s `vm_memory`).

use std::ffi::{c_char, c_void, CStr};

extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

/// `dlsym`'s "search the global scope" handle on Linux (glibc and musl).
const RTLD_DEFAULT: *mut c_void = std::ptr::null_mut();

/// Looks for the server's jemalloc and, when it is there, makes VMs made from now on use
/// it; `true` if it did. Called once at load, before the first VM is made.
pub fn install() -> bool {
    let find = |name: &CStr| {
        // SAFETY: dlsym with the global handle and a NUL-terminated name only looks up.
        unsafe { dlsym(RTLD_DEFAULT, name.as_ptr()) }
    };
    let (malloc, realloc, free) = (find(c"je_malloc"), find(c"je_realloc"), find(c"je_free"));
    if malloc.is_null() || realloc.is_null() || free.is_null() {
        return false;
    }
    // SAFETY: jemalloc's je_-prefixed functions have the C library's signatures and
    // contracts (jemalloc's documented API, prefixed at its build).
    let blocks = unsafe {
        rx_lua::BlockAllocator {
            malloc: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(usize) -> *mut c_void>(
                malloc,
            ),
            realloc: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void,
            >(realloc),
            free: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void)>(free),
        }
    };
    rx_lua::use_block_allocator(blocks)
}
