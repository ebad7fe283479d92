//! Property tests of the augmentations: any image from 1x1 up, any values in `[0, 1]` and any
//! settings the config accepts give a view of the promised shape with finite values in
//! `[0, 1]` (before normalization); settings the config refuses are errors naming the field.
//! Never a panic.

use proptest::prelude::*;
use rand::SeedableRng;
use selfsup_core::{Augmentation, Image, ViewGenerator};
use selfsup_data::augment::{
    ColorJitter, GaussianBlur, HorizontalFlip, RandomGrayscale, RandomResizedCrop, Resize,
    Solarize, eval_pipeline,
};
use selfsup_data::{AugmentConfig, MultiView};

/// An image of any size up to 40x40, 1 or 3 channels, values in `[0, 1]`.
fn image() -> impl Strategy<Value = Image> {
    (prop_oneof![Just(1usize), Just(3)], 1usize..40, 1usize..40).prop_flat_map(|(c, h, w)| {
        proptest::collection::vec(0f32..=1.0, c * h * w)
            .prop_map(move |data| Image::new(c, h, w, data))
    })
}

/// Probabilities across their documented range, edges included, and now and then outside it.
fn prob() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(1.0), 0.0..=1.0, -1.0..2.0]
}

fn config() -> impl Strategy<Value = AugmentConfig> {
    (
        (0usize..24, prop_oneof![1e-3..=1.0, -0.5..1.5], 0.0..=1.0f64),
        (prob(), prob(), prob(), prob()),
        (
            0.0..2.0f64,
            0.0..2.0f64,
            0.0..2.0f64,
            prop_oneof![0.0..=0.5, -0.1..0.8],
        ),
        (prob(), prop_oneof![1e-3..3.0, -1.0..0.1], 0.0..5.0f64),
    )
        .prop_map(
            |(
                (crop_size, crop_min_scale, extra),
                (flip_prob, jitter_prob, grayscale_prob, blur_prob),
                (brightness, contrast, saturation, hue),
                (solarize_prob, blur_sigma_min, sigma_extra),
            )| AugmentConfig {
                crop_size,
                crop_min_scale,
                crop_max_scale: (crop_min_scale + extra).min(1.0),
                flip_prob,
                jitter_prob,
                brightness,
                contrast,
                saturation,
                hue,
                grayscale_prob,
                blur_prob,
                blur_sigma_min,
                blur_sigma_max: blur_sigma_min + sigma_extra,
                solarize_prob,
            },
        )
}

fn check(out: &Image, channels: usize, h: usize, w: usize) -> Result<(), TestCaseError> {
    prop_assert_eq!((out.channels, out.height, out.width), (channels, h, w));
    prop_assert_eq!(out.data.len(), channels * h * w);
    for &v in &out.data {
        prop_assert!(v.is_finite() && (0.0..=1.0).contains(&v), "value {}", v);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// The whole SimCLR pipeline (normalized by mean 0, std 1, so the range shows), twice
    /// through a multi-view generator.
    #[test]
    fn pipelines_give_views_of_the_promised_shape_and_range(
        img in image(),
        cfg in config(),
        seed in any::<u64>(),
    ) {
        match cfg.validate("augment") {
            Err(e) => prop_assert!(e.to_string().contains("augment."), "{}", e),
            Ok(()) => {
                let size = if cfg.crop_size == 0 { img.height } else { cfg.crop_size };
                let c = img.channels;
                let views = MultiView::default()
                    .with(cfg.pipeline(img.height, vec![0.0; c], vec![1.0; c]), 2);
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                let out = views.views(&img, &mut rng);
                prop_assert_eq!(out.len(), 2);
                for v in &out {
                    check(v, c, size, size)?;
                }
            }
        }
    }

    /// Each augmentation alone, at any setting in its range.
    #[test]
    fn each_augmentation_keeps_shape_and_range(
        img in image(),
        size in 1usize..24,
        scale in (1e-3f32..=1.0, 0.0f32..=1.0),
        ratio in (0.1f32..=1.0, 1.0f32..10.0),
        p in 0.0f32..=1.0,
        strength in (0.0f32..3.0, 0.0f32..3.0, 0.0f32..3.0, 0.0f32..=0.5),
        sigma in (1e-3f32..5.0, 0.0f32..5.0),
        threshold in 0.0f32..=1.0,
        seed in any::<u64>(),
    ) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (c, h, w) = (img.channels, img.height, img.width);
        let crop = RandomResizedCrop {
            size,
            scale: (scale.0, (scale.0 + scale.1).min(1.0)),
            ratio,
        };
        check(&crop.apply(img.clone(), &mut rng), c, size, size)?;
        check(&Resize { size }.apply(img.clone(), &mut rng), c, size, size)?;
        check(&HorizontalFlip { p }.apply(img.clone(), &mut rng), c, h, w)?;
        let jitter = ColorJitter {
            p,
            brightness: strength.0,
            contrast: strength.1,
            saturation: strength.2,
            hue: strength.3,
        };
        check(&jitter.apply(img.clone(), &mut rng), c, h, w)?;
        check(&RandomGrayscale { p }.apply(img.clone(), &mut rng), c, h, w)?;
        let blur = GaussianBlur { p, sigma: (sigma.0, sigma.0 + sigma.1) };
        check(&blur.apply(img.clone(), &mut rng), c, h, w)?;
        check(&Solarize { p, threshold }.apply(img.clone(), &mut rng), c, h, w)?;
        let e = eval_pipeline(size, None, vec![0.0; c], vec![1.0; c]).apply(img.clone(), &mut rng);
        check(&e, c, size, size)?;
        let e = eval_pipeline(size, Some(0.875), vec![0.0; c], vec![1.0; c]).apply(img, &mut rng);
        check(&e, c, size, size)?;
    }
}
