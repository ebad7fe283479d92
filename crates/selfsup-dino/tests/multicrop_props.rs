//! Property test of DINO's multi-crop views: any image from 1x1 up and any crop settings the
//! config accepts give two global views and `K` local ones of their promised sizes, finite and
//! in `[0, 1]` before normalization; settings it refuses name their field. Never a panic.

use proptest::prelude::*;
use rand::SeedableRng;
use selfsup_core::{Image, ViewGenerator};
use selfsup_data::AugmentConfig;
use selfsup_dino::multicrop::MultiCropConfig;

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn multi_crop_views_have_their_sizes_and_range(
        (c, h, w) in (prop_oneof![Just(1usize), Just(3)], 1usize..32, 1usize..32),
        global_size in 0usize..24,
        local_size in 0usize..12,
        local_crops in 0usize..4,
        scales in (prop_oneof![1e-3..=1.0, -0.5..1.5], 1e-3..=1.0f64, 0.0..=1.0f64),
        fill in 0.0f32..=1.0,
        seed in any::<u64>(),
    ) {
        let crops = MultiCropConfig {
            global_size,
            global_min_scale: scales.0,
            local_size,
            local_min_scale: scales.1,
            local_max_scale: (scales.1 + scales.2).min(1.0),
            local_crops,
        };
        if let Err(e) = crops.validate("dino.crops") {
            prop_assert!(e.to_string().contains("dino.crops."), "{}", e);
            return Ok(());
        }
        let data: Vec<f32> = (0..c * h * w).map(|i| (i as f32 * 0.37 + fill).fract()).collect();
        let img = Image::new(c, h, w, data);
        let generator = crops.views(&AugmentConfig::default(), h, vec![0.0; c], vec![1.0; c]);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let views = generator.views(&img, &mut rng);
        prop_assert_eq!(views.len(), 2 + local_crops);
        prop_assert_eq!(generator.num_views(), 2 + local_crops);
        let global = if global_size == 0 { h } else { global_size };
        for (i, v) in views.iter().enumerate() {
            let side = if i < 2 { global } else { local_size };
            prop_assert_eq!((v.channels, v.height, v.width), (c, side, side), "view {}", i);
            for &x in &v.data {
                prop_assert!(x.is_finite() && (0.0..=1.0).contains(&x), "view {} value {}", i, x);
            }
        }
    }
}
