//! The allocator setting training on flex needs. Every training step allocates and frees the
//! same few gigabytes of activations and gradients; an allocator that hands freed pages back to
//! the kernel gets them back zero-filled through page faults on the next step (with glibc's
//! malloc about 40 % of a small network's step, `shared/notes/cpu-performance.md`). Binaries
//! that declare `mimalloc::MiMalloc` as their global allocator call [`keep_freed_memory`] first
//! thing in `main`.

use libmimalloc_sys as mi;

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
