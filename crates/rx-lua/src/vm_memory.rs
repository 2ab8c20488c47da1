//! The VM's own allocator: every block LuaJIT asks for comes from a C allocator's
//! `malloc`/`realloc`/`free`, counted here against the VM's memory cap.
//!
//! Why not Rust's global allocator (which, inside the server, is the module API's
//! `RedisModule_Alloc`): that path goes through the server's `zmalloc`, which asks the
//! allocator for each block's usable size on every allocation and every free to keep
//! `used_memory` exact. A script that builds strings and tables makes hundreds of small
//! allocations per call, and on BullMQ's scripts that bookkeeping was the largest single
//! cost RX had over native (`malloc_usable_size` at 3% of the server's cycles against 1.3%).
//! The servers' own Lua VMs allocate outside `zmalloc` too; their Lua memory is reported
//! apart from `used_memory`, and RX's is in `INFO rx`.
//!
//! Which C allocator: the C library's, unless the host names another before the first VM
//! is made (`use_block_allocator`); the module names a jemalloc arena of the server's own
//! where the server exports jemalloc. Each VM keeps the allocator it was made with for all
//! its blocks.

use std::cell::Cell;
use std::os::raw::{c_int, c_void};
use std::ptr;
use std::sync::OnceLock;

extern "C" {
    fn malloc(size: usize) -> *mut c_void;
    fn realloc(block: *mut c_void, size: usize) -> *mut c_void;
    fn free(block: *mut c_void);
}

/// A C allocator in jemalloc's shape: `allocate(size, flags)`, `resize(block, size, flags)`
/// (null on failure, the block left as it was) and `release(block, flags)`, each given
/// `flags`.
#[derive(Clone, Copy)]
pub struct BlockAllocator {
    pub allocate: unsafe extern "C" fn(usize, c_int) -> *mut c_void,
    pub resize: unsafe extern "C" fn(*mut c_void, usize, c_int) -> *mut c_void,
    pub release: unsafe extern "C" fn(*mut c_void, c_int),
    pub flags: c_int,
}

unsafe extern "C" fn c_allocate(size: usize, _flags: c_int) -> *mut c_void {
    // SAFETY: forwards the caller's request to the C library.
    unsafe { malloc(size) }
}

unsafe extern "C" fn c_resize(block: *mut c_void, size: usize, _flags: c_int) -> *mut c_void {
    // SAFETY: forwards the caller's request to the C library.
    unsafe { realloc(block, size) }
}

unsafe extern "C" fn c_release(block: *mut c_void, _flags: c_int) {
    // SAFETY: forwards the caller's request to the C library.
    unsafe { free(block) }
}

const C_LIBRARY: BlockAllocator = BlockAllocator {
    allocate: c_allocate,
    resize: c_resize,
    release: c_release,
    flags: 0,
};

static CHOSEN: OnceLock<BlockAllocator> = OnceLock::new();

/// Makes VMs made from now on take their blocks from `blocks`. Once per process: `false`
/// if an allocator was already chosen.
pub fn use_block_allocator(blocks: BlockAllocator) -> bool {
    CHOSEN.set(blocks).is_ok()
}

/// What the VM holds and may hold. It lives in a box for the VM's whole life: LuaJIT keeps
/// its address as the allocator's user data.
pub(crate) struct VmMemory {
    blocks: BlockAllocator,
    used: Cell<usize>,
    /// 0: no cap.
    limit: Cell<usize>,
}

impl VmMemory {
    pub(crate) fn new(limit: usize) -> Box<VmMemory> {
        Box::new(VmMemory {
            blocks: CHOSEN.get().copied().unwrap_or(C_LIBRARY),
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
            // SAFETY: `block` came from this VM's allocator, below.
            unsafe { (memory.blocks.release)(block, memory.blocks.flags) };
            memory.used.set(memory.used.get() - old);
        }
        return ptr::null_mut();
    }
    if nsize > old && !memory.admits(nsize - old) {
        return ptr::null_mut();
    }
    let new = if block.is_null() {
        // SAFETY: plain C allocation of a non-zero size.
        unsafe { (memory.blocks.allocate)(nsize, memory.blocks.flags) }
    } else {
        // SAFETY: `block` came from this VM's allocator, below, and is still live.
        unsafe { (memory.blocks.resize)(block, nsize, memory.blocks.flags) }
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

    static COUNTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static FLAGS_SEEN: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

    fn count(flags: c_int) {
        COUNTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        FLAGS_SEEN.store(flags, std::sync::atomic::Ordering::Relaxed);
    }

    unsafe extern "C" fn counting_allocate(size: usize, flags: c_int) -> *mut c_void {
        count(flags);
        // SAFETY: forwards the caller's request.
        unsafe { malloc(size) }
    }

    unsafe extern "C" fn counting_resize(
        block: *mut c_void,
        size: usize,
        flags: c_int,
    ) -> *mut c_void {
        count(flags);
        // SAFETY: forwards the caller's request.
        unsafe { realloc(block, size) }
    }

    unsafe extern "C" fn counting_release(block: *mut c_void, flags: c_int) {
        count(flags);
        // SAFETY: forwards the caller's request.
        unsafe { free(block) }
    }

    #[test]
    fn a_vm_made_after_an_allocator_is_chosen_uses_it_for_every_block() {
        let counting = BlockAllocator {
            allocate: counting_allocate,
            resize: counting_resize,
            release: counting_release,
            flags: 7 << 20,
        };
        // Other tests' VMs made from now on use it too; it only counts, then forwards.
        assert!(use_block_allocator(counting));
        assert!(!use_block_allocator(counting), "chosen once");
        let m = VmMemory::new(0);
        let before = COUNTED.load(std::sync::atomic::Ordering::Relaxed);
        let a = call(&m, ptr::null_mut(), 0, 100);
        let a = call(&m, a, 100, 200);
        call(&m, a, 200, 0);
        assert!(COUNTED.load(std::sync::atomic::Ordering::Relaxed) >= before + 3);
        // Every call carries the allocator's flags (a jemalloc arena, say).
        assert_eq!(
            FLAGS_SEEN.load(std::sync::atomic::Ordering::Relaxed),
            7 << 20
        );
    }
}
