//! `StepAllocator` as the global allocator of this test binary: big blocks are kept and handed
//! back by size, contents survive `realloc`, zeroed requests are zero, and kept blocks of other
//! sizes are given back before the footprint passes 1.25 times the live peak. One test, so no
//! other test's allocations move the counts.

use selfsup_kernels::{BIG_BLOCK, StepAllocator, big_blocks};

#[global_allocator]
static GLOBAL: StepAllocator = StepAllocator;

const MIB: usize = 1 << 20;

#[test]
fn big_blocks_are_kept_by_size_and_bounded() {
    assert_eq!(BIG_BLOCK, 16 * MIB);
    let start = big_blocks();
    assert_eq!(start.live, 0);

    // Three 20 MiB blocks live at once: the live peak is 60 MiB.
    let blocks: Vec<Vec<u8>> = (0..3).map(|i| vec![i as u8 + 1; 20 * MIB]).collect();
    let addresses: Vec<usize> = blocks.iter().map(|b| b.as_ptr() as usize).collect();
    assert!(addresses.iter().all(|a| a % (2 * MIB) == 0));
    assert_eq!(big_blocks().live, 60 * MIB);
    drop(blocks);
    let s = big_blocks();
    assert_eq!((s.live, s.kept, s.mapped - start.mapped), (0, 60 * MIB, 3));

    // The same size again is one of the kept blocks, the last freed first, and a zeroed
    // request of it is zero although the block held 3s.
    let again = vec![0u8; 20 * MIB];
    assert_eq!(again.as_ptr() as usize, addresses[2]);
    assert!(again.iter().all(|&b| b == 0));
    assert_eq!(big_blocks().reused - start.reused, 1);
    drop(again);

    // Growing a vector from small to big and big to bigger keeps its contents.
    let mut grown: Vec<u32> = (0..1000).collect();
    grown.reserve_exact(5 * MIB - grown.len()); // 20 MiB: a kept block
    assert!((0..1000).all(|i| grown[i as usize] == i));
    grown.extend(1000..5 * MIB as u32);
    grown.reserve_exact(1); // 20 MiB + 4 bytes: rounds to 22 MiB, a fresh block
    assert!(
        (0..5 * MIB as u32)
            .step_by(997)
            .all(|i| grown[i as usize] == i)
    );
    assert_eq!(grown[5 * MIB - 1], 5 * MIB as u32 - 1);
    drop(grown);

    // Mapping the 22 MiB block beside its 20 MiB source (20 + 40 kept + 22 > 1.25 x 60 MiB,
    // the live peak) gave one kept 20 MiB block back. Kept now: two 20 MiB and the 22 MiB one.
    // A 40 MiB request fits none: kept blocks go back, longest unused first, until
    // 40 + kept <= 75 MiB.
    let s = big_blocks();
    assert_eq!((s.live, s.kept), (0, 62 * MIB));
    let big = vec![9u8; 40 * MIB];
    let after = big_blocks();
    assert_eq!(after.live, 40 * MIB);
    assert!(after.live + after.kept <= 77 * MIB, "{after:?}");
    assert_eq!(
        after.kept,
        22 * MIB,
        "the 22 MiB block, freed last, is kept: {after:?}"
    );
    assert_eq!(after.returned - s.returned, 2);
    assert_eq!(after.returned - start.returned, 3);
    drop(big);
}
