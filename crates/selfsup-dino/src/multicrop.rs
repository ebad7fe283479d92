//! DINO's multi-crop views: two global crops through pipelines that differ in blur and
//! solarization (the paper's asymmetric augmentation), and `K` small local crops.

use selfsup_core::Result;
use selfsup_core::config::ensure;
use selfsup_data::{AugmentConfig, MultiView};
use serde::{Deserialize, Serialize};

/// Sizes, scales and count of the crops. The colour settings (jitter, grayscale, blur sigma)
/// come from the run's `augment` section; blur and solarization probabilities are DINO's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MultiCropConfig {
    /// Side of the global crops in pixels (0: the image size).
    pub global_size: usize,
    /// Smallest area of a global crop, as a fraction of the image (the paper: 0.4).
    pub global_min_scale: f64,
    /// Side of the local crops in pixels (the paper: 96 against 224 global).
    pub local_size: usize,
    /// Smallest area of a local crop (the paper: 0.05).
    pub local_min_scale: f64,
    /// Largest area of a local crop (the paper: 0.4).
    pub local_max_scale: f64,
    /// Number of local crops `K` (the paper: 6 to 10; 0 turns multi-crop off).
    pub local_crops: usize,
}

impl Default for MultiCropConfig {
    fn default() -> Self {
        Self {
            global_size: 0,
            global_min_scale: 0.4,
            local_size: 16,
            local_min_scale: 0.05,
            local_max_scale: 0.4,
            local_crops: 4,
        }
    }
}

impl MultiCropConfig {
    /// Checks the ranges, naming the field under `prefix` (such as `dino.crops`).
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let scale = |name: &str, v: f64| {
            ensure(
                v.is_finite() && v > 0.0 && v <= 1.0,
                &format!("{prefix}.{name}"),
                || format!("{v} must be in (0, 1]"),
            )
        };
        scale("global_min_scale", self.global_min_scale)?;
        scale("local_min_scale", self.local_min_scale)?;
        scale("local_max_scale", self.local_max_scale)?;
        ensure(
            self.local_min_scale <= self.local_max_scale,
            &format!("{prefix}.local_min_scale"),
            || {
                format!(
                    "{} must not exceed local_max_scale ({})",
                    self.local_min_scale, self.local_max_scale
                )
            },
        )?;
        ensure(
            self.local_crops == 0 || self.local_size >= 1,
            &format!("{prefix}.local_size"),
            || "must be at least 1 when there are local crops".into(),
        )
    }

    /// The three pipelines' settings from the run's `base`: global 1 (always blurred, never
    /// solarized), global 2 (blurred 10 % of the time, solarized 20 %), local (blurred half
    /// the time), each with its size and scales.
    pub fn pipelines(&self, base: &AugmentConfig, image_size: usize) -> [AugmentConfig; 3] {
        let global_size = if self.global_size == 0 {
            image_size
        } else {
            self.global_size
        };
        let global = AugmentConfig {
            crop_size: global_size,
            crop_min_scale: self.global_min_scale,
            crop_max_scale: 1.0,
            ..base.clone()
        };
        [
            AugmentConfig {
                blur_prob: 1.0,
                solarize_prob: 0.0,
                ..global.clone()
            },
            AugmentConfig {
                blur_prob: 0.1,
                solarize_prob: 0.2,
                ..global
            },
            AugmentConfig {
                crop_size: self.local_size,
                crop_min_scale: self.local_min_scale,
                crop_max_scale: self.local_max_scale,
                blur_prob: 0.5,
                solarize_prob: 0.0,
                ..base.clone()
            },
        ]
    }

    /// The view generator: `[global 1, global 2, local 1, .., local K]`, normalized by `mean`
    /// and `std`.
    pub fn views(
        &self,
        base: &AugmentConfig,
        image_size: usize,
        mean: Vec<f32>,
        std: Vec<f32>,
    ) -> MultiView {
        let [g1, g2, local] = self.pipelines(base, image_size);
        let views = MultiView::default()
            .with(g1.pipeline(image_size, mean.clone(), std.clone()), 1)
            .with(g2.pipeline(image_size, mean.clone(), std.clone()), 1);
        if self.local_crops == 0 {
            views
        } else {
            views.with(local.pipeline(image_size, mean, std), self.local_crops)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfsup_core::{Image, ViewGenerator};

    #[test]
    fn two_asymmetric_globals_and_k_locals_of_their_sizes() {
        let cfg = MultiCropConfig {
            global_size: 0,
            local_size: 12,
            local_crops: 3,
            ..MultiCropConfig::default()
        };
        let base = AugmentConfig::simclr();
        let [g1, g2, local] = cfg.pipelines(&base, 28);
        assert_eq!((g1.blur_prob, g1.solarize_prob), (1.0, 0.0));
        assert_eq!((g2.blur_prob, g2.solarize_prob), (0.1, 0.2));
        assert_eq!((local.blur_prob, local.crop_size), (0.5, 12));
        assert_eq!(
            (g1.crop_size, g1.crop_min_scale, g1.crop_max_scale),
            (28, 0.4, 1.0)
        );
        assert_eq!((local.crop_min_scale, local.crop_max_scale), (0.05, 0.4));
        assert_eq!(g1.jitter_prob, base.jitter_prob);

        let views = cfg.views(&base, 28, vec![0.5], vec![0.25]);
        assert_eq!(views.num_views(), 5);
        let image = Image {
            channels: 1,
            height: 28,
            width: 28,
            data: (0..784).map(|i| (i % 29) as f32 / 29.0).collect(),
        };
        let mut rng = selfsup_core::seed::rng(1, 0, 0, 0);
        let out = views.views(&image, &mut rng);
        let sizes: Vec<usize> = out.iter().map(|v| v.height).collect();
        assert_eq!(sizes, [28, 28, 12, 12, 12]);

        let off = MultiCropConfig {
            local_crops: 0,
            ..cfg.clone()
        };
        assert_eq!(off.views(&base, 28, vec![0.5], vec![0.25]).num_views(), 2);
        let bad = MultiCropConfig {
            local_min_scale: 0.5,
            ..cfg
        };
        let err = bad.validate("dino.crops").unwrap_err().to_string();
        assert!(err.contains("dino.crops.local_min_scale"), "{err}");
    }
}
