//! The VM's own allocator: every block LuaJIT asks for comes from the C library's
//! `malloc`/`realloc`/`free`, counted here against the VM's memory cap.
//!
//! Why not Rust's global allocator (which, inside the server, is the module API's
//! `RedisModule_Alloc`): that path goes through the server's `zmalloc`, which asks the
//! allocator for each block's usable size on every allocation and every free to keep
//! `used_memory` exact. A script that builds strings and tables makes hundreds of small
//! allocations per call, and on BullMQ's scripts that bookkeeping was the largest single
//! cost RX had over native (`malloc_usable_size` at 3% of the server's cycles against 1.3%).
//! The servers' own Lua VMs allocate the same way as this file does, outside `zmalloc`;
//! their Lua memory is reported apart from `used_memory`, and RX's is in `INFO rx`.

use std::cell::Cell;
use std::os::raw::c_void;
use std::ptr;

extern "C" {
    fn malloc(size: usize) -> *mut c_void;
    fn realloc(block: *mut c_void, size: usize) -> *mut c_void;
    fn free(block: *mut c_void);
}

/// What the VM holds and may hold. It lives in a box for the VM's whole life: LuaJIT keeps
/// its address as the allocator's user data.
pub(crate) struct VmMemory {
    used: Cell<usize>,
    /// 0: no cap.
    limit: Cell<usize>,
}

impl VmMemory {
    pub(crate) fn new(limit: usize) -> Box<VmMemory> {
        Box::new(VmMemory {
            used: Cell::new(0),
            limit: Cell::new(limit),
        })
    }

    /// Bytes the VM holds: the sum of the sizes it asked for.
    pub(crate) fn used(&self) -> usize {
        self.used.get()
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.get()
    }

    pub(crate) fn set_limit(&self, bytes: usize) {
        self.limit.set(bytes);
    }

    /// Whether growing by `grow` bytes stays within the cap.
    fn admits(&self, grow: usize) -> bool {
        let limit = self.limit.get();
        limit == 0 || self.used.get().saturating_add(grow) <= limit
    }
}

/// The `lua_Alloc` of RX's VM, with Lua 5.1's contract: `nsize` 0 frees `block` (of
/// `osize` bytes); otherwise it allocates (`block` null) or resizes, and returns null when
/// it cannot, leaving `block` as it was. Shrinking always succeeds.
///
/// # Safety
/// `ud` is the `VmMemory` the VM was created with, and `block` null or a block this
/// function returned for this VM, of `osize` bytes.
pub(crate) unsafe extern "C" fn allocate(
    ud: *mut c_void,
    block: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    // SAFETY: the VM passes back the user data it was created with: a live `VmMemory`.
    let memory = unsafe { &*(ud as *const VmMemory) };
    let old = if block.is_null() { 0 } else { osize };
    if nsize == 0 {
        if !block.is_null() {
            // SAFETY: `block` came from malloc/realloc below.
            unsafe { free(block) };
            memory.used.set(memory.used.get() - old);
        }
        return ptr::null_mut();
    }
    if nsize > old && !memory.admits(nsize - old) {
        return ptr::null_mut();
    }
    let new = if block.is_null() {
        // SAFETY: plain C allocation of a non-zero size.
        unsafe { malloc(nsize) }
    } else {
        // SAFETY: `block` came from malloc/realloc below and is still live.
        unsafe { realloc(block, nsize) }
    };
    if new.is_null() {
        // A shrink that the C allocator refuses keeps the old, larger block: Lua treats a
        // failed shrink as fatal, and the old block is still valid.
        return if nsize <= old { block } else { ptr::null_mut() };
    }
    memory.used.set(memory.used.get() - old + nsize);
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(m: &VmMemory, block: *mut c_void, osize: usize, nsize: usize) -> *mut c_void {
        // SAFETY: blocks are only those this test got from `allocate` with `m`.
        unsafe { allocate(m as *const VmMemory as *mut c_void, block, osize, nsize) }
    }

    #[test]
    fn counts_what_is_allocated_resized_and_freed() {
        let m = VmMemory::new(0);
        let a = call(&m, ptr::null_mut(), 0, 100);
        assert!(!a.is_null());
        assert_eq!(m.used(), 100);
        let a = call(&m, a, 100, 300);
        assert_eq!(m.used(), 300);
        let a = call(&m, a, 300, 50);
        assert_eq!(m.used(), 50);
        assert!(call(&m, a, 50, 0).is_null());
        assert_eq!(m.used(), 0);
    }

    #[test]
    fn refuses_growth_past_the_cap_and_keeps_the_block() {
        let m = VmMemory::new(1000);
        let a = call(&m, ptr::null_mut(), 0, 600);
        assert!(call(&m, ptr::null_mut(), 0, 401).is_null());
        assert_eq!(m.used(), 600);
        assert!(call(&m, a, 600, 1001).is_null());
        assert_eq!(m.used(), 600);
        // The refused resize left the block usable; growing within the cap works.
        let a = call(&m, a, 600, 1000);
        assert!(!a.is_null());
        assert_eq!(m.used(), 1000);
        // Shrinking is never refused, even at the cap.
        let a = call(&m, a, 1000, 10);
        assert_eq!(m.used(), 10);
        m.set_limit(5);
        let a = call(&m, a, 10, 8);
        assert!(!a.is_null());
        assert_eq!(m.used(), 8);
        call(&m, a, 8, 0);
        assert_eq!(m.used(), 0);
    }
}
