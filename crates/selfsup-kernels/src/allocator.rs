//! The allocator setting training on flex needs. Every training step allocates and frees the
//! same few gigabytes of activations and gradients; an allocator that hands freed pages back to
//! the kernel gets them back zero-filled through page faults on the next step (with glibc's
//! malloc about 40 % of a small network's step, `shared/notes/cpu-performance.md`). Binaries
//! declare [`StepAllocator`] (mimalloc underneath) as their global allocator and call
//! [`keep_freed_memory`] first thing in `main`.

use libmimalloc_sys as mi;
use mimalloc::MiMalloc;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::Mutex;

/// `mi_option_purge_delay` in mimalloc 3.3's `mi_option_e` (libmimalloc-sys 0.1.49 still names
/// index 15 after an older option, so the index is spelled out here).
const PURGE_DELAY: mi::mi_option_t = 15;
/// The mimalloc versions (major * 10000 + minor * 100 + patch) with that numbering.
const KNOWN_VERSIONS: std::ops::Range<i32> = 30300..30400;

/// Tells mimalloc never to return freed memory to the operating system (purge delay -1): the
/// process keeps its peak footprint, and steps after the first fault no pages in. Leaves the
/// setting alone when `MIMALLOC_PURGE_DELAY` is set in the environment, and with a mimalloc other
/// than 3.3 (whose option numbering may differ). Returns whether it changed the setting.
///
/// mimalloc 3.3's default delay is one second: freed memory still goes back within a step of a
/// larger network (measured on the SimCLR ResNet-18 step: 13.3 s with the default, 9.3 s with
/// this, peak memory 2.1 GiB against 2.7 GiB).
pub fn keep_freed_memory() -> bool {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return false;
    }
    // SAFETY: plain reads and writes of mimalloc's option table.
    unsafe {
        if !KNOWN_VERSIONS.contains(&mi::mi_version()) {
            return false;
        }
        mi::mi_option_set(PURGE_DELAY, -1);
        mi::mi_option_get(PURGE_DELAY) == -1
    }
}

/// Blocks of this size and more are mapped from the OS and kept by size
/// ([`StepAllocator`]); smaller ones go to mimalloc.
pub const BIG_BLOCK: usize = 16 << 20;
/// Big blocks are rounded up to this (the huge-page size), so repeats of a shape that differ by
/// a few bytes share blocks.
const GRAIN: usize = 2 << 20;
/// How many freed big blocks are kept at most (each is 16 MiB or more).
const SLOTS: usize = 256;

/// The global allocator for training on flex: mimalloc (with [`keep_freed_memory`]) for
/// everything under [`BIG_BLOCK`], and for the big blocks (activations, their gradients, im2col
/// buffers of whole layers) memory mapped from the OS, kept after it is freed and handed out
/// again to a request of the same size.
///
/// Why not mimalloc for those too: a training step allocates and frees the same few large sizes
/// in the same order every step, so kept blocks fit exactly the next step's requests. mimalloc
/// instead carves them out of its arenas, and (as we read the two peaks) once the freed ranges
/// are fragmented a request finds no hole of its size and takes fresh memory beside them. The RotNet ResNet-18 step (512
/// images of 32 px, 128 MiB a first-stage activation) peaked at 3,768 or 4,079 MiB from run to
/// run with mimalloc alone, against PyTorch's 3,359 (docs/benchmarks.md).
///
/// The rule that bounds the footprint: a request that no kept block fits first gives kept
/// blocks back to the OS (the longest unused first) until the mapped total, the request
/// included, is no more than the most ever live at once plus a quarter (`slack`), or none is
/// kept. So the big blocks' footprint stays within 1.25 times their live peak (each rounded up
/// to 2 MiB), and a step that repeats the last one's sizes maps nothing new.
///
/// ```ignore
/// #[global_allocator]
/// static GLOBAL: selfsup_kernels::StepAllocator = selfsup_kernels::StepAllocator;
///
/// fn main() {
///     selfsup_kernels::keep_freed_memory();
///     // ...
/// }
/// ```
pub struct StepAllocator;

/// What [`StepAllocator`] holds in big blocks, in bytes (for tests and diagnostics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BigBlocks {
    /// Handed out and not freed.
    pub live: usize,
    /// Freed and kept for the next request of the same size.
    pub kept: usize,
    /// The highest `live + kept` so far.
    pub peak: usize,
    /// Requests served by a kept block.
    pub reused: u64,
    /// Requests that mapped fresh memory.
    pub mapped: u64,
    /// Kept blocks given back to the OS.
    pub returned: u64,
}

/// The state behind [`StepAllocator`]. Fixed-size: the allocator cannot allocate.
struct Kept {
    /// (address, length, when freed) of each kept block; `len` of them are in use.
    blocks: [(usize, usize, u64); SLOTS],
    len: usize,
    clock: u64,
    /// The most bytes ever live at once (a request included).
    need: usize,
    stats: BigBlocks,
}

static KEPT: Mutex<Kept> = Mutex::new(Kept {
    blocks: [(0, 0, 0); SLOTS],
    len: 0,
    clock: 0,
    need: 0,
    stats: BigBlocks {
        live: 0,
        kept: 0,
        peak: 0,
        reused: 0,
        mapped: 0,
        returned: 0,
    },
});

/// How many blocks one lock may take out to give back (the rest on the next round).
const RETURN_BATCH: usize = 32;

fn kept() -> std::sync::MutexGuard<'static, Kept> {
    // Nothing panics while the lock is held; a poisoned lock still holds consistent counts.
    KEPT.lock().unwrap_or_else(|e| e.into_inner())
}

/// The current counts of [`StepAllocator`]'s big blocks.
pub fn big_blocks() -> BigBlocks {
    kept().stats
}

/// How far above the most ever live at once the kept blocks may take the mapped total: a
/// quarter. With none, the RotNet step gave back and mapped again ~30 blocks a step (18.3
/// images/s, peak 3,125 MiB); an eighth, ~15 (19.3, 3,485 MiB); a quarter, none after the first
/// step (22.1, 3,571 MiB; mimalloc alone 21.2, 4,108 MiB). Measured on a 2-vCPU Zen 4 EPYC.
fn slack(need: usize) -> usize {
    need / 4
}

fn is_big(layout: Layout) -> bool {
    layout.size() >= BIG_BLOCK && layout.align() <= GRAIN
}

fn rounded(size: usize) -> usize {
    size.div_ceil(GRAIN) * GRAIN
}

impl Kept {
    /// How much may be mapped at once: the most ever live plus the slack.
    fn bound(&self) -> usize {
        self.need + slack(self.need)
    }

    fn take(&mut self, len: usize) -> Option<usize> {
        // The most recently freed block of that length: its pages are the likeliest in cache.
        let slot = (0..self.len)
            .filter(|&i| self.blocks[i].1 == len)
            .max_by_key(|&i| self.blocks[i].2)?;
        let (addr, _, _) = self.blocks[slot];
        self.len -= 1;
        self.blocks[slot] = self.blocks[self.len];
        self.stats.kept -= len;
        self.stats.live += len;
        self.stats.reused += 1;
        Some(addr)
    }

    /// Takes out the longest-unused kept block.
    fn oldest(&mut self) -> Option<(usize, usize)> {
        let slot = (0..self.len).min_by_key(|&i| self.blocks[i].2)?;
        let (addr, len, _) = self.blocks[slot];
        self.len -= 1;
        self.blocks[slot] = self.blocks[self.len];
        self.stats.kept -= len;
        self.stats.returned += 1;
        Some((addr, len))
    }
}

/// Gives blocks back to the OS, outside the lock.
fn unmap(blocks: &[(usize, usize)]) {
    for &(addr, len) in blocks {
        // SAFETY: each was mapped by `map` with this length and is no longer handed out.
        unsafe { libc::munmap(addr as *mut libc::c_void, len) };
    }
}

/// Maps `len` fresh bytes (zero-filled by the OS), aligned to [`GRAIN`] so the kernel may back
/// them with huge pages.
fn map(len: usize) -> *mut u8 {
    let total = len + GRAIN;
    // SAFETY: an anonymous private mapping; the parts outside the aligned range are unmapped.
    unsafe {
        let raw = libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if raw == libc::MAP_FAILED {
            return std::ptr::null_mut();
        }
        let start = raw as usize;
        let aligned = start.next_multiple_of(GRAIN);
        if aligned > start {
            libc::munmap(raw, aligned - start);
        }
        let tail = start + total - (aligned + len);
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
        aligned as *mut u8
    }
}

impl StepAllocator {
    /// A big block of `layout` and whether it is fresh from the OS (so already zero).
    fn big(&self, layout: Layout) -> (*mut u8, bool) {
        let len = rounded(layout.size());
        loop {
            let mut giving_back = [(0usize, 0usize); RETURN_BATCH];
            let mut n = 0;
            {
                let mut k = kept();
                if let Some(addr) = k.take(len) {
                    return (addr as *mut u8, false);
                }
                k.need = k.need.max(k.stats.live + len);
                while n < RETURN_BATCH && k.stats.live + k.stats.kept + len > k.bound() {
                    match k.oldest() {
                        Some(block) => {
                            giving_back[n] = block;
                            n += 1;
                        }
                        None => break,
                    }
                }
                let done = n < RETURN_BATCH || k.stats.live + k.stats.kept + len <= k.bound();
                if done {
                    k.stats.live += len;
                    k.stats.mapped += 1;
                    k.stats.peak = k.stats.peak.max(k.stats.live + k.stats.kept);
                    drop(k);
                    unmap(&giving_back[..n]);
                    let ptr = map(len);
                    if ptr.is_null() {
                        kept().stats.live -= len;
                    }
                    return (ptr, true);
                }
            }
            unmap(&giving_back[..n]);
        }
    }

    fn free_big(&self, ptr: *mut u8, layout: Layout) {
        let len = rounded(layout.size());
        let mut k = kept();
        let evicted = if k.len == SLOTS { k.oldest() } else { None };
        k.clock += 1;
        let (slot, clock) = (k.len, k.clock);
        k.blocks[slot] = (ptr as usize, len, clock);
        k.len += 1;
        k.stats.live -= len;
        k.stats.kept += len;
        drop(k);
        if let Some(block) = evicted {
            unmap(&[block]);
        }
    }
}

// SAFETY: small layouts are mimalloc's; big ones are page-aligned (2 MiB) mappings of at least
// the requested size, handed out to one owner at a time (the lock guards the kept list).
unsafe impl GlobalAlloc for StepAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_big(layout) {
            self.big(layout).0
        } else {
            // SAFETY: forwarded as is.
            unsafe { MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_big(layout) {
            let (ptr, fresh) = self.big(layout);
            if !fresh {
                // SAFETY: the block holds at least `layout.size()` bytes.
                unsafe { std::ptr::write_bytes(ptr, 0, layout.size()) };
            }
            ptr
        } else {
            // SAFETY: forwarded as is.
            unsafe { MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_big(layout) {
            self.free_big(ptr, layout);
        } else {
            // SAFETY: forwarded as is.
            unsafe { MiMalloc.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's guarantees on `layout` and `new_size` hold for the new layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (is_big(layout), is_big(new_layout)) {
            // SAFETY: forwarded as is.
            (false, false) => unsafe { MiMalloc.realloc(ptr, layout, new_size) },
            (true, true) if rounded(layout.size()) == rounded(new_size) => ptr,
            _ => {
                // SAFETY: a fresh block for the new layout, the old contents copied, the old
                // block freed by its own layout.
                unsafe {
                    let new = self.alloc(new_layout);
                    if !new.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    new
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_option_is_where_we_expect_it() {
        // If libmimalloc-sys moves to another mimalloc, this fails and says the index needs
        // checking against the new `mimalloc.h`.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert!(super::keep_freed_memory());
        }
    }
}
